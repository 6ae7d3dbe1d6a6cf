#!/usr/bin/env bash
# Instructions per proxied request under callgrind, for two proxy binaries
# in one run (instruction counts are stable where wall-clock numbers on a
# shared machine are not).
#
#   bench/callgrind_ab.sh OLD_PROXY [NEW_PROXY]   (NEW defaults to this build's)
#
# One worker, router-only config, a mock model server on loopback; N
# sequential keep-alive requests, half plain (a 620-byte JSON answer) and
# half streamed (8 SSE chunks). Each binary runs twice (N1 and N2 requests)
# and the difference divided by N2 - N1 is the per-request cost, so start-up
# and shutdown cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
OLD="${1:?usage: bench/callgrind_ab.sh OLD_PROXY [NEW_PROXY]}"
NEW="${2:-$BIN/proxy/infermesh-proxy}"
N1="${N1:-40}"
N2="${N2:-240}"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

MOCK=$(free_port)
"$BIN/bench/infermesh-mock-model" --port "$MOCK" --name m --models chat-model --chunks 8 >"$WORK/mock.log" 2>&1 &
pids+=($!)
wait_port "$MOCK"
PLAIN='{"model":"chat-model","messages":[{"role":"user","content":"hi"}]}'
STREAM='{"model":"chat-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'

# Instructions the proxy ran while serving `n` requests (plus start-up).
run() {  # binary n
  local bin=$1 n=$2 port out
  port=$(free_port)
  router_config "$WORK/cfg" "$port" "$MOCK" chat-model
  out="$WORK/callgrind.$RANDOM.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --config "$WORK/cfg" --workers 1 \
    --admin 127.0.0.1:0 --drain-timeout 1 >"$WORK/proxy.log" 2>&1 &
  local vg=$!
  wait_port "$port"
  local urls=()
  for _ in $(seq 1 $((n / 2))); do urls+=("http://127.0.0.1:$port/v1/chat/completions"); done
  curl -s -o /dev/null -H 'content-type: application/json' -d "$PLAIN" "${urls[@]}" >/dev/null
  curl -s -o /dev/null -H 'content-type: application/json' -d "$STREAM" "${urls[@]}" >/dev/null
  kill -TERM "$vg"
  wait "$vg" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

per_request() {  # binary
  local a b
  a=$(run "$1" "$N1")
  b=$(run "$1" "$N2")
  echo $(( (b - a) / (N2 - N1) ))
}

old=$(per_request "$OLD")
new=$(per_request "$NEW")
echo "instructions per request: old $old, new $new ($(awk -v o="$old" -v n="$new" 'BEGIN{printf "%+.1f%%", (n-o)*100/o}'))"
