"""Shared helpers of the bench/ scripts: BLAS settings per child process, per-child peak
memory, Caffe's own sgemm rate, FLOP counting, tables and CSV.

Every measured row of a benchmark runs in a child process of its own (``run_child``) so
that BLAS settings (which OpenBLAS reads once, when the library loads) can differ per
row, and so that the child's peak resident memory (``os.wait4``'s ru_maxrss) belongs to
that row alone.
"""
import csv
import ctypes
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
RESULTS = os.path.join(BENCH, "results")
CACHE = os.path.join(BENCH, ".cache")
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
TORCH_VENV_PY = os.path.join(BENCH, ".venv-torch", "bin", "python")
OPENMP_DIR = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
PTHREAD_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
TORCH_INSTALL_HINT = ("python3 -m venv bench/.venv-torch && bench/.venv-torch/bin/pip install numpy torch "
                      "(a CPU build: e.g. a torch-*+cpu wheel; git-ignored, used only by bench/)")

for _p in (REPO, os.path.join(REPO, "python_layers"), os.path.join(REPO, "tools")):
    if _p not in sys.path:
        sys.path.insert(0, _p)


# ----------------------------------------------------------------------------- machine / BLAS
def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mkl_library():
    """libmkl_rt.so.* from PyPI's ``mkl`` package in the bench venv (None if not installed)."""
    import glob
    hits = sorted(glob.glob(os.path.join(BENCH, ".venv-torch", "lib", "libmkl_rt.so*")))
    return hits[0] if hits else None


def blas_presets():
    """name -> (description, environment changes, None or why it is skipped).

    OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS when it loads; a value of None
    removes the variable from the child's environment. "env" leaves the inherited
    environment alone (this workplace presets OPENBLAS_CORETYPE=Haswell, i.e. AVX2 kernels).
    """
    avx512 = "avx512f" in cpu_flags()
    ncpu = os.cpu_count() or 1
    have_omp = os.path.isfile(os.path.join(OPENMP_DIR, "libopenblas.so.0"))
    mkl = mkl_library()
    skx_skip = None if avx512 else "the CPU has no AVX-512"
    omp_skip = None if have_omp else "libopenblas0-openmp is not installed (apt-get install libopenblas0-openmp)"
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
                   "OMP_WAIT_POLICY=PASSIVE" % (OPENMP_DIR, ncpu),
                   dict(auto, LD_LIBRARY_PATH=OPENMP_DIR, OMP_WAIT_POLICY="PASSIVE"), omp_skip),
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


def caffe_blas_library():
    """Path of the BLAS library that pycaffe's _caffe.so links: read from /proc/self/maps once caffe is
    imported (what the loader really picked, LD_LIBRARY_PATH included), else from ldd."""
    import caffe
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
        for name in ("libopenblas", "libblis", "libblas.so"):
            m = re.search(r"(/\S*/%s\S*)$" % re.escape(name), maps, re.M)
            if m:
                return m.group(1)
    except OSError:
        pass
    so = os.path.join(os.path.dirname(caffe.__file__), "_caffe.so")
    out = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
    for name in ("libopenblas", "libblis", "libmkl_rt", "libblas"):
        m = re.search(r"^\s*(%s\S*)\s+=>\s+(\S+)" % name, out, re.M)
        if m:
            return m.group(2)
    raise RuntimeError("cannot find the BLAS library of %s in ldd output:\n%s" % (so, out))


def blas_info(lib_path):
    """(library, core name, threads) of the BLAS that serves cblas_sgemm (None fields where unknown)."""
    if os.environ.get("LD_PRELOAD") and "mkl" in os.environ["LD_PRELOAD"]:
        lib = _sgemm_lib(lib_path)
        try:
            lib.MKL_Get_Max_Threads.restype = ctypes.c_int
            threads = lib.MKL_Get_Max_Threads()
        except AttributeError:
            threads = None
        return os.environ["LD_PRELOAD"].split(":")[0], "MKL", threads
    lib = ctypes.CDLL(lib_path)
    core = threads = None
    try:
        lib.openblas_get_corename.restype = ctypes.c_char_p
        core = lib.openblas_get_corename().decode()
        threads = lib.openblas_get_num_threads()
    except AttributeError:
        pass
    return os.path.realpath(lib_path), core, threads


def _sgemm_lib(lib_path):
    """The library whose cblas_sgemm Caffe's calls reach: a preloaded one (LD_PRELOAD) wins over
    the one _caffe.so links, as in the dynamic linker's own search order."""
    if os.environ.get("LD_PRELOAD"):
        glob_scope = ctypes.CDLL(None)
        if hasattr(glob_scope, "cblas_sgemm"):
            return glob_scope
    return ctypes.CDLL(lib_path)


def sgemm_gflops(lib_path, m=2048, n=2048, k=2048, reps=5):
    """Best-of-reps single-precision GEMM rate (GFLOP/s = 2mnk / s) through cblas_sgemm of lib_path."""
    import numpy as np
    lib = _sgemm_lib(lib_path)
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


def machine_line():
    return "machine: %s, %d CPUs, avx512f=%s" % (cpu_name(), os.cpu_count() or 1, "avx512f" in cpu_flags())


def load_avg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
