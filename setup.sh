#!/usr/bin/env bash
# setup.sh -- build (or adopt) real BVLC Caffe and make the project environment.
#
#   ./setup.sh                      # apt deps, Caffe from Debian's pinned source, .venv/
#   ./setup.sh --caffe PATH         # use an existing Caffe build/install instead
#   CAFFE_ROOT=PATH ./setup.sh      # same as --caffe PATH
#   ./setup.sh --cuda               # build Caffe with CUDA 12/13 + cuDNN 8/9 + NCCL (see README)
#   ./setup.sh --cuda --cuda-arch 80,86,90   # GPU architectures (default: nvidia-smi's,
#                                   # or sm_80,sm_90 + PTX 9.0 when no GPU is visible)
#   ./setup.sh --stock-caffe        # Caffe without the project's speed patches
#   ./setup.sh --gtests convolution_layer,pooling_layer   # rebuild, then run those Caffe gtests
#   ./setup.sh --rebuild            # ignore the cached Caffe build
#   ./setup.sh --onednn wheel       # speed/0204's convolution on oneDNN 3 from pinned wheels
#                                   # (tools/caffe/onednn-wheels.txt, patch onednn3/0205) instead
#                                   # of Debian's libdnnl 2.6 (--onednn debian, the default)
#   ./setup.sh --venv DIR ...       # make/rewire the environment DIR instead of .venv/
#   ./setup.sh --bundle OUT.tar.gz  # pack the environment made above (CPU or --cuda) into a
#                                   # relocatable bundle for machines without root (docs/bundle.md);
#                                   # --bundle-split 64 writes pieces of at most 64 MiB instead
#
# After it: `source .venv/bin/activate` puts `caffe`, `convert_imageset`, ... on PATH,
# `import caffe` works and python_layers/ is importable.
#
# The compiled Caffe is cached outside the work tree, in
#   ${LTC_CACHE:-$HOME/.cache/learning-to-count}/caffe-<key>
# where <key> hashes the source version, the archives' checksums, the project's patches
# and the build flags; a new clone on the same machine reuses it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$REPO/.venv"
CACHE_ROOT="${LTC_CACHE:-$HOME/.cache/learning-to-count}"

CAFFE_SRC_PKG=caffe
CAFFE_SRC_VERSION="1.0.0+git20180821.99bd997-8"
CAFFE_UPSTREAM_VERSION="1.0.0+git20180821.99bd997"
CAFFE_SRC_SUITE=bullseye
ORIG_SHA256=e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c
DEBIAN_SHA256=07cf073227494a6b07234e40cb5df91db566616593eef9baafdc4d06ad159f21
PATCH_DIR="$REPO/tools/caffe/patches"
# Patches: patches/*.patch always; patches/speed/*.patch unless --stock-caffe;
# patches/cuda/*.patch for CUDA builds. Only the patches chosen enter the cache key, so a
# stock CPU build keeps the key it had before the optional sets existed.

APT_PACKAGES=(
  build-essential cmake pkg-config patch ca-certificates
  libboost-dev libboost-system-dev libboost-thread-dev libboost-filesystem-dev
  libboost-python-dev libgflags-dev libgoogle-glog-dev libhdf5-dev liblmdb-dev
  libleveldb-dev libsnappy-dev libopenblas-dev libprotobuf-dev protobuf-compiler libdnnl-dev
  libopencv-dev python3-dev python3-venv libpython3-dev
  dataset-fashion-mnist
)
# Data-only packages (not imported by the code): foolbox ships 20 ImageNet photos used by
# data_prep/embedded.py; installed without its dependencies.
DATA_PIP_PACKAGES="foolbox==3.3.4"

USE_CUDA=0
CUDA_ARCH=""
STOCK=0
REBUILD=0
EXISTING="${CAFFE_ROOT:-}"
BUNDLE_OUT=""
BUNDLE_SPLIT=""
ONEDNN=debian

die() { echo "setup.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --caffe) [ $# -ge 2 ] || die "--caffe needs a path"; EXISTING="$2"; shift 2 ;;
    --caffe=*) EXISTING="${1#--caffe=}"; shift ;;
    --cuda) USE_CUDA=1; shift ;;
    --cuda-arch) [ $# -ge 2 ] || die "--cuda-arch needs a list such as 80,90"; CUDA_ARCH="$2"; shift 2 ;;
    --cuda-arch=*) CUDA_ARCH="${1#--cuda-arch=}"; shift ;;
    --stock-caffe) STOCK=1; shift ;;
    --gtests) [ $# -ge 2 ] || die "--gtests needs a list such as convolution_layer,lrn_layer"
              export CAFFE_GTESTS="$2"; REBUILD=1; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --bundle) [ $# -ge 2 ] || die "--bundle needs an output path such as ltc-caffe.tar.gz"; BUNDLE_OUT="$2"; shift 2 ;;
    --bundle-split) [ $# -ge 2 ] || die "--bundle-split needs a size in MiB such as 64"; BUNDLE_SPLIT="$2"; shift 2 ;;
    --onednn) [ $# -ge 2 ] || die "--onednn needs 'debian' or 'wheel'"; ONEDNN="$2"; shift 2 ;;
    --onednn=*) ONEDNN="${1#--onednn=}"; shift ;;
    --venv) [ $# -ge 2 ] || die "--venv needs a folder"; VENV="$2"; shift 2 ;;
    --venv=*) VENV="${1#--venv=}"; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see ./setup.sh --help)" ;;
  esac
done
case "$ONEDNN" in
  debian|wheel) ;;
  *) die "--onednn '$ONEDNN': expected 'debian' (Debian's libdnnl-dev 2.6, the default) or 'wheel' (oneDNN 3 from tools/caffe/onednn-wheels.txt)" ;;
esac
[ "$ONEDNN" = debian ] || [ "$STOCK" = 0 ] || die "--onednn wheel needs the speed patches (the oneDNN convolution is speed/0204): drop --stock-caffe"
[ "$ONEDNN" = debian ] || [ -z "$EXISTING" ] || die "--onednn wheel builds Caffe: it does not apply to an existing Caffe (--caffe / CAFFE_ROOT)"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
if [ -n "$CUDA_ARCH" ]; then
  [ "$USE_CUDA" = 1 ] || die "--cuda-arch needs --cuda"
  echo "$CUDA_ARCH" | grep -qE '^[0-9]{2,3}([, ][0-9]{2,3})*$' \
    || die "--cuda-arch '$CUDA_ARCH': expected compute capabilities such as 80,86,90"
fi

# --bundle: pack the existing environment (no apt, no build; tools/bundle.py)
if [ -n "$BUNDLE_SPLIT" ]; then
  [ -n "$BUNDLE_OUT" ] || die "--bundle-split needs --bundle OUT.tar.gz"
  echo "$BUNDLE_SPLIT" | grep -qE '^[1-9][0-9]*$' || die "--bundle-split '$BUNDLE_SPLIT': expected a size in MiB such as 64"
fi
if [ -n "$BUNDLE_OUT" ]; then
  [ "$USE_CUDA$STOCK$REBUILD" = 000 ] && [ -z "$EXISTING" ] \
    || die "--bundle packs the environment that ./setup.sh already made: run ./setup.sh [--cuda ...] first, then ./setup.sh --bundle OUT.tar.gz alone"
  case "$BUNDLE_OUT" in *.tar.gz|*.tar.xz) ;; *) die "--bundle '$BUNDLE_OUT': name the bundle OUT.tar.gz or OUT.tar.xz (smaller; needs xz to unpack)" ;; esac
  [ -x "$VENV/bin/python" ] && [ -f "$VENV/.caffe_locations" ] \
    || die "--bundle: no project environment in $VENV: run ./setup.sh (or ./setup.sh --cuda) first"
  exec "$VENV/bin/python" "$REPO/tools/bundle.py" --out "$BUNDLE_OUT" --locations "$VENV/.caffe_locations" \
    ${BUNDLE_SPLIT:+--split "$BUNDLE_SPLIT"}
fi

# ---------------------------------------------------------------- platform checks
[ -r /etc/os-release ] || die "cannot read /etc/os-release: this script supports Debian 12 / Ubuntu with apt only"
. /etc/os-release
case " ${ID:-} ${ID_LIKE:-} " in
  *" debian "*|*" ubuntu "*) ;;
  *) die "unsupported OS '${PRETTY_NAME:-unknown}': this script needs Debian/Ubuntu with apt. On other systems build Caffe yourself and run ./setup.sh --caffe /path/to/caffe" ;;
esac
command -v apt-get >/dev/null || die "apt-get not found: this script needs apt. Build Caffe yourself and use --caffe PATH"
PY=/usr/bin/python3

need_apt=0
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_apt=1
  [ "$(id -u)" = 0 ] || die "missing system packages (${missing[*]}) and not root: run as root (or sudo ./setup.sh), or install them with apt-get first"
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: check the network / the apt sources in /etc/apt"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
fi

# Python must match Boost.Python (Debian ships libboost_python3XX for one 3.X).
PYVER="$($PY -c 'import sys; print("%d%d" % sys.version_info[:2])')"
BOOST_PY="$(ls /usr/lib/*/libboost_python3*.so 2>/dev/null | head -n1 || true)"
[ -n "$BOOST_PY" ] || die "Boost.Python not found (libboost-python-dev)"
BOOST_PYVER="$(basename "$BOOST_PY" | sed -E 's/libboost_python([0-9]+)\.so/\1/')"
[ "$PYVER" = "$BOOST_PYVER" ] || die "$PY is Python $PYVER but Boost.Python is built for Python $BOOST_PYVER: install the matching python3 (apt-get install python3-dev) or use --caffe with a Caffe built for your Python"

# ---------------------------------------------------------------- python venv
REQ_HASH="$( { cat "$REPO/requirements.txt"; echo "$DATA_PIP_PACKAGES"; } | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha" 2>/dev/null)" != "$REQ_HASH" ]; then
  say "creating $VENV from requirements.txt"
  [ -x "$VENV/bin/python" ] || $PY -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements.txt" \
    || die "pip install -r requirements.txt failed: check access to the Python package index"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps $DATA_PIP_PACKAGES \
    || die "pip install --no-deps $DATA_PIP_PACKAGES failed: check access to the Python package index"
  echo "$REQ_HASH" > "$VENV/.requirements.sha"
fi
VPY="$VENV/bin/python"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# ---------------------------------------------------------------- choose / build Caffe
if [ -n "$EXISTING" ]; then
  say "using existing Caffe at $EXISTING"
  "$VPY" "$REPO/tools/check_caffe.py" --locate "$EXISTING" > "$VENV/.caffe_locations.new" \
    || { rm -f "$VENV/.caffe_locations.new"; die "the Caffe at '$EXISTING' cannot be used (see the message above); the environment was left unchanged"; }
  mv "$VENV/.caffe_locations.new" "$VENV/.caffe_locations"
  # shellcheck disable=SC1091
  . "$VENV/.caffe_locations"
else
  FLAGS="-DCPU_ONLY=ON -DBLAS=Open"
  shopt -s nullglob
  PATCHES=("$PATCH_DIR"/*.patch)
  [ "$STOCK" = 1 ] || PATCHES+=("$PATCH_DIR"/speed/*.patch)
  [ "$USE_CUDA" = 0 ] || PATCHES+=("$PATCH_DIR"/cuda/*.patch)
  [ "$ONEDNN" = debian ] || PATCHES+=("$PATCH_DIR"/onednn3/*.patch)
  shopt -u nullglob
  if [ "$USE_CUDA" = 1 ]; then
    # shellcheck disable=SC1091
    . "$REPO/tools/caffe/cuda_flags.sh"   # sets CUDA_FLAGS and CUDA_SUMMARY, or dies
    FLAGS="$CUDA_FLAGS"
    say "CUDA build: $CUDA_SUMMARY"
  fi
  # speed/0204: CPU convolution through oneDNN (engine DEFAULT; CAFFE_CONV_ENGINE=caffe at run
  # time keeps im2col + GEMM)
  [ "$STOCK" = 1 ] || FLAGS="$FLAGS -DUSE_DNNL=ON"
  if [ "$ONEDNN" = wheel ]; then
    # oneDNN 3 from the pinned wheels, unpacked into the cache (its folder name hashes the
    # list, so it enters the key through FLAGS); libcaffe gets that lib folder as RUNPATH
    # (CMAKE_INSTALL_RPATH_USE_LINK_PATH in build_caffe.sh)
    DNNL_ROOT="$(VPY="$VPY" bash "$REPO/tools/caffe/onednn_wheels.sh" "$CACHE_ROOT")" \
      || die "--onednn wheel: could not unpack the pinned oneDNN wheels (see above)"
    FLAGS="$FLAGS -DDNNL_INCLUDE_DIR=$DNNL_ROOT/include -DDNNL_LIBRARY=$DNNL_ROOT/lib/libdnnl.so.3"
    say "oneDNN: $(cat "$DNNL_ROOT/.complete") from the pinned wheels ($DNNL_ROOT)"
  fi
  FLAGS="$FLAGS -DBUILD_python=ON -DBUILD_python_layer=ON -Dpython_version=${PYVER:0:1}.${PYVER:1} -DUSE_OPENCV=ON -DUSE_LMDB=ON -DUSE_LEVELDB=ON -DBUILD_docs=OFF -DCMAKE_BUILD_TYPE=Release"
  NUMPY_VER="$("$VPY" -c 'import numpy; print(numpy.__version__)')"
  KEY="$( { echo "$CAFFE_SRC_VERSION $ORIG_SHA256 $DEBIAN_SHA256 py$PYVER numpy$NUMPY_VER"; echo "$FLAGS";
           cat "${PATCHES[@]}" "$REPO/tools/caffe/build_caffe.sh"; } | sha256sum | cut -c1-16)"
  PREFIX="$CACHE_ROOT/caffe-$KEY"
  if [ "$REBUILD" = 1 ] || [ ! -f "$PREFIX/.complete" ]; then
    say "building Caffe $CAFFE_SRC_VERSION into $PREFIX (a few minutes; CUDA: 20-40 min on 2 cores)"
    rm -rf "$PREFIX"
    PATCH_SET="$(mktemp -d)"
    for p in "${PATCHES[@]}"; do cp "$p" "$PATCH_SET/"; done
    CAFFE_SRC_PKG="$CAFFE_SRC_PKG" CAFFE_SRC_VERSION="$CAFFE_SRC_VERSION" \
    CAFFE_UPSTREAM_VERSION="$CAFFE_UPSTREAM_VERSION" CAFFE_SRC_SUITE="$CAFFE_SRC_SUITE" \
    ORIG_SHA256="$ORIG_SHA256" DEBIAN_SHA256="$DEBIAN_SHA256" PATCH_DIR="$PATCH_SET" \
    FLAGS="$FLAGS" VPY="$VPY" CACHE_ROOT="$CACHE_ROOT" \
      bash "$REPO/tools/caffe/build_caffe.sh" "$PREFIX" || { rm -rf "$PATCH_SET"; die "Caffe build failed (log above)"; }
    rm -rf "$PATCH_SET"
  else
    say "Caffe already built: $PREFIX"
  fi
  "$VPY" "$REPO/tools/check_caffe.py" --locate "$PREFIX" > "$VENV/.caffe_locations.new" \
    || { rm -f "$VENV/.caffe_locations.new"; die "the freshly built Caffe at $PREFIX fails its check"; }
  mv "$VENV/.caffe_locations.new" "$VENV/.caffe_locations"
  . "$VENV/.caffe_locations"
fi

# ---------------------------------------------------------------- wire it into the venv
# CAFFE_BIN_DIR, CAFFE_PY_DIR, CAFFE_LIB_DIR come from .caffe_locations
# ONE mechanism makes pycaffe, the ltc package and python_layers/ importable: this .pth in
# the venv's site-packages (read by the venv's python, pytest and every tool).
# Its last line sets two thread defaults before anything loads libgomp or OpenBLAS (both read
# them once, when loaded), unless the caller set them: OpenMP workers sleep at once after a
# parallel region, and OpenBLAS workers spin 2^4 cycles instead of 2^28 after a BLAS call. With
# the speed patches' OpenMP regions next to OpenBLAS's own threads on the same cores, the spinning
# threads of one held back the other (bench/results/train_step_patch.txt: -25 % per step for the
# six-branch net at batch 16 on 2 cores). The caffe wrapper below sets the same defaults.
THREAD_DEFAULTS="import os; os.environ.setdefault('OMP_WAIT_POLICY', 'passive'); os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')"
printf '%s\n%s\n%s\n%s\n' "$CAFFE_PY_DIR" "$REPO/python_layers" "$REPO" "$THREAD_DEFAULTS" > "$SITE/learning_to_count.pth"
# The `caffe` binary embeds the system libpython, which does not read the venv's .pth: its
# wrapper hands the embedded interpreter the venv python's own sys.path (so the .pth above
# stays the one place that names the paths).
for tool in "$CAFFE_BIN_DIR"/*; do
  [ -f "$tool" ] && [ -x "$tool" ] || continue
  name="$(basename "$tool")"; name="${name%.bin}"
  cat > "$VENV/bin/$name" <<EOF
#!/bin/sh
# generated by setup.sh: runs $tool inside the project environment
PYTHONPATH="\$("$VPY" -c 'import os, sys; print(os.pathsep.join(p for p in sys.path[1:] if p))')\${PYTHONPATH:+:\$PYTHONPATH}"
LD_LIBRARY_PATH="$CAFFE_LIB_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
: "\${OMP_WAIT_POLICY:=passive}" "\${OPENBLAS_THREAD_TIMEOUT:=4}"
export PYTHONPATH LD_LIBRARY_PATH OMP_WAIT_POLICY OPENBLAS_THREAD_TIMEOUT
exec "$tool" "\$@"
EOF
  chmod +x "$VENV/bin/$name"
done
# activate also exports LD_LIBRARY_PATH so that `import caffe` finds libcaffe
# (rewritten on every run: the Caffe in use may have changed, e.g. --stock-caffe / --cuda)
sed -i '/^# learning-to-count$/,+1d' "$VENV/bin/activate"
cat >> "$VENV/bin/activate" <<EOF
# learning-to-count
export LD_LIBRARY_PATH="$CAFFE_LIB_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF

"$VPY" "$REPO/tools/check_caffe.py" --venv "$VENV" || die "environment check failed"
say "done. Next: source .venv/bin/activate && make demo   (tests: make test)"
