#include "proxy/stats/filter_metrics.h"

#include <algorithm>

namespace infermesh::stats {
namespace {

double& value(std::uint32_t slot) {
  auto& v = threadFilterValues();
  if (slot >= v.size()) v.resize(slot + 1);
  return v[slot];
}

}  // namespace

std::vector<double>& threadFilterValues() {
  thread_local std::vector<double> values;
  return values;
}

void CounterMetric::inc(double n) const { value(slot) += n; }
void GaugeMetric::add(double n) const { value(slot) += n; }

void HistogramMetric::observe(double v) const {
  const auto& b = *bounds;
  const auto bucket = static_cast<std::uint32_t>(std::lower_bound(b.begin(), b.end(), v) - b.begin());
  const auto width = static_cast<std::uint32_t>(b.size()) + 1;
  value(slot + bucket) += 1;
  value(slot + width) += v;
  value(slot + width + 1) += 1;
}

FilterMetrics& FilterMetrics::instance() {
  static FilterMetrics metrics;
  return metrics;
}

std::uint32_t FilterMetrics::declare(Kind kind, const std::string& name, const std::string& help,
                                     std::vector<double> bounds, MetricLabels labels, std::uint32_t width,
                                     const std::vector<double>** bounds_out) {
  std::lock_guard lock(mu_);
  auto f = std::find_if(families_.begin(), families_.end(), [&](const Family& x) { return x.name == name; });
  if (f == families_.end()) {
    families_.push_back(Family{name, help, kind, std::move(bounds), {}});
    f = families_.end() - 1;
  }
  if (bounds_out != nullptr) *bounds_out = &f->bounds;
  for (const auto& s : f->series)
    if (s.labels == labels) return s.slot;
  const std::uint32_t slot = next_slot_;
  next_slot_ += width;
  f->series.push_back(Series{std::move(labels), slot});
  return slot;
}

CounterMetric FilterMetrics::counter(const std::string& name, const std::string& help, MetricLabels labels) {
  return CounterMetric{declare(Kind::Counter, name, help, {}, std::move(labels), 1, nullptr)};
}

GaugeMetric FilterMetrics::gauge(const std::string& name, const std::string& help, MetricLabels labels) {
  return GaugeMetric{declare(Kind::Gauge, name, help, {}, std::move(labels), 1, nullptr)};
}

HistogramMetric FilterMetrics::histogram(const std::string& name, const std::string& help, std::vector<double> bounds,
                                         MetricLabels labels) {
  std::sort(bounds.begin(), bounds.end());
  HistogramMetric h;
  const auto width = static_cast<std::uint32_t>(bounds.size()) + 3;
  h.slot = declare(Kind::Histogram, name, help, std::move(bounds), std::move(labels), width, &h.bounds);
  return h;
}

SharedCounter FilterMetrics::sharedCounter(const std::string& name, const std::string& help, MetricLabels labels) {
  const std::uint32_t slot = declare(Kind::Counter, name, help, {}, std::move(labels), 1, nullptr);
  std::lock_guard lock(mu_);
  for (auto& f : families_)
    for (auto& s : f.series)
      if (s.slot == slot) {
        if (s.shared == nullptr) s.shared = &shared_.emplace_back(0);
        return SharedCounter{s.shared};
      }
  return {};
}

std::vector<FilterMetrics::Family> FilterMetrics::families() const {
  std::lock_guard lock(mu_);
  return {families_.begin(), families_.end()};
}

}  // namespace infermesh::stats
