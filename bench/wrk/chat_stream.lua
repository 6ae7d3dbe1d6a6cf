-- Streaming chat completion (SSE, 8 events plus usage and [DONE]).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Stream one short sentence."}]}'
