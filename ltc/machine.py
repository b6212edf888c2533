"""What this machine runs on: the CPU (/proc/cpuinfo), the BLAS library Caffe loaded and its
core, and what oneDNN dispatches to (``kernel_probe``). Speed tables (bench/), the ISA test
sweep (tools/test_isa.py) and the seed grid (tools/demo_seeds.py) print these facts beside
their numbers."""
import ctypes
import json
import os
import re
import subprocess
import sys

from ltc import REPO


def _cpuinfo(field):
    """The value of the first ``field`` line of /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags():
    """The CPU's feature flags (avx2, avx512f, ...) as a set; empty where unknown."""
    return set((_cpuinfo("flags") or "").split())


def cpu_name():
    return _cpuinfo("model name") or "unknown"


def cpu_vendor():
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD, ...)."""
    return _cpuinfo("vendor_id") or "unknown"


def machine_line():
    return "machine: %s (%s), %d CPUs, avx512f=%s" % (cpu_name(), cpu_vendor(), os.cpu_count() or 1,
                                                      "avx512f" in cpu_flags())


# Run in a child under the environment to probe: the BLAS core OpenBLAS picked (OPENBLAS_CORETYPE or
# its own detection) and what oneDNN says it dispatched (ONEDNN_VERBOSE=1: version, ISA, and the
# implementation of a small convolution through Caffe's default engine), as one JSON line.
_KERNEL_PROBE = r"""
import json, os, sys, tempfile
import caffe
from caffe import layers as L
from ltc import machine
_, core, threads = machine.blas_info(machine.caffe_blas_library())
n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[2, 16, 13, 13]))
n.conv = L.Convolution(n.data, num_output=32, kernel_size=3, weight_filler=dict(type="gaussian", std=0.1))
with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
    f.write(str(n.to_proto()))
caffe.set_mode_cpu()
net = caffe.Net(f.name, caffe.TRAIN)
sys.stdout.flush()
net.forward()
os.unlink(f.name)
print(json.dumps(dict(openblas_core=core, openblas_threads=threads)))
"""


def parse_onednn_verbose(text):
    """{onednn_version, onednn_isa, onednn_conv_impl} from ONEDNN_VERBOSE=1 (or DNNL_VERBOSE) output of
    oneDNN 2.x ("onednn_verbose,info,cpu,isa:...", "onednn_verbose,exec,cpu,convolution,IMPL,...") or
    3.x (the same after "v1," and "primitive,"); fields absent from the text are None."""
    out = dict(onednn_version=None, onednn_isa=None, onednn_conv_impl=None)
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) < 3 or parts[0] not in ("onednn_verbose", "dnnl_verbose"):
            continue
        parts = parts[1:]
        while parts and (re.fullmatch(r"v\d+", parts[0]) or parts[0] in ("primitive", "graph")):
            parts = parts[1:]
        if len(parts) < 2:
            continue
        if parts[0] == "info" and parts[1].startswith("oneDNN v"):
            out["onednn_version"] = parts[1].split()[1].lstrip("v")
        elif parts[0] == "info" and parts[1] == "cpu" and len(parts) > 2 and parts[2].startswith("isa:"):
            out["onednn_isa"] = ",".join(parts[2:])[4:]
        elif parts[0] == "exec" and len(parts) > 3 and parts[1] == "cpu" and parts[2] == "convolution" \
                and not out["onednn_conv_impl"]:
            out["onednn_conv_impl"] = parts[3]
    return out


def kernel_probe(env=None, python=None):
    """What the kernels of a Caffe child under ``env`` dispatch to: {openblas_core, openblas_threads,
    onednn_version, onednn_isa, onednn_conv_impl, error}. ONEDNN_MAX_CPU_ISA caps oneDNN's choice and
    OPENBLAS_CORETYPE forces OpenBLAS's; this says what they really did on this CPU."""
    env = dict(os.environ if env is None else env, ONEDNN_VERBOSE="1", GLOG_minloglevel="2")
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    res = subprocess.run([python or sys.executable, "-c", _KERNEL_PROBE], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    return probe_report(res, openblas_core=None, openblas_threads=None)


def probe_report(res, **fields):
    """What a probe child (a finished ``subprocess.run`` with text output) reported: oneDNN's
    verbose lines (``parse_onednn_verbose``), then ``fields`` as defaults that the child's last
    JSON line on stdout overrides, and ``error``: None, or "exit N: its last stderr line"."""
    out = parse_onednn_verbose(res.stdout + "\n" + res.stderr)
    out.update(fields, error=None)
    for line in reversed(res.stdout.strip().splitlines()):
        if line.startswith("{"):
            out.update(json.loads(line))
            break
    if res.returncode != 0:
        out["error"] = "exit %d: %s" % (res.returncode, (res.stderr.strip().splitlines() or ["?"])[-1][:200])
    return out


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
        lib = sgemm_library(lib_path)
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


def sgemm_library(lib_path):
    """The library whose cblas_sgemm Caffe's calls reach: a preloaded one (LD_PRELOAD) wins over
    the one _caffe.so links, as in the dynamic linker's own search order."""
    if os.environ.get("LD_PRELOAD"):
        glob_scope = ctypes.CDLL(None)
        if hasattr(glob_scope, "cblas_sgemm"):
            return glob_scope
    return ctypes.CDLL(lib_path)

