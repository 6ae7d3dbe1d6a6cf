#!/usr/bin/env bash
# Control plane fan-out benchmark: time from a YAML write to the ACK of all
# N connected xDS clients (N = 10, 100, 1000), and control plane RSS per
# connected client. Everything on 127.0.0.1. Appends to bench/RESULTS.md
# unless WRITE_RESULTS=0.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/build.sh >/dev/null
BIN="${BUILD_DIR:-build}"
WORK=$(mktemp -d /tmp/infermesh-fanout-XXXXXX)
cp_pid=""
cleanup() { [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
ulimit -n 65536 2>/dev/null || true

cat >"$WORK/base.yaml" <<YAML
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: main}
spec: {address: '127.0.0.1:0', filters: [{name: router}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: bench-model}
spec: {endpoints: [{address: '127.0.0.1:9'}]}
YAML

rows=""
for n in 10 100 1000; do
  rm -f "$WORK"/marker.yaml
  # The control plane gets one core; the clients the other.
  taskset -c 0 "$BIN/controlplane/infermesh-control" --config-dir "$WORK" --xds-address 127.0.0.1:0 --admin-address 127.0.0.1:0 \
    --log-level warn >"$WORK/cp.out" 2>"$WORK/cp.log" &
  cp_pid=$!
  for _ in $(seq 1 100); do grep -q '^xds ' "$WORK/cp.out" 2>/dev/null && break; sleep 0.05; done
  xds=$(awk '/^xds/{print $2}' "$WORK/cp.out")
  rss0=$(awk '/VmRSS/{print $2}' /proc/$cp_pid/status)
  taskset -c "$(( $(nproc) > 1 ? 1 : 0 ))" "$BIN/bench/infermesh-xds-fanout" --xds "$xds" --config-dir "$WORK" --clients "$n" --rounds 5 >"$WORK/fan.out" 2>&1 &
  fan=$!
  for _ in $(seq 1 600); do grep -q '^connected' "$WORK/fan.out" 2>/dev/null && break; sleep 0.1; done
  rss1=$(awk '/VmRSS/{print $2}' /proc/$cp_pid/status)
  wait $fan || { cat "$WORK/fan.out" >&2; exit 1; }
  line=$(grep '^clients' "$WORK/fan.out")
  per=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN{printf "%.1f", (b-a)/n}')
  echo "fanout: $line; control plane RSS $((rss1 / 1024)) MiB, $per KiB per client" >&2
  rows+="| $n | $(echo "$line" | awk '{print $6}') | $(echo "$line" | awk '{print $8}') | $(echo "$line" | awk '{print $10}') | $((rss1 / 1024)) | $per |"$'\n'
  kill $cp_pid; wait $cp_pid 2>/dev/null || true; cp_pid=""
done

p99_100=$(echo "$rows" | awk -F'|' '$2+0==100{print $4+0}')
verdict=$(awk -v v="$p99_100" 'BEGIN{print (v<=100 ? "met" : "NOT met")}')
{
  echo "## $(date -u +%Y-%m-%d) xDS fan-out on $(nproc) cores"
  echo
  echo "A route file is written; latency is until each client has ACKed the route response carrying it"
  echo "(includes the control plane's 25 ms debounce of directory events). 5 edits per N; one gRPC"
  echo "connection per client; the control plane pinned to one core, the clients to the other."
  echo
  echo "| clients | p50 ms | p99 ms | max ms | control plane RSS MiB | KiB per client |"
  echo "|---|---|---|---|---|---|"
  printf "%s" "$rows"
  echo
  echo "Budget (DESIGN.md section 8): p99 <= 100 ms at 100 proxies: $p99_100 ms: $verdict."
  echo
} >"$WORK/results.md"
cat "$WORK/results.md"
if [ "${WRITE_RESULTS:-1}" = 1 ]; then
  { sed -n '1,/^## /p' bench/RESULTS.md | sed '$d'; cat "$WORK/results.md"; sed -n '/^## /,$p' bench/RESULTS.md; } >"$WORK/all.md"
  cp "$WORK/all.md" bench/RESULTS.md
fi
