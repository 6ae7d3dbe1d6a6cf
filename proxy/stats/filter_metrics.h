#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace infermesh::stats {

// Metrics a filter declares when its factory is built (once per config
// version), not a global struct every filter edits. Each worker adds to
// its own values (thread-local, no locks on the request path); a scrape
// copies every worker's values on that worker and sums them. Declaring the
// same name and labels again returns the same series, so a reload keeps
// counting where it was.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class CounterMetric {
 public:
  void inc(double n = 1) const;
  std::uint32_t slot = 0;
};

class GaugeMetric {
 public:
  void add(double n) const;
  std::uint32_t slot = 0;
};

class HistogramMetric {
 public:
  void observe(double v) const;
  std::uint32_t slot = 0;             // per bucket (last: +Inf), then sum, then count
  const std::vector<double>* bounds = nullptr;
};

// A counter a background thread adds to (an exporter, a writer), where
// the per-worker values are not: one shared atomic, read at a scrape. Not
// for the request path.
class SharedCounter {
 public:
  void inc(std::uint64_t n = 1) const {
    if (value != nullptr) value->fetch_add(n, std::memory_order_relaxed);
  }
  std::atomic<std::uint64_t>* value = nullptr;
};

class FilterMetrics {
 public:
  enum class Kind { Counter, Gauge, Histogram };
  struct Series {
    MetricLabels labels;
    std::uint32_t slot;
    std::atomic<std::uint64_t>* shared = nullptr;  // a SharedCounter's value, added to the workers'
  };
  struct Family {
    std::string name;
    std::string help;
    Kind kind;
    std::vector<double> bounds;  // histograms: upper bounds, ascending
    std::vector<Series> series;
  };

  static FilterMetrics& instance();
  CounterMetric counter(const std::string& name, const std::string& help, MetricLabels labels = {});
  GaugeMetric gauge(const std::string& name, const std::string& help, MetricLabels labels = {});
  HistogramMetric histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                            MetricLabels labels = {});
  SharedCounter sharedCounter(const std::string& name, const std::string& help, MetricLabels labels = {});
  // What is declared, for a scrape.
  std::vector<Family> families() const;

 private:
  std::uint32_t declare(Kind kind, const std::string& name, const std::string& help, std::vector<double> bounds,
                        MetricLabels labels, std::uint32_t width, const std::vector<double>** bounds_out);

  mutable std::mutex mu_;
  std::deque<Family> families_;  // grows only: slots and bounds stay valid
  std::deque<std::atomic<std::uint64_t>> shared_;  // SharedCounter values, grows only
  std::uint32_t next_slot_ = 0;
};

// The calling thread's values, indexed by slot (the worker's, on a worker).
std::vector<double>& threadFilterValues();

}  // namespace infermesh::stats
