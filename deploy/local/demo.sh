#!/usr/bin/env bash
# README command 1: install what is missing, build, start two mock model
# servers, the control plane with the YAML in deploy/local/, a node proxy in
# front of the servers and the app's sidecar proxy in front of it, both
# configured by the control plane, send real requests through the mesh, and
# show where to look next.
# DEMO_ONCE=1 stops after the requests instead of waiting for Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
./deploy/build.sh
BIN="${BUILD_DIR:-build}"
RUN=/tmp/infermesh-demo
mkdir -p "$RUN"

for port in 18000 18001 18002 18080 18443 19000 19901 19902; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is in use (another demo still running?)" >&2
    exit 1
  fi
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

start() {  # name log command...
  local name=$1 log=$2; shift 2
  "$@" >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q "$name" "$log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "demo: $* did not start; see $log" >&2
  cat "$log" >&2
  exit 1
}

models=llama-3-8b-instruct,llama-3-70b-instruct,text-embedding-small
start "listening" "$RUN/mock-a.log" "$BIN/bench/infermesh-mock-model" --port 18001 --name mock-a --models "$models" --chunk-delay-ms 80
start "listening" "$RUN/mock-b.log" "$BIN/bench/infermesh-mock-model" --port 18002 --name mock-b --models "$models" --chunk-delay-ms 80
start "admin " "$RUN/control.log" "$BIN/controlplane/infermesh-control" --config-dir deploy/local \
  --xds-address 127.0.0.1:18000 --admin-address 127.0.0.1:19000
rm -f "$RUN/proxy.cache" "$RUN/node.cache"
start "listener inbound" "$RUN/node.log" "$BIN/proxy/infermesh-proxy" --control-plane 127.0.0.1:18000 \
  --node-id demo-node --node-labels role=node,node=local-node --config-cache "$RUN/node.cache" \
  --admin 127.0.0.1:19902 --workers 1
start "listener outbound" "$RUN/proxy.log" "$BIN/proxy/infermesh-proxy" --control-plane 127.0.0.1:18000 \
  --node-id demo-sidecar --node-labels role=sidecar --config-cache "$RUN/proxy.cache" \
  --admin 127.0.0.1:19901 --workers 2

echo
echo "== infermesh is running: mock model servers on :18001 and :18002, the control plane"
echo "   (xDS :18000, admin :19000), the node proxy in front of the servers (:18443) and the"
echo "   app's sidecar (:18080) in front of it, both configured by the control plane"
echo
echo "== POST /v1/chat/completions as tenant team-a (its API key: sk-demo-team-a; model \"llama3\","
echo "   an alias of llama-3-8b-instruct)"
KEY_A='authorization: Bearer sk-demo-team-a'
KEY_B='authorization: Bearer sk-demo-team-b'
curl -sS -D "$RUN/headers.txt" http://127.0.0.1:18080/v1/chat/completions -H "$KEY_A" \
  -H 'content-type: application/json' \
  -d '{"model":"llama3","messages":[{"role":"user","content":"Say hello to the mesh"}]}'
echo
grep -iE '^(x-mock-server|x-infermesh-model|x-infermesh-hops|x-request-id|x-ratelimit-(limit|remaining)-tokens)' "$RUN/headers.txt" | sed 's/^/   /'
echo "   (usage above: the tokens the model reported; team-a's limit reserved them before the call;"
echo "   x-infermesh-hops: the model the node proxy served, one hop further in)"
echo
echo "== the same request, streamed (SSE, one event per token)"
curl -sSN http://127.0.0.1:18080/v1/chat/completions -H "$KEY_A" \
  -H 'content-type: application/json' \
  -d '{"model":"llama3","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Stream it"}]}'
echo
echo "== \"model\": \"auto\" with capability code: the cheapest capable model answers (see x-infermesh-model)"
curl -sS -D - -o /dev/null http://127.0.0.1:18080/v1/chat/completions -H "$KEY_A" -H 'x-infermesh-capability: code' \
  -d '{"model":"auto","messages":[{"role":"user","content":"Write a sort"}]}' | grep -i '^x-infermesh-model' | sed 's/^/   /'
echo
echo "== the same over HTTP/2 (h2c, prior knowledge)"
curl -sS --http2-prior-knowledge -o /dev/null -w '   HTTP/%{http_version} %{http_code}\n' http://127.0.0.1:18080/v1/chat/completions -H "$KEY_A" \
  -d '{"model":"llama3","messages":[{"role":"user","content":"hi"}]}'
echo
echo "== an unknown model gets an OpenAI-shaped error"
curl -sS http://127.0.0.1:18080/v1/chat/completions -H "$KEY_A" -d '{"model":"gpt-9","messages":[]}'
echo
echo
echo "== governance: no key is a 401; team-b may not use the 70b model (403, the rule that decided);"
echo "   GET /v1/models lists what each caller may use"
curl -sS http://127.0.0.1:18080/v1/chat/completions -d '{"model":"llama3","messages":[]}'
echo
curl -sS http://127.0.0.1:18080/v1/chat/completions -H "$KEY_B" -d '{"model":"llama-3-70b-instruct","messages":[]}'
echo
printf '   team-a: '; curl -sS http://127.0.0.1:18080/v1/models -H "$KEY_A" | grep -o '"id":"[^"]*"' | tr '\n' ' '; echo
printf '   team-b: '; curl -sS http://127.0.0.1:18080/v1/models -H "$KEY_B" | grep -o '"id":"[^"]*"' | tr '\n' ' '; echo
echo "   audit chain: $("$BIN/controlplane/infermeshctl" audit verify "$RUN/audit.log" | head -1)"
echo
echo "== token limits: team-b may spend 300 tokens a minute. Two requests at once, each reserving its"
echo "   input + max_tokens (250) before the model is called: the second does not fit and is refused"
echo "   with Retry-After, never reaching the model (the first settles to what the model reported)"
limit_pids=()
for i in 1 2; do
  curl -sS -o "$RUN/limit-$i.json" -D "$RUN/limit-headers-$i.txt" -w '%{http_code}' \
    http://127.0.0.1:18080/v1/chat/completions -H "$KEY_B" \
    -d '{"model":"llama3","max_tokens":250,"messages":[{"role":"user","content":"Tell me more"}]}' >"$RUN/limit-code-$i" &
  limit_pids+=($!)
done
wait "${limit_pids[@]}"
for i in 1 2; do
  header() { grep -i "^$1:" "$RUN/limit-headers-$i.txt" | tr -d '\r' | cut -d' ' -f2; }
  printf '   request %s: HTTP %s  x-ratelimit-remaining-tokens %s' "$i" "$(cat "$RUN/limit-code-$i")" "$(header x-ratelimit-remaining-tokens)"
  if [ -n "$(header retry-after)" ]; then
    printf '  retry-after %ss\n     %s' "$(header retry-after)" "$(grep -o '"message":"[^"]*"' "$RUN/limit-$i.json")"
  else
    printf '  usage %s' "$(grep -o '"usage":{[^}]*}' "$RUN/limit-$i.json")"
  fi
  echo
done
echo
echo "== request, token and cost metrics (full set: curl http://127.0.0.1:19901/metrics)"
curl -sS http://127.0.0.1:19901/metrics | grep -E '^infermesh_(http_requests_total|authn_denied_total\{reason="missing|authz_denied_total|ratelimit_(refused|settled_tokens)_total|budget_(spent_total|remaining)|genai_tokens_total.*type="(input|output)"|genai_cost_total|proxy_overhead_seconds_(sum|count))' | sed 's/^/   /'
echo "   time to first token, per served model (gen_ai_server_time_to_first_token_seconds):"
curl -sS http://127.0.0.1:19901/metrics | grep -E '^gen_ai_server_time_to_first_token_seconds_(sum|count)' | sed 's/^/     /'
echo
echo "== what the control plane knows (infermeshctl status)"
"$BIN/controlplane/infermeshctl" status --control-plane 127.0.0.1:19000 | sed 's/^/   /'
cat <<TXT

Where to look next:
  proxy metrics       curl http://127.0.0.1:19901/metrics
  proxy config dump   curl http://127.0.0.1:19901/config_dump   (node proxy: :19902)
  control plane       curl http://127.0.0.1:19000/status   (and /metrics)
  dashboards, alerts  deploy/observability/ (Grafana dashboard, Prometheus rules; docs/observability.md)
  access log          $RUN/access.log
  audit log           $RUN/audit.log   (check: $BIN/controlplane/infermeshctl audit verify $RUN/audit.log)
  logs                $RUN/proxy.log  $RUN/node.log  $RUN/control.log
  change the config   edit deploy/local/*.yaml: the control plane pushes it to the proxy
  check a change      $BIN/controlplane/infermeshctl validate deploy/local
  explain a request   $BIN/controlplane/infermeshctl explain --config-dir deploy/local --model llama3
TXT
if [ "${DEMO_ONCE:-0}" = 1 ] || [ ! -t 0 ]; then
  exit 0
fi
echo
echo "Press Ctrl-C to stop."
wait
