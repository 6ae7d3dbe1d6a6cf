#include "proxy/tracing/otlp_exporter.h"

#include <gtest/gtest.h>

#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"
#include "tests/support/process.h"
#include "tests/support/recording_upstream.h"

namespace infermesh::tracing {
namespace {

namespace otlp = opentelemetry::proto;

SpanData span(const std::string& name) {
  SpanData s;
  s.trace_id = newTraceId();
  s.span_id = newSpanId();
  s.flags = kSampledFlag;
  s.name = name;
  s.start_ns = 1000;
  s.end_ns = 2000;
  s.attributes = {{"gen_ai.request.model", std::string("chat")},
                  {"gen_ai.usage.input_tokens", std::int64_t{12}},
                  {"infermesh.cost", 0.25},
                  {"infermesh.stream", true}};
  return s;
}

TEST(OtlpExporter, EncodesTheSpecsMessages) {
  SpanData s = span("chat chat");
  s.parent_id = newSpanId();
  s.remote_parent = true;
  s.kind = SpanKind::Client;
  s.error = true;
  s.status_message = "upstream_reset";
  otlp::collector::trace::v1::ExportTraceServiceRequest req;
  ASSERT_TRUE(req.ParseFromString(OtlpExporter::encode({s}, "svc")));
  ASSERT_EQ(req.resource_spans_size(), 1);
  const auto& rs = req.resource_spans(0);
  ASSERT_EQ(rs.resource().attributes_size(), 1);
  EXPECT_EQ(rs.resource().attributes(0).key(), "service.name");
  EXPECT_EQ(rs.resource().attributes(0).value().string_value(), "svc");
  ASSERT_EQ(rs.scope_spans(0).spans_size(), 1);
  const auto& out = rs.scope_spans(0).spans(0);
  EXPECT_EQ(out.trace_id(), std::string(s.trace_id.begin(), s.trace_id.end()));
  EXPECT_EQ(out.span_id(), std::string(s.span_id.begin(), s.span_id.end()));
  EXPECT_EQ(out.parent_span_id(), std::string(s.parent_id.begin(), s.parent_id.end()));
  EXPECT_EQ(out.flags(), 0x301u);  // sampled, parent known to be remote
  EXPECT_EQ(out.kind(), otlp::trace::v1::Span::SPAN_KIND_CLIENT);
  EXPECT_EQ(out.start_time_unix_nano(), 1000u);
  EXPECT_EQ(out.end_time_unix_nano(), 2000u);
  EXPECT_EQ(out.status().code(), otlp::trace::v1::Status::STATUS_CODE_ERROR);
  EXPECT_EQ(out.status().message(), "upstream_reset");
  EXPECT_EQ(out.name(), "chat chat");
  EXPECT_EQ(rs.scope_spans(0).scope().name(), "infermesh");
  EXPECT_EQ(out.attributes(0).key(), "gen_ai.request.model");
  ASSERT_EQ(out.attributes_size(), 4);
  EXPECT_EQ(out.attributes(0).value().string_value(), "chat");
  EXPECT_EQ(out.attributes(1).value().int_value(), 12);
  EXPECT_DOUBLE_EQ(out.attributes(2).value().double_value(), 0.25);
  EXPECT_TRUE(out.attributes(3).value().bool_value());
  // A root span has no parent id at all.
  ASSERT_TRUE(req.ParseFromString(OtlpExporter::encode({span("root")}, "svc")));
  EXPECT_TRUE(req.resource_spans(0).scope_spans(0).spans(0).parent_span_id().empty());
}

ExporterOptions optionsFor(int port) {
  ExporterOptions o;
  o.host = "127.0.0.1";
  o.port = std::to_string(port);
  o.flush_interval = std::chrono::milliseconds(20);
  o.timeout = std::chrono::milliseconds(1000);
  return o;
}

TEST(OtlpExporter, BatchesOverOneKeptAliveConnection) {
  testing::RecordingUpstream collector;
  ExporterOptions o = optionsFor(collector.port());
  o.max_batch = 3;
  o.flush_interval = std::chrono::milliseconds(5000);  // full batches go at once
  OtlpExporter exporter(o);
  for (int i = 0; i < 6; ++i) exporter.enqueue({span("s" + std::to_string(i))});
  const auto posts = collector.waitFor(2);
  ASSERT_EQ(posts.size(), 2u);
  int spans = 0;
  for (const auto& p : posts) {
    otlp::collector::trace::v1::ExportTraceServiceRequest req;
    ASSERT_TRUE(req.ParseFromString(p.body));
    spans += req.resource_spans(0).scope_spans(0).spans_size();
    EXPECT_EQ(p.header("content-type"), "application/x-protobuf");
  }
  EXPECT_EQ(spans, 6);
}

TEST(OtlpExporter, APartialBatchGoesAfterTheFlushInterval) {
  testing::RecordingUpstream collector;
  OtlpExporter exporter(optionsFor(collector.port()));
  exporter.enqueue({span("a"), span("b")});
  ASSERT_EQ(collector.waitFor(1).size(), 1u);
}

TEST(OtlpExporter, AFullQueueDropsWholeRequestsAndTheRestGoes) {
  testing::RecordingUpstream collector;
  ExporterOptions o = optionsFor(collector.port());
  o.max_queue = 3;
  o.flush_interval = std::chrono::milliseconds(200);
  auto& m = stats::FilterMetrics::instance();
  const auto before = m.sharedCounter("infermesh_tracing_spans_total", "", {{"outcome", "dropped_queue_full"}});
  const std::uint64_t dropped_before = before.value->load();
  {
    OtlpExporter exporter(o);
    exporter.enqueue({span("a"), span("b")});
    exporter.enqueue({span("c"), span("d")});  // 4 > 3: dropped whole
    exporter.enqueue({span("e")});
  }  // the destructor sends what is queued
  EXPECT_EQ(before.value->load() - dropped_before, 2u);
  std::size_t sent = 0;
  for (const auto& p : collector.waitFor(1)) {
    otlp::collector::trace::v1::ExportTraceServiceRequest req;
    ASSERT_TRUE(req.ParseFromString(p.body));
    sent += static_cast<std::size_t>(req.resource_spans(0).scope_spans(0).spans_size());
  }
  EXPECT_EQ(sent, 3u);
}

TEST(OtlpExporter, ExportersAreSharedPerCollectorAndStartNothingUntilUsed) {
  const ExporterOptions o = optionsFor(1);
  auto a = OtlpExporter::forCollector(o);
  auto b = OtlpExporter::forCollector(o);
  EXPECT_EQ(a.get(), b.get());
  ExporterOptions other = o;
  other.port = "2";
  EXPECT_NE(OtlpExporter::forCollector(other).get(), a.get());
}

}  // namespace
}  // namespace infermesh::tracing
