#!/usr/bin/env bash
# The whole check, as CI runs it: setup, formatting, lints, tests (which start real dockerd,
# registry and dnsmasq through vch-testbed), docs, fuzz and bench builds, cargo-deny, and a
# check that the tests left no daemon running.
#
#   scripts/test.sh
#
# Ends with one summary line: "tests: N passed, M failed".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n===== %s =====\n' "$*"; }

# Daemons the testbed starts (process names as the kernel keeps them, 15 characters at most).
daemons=(dockerd containerd containerd-shim dnsmasq docker-registry haproxy)
running() {
  local name
  for name in "${daemons[@]}"; do pgrep -x "$name" || true; done | sort
}

step "setup"
scripts/setup.sh </dev/null
before=$(running)

step "cargo fmt --check"
cargo fmt --all --check
if [ -f fuzz/Cargo.toml ]; then
  (cd fuzz && cargo fmt --all --check)
fi

step "cargo clippy (all features)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "cargo clippy (each library without default features)"
for manifest in crates/*/Cargo.toml; do
  if grep -q '^\[features\]' "$manifest"; then
    pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1)
    echo "-- $pkg"
    cargo clippy -p "$pkg" --no-default-features --locked -- -D warnings
  fi
done

step "cargo test"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$test_log"
test_status=${PIPESTATUS[0]}
set -e
# "test result: ok. 12 passed; 0 failed; 0 ignored; ..." per test binary and doctest run.
read -r passed failed < <(awk '/^test result:/ {
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i }
  } END { print p + 0, f + 0 }' "$test_log")
if [ "$test_status" -ne 0 ]; then
  echo "cargo test failed (exit $test_status)"
  echo "tests: $passed passed, $failed failed"
  exit "$test_status"
fi

# The daemons running now that were not in the list $1; a few seconds of grace first: an exited
# shim may still wait for init to reap it.
left_since() {
  local left
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    left=$(comm -13 <(echo "$1") <(running) | sed '/^$/d')
    [ -z "$left" ] && break
    sleep 1
  done
  echo "$left"
}

step "no daemon left behind by the tests"
left=$(left_since "$before")
if [ -n "$left" ]; then
  echo "processes started during the run are still running:"
  for pid in $left; do ps -o pid=,args= -p "$pid" || true; done
  echo "tests: $passed passed, $failed failed"
  exit 1
fi
echo "none"

step "quickstart, as a new user runs it (no terminal: it stops after the demo)"
quick_dir=$(mktemp -d)
before_quick=$(running)
QUICKSTART_DIR="$quick_dir" scripts/quickstart.sh </dev/null
left=$(left_since "$before_quick")
rm -rf "$quick_dir" 2>/dev/null || true
if [ -n "$left" ]; then
  echo "the quickstart left processes running:"
  for pid in $left; do ps -o pid=,args= -p "$pid" || true; done
  exit 1
fi

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

if [ -f fuzz/Cargo.toml ]; then
  step "cargo check in fuzz/"
  (cd fuzz && cargo check --all-targets)
fi

step "benchmarks build (cargo build --benches)"
# The bench targets only have to build here. `cargo bench --no-run` builds the whole workspace
# again in the optimized bench profile: 22 minutes on the 2-core machine (12 even at
# opt-level 0, as it shares nothing with the test build). The dev profile reuses the
# dependencies `cargo test` just built. Measuring uses `cargo bench` as usual.
cargo build --workspace --benches --locked

step "cargo deny (offline advisories, licenses, bans, sources)"
"$root/../shared/tools/deny.sh"

step "summary"
echo "all checks passed"
echo "tests: $passed passed, $failed failed"
