#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace infermesh::router {

// The model a gRPC Open Inference Protocol call names: field 1
// (`model_name`) of the first, uncompressed message in a gRPC-framed body
// (ModelInferRequest, ModelReadyRequest's `name` is field 1 too). Returns
// false when the body is not such a message. `repeated` tells whether the
// field occurs more than once: protobuf parsers keep the last occurrence
// while this reads the first, so such a body must be normalised (see
// rewriteOipModelName) before it is forwarded.
bool oipModelName(std::string_view body, std::string& model, bool& repeated);

// Replaces every field 1 of the first message with one `model`, keeping the
// other fields and fixing the frame length. False when the body is not a single
// uncompressed message.
bool rewriteOipModelName(std::string& body, std::string_view model);

// A `grpc-timeout` header value ("100m", "5S", "1H" ...), or nullopt when
// malformed.
std::optional<std::chrono::milliseconds> parseGrpcTimeout(std::string_view value);

}  // namespace infermesh::router
