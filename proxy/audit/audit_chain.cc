#include "proxy/audit/audit_chain.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string_view>
#include <system_error>

namespace infermesh::audit {
namespace {

std::string hex(const HashHex& h) { return std::string(h.data(), h.size()); }

}  // namespace

ChainReport verifyChain(const std::vector<std::string>& paths) {
  ChainReport report;
  LineHasher hasher;
  bool have_prev = false;  // a record was seen: seq and hash below are its
  std::uint64_t prev_seq = 0;
  HashHex prev_hash = zeroHash();
  std::string prev_where;  // "line N" or "FILE line N", for the reasons

  auto fail = [&](const std::string& path, std::uint64_t line, std::uint64_t seq, std::string reason) {
    report.ok = false;
    report.first_bad_path = path;
    report.first_bad_line = line;
    report.first_bad_seq = seq;
    report.reason = std::move(reason);
    return report;
  };

  for (const auto& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      report.unreadable = true;
      return fail(path, 0, 0, "cannot read: " + std::error_code(errno, std::system_category()).message());
    }
    std::string line;
    std::uint64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      // getline stops at end of file without a newline only on the last line.
      if (in.eof()) {
        const auto head = parseRecordHead(line);
        return fail(path, n, head ? head->seq : 0,
                    "truncated last line (" + std::to_string(line.size()) + " bytes, no newline)");
      }
      const auto head = parseRecordHead(line);
      if (!head)
        return fail(path, n, 0, line.empty() ? "empty line" : "not an audit record ({\"seq\":N,\"prev\":\"<hash>\",...})");
      if (!have_prev) {
        report.first_seq = head->seq;
        // A chain that starts here has seq 1 and an all-zero prev; anything
        // else continues records that are not in these files.
        if (head->seq != 1 || head->prev != zeroHash()) {
          report.starts_mid_chain = true;
          if (head->seq == 0) return fail(path, n, 0, "seq 0 (records count from 1)");
        }
      } else {
        if (head->seq != prev_seq + 1)
          return fail(path, n, head->seq,
                      "seq " + std::to_string(head->seq) + " follows seq " + std::to_string(prev_seq) + " (" +
                          prev_where + "): " +
                          (head->seq > prev_seq + 1 ? "records missing" : "records out of order or repeated"));
        if (head->prev != prev_hash)
          return fail(path, n, head->seq,
                      "prev " + hex(head->prev).substr(0, 12) + "... is not the hash of " + prev_where +
                          " (" + hex(prev_hash).substr(0, 12) + "...): that record was edited or replaced");
      }
      have_prev = true;
      prev_seq = head->seq;
      prev_hash = hasher.hash(line);
      prev_where = (paths.size() > 1 ? path + " " : std::string()) + "line " + std::to_string(n);
      ++report.records;
      report.last_seq = head->seq;
      report.last_hash = prev_hash;
    }
    if (in.bad()) {
      report.unreadable = true;
      return fail(path, n + 1, 0, "read error: " + std::error_code(errno, std::system_category()).message());
    }
  }
  report.ok = true;
  return report;
}

}  // namespace infermesh::audit
