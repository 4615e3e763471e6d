#!/usr/bin/env bash
# The main job: create a VCH, serve it in front of the local Docker engine, and show it working.
#
#   scripts/quickstart.sh
#
# - `scripts/setup.sh --runtime`: installs only what this needs (docker.io, docker-registry,
#   busybox-static, curl, ca-certificates; gcc and make to build), then builds vch-admin.
# - Uses the local engine at /var/run/docker.sock when it answers; otherwise starts a private
#   dockerd the way the testbed does (own data-root, exec-root, pidfile and socket, vfs storage, no
#   iptables or bridge).
# - Starts a local registry (Debian's docker-registry, plain HTTP on 127.0.0.1, which dockerd
#   treats as insecure) and pushes a small runnable image into it, made offline as the testbed
#   makes it: `docker import` of a static-busybox rootfs.
# - `vch-admin create`: a CA, server and client certificates (mutual TLS), quickstart.env, and
#   vch.toml whitelisting only that registry, pinned to VIC's API 1.25 when the engine allows it.
# - `vch-admin serve` on 127.0.0.1, audit log in the VCH directory.
# - Through the VCH: `docker version`, the policy lines of `docker info`, a whitelisted pull and
#   run, `docker pull busybox` refused by the whitelist, then the audit log's pull decisions.
# On a terminal it then keeps serving until Ctrl-C; without one (CI) it stops after the demo.
# Everything it starts is stopped on exit. Every wait is bounded and fails at once, with the last
# lines of its log, when the process it waits for exits.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work="${QUICKSTART_DIR:-$root/target/quickstart}"
mkdir -p "$work"
work=$(cd "$work" && pwd)

"$root/scripts/setup.sh" --runtime

echo "building vch-admin ..."
cargo build --quiet --locked -p vch-admin
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vch-admin"

pids=()
exec_root=
demo_image=
cleanup() {
  # Newest first: the VCH, then the registry, then dockerd.
  local i pid
  if [ -n "$demo_image" ] && [ "$engine_sock" = /var/run/docker.sock ]; then
    docker -H "unix://$engine_sock" rmi "$demo_image" >/dev/null 2>&1 || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$exec_root" ]; then rm -rf "$exec_root"; fi
}
trap cleanup EXIT
trap 'echo "quickstart: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# fail MESSAGE [LOG]: the message and the last lines of LOG, then exit.
fail() {
  echo "quickstart: $1" >&2
  if [ -n "${2:-}" ] && [ -s "$2" ]; then
    echo "--- last lines of $2:" >&2
    tail -n 15 "$2" >&2
  fi
  exit 1
}

# wait_for WHAT PID LOG SECONDS COMMAND...: runs COMMAND until it succeeds; fails at once when PID
# has exited and after SECONDS at the latest.
wait_for() {
  local what=$1 pid=$2 log=$3 seconds=$4
  shift 4
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$what exited before it answered" "$log"
    [ "$SECONDS" -lt "$deadline" ] || fail "$what did not answer within ${seconds}s" "$log"
    sleep 0.2
  done
}

free_port() {
  local port=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

ping_engine() { curl -fsS --max-time 2 --unix-socket "$1" http://docker/_ping >/dev/null 2>&1; }

engine_sock=/var/run/docker.sock
dockerd_env=()
if ping_engine "$engine_sock"; then
  echo "using the local Docker engine at unix://$engine_sock"
else
  command -v dockerd >/dev/null ||
    fail "no engine answers at $engine_sock and dockerd is not installed (scripts/setup.sh --runtime installs docker.io)"
  engine_sock="$work/docker.sock"
  exec_root=$(mktemp -d /tmp/vchq-XXXXXX)
  echo "no engine answers at /var/run/docker.sock: starting a private dockerd (log: $work/dockerd.log)"
  echo '{}' >"$work/daemon.json"
  # Docker 29 serves no API below 1.40 unless told; the VCH pins VIC's 1.25 (older engines ignore this).
  dockerd_env=(env DOCKER_MIN_API_VERSION=1.24)
  "${dockerd_env[@]}" dockerd --config-file "$work/daemon.json" --data-root "$work/docker-data" \
    --exec-root "$exec_root" --pidfile "$work/dockerd.pid" -H "unix://$engine_sock" \
    --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs >"$work/dockerd.log" 2>&1 &
  pids+=("$!")
  wait_for dockerd "$!" "$work/dockerd.log" 60 ping_engine "$engine_sock"
fi
export DOCKER_CONFIG="$work/docker-config"
engine=(docker -H "unix://$engine_sock")

# A local registry, plain HTTP on loopback.
rport=$(free_port 5000)
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: "$work/registry/storage"
  delete:
    enabled: true
http:
  addr: "127.0.0.1:$rport"
  secret: vch-quickstart-not-secret
EOF
docker-registry serve "$work/registry/config.yml" >"$work/registry/registry.log" 2>&1 &
pids+=("$!")
wait_for docker-registry "$!" "$work/registry/registry.log" 30 \
  curl -fsS --max-time 2 "http://127.0.0.1:$rport/v2/"
echo "local registry at 127.0.0.1:$rport (log: $work/registry/registry.log)"

# A runnable image made offline: a static busybox and its applets, imported, pushed, then removed
# from the engine so that the pull through the VCH is a real one.
[ -x /bin/busybox ] || fail "/bin/busybox is missing (scripts/setup.sh --runtime installs busybox-static)"
rootfs="$work/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/root" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo cat ls sleep true env id hostname uname; do
  ln -s busybox "$rootfs/bin/$applet"
done
demo_image="127.0.0.1:$rport/demo/busybox:1"
tar -C "$rootfs" -cf - . | "${engine[@]}" import --change 'CMD ["sh"]' - "$demo_image" >/dev/null
"${engine[@]}" push "$demo_image" >/dev/null
"${engine[@]}" rmi "$demo_image" >/dev/null
echo "pushed $demo_image (a static busybox)"

# Pin VIC's API 1.25 unless the engine refuses versions that old (Docker 29 without
# min-api-version; see the README's "Docker versions").
api_pin=(--api-version 1.25)
min_api=$(curl -fsS --max-time 5 --unix-socket "$engine_sock" http://docker/version |
  grep -o '"MinAPIVersion":"1\.[0-9]*"' | head -n 1 | grep -o '[0-9]*"$' | tr -d '"' || true)
if [ -n "$min_api" ] && [ "$min_api" -gt 25 ]; then
  echo "the engine's minimum API is 1.$min_api: serving its versions instead of pinning 1.25"
  api_pin=()
fi

port=$(free_port 2376)
vch="$work/vch"
"$bin" create --name quickstart --cert-path "$vch" --force \
  --tls-cname 127.0.0.1 --tls-cname localhost --listen "127.0.0.1:$port" \
  --docker-host "unix://$engine_sock" "${api_pin[@]}" \
  --wr "127.0.0.1:$rport" --insecure-registry "127.0.0.1:$rport"

# The audit log is appended across runs: the demo shows this run's lines.
audit_seen=0
if [ -f "$vch/audit.log" ]; then audit_seen=$(wc -l <"$vch/audit.log"); fi
"$bin" serve "$vch" --audit-log "$vch/audit.log" 2>"$work/serve.log" &
pids+=("$!")
serve_pid=$!
wait_for "vch-admin serve" "$serve_pid" "$work/serve.log" 30 grep -q "serves Docker API" "$work/serve.log"
cat "$work/serve.log"

# The user's own CLI, with the VCH's env file (DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH,
# and DOCKER_API_VERSION when pinned).
docker_vch() (
  set -a
  # shellcheck source=/dev/null
  . "$vch/quickstart.env"
  set +a
  docker "$@"
)
show() {
  echo
  echo "\$ docker $*"
  docker_vch "$@"
}

printf '\nThe VCH is serving on 127.0.0.1:%s with mutual TLS. Use it with:\n' "$port"
printf '  set -a; . %s; set +a; docker version\n' "$vch/quickstart.env"

version_format='client API {{.Client.APIVersion}}, server API {{.Server.APIVersion}} (engine {{.Server.Version}})'
echo
echo "\$ docker version --format '$version_format'"
docker_vch version --format "$version_format"
echo
echo "\$ docker info | grep vch.registry"
docker_vch info --format '{{range .Labels}}{{println .}}{{end}}' | grep '^vch\.registry' | sed 's/^/ /'
show pull "$demo_image"
show run --rm "$demo_image" echo "hello from a whitelisted registry"
echo
echo "\$ docker pull busybox    # Docker Hub is not on this VCH's whitelist"
if docker_vch pull busybox; then
  fail "the pull from Docker Hub was allowed"
fi
echo
echo "audit log ($vch/audit.log, one JSON line per request), the pulls:"
sed -n 's/.*"action":"pull","image":"\([^"]*\)".*"allowed":\([a-z]*\),"decision":"\([^"]*\)".*/  pull \1: allowed=\2, \3/p' \
  <(tail -n "+$((audit_seen + 1))" "$vch/audit.log")

if [ -t 0 ] || [ "${QUICKSTART_FOREGROUND:-}" = 1 ]; then
  printf '\nserving until Ctrl-C ...\n'
  wait "$serve_pid" || true
fi
