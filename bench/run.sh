#!/usr/bin/env bash
# Side-by-side benchmark: the mock model server direct, through
# infermesh-proxy (router only; authn + authz + ratelimit + router with a
# local token limit; the same with a global one over Redis), through nginx
# and through haproxy, under identical wrk
# load in one run. Prints a table and writes bench/RESULTS.md.
#
#   bench/run.sh            (builds first; DURATION=5 seconds per case)
#
# Every process binds 127.0.0.1 only. Proxies get one worker each and are
# pinned to CPU 0; the mock server and wrk share CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION="${DURATION:-5}"
# Every target gets it; only the governed infermesh checks it.
BENCH_KEY=sk-bench-0123456789

# Resident set (kB) and CPU ticks of a process and its children.
tree_pids() { echo "$1"; pgrep -P "$1" || true; }
rss_kb() { local s=0; for p in $(tree_pids "$1"); do s=$((s + $(awk '/VmRSS/{print $2}' /proc/"$p"/status 2>/dev/null || echo 0))); done; echo $s; }
cpu_ticks() { local s=0; for p in $(tree_pids "$1"); do s=$((s + $(awk '{print $14+$15}' /proc/"$p"/stat 2>/dev/null || echo 0))); done; echo $s; }

MOCK_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$BIN/bench/infermesh-mock-model" --port "$MOCK_PORT" --models bench-model --chunks 8 \
  >"$WORK/mock.log" 2>&1 &
pids+=($!)
wait_port "$MOCK_PORT"

# infermesh
IM_PORT=$(free_port); IM_ADMIN=$(free_port)
router_config "$WORK/im" "$IM_PORT" "$MOCK_PORT"
taskset -c "$PROXY_CPU" "$BIN/proxy/infermesh-proxy" --config "$WORK/im" --admin "127.0.0.1:$IM_ADMIN" --workers 1 \
  --log-level warn >"$WORK/im.log" 2>&1 &
IM_PID=$!; pids+=($IM_PID)

# infermesh with the telemetry filter in front of the router, without and
# with traces: every request sampled and exported over OTLP/HTTP to a
# stand-in collector (an nginx on the load CPU answering POST /v1/traces),
# so its cost is the filter's and the exporter thread's on the proxy CPU.
COL_PORT=$(free_port)
mkdir -p "$WORK/collector/logs" "$WORK/collector/tmp"
cat >"$WORK/collector/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/collector/logs/error.log warn;
pid $WORK/collector/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $WORK/collector/tmp;
  client_max_body_size 16m;
  client_body_buffer_size 1m;
  server { listen 127.0.0.1:$COL_PORT; location = /v1/traces { return 200; } }
}
CONF
taskset -c "$LOAD_CPU" nginx -p "$WORK/collector" -c "$WORK/collector/nginx.conf" >"$WORK/collector.log" 2>&1 &
pids+=($!)
TEL_PORT=$(free_port); TEL_ADMIN=$(free_port)
router_config "$WORK/tel" "$TEL_PORT" "$MOCK_PORT"
sed -i 's/filters: \[{name: router}\]/filters: [{name: telemetry}, {name: router}]/' "$WORK/tel/config.yaml"
taskset -c "$PROXY_CPU" "$BIN/proxy/infermesh-proxy" --config "$WORK/tel" --admin "127.0.0.1:$TEL_ADMIN" --workers 1 \
  --log-level warn >"$WORK/tel.log" 2>&1 &
TEL_PID=$!; pids+=($TEL_PID)
TRC_PORT=$(free_port); TRC_ADMIN=$(free_port)
router_config "$WORK/trc" "$TRC_PORT" "$MOCK_PORT"
sed -i "s/filters: \[{name: router}\]/filters: [{name: telemetry, config: {tracing: {collector: '127.0.0.1:$COL_PORT', maxQueue: 100000}}}, {name: router}]/" \
  "$WORK/trc/config.yaml"
taskset -c "$PROXY_CPU" "$BIN/proxy/infermesh-proxy" --config "$WORK/trc" --admin "127.0.0.1:$TRC_ADMIN" --workers 1 \
  --log-level warn >"$WORK/trc.log" 2>&1 &
TRC_PID=$!; pids+=($TRC_PID)

# infermesh with the full chain: authn (an API key) + authz (a policy with
# a few rules) + ratelimit (a token and a request limit the load never
# reaches) + telemetry (GenAI metrics) + router, the chain a governed mesh
# runs.
GOV_PORT=$(free_port); GOV_ADMIN=$(free_port)
router_config "$WORK/gov" "$GOV_PORT" "$MOCK_PORT"
sed -i 's/filters: \[{name: router}\]/filters: [{name: authn}, {name: authz}, {name: ratelimit}, {name: telemetry}, {name: router}]/' "$WORK/gov/config.yaml"
cat >>"$WORK/gov/config.yaml" <<YAML
---
apiVersion: infermesh.io/v1
kind: Tenant
metadata: {name: bench}
spec:
  apiKeys: [{name: wrk, sha256: $(printf %s "$BENCH_KEY" | sha256sum | cut -d' ' -f1)}]
  limits: [{name: tpm, tokensPerMinute: 1000000000000, requestsPerSecond: 1000000000}]
---
apiVersion: infermesh.io/v1
kind: Tenant
metadata: {name: other}
spec: {apiKeys: [{name: wrk, sha256: $(printf %s other-key | sha256sum | cut -d' ' -f1)}]}
---
apiVersion: infermesh.io/v1
kind: Policy
metadata: {name: bench}
spec:
  listeners: [bench]
  defaultAction: deny
  rules:
    - {name: no-other, action: deny, tenants: [other]}
    - {name: bench-model, action: allow, tenants: [bench], models: [bench-model]}
YAML
taskset -c "$PROXY_CPU" "$BIN/proxy/infermesh-proxy" --config "$WORK/gov" --admin "127.0.0.1:$GOV_ADMIN" --workers 1 \
  --log-level warn >"$WORK/gov.log" 2>&1 &
GOV_PID=$!; pids+=($GOV_PID)

# The same chain with the token limit global: blocks leased from a Redis
# on the load CPU.
REDIS_PORT=$(free_port)
taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" >"$WORK/redis.log" 2>&1 &
pids+=($!)
wait_port "$REDIS_PORT"
GLB_PORT=$(free_port); GLB_ADMIN=$(free_port)
mkdir -p "$WORK/glb"
sed -e "s/$GOV_PORT/$GLB_PORT/" -e "s/{name: ratelimit}/{name: ratelimit, config: {redis: '127.0.0.1:$REDIS_PORT'}}/" \
  -e "s/requestsPerSecond: 1000000000}/requestsPerSecond: 1000000000, scope: global, blockTokens: 100000}/" \
  "$WORK/gov/config.yaml" >"$WORK/glb/config.yaml"
taskset -c "$PROXY_CPU" "$BIN/proxy/infermesh-proxy" --config "$WORK/glb" --admin "127.0.0.1:$GLB_ADMIN" --workers 1 \
  --log-level warn >"$WORK/glb.log" 2>&1 &
GLB_PID=$!; pids+=($GLB_PID)

# nginx: keep-alive upstream, no buffering (responses stream), no logs.
NG_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $WORK/nginx/logs/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/tmp;
  proxy_temp_path $WORK/nginx/tmp;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
NG_PID=$!; pids+=($NG_PID)

# haproxy: one thread, connection reuse, no logs.
HA_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HA_PORT
  default_backend mock
backend mock
  server m1 127.0.0.1:$MOCK_PORT
CONF
taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
HA_PID=$!; pids+=($HA_PID)

wait_port "$IM_PORT"; wait_port "$TEL_PORT"; wait_port "$TRC_PORT"; wait_port "$COL_PORT"; wait_port "$GOV_PORT"; wait_port "$GLB_PORT"; wait_port "$NG_PORT"; wait_port "$HA_PORT"

to_ms() {  # wrk prints 812.00us / 1.23ms / 1.01s
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'
}

# run_case PORT PID SCRIPT CONNECTIONS -> "rps p50 p99 cpu% errors rss_mib"
run_case() {
  local port=$1 pid=$2 script=$3 conns=$4 out t0 t1 c0 c1
  c0=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid" ); t0=$(date +%s.%N)
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "bench/wrk/$script" \
        -H "authorization: Bearer $BENCH_KEY" \
        "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
  t1=$(date +%s.%N); c1=$( [ "$pid" = - ] && echo 0 || cpu_ticks "$pid" )
  local rps p50 p99 errs cpu
  rps=$(echo "$out" | awk '/Requests\/sec/{print int($2)}')
  p50=$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')")
  p99=$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')")
  errs=$(echo "$out" | awk '/Non-2xx/{print $NF} /Socket errors/{print "sock"}' | head -1)
  cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
        'BEGIN{ if (b==0) print "-"; else printf "%.0f", 100*(b-a)/hz/(t1-t0) }')
  local rss=-
  [ "$pid" = - ] || rss=$(( $(rss_kb "$pid") / 1024 ))
  echo "${rps:-0} ${p50:-0} ${p99:-0} $cpu ${errs:-0} $rss"
}

declare -A R
targets=("direct $MOCK_PORT -" "infermesh $IM_PORT $IM_PID" "infermesh+tel $TEL_PORT $TEL_PID"
  "infermesh+trace $TRC_PORT $TRC_PID" "infermesh+gov $GOV_PORT $GOV_PID"
  "infermesh+global $GLB_PORT $GLB_PID" "nginx $NG_PORT $NG_PID"
  "haproxy $HA_PORT $HA_PID")
cases=("chat-c1 chat.lua 1" "chat-c16 chat.lua 16" "chat-c64 chat.lua 64" "stream-c64 chat_stream.lua 64" "paced-c4 chat_paced.lua 4")
for c in "${cases[@]}"; do
  read -r cname script conns <<<"$c"
  for t in "${targets[@]}"; do
    read -r tname port pid <<<"$t"
    R[$cname,$tname]=$(run_case "$port" "$pid" "$script" "$conns")
    echo "bench: $cname $tname: ${R[$cname,$tname]}" >&2
  done
done

# Idle RSS with 1,000 models and 1,000 routes.
BIG_PORT=$(free_port); BIG_ADMIN=$(free_port)
mkdir -p "$WORK/big"
{
  echo "apiVersion: infermesh.io/v1"; echo "kind: Listener"; echo "metadata: {name: big}"
  echo "spec: {address: '127.0.0.1:$BIG_PORT', filters: [{name: router}]}"
  for i in $(seq 0 999); do
    echo "---"; echo "apiVersion: infermesh.io/v1"; echo "kind: Model"; echo "metadata: {name: model-$i}"
    echo "spec: {aliases: [alias-$i], capabilities: [chat], endpoints: [{address: '127.0.0.1:$((20000 + i))'}, {address: '127.0.0.1:$((21000 + i))'}]}"
    echo "---"; echo "apiVersion: infermesh.io/v1"; echo "kind: Route"; echo "metadata: {name: route-$i}"
    echo "spec: {match: {pathPrefix: /v1/, headers: [{name: x-tenant, value: tenant-$i}]}, model: model-$i}"
  done
} >"$WORK/big/config.yaml"
"$BIN/proxy/infermesh-proxy" --config "$WORK/big" --admin "127.0.0.1:$BIG_ADMIN" --workers 1 --log-level warn \
  >"$WORK/big.log" 2>&1 &
BIG_PID=$!; pids+=($BIG_PID)
wait_port "$BIG_PORT"; sleep 1
BIG_RSS=$(rss_kb "$BIG_PID")
IM_IDLE_RSS=$(rss_kb "$IM_PID")

# Sum of the samples of a metric (prefix match on name and labels) on an admin port.
scrape_sum() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {printf "%d", s}'; }
field() { echo "${R[$1,$2]}" | awk -v i="$3" '{print $i}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0==0) print "-"; else printf "%.2f", a/b }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.3f", a-b }'; }

{
  echo "## $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk -F: '/model name/{gsub(/^ /,"",$2); print $2; exit}' /proc/cpuinfo)"
  echo
  echo "wrk ${DURATION}s per case; mock model server direct vs through each proxy, one worker each, proxies on CPU $PROXY_CPU, mock and wrk on CPU $LOAD_CPU."
  echo "Latency in ms; 'added' = p50/p99 minus direct's; CPU = the proxy's CPU time in % of one core; RSS after the case (MiB, all of the proxy's processes)."
  echo
  echo "| case | target | req/s | p50 | p99 | added p50 | added p99 | CPU % | RSS MiB | non-2xx | req/s vs nginx |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for c in "${cases[@]}"; do
    read -r cname script conns <<<"$c"
    for t in "${targets[@]}"; do
      read -r tname port pid <<<"$t"
      echo "| $cname | $tname | $(field "$cname" "$tname" 1) | $(field "$cname" "$tname" 2) | $(field "$cname" "$tname" 3) | $(added "$(field "$cname" "$tname" 2)" "$(field "$cname" direct 2)") | $(added "$(field "$cname" "$tname" 3)" "$(field "$cname" direct 3)") | $(field "$cname" "$tname" 4) | $(field "$cname" "$tname" 6) | $(field "$cname" "$tname" 5) | $(ratio "$(field "$cname" "$tname" 1)" "$(field "$cname" nginx 1)") |"
    done
  done
  echo
  tp=$(awk -v a="$(field chat-c64 infermesh 1)" -v b="$(field chat-c64 nginx 1)" 'BEGIN{printf "%.2f", a/b}')
  st=$(awk -v a="$(field stream-c64 infermesh 1)" -v b="$(field stream-c64 nginx 1)" 'BEGIN{printf "%.2f", a/b}')
  ap=$(added "$(field paced-c4 infermesh 3)" "$(field paced-c4 direct 3)")
  # CPU per request (CPU % / req/s), governed chain against nginx.
  cpr() { awk -v c="$(field chat-c64 "$1" 4)" -v r="$(field chat-c64 "$1" 1)" 'BEGIN{ if (r+0==0) print 0; else printf "%.2f", c*10000/r }'; }
  gov_cpu=$(ratio "$(cpr infermesh+gov)" "$(cpr nginx)")
  glb_cpu=$(ratio "$(cpr infermesh+global)" "$(cpr nginx)")
  verdict() { awk -v ok="$1" 'BEGIN{print (ok ? "met" : "NOT met")}'; }
  echo "Budgets (DESIGN.md section 8):"
  echo "- throughput >= nginx: chat-c64 ratio $tp, stream-c64 ratio $st: $(verdict "$(awk -v a="$tp" -v b="$st" 'BEGIN{print (a>=1 && b>=1)}')")"
  echo "- added p99 <= 0.3 ms at a moderate fixed rate (paced-c4): $ap ms: $(verdict "$(awk -v a="$ap" 'BEGIN{print (a<=0.3)}')")"
  echo "- CPU per request with the full chain, authn + authz + ratelimit (local) + telemetry + router (chat-c64) <= 1.25x nginx's: $(cpr infermesh+gov) vs $(cpr nginx) us, ratio $gov_cpu: $(verdict "$(awk -v a="$gov_cpu" 'BEGIN{print (a<=1.25)}')")"
  echo "- telemetry's own cost (chat-c64): metrics $(added "$(cpr infermesh+tel)" "$(cpr infermesh)") us per request over router only ($(cpr infermesh+tel) us, $(ratio "$(cpr infermesh+tel)" "$(cpr nginx)")x nginx); with every request traced and exported $(added "$(cpr infermesh+trace)" "$(cpr infermesh)") us ($(cpr infermesh+trace) us, $(ratio "$(cpr infermesh+trace)" "$(cpr nginx)")x nginx; spans exported $(scrape_sum "$TRC_ADMIN" 'infermesh_tracing_spans_total{outcome="exported"}'), dropped $(scrape_sum "$TRC_ADMIN" 'infermesh_tracing_spans_total{outcome="dropped')"
  echo "- the same with the token limit global (Redis): $(cpr infermesh+global) us, ratio $glb_cpu; a limit's own cost: $(added "$(cpr infermesh+global)" "$(cpr infermesh+gov)") us more than local"
  echo "- idle RSS <= 20 MiB with 1,000 models and routes: $((BIG_RSS / 1024)) MiB: $(verdict "$(( BIG_RSS <= 20480 ))")"
  echo
  echo "RSS: infermesh after the load above $((IM_IDLE_RSS / 1024)) MiB; idle with 1,000 models (2 endpoints each) and 1,000 routes: $((BIG_RSS / 1024)) MiB (budget 20 MiB)."
} >"$WORK/results.md"
cat "$WORK/results.md"
if [ "${WRITE_RESULTS:-1}" = 1 ]; then
  { echo "# Benchmark results"; echo; echo "Produced by bench/run.sh and bench/xds_fanout.sh; newest run first. Budgets: DESIGN.md section 8."; echo
    cat "$WORK/results.md"; echo
    if [ -f bench/RESULTS.md ]; then sed -n '/^## /,$p' bench/RESULTS.md; fi; } >"$WORK/all.md"
  cp "$WORK/all.md" bench/RESULTS.md
fi
