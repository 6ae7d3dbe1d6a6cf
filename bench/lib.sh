# Shared by the bench scripts (sourced after `cd` to the repo root):
# builds, a scratch directory removed on exit with every process in `pids`,
# CPU pinning and loopback port helpers.
./deploy/build.sh >/dev/null
BIN="${BUILD_DIR:-build}"
WORK=$(mktemp -d /tmp/infermesh-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

PROXY_CPU=0
LOAD_CPU=1
if [ "$(nproc)" -lt 2 ]; then LOAD_CPU=0; fi

free_port() {
  local p
  while :; do
    p=$(( (RANDOM % 12000) + 20000 ))  # below the ephemeral range (32768-60999): no clash with client sockets
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listening on $1" >&2
  exit 1
}

# A router-only proxy config in $1/config.yaml: one listener on 127.0.0.1:$2,
# model $4 (default bench-model) served by 127.0.0.1:$3, one /v1/ route.
router_config() {
  mkdir -p "$1"
  cat >"$1/config.yaml" <<YAML
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: bench}
spec: {address: '127.0.0.1:$2', filters: [{name: router}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: ${4:-bench-model}}
spec: {endpoints: [{address: '127.0.0.1:$3'}]}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: api}
spec: {match: {pathPrefix: /v1/}}
YAML
}
