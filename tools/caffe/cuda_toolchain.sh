#!/usr/bin/env bash
# cuda_toolchain.sh CACHE_ROOT [LIST] -- a CUDA 13 toolkit assembled from pinned wheels.
#
# For `./setup.sh --cuda` on a machine without a system CUDA toolkit. Downloads the wheels
# listed in tools/caffe/cuda-wheels.txt with pip (--require-hashes: each file is checked
# against its sha256), checks the kept files again before every use, and unpacks them into
#   CACHE_ROOT/cuda-toolkit-<hash of the list>/{bin,nvvm,include,lib}
# laid out like a toolkit root (nvcc, cicc, headers incl. cuDNN, NCCL and thrust/cub;
# cudart, cuBLAS, cuRAND, cuDNN, NCCL). No Python package is installed. Prints the root.
set -euo pipefail
CACHE_ROOT="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIST="${2:-$HERE/cuda-wheels.txt}"
PY="${VPY:-/usr/bin/python3}"

die() { echo "cuda_toolchain.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
[ "$(uname -m)" = x86_64 ] || die "the pinned CUDA wheels are for x86_64; on $(uname -m) install a CUDA toolkit and cuDNN and put nvcc on PATH"

KEY="$(sha256sum "$LIST" | cut -c1-16)"
ROOT="$CACHE_ROOT/cuda-toolkit-$KEY"
WHL="$CACHE_ROOT/cuda-wheels"
if [ -f "$ROOT/.complete" ]; then echo "$ROOT"; exit 0; fi

. "$HERE/pinned_wheels.sh"
fetch_wheels "CUDA $(grep -oE 'nvidia-cuda-nvcc==[0-9.]+' "$LIST" | cut -d= -f3) wheels (about 1.5 GB)" CUDA

TMP="$(mktemp -d "$CACHE_ROOT/cuda-unpack.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
while read -r n v h; do
  f="$(verified_wheel "$n" "$v" "$h")"
  unzip -q -o "$f" 'nvidia/*' -d "$TMP" || die "cannot unpack $f"
done < <(wheels)
say "sha256 verified and unpacked $(wheels | wc -l) wheels"

STAGE="$TMP/root"
mkdir -p "$STAGE/include" "$STAGE/lib"
cp -a "$TMP/nvidia/cu13/." "$STAGE/"
for part in cudnn nccl; do
  cp -a "$TMP/nvidia/$part/include/." "$STAGE/include/"
  cp -a "$TMP/nvidia/$part/lib/." "$STAGE/lib/"
done
[ -x "$STAGE/bin/nvcc" ] && [ -x "$STAGE/nvvm/bin/cicc" ] && [ -f "$STAGE/include/crt/host_config.h" ] \
  && [ -d "$STAGE/include/cccl/thrust" ] && [ -f "$STAGE/include/cudnn.h" ] && [ -f "$STAGE/include/nccl.h" ] \
  || die "the unpacked wheels do not form a toolkit (nvcc, cicc, crt, thrust, cudnn.h, nccl.h expected)"
# the unversioned names that the linker and CMake look for
( cd "$STAGE/lib" && for so in lib*.so.*; do
    base="${so%%.so.*}.so"; [ -e "$base" ] || ln -s "$so" "$base"; done )
ln -s lib "$STAGE/lib64"
rm -rf "$ROOT"
mv "$STAGE" "$ROOT"
"$ROOT/bin/nvcc" --version | tail -n 2 > "$ROOT/.complete" || die "the assembled nvcc does not run"
echo "$ROOT"
