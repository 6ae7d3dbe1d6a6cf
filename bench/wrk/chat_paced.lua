-- Non-streaming chat at a paced rate: each connection waits 2 ms between
-- requests, so 4 connections give a moderate, steady load for latency.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Write one short sentence about proxies."}]}'
function delay()
  return 2
end
