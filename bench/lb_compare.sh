#!/usr/bin/env bash
# Load balancers side by side on heterogeneous endpoints: one slow (long
# time to first token), one with a short concurrency limit (a queue builds
# under load) and one healthy. The same closed-loop streaming load goes
# through the proxy once per policy, in one run; p50/p99 time to first
# token and error rate are compared with round robin.
#
#   bench/lb_compare.sh        (builds first; REQUESTS=1500 CONNECTIONS=16 per policy)
#
# Everything binds 127.0.0.1; each load is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
REQUESTS="${REQUESTS:-1500}"
CONNECTIONS="${CONNECTIONS:-16}"
mock() {  # name port args...
  local name=$1 port=$2; shift 2
  "$BIN/bench/infermesh-mock-model" --port "$port" --name "$name" --models chat-model --chunks 8 \
    --chunk-delay-ms 5 "$@" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

SLOW=$(free_port); QUEUED=$(free_port); HEALTHY=$(free_port)
mock slow "$SLOW" --ttft-ms 300
mock queued "$QUEUED" --ttft-ms 40 --max-concurrency 2
mock healthy "$HEALTHY" --ttft-ms 40

PORT=$(free_port); ADMIN=$(free_port)
{
  cat <<YAML
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: bench}
spec: {address: '127.0.0.1:$PORT', filters: [{name: router}]}
YAML
  for policy in round_robin least_request ewma load_aware; do
    cat <<YAML
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: $policy}
spec:
  upstreamModel: chat-model
  loadBalancer: {policy: $policy}
  outlierDetection: {consecutiveFailures: 0}
  endpoints: [{address: '127.0.0.1:$SLOW'}, {address: '127.0.0.1:$QUEUED'}, {address: '127.0.0.1:$HEALTHY'}]
YAML
  done
  cat <<YAML
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: api}
spec: {match: {pathPrefix: /v1/}}
YAML
} >"$WORK/config.yaml"
"$BIN/proxy/infermesh-proxy" --config "$WORK/config.yaml" --admin "127.0.0.1:$ADMIN" --workers 1 --log-level warn \
  >"$WORK/proxy.log" 2>&1 &
pids+=($!)
wait_port "$PORT"

declare -A line
for policy in round_robin least_request ewma load_aware; do
  # A short warm-up so the adaptive policies have something to go by.
  "$BIN/bench/infermesh-ttft-load" --port "$PORT" --model "$policy" --connections 4 --requests 40 >/dev/null
  line[$policy]=$("$BIN/bench/infermesh-ttft-load" --port "$PORT" --model "$policy" --connections "$CONNECTIONS" \
    --requests "$REQUESTS" --max-seconds 60)
  echo "$policy: ${line[$policy]}"
done

field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
rr50=$(field "${line[round_robin]}" ttft_p50_ms); rr99=$(field "${line[round_robin]}" ttft_p99_ms)
{
  echo "| policy | TTFT p50 ms | TTFT p99 ms | p50 vs round robin | p99 vs round robin | error rate | req/s |"
  echo "|---|---|---|---|---|---|---|"
  for policy in round_robin least_request ewma load_aware; do
    l=${line[$policy]}
    p50=$(field "$l" ttft_p50_ms); p99=$(field "$l" ttft_p99_ms)
    awk -v n="$policy" -v a="$p50" -v b="$p99" -v ra="$rr50" -v rb="$rr99" -v e="$(field "$l" error_rate)" \
      -v r="$(field "$l" rps)" 'BEGIN { printf "| %s | %.1f | %.1f | %.2f | %.2f | %s | %s |\n", n, a, b, a/ra, b/rb, e, r }'
  done
} | tee "$WORK/table.md"
echo
echo "(connections=$CONNECTIONS requests=$REQUESTS per policy; endpoints: slow TTFT 300 ms, queued at 2 concurrent, healthy TTFT 40 ms)"
