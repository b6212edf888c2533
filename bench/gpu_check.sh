#!/usr/bin/env bash
# gpu_check.sh -- the GPU check of the CUDA build in one call, on a machine without root or
# a package manager: unpack the bundle, find the host's CUDA libraries, run
# bench/gpu_check.py (CPU/GPU step equivalence, samples/s of the paper's solver at batch 256,
# data workers for >= 95 % busy, peak GPU memory), end with one verdict line.
#
#   bench/gpu_check.sh                       # bundle pieces from gpu_bundle/ (see below)
#   bench/gpu_check.sh --bundle PATH         # PATH: OUT.tar.gz|xz, its first piece OUT.tar.gz.part000,
#                                            # or an unpacked bundle folder
#   bench/gpu_check.sh --self-test           # a dry run without a GPU: the same steps with
#                                            # gpu_check.py --self-test (CPU against CPU)
#   options: --lmdb DIR (default: a synthetic LMDB made here), --limit SECONDS (default 540),
#            --workers "1 2 4 8", --iters 10, --keep (keep the unpacked bundle and results)
#
# Pieces: `./setup.sh --bundle OUT.tar.gz --bundle-split 64` writes OUT.tar.gz.part000, .part001,
# ... (at most 64 MiB each) and OUT.tar.gz.sha256; they are joined in order and the sha256 is checked
# before anything is unpacked. CUDA libraries: the bundle's `activate` searches
# $LTC_CUDA_LIBS, $CUDA_HOME/lib64, /usr/local/cuda/lib64, nvidia/*/lib of every python3 on
# PATH (PyTorch's nvidia-* wheels) and the ld.so cache (tools/bundle.py, BUNDLE.txt).
# Exit 0 with "GPU CHECK PASS: ..." (or "GPU CHECK SELF-TEST PASS: ..."), 1 with
# "GPU CHECK FAIL: reason", 2 for bad usage.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
T0=$(date +%s)
BUNDLE=""; SELF=0; LMDB=""; LIMIT=540; WORKERS="1 2 4 8"; ITERS=10; KEEP=0
usage() { echo "gpu_check.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) [ $# -ge 2 ] || usage "--bundle needs a path"; BUNDLE="$2"; shift 2 ;;
    --self-test) SELF=1; shift ;;
    --lmdb) [ $# -ge 2 ] || usage "--lmdb needs a folder"; LMDB="$2"; shift 2 ;;
    --limit) [ $# -ge 2 ] || usage "--limit needs seconds"; LIMIT="$2"; shift 2 ;;
    --workers) [ $# -ge 2 ] || usage "--workers needs a list"; WORKERS="$2"; shift 2 ;;
    --iters) [ $# -ge 2 ] || usage "--iters needs a number"; ITERS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) usage "unknown option '$1' (see --help)" ;;
  esac
done
echo "$LIMIT" | grep -qE '^[1-9][0-9]*$' || usage "--limit '$LIMIT': expected seconds"
echo "$ITERS" | grep -qE '^[1-9][0-9]*$' || usage "--iters '$ITERS': expected a positive integer"
echo "$WORKERS" | grep -qE '^[1-9][0-9]*( [1-9][0-9]*)*$' || usage "--workers '$WORKERS': expected a list such as \"1 2 4\""

TAG="GPU CHECK"; [ "$SELF" = 1 ] && TAG="GPU CHECK SELF-TEST"
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }
verdict_fail() { echo "$TAG FAIL: $* ($(elapsed))"; exit 1; }
say() { echo "==> $*"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ltc-gpu-check.XXXXXX")" || verdict_fail "cannot make a temporary folder"
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------------ the bundle
if [ -z "$BUNDLE" ]; then
  BUNDLE="$(ls "$REPO"/gpu_bundle/*.tar.?z.part000 "$REPO"/gpu_bundle/*.tar.?z 2>/dev/null | head -n1)"
  [ -n "$BUNDLE" ] || verdict_fail "no bundle: put the pieces of ./setup.sh --bundle OUT.tar.gz --bundle-split 64 in gpu_bundle/ or pass --bundle PATH"
fi
if [ -d "$BUNDLE" ]; then
  ROOT="$(cd "$BUNDLE" && pwd)"
  say "bundle folder $ROOT"; PIECES="unpacked folder"
else
  ARCHIVE="${BUNDLE%.part000}"
  if [ -f "$ARCHIVE.part000" ]; then
    n=0; total=0
    : > "$WORK/bundle.tar"
    while [ -f "$(printf '%s.part%03d' "$ARCHIVE" "$n")" ]; do
      piece="$(printf '%s.part%03d' "$ARCHIVE" "$n")"
      sz=$(stat -c %s "$piece")
      [ "$sz" -le $((64 * 1048576)) ] || verdict_fail "$piece is $sz bytes, over 64 MiB"
      cat "$piece" >> "$WORK/bundle.tar"; n=$((n + 1)); total=$((total + sz))
    done
    [ -f "$ARCHIVE.sha256" ] || verdict_fail "$ARCHIVE.sha256 missing: cannot check the $n pieces"
    want="$(cut -d' ' -f1 "$ARCHIVE.sha256")"
    got="$(sha256sum "$WORK/bundle.tar" | cut -d' ' -f1)"
    [ "$want" = "$got" ] || verdict_fail "checksum mismatch: $n pieces of $ARCHIVE give sha256 $got, $ARCHIVE.sha256 says $want (a piece missing or damaged)"
    say "joined $n pieces ($((total / 1048576)) MiB), sha256 ok"
    SRC="$WORK/bundle.tar"; PIECES="$n pieces, sha256 ok"
  elif [ -f "$ARCHIVE" ]; then
    SRC="$ARCHIVE"; PIECES="one archive"
    if [ -f "$ARCHIVE.sha256" ]; then
      [ "$(cut -d' ' -f1 "$ARCHIVE.sha256")" = "$(sha256sum "$ARCHIVE" | cut -d' ' -f1)" ] \
        || verdict_fail "checksum mismatch: $ARCHIVE against $ARCHIVE.sha256"
      PIECES="one archive, sha256 ok"
    fi
  else
    verdict_fail "$BUNDLE: no such bundle, folder or piece"
  fi
  mkdir -p "$WORK/unpacked"
  tar -xf "$SRC" -C "$WORK/unpacked" || verdict_fail "cannot unpack $SRC"
  rm -f "$WORK/bundle.tar"
  ROOT="$(ls -d "$WORK"/unpacked/*/ 2>/dev/null | head -n1)"; ROOT="${ROOT%/}"
  say "unpacked $(basename "$ROOT") ($(du -sm "$ROOT" | cut -f1) MiB) in $(elapsed)"
fi
[ -f "$ROOT/activate" ] || verdict_fail "$ROOT: no activate script (not a bundle of ./setup.sh --bundle)"

# ------------------------------------------------------------------ environment
# shellcheck disable=SC1091
. "$ROOT/activate" || verdict_fail "$ROOT/activate failed"
# Caffe's setup log stays out of the way (GLOG_minloglevel=0 shows it)
export GLOG_minloglevel="${GLOG_minloglevel:-2}"
# the working tree's code first (newer than the bundle's copy of it)
export PYTHONPATH="$REPO:$REPO/python_layers:$PYTHONPATH"
KIND="$(sed -n '1s/.*(\(.*\)).*/\1/p' "$ROOT/BUNDLE.txt" 2>/dev/null)"
if [ -n "${LTC_CUDA_FOUND:-}" ]; then
  say "CUDA libraries:$LTC_CUDA_FOUND"
  MISSING="$(for e in $LTC_CUDA_FOUND; do case "$e" in *=) printf ' %s' "${e%=}" ;; esac; done)"
  if [ -n "$MISSING" ]; then CUDA_LIBS="CUDA libraries not found:$MISSING"; else CUDA_LIBS="CUDA libraries found"; fi
else
  CUDA_LIBS="no CUDA libraries needed ($KIND)"
fi
say "$CUDA_LIBS"
VER="$(caffe --version 2>&1 | tail -n1)" || verdict_fail "caffe --version failed: $VER ($CUDA_LIBS)"
python3 "$ROOT/project/tools/check_caffe.py" --locate "$ROOT" > /dev/null 2> "$WORK/locate.txt" \
  || verdict_fail "pycaffe check failed: $(tail -c 400 "$WORK/locate.txt")"
DEVICE="$(sed -n 's/.*; //p' "$WORK/locate.txt" | tail -n1)"
say "$VER; $DEVICE"
if [ "$SELF" = 0 ]; then
  case "$DEVICE" in "CUDA build, "[1-9]*) ;; *) verdict_fail "no GPU usable: $DEVICE ($CUDA_LIBS)" ;; esac
fi

# ------------------------------------------------------------------ data
if [ -z "$LMDB" ]; then
  LMDB="$WORK/lmdb"; N=512; [ "$SELF" = 1 ] && N=64
  python3 - "$WORK/images" "$N" <<'PY' || verdict_fail "cannot write the synthetic images"
import os, sys, numpy as np, cv2
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
for i in range(n):
    img = (rng.random((288, 288, 3)) * 60).astype(np.uint8)
    for _ in range(8):
        x, y = (int(v) for v in rng.integers(0, 248, 2))
        cv2.rectangle(img, (x, y), (x + 40, y + 40), tuple(int(c) for c in rng.integers(80, 255, 3)), -1)
    cv2.imwrite(os.path.join(out, "%04d.jpg" % i), img)
PY
  python3 "$REPO/tools/make_lmdb.py" "$WORK/images" "$LMDB" --size 256 --no-progress > "$WORK/make_lmdb.log" 2>&1 \
    || verdict_fail "tools/make_lmdb.py failed: $(tail -n 3 "$WORK/make_lmdb.log")"
  say "synthetic LMDB of $N images in $(elapsed)"
fi

# ------------------------------------------------------------------ gpu_check.py
LEFT=$(( LIMIT - $(date +%s) + T0 ))
[ "$LEFT" -gt 30 ] || verdict_fail "no time left for bench/gpu_check.py ($LEFT s of --limit $LIMIT)"
ARGS=(--out "$WORK/results/gpu_check")
if [ "$SELF" = 1 ]; then ARGS+=(--self-test); else
  # shellcheck disable=SC2206
  ARGS+=(--lmdb "$LMDB" --iters "$ITERS" --warmup 2 --workers $WORKERS); fi
say "bench/gpu_check.py ${ARGS[*]} (at most $LEFT s)"
cd "$REPO" || verdict_fail "cannot cd $REPO"
timeout --signal=TERM --kill-after=10 "$LEFT" python3 bench/gpu_check.py "${ARGS[@]}" 2>&1 | tee "$WORK/gpu_check.out"
rc=${PIPESTATUS[0]}
[ "$KEEP" = 1 ] && say "results kept in $WORK"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then verdict_fail "bench/gpu_check.py ran past the limit ($LIMIT s)"; fi
OUT="$WORK/gpu_check.out"
EQ="$(grep -oE '^1\. one SGD step.*: (PASS|FAIL)$' "$OUT" | tail -n1)"
WORST="$(python3 -c 'import csv, sys; r=[float(x["rel"]) for x in csv.DictReader(open(sys.argv[1])) if x.get("rel")]; print("%.2g" % max(r))' "$WORK/results/gpu_check.csv" 2>/dev/null)"
[ -n "$EQ" ] || verdict_fail "bench/gpu_check.py exit $rc without an equivalence result: $(tail -n 2 "$OUT" | tr '\n' ' ')"
case "$EQ" in *PASS) ;; *) verdict_fail "step equivalence: worst relative difference $WORST over the tolerance ($DEVICE)" ;; esac
[ "$rc" = 0 ] || verdict_fail "bench/gpu_check.py exit $rc: $(tail -n 2 "$OUT" | tr '\n' ' ')"
if [ "$SELF" = 1 ]; then
  echo "$TAG PASS: bundle ($PIECES) unpacked, $CUDA_LIBS, $VER, $DEVICE, LMDB made, CPU-vs-CPU step worst rel. difference ${WORST:-?}; the GPU run would use --lmdb $LMDB ($(elapsed))"
  exit 0
fi
BEST="$(awk '/^workers [0-9]+: /{w=$2; sub(":", "", w); if ($3 + 0 > m) {m = $3 + 0; b = w}} END{if (m) print m " samples/s with " b " workers"}' "$OUT")"
PEAK="$(grep -oE 'peak [0-9]+ MiB' "$OUT" | awk '{print $2}' | sort -n | tail -n1)"
BUSY="$(grep -oE 'workers for >= 95 % busy: .*' "$OUT" | sed 's/.*busy: //' | tail -n1)"
GPU="$(grep -E '^gpu [0-9]+: ' "$OUT" | head -n1 | cut -d: -f2- | cut -d, -f1 | sed 's/^ //')"
echo "$TAG PASS: $GPU; step GPU vs CPU worst rel. ${WORST:-?}; ${BEST:-no training result} at batch 256; >= 95 % busy from ${BUSY:-?} workers; peak ${PEAK:-?} MiB ($(elapsed))"
