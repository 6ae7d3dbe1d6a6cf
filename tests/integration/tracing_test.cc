// Traces end to end (docs/observability.md#traces): W3C trace context
// accepted, created and propagated to the model server with each
// attempt's own span, and OTLP/HTTP batches that a test receiver decodes
// into the request's span and one span per attempt.

#include <algorithm>
#include <map>
#include <sstream>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"
#include "tests/integration/proxy_fixture.h"
#include "tests/support/recording_upstream.h"

namespace infermesh::testing {
namespace {

namespace otlp = opentelemetry::proto;

constexpr const char* kTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr const char* kCallerSpan = "00f067aa0ba902b7";

std::string hex(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (unsigned char c : bytes) {
    s += kHex[c >> 4];
    s += kHex[c & 0xF];
  }
  return s;
}

// A decoded span with its attributes as text, for assertions.
struct Span {
  std::string trace_id, span_id, parent_id, name;
  int kind = 0;
  bool error = false;
  std::uint64_t start = 0, end = 0;
  std::map<std::string, std::string> attrs;
  // An attribute's value, or "<none>".
  std::string attr(const std::string& key) const {
    auto it = attrs.find(key);
    return it == attrs.end() ? "<none>" : it->second;
  }
};

std::vector<Span> decode(const std::vector<RecordingUpstream::Request>& posts, std::string* service = nullptr) {
  std::vector<Span> out;
  for (const auto& p : posts) {
    EXPECT_EQ(p.method, "POST");
    EXPECT_EQ(p.target, "/v1/traces");
    EXPECT_EQ(p.header("content-type"), "application/x-protobuf");
    otlp::collector::trace::v1::ExportTraceServiceRequest req;
    EXPECT_TRUE(req.ParseFromString(p.body));
    for (const auto& rs : req.resource_spans()) {
      for (const auto& kv : rs.resource().attributes())
        if (kv.key() == "service.name" && service) *service = kv.value().string_value();
      for (const auto& ss : rs.scope_spans())
        for (const auto& s : ss.spans()) {
          Span d{hex(s.trace_id()), hex(s.span_id()), hex(s.parent_span_id()), s.name(), s.kind(),
                 s.status().code() == otlp::trace::v1::Status::STATUS_CODE_ERROR, s.start_time_unix_nano(),
                 s.end_time_unix_nano(), {}};
          for (const auto& kv : s.attributes()) {
            const auto& v = kv.value();
            d.attrs[kv.key()] = v.has_string_value() ? v.string_value()
                                : v.has_int_value()  ? std::to_string(v.int_value())
                                : v.has_bool_value() ? (v.bool_value() ? "true" : "false")
                                                     : std::to_string(v.double_value());
          }
          out.push_back(std::move(d));
        }
    }
  }
  return out;
}

class TracingTest : public ProxyTest {
 protected:
  static void SetUpTestSuite() {
    bin_dir = binariesDir();
    engine = startMock("tracing", {"--models", "chat", "--chunks", "4", "--chunk-delay-ms", "2"});
  }
  static void TearDownTestSuite() { engine.process.reset(); }
  static inline Mock engine;

  // A proxy whose telemetry filter sends spans to `collector`; `extra` is
  // more of the filter's tracing settings, `docs` more YAML documents.
  void start(const std::string& collector, const std::string& model_address, const std::string& extra = "",
             const std::string& docs = "") {
    std::ostringstream y;
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
      << "  address: 127.0.0.1:0\n"
      << "  filters: [{name: telemetry, config: {role: sidecar, tracing: {collector: '" << collector
      << "', flushInterval: 50ms, serviceName: edge-proxy" << extra << "}}}, {name: router}]\n"
      << doc("Model", "chat", "{endpoints: [{address: '" + model_address + "', region: eu-west}]}")
      << doc("Route", "v1", "{match: {pathPrefix: /v1/}}") << docs;
    startProxy(y.str());
  }
  HttpResponse send(const std::string& body, std::map<std::string, std::string> headers = {}) {
    headers.emplace("content-type", "application/json");
    return httpRequest(port, "POST", "/v1/chat/completions", body, headers);
  }
};

TEST_F(TracingTest, TheCallersTraceReachesTheModelServerUnderTheAttemptsSpan) {
  RecordingUpstream model, collector;
  start(collector.address(), model.address());
  const std::string parent = std::string("00-") + kTraceId + "-" + kCallerSpan + "-01";
  const auto r = send(chatBody("chat", false), {{"traceparent", parent}, {"tracestate", "vendor=abc,other=1"}});
  ASSERT_EQ(r.status, 200) << r.body;

  const auto forwarded = model.waitFor(1);
  ASSERT_EQ(forwarded.size(), 1u);
  const std::string tp = forwarded[0].header("traceparent");
  ASSERT_EQ(tp.size(), 55u) << tp;
  EXPECT_EQ(tp.substr(0, 36), std::string("00-") + kTraceId + "-");  // the same trace
  EXPECT_NE(tp.substr(36, 16), kCallerSpan);                         // under a span of this proxy
  EXPECT_EQ(tp.substr(52), "-01");
  EXPECT_EQ(forwarded[0].count("traceparent"), 1);
  EXPECT_EQ(forwarded[0].header("tracestate"), "vendor=abc,other=1");

  const auto posts = collector.waitFor(1);
  std::string service;
  const auto spans = decode(posts, &service);
  EXPECT_EQ(service, "edge-proxy");
  ASSERT_EQ(spans.size(), 2u);
  const auto server = std::find_if(spans.begin(), spans.end(), [](const Span& s) { return s.kind == 2; });
  const auto client = std::find_if(spans.begin(), spans.end(), [](const Span& s) { return s.kind == 3; });
  ASSERT_NE(server, spans.end());
  ASSERT_NE(client, spans.end());
  EXPECT_EQ(server->trace_id, kTraceId);
  EXPECT_EQ(server->parent_id, kCallerSpan);
  EXPECT_EQ(server->name, "chat chat");
  EXPECT_EQ(server->attrs.at("gen_ai.operation.name"), "chat");
  EXPECT_EQ(server->attrs.at("gen_ai.request.model"), "chat");
  EXPECT_EQ(server->attrs.at("gen_ai.response.model"), "chat");
  EXPECT_EQ(server->attrs.at("gen_ai.provider.name"), "openai");
  EXPECT_EQ(server->attrs.at("http.response.status_code"), "200");
  EXPECT_EQ(server->attrs.at("infermesh.route"), "v1");
  EXPECT_EQ(server->attrs.at("infermesh.attempts"), "1");
  EXPECT_EQ(server->attrs.count("gen_ai.input.messages"), 0u);  // no content unless a route opts in
  EXPECT_FALSE(server->error);
  // The attempt: the model server's parent, a child of the request's span.
  EXPECT_EQ(client->trace_id, kTraceId);
  EXPECT_EQ(client->span_id, tp.substr(36, 16));
  EXPECT_EQ(client->parent_id, server->span_id);
  EXPECT_EQ(client->attrs.at("server.address"), "127.0.0.1");
  EXPECT_EQ(client->attrs.at("server.port"), std::to_string(model.port()));
  EXPECT_EQ(client->attrs.at("infermesh.endpoint.region"), "eu-west");
  EXPECT_EQ(client->attrs.at("http.response.status_code"), "200");
  EXPECT_LE(server->start, client->start);
  EXPECT_LE(client->end, server->end);
}

TEST_F(TracingTest, ATraceIsStartedWhenTheCallerSentNone) {
  RecordingUpstream model, collector;
  start(collector.address(), model.address());
  // Also a malformed one: uppercase hex is not W3C's, so a new trace starts.
  for (const std::string bad : {"", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"}) {
    std::map<std::string, std::string> headers;
    if (!bad.empty()) headers["traceparent"] = bad;
    ASSERT_EQ(send(chatBody("chat", false), headers).status, 200);
  }
  const auto forwarded = model.waitFor(2);
  ASSERT_EQ(forwarded.size(), 2u);
  std::vector<std::string> traces;
  for (const auto& f : forwarded) {
    const std::string tp = f.header("traceparent");
    ASSERT_EQ(tp.size(), 55u) << tp;
    EXPECT_EQ(tp.substr(52), "-01");  // sampled: the default ratio is 1
    traces.push_back(tp.substr(3, 32));
  }
  EXPECT_NE(traces[0], traces[1]);
  EXPECT_NE(traces[1], "4bf92f3577b34da6a3ce929d0e0e4736");
  // Two root spans, each with its attempt.
  ASSERT_TRUE(eventually([&] { return decode(collector.waitFor(1, std::chrono::milliseconds(100))).size() >= 4; }));
  for (const auto& s : decode(collector.waitFor(1)))
    if (s.kind == 2) EXPECT_EQ(s.parent_id, "") << s.name;
}

TEST_F(TracingTest, UnsampledTracesArePropagatedButNotExported) {
  RecordingUpstream model, collector;
  start(collector.address(), model.address(), ", sampleRatio: 0");
  ASSERT_EQ(send(chatBody("chat", false)).status, 200);  // a new trace, ratio 0: not sampled
  ASSERT_EQ(send(chatBody("chat", false), {{"traceparent", std::string("00-") + kTraceId + "-" + kCallerSpan + "-00"}})
                .status,
            200);  // the caller did not sample it
  // The caller sampled this one: the caller's decision wins over the ratio.
  ASSERT_EQ(send(chatBody("chat", false), {{"traceparent", std::string("00-") + kTraceId + "-" + kCallerSpan + "-01"}})
                .status,
            200);
  const auto forwarded = model.waitFor(3);
  ASSERT_EQ(forwarded.size(), 3u);
  EXPECT_EQ(forwarded[0].header("traceparent").substr(52), "-00");
  EXPECT_EQ(forwarded[1].header("traceparent").substr(0, 36), std::string("00-") + kTraceId + "-");
  EXPECT_EQ(forwarded[1].header("traceparent").substr(52), "-00");
  // Only the sampled request's two spans arrive.
  const auto spans = decode(collector.waitFor(1));
  ASSERT_EQ(spans.size(), 2u);
  for (const auto& s : spans) EXPECT_EQ(s.trace_id, kTraceId);
  EXPECT_EQ(metricReaching("infermesh_tracing_spans_total", "outcome=\"exported\"", 2), 2);
}

TEST_F(TracingTest, RetriesAndFallbacksAreSpansOfTheirOwn) {
  RecordingUpstream model, collector;
  // "down" has one endpoint nobody listens on; its fallback is "chat".
  const int closed = [] {
    RecordingUpstream gone;
    return gone.port();
  }();
  start(collector.address(), model.address(), "",
        doc("Model", "down", "{endpoints: [{address: '127.0.0.1:" + std::to_string(closed) + "'}]}") +
            doc("Route", "with-fallback",
                "{order: 1, match: {pathPrefix: /v1/, headers: [{name: x-fallback}]}, model: down, "
                "fallbacks: [{model: chat, on: [connect_failure]}]}"));
  const auto r = send(chatBody("down", false), {{"x-fallback", "1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto spans = decode(collector.waitFor(1));
  ASSERT_EQ(spans.size(), 3u);
  std::vector<Span> attempts;
  for (const auto& s : spans)
    if (s.kind == 3) attempts.push_back(s);
  ASSERT_EQ(attempts.size(), 2u);
  std::sort(attempts.begin(), attempts.end(),
            [](const Span& a, const Span& b) { return a.attrs.at("infermesh.attempt") < b.attrs.at("infermesh.attempt"); });
  EXPECT_EQ(attempts[0].attrs.at("gen_ai.request.model"), "down");
  EXPECT_TRUE(attempts[0].error);
  EXPECT_EQ(attempts[0].attrs.at("error.type"), "upstream_unavailable");
  EXPECT_EQ(attempts[0].attrs.at("infermesh.fallback"), "false");
  EXPECT_EQ(attempts[1].attrs.at("gen_ai.request.model"), "chat");
  EXPECT_EQ(attempts[1].attrs.at("infermesh.fallback"), "true");
  EXPECT_FALSE(attempts[1].error);
  // The model server saw the second attempt's span as its parent.
  EXPECT_EQ(model.waitFor(1)[0].header("traceparent").substr(36, 16), attempts[1].span_id);
}

TEST_F(TracingTest, ARouteMayOptInToPromptsAndCompletions) {
  RecordingUpstream collector;
  const std::string content_route =
      doc("Route", "with-content",
          "{order: 1, match: {pathPrefix: /v1/, headers: [{name: x-content}]}, filters: [{name: telemetry, config: "
          "{role: sidecar, tracing: {collector: '" + collector.address() +
              "', flushInterval: 50ms, captureContent: true}}}]}");
  start(collector.address(), engine.address(), "", content_route);
  ASSERT_EQ(send(chatBody("chat", true), {{"x-content", "1"}}).status, 200);
  ASSERT_EQ(send(chatBody("chat", false), {{"x-content", "1"}}).status, 200);
  ASSERT_EQ(send(chatBody("chat", false)).status, 200);  // the listener's route: no content
  std::vector<Span> servers;
  ASSERT_TRUE(eventually([&] {
    servers.clear();
    for (const auto& s : decode(collector.waitFor(1, std::chrono::milliseconds(100))))
      if (s.kind == 2) servers.push_back(s);
    return servers.size() >= 3;
  }));
  int with_content = 0;
  for (const auto& s : servers) {
    const bool on = s.attr("infermesh.route") == "with-content";
    EXPECT_EQ(s.attrs.count("gen_ai.input.messages"), on ? 1u : 0u);
    EXPECT_EQ(s.attrs.count("gen_ai.output.messages"), on ? 1u : 0u);
    if (!on) continue;
    ++with_content;
    EXPECT_NE(s.attr("gen_ai.input.messages").find("\"role\":\"user\""), std::string::npos)
        << s.attr("gen_ai.input.messages");
    EXPECT_NE(s.attr("gen_ai.output.messages").find("\"role\":\"assistant\""), std::string::npos)
        << s.attr("gen_ai.output.messages");
    // Four output tokens: reported, or metered from a stream's deltas.
    EXPECT_EQ(s.attr("gen_ai.usage.output_tokens"), "4");
    if (s.attr("infermesh.stream") == "false") EXPECT_NE(s.attr("gen_ai.usage.input_tokens"), "<none>");
  }
  EXPECT_EQ(with_content, 2);
}

TEST_F(TracingTest, ACollectorThatIsDownCostsSpansNotRequests) {
  RecordingUpstream model;
  const int closed = [] {
    RecordingUpstream gone;
    return gone.port();
  }();
  start("127.0.0.1:" + std::to_string(closed), model.address());
  for (int i = 0; i < 3; ++i) ASSERT_EQ(send(chatBody("chat", false)).status, 200);
  EXPECT_EQ(metricReaching("infermesh_tracing_spans_total", "outcome=\"dropped_export_failed\"", 6), 6);
  EXPECT_GE(metric("infermesh_tracing_exports_total", "result=\"error\""), 1);
  EXPECT_EQ(metric("infermesh_tracing_spans_total", "outcome=\"exported\""), 0);
}

TEST_F(TracingTest, BadTracingSettingsAreRefusedWithTheirName) {
  for (const std::string& bad : {std::string("collector: nowhere"), std::string("collector: '127.0.0.1:4318', sampleRatio: 2"),
                                 std::string("collector: '127.0.0.1:4318', flushInterval: 500"),
                                 std::string("collector: '127.0.0.1:4318', sampel: 1")}) {
    dir.write("config.yaml", "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
                             "  address: 127.0.0.1:0\n  filters: [{name: telemetry, config: {tracing: {" + bad +
                                 "}}}, {name: router}]\n");
    const auto out = runCommand(bin_dir + "/controlplane/infermeshctl validate " + dir.path() + " 2>&1");
    EXPECT_NE(out.status, 0) << bad;
    EXPECT_NE(out.out.find("tracing"), std::string::npos) << bad << ": " << out.out;
  }
}

}  // namespace
}  // namespace infermesh::testing
