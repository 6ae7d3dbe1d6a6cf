#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proxy/audit/record_format.h"

namespace infermesh::audit {

struct ChainReport {
  bool ok = false;
  // Records that verified: all of them when ok, those before the break otherwise.
  std::uint64_t records = 0;
  std::uint64_t first_seq = 0;
  std::uint64_t last_seq = 0;
  HashHex last_hash = zeroHash();  // of the last verified record: the value to anchor elsewhere
  // The first record chains to one that is not in these files (rotated away):
  // its seq and prev were taken as the starting point, unchecked.
  bool starts_mid_chain = false;
  bool unreadable = false;  // a file could not be read; nothing after it was judged
  std::string first_bad_path;
  std::uint64_t first_bad_line = 0;  // 1-based, within first_bad_path
  std::uint64_t first_bad_seq = 0;   // the seq that line carries; 0 if it has none
  std::string reason;
};

// Checks one file, or several given oldest first (path.2, path.1, path):
// every line is a record, seq goes up by one, every prev is the SHA-256 of
// the line before (across files too). Names the first broken record: an
// edited line breaks the next line's prev, a deleted or moved line breaks
// seq, a last line without its newline is reported as truncated. No
// threads, no state: tools and tests call it directly.
ChainReport verifyChain(const std::vector<std::string>& paths);

}  // namespace infermesh::audit
