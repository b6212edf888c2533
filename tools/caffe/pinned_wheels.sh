# pinned_wheels.sh -- sourced by cuda_toolchain.sh and onednn_wheels.sh (not run on its own).
#
# A wheel list holds one `name==version --hash=sha256:HEX` per line (# comments allowed). The
# wheels are kept in $WHL and checked against their sha256 again before every use; pip downloads
# them with --require-hashes only when one is missing or no longer matches. The caller sets
# LIST, WHL and PY and defines die and say.

# the list as lines "name version sha256"
wheels() { grep -vE '^(#|$)' "$LIST" | sed -E 's/^([^=]+)==([^ ]+) --hash=sha256:([0-9a-f]+)$/\1 \2 \3/'; }

kept() {  # kept NAME VERSION SHA -> path of a kept, verified wheel, or nothing
  local f
  for f in "$WHL/$(echo "$1" | tr - _)-$2-"*.whl; do
    [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$3" ] && { echo "$f"; return; }
  done
}

verified_wheel() {  # verified_wheel NAME VERSION SHA -> path of the kept wheel, or die
  local f
  f="$(kept "$1" "$2" "$3")"
  [ -n "$f" ] || die "$1==$2: no wheel with sha256 $3 in $WHL after download"
  echo "$f"
}

fetch_wheels() {  # fetch_wheels WHAT KIND: download the list unless every wheel is kept and verified
  local n v h missing=0
  mkdir -p "$WHL"
  while read -r n v h; do [ -n "$(kept "$n" "$v" "$h")" ] || missing=1; done < <(wheels)
  [ "$missing" = 1 ] || return 0
  say "downloading the pinned $1 with pip, hashes checked"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --require-hashes -r "$LIST" -d "$WHL" \
    || die "pip download of the $2 wheels failed (network, or a hash mismatch: see above)"
}
