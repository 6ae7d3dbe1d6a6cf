// What a client can make reach a model server, checked at a recording
// upstream that keeps the exact bytes it gets: paths, internal headers,
// model names in bodies, over HTTP/1.1, HTTP/2 (curl) and gRPC.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <sstream>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/recording_upstream.h"

namespace infermesh::testing {
namespace {

using Recorded = RecordingUpstream::Request;

class RoutingIntegrityTest : public ProxyTest {
 protected:
  RecordingUpstream http1{RecordingUpstream::Protocol::Http1};
  RecordingUpstream http2{RecordingUpstream::Protocol::Http2};

  void start(const std::string& listener_extra = "") {
    std::ostringstream y;
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
      << "  address: 127.0.0.1:0\n  protocol: auto\n  filters: [{name: router}]\n"
      << "  accessLog: {path: " << dir.path() << "/access.log}\n"
      << listener_extra
      << doc("Model", "cheap", "{upstreamModel: cheap-upstream, capabilities: [chat], pricing: {inputPer1kTokens: 0.001, outputPer1kTokens: 0.001}, endpoints: [{address: '" +
                                   http1.address() + "'}]}")
      << doc("Model", "premium", "{capabilities: [chat, code], pricing: {inputPer1kTokens: 0.01, outputPer1kTokens: 0.03}, endpoints: [{address: '" + http1.address() + "'}]}")
      << doc("Model", "oip", "{protocol: open-inference, upstreamProtocol: http2, endpoints: [{address: '" +
                                 http2.address() + "'}]}")
      << doc("Route", "grpc", "{match: {pathPrefix: /inference.GRPCInferenceService/}, model: oip}")
      << doc("Route", "auto", "{order: 1, match: {pathPrefix: /v1/, headers: [{name: x-case, value: auto}]}, "
                              "autoSelect: {capabilities: [chat, code]}}")
      << doc("Route", "v1", "{match: {pathPrefix: /v1/}, model: cheap}");
    startProxy(y.str());
  }
  // POST `target` over HTTP/1.1 exactly as written.
  HttpResponse post(const std::string& target, std::map<std::string, std::string> headers = {},
                    const std::string& body = chatBody("anything", false)) {
    return httpRequest(port, "POST", target, body, headers);
  }
  // curl over cleartext HTTP/2 (prior knowledge), path as written; the status.
  std::string h2post(const std::string& path, const std::string& curl_args = "") {
    dir.write("body.json", chatBody("anything", false));
    return runCommand("curl -sS --max-time 10 --http2-prior-knowledge --path-as-is -o /dev/null -w '%{http_code}' " +
                      curl_args + " -H 'content-type: application/json' --data-binary @" + dir.path() +
                      "/body.json 'http://127.0.0.1:" + std::to_string(port) + path + "'")
        .out;
  }
  std::vector<std::string> accessLog(std::size_t lines) {
    std::vector<std::string> out;
    eventually([&] {
      out.clear();
      std::ifstream in(dir.path() + "/access.log");
      for (std::string line; std::getline(in, line);) out.push_back(line);
      return out.size() >= lines;
    });
    return out;
  }
};

// The top-level length-delimited fields numbered `field` of a protobuf message.
std::vector<std::string> protoStrings(std::string_view msg, unsigned field) {
  std::vector<std::string> out;
  auto varint = [&](std::size_t& i) {
    std::uint64_t v = 0;
    for (int shift = 0; i < msg.size(); shift += 7) {
      const auto b = static_cast<unsigned char>(msg[i++]);
      v |= std::uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) break;
    }
    return v;
  };
  for (std::size_t i = 0; i < msg.size();) {
    const auto tag = varint(i);
    switch (tag & 7) {
      case 0: varint(i); break;
      case 1: i += 8; break;
      case 5: i += 4; break;
      case 2: {
        const auto len = varint(i);
        if ((tag >> 3) == field) out.emplace_back(msg.substr(i, len));
        i += len;
        break;
      }
      default: return out;
    }
  }
  return out;
}

std::string protoString(unsigned field, const std::string& value) {
  return std::string(1, static_cast<char>(field << 3 | 2)) + static_cast<char>(value.size()) + value;
}

TEST_F(RoutingIntegrityTest, PathsAreNormalisedBeforeRoutesMatchAndAsForwarded) {
  start();
  // Dot segments, plain or encoded, leave /v1/: no route takes them.
  for (const char* escape : {"/v1/chat/completions/../../../internal/reset", "/v1/%2e%2e/internal/reset",
                             "/v1/%2E%2E/%2e%2e/internal/reset"}) {
    auto r = post(escape);
    EXPECT_EQ(r.status, 404) << escape;
    EXPECT_TRUE(hasCode(r, "no_route")) << r.body;
  }
  // Encoded slashes and backslashes are refused.
  for (const char* bad : {"/v1/chat%2F..%2F..%2Finternal", "/v1/chat%5c..%5cinternal", "/v1/..\\internal"}) {
    auto r = post(bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_TRUE(hasCode(r, "bad_path")) << r.body;
  }
  EXPECT_EQ(http1.received(), 0u);
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"bad_path\""), 3);
  // What does pass reaches the model server normalised, in origin-form.
  ASSERT_EQ(post("/v1//chat/./completions").status, 200);
  ASSERT_EQ(post("http://elsewhere.example/v1/x/../chat/completions?a=1").status, 200);
  auto got = http1.waitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].target, "/v1/chat/completions");
  EXPECT_TRUE(got[0].head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n")) << got[0].head;
  EXPECT_EQ(got[1].target, "/v1/chat/completions?a=1");
}

TEST_F(RoutingIntegrityTest, PathsAreNormalisedOverHttp2Too) {
  start();
  EXPECT_EQ(h2post("/v1/%2e%2e/internal/reset"), "404");
  EXPECT_EQ(h2post("/v1/chat/completions/../../../internal/reset"), "404");
  EXPECT_EQ(h2post("/v1/chat%2Fcompletions"), "400");
  EXPECT_EQ(http1.received(), 0u);
  EXPECT_EQ(h2post("/v1//chat/%63ompletions"), "200");
  auto got = http1.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].target, "/v1/chat/completions");
}

TEST_F(RoutingIntegrityTest, AModelsUpstreamHeadersReplaceTheClientsOverBothProtocols) {
  const std::string headers = "upstreamHeaders: {anthropic-version: '2023-06-01', X-Provider: set-by-mesh}";
  start(doc("Model", "provider", "{" + headers + ", endpoints: [{address: '" + http1.address() + "'}]}") +
        doc("Model", "provider-h2", "{" + headers + ", upstreamProtocol: http2, endpoints: [{address: '" +
                                        http2.address() + "'}]}") +
        doc("Route", "provider", "{order: 2, match: {pathPrefix: /v1/, headers: [{name: x-case, value: p1}]}, model: provider}") +
        doc("Route", "provider-h2",
            "{order: 2, match: {pathPrefix: /v1/, headers: [{name: x-case, value: p2}]}, model: provider-h2}"));
  for (const char* c : {"p1", "p2"})
    ASSERT_EQ(post("/v1/chat/completions", {{"x-case", c}, {"x-provider", "from-client"}}).status, 200) << c;
  ASSERT_EQ(post("/v1/chat/completions", {{"x-provider", "from-client"}}).status, 200);  // another model: untouched
  const auto h1 = http1.waitFor(2);
  const auto h2 = http2.waitFor(1);
  ASSERT_EQ(h1.size(), 2u);
  ASSERT_EQ(h2.size(), 1u);
  for (const auto* g : {&h1[0], &h2[0]}) {
    EXPECT_EQ(g->header("anthropic-version"), "2023-06-01") << g->head;
    EXPECT_EQ(g->header("x-provider"), "set-by-mesh") << g->head;
    EXPECT_EQ(g->count("x-provider"), 1) << g->head;
  }
  EXPECT_EQ(h1[1].header("x-provider"), "from-client");
  EXPECT_EQ(h1[1].count("anthropic-version"), 0);
}

TEST_F(RoutingIntegrityTest, UpstreamHeadersTheProxyOwnsAreRefused) {
  dir.write("config.yaml",
            "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec: {address: '127.0.0.1:0', "
            "filters: [{name: router}]}\n" +
                doc("Model", "m",
                    "{upstreamHeaders: {Host: a, content-length: '3', 'bad name': x, x-api-key: k}, "
                    "upstreamCredential: {header: x-api-key, valueFile: /dev/null}, endpoints: [{address: '127.0.0.1:1'}]}"));
  const auto r = runCommand(bin_dir + "/controlplane/infermeshctl validate " + dir.path() + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("spec.upstreamHeaders.Host: is set by the proxy itself"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("spec.upstreamHeaders.content-length: is set by the proxy itself"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("spec.upstreamHeaders.bad name: must be a header name"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("spec.upstreamHeaders.x-api-key: is the upstreamCredential's header"), std::string::npos) << r.out;
}

TEST_F(RoutingIntegrityTest, ExplainShowsEachArmOfASplitWithItsOwnEndpoints) {
  dir.write("config.yaml",
            "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec: {address: '127.0.0.1:0', "
            "filters: [{name: router}]}\n" +
                doc("Model", "stable", "{endpoints: [{address: '10.0.0.1:8000', region: eu}]}") +
                doc("Model", "canary", "{upstreamModel: llama-next, endpoints: [{address: '10.0.0.2:8000'}, "
                                       "{address: '10.0.0.3:8000'}]}") +
                doc("Route", "canary", "{match: {pathPrefix: /v1/}, split: [{model: stable, weight: 90}, "
                                       "{model: canary, weight: 10}]}"));
  const auto r = runCommand(bin_dir + "/controlplane/infermeshctl explain --config-dir " + dir.path() +
                            " --model anything --path /v1/chat/completions 2>&1");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto stable = r.out.find("arm stable");
  const auto canary = r.out.find("arm canary");
  ASSERT_NE(stable, std::string::npos) << r.out;
  ASSERT_NE(canary, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weight 90 of 100 (90.0% of requests)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weight 10 of 100 (10.0% of requests), sent upstream as \"llama-next\""), std::string::npos)
      << r.out;
  // Each arm's endpoints under it, and no single-model result.
  const auto ep1 = r.out.find("10.0.0.1:8000");
  const auto ep2 = r.out.find("10.0.0.2:8000");
  EXPECT_TRUE(stable < ep1 && ep1 < canary) << r.out;
  EXPECT_GT(ep2, canary) << r.out;
  EXPECT_NE(r.out.find("region=eu"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("-> model"), std::string::npos) << r.out;
}

TEST_F(RoutingIntegrityTest, InternalHeadersFromClientsNeverReachTheModel) {
  start();
  ASSERT_EQ(post("/v1/chat/completions", {{"x-infermesh-shadow", "1"}, {"X-Infermesh-Regions", "eu"}}).status, 200);
  EXPECT_EQ(h2post("/v1/chat/completions", "-H 'x-infermesh-shadow: 1'"), "200");
  // The capability header is a preference only a trusted peer, or a listener
  // that allows it, may give: here the route's default capability serves.
  auto r = post("/v1/chat/completions", {{"x-case", "auto"}, {"x-infermesh-capability", "code"}},
                chatBody("auto", false));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["x-infermesh-model"], "cheap");
  auto got = http1.waitFor(3);
  ASSERT_EQ(got.size(), 3u);
  for (const auto& g : got) {
    EXPECT_EQ(g.count("x-infermesh-shadow"), 0) << g.head;
    EXPECT_EQ(g.count("x-infermesh-regions"), 0) << g.head;
    EXPECT_EQ(g.count("x-infermesh-capability"), 0) << g.head;
  }
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"untrusted_header\""), 3);
}

TEST_F(RoutingIntegrityTest, ListenersNameThePeersTheyTrust) {
  start("  trustedPeers: {sources: [127.0.0.1/32]}\n");
  ASSERT_EQ(post("/v1/chat/completions", {{"x-infermesh-shadow", "1"}}).status, 200);
  auto got = http1.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].header("x-infermesh-shadow"), "1");

  start("  clientHeaders: [x-infermesh-capability]\n");
  auto r = post("/v1/chat/completions", {{"x-case", "auto"}, {"x-infermesh-capability", "code"}, {"x-infermesh-shadow", "1"}},
                chatBody("auto", false));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["x-infermesh-model"], "premium");
  got = http1.waitFor(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].count("x-infermesh-shadow"), 0);
}

TEST_F(RoutingIntegrityTest, TheForwardedBodyCarriesExactlyTheRoutedModel) {
  start();
  for (const char* body : {R"({"model":"cheap","model":"premium","messages":[]})",
                           R"({"model":"cheap","\u006dodel":"premium","messages":[]})"}) {
    auto r = post("/v1/chat/completions", {}, body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_TRUE(hasCode(r, "duplicate_model")) << r.body;
  }
  EXPECT_EQ(http1.received(), 0u);
  ASSERT_EQ(post("/v1/chat/completions", {}, R"({"model":"premium","messages":[{"role":"user","content":"model"}]})").status,
            200);
  auto got = http1.waitFor(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, R"({"model":"cheap-upstream","messages":[{"role":"user","content":"model"}]})");
}

TEST_F(RoutingIntegrityTest, TheBodyFormatComesFromTheModelNotTheClient) {
  start();
  // JSON labelled as gRPC on an OpenAI route: refused, not forwarded unread.
  HttpConnection c(port);
  const std::string body = R"({"model":"premium","messages":[]})";
  c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc\r\ncontent-length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body);
  // The client said gRPC, so it hears gRPC: INVALID_ARGUMENT in a trailers-only answer.
  auto r = c.read();
  EXPECT_EQ(r.headers["grpc-status"], "3") << r.status << " " << r.body;
  EXPECT_NE(r.headers["grpc-message"].find("OpenAI-style JSON"), std::string::npos) << r.headers["grpc-message"];
  const auto h2 = runCommand("curl -sS --max-time 10 --http2-prior-knowledge -o /dev/null -D - -H 'content-type: "
                             "application/grpc' --data-binary '" + body + "' http://127.0.0.1:" + std::to_string(port) +
                             "/v1/chat/completions").out;
  EXPECT_NE(h2.find("grpc-status: 3"), std::string::npos) << h2;
  // A gRPC call sent to a JSON model is refused the same way.
  EXPECT_EQ(post("/inference.GRPCInferenceService/ModelInfer", {}, body).status, 415);
  EXPECT_EQ(http1.received() + http2.received(), 0u);
}

TEST_F(RoutingIntegrityTest, AGrpcModelNameGivenTwiceReachesTheServerOnce) {
  start();
  // model_name (field 1) twice: a protobuf parser upstream would keep the last.
  const std::string message = protoString(1, "resnet") + protoString(2, "req-1") + protoString(1, "premium");
  std::string frame(5, '\0');
  frame[4] = static_cast<char>(message.size());
  dir.write("frame.bin", frame + message);
  auto out = runCommand("curl -sS --max-time 10 --http2-prior-knowledge -o /dev/null -D - -H 'content-type: application/grpc' "
                        "-H 'te: trailers' --data-binary @" + dir.path() + "/frame.bin http://127.0.0.1:" +
                        std::to_string(port) + "/inference.GRPCInferenceService/ModelInfer").out;
  auto got = http2.waitFor(1);
  ASSERT_EQ(got.size(), 1u) << out;
  ASSERT_GE(got[0].body.size(), 5u);
  const auto names = protoStrings(std::string_view(got[0].body).substr(5), 1);
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0], "oip");
  EXPECT_EQ(protoStrings(std::string_view(got[0].body).substr(5), 2), std::vector<std::string>{"req-1"});
}

TEST_F(RoutingIntegrityTest, EveryAccessLogLineIsJsonAndNamesTheServedModel) {
  start();
  HttpConnection c(port);
  c.sendRaw("GET /v1/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n");
  EXPECT_EQ(c.read().status, 400);
  ASSERT_EQ(post("/v1/chat/completions", {}, chatBody("what-i-asked", false)).status, 200);
  auto lines = accessLog(2);
  ASSERT_EQ(lines.size(), 2u);
  for (const auto& line : lines) {
    google::protobuf::Struct parsed;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(line, &parsed).ok()) << line;
  }
  EXPECT_NE(lines[1].find(R"("model":"what-i-asked","served_model":"cheap")"), std::string::npos) << lines[1];
}

}  // namespace
}  // namespace infermesh::testing
