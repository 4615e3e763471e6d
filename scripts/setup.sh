#!/usr/bin/env bash
# Installs what building and testing vch needs on a Debian 12 machine. Idempotent: installs
# only what is missing, asks nothing (works without stdin), safe to run on every test run.
#
#   scripts/setup.sh             everything for building and testing
#   scripts/setup.sh --runtime   only what scripts/quickstart.sh needs: docker.io, docker-registry,
#                                busybox-static, curl, ca-certificates, and gcc and make to build
#                                vch-admin (the linker, and aws-lc-sys); no Rust components
#
# Debian packages (the testbed starts these for real; a missing one fails the tests by name):
#   docker.io        dockerd, containerd, runc and the docker CLI
#   docker-registry  the Distribution registry (docker-registry serve CONFIG)
#   skopeo           image copies between registries (copy tests, benchmarks)
#   dnsmasq-base     the dnsmasq executable for reverse-DNS tests (the `dnsmasq` package
#                    adds only a system service that would grab port 53)
#   haproxy          plain TCP relay in front of the proxy benchmark
#   busybox-static   the static busybox of the offline test image
#   wrk              HTTP load generator for the proxy benchmark
#   apache2-utils    htpasswd -B: bcrypt entries for registries with basic auth
#   openssl          throwaway certificates in tests, and `openssl verify` as a peer
#   curl             a real HTTPS client against registries served with our certificates
#   procps           pgrep: the test script checks no daemon survives the tests
#   iproute2         ip netns/veth: a registry off loopback, where dockerd verifies TLS
#   bzip2, xz-utils, zstd  compressed build contexts, made by the real tools in the build tests
#   logrotate        rotates the audit log with contrib/logrotate/vch in the service test
#   systemd          `systemd-analyze verify` of contrib/systemd/vch@.service
#   prometheus       promtool: `promtool check metrics` validates what `serve --metrics` serves
#                    (the package's service is kept from starting, as the others' are)
#   zsh, fish        the shells that check the `completion` scripts (`zsh -n`, `fish -n`; bash is there)
#   groff-base, mandoc  render and lint the man pages of `cargo xtask man`
#   bsdutils         `script`: a pseudo-terminal for the test of regctl's progress display
#   gzip, tar, git, ca-certificates, gcc, make: build and test tools (gcc builds aws-lc-sys and
#                    the bundled libbzip2, liblzma and zstd of the build context reader)
# Rust: the rustfmt and clippy components, and cargo-deny 0.20 (for ../shared/tools/deny.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

runtime=false
case "${1:-}" in
  "") ;;
  --runtime) runtime=true ;;
  *) echo "usage: $0 [--runtime]" >&2; exit 2 ;;
esac

if [ "$runtime" = true ]; then
  packages=(docker.io docker-registry busybox-static curl ca-certificates gcc make)
else
  packages=(
    docker.io docker-registry skopeo dnsmasq-base haproxy busybox-static wrk
    apache2-utils openssl curl procps iproute2 bzip2 xz-utils zstd gzip tar git ca-certificates gcc make
    logrotate systemd prometheus zsh fish groff-base mandoc bsdutils
  )
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo -n)
fi

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [ "$status" != "installed" ]; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  # Keep packages from starting their system services (a system dockerd, registry on :5000 or
  # haproxy): the tests start private instances and check that none is left running.
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=true
  fi
  cleanup() { if [ "$own_policy" = true ]; then "${sudo[@]}" rm -f "$policy"; fi; }
  trap cleanup EXIT
  "${sudo[@]}" apt-get update -q </dev/null
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
  cleanup
  trap - EXIT
else
  echo "setup: Debian packages present"
fi

if [ "$runtime" = true ]; then
  echo "setup: done (runtime)"
  exit 0
fi

# Rust components (the toolchain itself comes with the machine).
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    echo "setup: rustup component add ${component}"
    rustup component add "$component"
  fi
done

if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  echo "setup: cargo install cargo-deny 0.20"
  cargo install cargo-deny --version '^0.20' --locked
fi

echo "setup: done"
