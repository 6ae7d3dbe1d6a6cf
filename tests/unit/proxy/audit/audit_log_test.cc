#include "proxy/audit/audit_log.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "proxy/audit/audit_chain.h"
#include "proxy/audit/record_format.h"
#include "tests/support/process.h"

namespace infermesh::audit {
namespace {

std::vector<std::string> readLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

class AuditLogTest : public ::testing::Test {
 protected:
  AuditLogOptions options(std::uint64_t max_bytes = 100ull << 20, std::uint32_t keep = 5, std::size_t queue = 65536) {
    AuditLogOptions o;
    o.path = path;
    o.max_bytes = max_bytes;
    o.keep_files = keep;
    o.queue_capacity = queue;
    return o;
  }
  std::shared_ptr<AuditLog> open(const AuditLogOptions& o) {
    std::string error;
    auto log = AuditLog::open(o, error);
    EXPECT_TRUE(log) << error;
    return log;
  }
  static std::string record(int i) { return "\"i\":" + std::to_string(i) + ",\"tenant\":\"a\""; }

  testing::TempDir dir;
  const std::string path = dir.path() + "/audit.log";
};

TEST_F(AuditLogTest, WritesAChainThatVerifies) {
  auto log = open(options());
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(log->submit(record(i)));
  log->flush();
  EXPECT_EQ(log->written(), 2000u);
  EXPECT_EQ(log->dropped(), 0u);
  EXPECT_EQ(log->writeErrors(), 0u);
  const auto lines = readLines(path);
  ASSERT_EQ(lines.size(), 2000u);
  EXPECT_EQ(lines[0], "{\"seq\":1,\"prev\":\"" + std::string(64, '0') + "\",\"i\":0,\"tenant\":\"a\"}");
  LineHasher h;
  const auto first = h.hash(lines[0]);
  EXPECT_EQ(lines[1], "{\"seq\":2,\"prev\":\"" + std::string(first.data(), first.size()) + "\",\"i\":1,\"tenant\":\"a\"}");
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 2000u);
  EXPECT_FALSE(r.starts_mid_chain);
}

TEST_F(AuditLogTest, FlushWithNothingQueuedReturns) {
  auto log = open(options());
  log->flush();
  log->submit(record(1));
  log->flush();
  log->flush();
  EXPECT_EQ(log->written(), 1u);
}

TEST_F(AuditLogTest, LineBreaksInFieldsDoNotSplitARecord) {
  auto log = open(options());
  log->submit("\"a\":1,\n\"b\":2\r\n");
  log->submit("");
  log->flush();
  const auto lines = readLines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(lines[0].ends_with(",\"a\":1, \"b\":2  }")) << lines[0];
  EXPECT_TRUE(lines[1].ends_with("\"}")) << lines[1];
  EXPECT_TRUE(verifyChain({path}).ok);
}

TEST_F(AuditLogTest, ReleasingTheLastHolderWritesWhatIsQueued) {
  auto log = open(options());
  for (int i = 0; i < 5000; ++i) log->submit(record(i));
  log.reset();
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 5000u);
}

TEST_F(AuditLogTest, ReopeningContinuesSeqAndChain) {
  auto log = open(options());
  for (int i = 0; i < 10; ++i) log->submit(record(i));
  log.reset();
  log = open(options());
  for (int i = 10; i < 15; ++i) log->submit(record(i));
  log->flush();
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 15u);
  EXPECT_EQ(r.first_seq, 1u);
  EXPECT_EQ(r.last_seq, 15u);
  EXPECT_FALSE(r.starts_mid_chain);
}

TEST_F(AuditLogTest, AnEmptyFileContinuesTheRotatedOne) {
  auto log = open(options());
  for (int i = 0; i < 10; ++i) log->submit(record(i));
  log.reset();
  std::filesystem::rename(path, path + ".1");
  log = open(options());
  log->submit(record(10));
  log->flush();
  const auto r = verifyChain({path + ".1", path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 11u);
  EXPECT_EQ(readLines(path)[0].substr(0, 10), "{\"seq\":11,");
}

TEST_F(AuditLogTest, SamePathIsOneWriterAndTakesNewRotationOptions) {
  auto a = open(options());
  auto b = open(options());
  EXPECT_EQ(a.get(), b.get());
  auto c = open(options(300, 2));
  EXPECT_EQ(a.get(), c.get());
  for (int i = 0; i < 20; ++i) a->submit(record(i));
  a->flush();
  EXPECT_GT(a->rotations(), 0u);
  EXPECT_TRUE(std::filesystem::exists(path + ".2"));
}

TEST_F(AuditLogTest, RefusesAFileThatDoesNotEndInARecord) {
  std::string error;
  dir.write("audit.log", "not a record\n");
  EXPECT_FALSE(AuditLog::open(options(), error));
  EXPECT_NE(error.find("not an audit record"), std::string::npos) << error;

  std::filesystem::remove(path);
  auto log = open(options());
  log->submit(record(1));
  log.reset();
  { std::ofstream(path, std::ios::app) << "{\"seq\":2,"; }
  error.clear();
  EXPECT_FALSE(AuditLog::open(options(), error));
  EXPECT_NE(error.find("incomplete"), std::string::npos) << error;

  error.clear();
  EXPECT_FALSE(AuditLog::open(AuditLogOptions{dir.path() + "/no/such/dir/log"}, error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
  AuditLogOptions tiny = options();
  tiny.queue_capacity = 1;
  EXPECT_FALSE(AuditLog::open(tiny, error));
}

TEST_F(AuditLogTest, RotationKeepsTheChainAcrossFiles) {
  const std::uint64_t max = 1000;
  auto log = open(options(max, 50));
  for (int i = 0; i < 300; ++i) log->submit(record(i));
  log->flush();
  EXPECT_GT(log->rotations(), 5u);
  std::vector<std::string> files;
  for (std::uint64_t k = log->rotations(); k >= 1; --k) files.push_back(path + "." + std::to_string(k));
  files.push_back(path);
  for (const auto& f : files) {
    ASSERT_TRUE(std::filesystem::exists(f)) << f;
    EXPECT_LE(std::filesystem::file_size(f), max) << f;
  }
  const auto r = verifyChain(files);
  EXPECT_TRUE(r.ok) << r.first_bad_path << ":" << r.first_bad_line << " " << r.reason;
  EXPECT_EQ(r.records, 300u);
  EXPECT_FALSE(r.starts_mid_chain);
  // Every rotated file starts where the one before ended.
  EXPECT_EQ(readLines(files[1])[0].find("{\"seq\":" + std::to_string(readLines(files[0]).size() + 1) + ","), 0u);
}

TEST_F(AuditLogTest, RotationKeepsOnlyKeepFiles) {
  auto log = open(options(1000, 3));
  for (int i = 0; i < 300; ++i) log->submit(record(i));
  log->flush();
  ASSERT_GT(log->rotations(), 3u);
  EXPECT_TRUE(std::filesystem::exists(path + ".3"));
  EXPECT_FALSE(std::filesystem::exists(path + ".4"));
  const auto r = verifyChain({path + ".3", path + ".2", path + ".1", path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_TRUE(r.starts_mid_chain);
  EXPECT_EQ(r.last_seq, 300u);
}

TEST_F(AuditLogTest, KeepZeroRemovesTheFullFile) {
  auto log = open(options(1000, 0));
  for (int i = 0; i < 100; ++i) log->submit(record(i));
  log->flush();
  EXPECT_GT(log->rotations(), 0u);
  EXPECT_FALSE(std::filesystem::exists(path + ".1"));
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.last_seq, 100u);
}

TEST_F(AuditLogTest, ConcurrentSubmittersEachRecordOnceInAValidChain) {
  constexpr int kThreads = 4, kPerThread = 10000;
  auto log = open(options());
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i)
        ASSERT_TRUE(log->submit("\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i)));
    });
  for (auto& t : threads) t.join();
  log->flush();
  EXPECT_EQ(log->written(), std::uint64_t{kThreads * kPerThread});
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.reason;
  std::set<std::pair<int, int>> seen;
  std::vector<int> last(kThreads, -1);
  for (const auto& line : readLines(path)) {
    const auto t = line.find(",\"t\":");
    ASSERT_NE(t, std::string::npos) << line;
    int thread = -1, i = -1;
    ASSERT_EQ(std::sscanf(line.c_str() + t, ",\"t\":%d,\"i\":%d}", &thread, &i), 2) << line;
    EXPECT_TRUE(seen.emplace(thread, i).second) << "twice: " << line;
    // One producer's records keep their order.
    EXPECT_GT(i, last[thread]);
    last[thread] = i;
  }
  EXPECT_EQ(seen.size(), std::size_t{kThreads * kPerThread});
}

TEST_F(AuditLogTest, FlushFromManyThreadsWhileOthersSubmit) {
  auto log = open(options());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        log->submit("\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i));
        if (t % 2 == 0) {
          log->flush();
          // What this thread submitted is on disk by now (at least i + 1 of its records).
          EXPECT_GE(log->written(), std::uint64_t(i + 1));
        }
      }
    });
  for (auto& t : threads) t.join();
  log->flush();
  EXPECT_EQ(log->written(), 1200u);
  EXPECT_TRUE(verifyChain({path}).ok);
}

// The disk "fills up" through RLIMIT_FSIZE: writes past it fail with
// EFBIG, the writer stops taking records, the queue fills and drops are
// counted; when space comes back the chain goes on without a gap.
TEST_F(AuditLogTest, FullDiskThenFullQueueCountsDropsAndKeepsTheChain) {
  auto log = open(options(100ull << 20, 5, 4));
  for (int i = 0; i < 3; ++i) log->submit(record(i));
  log->flush();
  const auto size = std::filesystem::file_size(path);

  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit full = old_limit;
  full.rlim_cur = size + 50;  // the next write lands partly: the writer must cut it off again
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &full), 0);

  ASSERT_TRUE(log->submit(record(3)));
  EXPECT_TRUE(testing::eventually([&] { return log->writeErrors() > 0; }));
  EXPECT_EQ(std::filesystem::file_size(path), size);

  // Big records: the writer holds about 1 MiB of them, the queue 4 more.
  const std::string big = "\"pad\":\"" + std::string(300 << 10, 'x') + "\"";
  std::uint64_t accepted = 1, refused = 0;
  for (int i = 0; i < 40; ++i) (log->submit(record(100 + i) + "," + big) ? accepted : refused)++;
  EXPECT_GT(refused, 0u);
  EXPECT_EQ(log->dropped(), refused);

  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  std::signal(SIGXFSZ, old_handler);
  log->flush();
  EXPECT_EQ(log->written(), 3 + accepted);
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.first_bad_line << " " << r.reason;
  EXPECT_EQ(r.records, 3 + accepted);
  EXPECT_EQ(r.last_seq, 3 + accepted);
}

TEST_F(AuditLogTest, SubmitsFromManyThreadsIntoATinyQueueDropButNeverCorrupt) {
  auto log = open(options(100ull << 20, 5, 2));
  std::atomic<std::uint64_t> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i)
        if (log->submit("\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i))) ++accepted;
    });
  for (auto& t : threads) t.join();
  log->flush();
  EXPECT_EQ(log->written(), accepted.load());
  EXPECT_EQ(log->written() + log->dropped(), 20000u);
  const auto r = verifyChain({path});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, accepted.load());
}

}  // namespace
}  // namespace infermesh::audit
