// `infermeshctl audit verify` on a log the real writer produced: a clean
// chain passes, one edited byte is named by the line after it, and usage
// or unreadable files are exit status 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "proxy/audit/audit_log.h"
#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

CommandResult ctl(const std::string& args) {
  return runCommand(binariesDir() + "/controlplane/infermeshctl " + args + " 2>&1");
}

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class AuditCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    audit::AuditLogOptions o;
    o.path = path;
    std::string error;
    auto log = audit::AuditLog::open(o, error);
    ASSERT_TRUE(log) << error;
    for (int i = 0; i < 20; ++i)
      ASSERT_TRUE(log->submit("\"tenant\":\"team-" + std::to_string(i % 3) + "\",\"decision\":\"allow\",\"i\":" +
                              std::to_string(i)));
    log->flush();
    ASSERT_EQ(log->written(), 20u);
  }

  TempDir dir;
  const std::string path = dir.path() + "/audit.log";
};

TEST_F(AuditCliTest, VerifiesAnIntactLog) {
  const auto r = ctl("audit verify " + path);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("ok: 20 records, seq 1..20"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("last hash: "), std::string::npos) << r.out;
}

TEST_F(AuditCliTest, NamesTheRecordAfterAnEditedOne) {
  std::string text = readAll(path);
  // Line 10 (seq 10): change one byte of its fields.
  std::size_t start = 0;
  for (int line = 1; line < 10; ++line) start = text.find('\n', start) + 1;
  const std::size_t at = text.find("allow", start);
  ASSERT_LT(at, text.find('\n', start));
  text[at] = 'd';
  dir.write("audit.log", text);

  const auto r = ctl("audit verify " + path);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("broken: " + path + " line 11 (seq 11): "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 10"), std::string::npos) << r.out;
}

TEST_F(AuditCliTest, NamesADeletedRecord) {
  std::string text = readAll(path);
  std::size_t start = 0;
  for (int line = 1; line < 5; ++line) start = text.find('\n', start) + 1;
  text.erase(start, text.find('\n', start) + 1 - start);  // seq 5
  dir.write("audit.log", text);
  const auto r = ctl("audit verify " + path);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("line 5 (seq 6): seq 6 follows seq 4"), std::string::npos) << r.out;
}

TEST_F(AuditCliTest, UsageAndUnreadableFilesAreStatusTwo) {
  auto r = ctl("audit verify");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("audit verify FILE..."), std::string::npos) << r.out;
  EXPECT_EQ(ctl("audit").status, 2);
  EXPECT_EQ(ctl("audit check " + path).status, 2);
  r = ctl("audit verify " + dir.path() + "/missing.log");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("cannot read"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace infermesh::testing
