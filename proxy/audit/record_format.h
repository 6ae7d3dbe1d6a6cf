#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

// OpenSSL's own spelling of the digest context, so this header needs no
// OpenSSL include.
typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace infermesh::audit {

// A record is one line: {"seq":N,"prev":"<64 hex>",<fields>} where prev is
// the lowercase hex SHA-256 of the previous record's line (without its
// newline) and the first record of a chain has 64 zeros.
inline constexpr std::size_t kHashHexSize = 64;
using HashHex = std::array<char, kHashHexSize>;

HashHex zeroHash();

struct RecordHead {
  std::uint64_t seq = 0;
  HashHex prev{};
};

// Reads seq and prev from a line as the writer lays it out; nullopt when the
// line does not start with {"seq":<digits>,"prev":"<64 lowercase hex>", (or
// end right after the hash with "}", a record without fields) or does not
// end with "}". `line` has no newline.
std::optional<RecordHead> parseRecordHead(std::string_view line);

// SHA-256 with one digest context reused for every line (a fresh context
// per record would be an allocation and an algorithm fetch each time).
// Not thread-safe: one per thread.
class LineHasher {
 public:
  LineHasher();
  ~LineHasher();
  LineHasher(const LineHasher&) = delete;
  LineHasher& operator=(const LineHasher&) = delete;

  HashHex hash(std::string_view line);

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace infermesh::audit
