#include "proxy/tokenizer/bpe_tokenizer.h"

namespace infermesh::tokenizer {

std::size_t estimateTokens(std::string_view text) { return (text.size() + 3) / 4; }

}  // namespace infermesh::tokenizer
