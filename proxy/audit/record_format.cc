#include "proxy/audit/record_format.h"

#include <openssl/evp.h>

#include <charconv>
#include <new>

namespace infermesh::audit {
namespace {

constexpr std::string_view kSeqPrefix = "{\"seq\":";
constexpr std::string_view kPrevPrefix = ",\"prev\":\"";

bool isLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// Fetched once: with OpenSSL 3 every EVP_sha256() use otherwise looks the
// provider's implementation up again.
const EVP_MD* sha256() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

}  // namespace

HashHex zeroHash() {
  HashHex h;
  h.fill('0');
  return h;
}

std::optional<RecordHead> parseRecordHead(std::string_view line) {
  if (!line.starts_with(kSeqPrefix) || !line.ends_with('}')) return std::nullopt;
  std::size_t i = kSeqPrefix.size();
  const std::size_t digits_start = i;
  while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
  // No sign, no leading zeros: the writer never writes them, so an edited
  // number cannot keep its value under a different spelling.
  if (i == digits_start || (line[digits_start] == '0' && i - digits_start > 1)) return std::nullopt;
  RecordHead head;
  const auto [end, ec] = std::from_chars(line.data() + digits_start, line.data() + i, head.seq);
  if (ec != std::errc() || end != line.data() + i) return std::nullopt;
  if (line.substr(i, kPrevPrefix.size()) != kPrevPrefix) return std::nullopt;
  i += kPrevPrefix.size();
  if (line.size() < i + kHashHexSize + 2) return std::nullopt;
  for (std::size_t k = 0; k < kHashHexSize; ++k) {
    if (!isLowerHex(line[i + k])) return std::nullopt;
    head.prev[k] = line[i + k];
  }
  i += kHashHexSize;
  if (line[i] != '"') return std::nullopt;
  ++i;
  // Either fields follow or the object ends here.
  if (line[i] == ',' ? i + 1 >= line.size() - 1 : i != line.size() - 1) return std::nullopt;
  return head;
}

LineHasher::LineHasher() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr || sha256() == nullptr) throw std::bad_alloc();
}

LineHasher::~LineHasher() { EVP_MD_CTX_free(ctx_); }

HashHex LineHasher::hash(std::string_view line) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  // SHA-256 of memory cannot fail once the context exists; a failure here
  // would be a broken OpenSSL, and a zero digest then breaks the chain
  // visibly rather than silently.
  if (EVP_DigestInit_ex(ctx_, sha256(), nullptr) != 1 || EVP_DigestUpdate(ctx_, line.data(), line.size()) != 1 ||
      EVP_DigestFinal_ex(ctx_, digest, &len) != 1 || len != 32)
    return zeroHash();
  static constexpr char kHex[] = "0123456789abcdef";
  HashHex out;
  for (unsigned int k = 0; k < 32; ++k) {
    out[2 * k] = kHex[digest[k] >> 4];
    out[2 * k + 1] = kHex[digest[k] & 0xf];
  }
  return out;
}

}  // namespace infermesh::audit
