#!/usr/bin/env bash
# Load balancers side by side on a heterogeneous fleet of mock engines with
# batch slots (N generations at once, the rest queue in arrival order),
# prefill time proportional to the prompt tokens a prefix cache lacks, and
# ORCA load reports (on every answer and at GET /metrics/orca):
#   fast   8 slots, 20 ms + 40 us per uncached prompt token, 10 ms per token
#   slow   8 slots, 250 ms + 400 us per uncached prompt token, 20 ms per token
#   small  2 slots, as fast as `fast`
# The same open-loop streaming load (Poisson arrivals at RATE per second,
# about 70% of what the fleet can serve; prompts share one of 8 system
# prompts) goes through the proxy once per policy and seed, in one run;
# p50/p99 time to first token are compared with round robin of the same
# seed, and each endpoint's share of the requests is counted by the mocks.
#
#   bench/lb_compare.sh   (builds first; RATE=90 REQUESTS=1200 SEEDS="1 2 3")
#
# Everything binds 127.0.0.1; each load is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
RATE="${RATE:-90}"
REQUESTS="${REQUESTS:-1200}"
SEEDS="${SEEDS:-1 2 3}"
POLICIES="${POLICIES:-round_robin least_request ewma load_aware}"
CHUNKS=8
mock() {  # name port args...
  local name=$1 port=$2; shift 2
  "$BIN/bench/infermesh-mock-model" --port "$port" --name "$name" --models chat-model --chunks "$CHUNKS" \
    --prefix-cache-blocks 4096 "$@" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

FAST=$(free_port); SLOW=$(free_port); SMALL=$(free_port)
mock fast "$FAST" --max-concurrency 8 --ttft-ms 20 --prefill-us-per-token 40 --chunk-delay-ms 10
mock slow "$SLOW" --max-concurrency 8 --ttft-ms 250 --prefill-us-per-token 400 --chunk-delay-ms 20
mock small "$SMALL" --max-concurrency 2 --ttft-ms 20 --prefill-us-per-token 40 --chunk-delay-ms 10
# What the fleet serves at most, with warm prefix caches (~60 uncached
# prompt tokens a request): slots / time a request holds one.
capacity=$(awk -v c="$CHUNKS" 'BEGIN {
  fast = 8 / ((20 + 60 * 0.04 + (c - 1) * 10) / 1000); slow = 8 / ((250 + 60 * 0.4 + (c - 1) * 20) / 1000);
  small = 2 / ((20 + 60 * 0.04 + (c - 1) * 10) / 1000); printf "%.0f", fast + slow + small }')

PORT=$(free_port); ADMIN=$(free_port)
{
  cat <<YAML
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: bench}
spec: {address: '127.0.0.1:$PORT', filters: [{name: router}]}
YAML
  for policy in $POLICIES; do
    # Capacity is not configured: load_aware learns it from the reports.
    extra=""
    if [ "$policy" = load_aware ]; then extra="  loadReport: {path: /metrics/orca, interval: 100ms}"; fi
    cat <<YAML
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: $policy}
spec:
  upstreamModel: chat-model
  loadBalancer: {policy: $policy}
  outlierDetection: {consecutiveFailures: 0}
$extra
  endpoints: [{address: '127.0.0.1:$FAST'}, {address: '127.0.0.1:$SLOW'}, {address: '127.0.0.1:$SMALL'}]
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
( wait_port "$PORT" ) || { cat "$WORK/proxy.log" >&2; exit 1; }

served() { curl -s "http://127.0.0.1:$1/mock/stats" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }
field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }
load() {  # policy seed requests rate
  "$BIN/bench/infermesh-ttft-load" --port "$PORT" --model "$1" --seed "$2" --requests "$3" --rate "$4" \
    --connections 512 --prefixes 8 --prefix-chars 2000 --suffix-chars 200 --max-seconds 60
}
echo "fleet capacity ~${capacity} req/s; load ${RATE} req/s open loop, ${REQUESTS} requests per policy and seed"
: >"$WORK/rows"
for seed in $SEEDS; do
  for policy in $POLICIES; do
    # A short warm-up so the adaptive policies (and the prefix caches) have
    # something to go by.
    load "$policy" "$seed" 60 30 >/dev/null
    f0=$(served "$FAST"); s0=$(served "$SLOW"); m0=$(served "$SMALL")
    l=$(load "$policy" "$seed" "$REQUESTS" "$RATE")
    f=$(( $(served "$FAST") - f0 )); s=$(( $(served "$SLOW") - s0 )); m=$(( $(served "$SMALL") - m0 ))
    echo "seed $seed $policy: $l fast=$f slow=$s small=$m"
    echo "$seed $policy $(field "$l" ttft_p50_ms) $(field "$l" ttft_p99_ms) $(field "$l" error_rate) $f $s $m" \
      >>"$WORK/rows"
  done
done

echo
awk '
  { seed[NR] = $1; pol[NR] = $2; p50[NR] = $3; p99[NR] = $4; err[NR] = $5; f[NR] = $6; s[NR] = $7; m[NR] = $8
    if ($2 == "round_robin") { rr50[$1] = $3; rr99[$1] = $4 } }
  END {
    print "| policy | seed | TTFT p50 ms | TTFT p99 ms | p50 vs round robin | p99 vs round robin | fast | slow | small | error rate |"
    print "|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= NR; ++i) {
      t = f[i] + s[i] + m[i]; if (t == 0) t = 1
      printf "| %s | %s | %.1f | %.1f | %.2f | %.2f | %.0f%% | %.0f%% | %.0f%% | %s |\n", pol[i], seed[i], p50[i], p99[i],
        p50[i] / rr50[seed[i]], p99[i] / rr99[seed[i]], 100 * f[i] / t, 100 * s[i] / t, 100 * m[i] / t, err[i]
      if (!(pol[i] in n)) order[++k] = pol[i]
      n[pol[i]]++; a50[pol[i]] += p50[i]; a99[pol[i]] += p99[i]; r99[pol[i]] += rr99[seed[i]] / p99[i]
      tf[pol[i]] += f[i] / t; ts[pol[i]] += s[i] / t; tm[pol[i]] += m[i] / t
    }
    print ""
    print "| policy (mean over seeds) | TTFT p50 ms | TTFT p99 ms | p99 improvement over round robin | fast | slow | small |"
    print "|---|---|---|---|---|---|---|"
    for (j = 1; j <= k; ++j) {
      p = order[j]
      printf "| %s | %.1f | %.1f | %.1fx | %.0f%% | %.0f%% | %.0f%% |\n", p, a50[p] / n[p], a99[p] / n[p], r99[p] / n[p],
        100 * tf[p] / n[p], 100 * ts[p] / n[p], 100 * tm[p] / n[p]
    }
  }' "$WORK/rows" | tee "$WORK/table.md"
echo
echo "(improvement: round robin p99 / policy p99 of the same seed, averaged over seeds)"
