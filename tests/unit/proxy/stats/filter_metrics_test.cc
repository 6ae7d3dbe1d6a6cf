#include "proxy/stats/filter_metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace infermesh::stats {
namespace {

double at(std::uint32_t slot) {
  const auto& v = threadFilterValues();
  return slot < v.size() ? v[slot] : 0;
}

TEST(FilterMetrics, DeclaredSeriesAreKeptPerThreadAndFoundAgain) {
  auto& m = FilterMetrics::instance();
  auto a = m.counter("test_filter_events_total", "Events.", {{"kind", "a"}});
  auto b = m.counter("test_filter_events_total", "Events.", {{"kind", "b"}});
  EXPECT_NE(a.slot, b.slot);
  // A reload declares again: the same series.
  EXPECT_EQ(m.counter("test_filter_events_total", "Events.", {{"kind", "a"}}).slot, a.slot);
  a.inc();
  a.inc(2);
  EXPECT_EQ(at(a.slot), 3);
  EXPECT_EQ(at(b.slot), 0);
  double other_thread = -1;
  std::thread([&] {
    b.inc();
    other_thread = at(a.slot);
  }).join();
  EXPECT_EQ(other_thread, 0);  // each worker counts its own
  bool found = false;
  for (const auto& f : m.families())
    if (f.name == "test_filter_events_total") found = f.series.size() == 2 && f.kind == FilterMetrics::Kind::Counter;
  EXPECT_TRUE(found);
}

TEST(FilterMetrics, HistogramsCountPerBucketWithSumAndCount) {
  auto h = FilterMetrics::instance().histogram("test_filter_seconds", "Time.", {0.5, 0.1, 1});
  h.observe(0.05);
  h.observe(0.3);
  h.observe(0.3);
  h.observe(5);
  ASSERT_EQ(*h.bounds, (std::vector<double>{0.1, 0.5, 1}));
  EXPECT_EQ(at(h.slot + 0), 1);  // <= 0.1
  EXPECT_EQ(at(h.slot + 1), 2);  // <= 0.5
  EXPECT_EQ(at(h.slot + 2), 0);  // <= 1
  EXPECT_EQ(at(h.slot + 3), 1);  // +Inf
  EXPECT_DOUBLE_EQ(at(h.slot + 4), 5.65);
  EXPECT_EQ(at(h.slot + 5), 4);
}

}  // namespace
}  // namespace infermesh::stats
