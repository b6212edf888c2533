# cuda_flags.sh -- sourced by setup.sh --cuda: choose the CUDA toolkit, cuDNN, NCCL and
# GPU architectures, and set CUDA_FLAGS (CMake options) and CUDA_SUMMARY.
# Needs: REPO, CACHE_ROOT, VPY, CUDA_ARCH (may be empty), die(), say().
#
# Toolkit: a system nvcc (PATH, then /usr/local/cuda) of CUDA 12 or 13 that has cuBLAS and
# cuRAND beside it, with the cuDNN and NCCL found next to it or in /usr; otherwise (x86_64)
# the pinned CUDA 13 wheels of tools/caffe/cuda-wheels.txt, which bring cuDNN 9 and NCCL 2.
# Architectures: --cuda-arch LIST; else the compute capability nvidia-smi reports; else
# sm_80 and sm_90 binaries plus PTX for compute_90 (which later GPUs compile at load).

_cuda_header_dir() {  # _cuda_header_dir HEADER DIR... -> first DIR holding HEADER
  local d; for d in "${@:2}"; do [ -f "$d/$1" ] && { echo "$d"; return; }; done
}
_cuda_lib() {  # _cuda_lib NAME DIR... -> first libNAME.so found
  local d f; for d in "${@:2}"; do
    for f in "$d/lib$1.so" "$d"/lib"$1".so.*; do [ -e "$f" ] && { echo "$f"; return; }; done
  done
}

_nvcc="$(command -v nvcc || true)"
[ -n "$_nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && _nvcc=/usr/local/cuda/bin/nvcc; }
CUDA_ROOT=""
if [ -n "$_nvcc" ]; then
  # nvcc may be a wrapper script: ask nvcc itself where it lives
  _here="$("$_nvcc" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ _HERE_=//p' | head -n1)"
  CUDA_ROOT="$(dirname "${_here:-$(dirname "$(readlink -f "$_nvcc")")/x}")"
  # Caffe needs cuBLAS and cuRAND next to the compiler; a partial toolkit is not used
  if [ -f "$CUDA_ROOT/include/cublas_v2.h" ] && [ -f "$CUDA_ROOT/include/curand.h" ] \
     && [ -n "$(_cuda_lib cublas "$CUDA_ROOT/lib64" "$CUDA_ROOT/lib")" ] \
     && [ -n "$(_cuda_lib curand "$CUDA_ROOT/lib64" "$CUDA_ROOT/lib")" ]; then
    _cuda_src="system toolkit $CUDA_ROOT"
  else
    say "the CUDA toolkit at $CUDA_ROOT has no cuBLAS/cuRAND: not used"
    CUDA_ROOT=""
  fi
fi
if [ -z "$CUDA_ROOT" ]; then
  say "using the pinned CUDA 13 wheels (tools/caffe/cuda-wheels.txt)"
  CUDA_ROOT="$(VPY=/usr/bin/python3 bash "$REPO/tools/caffe/cuda_toolchain.sh" "$CACHE_ROOT")" \
    || die "--cuda: could not assemble the CUDA toolkit from the pinned wheels (see above)"
  _nvcc="$CUDA_ROOT/bin/nvcc"
  _cuda_src="pinned wheels"
fi
CUDA_VERSION_FOUND="$("$_nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')"
[ -n "$CUDA_VERSION_FOUND" ] || die "--cuda: '$_nvcc --version' did not report a release"
case "${CUDA_VERSION_FOUND%%.*}" in
  12|13) ;;
  *) die "--cuda: $_nvcc is CUDA $CUDA_VERSION_FOUND; this build supports CUDA 12 and 13 (remove it from PATH to use the pinned CUDA 13 wheels)" ;;
esac

_arch=/usr/lib/$(uname -m)-linux-gnu
_incs=("$CUDA_ROOT/include" /usr/include "/usr/include/$(uname -m)-linux-gnu" /usr/local/cuda/include)
_libs=("$CUDA_ROOT/lib64" "$CUDA_ROOT/lib" "$_arch" /usr/lib /usr/local/cuda/lib64)

CUDNN_FLAGS="-DUSE_CUDNN=OFF"
CUDNN_FOUND_VERSION="none"
_cudnn_inc="$(_cuda_header_dir cudnn_version.h "${_incs[@]}")"
[ -n "$_cudnn_inc" ] || _cudnn_inc="$(_cuda_header_dir cudnn.h "${_incs[@]}")"
_cudnn_lib="$(_cuda_lib cudnn "${_libs[@]}")"
if [ -n "$_cudnn_inc" ] && [ -n "$_cudnn_lib" ]; then
  _h="$_cudnn_inc/cudnn_version.h"; [ -f "$_h" ] || _h="$_cudnn_inc/cudnn.h"
  CUDNN_FOUND_VERSION="$(awk '/#define CUDNN_MAJOR/{a=$3} /#define CUDNN_MINOR/{b=$3} /#define CUDNN_PATCHLEVEL/{c=$3} END{print a"."b"."c}' "$_h")"
  CUDNN_FLAGS="-DUSE_CUDNN=ON -DCUDNN_INCLUDE=$_cudnn_inc -DCUDNN_LIBRARY=$_cudnn_lib"
else
  say "warning: cuDNN not found next to $CUDA_ROOT or in /usr: building without cuDNN (Caffe's own CUDA kernels)"
fi

NCCL_FLAGS="-DUSE_NCCL=OFF"
_nccl_inc="$(_cuda_header_dir nccl.h "${_incs[@]}")"
_nccl_lib="$(_cuda_lib nccl "${_libs[@]}")"
if [ -n "$_nccl_inc" ] && [ -n "$_nccl_lib" ]; then
  NCCL_FLAGS="-DUSE_NCCL=ON -DNCCL_INCLUDE_DIR=$_nccl_inc -DNCCL_LIBRARIES=$_nccl_lib"
else
  say "warning: NCCL not found: building without it (tools/train_multigpu.py needs NCCL; one GPU works)"
fi

if [ -n "$CUDA_ARCH" ]; then
  _bin="$(echo "$CUDA_ARCH" | tr ', ' ';;')"
  _arch_src="--cuda-arch"
else
  _bin="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' .' | sort -u | paste -sd';' || true)"
  _arch_src="nvidia-smi"
  [ -n "$_bin" ] || { _bin="80;90"; _arch_src="default (no GPU visible)"; }
fi
_ptx="$(echo "$_bin" | tr ';' '\n' | sort -n | tail -n1)"

CUDA_FLAGS="-DCPU_ONLY=OFF -DBLAS=Open -DCUDA_TOOLKIT_ROOT_DIR=$CUDA_ROOT -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN=$_bin -DCUDA_ARCH_PTX=$_ptx $CUDNN_FLAGS $NCCL_FLAGS"
CUDA_SUMMARY="CUDA $CUDA_VERSION_FOUND ($_cuda_src), cuDNN $CUDNN_FOUND_VERSION, NCCL $([ "${NCCL_FLAGS#*=}" = OFF ] && echo off || echo on), archs sm_${_bin//;/,sm_} + PTX compute_$_ptx [$_arch_src]"
