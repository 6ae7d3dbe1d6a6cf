#include "proxy/config/yaml_loader.h"

#include "proxy/common/json_string.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace infermesh::config {
namespace {

namespace pb = google::protobuf;

constexpr std::string_view kApiVersion = "infermesh.io/v1";

using common::appendJsonString;

int lineOf(const YAML::Node& n) { return n.Mark().line >= 0 ? n.Mark().line + 1 : 0; }

// A plain (unquoted) YAML scalar that reads as a number.
bool isNumber(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}

bool isPlain(const YAML::Node& n) { return n.Tag() == "?"; }

// Walks a YAML node together with the protobuf descriptor it must match,
// producing JSON for the protobuf JSON parser and recording errors and the
// line of every field path seen.
class SpecWalker {
 public:
  SpecWalker(const std::string& file, const std::string& document, ConfigErrors& errors,
             std::map<std::string, int>& lines)
      : file_(file), document_(document), errors_(errors), lines_(lines) {}

  void message(const YAML::Node& n, const pb::Descriptor* d, const std::string& path,
               std::string& out) {
    if (d->full_name() == "google.protobuf.Duration") return duration(n, path, out);
    if (d->full_name() == "google.protobuf.Struct") return anyValue(n, path, out, /*need_map=*/true);
    if (n.IsNull()) {
      out += "{}";
      return;
    }
    if (!n.IsMap()) {
      fail(n, path, "expected a mapping with fields of " + std::string(d->name()));
      out += "{}";
      return;
    }
    out += '{';
    bool first = true;
    for (const auto& kv : n) {
      const std::string key = kv.first.Scalar();
      const std::string child = path.empty() ? key : path + "." + key;
      lines_[child] = lineOf(kv.first);
      const pb::FieldDescriptor* f = d->FindFieldByName(key);
      if (f == nullptr) {
        for (int i = 0; i < d->field_count() && f == nullptr; ++i)
          if (d->field(i)->json_name() == key) f = d->field(i);
      }
      if (f == nullptr) {
        fail(kv.first, child, "unknown field \"" + key + "\" in " + std::string(d->name()) +
                                  knownFields(d));
        continue;
      }
      if (kv.second.IsNull()) continue;  // `key:` with no value = unset
      if (!first) out += ',';
      first = false;
      appendJsonString(out, f->json_name());
      out += ':';
      if (f->is_map()) {
        if (!kv.second.IsMap()) {
          fail(kv.second, child, "expected a mapping");
          out += "{}";
          continue;
        }
        out += '{';
        bool first_entry = true;
        const pb::FieldDescriptor* value_field = f->message_type()->map_value();
        for (const auto& entry : kv.second) {
          if (!first_entry) out += ',';
          first_entry = false;
          appendJsonString(out, entry.first.Scalar());
          out += ':';
          field(entry.second, value_field, child + "." + entry.first.Scalar(), out);
        }
        out += '}';
      } else if (f->is_repeated()) {
        if (!kv.second.IsSequence()) {
          fail(kv.second, child, "expected a list");
          out += "[]";
          continue;
        }
        out += '[';
        for (std::size_t i = 0; i < kv.second.size(); ++i) {
          if (i) out += ',';
          field(kv.second[i], f, child + "[" + std::to_string(i) + "]", out);
        }
        out += ']';
      } else {
        field(kv.second, f, child, out);
      }
    }
    out += '}';
  }

 private:
  void field(const YAML::Node& n, const pb::FieldDescriptor* f, const std::string& path,
             std::string& out) {
    lines_.try_emplace(path, lineOf(n));
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE)
      return message(n, f->message_type(), path, out);
    if (!n.IsScalar()) {
      fail(n, path, "expected a single value");
      out += "null";
      return;
    }
    const std::string& s = n.Scalar();
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING:
        appendJsonString(out, s);
        return;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        if (s == "true" || s == "false") {
          out += s;
        } else {
          fail(n, path, "expected true or false, got \"" + s + "\"");
          out += "false";
        }
        return;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        appendJsonString(out, s);
        return;
      default:  // numbers
        if (isNumber(s)) {
          bool integral = f->cpp_type() != pb::FieldDescriptor::CPPTYPE_DOUBLE &&
                          f->cpp_type() != pb::FieldDescriptor::CPPTYPE_FLOAT;
          bool is_unsigned = f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32 ||
                             f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT64;
          double v = std::strtod(s.c_str(), nullptr);
          if (integral && v != std::floor(v)) {
            fail(n, path, "expected a whole number, got " + s);
          } else if (is_unsigned && v < 0) {
            fail(n, path, "expected a number >= 0, got " + s);
          } else {
            appendJsonString(out, s);  // the JSON mapping accepts quoted numbers
            return;
          }
        } else {
          fail(n, path, "expected a number, got \"" + s + "\"");
        }
        out += "0";
        return;
    }
  }

  void duration(const YAML::Node& n, const std::string& path, std::string& out) {
    const std::string s = n.IsScalar() ? n.Scalar() : "";
    // Accept "250ms", "1.5s", "2m", "1h"; a bare number is refused (is 500
    // milliseconds or seconds?). The JSON mapping wants "<seconds>s".
    double seconds = -1;
    if (n.IsScalar() && !s.empty()) {
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      std::string unit(end);
      if (end != s.c_str() && std::isfinite(v) && v >= 0) {
        if (unit == "s") seconds = v;
        else if (unit == "ms") seconds = v / 1000;
        else if (unit == "m") seconds = v * 60;
        else if (unit == "h") seconds = v * 3600;
      }
    }
    if (seconds < 0) {
      fail(n, path, "expected a duration with its unit such as \"250ms\", \"30s\" or \"5m\", got \"" + s + "\"");
      out += "\"0s\"";
      return;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "\"%.9fs\"", seconds);
    out += buf;
  }

  // Free-form values (filter config): YAML types map to JSON types.
  void anyValue(const YAML::Node& n, const std::string& path, std::string& out, bool need_map) {
    if (need_map && !n.IsMap() && !n.IsNull()) {
      fail(n, path, "expected a mapping");
      out += "{}";
      return;
    }
    if (n.IsNull()) {
      out += need_map ? "{}" : "null";
    } else if (n.IsMap()) {
      out += '{';
      bool first = true;
      for (const auto& kv : n) {
        if (!first) out += ',';
        first = false;
        appendJsonString(out, kv.first.Scalar());
        out += ':';
        anyValue(kv.second, path + "." + kv.first.Scalar(), out, false);
      }
      out += '}';
    } else if (n.IsSequence()) {
      out += '[';
      for (std::size_t i = 0; i < n.size(); ++i) {
        if (i) out += ',';
        anyValue(n[i], path + "[" + std::to_string(i) + "]", out, false);
      }
      out += ']';
    } else if (isPlain(n) && (n.Scalar() == "true" || n.Scalar() == "false")) {
      out += n.Scalar();
    } else if (isPlain(n) && isNumber(n.Scalar())) {
      out += n.Scalar();
    } else {
      appendJsonString(out, n.Scalar());
    }
  }

  static std::string knownFields(const pb::Descriptor* d) {
    std::string s = " (known:";
    for (int i = 0; i < d->field_count(); ++i) s += " " + d->field(i)->json_name();
    return s + ")";
  }

  void fail(const YAML::Node& n, const std::string& path, std::string message) {
    errors_.push_back(ConfigError{file_, document_, path, lineOf(n), std::move(message)});
  }

  const std::string& file_;
  const std::string& document_;
  ConfigErrors& errors_;
  std::map<std::string, int>& lines_;
};

template <typename Spec>
void addResource(std::vector<Resource<Spec>>& into, const YAML::Node& doc, const YAML::Node& spec_node,
                 std::string name, const std::string& file, ConfigErrors& errors) {
  Resource<Spec> r;
  r.name = std::move(name);
  r.file = file;
  r.line = lineOf(doc);
  const std::string document = r.document();
  std::string json;
  std::size_t before = errors.size();
  SpecWalker walker(file, document, errors, r.lines);
  walker.message(spec_node, Spec::descriptor(), "spec", json);
  if (errors.size() != before) return;
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = pb::util::JsonStringToMessage(json, &r.spec, options);
  if (!status.ok()) {
    errors.push_back(ConfigError{file, document, "spec", lineOf(spec_node),
                                 std::string(status.message())});
    return;
  }
  into.push_back(std::move(r));
}

// yaml-cpp notices an unclosed flow collection (`[a, b` or `{a: 1`) only
// at the token after it, usually on a later line; the line worth naming is
// where the bracket opened. Scans `text` up to `end` for the innermost
// bracket still open, skipping quoted scalars and comments; 0 if none. A
// bracket or quote counts only where a YAML token may start, so `it's` or
// `a[1]` inside a plain scalar does not.
int unclosedFlowLine(std::string_view text, std::size_t end) {
  end = std::min(end, text.size());
  std::vector<int> open_lines;
  int line = 1;
  char prev = '\n';   // previous character
  char token = '\n';  // previous non-blank character on this line
  bool blank_since_token = true;
  auto tokenStarts = [&] {
    if (token == '\n' || token == '[' || token == '{' || token == ',') return true;
    return (token == ':' || token == '-' || token == '?') && blank_since_token;
  };
  for (std::size_t i = 0; i < end; ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      prev = token = '\n';
      blank_since_token = true;
      continue;
    }
    if (c == ' ' || c == '\t') {
      prev = c;
      blank_since_token = true;
      continue;
    }
    if (c == '#' && (prev == ' ' || prev == '\t' || prev == '\n')) {
      while (i + 1 < end && text[i + 1] != '\n') ++i;
      continue;
    }
    if ((c == '\'' || c == '"') && tokenStarts()) {
      // A quoted scalar, possibly over several lines.
      for (++i; i < end; ++i) {
        if (text[i] == '\n') ++line;
        else if (c == '"' && text[i] == '\\') ++i;
        else if (text[i] == c && c == '\'' && i + 1 < end && text[i + 1] == '\'') ++i;
        else if (text[i] == c) break;
      }
    } else if ((c == '[' || c == '{') && (!open_lines.empty() || tokenStarts())) {
      open_lines.push_back(line);
    } else if ((c == ']' || c == '}') && !open_lines.empty()) {
      open_lines.pop_back();
    }
    prev = token = c;
    blank_since_token = false;
  }
  return open_lines.empty() ? 0 : open_lines.back();
}

// yaml-cpp 0.7's LoadAll never returns on a document that starts with a
// token no node can start with, such as a stray ',' (jbeder/yaml-cpp#1040,
// fixed upstream by #1319): the parser reports an empty document at the
// same place forever, and memory grows with each. This first pass over the
// events throws at the second document that starts where the last one did.
class DocumentProgress final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (mark.pos == last_start_) throw YAML::ParserException(mark, "unexpected token at the start of a document");
    last_start_ = mark.pos;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  int last_start_ = -1;
};

std::vector<YAML::Node> loadAllDocuments(const std::string& text) {
  {
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentProgress progress;
    while (parser.HandleNextDocument(progress)) {
    }
  }
  return YAML::LoadAll(text);
}

bool validName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
           c == '/' || c == ':';
  });
}

}  // namespace

void YamlLoader::loadText(std::string_view text, const std::string& file) {
  std::vector<YAML::Node> docs;
  try {
    docs = loadAllDocuments(std::string(text));
  } catch (const YAML::Exception& e) {
    int line = e.mark.line >= 0 ? e.mark.line + 1 : 0;
    std::string message = "invalid YAML: " + e.msg;
    const bool seq = e.msg == YAML::ErrorMsg::END_OF_SEQ_FLOW;
    if ((seq || e.msg == YAML::ErrorMsg::END_OF_MAP_FLOW) && e.mark.pos >= 0) {
      if (const int opened = unclosedFlowLine(text, static_cast<std::size_t>(e.mark.pos)); opened > 0) {
        line = opened;
        message += seq ? " (the '[' opened on this line is not closed)" : " (the '{' opened on this line is not closed)";
      }
    }
    errors_.push_back(ConfigError{file, "", "", line, std::move(message)});
    return;
  }
  int index = 0;
  for (const YAML::Node& doc : docs) {
    ++index;
    if (doc.IsNull()) continue;  // empty document between `---` separators
    std::string where = "document " + std::to_string(index);
    auto fail = [&](const YAML::Node& n, std::string field, std::string message) {
      errors_.push_back(ConfigError{file, where, std::move(field), lineOf(n), std::move(message)});
    };
    if (!doc.IsMap()) {
      fail(doc, "", "expected a mapping with apiVersion, kind, metadata and spec");
      continue;
    }
    try {
      bool ok = true;
      for (const auto& kv : doc) {
        const std::string& key = kv.first.Scalar();
        if (key != "apiVersion" && key != "kind" && key != "metadata" && key != "spec") {
          fail(kv.first, key, "unknown field (expected apiVersion, kind, metadata, spec)");
          ok = false;
        }
      }
      const YAML::Node api = doc["apiVersion"];
      const YAML::Node kind = doc["kind"];
      const YAML::Node meta = doc["metadata"];
      const YAML::Node spec = doc["spec"];
      if (!api || !api.IsScalar() || api.Scalar() != kApiVersion) {
        fail(api ? api : doc, "apiVersion", "must be \"" + std::string(kApiVersion) + "\"");
        ok = false;
      }
      std::string name;
      if (!meta || !meta.IsMap() || !meta["name"] || !meta["name"].IsScalar()) {
        fail(meta ? meta : doc, "metadata.name", "is required");
        ok = false;
      } else {
        name = meta["name"].Scalar();
        for (const auto& kv : meta) {
          const std::string& key = kv.first.Scalar();
          if (key != "name" && key != "labels" && key != "annotations" && key != "namespace") {
            fail(kv.first, "metadata." + key, "unknown field");
            ok = false;
          }
        }
        if (!validName(name)) {
          fail(meta["name"], "metadata.name",
               "\"" + name + "\" is not a valid name (letters, digits, - . _ / :)");
          ok = false;
        }
      }
      if (!kind || !kind.IsScalar()) {
        fail(doc, "kind", "is required (Listener, Model, Route, Tenant, Policy or Mesh)");
        continue;
      }
      const std::string& k = kind.Scalar();
      if (k != "Listener" && k != "Model" && k != "Route" && k != "Tenant" && k != "Policy" && k != "Mesh") {
        fail(kind, "kind", "unknown kind \"" + k + "\" (expected Listener, Model, Route, Tenant, Policy or Mesh)");
        continue;
      }
      where = k + "/" + name;
      if (!spec) {
        fail(doc, "spec", "is required");
        continue;
      }
      if (!ok) continue;
      if (k == "Listener") addResource(resources_.listeners, doc, spec, name, file, errors_);
      else if (k == "Model") addResource(resources_.models, doc, spec, name, file, errors_);
      else if (k == "Tenant") addResource(resources_.tenants, doc, spec, name, file, errors_);
      else if (k == "Policy") addResource(resources_.policies, doc, spec, name, file, errors_);
      else if (k == "Mesh") addResource(resources_.meshes, doc, spec, name, file, errors_);
      else addResource(resources_.routes, doc, spec, name, file, errors_);
    } catch (const YAML::Exception& e) {
      fail(doc, "", std::string("invalid document: ") + e.what());
    }
  }
}

void YamlLoader::loadPath(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      const std::string fname = entry.path().filename().string();
      if (fname.empty() || fname[0] == '.') continue;
      const std::string ext = entry.path().extension().string();
      if ((ext == ".yaml" || ext == ".yml") && fs::is_regular_file(entry.path(), ec))
        files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) errors_.push_back(ConfigError{path, "", "", 0, "no *.yaml files found"});
  } else if (fs::exists(path, ec)) {
    files.emplace_back(path);
  } else {
    errors_.push_back(ConfigError{path, "", "", 0, "no such file or directory"});
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      errors_.push_back(ConfigError{f.string(), "", "", 0, "cannot be read"});
      continue;
    }
    std::ostringstream text;
    text << in.rdbuf();
    loadText(text.str(), f.string());
  }
}

}  // namespace infermesh::config
