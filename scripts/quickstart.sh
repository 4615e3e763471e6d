#!/usr/bin/env bash
# The main job: create a VCH and serve it in front of the local Docker engine.
#
#   scripts/quickstart.sh
#
# - Builds vch-admin.
# - Uses the local engine at /var/run/docker.sock when it answers; otherwise starts a private
#   dockerd the way the testbed does (own data-root, exec-root, pidfile and socket, vfs storage, no
#   iptables or bridge) and stops it again on exit.
# - `vch-admin create`: a CA, server and client certificates (mutual TLS), quickstart.env, and
#   vch.toml with a registry whitelist (the VIC documentation's example).
# - `vch-admin serve` on 127.0.0.1, audit log in the VCH directory.
# - Prints the docker command to use and shows it working: `docker version` through the VCH
#   (the engine's API version, at most the audited 1.55; `create --api-version 1.25` would pin
#   VIC's), and a pull from Docker Hub refused by the whitelist.
# On a terminal it then keeps serving until Ctrl-C; without one (CI) it stops after the demo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work="${QUICKSTART_DIR:-$root/target/quickstart}"
mkdir -p "$work"

echo "building vch-admin ..."
cargo build --quiet --locked -p vch-admin
bin="${CARGO_TARGET_DIR:-$root/target}/debug/vch-admin"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

ping_engine() { curl -fsS --max-time 2 --unix-socket "$1" http://docker/_ping >/dev/null 2>&1; }

engine_sock=/var/run/docker.sock
if ping_engine "$engine_sock"; then
  echo "using the local Docker engine at unix://$engine_sock"
else
  engine_sock="$work/docker.sock"
  exec_root=$(mktemp -d /tmp/vchq-XXXXXX)
  echo "no engine answers at /var/run/docker.sock: starting a private dockerd (log: $work/dockerd.log)"
  echo '{}' >"$work/daemon.json"
  dockerd --config-file "$work/daemon.json" --data-root "$work/docker-data" --exec-root "$exec_root" \
    --pidfile "$work/dockerd.pid" -H "unix://$engine_sock" --iptables=false --ip6tables=false \
    --bridge=none --storage-driver=vfs >"$work/dockerd.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 300); do ping_engine "$engine_sock" && break; sleep 0.2; done
  ping_engine "$engine_sock" || { echo "dockerd did not come up; see $work/dockerd.log" >&2; exit 1; }
fi

port=2376
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
vch="$work/vch"
# The whitelist names documentation addresses: --no-registry-probe keeps create from dialling them.
"$bin" create --name quickstart --cert-path "$vch" --force --no-registry-probe \
  --tls-cname 127.0.0.1 --tls-cname localhost --listen "127.0.0.1:$port" \
  --docker-host "unix://$engine_sock" \
  --wr 10.2.40.40:443 --wr 10.2.2.1/24 --wr '*.example.com' --dir 192.168.100.207

"$bin" serve "$vch" --audit-log "$vch/audit.log" 2>"$work/serve.log" &
pids+=("$!")
for _ in $(seq 100); do grep -q "serves Docker API" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
cat "$work/serve.log"

docker=(docker -H "tcp://127.0.0.1:$port" --tlsverify --tlscacert "$vch/ca.pem"
  --tlscert "$vch/cert.pem" --tlskey "$vch/key.pem")
export DOCKER_CONFIG="$work/docker-config"
printf '\nThe VCH is serving. Use it with:\n  %s version\nor: set -a; . %s; set +a\n\n' "${docker[*]}" "$vch/quickstart.env"

echo "\$ docker version --format '{{.Client.APIVersion}} / {{.Server.APIVersion}}'"
"${docker[@]}" version --format 'client API {{.Client.APIVersion}} / server API {{.Server.APIVersion}}'
echo
echo "\$ docker pull busybox    # Docker Hub is not on this VCH's whitelist"
if "${docker[@]}" pull busybox; then
  echo "unexpected: the pull was allowed" >&2
  exit 1
fi
echo
echo "audit log ($vch/audit.log):"
tail -n 2 "$vch/audit.log"

if [ -t 0 ] || [ "${QUICKSTART_FOREGROUND:-}" = 1 ]; then
  printf '\nserving until Ctrl-C ...\n'
  wait "${pids[-1]}"
fi
