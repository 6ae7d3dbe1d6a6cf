#include "filters/router/model_extractor.h"

#include <gtest/gtest.h>

namespace infermesh::router {
namespace {

ExtractError run(std::string body, BodyFields& f) {
  static ModelExtractor extractor;
  ModelExtractor::ensurePadding(body);
  return extractor.extract(body, f);
}

TEST(ModelExtractor, ReadsModelAndStreamInAnyOrder) {
  BodyFields f;
  ASSERT_EQ(run(R"({"messages":[{"role":"user","content":"hi \"model\": x"}],"stream":true,"model":"gpt-4o"})", f),
            ExtractError::None);
  EXPECT_EQ(f.model, "gpt-4o");
  EXPECT_TRUE(f.stream);
}

TEST(ModelExtractor, UnescapesTheModelName) {
  BodyFields f;
  ASSERT_EQ(run(R"({"model":"llama\u002d3\"x\""})", f), ExtractError::None);
  EXPECT_EQ(f.model, "llama-3\"x\"");
}

TEST(ModelExtractor, IgnoresNestedModelFields) {
  BodyFields f;
  ASSERT_EQ(run(R"({"metadata":{"model":"inner"},"model":"outer"})", f), ExtractError::None);
  EXPECT_EQ(f.model, "outer");
}

TEST(ModelExtractor, MissingModelIsNotAJsonError) {
  BodyFields f;
  ASSERT_EQ(run(R"({"messages":[]})", f), ExtractError::None);
  EXPECT_TRUE(f.model.empty());
  EXPECT_FALSE(f.stream);
}

TEST(ModelExtractor, RejectsInvalidJson) {
  BodyFields f;
  EXPECT_EQ(run(R"({"model":"x",)", f), ExtractError::InvalidJson);
  EXPECT_EQ(run(R"({"model":"x"} trailing)", f), ExtractError::InvalidJson);
  EXPECT_EQ(run("", f), ExtractError::InvalidJson);
  EXPECT_EQ(run("\xff\xfe", f), ExtractError::InvalidJson);
  EXPECT_EQ(run(R"(["model","x"])", f), ExtractError::NotAnObject);
  EXPECT_EQ(run(R"({"model":42})", f), ExtractError::ModelNotString);
  EXPECT_EQ(run(R"({"model":"x","stream":"yes"})", f), ExtractError::StreamNotBool);
}

TEST(ModelExtractor, RefusesARepeatedModelKeyInAnySpelling) {
  BodyFields f;
  EXPECT_EQ(run(R"({"model":"cheap","model":"premium"})", f), ExtractError::DuplicateModel);
  EXPECT_EQ(run(R"({"model":"cheap","messages":[],"\u006dodel":"premium"})", f), ExtractError::DuplicateModel);
  EXPECT_EQ(run(R"({"\u006d\u006f\u0064\u0065\u006c":"a","model":"a"})", f), ExtractError::DuplicateModel);
  // Nested objects may repeat it; only the top level routes.
  EXPECT_EQ(run(R"({"model":"a","metadata":{"model":"b"},"tools":[{"model":"c"}]})", f), ExtractError::None);
  EXPECT_EQ(f.model, "a");
}

TEST(ModelExtractor, HandlesHugeBodies) {
  std::string body = R"({"messages":[)";
  for (int i = 0; i < 20000; ++i) body += R"({"role":"user","content":"lorem ipsum dolor sit amet consectetur"},)";
  body += R"({"role":"user","content":"end"}],"model":"big-model"})";
  ASSERT_GT(body.size(), 1u << 20);
  BodyFields f;
  ASSERT_EQ(run(body, f), ExtractError::None);
  EXPECT_EQ(f.model, "big-model");
}

TEST(ModelExtractor, RewritesTheTopLevelModelOnly) {
  std::string body = R"({"metadata":{"model":"keep"}, "model" : "alias" ,"stream":true})";
  ASSERT_TRUE(ModelExtractor::rewriteModel(body, "real-\"name"));
  EXPECT_EQ(body, R"({"metadata":{"model":"keep"}, "model" : "real-\"name" ,"stream":true})");
  BodyFields f;
  ASSERT_EQ(run(body, f), ExtractError::None);
  EXPECT_EQ(f.model, "real-\"name");
  std::string no_model = R"({"x":1})";
  EXPECT_FALSE(ModelExtractor::rewriteModel(no_model, "m"));
}

// Found by tests/fuzz/model_extractor_fuzz: a name with a control
// character (config does not forbid one) was written raw, and the body the
// model server received was no longer JSON.
TEST(ModelExtractor, RewriteEscapesEveryCharacterJsonRequires) {
  std::string body = R"({"model":"alias","stream":false})";
  const std::string name("a\tb\n\x01\x1f\\\"", 8);
  ASSERT_TRUE(ModelExtractor::rewriteModel(body, name));
  EXPECT_EQ(body, R"({"model":"a\tb\n\u0001\u001f\\\"","stream":false})");
  BodyFields f;
  ASSERT_EQ(run(body, f), ExtractError::None);
  EXPECT_EQ(f.model, name);
  // Bytes that are not UTF-8 cannot be JSON text: they become U+FFFD.
  std::string latin1 = R"({"model":"alias"})";
  ASSERT_TRUE(ModelExtractor::rewriteModel(latin1, "caf\xe9"));
  ASSERT_EQ(run(latin1, f), ExtractError::None);
  EXPECT_EQ(f.model, "caf\xef\xbf\xbd");
}

}  // namespace
}  // namespace infermesh::router
