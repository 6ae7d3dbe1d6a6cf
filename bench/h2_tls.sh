#!/usr/bin/env bash
# HTTP/2, gRPC and TLS side by side, in one run:
#   1. h2c with prior knowledge (h2load): infermesh vs nginx, both in front of
#      the same HTTP/1.1 mock model server, and the mock alone (h2load --h1);
#      then infermesh with an HTTP/2 (h2c) upstream vs that upstream alone
#      (an nginx h2c server answering a fixed JSON body);
#   2. gRPC unary ModelInfer (h2load): through infermesh vs straight to the
#      mock gRPC model server;
#   3. HTTPS with HTTP/2 over ALPN (h2load): infermesh vs nginx, same
#      certificate and upstream;
#   4. new TLS handshakes per second (openssl s_time -new): infermesh vs nginx.
# Ratios (infermesh / other) go to stdout as a markdown table.
#
#   bench/h2_tls.sh      (builds first; DURATION=5 seconds per case)
#
# Loopback only; proxies get one worker each, pinned to CPU 0, load on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION="${DURATION:-5}"

# Certificate for both proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

MOCK=$(free_port); GRPC=$(free_port)
taskset -c "$LOAD_CPU" "$BIN/bench/infermesh-mock-model" --port "$MOCK" --models bench-model --chunks 8 \
  >"$WORK/mock.log" 2>&1 &
pids+=($!)
taskset -c "$LOAD_CPU" "$BIN/bench/infermesh-mock-grpc-model" --port "$GRPC" --models resnet --delay-ms 0 \
  >"$WORK/grpc.log" 2>&1 &
pids+=($!)
wait_port "$MOCK"; wait_port "$GRPC"

IM_H2C=$(free_port); IM_TLS=$(free_port); IM_ADMIN=$(free_port); NG_ORIGIN=$(free_port)
cat >"$WORK/config.yaml" <<YAML
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: h2c}
spec: {address: '127.0.0.1:$IM_H2C', protocol: http2, filters: [{name: router}]}
---
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: tls}
spec:
  address: '127.0.0.1:$IM_TLS'
  protocol: auto
  tls: {certificates: [{certFile: $WORK/cert.pem, keyFile: $WORK/key.pem}]}
  filters: [{name: router}]
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: bench-model}
spec: {endpoints: [{address: '127.0.0.1:$MOCK'}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: resnet}
spec: {protocol: open-inference, upstreamProtocol: http2, endpoints: [{address: '127.0.0.1:$GRPC'}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: h2-origin}
spec: {upstreamModel: bench-model, upstreamProtocol: http2, endpoints: [{address: '127.0.0.1:$NG_ORIGIN'}]}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: h2-origin}
spec: {match: {headers: [{name: x-origin, value: h2}]}, model: h2-origin}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: oip}
spec: {match: {pathPrefix: /inference.GRPCInferenceService/}}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: api}
spec: {match: {pathPrefix: /v1/}}
YAML
taskset -c "$PROXY_CPU" "$BIN/proxy/infermesh-proxy" --config "$WORK/config.yaml" --admin "127.0.0.1:$IM_ADMIN" \
  --workers 1 --log-level warn >"$WORK/im.log" 2>&1 &
pids+=($!)

NG_H2C=$(free_port); NG_TLS=$(free_port)
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
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
  http2_max_concurrent_streams 128;
  keepalive_requests 10000000;  # no GOAWAY after 1000 requests mid-run
  upstream mock { server 127.0.0.1:$MOCK; keepalive 128; }
  # An HTTP/2 origin: a fixed chat completion, no upstream.
  server {
    listen 127.0.0.1:$NG_ORIGIN http2;
    location / {
      default_type application/json;
      return 200 '{"id":"x","object":"chat.completion","model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}';
    }
  }
  server {
    listen 127.0.0.1:$NG_H2C http2;
    listen 127.0.0.1:$NG_TLS ssl http2;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_session_cache off;
    ssl_session_tickets off;
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
pids+=($!)
wait_port "$IM_H2C"; wait_port "$IM_TLS"; wait_port "$NG_H2C"; wait_port "$NG_TLS"; wait_port "$NG_ORIGIN"

printf '%s' '{"model":"bench-model","messages":[{"role":"user","content":"benchmark"}]}' >"$WORK/chat.json"
# ModelInferRequest{model_name: "resnet", id: "x"} in a gRPC frame.
printf '\x00\x00\x00\x00\x0b\x0a\x06resnet\x1a\x01x' >"$WORK/infer.bin"

# h2load_rps ARGS... -> requests/s ("-" when any request failed)
h2load_rps() {
  local out
  out=$(taskset -c "$LOAD_CPU" h2load -D "$DURATION" "$@" 2>&1)
  if ! grep -q " 0 failed, 0 errored" <<<"$out"; then echo "-"; return; fi
  awk '/^finished in/{gsub(",",""); print int($4)}' <<<"$out"
}
# handshakes PORT -> new TLS connections per second
handshakes() {
  taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$1" -new -time "$DURATION" 2>/dev/null |
    awk '/connections in [0-9.]+ real seconds/{printf "%d", $1/$4}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="-"||b=="-"||b==0) print "-"; else printf "%.2f", a/b }'; }

H2=(-c 8 -m 16 -d "$WORK/chat.json" -H 'content-type: application/json')
im_h2c=$(h2load_rps "${H2[@]}" "http://127.0.0.1:$IM_H2C/v1/chat/completions")
ng_h2c=$(h2load_rps "${H2[@]}" "http://127.0.0.1:$NG_H2C/v1/chat/completions")
direct_h1=$(h2load_rps --h1 -c 8 -d "$WORK/chat.json" -H 'content-type: application/json' "http://127.0.0.1:$MOCK/v1/chat/completions")
im_h2up=$(h2load_rps "${H2[@]}" -H 'x-origin: h2' "http://127.0.0.1:$IM_H2C/v1/chat/completions")
direct_h2up=$(h2load_rps "${H2[@]}" "http://127.0.0.1:$NG_ORIGIN/v1/chat/completions")
GRPC_ARGS=(-c 8 -m 16 -d "$WORK/infer.bin" -H 'content-type: application/grpc' -H 'te: trailers')
im_grpc=$(h2load_rps "${GRPC_ARGS[@]}" "http://127.0.0.1:$IM_H2C/inference.GRPCInferenceService/ModelInfer")
direct_grpc=$(h2load_rps "${GRPC_ARGS[@]}" "http://127.0.0.1:$GRPC/inference.GRPCInferenceService/ModelInfer")
im_tls=$(h2load_rps "${H2[@]}" "https://127.0.0.1:$IM_TLS/v1/chat/completions")
ng_tls=$(h2load_rps "${H2[@]}" "https://127.0.0.1:$NG_TLS/v1/chat/completions")
im_hs=$(handshakes "$IM_TLS"); ng_hs=$(handshakes "$NG_TLS")

echo "| case | infermesh | other | ratio |"
echo "|---|---|---|---|"
echo "| h2c req/s (other: nginx), HTTP/1.1 upstream | $im_h2c | $ng_h2c | $(ratio "$im_h2c" "$ng_h2c") |"
echo "| h2c req/s (other: the HTTP/1.1 upstream alone, h2load --h1) | $im_h2c | $direct_h1 | $(ratio "$im_h2c" "$direct_h1") |"
echo "| h2c req/s, HTTP/2 upstream (other: that upstream alone) | $im_h2up | $direct_h2up | $(ratio "$im_h2up" "$direct_h2up") |"
echo "| gRPC unary req/s (other: direct to the server) | $im_grpc | $direct_grpc | $(ratio "$im_grpc" "$direct_grpc") |"
echo "| HTTPS h2 req/s (other: nginx) | $im_tls | $ng_tls | $(ratio "$im_tls" "$ng_tls") |"
echo "| new TLS handshakes/s (other: nginx) | $im_hs | $ng_hs | $(ratio "$im_hs" "$ng_hs") |"
echo
echo "(h2load -c 8 -m 16 for ${DURATION}s per case; one worker each on CPU $PROXY_CPU; load on CPU $LOAD_CPU)"
