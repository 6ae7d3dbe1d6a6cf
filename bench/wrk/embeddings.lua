-- Non-streaming request: small JSON body, small JSON answer.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"text-embedding-small","input":"hello world"}'
