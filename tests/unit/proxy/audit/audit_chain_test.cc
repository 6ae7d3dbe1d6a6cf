#include "proxy/audit/audit_chain.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace infermesh::audit {
namespace {

// Lines laid out as the writer lays them out, built here independently of it.
std::vector<std::string> chain(std::uint64_t count, std::uint64_t first_seq = 1, HashHex prev = zeroHash()) {
  LineHasher hasher;
  std::vector<std::string> lines;
  for (std::uint64_t seq = first_seq; seq < first_seq + count; ++seq) {
    std::string line = "{\"seq\":" + std::to_string(seq) + ",\"prev\":\"" + std::string(prev.data(), prev.size()) +
                       "\",\"tenant\":\"t" + std::to_string(seq % 7) + "\",\"decision\":\"allow\"}";
    prev = hasher.hash(line);
    lines.push_back(std::move(line));
  }
  return lines;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

class AuditChain : public ::testing::Test {
 protected:
  std::string file(const std::string& name, const std::string& content) {
    dir.write(name, content);
    return dir.path() + "/" + name;
  }
  testing::TempDir dir;
};

TEST(RecordFormat, ParsesTheHeadAndRefusesAnythingElse) {
  const std::string zeros(64, '0');
  auto head = parseRecordHead("{\"seq\":12,\"prev\":\"" + zeros + "\",\"a\":1}");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->seq, 12u);
  EXPECT_EQ(head->prev, zeroHash());
  EXPECT_TRUE(parseRecordHead("{\"seq\":1,\"prev\":\"" + zeros + "\"}"));  // no fields
  for (const std::string& bad : std::vector<std::string>{
           "",
           "{\"seq\":,\"prev\":\"" + zeros + "\",\"a\":1}",
           "{\"seq\":01,\"prev\":\"" + zeros + "\",\"a\":1}",
           "{\"seq\":-1,\"prev\":\"" + zeros + "\",\"a\":1}",
           "{\"seq\":99999999999999999999999,\"prev\":\"" + zeros + "\",\"a\":1}",
           "{\"seq\":1,\"prev\":\"" + zeros.substr(1) + "\",\"a\":1}",
           "{\"seq\":1,\"prev\":\"" + std::string(64, 'A') + "\",\"a\":1}",
           "{\"seq\":1,\"prev\":\"" + zeros + "\",\"a\":1",
           "{\"seq\":1,\"prev\":\"" + zeros + "\",}",
           "{ \"seq\":1,\"prev\":\"" + zeros + "\",\"a\":1}",
       })
    EXPECT_FALSE(parseRecordHead(bad)) << bad;
}

TEST(RecordFormat, HashIsSha256InLowercaseHex) {
  LineHasher h;
  const auto abc = h.hash("abc");
  EXPECT_EQ(std::string(abc.data(), abc.size()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(AuditChain, ManyRecordsVerify) {
  const auto lines = chain(5000);
  const auto r = verifyChain({file("log", joined(lines))});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 5000u);
  EXPECT_EQ(r.first_seq, 1u);
  EXPECT_EQ(r.last_seq, 5000u);
  EXPECT_FALSE(r.starts_mid_chain);
  LineHasher h;
  EXPECT_EQ(r.last_hash, h.hash(lines.back()));
}

TEST_F(AuditChain, EmptyFileIsAnEmptyChain) {
  const auto r = verifyChain({file("log", "")});
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.records, 0u);
}

TEST_F(AuditChain, EditedRecordIsCaughtAtTheLineAfterIt) {
  auto lines = chain(10);
  const auto at = lines[4].find("allow");
  ASSERT_NE(at, std::string::npos);
  lines[4][at] = 'A';  // seq 5, line 5: still a well-formed record
  const auto r = verifyChain({file("log", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 6u);
  EXPECT_EQ(r.first_bad_seq, 6u);
  EXPECT_NE(r.reason.find("line 5"), std::string::npos) << r.reason;
  EXPECT_EQ(r.records, 5u);
}

TEST_F(AuditChain, EditedSeqIsCaughtOnThatLine) {
  auto lines = chain(10);
  lines[3].replace(lines[3].find(":4,"), 3, ":9,");
  const auto r = verifyChain({file("log", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 4u);
  EXPECT_EQ(r.first_bad_seq, 9u);
}

TEST_F(AuditChain, DeletedRecordIsCaught) {
  auto lines = chain(10);
  lines.erase(lines.begin() + 6);  // seq 7
  const auto r = verifyChain({file("log", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 7u);
  EXPECT_EQ(r.first_bad_seq, 8u);
  EXPECT_NE(r.reason.find("missing"), std::string::npos) << r.reason;
}

TEST_F(AuditChain, ReorderedRecordsAreCaught) {
  auto lines = chain(10);
  std::swap(lines[2], lines[3]);
  const auto r = verifyChain({file("log", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 3u);
  EXPECT_EQ(r.first_bad_seq, 4u);
}

TEST_F(AuditChain, RecordReplacedWithAFreshChainIsCaught) {
  // Same seq, plausible content, but forged without the real previous line.
  auto lines = chain(6);
  auto forged = chain(1, 4, zeroHash());
  lines[3] = forged[0];
  const auto r = verifyChain({file("log", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 4u);
  EXPECT_NE(r.reason.find("edited or replaced"), std::string::npos) << r.reason;
}

TEST_F(AuditChain, TruncatedLastLineIsCaught) {
  const auto lines = chain(5);
  std::string text = joined(lines);
  text.resize(text.size() - 20);
  const auto r = verifyChain({file("log", text)});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 5u);
  EXPECT_NE(r.reason.find("truncated"), std::string::npos) << r.reason;
  EXPECT_EQ(r.records, 4u);
}

TEST_F(AuditChain, MissingNewlineAloneIsATruncation) {
  std::string text = joined(chain(3));
  text.pop_back();
  const auto r = verifyChain({file("log", text)});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 3u);
  EXPECT_EQ(r.first_bad_seq, 3u);
}

TEST_F(AuditChain, GarbageAndEmptyLinesAreBroken) {
  auto lines = chain(4);
  lines.insert(lines.begin() + 2, "");
  auto r = verifyChain({file("a", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 3u);
  EXPECT_EQ(r.reason, "empty line");
  lines[2] = "{\"seq\":3,\"prev\":\"nothex\"}";
  r = verifyChain({file("b", joined(lines))});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_line, 3u);
  EXPECT_EQ(r.first_bad_seq, 0u);
}

TEST_F(AuditChain, RotatedFilesVerifyOldestFirstAndNotOtherwise) {
  const auto lines = chain(30);
  const std::vector<std::string> a(lines.begin(), lines.begin() + 10), b(lines.begin() + 10, lines.begin() + 20),
      c(lines.begin() + 20, lines.end());
  const auto p2 = file("log.2", joined(a)), p1 = file("log.1", joined(b)), p0 = file("log", joined(c));
  auto r = verifyChain({p2, p1, p0});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.records, 30u);
  EXPECT_FALSE(r.starts_mid_chain);

  r = verifyChain({p1, p2, p0});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_path, p2);
  EXPECT_EQ(r.first_bad_line, 1u);

  // The oldest file rotated away: the chain starts mid-way, and says so.
  r = verifyChain({p1, p0});
  EXPECT_TRUE(r.ok) << r.reason;
  EXPECT_TRUE(r.starts_mid_chain);
  EXPECT_EQ(r.first_seq, 11u);
  EXPECT_EQ(r.last_seq, 30u);

  // A whole file missing from the middle is a gap.
  r = verifyChain({p2, p0});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_path, p0);
  EXPECT_EQ(r.first_bad_line, 1u);
  EXPECT_EQ(r.first_bad_seq, 21u);
}

TEST_F(AuditChain, UnreadableFileIsReportedAsSuch) {
  const auto r = verifyChain({dir.path() + "/missing"});
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.unreadable);
  EXPECT_EQ(r.first_bad_path, dir.path() + "/missing");
}

}  // namespace
}  // namespace infermesh::audit
