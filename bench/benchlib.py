"""The bench/ scripts' own toolkit (imported as ``from bench import benchlib``; nothing outside
bench/ and its tests uses it): BLAS settings per child process, per-child peak memory, Caffe's
own sgemm rate, FLOP counting, tables and CSV. What the machine is (CPU, BLAS core, oneDNN's
kernels) comes from ``ltc.machine``.

Every measured row of a benchmark runs in a child process of its own (``run_child``) so
that BLAS settings (which OpenBLAS reads once, when the library loads) can differ per
row, and so that the child's peak resident memory (``os.wait4``'s ru_maxrss) belongs to
that row alone.
"""
import csv
import ctypes
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time

from ltc import REPO
from ltc.machine import cpu_flags, parse_onednn_verbose, probe_report, sgemm_library

BENCH = os.path.join(REPO, "bench")
RESULTS = os.path.join(BENCH, "results")
CACHE = os.path.join(BENCH, ".cache")
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
TRAIN_STEP = os.path.join(BENCH, "train_step.py")   # the script whose --child modes run_rows starts
TORCH_VENV_PY = os.path.join(BENCH, ".venv-torch", "bin", "python")
TORCH_INSTALL_HINT = ("python3 -m venv bench/.venv-torch && bench/.venv-torch/bin/pip install numpy torch "
                      "(a CPU build: e.g. a torch-*+cpu wheel; git-ignored, used only by bench/)")


# ----------------------------------------------------------------------------- BLAS
_TORCH_PROBE = r"""
import json, torch
torch.set_num_threads(1)
x = torch.randn(4, 3, 114, 114, requires_grad=True)
w = torch.randn(96, 3, 11, 11, requires_grad=True)
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):   # the env variable alone is ignored
    torch.nn.functional.conv2d(x, w, stride=4).sum().backward()
print(json.dumps(dict(torch_version=torch.__version__)))
"""


def torch_kernel_probe(python, env=None):
    """What PyTorch's bundled oneDNN reports for a conv1-sized convolution under ``env``
    (ONEDNN_VERBOSE=1): {onednn_version, onednn_isa, onednn_conv_impl, torch_version, error}."""
    env = dict(os.environ if env is None else env, ONEDNN_VERBOSE="1")
    try:
        res = subprocess.run([python, "-c", _TORCH_PROBE], env=env, capture_output=True, text=True, timeout=300)
    except OSError as e:
        return dict(parse_onednn_verbose(""), torch_version=None, error=str(e))
    return probe_report(res, torch_version=None)


def mkl_library():
    """libmkl_rt.so.* from PyPI's ``mkl`` package in the bench venv (None if not installed)."""
    hits = sorted(glob.glob(os.path.join(BENCH, ".venv-torch", "lib", "libmkl_rt.so*")))
    return hits[0] if hits else None


def _ldconfig_paths(soname):
    """Where the dynamic linker's cache (``ldconfig -p``) finds ``soname``; [] without ldconfig."""
    exe = shutil.which("ldconfig", path=os.pathsep.join([os.environ.get("PATH", ""), os.defpath, "/usr/sbin", "/sbin"]))
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split("=>", 1)[1].strip() for line in out.splitlines()
            if line.strip().startswith(soname + " ") and "=>" in line]


def openblas_variants():
    """{flavour: folder} of the OpenBLAS builds installed side by side, as Debian and Ubuntu do
    (``<libdir>/openblas-pthread``, ``openblas-openmp``, ``openblas-serial``, each with its
    libopenblas.so.0; the alternatives system picks the one the loader sees). The folders are
    looked for beside the libopenblas.so.0 and libblas.so.3 the linker cache resolves (through
    the alternatives links) and in the interpreter's multiarch library folder; {} where none."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    roots = []
    for soname in ("libopenblas.so.0", "libblas.so.3"):
        for lib in _ldconfig_paths(soname):
            real = os.path.dirname(os.path.realpath(lib))
            if multiarch and multiarch not in real.split(os.sep):
                continue   # another architecture's library (i386 beside x86_64)
            roots += [real, os.path.dirname(real)]   # libdir itself, or libdir/openblas-X
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if multiarch and os.path.basename(libdir) == multiarch:
        roots.append(libdir)
    found = {}
    for root in roots:
        for d in sorted(glob.glob(os.path.join(glob.escape(root), "openblas-*"))):
            if os.path.isfile(os.path.join(d, "libopenblas.so.0")):
                found.setdefault(os.path.basename(d)[len("openblas-"):], os.path.realpath(d))
    return found


def blas_presets():
    """name -> (description, environment changes, None or why it is skipped).

    OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS when it loads; a value of None
    removes the variable from the child's environment. "env" leaves the inherited
    environment alone (this workplace presets OPENBLAS_CORETYPE=Haswell, i.e. AVX2 kernels).
    """
    avx512 = "avx512f" in cpu_flags()
    ncpu = os.cpu_count() or 1
    openmp_dir = openblas_variants().get("openmp")
    mkl = mkl_library()
    skx_skip = None if avx512 else "the CPU has no AVX-512"
    omp_skip = None if openmp_dir else "libopenblas0-openmp is not installed (apt-get install libopenblas0-openmp)"
    mkl_skip = None if mkl else "no MKL (bench/.venv-torch/bin/pip install mkl)"
    auto = {"OPENBLAS_CORETYPE": None, "OPENBLAS_NUM_THREADS": None, "OMP_NUM_THREADS": None}
    inherited = os.environ.get("OPENBLAS_CORETYPE")
    return {
        "env": ("environment as inherited (OPENBLAS_CORETYPE=%s), %s threads"
                % (inherited or "unset", os.environ.get("OPENBLAS_NUM_THREADS", ncpu)), {}, None),
        "auto": ("OpenBLAS pthreads, its own CPU detection (OPENBLAS_CORETYPE unset), %d threads" % ncpu, auto, None),
        "auto1": ("OpenBLAS pthreads, own detection, OPENBLAS_NUM_THREADS=1",
                  dict(auto, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"), None),
        "haswell": ("OpenBLAS pthreads, OPENBLAS_CORETYPE=Haswell (AVX2 kernels), %d threads" % ncpu,
                    dict(auto, OPENBLAS_CORETYPE="Haswell"), None),
        "skylakex": ("OpenBLAS pthreads, OPENBLAS_CORETYPE=SkylakeX (AVX-512 kernels), %d threads" % ncpu,
                     dict(auto, OPENBLAS_CORETYPE="SkylakeX"), skx_skip),
        "openmp": ("OpenBLAS OpenMP flavour (LD_LIBRARY_PATH=%s), own detection, %d threads, "
                   "OMP_WAIT_POLICY=PASSIVE" % (openmp_dir or "its folder: not found", ncpu),
                   dict(auto, LD_LIBRARY_PATH=openmp_dir or "", OMP_WAIT_POLICY="PASSIVE"), omp_skip),
        "mkl": ("Intel MKL from PyPI (LD_PRELOAD=libmkl_rt, MKL_THREADING_LAYER=GNU), %d threads, "
                "OMP_WAIT_POLICY=PASSIVE" % ncpu,
                dict(auto, LD_PRELOAD=mkl or "", MKL_THREADING_LAYER="GNU", MKL_INTERFACE_LAYER="LP64",
                     OMP_WAIT_POLICY="PASSIVE"), mkl_skip),
    }


def blas_env(preset):
    """(environment for a child, None or the reason the preset is unavailable)."""
    desc, extra, skip = blas_presets()[preset]
    env = dict(os.environ)
    env.setdefault("GLOG_minloglevel", "2")  # no Caffe net-setup log in the children
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        elif k in ("LD_LIBRARY_PATH", "LD_PRELOAD") and env.get(k):
            env[k] = v + ":" + env[k]
        else:
            env[k] = v
    return env, skip


def sgemm_gflops(lib_path, m=2048, n=2048, k=2048, reps=5):
    """Best-of-reps single-precision GEMM rate (GFLOP/s = 2mnk / s) through cblas_sgemm of lib_path."""
    import numpy as np
    lib = sgemm_library(lib_path)
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    c = np.zeros((m, n), np.float32)
    ptr = lambda x: x.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    args = (101, 111, 111, m, n, k, ctypes.c_float(1.0), ptr(a), k, ptr(b), n, ctypes.c_float(0.0), ptr(c), n)
    lib.cblas_sgemm(*args)  # warm-up (threads start, pages touched)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        lib.cblas_sgemm(*args)
        best = min(best, time.perf_counter() - t)
    ref = a[:4].astype(np.float64) @ b[:, :4].astype(np.float64)
    if not np.allclose(c[:4, :4], ref, rtol=1e-3):
        raise RuntimeError("cblas_sgemm of %s returned a wrong product" % lib_path)
    return 2.0 * m * n * k / best / 1e9


# ----------------------------------------------------------------------------- FLOPs
def net_macs(net):
    """Multiply-adds of one forward pass of a caffe.Net, per layer: {layer name: (type, MACs)}.

    Convolution: out_c x out_h x out_w x (in_c / group) x kh x kw per image; InnerProduct:
    in x out per row. Other layers (ReLU, pooling, LRN, loss) are not counted.
    """
    macs = {}
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        w = layer.blobs[0].data.shape if len(layer.blobs) else None
        top = net.top_names[name][0]
        out = net.blobs[top].data.shape
        if w is None:
            raise RuntimeError("layer %s has no weight blob" % name)
        if layer.type == "Convolution":
            n, oc, oh, ow = out
            macs[name] = (layer.type, n * oc * oh * ow * w[1] * w[2] * w[3])
        else:
            macs[name] = (layer.type, out[0] * w[0] * w[1])
    return macs


def train_flops(macs, first_layers=("conv1",)):
    """FLOPs of one training step from forward MACs: 2 FLOPs per MAC, x3 for forward, weight gradient
    and input gradient, except that the first layer of each column computes no input gradient (x2)."""
    total = 0
    for name, (_, m) in macs.items():
        first = name.split("_")[0] in first_layers
        total += 2 * m * (2 if first else 3)
    return total


# ----------------------------------------------------------------------------- children
def run_child(cmd, env=None, timeout=None, cwd=REPO):
    """Run cmd; the child prints one JSON object as its last stdout line. Returns (result dict or
    None, peak RSS of the child in MiB, wall seconds, stderr tail)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return None, None, time.perf_counter() - t, "timed out after %ss\n%s" % (timeout, err[-2000:])
    wall = time.perf_counter() - t
    # Popen already reaped the child; RUSAGE_CHILDREN is the max over all reaped children, so
    # children report their own peak (getrusage(RUSAGE_SELF) + their own children) in the JSON.
    res = None
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            try:
                res = json.loads(line)
                break
            except ValueError:
                continue
    if p.returncode != 0 or res is None:
        tail = "\n".join(err.strip().splitlines()[-12:])
        return None, None, wall, "exit %s\n%s\n%s" % (p.returncode, out[-1000:], tail)
    return res, res.get("peak_rss_mib"), wall, err[-2000:]


def peak_rss_mib():
    """Peak resident memory of this process, and separately of its reaped children, in MiB."""
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return own, kids


def child_print(result):
    own, kids = peak_rss_mib()
    result.setdefault("peak_rss_mib", round(own, 1))
    if kids:
        result.setdefault("children_peak_rss_mib", round(kids, 1))
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- output
def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%%.%df" % nd) % v
    return str(v)


def print_table(rows, columns, title=None, out=None):
    """rows: list of dicts; columns: list of (key, header, decimals)."""
    out = out or sys.stdout
    cells = [[h for _, h, _ in columns]] + [[fmt(r.get(k), nd) for k, _, nd in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    if title:
        print(title, file=out)
    for j, c in enumerate(cells):
        print("  ".join(x.rjust(w) if j and i else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths))), file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)
    out.flush()


def write_csv(rows, path, columns=None):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    keys = columns or sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    print("wrote %s" % os.path.relpath(path, os.getcwd()))


def load_avg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# ----------------------------------------------------------------------------- images
def sample_photos():
    """The colour photos bundled with installed packages (no downloads)."""
    import cv2
    import matplotlib
    import skimage
    import sklearn.datasets
    sk = os.path.join(os.path.dirname(skimage.__file__), "data")
    paths = [os.path.join(sk, n) for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg",
                                           "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg")]
    paths += [os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", n) for n in ("china.jpg", "flower.jpg")]
    paths.append(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))
    imgs = [cv2.imread(p, cv2.IMREAD_COLOR) for p in paths if os.path.isfile(p)]
    return [im for im in imgs if im is not None]


def make_jpegs(folder, n, seed=0, quality=90):
    """Write n JPEGs (~500x375, landscape or portrait) into folder; returns the list file."""
    import cv2
    import numpy as np
    listfile = os.path.join(folder, "list.txt")
    if os.path.isfile(listfile) and sum(1 for _ in open(listfile)) == n:
        return listfile
    os.makedirs(folder, exist_ok=True)
    photos = sample_photos()
    rng = np.random.RandomState(seed)
    names = []
    for i in range(n):
        src = photos[rng.randint(len(photos))]
        h, w = src.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
        crop = src[y:y + ch, x:x + cw]
        size = (500, 375) if rng.rand() < 0.75 else (375, 500)
        img = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        if rng.rand() < 0.5:
            img = img[:, ::-1]
        name = "img_%05d.jpg" % i
        cv2.imwrite(os.path.join(folder, name), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        names.append(name)
    with open(listfile, "w") as f:
        for k, name in enumerate(names):
            f.write("%s %d\n" % (name, k % 10))
    return listfile


# ----------------------------------------------------------------------------- training-step rows
def torch_env():
    """The PyTorch child runs in its own venv, which lacks the project's .pth: give it the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ensure_lmdb(path, n=512, seed=0, cache=None):
    """``path`` if it is an LMDB; else an LMDB of n synthetic 256x256 BGR raw Datums (random crops of
    bundled photos) in ``cache`` (default bench/.cache), built once."""
    from ltc.lmdb_io import resolve_path
    real = resolve_path(path)
    if os.path.isdir(real) and os.path.isfile(os.path.join(real, "data.mdb")):
        return real
    target = os.path.join(cache or CACHE, "photos_lmdb_%d" % n)
    if os.path.isfile(os.path.join(target, "data.mdb")):
        return target
    import cv2
    import lmdb
    import numpy as np
    from ltc.lmdb_io import image_to_datum
    photos = bundled_photos()
    rng = np.random.default_rng(seed)
    os.makedirs(target, exist_ok=True)
    env = lmdb.open(target, map_size=n * 256 * 256 * 3 * 2 + (1 << 24))
    with env.begin(write=True) as txn:
        for i in range(n):
            img = photos[i % len(photos)]
            h, w = img.shape[:2]
            s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crop = cv2.resize(img[y:y + s, x:x + s], (256, 256), interpolation=cv2.INTER_AREA)
            txn.put(b"%08d_synth%d.png" % (i, i), image_to_datum(crop, label=0).SerializeToString())
    env.close()
    print("built %s (%d synthetic 256x256 crops of bundled photos; %s not found)" % (target, n, path))
    return target


def bundled_photos():
    """Colour photos shipped with scikit-image, scikit-learn and matplotlib (no downloads), >= 256 px."""
    imgs = [im for im in sample_photos() if min(im.shape[:2]) >= 256]
    if not imgs:
        raise SystemExit("no bundled photos found (scikit-image / scikit-learn / matplotlib data)")
    return imgs


def row_name(r):
    name = "%s %s" % (r["kind"] if r.get("build", "venv") == "venv" else "%s[%s]" % (r["kind"], r["build"]),
                      r["layout"])
    if r.get("inputs") == "data_layer":
        name += "+data(w%d)" % r["workers"]
    return name


def _groups(specs):
    """Specs that can share one child (same kind, BLAS, batch, iterations), in first-seen order."""
    groups = {}
    for spec in specs:
        key = (spec["kind"], spec["blas"], spec["batch"], spec.get("iters"), spec.get("warmup"),
               spec.get("gemm", True), spec.get("alone", False) and id(spec), spec.get("build", "venv"),
               spec.get("isa"))
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def _child_cmd(group, a):
    s0 = group[0]
    iters, warmup = s0.get("iters", a.iters), s0.get("warmup", a.warmup)
    variants = ",".join("%s:%s:%d" % (s["layout"], s["inputs"], s.get("workers", 0)) for s in group)
    common = ["--variants", variants, "--batch", str(s0["batch"]), "--iters", str(iters), "--warmup", str(warmup)]
    if getattr(a, "profile", False):
        common.append("--profile")
    if s0["kind"] == "torch":
        return [a.torch_python, TRAIN_STEP, "--child", "torch", "--threads", str(s0["blas"])] + common
    if s0["kind"] == "gemm":
        return [sys.executable, TRAIN_STEP, "--child", "gemm"]
    lmdb = next((s["lmdb"] for s in group if s.get("lmdb")), "")
    cmd = [sys.executable, TRAIN_STEP, "--child", "caffe", "--lmdb", lmdb] + common
    return cmd + (["--gemm"] if s0.get("gemm", True) else [])


def parse_builds(items, error):
    """["patched=venv", "stock=PREFIX", "perimage=venv,CAFFE_CONV_BATCH=1"] ->
    {"patched": "venv", "stock": (python dir, lib dir, {}), "perimage": ("venv", {"CAFFE_CONV_BATCH": "1"})}.
    After the prefix, comma-separated VAR=VALUE pairs are set in that build's rows only (to compare
    settings of one build, such as the speed patch's CAFFE_CONV_BATCH, in the same run).
    error(msg) is called for a PREFIX that is not a Caffe install or a malformed pair."""
    builds = {}
    for item in items:
        label, _, rest = item.partition("=")
        path, *pairs = (rest or label).split(",")
        extra = {}
        for pair in pairs:
            var, eq, value = pair.partition("=")
            if not eq or not var.isidentifier():
                error("--caffe-builds %s: %r is not VAR=VALUE" % (item, pair))
            extra[var] = value
        if label == "venv" or path == "venv":
            builds[label] = ("venv", extra) if extra else "venv"
            continue
        path = os.path.abspath(os.path.expanduser(path))
        py = [os.path.join(path, d) for d in ("python", "lib/python3/dist-packages")
              if os.path.isdir(os.path.join(path, d, "caffe"))]
        if not py or not os.path.isdir(os.path.join(path, "lib")):
            error("--caffe-builds %s: %s is not a Caffe install prefix (python/caffe/ or "
                  "lib/python3/dist-packages/caffe/, and lib/ expected)" % (item, path))
            continue
        builds[label] = (py[0], os.path.join(path, "lib"), extra)
    return builds


def build_env(env, build):
    """env with a Caffe install (from parse_builds) first on the Python and library paths, plus the
    build's own variables; "venv" leaves it as it is."""
    if build == "venv":
        return env
    env = dict(env)
    if build[0] == "venv":
        env.update(build[1])
        return env
    py, lib, extra = build
    env["PYTHONPATH"] = py + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env.update(extra)
    return env


def _summarise(row):
    t = row.pop("times", None)
    if not t:
        return row
    batch = row["batch"]
    row.update(step_s=statistics.median(t), min_s=min(t), max_s=max(t), mean_s=statistics.mean(t), iters=len(t))
    row["samples_s"] = batch / row["step_s"]
    row["images_s"] = 6 * batch / row["step_s"]
    row["best_images_s"] = 6 * batch / row["min_s"]
    row["step_ms"] = 1000 * row["step_s"]
    row["noise_pct"] = 100.0 * (row["max_s"] - row["min_s"]) / row["step_s"]
    if row.get("flops"):
        row["gflops"] = row["flops"] / row["step_s"] / 1e9
        if row.get("gemm_gflops"):
            row["pct_limit"] = 100.0 * row["gflops"] / row["gemm_gflops"]
    if row.get("data_s") is not None:
        row["data_wait_pct"] = 100.0 * row["data_s"] / row["step_s"]
    if row.get("loss_s") is not None:
        row["loss_pct"] = 100.0 * row["loss_s"] / row["step_s"]
    return row


def run_rows(specs, a):
    """Run the specs, grouped per child (variants of one group step round-robin in one process);
    with a.repeats > 1 all groups run again in turn and the step times are pooled."""
    groups = _groups(specs)
    merged = {}
    order = []
    for rep in range(getattr(a, "repeats", 1)):
        for group in groups:
            s0 = group[0]
            kind, blas, batch = s0["kind"], s0["blas"], s0["batch"]
            env, skip = blas_env(blas) if kind != "torch" else (torch_env(), None)
            build = s0.get("build", "venv")
            if kind != "torch" and build != "venv":
                env = build_env(env, a.caffe_builds[build])
            isa = s0.get("isa")
            if isa:   # oneDNN's instruction-set cap: Caffe's oneDNN and PyTorch's bundled one alike
                env = dict(env, ONEDNN_MAX_CPU_ISA=isa, DNNL_MAX_CPU_ISA=isa)
            if kind == "torch" and not os.path.isfile(a.torch_python):
                skip = "PyTorch not found at %s; install: %s" % (a.torch_python, TORCH_INSTALL_HINT)
            label = "%s %s batch %d blas %s%s" % (row_name(dict(s0, kind=kind)).split(" ", 1)[0],
                                                "/".join(row_name(dict(s, kind=kind)).split(" ", 1)[1]
                                                         for s in group), batch, blas,
                                                  " isa %s" % isa if isa else "")
            if skip:
                if rep == 0:
                    print("skip %s: %s" % (label, skip), flush=True)
                continue
            print("run  %s (repeat %d) ..." % (label, rep + 1), end=" ", flush=True)
            load = load_avg()
            res, rss, wall, err = run_child(_child_cmd(group, a), env=env, timeout=a.timeout)
            if res is None:
                print("FAILED\n%s" % err, flush=True)
                for s in group:
                    key = (kind, blas, batch, s["layout"], s["inputs"], s.get("workers", 0), build, isa)
                    if key not in merged:
                        order.append(key)
                        merged[key] = dict(kind=kind, layout=s["layout"], inputs=s["inputs"], batch=batch,
                                           images=6 * batch, workers=s.get("workers", 0), blas=blas, build=build, isa=isa,
                                           error=(err.strip().splitlines() or ["failed"])[-1][:200])
                continue
            print("done in %.0f s" % wall, flush=True)
            if kind == "gemm":
                res.update(kind="gemm", layout="-", inputs="-", batch=None, images=None, blas=blas, peak_rss_mib=rss, isa=isa,
                           name="sgemm 2048^3 (limit)")
                key = ("gemm", blas, build, isa)
                if key not in merged:
                    order.append(key)
                    merged[key] = res
                continue
            if getattr(a, "profile", False):
                for v in res["variants"]:
                    key = (kind, blas, batch, v["layout"], build, isa)
                    if key in merged:
                        for k2, t2 in v["times"].items():
                            merged[key]["times"].setdefault(k2, []).extend(t2)
                    else:
                        order.append(key)
                        merged[key] = dict(v, blas=blas, build=build, blas_threads=res.get("blas_threads"))
                continue
            for v in res["variants"]:
                key = (kind, blas, batch, v["layout"], v["inputs"], v["workers"], build, isa)
                v.update(images=6 * batch, blas=blas if kind != "torch" else "torch/%st" % blas, build=build, isa=isa,
                         children_peak_rss_mib=res.get("children_peak_rss_mib"),
                         blas_core=res.get("blas_core"), blas_threads=res.get("blas_threads"),
                         blas_lib=res.get("blas_lib"), torch_version=res.get("torch_version"),
                         peak_rss_mib=rss, load_before=load)
                if key in merged and "times" in merged[key]:
                    merged[key]["times"] += v["times"]
                    merged[key]["gemm_list"].append(res.get("gemm_gflops"))
                    merged[key]["peak_rss_mib"] = max(merged[key]["peak_rss_mib"] or 0, rss or 0)
                else:
                    if key not in merged:
                        order.append(key)
                    v["gemm_list"] = [res.get("gemm_gflops")]
                    merged[key] = v
    if getattr(a, "profile", False):
        return [merged[key] for key in order]
    rows = []
    for key in order:
        r = merged[key]
        g = [x for x in r.pop("gemm_list", []) if x]
        if g:
            r["gemm_gflops"] = statistics.median(g)
        r.setdefault("name", row_name(r))
        rows.append(_summarise(r))
    return rows


def write_timing_files(net, cfg, net_path, solver_path, max_iter=None):
    """Write ``net`` and a bare solver for it (no test net, no display, no snapshots) for timing
    runs; the solver comes from ``nets.solver(cfg, net_path)``. Returns ``solver_path``."""
    from ltc import nets
    with open(net_path, "w") as f:
        f.write(str(net))
    s = nets.solver(cfg, net_path)
    del s.test_iter[:]
    s.ClearField("test_interval")
    s.test_initialization = False
    s.display = 0
    s.snapshot = 0
    if max_iter is not None:
        s.max_iter = max_iter
    with open(solver_path, "w") as f:
        f.write(str(s))
    return solver_path
