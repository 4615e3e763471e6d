#!/usr/bin/env bash
# The main job, for now: build vch-admin and check images against the whitelist example of
# the VIC documentation. Later this creates a VCH and serves it in front of the local Docker
# engine (starting a private dockerd the way the testbed does when none runs).
#
#   scripts/quickstart.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "building vch-admin ..."
cargo build --quiet --locked -p vch-admin
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vch-admin"

args=(check
  --wr 10.2.40.40:443 --wr 10.2.2.1/24 --wr '*.example.com'
  --dir 192.168.100.207
  10.2.40.40:443/app 10.2.2.7/x reg.example.com/team/app:1 192.168.100.207/x busybox)
printf '\n$ vch-admin'
printf ' %q' "${args[@]}"
printf '\n'
set +e
"$bin" "${args[@]}"
status=$?
set -e
case "$status" in
  0) echo; echo "every image is allowed" ;;
  # Exit 1 is the expected answer here: busybox (Docker Hub) is not on the whitelist.
  1) echo; echo "exit 1: at least one image is denied (busybox is not whitelisted), as expected" ;;
  *) echo "vch-admin failed (exit $status)" >&2; exit "$status" ;;
esac
