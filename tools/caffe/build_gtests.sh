#!/usr/bin/env bash
# build_gtests.sh -- build Caffe's own gtests for a chosen set of test files, linked against the
# project's installed libcaffe, without rebuilding Caffe (`make caffe-gtests`; docs/caffe_build.md).
#
#   bash tools/caffe/build_gtests.sh                     # the default numerical set (below)
#   bash tools/caffe/build_gtests.sh --tests convolution_layer,pooling_layer
#   bash tools/caffe/build_gtests.sh --print-path        # the cached binary, or exit 3 if not built
#   bash tools/caffe/build_gtests.sh --check             # exit 0 if this Caffe's gtests can be built
#                                                        # (a CPU_ONLY build installed by setup.sh), else 3
#   bash tools/caffe/build_gtests.sh --plant P.patch --interpose src/caffe/layers/x.cpp
#                                                        # a planted-bug build (see below)
#
# How: the Debian source archives that setup.sh downloaded (CACHE/src, sha256-checked again) are
# unpacked into a temporary folder and patched exactly as build_caffe.sh does (Debian's series,
# then tools/caffe/patches/*.patch, then speed/*.patch when the installed Caffe has them: the
# patched include/caffe must equal the installed one, file for file, or the script stops). Then
# tools/caffe/gtests/CMakeLists.txt compiles test_caffe_main.cpp, the chosen test_*.cpp and the
# bundled gtest-all.cpp with the installed CaffeConfig.cmake's definitions (CPU_ONLY, USE_DNNL,
# USE_OPENCV, ...) and Caffe's Release flags, and links libcaffe. Niced, -j2 by default.
#
# The binary is cached in CACHE/gtests-<key>/test.testbin, where <key> hashes libcaffe.so, the
# test list, the archives' checksums and this script and CMakeLists.txt; a second call prints
# the path at once. Run it from its own folder (the tests read src/caffe/test/test_data relative to
# the working directory). Next to it: tests.txt (the files) and suites.tsv (file -> gtest suites, for
# tools/test_isa.py's per-file rows).
#
# --plant P.patch applies one more patch to the unpacked source (a deliberate bug) and
# --interpose a,b compiles those library sources into the test binary, where their definitions
# take precedence over libcaffe's (ELF interposition): a wrong layer is tested without touching
# the installed Caffe. Such builds go to CACHE/gtests-<key> too (the key covers both options).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_ROOT="${LTC_CACHE:-$HOME/.cache/learning-to-count}"
DEFAULT_TESTS="convolution_layer,dnnl_conv_layer,pooling_layer,inner_product_layer,neuron_layer,lrn_layer,softmax_layer,softmax_with_loss_layer,euclidean_loss_layer,gradient_based_solver,im2col_layer,math_functions"

die() { echo "build_gtests.sh: error: $1" >&2; exit "${2:-1}"; }
say() { echo "==> $*" >&2; }
usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

TESTS="$DEFAULT_TESTS"; PREFIX=""; JOBS=2; PRINT=0; CHECK=0; FORCE=0; PLANT=""; INTERPOSE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) [ $# -ge 2 ] || die "--tests needs a list such as convolution_layer,pooling_layer" 2; TESTS="$2"; shift 2 ;;
    --tests=*) TESTS="${1#--tests=}"; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs the installed Caffe's folder (bin, lib, include, share)" 2; PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#--prefix=}"; shift ;;
    -j|--jobs) [ $# -ge 2 ] || die "--jobs needs a number" 2; JOBS="$2"; shift 2 ;;
    --plant) [ $# -ge 2 ] || die "--plant needs a patch file" 2; PLANT="$2"; shift 2 ;;
    --interpose) [ $# -ge 2 ] || die "--interpose needs library sources such as src/caffe/layers/relu_layer.cpp" 2; INTERPOSE="$2"; shift 2 ;;
    --print-path) PRINT=1; shift ;;
    --check) CHECK=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" 2 ;;
  esac
done
echo "$JOBS" | grep -qE '^[1-9][0-9]*$' || die "--jobs '$JOBS': expected a positive number" 2
echo "$TESTS" | grep -qE '^[a-z0-9_]+(,[a-z0-9_]+)*$' \
  || die "--tests '$TESTS': expected test file stems such as convolution_layer,pooling_layer (no test_ prefix, no .cpp)" 2
if [ -n "$PLANT" ]; then
  [ -f "$PLANT" ] || die "--plant '$PLANT': no such file" 2
  PLANT="$(cd "$(dirname "$PLANT")" && pwd)/$(basename "$PLANT")"
fi
[ -z "$INTERPOSE" ] || echo "$INTERPOSE" | grep -qE '^src/caffe/[A-Za-z0-9_/]+\.cpp(,src/caffe/[A-Za-z0-9_/]+\.cpp)*$' \
  || die "--interpose '$INTERPOSE': expected library sources such as src/caffe/layers/relu_layer.cpp" 2

# ---------------------------------------------------------------- the installed Caffe
if [ -z "$PREFIX" ]; then
  LOC="$REPO/.venv/.caffe_locations"
  [ -f "$LOC" ] || die "no project environment ($LOC missing): run ./setup.sh first, or pass --prefix" 3
  CAFFE_LIB_DIR="$(sed -n "s/^CAFFE_LIB_DIR='\(.*\)'$/\1/p" "$LOC")"
  [ -n "$CAFFE_LIB_DIR" ] || die "$LOC names no CAFFE_LIB_DIR"
  PREFIX="$(dirname "$CAFFE_LIB_DIR")"
fi
PREFIX="$(cd "$PREFIX" 2>/dev/null && pwd)" || die "--prefix: no such folder"
CONFIG="$PREFIX/share/Caffe/CaffeConfig.cmake"
LIB="$(ls "$PREFIX"/lib/libcaffe.so.* 2>/dev/null | head -n1 || true)"
[ -f "$CONFIG" ] && [ -n "$LIB" ] && [ -d "$PREFIX/include/caffe/test" ] \
  || die "$PREFIX is not a Caffe installed by ./setup.sh (needs share/Caffe/CaffeConfig.cmake, lib/libcaffe.so.*, include/caffe/test)" 3
grep -q '^set(Caffe_CPU_ONLY ON)' "$CONFIG" \
  || die "$PREFIX is a CUDA build of Caffe: this script builds the CPU tests of a CPU_ONLY build only" 3
[ "$CHECK" = 0 ] || exit 0

# ---------------------------------------------------------------- cache key
pin() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" "$REPO/setup.sh" | head -n1; }
CAFFE_SRC_PKG="$(pin CAFFE_SRC_PKG)"; CAFFE_SRC_VERSION="$(pin CAFFE_SRC_VERSION)"
CAFFE_UPSTREAM_VERSION="$(pin CAFFE_UPSTREAM_VERSION)"
ORIG_SHA256="$(pin ORIG_SHA256)"; DEBIAN_SHA256="$(pin DEBIAN_SHA256)"
[ -n "$CAFFE_SRC_PKG" ] && [ -n "$CAFFE_SRC_VERSION" ] && [ -n "$ORIG_SHA256" ] && [ -n "$DEBIAN_SHA256" ] \
  || die "could not read the Caffe source pins from $REPO/setup.sh"
KEY="$( { sha256sum "$LIB" | cut -d' ' -f1; echo "$TESTS|$INTERPOSE|$ORIG_SHA256|$DEBIAN_SHA256";
          [ -z "$PLANT" ] || cat "$PLANT"; cat "$0" "$REPO/tools/caffe/gtests/CMakeLists.txt"; } | sha256sum | cut -c1-16)"
OUT="$CACHE_ROOT/gtests-$KEY"
if [ -f "$OUT/.complete" ] && [ "$FORCE" = 0 ]; then
  [ "$PRINT" = 1 ] || say "Caffe gtests already built ($(cat "$OUT/tests.txt" | tr '\n' ' '))"
  echo "$OUT/test.testbin"; exit 0
fi
[ "$PRINT" = 0 ] || die "the Caffe gtests for --tests $TESTS are not built yet: run make caffe-gtests (or bash tools/caffe/build_gtests.sh)" 3

# ---------------------------------------------------------------- source, patched as for the library
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
DL="$CACHE_ROOT/src"
ORIG="$(ls "$DL/${CAFFE_SRC_PKG}_${CAFFE_UPSTREAM_VERSION}.orig.tar."* 2>/dev/null | head -n1 || true)"
DEB="$(ls "$DL/${CAFFE_SRC_PKG}_${CAFFE_SRC_VERSION}.debian.tar."* 2>/dev/null | head -n1 || true)"
[ -n "$ORIG" ] && [ -n "$DEB" ] || die "the Caffe source archives are not in $DL: run ./setup.sh --rebuild once (it downloads and keeps them)"
[ "$(sha256sum "$ORIG" | cut -d' ' -f1)" = "$ORIG_SHA256" ] || die "$ORIG fails its sha256 check"
[ "$(sha256sum "$DEB" | cut -d' ' -f1)" = "$DEBIAN_SHA256" ] || die "$DEB fails its sha256 check"

mkdir -p "$CACHE_ROOT"
WORK="$(mktemp -d "$CACHE_ROOT/gtest-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
T0=$(date +%s)
SRC="$WORK/src"; mkdir -p "$SRC"
tar -xf "$ORIG" -C "$SRC"
if [ ! -f "$SRC/CMakeLists.txt" ] && [ "$(ls "$SRC" | wc -l)" = 1 ]; then
  top="$SRC/$(ls "$SRC")"; mv "$top"/* "$top"/.[!.]* "$SRC"/ 2>/dev/null || true; rmdir "$top"
fi
tar -xf "$DEB" -C "$SRC"
while read -r p _; do
  case "$p" in ''|'#'*) continue ;; esac
  patch -d "$SRC" -p1 -s --forward < "$SRC/debian/patches/$p" || die "Debian patch $p failed to apply"
done < "$SRC/debian/patches/series"
apply_set() {  # apply_set GLOB...
  local p; for p in "$@"; do
    [ -f "$p" ] || continue
    patch -d "$SRC" -p1 -s --forward < "$p" || die "project patch $(basename "$p") failed to apply"
  done
}
same_headers() { diff -rq -x proto "$SRC/include/caffe" "$PREFIX/include/caffe" >/dev/null 2>&1; }
apply_set "$REPO"/tools/caffe/patches/*.patch
PATCHSET="patches/*.patch"
if ! same_headers; then
  apply_set "$REPO"/tools/caffe/patches/speed/*.patch
  PATCHSET="patches/*.patch + speed/*.patch"
  same_headers || { diff -rq -x proto "$SRC/include/caffe" "$PREFIX/include/caffe" | head -n 5 >&2;
    die "the headers in $PREFIX/include/caffe match neither Debian's source + tools/caffe/patches nor + speed/ (a Caffe from another source tree?)"; }
fi
say "source: $(basename "$ORIG") + Debian's series + $PATCHSET (headers identical to $PREFIX/include)"
if [ -n "$PLANT" ]; then
  patch -d "$SRC" -p1 --forward < "$PLANT" >&2 || die "--plant $(basename "$PLANT") failed to apply"
  say "planted: $(basename "$PLANT")"
fi
IFS=, read -r -a TLIST <<< "$TESTS"
missing=()
for t in "${TLIST[@]}"; do [ -f "$SRC/src/caffe/test/test_$t.cpp" ] || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  avail="$(cd "$SRC/src/caffe/test" && ls test_*.cpp | sed 's/^test_//; s/\.cpp$//' | grep -v '^caffe_main$' | tr '\n' ' ')"
  die "no such Caffe test file: ${missing[*]} (available: $avail)" 2
fi
if [ -n "$INTERPOSE" ]; then
  IFS=, read -r -a ILIST <<< "$INTERPOSE"
  for s in "${ILIST[@]}"; do
    [ -f "$SRC/$s" ] || die "--interpose: no $s in the Caffe source" 2
    # libcaffe registers the layer already: a second registration aborts at start-up
    sed -i '/^REGISTER_LAYER_\(CLASS\|CREATOR\)(/d' "$SRC/$s"
  done
fi

# ---------------------------------------------------------------- configure and compile
PYV="$(ls /usr/lib/*/libboost_python3*.so 2>/dev/null | head -n1 | sed -E 's/.*libboost_(python[0-9]+)\.so/\1/' || true)"
( cd "$WORK" && cmake -S "$REPO/tools/caffe/gtests" -B build -DCaffe_DIR="$PREFIX/share/Caffe" \
    -DCAFFE_SRC="$SRC" -DCAFFE_TESTS="${TESTS//,/;}" -DCAFFE_INTERPOSE="${INTERPOSE//,/;}" \
    -DBOOST_PYTHON_COMPONENT="$PYV" -DCMAKE_BUILD_TYPE=Release -Wno-dev > cmake.log 2>&1 ) \
  || { tail -n 30 "$WORK/cmake.log" >&2; die "cmake configure of the gtests failed"; }
say "compiling ${#TLIST[@]} Caffe test files + gtest (nice -n 10, -j$JOBS)"
( cd "$WORK/build" && nice -n 10 make -j"$JOBS" > ../make.log 2>&1 ) \
  || { grep -E 'error' "$WORK/make.log" | head -n 20 >&2; cp "$WORK/make.log" "$CACHE_ROOT/last-failed-gtest-make.log";
       die "compiling the gtests failed (log: $CACHE_ROOT/last-failed-gtest-make.log)"; }

# ---------------------------------------------------------------- install into the cache
rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp"
cp "$WORK/build/test.testbin" "$OUT.tmp/"
# Caffe's tests read their data relative to the source root (ABS_TEST_DATA_DIR, as `make runtest`
# runs them): run the binary with this folder as the working directory
mkdir -p "$OUT.tmp/src/caffe/test"
cp -r "$SRC/src/caffe/test/test_data" "$OUT.tmp/src/caffe/test/"
printf '%s\n' "${TLIST[@]}" > "$OUT.tmp/tests.txt"
# file -> gtest suites (the first argument of TEST/TEST_F/TYPED_TEST/TYPED_TEST_CASE in each file)
for t in "${TLIST[@]}"; do
  suites="$(grep -oE '^(TEST|TEST_F|TYPED_TEST|TYPED_TEST_CASE)\([A-Za-z0-9_]+' "$SRC/src/caffe/test/test_$t.cpp" \
            | sed 's/.*(//' | sort -u | tr '\n' ' ')"
  printf 'test_%s\t%s\n' "$t" "$suites" >> "$OUT.tmp/suites.tsv"
done
{ echo "prefix $PREFIX"; echo "libcaffe $(sha256sum "$LIB" | cut -d' ' -f1)"; echo "patches $PATCHSET";
  echo "plant ${PLANT:+$(basename "$PLANT")}"; echo "interpose $INTERPOSE";
  echo "built $(date -u '+%Y-%m-%d %H:%M UTC') in $(( $(date +%s) - T0 )) s"; } > "$OUT.tmp/build.txt"
LIST="$(cd "$OUT.tmp" && ./test.testbin --gtest_list_tests --gtest_filter='-*GPU*' 2>&1)" \
  || { echo "$LIST" | tail -n 5 >&2; rm -rf "$OUT.tmp"; die "the built test binary does not start (output above)"; }
n="$(echo "$LIST" | grep -c '^  ' || true)"
[ "$n" -gt 0 ] || { rm -rf "$OUT.tmp"; die "the built test binary lists no CPU tests"; }
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"; touch "$OUT/.complete"
say "built $OUT/test.testbin in $(( $(date +%s) - T0 )) s: $n CPU tests from ${#TLIST[@]} files"
echo "$OUT/test.testbin"
