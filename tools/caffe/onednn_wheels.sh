#!/usr/bin/env bash
# onednn_wheels.sh CACHE_ROOT [LIST] -- oneDNN 3 headers and library from pinned wheels.
#
# For `./setup.sh --onednn wheel`. Downloads the wheels listed in LIST (default
# tools/caffe/onednn-wheels.txt) with pip (--require-hashes: each file is checked against its
# sha256), checks the kept files again before every use, and unpacks their data folders into
#   CACHE_ROOT/onednn-<hash of the list>/{include,lib}
# (include/dnnl.hpp, include/oneapi/dnnl/*, lib/libdnnl.so.3 and its unversioned link). No
# Python package is installed. Prints the folder.
set -euo pipefail
CACHE_ROOT="$1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIST="${2:-$HERE/onednn-wheels.txt}"
PY="${VPY:-/usr/bin/python3}"

die() { echo "onednn_wheels.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

command -v unzip >/dev/null || die "unzip not found (apt-get install unzip)"
[ "$(uname -m)" = x86_64 ] || die "the pinned oneDNN wheels are for x86_64; on $(uname -m) use the default build (Debian's libdnnl-dev)"
[ -r "$LIST" ] || die "no wheel list '$LIST'"

KEY="$(sha256sum "$LIST" | cut -c1-16)"
ROOT="$CACHE_ROOT/onednn-$KEY"
WHL="$CACHE_ROOT/onednn-wheels"
if [ -f "$ROOT/.complete" ]; then echo "$ROOT"; exit 0; fi

. "$HERE/pinned_wheels.sh"
fetch_wheels "oneDNN wheels ($(wheels | awk '{print $1 "==" $2}' | paste -sd, | sed 's/,/, /g'))" oneDNN

TMP="$(mktemp -d "$CACHE_ROOT/onednn-unpack.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
while read -r n v h; do
  f="$(verified_wheel "$n" "$v" "$h")"
  unzip -q -o "$f" '*.data/data/*' -d "$TMP/$n" || die "cannot unpack $f"
done < <(wheels)
say "sha256 verified and unpacked $(wheels | wc -l) wheels"

STAGE="$TMP/root"
mkdir -p "$STAGE/include" "$STAGE/lib"
for d in "$TMP"/*/*.data/data; do
  [ -d "$d/include" ] && cp -a "$d/include/." "$STAGE/include/"
  [ -d "$d/lib" ] && cp -a "$d/lib/." "$STAGE/lib/"
done
rm -rf "$STAGE/lib/cmake"   # its paths are those of the wheel's build machine
# zip has no symbolic links: the wheel holds libdnnl.so, .so.3 and .so.3.N as three copies.
# Keep the fully versioned file and link the other two names to it.
full="$(cd "$STAGE/lib" && ls libdnnl.so.3.* 2>/dev/null | head -n1)"
[ -n "$full" ] && [ -f "$STAGE/include/dnnl.hpp" ] && [ -f "$STAGE/include/oneapi/dnnl/dnnl_version.h" ] \
  || die "the unpacked wheels hold no libdnnl.so.3.* with include/dnnl.hpp"
( cd "$STAGE/lib" && rm -f libdnnl.so libdnnl.so.3 && ln -s "$full" libdnnl.so.3 && ln -s libdnnl.so.3 libdnnl.so )
major="$(awk '/#define DNNL_VERSION_MAJOR/{print $3}' "$STAGE/include/oneapi/dnnl/dnnl_version.h")"
[ "$major" = 3 ] || die "the wheels' headers say oneDNN $major, expected 3"
rm -rf "$ROOT"
mv "$STAGE" "$ROOT"
awk '/#define DNNL_VERSION_(MAJOR|MINOR|PATCH)/{v=v (v?".":"") $3} END{print "oneDNN " v}' \
  "$ROOT/include/oneapi/dnnl/dnnl_version.h" > "$ROOT/.complete"
echo "$ROOT"
