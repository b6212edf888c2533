#!/usr/bin/env bash
# bundle_check.sh BUNDLE.tar.gz [--suite trixie] [--chroot DIR] [--iters 20] [--cuda-libs DIR]
#
# Runs a bundle made by `./setup.sh --bundle` where it must run: a minimal chroot of another
# Debian release (debootstrap --variant=minbase, from the mirror in this machine's apt
# configuration), which has none of the build's -dev packages and no Python, as a non-root
# user created inside it. There the user unpacks the bundle and
#   1. runs `caffe --version` and tools/check_caffe.py's device report (CPU-only build /
#      CUDA build, no device ...);
#   2. imports pycaffe with the bundled Python;
#   3. makes a small LMDB from synthetic images with tools/make_lmdb.py and trains the demo
#      net (prototxt/demo: counting data and loss Python layers) for --iters iterations in
#      CPU mode, printing the losses.
# --cuda-libs DIR (a CUDA bundle): DIR's libraries (cudart, cuBLAS, cuRAND, cuDNN, NCCL, e.g.
# the lib/ of setup.sh --cuda's wheel toolkit) are copied into the chroot as the host's CUDA
# libraries (LTC_CUDA_LIBS); without a GPU the device report must read "CUDA build, no device".
# Needs root (debootstrap, chroot, mounts) and a few minutes. The chroot is kept in DIR
# (default /tmp/ltc-chroot-SUITE) for the next run; /proc and /dev/shm are mounted for the
# run and unmounted at exit. Exit 0 when all three pass, 1 otherwise, 2 for bad usage.
set -euo pipefail

die() { echo "bundle_check.sh: error: $*" >&2; exit "${2:-1}"; }
say() { echo "==> $*"; }

BUNDLE=""; SUITE=trixie; ROOTFS=""; ITERS=20; CUDA_LIBS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE="${2:?}"; shift 2 ;;
    --chroot) ROOTFS="${2:?}"; shift 2 ;;
    --iters) ITERS="${2:?}"; shift 2 ;;
    --cuda-libs) CUDA_LIBS="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) die "unknown option '$1'" 2 ;;
    *) [ -z "$BUNDLE" ] || die "one bundle only" 2; BUNDLE="$1"; shift ;;
  esac
done
[ -n "$BUNDLE" ] || die "usage: bundle_check.sh BUNDLE.tar.gz [--suite trixie] [--chroot DIR] [--iters 20]" 2
[ -f "$BUNDLE" ] || die "$BUNDLE: no such file (make it with ./setup.sh --bundle $BUNDLE)" 2
case "$BUNDLE" in *.tar.xz|*.tar.gz) ;; *) die "$BUNDLE: expected a .tar.gz or .tar.xz made by ./setup.sh --bundle" 2 ;; esac
echo "$ITERS" | grep -qE '^[1-9][0-9]*$' || die "--iters '$ITERS': expected a positive integer" 2
[ -z "$CUDA_LIBS" ] || [ -d "$CUDA_LIBS" ] || die "--cuda-libs $CUDA_LIBS: no such folder" 2
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot); the bundle itself does not" 2
command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)" 2
ROOTFS="${ROOTFS:-/tmp/ltc-chroot-$SUITE}"
ARCHIVE="$(basename "$BUNDLE")"; NAME="${ARCHIVE%.tar.*}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

mirror_uri() {  # the first Debian archive URI of this machine's apt configuration (no security suite)
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk 'BEGIN{RS=""; FS="\n"} { uri=""; suites=""; for (i=1;i<=NF;i++) { l=$i; if (l ~ /^#/) continue;
         if (l ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", l); split(l, a, /[ \t]+/); uri=a[1] }
         if (l ~ /^Suites:/) suites=l }
         if (uri != "" && suites !~ /security/ && uri ~ /debian\/?$/) { print uri; exit } }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($i ~ /debian\/?$/ && $(i+1) !~ /security/) { print $i; exit }; break } }' "$f"
  done
}

if [ ! -f "$ROOTFS/.ltc-debootstrap-complete" ]; then
  URI="$(mirror_uri | head -n1)"
  [ -n "$URI" ] || die "no Debian mirror in /etc/apt/sources.list(.d)"
  say "debootstrap --variant=minbase $SUITE into $ROOTFS (the mirror of this machine's apt configuration)"
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$URI" > "$ROOTFS.debootstrap.log" 2>&1 \
    || { tail -n 20 "$ROOTFS.debootstrap.log"; die "debootstrap failed (log: $ROOTFS.debootstrap.log)"; }
  touch "$ROOTFS/.ltc-debootstrap-complete"
fi

MOUNTS=()
cleanup() {
  local m
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
for m in proc dev/shm; do
  mkdir -p "$ROOTFS/$m"
  mountpoint -q "$ROOTFS/$m" && continue
  if [ "$m" = proc ]; then mount -t proc proc "$ROOTFS/proc"; else mount -t tmpfs -o mode=1777 shm "$ROOTFS/dev/shm"; fi
  MOUNTS+=("$ROOTFS/$m")
done

say "the chroot: $(. "$ROOTFS/etc/os-release"; echo "$PRETTY_NAME"), glibc $(chroot "$ROOTFS" ldd --version | head -n1 | awk '{print $NF}')"
PY_IN="$(chroot "$ROOTFS" sh -c 'ls /usr/bin/python* /usr/local/bin/python* 2>/dev/null' || true)"
[ -z "$PY_IN" ] || die "the chroot has a Python ($PY_IN): not the bare system this check is for"
DEV_IN="$(chroot "$ROOTFS" dpkg-query -W -f '${Package}\n' | grep -E -- '-dev$|boost|glog|gflags|protobuf|hdf5|lmdb|leveldb|snappy|openblas|dnnl|opencv|python' || true)"
[ -z "$DEV_IN" ] || die "the chroot has build packages installed: $DEV_IN"
say "no Python and none of -dev, boost, glog, gflags, protobuf, hdf5, lmdb, leveldb, snappy, openblas, dnnl, opencv installed ($(chroot "$ROOTFS" dpkg-query -W | wc -l) packages)"

USR=ltcuser
chroot "$ROOTFS" id -u "$USR" >/dev/null 2>&1 || chroot "$ROOTFS" useradd -m -s /bin/bash "$USR"
HOME_IN="/home/$USR"
rm -rf "$ROOTFS$HOME_IN/check"
mkdir -p "$ROOTFS$HOME_IN/check"
cp "$BUNDLE" "$ROOTFS$HOME_IN/check/"
CUDA_IN=""
if [ -n "$CUDA_LIBS" ]; then
  rm -rf "$ROOTFS/opt/host-cuda-libs"; mkdir -p "$ROOTFS/opt/host-cuda-libs"
  cp -aL "$CUDA_LIBS"/lib*.so* "$ROOTFS/opt/host-cuda-libs/"
  CUDA_IN=/opt/host-cuda-libs
  say "host CUDA libraries for the chroot: $(ls "$ROOTFS$CUDA_IN" | grep -c .) files from $CUDA_LIBS in $CUDA_IN"
fi
chroot "$ROOTFS" chown -R "$USR:$USR" "$HOME_IN/check"

cat > "$ROOTFS$HOME_IN/check/run.sh" <<'EOF'
#!/bin/bash
# runs as the unprivileged user inside the chroot
set -euo pipefail
cd "$HOME/check"
echo "==> as $(id -un) (uid $(id -u)); python3 on PATH before activate: $(command -v python3 || echo none)"
ls "$NAME".tar.* >/dev/null
case "$(ls "$NAME".tar.*)" in *.xz) command -v xz >/dev/null || { echo "this system has no xz: use a .tar.gz bundle (./setup.sh --bundle OUT.tar.gz)"; exit 1; } ;; esac
tar -xf "$NAME".tar.*
. "$NAME/activate"
echo "==> 1. caffe --version"
caffe --version
python3 "$LTC_BUNDLE/project/tools/check_caffe.py" --locate "$LTC_BUNDLE" >/dev/null 2> locate.txt || { cat locate.txt; exit 1; }
echo "device report: $(sed -n 's/.*; //p' locate.txt | tail -n1)"
echo "==> 2. import caffe with the bundled Python"
python3 -c 'import sys, caffe, cv2, numpy, lmdb; print("python", sys.version.split()[0], "at", sys.executable); print("pycaffe", caffe.__file__); print("Python layer compiled in:", "Python" in caffe.layer_type_list()); print("numpy", numpy.__version__, "cv2", cv2.__version__, "lmdb", lmdb.__version__)'
echo "==> 3. a small LMDB with tools/make_lmdb.py, then $ITERS iterations of the demo net"
python3 - <<'PY'
import os, numpy as np, cv2
rng = np.random.default_rng(0)
os.makedirs("imgs", exist_ok=True)
for i in range(64):
    img = (rng.random((300, 300, 3)) * 60).astype(np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, 260, 2)
        cv2.rectangle(img, (int(x), int(y)), (int(x) + 40, int(y) + 40), tuple(int(c) for c in rng.integers(80, 255, 3)), -1)
    cv2.imwrite("imgs/%03d.png" % i, img)
PY
python3 "$LTC_BUNDLE/project/tools/make_lmdb.py" imgs small_lmdb --size 256 --no-progress
python3 - <<'PY'
import os, re
p = os.path.join(os.environ["LTC_BUNDLE"], "project", "prototxt", "demo")
net = open(os.path.join(p, "train_val.prototxt")).read()
net, n = re.subn(r'\\"source\\": \\"[^\\]*\\"', r'\\"source\\": \\"%s\\"' % os.path.abspath("small_lmdb"), net)
assert n == 2, "expected the demo net's two data layers, found %d sources" % n
open("train_val.prototxt", "w").write(net)
s = open(os.path.join(p, "solver.prototxt")).read()
for key, val in [("net", '"train_val.prototxt"'), ("max_iter", os.environ["ITERS"]), ("display", "1"),
                 ("average_loss", "1"), ("test_initialization", "false"), ("snapshot_prefix", '"snap/demo"')]:
    s, n = re.subn(r"(?m)^%s: .*$" % key, "%s: %s" % (key, val), s)
    assert n == 1, key
open("solver.prototxt", "w").write(s)
PY
mkdir -p snap
OPENBLAS_NUM_THREADS=2 caffe train -solver solver.prototxt > train.log 2>&1 || { tail -n 30 train.log; exit 1; }
grep -E "Iteration [0-9]+ .*loss = " train.log | sed -E 's/.*(Iteration [0-9]+).*(loss = .*)/\1, \2/'
grep -q "Optimization Done" train.log
EOF
chmod 755 "$ROOTFS$HOME_IN/check/run.sh"
say "running the bundle as $USR inside the chroot"
set +e
chroot --userspec="$USR:$USR" "$ROOTFS" /usr/bin/env -i HOME="$HOME_IN" PATH=/usr/local/bin:/usr/bin:/bin \
  NAME="$NAME" ITERS="$ITERS" LANG=C.UTF-8 ${CUDA_IN:+LTC_CUDA_LIBS=$CUDA_IN} /bin/bash "$HOME_IN/check/run.sh" 2>&1 | tee "$ROOTFS$HOME_IN/check/check.log"
rc=${PIPESTATUS[0]}
set -e
LOG="$ROOTFS$HOME_IN/check/check.log"
losses="$(grep -cE '^Iteration [0-9]+, loss = [-+0-9.e]+$' "$LOG" || true)"
bad="$(grep -E '^Iteration [0-9]+, loss = ' "$LOG" | grep -ciE 'nan|inf' || true)"
device="$(sed -n 's/^device report: //p' "$LOG" | tail -n1)"
devok=1
if [ -n "$CUDA_LIBS" ]; then case "$device" in "CUDA build, no device"*) ;; *) devok=0 ;; esac; fi
if [ "$rc" = 0 ] && [ "$losses" -ge "$ITERS" ] && [ "$bad" = 0 ] && [ "$devok" = 1 ]; then
  echo "BUNDLE CHECK PASS: $NAME in $SUITE as $USR: caffe --version, pycaffe import, $losses finite losses; $device"
  exit 0
fi
echo "BUNDLE CHECK FAIL: $NAME in $SUITE as $USR: exit $rc, $losses loss lines ($bad not finite), device report '$device'; log $LOG"
exit 1
