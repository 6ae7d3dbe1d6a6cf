#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ from the inputs
the unit and integration tests use (string literals pulled from the test
sources, the YAML under deploy/) plus a few hand-built cases. The output is
committed; run this again when the tests gain interesting inputs. The xDS
seeds are binary and written at run time by the target itself
(tests/fuzz/run.sh)."""

import hashlib, pathlib, re, struct

root = pathlib.Path(__file__).resolve().parents[2]
out = root / "tests/fuzz/corpus"


def save(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def literals(path, pattern):
    text = (root / path).read_text()
    for m in re.finditer(pattern, text):
        yield bytes(m.group(1), "utf-8").decode("unicode_escape")


# JSON bodies: a model-length byte, a new model name, the body.
for body in set(literals("tests/unit/filters/router/model_extractor_test.cc", r'R"\((.*?)\)"')):
    save("model_extractor_fuzz", "\x0a" + "real-model" + body)
    save("model_extractor_fuzz", "\x05" + 'a"b\\c' + body)

# gRPC bodies: a model-length byte, a name, one framed message.
def varint(n):
    b = b""
    while n >= 0x80:
        b += bytes([(n & 0x7F) | 0x80]); n >>= 7
    return b + bytes([n])

def field(num, wt, payload):
    tag = varint((num << 3) | wt)
    return tag + (varint(len(payload)) + payload if wt == 2 else payload)

def frame(msg, flag=0):
    return bytes([flag]) + struct.pack(">I", len(msg)) + msg

msgs = [
    field(1, 2, b"llama3") + field(2, 2, b"1") + field(3, 2, b"req-1"),
    field(2, 2, b"1") + field(1, 2, b"resnet") + field(5, 2, field(1, 2, b"input0")),
    field(1, 2, b"a") + field(1, 2, b"b"),
    field(1, 0, varint(7)) + field(4, 1, b"\0" * 8) + field(6, 5, b"\0" * 4),
    b"",
]
for m in msgs:
    save("grpc_message_fuzz", b"\x04" + b"real" + frame(m))
save("grpc_message_fuzz", b"\x00" + frame(msgs[0], 1))
save("grpc_message_fuzz", b"\x00" + frame(msgs[0]) + frame(msgs[1]))
for t in ["100m", "5S", "1H", "30u", "99999999n", "2M"]:
    save("grpc_message_fuzz", b"\x00" + t.encode())

# ORCA headers.
for h in ["TEXT named_metrics.queue_depth=12, named_metrics.kv_cache_utilization=0.9",
          "TEXT cpu_utilization=0.5", "queue_depth=3,kv_cache_usage_perc=0.25",
          "num_requests_waiting=7", "TEXT named_metrics.kv_cache_utilization=1.5"]:
    save("orca_load_report_fuzz", h)

# Request targets: an options byte, then the target.
targets = set(literals("tests/unit/proxy/common/path_normalizer_test.cc", r'(?:norm|normalizeTarget)\("((?:[^"\\]|\\.)*)"'))
targets |= {"http://host:8080/v1/chat?x=1", "/a//b/../c%2Fd%5c", "/v1/%2e%2e/x?q=%zz"}
for t in targets:
    for opt in (b"\x01", b"\x02", b"\x05"):
        save("path_normalizer_fuzz", opt + t.encode("utf-8", "surrogateescape"))

# SPIFFE IDs and allow-list entries.
ids = set(literals("tests/unit/proxy/common/spiffe_id_test.cc", r'"(spiffe:[^"]*)"'))
for i in ids:
    save("spiffe_id_fuzz", i)
    save("spiffe_id_fuzz", i + "\0spiffe://td/ns/")
save("spiffe_id_fuzz", 'By=spiffe://td/a;URI="x,y"')

# JSON string escaping.
for s in set(literals("tests/unit/proxy/common/json_string_test.cc", r'"((?:[^"\\]|\\.)*)"')):
    save("json_string_fuzz", s)
save("json_string_fuzz", b"ok \xff\xfe \xe2\x82\xac \xed\xa0\x80 \x7f \x01")

# YAML: every config under deploy/, and each document on its own.
for y in sorted(root.glob("deploy/**/*.yaml")):
    text = y.read_text()
    save("yaml_config_fuzz", text)
    for doc in text.split("\n---\n"):
        save("yaml_config_fuzz", doc)

# HTTP/1.1: a settings byte (read size, limits), then the client's bytes.
body = '{"model":"llama3","messages":[{"role":"user","content":"hi"}]}'
reqs = [
    f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n{body}",
    f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{len(body):x};e=1\r\n{body}\r\n0\r\ntrailer: t\r\n\r\n",
    f"POST /v1/chat/completions HTTP/1.0\r\ncontent-length: {len(body)}\r\n\r\n{body}",
    "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\nGET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    "GET / HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n b\r\n\r\n",
    "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\nabc",
    "GET http://x/v1/models HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n",
    "POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\nhi",
]
for r in reqs:
    for settings in (b"\x7f", b"\x00", b"\x87"):
        save("http1_request_fuzz", settings + r.encode())

# JWT: a token, then NUL and a JWKS. The signatures and keys here are
# stand-ins of the right sizes; tokens signed by real keys, with the JWKS
# that verifies them, are written at run time by the target itself.
import base64, json

def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")

def filler(n, seed):
    return bytes((i * 7 + seed) % 256 for i in range(n))

def jws(header, payload, siglen):
    return b64u(header.encode()) + b"." + b64u(payload.encode()) + b"." + b64u(filler(siglen, siglen))

claims = '{"iss":"https://issuer.test","sub":"u","aud":"api","exp":2000000000,"iat":1700000000,"tenant":"acme","groups":["a","b"]}'
headers = [
    ('{"alg":"RS256","typ":"JWT","kid":"rsa"}', 256), ('{"alg":"ES256","typ":"JWT","kid":"ec"}', 64),
    ('{"alg":"EdDSA","kid":"ed"}', 64), ('{"alg":"EdDSA"}', 64), ('{"alg":"RS256","typ":"at+jwt","kid":"rsa"}', 512),
    ('{"alg":"none","typ":"JWT"}', 0), ('{"alg":"HS256","typ":"JWT","kid":"rsa"}', 32),
    ('{"alg":"ES256","kid":"ec","crit":["exp"]}', 64), ('{"alg":"ES256","alg":"none"}', 64),
    ('{"alg":"ES256","kid":"ec","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}', 64),
]
payloads = [claims, '{"iss":"https://issuer.test","aud":["x","api"],"exp":2000000000.5,"nbf":1600000000}',
            '{"iss":"https://issuer.test","exp":"soon","obj":{"a":[1,2]}}', '[]', '{"iss":"a","iss":"b"}']
ec_jwk = {"kty": "EC", "crv": "P-256", "x": b64u(filler(32, 1)).decode(), "y": b64u(filler(32, 2)).decode(),
          "alg": "ES256", "use": "sig", "kid": "ec"}
rsa_jwk = {"kty": "RSA", "n": b64u(b"\xc3" + filler(255, 3)).decode(), "e": "AQAB", "alg": "RS256", "kid": "rsa"}
ed_jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u(filler(32, 4)).decode(), "kid": "ed"}
jwks_docs = [
    json.dumps({"keys": [ec_jwk, rsa_jwk, ed_jwk]}),
    json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hs"}, dict(rsa_jwk, use="enc"),
                         dict(ec_jwk, crv="P-384"), dict(ed_jwk, key_ops=["sign"]), dict(ec_jwk, alg="RS256"), "x", []]}),
    '{"keys":[]}', '{"keys":{}}', '[]', '{"keys":[{"kty":"EC","kty":"RSA"}]}',
]
for i, (h, siglen) in enumerate(headers):
    for j, p in enumerate(payloads):
        t = jws(h, p, siglen)
        save("jwt_fuzz", t)
        save("jwt_fuzz", t + b"\0" + jwks_docs[(i + j) % len(jwks_docs)].encode())
for bad in [b"a.b", b"a.b.c.d", b"..", b"eyJhbGciOiJFUzI1NiJ9=.e30.", b"eyJhbGciOiJFUzI1NiJ9.e30+.AA"]:
    save("jwt_fuzz", bad)

# Trace context: traceparent NUL tracestate NUL body.
for parent, state, body in [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
     '{"model":"chat","user":"ana","seed":7,"n":true}'),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future", "", '{"user":{"nested":1}}'),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "a=b", "not json"),
    ("ff-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", "x" * 600, "[]"),
]:
    save("trace_context_fuzz", parent + "\0" + state + "\0" + body)

# Responses: a content-type byte (0 SSE, 1 NDJSON, 2 JSON), chunks cut at 0xFF.
sse = ('data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n\xff'
       'data: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":5,'
       '"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}\n\n\xffdata: [DONE]\n\n')
anthropic = ('event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":9,'
             '"cache_read_input_tokens":4}}}\r\n\r\nevent: content_block_delta\ndata: {"type":"content_block_delta",'
             '"delta":{"type":"text_delta","text":"hi"}}\r\n\r\n\xffevent: message_delta\ndata: {"type":"message_delta",'
             '"usage":{"output_tokens":3}}\r\n\r\n')
for kind, body in [(0, sse), (0, anthropic), (1, '{"response":"a","done":false}\n{"done":true,"prompt_eval_count":3}\n'),
                   (2, '{"choices":[{"message":{"role":"assistant","content":"x"}}],"usage":{"prompt_tokens":3,'
                       '"completion_tokens":1,"completion_tokens_details":{"reasoning_tokens":1}}}')]:
    save("response_events_fuzz", bytes([kind]) + body.encode("latin-1"))
