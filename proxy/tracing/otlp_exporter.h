#pragma once

// Spans leave the proxy here: queued by the request path without blocking,
// batched and sent by one background thread to an OTLP/HTTP collector
// (`POST /v1/traces`, `application/x-protobuf`, the messages of
// proto/opentelemetry). A full queue or a failed export drops spans,
// counted in infermesh_tracing_spans_total{outcome}; nothing waits on the
// collector but this thread.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "proxy/stats/filter_metrics.h"
#include "proxy/tracing/trace_context.h"

namespace infermesh::tracing {

struct Attribute {
  std::string_view key;  // a literal: attribute names are the conventions', never built per request
  std::variant<std::string, std::int64_t, double, bool> value;
};

enum class SpanKind : int { Server = 2, Client = 3 };

struct SpanData {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_id{};  // zero: a root span
  bool remote_parent = false;
  std::string tracestate;
  std::uint8_t flags = 0;
  std::string name;
  SpanKind kind = SpanKind::Server;
  std::uint64_t start_ns = 0, end_ns = 0;  // Unix time
  bool error = false;
  std::string status_message;
  std::vector<Attribute> attributes;
};

struct ExporterOptions {
  std::string host;  // the collector's
  std::string port = "4318";
  std::string path = "/v1/traces";
  std::string service_name = "infermesh-proxy";
  std::size_t max_queue = 4096;  // spans waiting; more are dropped
  std::size_t max_batch = 512;   // spans per export request
  std::chrono::milliseconds flush_interval{1000};  // a partial batch waits at most this
  std::chrono::milliseconds timeout{5000};         // connect, send and answer, per request
  std::string key() const;
};

class OtlpExporter {
 public:
  // The exporter for these options, shared by every filter built for them
  // (each config version builds its filters again; the queue and the
  // connection stay).
  static std::shared_ptr<OtlpExporter> forCollector(const ExporterOptions& options);

  explicit OtlpExporter(ExporterOptions options);
  // Sends what is queued (each request within the timeout), then stops.
  ~OtlpExporter();
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  // Takes the spans of one request, or drops them all (counted) when the
  // queue has no room: a trace is not cut in half. Never blocks.
  void enqueue(std::vector<SpanData>&& spans);

  // An ExportTraceServiceRequest holding `spans`, serialized: written
  // straight in protobuf's wire format (no message objects per span), with
  // the field numbers of proto/opentelemetry; tests decode it with the
  // generated classes.
  static std::string encode(const std::vector<SpanData>& spans, const std::string& service_name);

 private:
  void run();
  bool post(const std::string& body, std::string& error);
  bool connect(std::string& error);
  void disconnect();

  const ExporterOptions options_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<SpanData> queue_;
  bool stop_ = false;
  int fd_ = -1;  // kept alive between batches
  stats::SharedCounter exported_, dropped_full_, dropped_failed_, batches_ok_, batches_failed_;
  std::thread thread_;  // started by the first enqueue()
};

}  // namespace infermesh::tracing
