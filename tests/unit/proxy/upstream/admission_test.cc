#include "proxy/upstream/admission.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace infermesh::upstream {
namespace {

using config::Priority;

struct Recorder {
  std::vector<std::string> woken;
  Waiter make(Priority p, std::string name) {
    Waiter w;
    w.priority = p;
    w.wake = [this, name] { woken.push_back(name); };
    return w;
  }
};

TEST(Admission, UnlimitedAlwaysGrants) {
  ModelGate g;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(g.acquire(0, 0, Priority::Low), Admission::Granted);
}

TEST(Admission, OverTheLimitLowIsShedOthersWait) {
  ModelGate g;
  EXPECT_EQ(g.acquire(1, 4, Priority::Normal), Admission::Granted);
  EXPECT_EQ(g.acquire(1, 4, Priority::Low), Admission::Shed);
  EXPECT_EQ(g.acquire(1, 4, Priority::Normal), Admission::MustWait);
  EXPECT_EQ(g.acquire(1, 0, Priority::Critical), Admission::Shed);  // nobody may wait
}

TEST(Admission, ReleaseHandsTheSlotToTheHighestPriorityOldestWaiter) {
  ModelGate g;
  Recorder r;
  ASSERT_EQ(g.acquire(1, 8, Priority::Normal), Admission::Granted);
  Waiter n1 = r.make(Priority::Normal, "n1"), c1 = r.make(Priority::Critical, "c1"),
         n2 = r.make(Priority::Normal, "n2");
  ASSERT_TRUE(g.enqueue(n1, 8));
  ASSERT_TRUE(g.enqueue(c1, 8));
  ASSERT_TRUE(g.enqueue(n2, 8));
  g.release();
  g.release();
  g.release();
  EXPECT_EQ(r.woken, (std::vector<std::string>{"c1", "n1", "n2"}));
  EXPECT_TRUE(n1.granted && c1.granted && n2.granted);
  EXPECT_EQ(g.requests(), 1u);  // n2 holds the slot now
  g.release();
  EXPECT_EQ(g.requests(), 0u);
}

TEST(Admission, AFullQueueShedsItsLowestForAHigherPriority) {
  ModelGate g;
  Recorder r;
  ASSERT_EQ(g.acquire(1, 2, Priority::Normal), Admission::Granted);
  Waiter a = r.make(Priority::Normal, "a"), b = r.make(Priority::Normal, "b");
  ASSERT_TRUE(g.enqueue(a, 2));
  ASSERT_TRUE(g.enqueue(b, 2));
  Waiter same = r.make(Priority::Normal, "same");
  EXPECT_FALSE(g.enqueue(same, 2));  // equal priority does not displace
  Waiter crit = r.make(Priority::Critical, "crit");
  EXPECT_TRUE(g.enqueue(crit, 2));
  EXPECT_TRUE(b.shed);  // the newest of the lowest gives way
  EXPECT_EQ(r.woken, (std::vector<std::string>{"b"}));
  g.cancel(a);  // a gave up waiting
  g.release();
  EXPECT_TRUE(crit.granted);
  EXPECT_EQ(g.waiting(), 0u);
}

TEST(Admission, ColdWaitersAreReleasedTogetherAndBounded) {
  ModelGate g;
  Recorder r;
  Waiter a = r.make(Priority::Normal, "a"), b = r.make(Priority::Normal, "b"), c = r.make(Priority::Normal, "c");
  EXPECT_TRUE(g.waitForActivation(a, 2));
  EXPECT_TRUE(g.waitForActivation(b, 2));
  EXPECT_FALSE(g.waitForActivation(c, 2));
  g.activated();
  EXPECT_TRUE(a.granted && b.granted);
  EXPECT_EQ(g.coldWaiting(), 0u);
}

TEST(Admission, ConnectionLimitAndWorkerShare) {
  ModelGate g;
  EXPECT_TRUE(g.openConnection(2));
  EXPECT_TRUE(g.openConnection(2));
  EXPECT_FALSE(g.openConnection(2));
  g.closeConnection();
  EXPECT_TRUE(g.openConnection(2));
  EXPECT_EQ(workerShare(0, 4), 0u);
  EXPECT_EQ(workerShare(10, 4), 3u);
  EXPECT_EQ(workerShare(1, 4), 1u);
  EXPECT_EQ(workerShare(7, 1), 7u);
}

}  // namespace
}  // namespace infermesh::upstream
