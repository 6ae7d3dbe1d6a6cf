// infermesh-mock-model: an OpenAI-compatible model server stand-in for tests
// and benchmarks. It answers /v1/chat/completions, /v1/completions (both
// streaming over SSE and not), /v1/embeddings, /v1/models and /health with
// real-shaped bodies and `usage`, and can inject latency and errors.
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <simdjson.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <random>
#include <unordered_map>
#include <string>
#include <thread>
#include <vector>

#include "bench/split_comma.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

struct Options {
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  unsigned threads = 1;
  std::vector<std::string> models{"mock-model"};
  std::string name = "mock";
  int ttft_ms = 0;          // before the first chunk (or the whole answer)
  int chunk_delay_ms = 0;   // between streamed chunks
  int chunks = 8;           // completion tokens per answer
  double rate_429 = 0;
  double rate_500 = 0;
  double rate_reset = 0;    // streams cut mid-way by a connection reset
  int retry_after_s = 1;
  unsigned context_window = 0;   // prompt tokens; more gets 400 context_length_exceeded
  unsigned max_concurrency = 0;  // generations at once (batch slots); more wait in a FIFO queue
  int prefill_us_per_token = 0;  // prefill time per prompt token not in the prefix cache
  unsigned prefix_cache_blocks = 0;  // prefix cache size, in blocks of kBlockChars prompt characters
  int drop_after_head = 0;       // streams that send the head, then drop before the first event
};

Options g_opt;
std::atomic<std::uint64_t> g_connections{0};
std::atomic<std::uint64_t> g_requests{0};
std::atomic<std::int64_t> g_in_flight{0};
std::atomic<std::uint64_t> g_created{1700000000};
std::atomic<std::int64_t> g_generating{0};  // holding a generation slot
std::atomic<std::int64_t> g_waiting{0};     // queued for one
std::atomic<bool> g_health_down{false};
std::atomic<std::uint64_t> g_activations{0};
std::atomic<std::uint64_t> g_shadow_requests{0};
std::atomic<std::uint64_t> g_completed{0};  // model responses written to the end
std::atomic<int> g_drops_left{0};           // of --drop-after-head
std::atomic<std::uint64_t> g_prefill_tokens{0};  // prompt tokens prefilled
std::atomic<std::uint64_t> g_cached_tokens{0};   // prompt tokens found in the prefix cache

// A prefix cache like an engine's (vLLM's automatic prefix caching): the
// prompt is cut into blocks; a block is identified by the hash of the whole
// prompt up to its end, so only a shared prefix hits. LRU over blocks.
constexpr std::size_t kBlockChars = 64;  // 16 tokens at ~4 characters per token
class PrefixCache {
 public:
  // Prompt tokens whose prefill the cache saves; the prompt's blocks are
  // cached (or refreshed) on the way.
  int lookupAndInsert(std::string_view prompt, unsigned capacity) {
    if (capacity == 0) return 0;
    std::lock_guard lock(mutex_);
    std::uint64_t h = 0xcbf29ce484222325ULL;
    std::size_t hit_blocks = 0;
    bool hitting = true;
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      h = (h ^ static_cast<unsigned char>(prompt[i])) * 0x100000001b3ULL;
      if ((i + 1) % kBlockChars != 0) continue;
      if (auto it = where_.find(h); it != where_.end()) {
        lru_.splice(lru_.begin(), lru_, it->second);
        if (hitting) ++hit_blocks;
      } else {
        hitting = false;
        lru_.push_front(h);
        where_[h] = lru_.begin();
        if (where_.size() > capacity) {
          where_.erase(lru_.back());
          lru_.pop_back();
        }
      }
    }
    return static_cast<int>(hit_blocks * kBlockChars / 4);
  }

 private:
  std::mutex mutex_;
  std::list<std::uint64_t> lru_;
  std::unordered_map<std::uint64_t, std::list<std::uint64_t>::iterator> where_;
};
PrefixCache g_prefix_cache;

// Batch slots: --max-concurrency generations at once, the rest wait in
// arrival order, like an engine's scheduler queue. A freed slot passes
// straight to the oldest waiter. With one thread a waiter sleeps on a timer
// the releaser cancels; with more, waiters poll (timers are not shared
// across threads).
struct SlotWaiter {
  asio::steady_timer timer;
  bool granted = false;
  explicit SlotWaiter(asio::any_io_executor ex) : timer(std::move(ex)) {}
};
std::mutex g_slot_mutex;
std::deque<SlotWaiter*> g_slot_queue;

// One of the first --drop-after-head streams.
bool takeDrop() {
  for (int left = g_drops_left.load(); left > 0;)
    if (g_drops_left.compare_exchange_weak(left, left - 1)) return true;
  return false;
}

constexpr const char* kWords[] = {"Hello", " from", " the", " infermesh", " mock", " model", ".", " Tokens",
                                  " stream", " one", " by", " one", " over", " SSE", "."};

double uniform() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0, 1)(rng);
}

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
      continue;
    }
    out += c;
  }
  out += '"';
}

std::string errorJson(std::string_view message, std::string_view type, std::string_view code) {
  std::string out = "{\"error\":{\"message\":";
  appendJsonString(out, message);
  out += ",\"type\":";
  appendJsonString(out, type);
  out += ",\"param\":null,\"code\":";
  appendJsonString(out, code);
  out += "}}";
  return out;
}

std::string usageJson(int prompt, int completion) {
  return "{\"prompt_tokens\":" + std::to_string(prompt) + ",\"completion_tokens\":" + std::to_string(completion) +
         ",\"total_tokens\":" + std::to_string(prompt + completion) + "}";
}

struct Request {
  std::string model;
  bool stream = false;
  bool include_usage = false;
  int prompt_tokens = 0;
  int max_tokens = 0;
  int inputs = 1;  // embeddings
  std::string prompt;  // message contents or prompt, concatenated (prefix cache key)
};

// Roughly 4 characters per token, like the usual estimate for English.
int estimateTokens(std::size_t chars) { return static_cast<int>(chars / 4 + 1); }

bool parseRequest(const std::string& body, Request& r, std::string& error) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc)) {
    error = "We could not parse the JSON body of your request.";
    return false;
  }
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) {
    error = "The request body must be a JSON object.";
    return false;
  }
  std::size_t chars = 0;
  for (auto f : obj) {
    if (f.key == "model") {
      std::string_view m;
      if (!f.value.get_string().get(m)) r.model = m;
    } else if (f.key == "stream") {
      bool b = false;
      if (!f.value.get_bool().get(b)) r.stream = b;
    } else if (f.key == "stream_options") {
      bool b = false;
      if (!f.value["include_usage"].get_bool().get(b)) r.include_usage = b;
    } else if (f.key == "max_tokens" || f.key == "max_completion_tokens") {
      int64_t n = 0;
      if (!f.value.get_int64().get(n)) r.max_tokens = static_cast<int>(n);
    } else if (f.key == "messages") {
      simdjson::dom::array msgs;
      if (!f.value.get_array().get(msgs))
        for (auto m : msgs) {
          std::string_view content;
          if (!m["content"].get_string().get(content)) {
            chars += content.size();
            r.prompt += content;
          }
        }
    } else if (f.key == "prompt" || f.key == "input") {
      std::string_view s;
      simdjson::dom::array arr;
      if (!f.value.get_string().get(s)) {
        chars += s.size();
        r.prompt += s;
      } else if (!f.value.get_array().get(arr)) {
        r.inputs = 0;
        for (auto item : arr) {
          ++r.inputs;
          if (!item.get_string().get(s)) chars += s.size();
        }
      }
    }
  }
  r.prompt_tokens = estimateTokens(chars);
  return true;
}

class Session {
 public:
  explicit Session(tcp::socket s) : socket_(std::move(s)) {}

  awaitable<void> run() {
    ++g_connections;
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      auto [ec, n] = co_await http::async_read(socket_, buffer, parser, kTuple);
      if (ec) co_return;
      ++g_in_flight;
      bool keep = co_await handle(parser.get());
      --g_in_flight;
      if (!keep) co_return;
    }
  }

 private:
  awaitable<void> sleep(int ms) {
    if (ms <= 0) co_return;
    asio::steady_timer t(socket_.get_executor(), std::chrono::milliseconds(ms));
    co_await t.async_wait(kTuple);
  }

  // ORCA load report: requests generating (holding a batch slot), queued
  // behind them, and a KV-cache utilisation that grows with the generations
  // in progress. Without --max-concurrency, everything in flight runs.
  static std::string loadReportText() {
    const std::int64_t running = g_generating.load();
    const std::int64_t waiting = g_opt.max_concurrency ? g_waiting.load() : 0;
    const double kv = std::min(1.0, static_cast<double>(running) /
                                        static_cast<double>(g_opt.max_concurrency ? g_opt.max_concurrency : 16));
    char report[160];
    std::snprintf(report, sizeof report,
                  "TEXT named_metrics.num_requests_running=%lld, named_metrics.num_requests_waiting=%lld, "
                  "named_metrics.kv_cache_utilization=%.2f",
                  static_cast<long long>(running), static_cast<long long>(waiting), kv);
    return report;
  }
  std::string commonHeaders() const {
    return "x-mock-server: " + g_opt.name + "\r\nendpoint-load-metrics: " + loadReportText() + "\r\n";
  }

  // A generation slot (with --max-concurrency): waits its turn in arrival
  // order like a model server's scheduler queue.
  awaitable<void> takeSlot() {
    if (g_opt.max_concurrency == 0) {
      ++g_generating;
      co_return;
    }
    SlotWaiter w(socket_.get_executor());
    {
      std::lock_guard lock(g_slot_mutex);
      if (g_slot_queue.empty() && g_generating.load() < static_cast<std::int64_t>(g_opt.max_concurrency)) {
        ++g_generating;
        co_return;
      }
      g_slot_queue.push_back(&w);
      ++g_waiting;
    }
    for (;;) {
      {
        std::lock_guard lock(g_slot_mutex);
        if (w.granted) break;
      }
      w.timer.expires_after(g_opt.threads == 1 ? std::chrono::milliseconds(60000) : std::chrono::milliseconds(1));
      co_await w.timer.async_wait(kTuple);
    }
  }
  struct Slot {
    ~Slot() {
      if (g_opt.max_concurrency == 0) {
        --g_generating;
        return;
      }
      std::lock_guard lock(g_slot_mutex);
      if (g_slot_queue.empty()) {
        --g_generating;
        return;
      }
      // The slot passes to the oldest waiter (g_generating unchanged).
      SlotWaiter* next = g_slot_queue.front();
      g_slot_queue.pop_front();
      --g_waiting;
      next->granted = true;
      if (g_opt.threads == 1) next->timer.cancel();
    }
  };

  // Prefill: proportional to the prompt tokens the prefix cache lacks.
  int prefillMs(const Request& r) {
    if (g_opt.prefill_us_per_token <= 0) return 0;
    const int cached = std::min(r.prompt_tokens, g_prefix_cache.lookupAndInsert(r.prompt, g_opt.prefix_cache_blocks));
    g_cached_tokens += static_cast<std::uint64_t>(cached);
    g_prefill_tokens += static_cast<std::uint64_t>(r.prompt_tokens - cached);
    return (r.prompt_tokens - cached) * g_opt.prefill_us_per_token / 1000;
  }

  awaitable<bool> writeFull(unsigned status, std::string_view content_type, const std::string& body,
                            std::string extra = {}) {
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " +
                       std::string(http::obsolete_reason(static_cast<http::status>(status))) +
                       "\r\ncontent-type: " + std::string(content_type) +
                       "\r\ncontent-length: " + std::to_string(body.size()) + "\r\n" + commonHeaders() + extra +
                       "\r\n";
    std::array<asio::const_buffer, 2> bufs{asio::buffer(head), asio::buffer(body)};
    auto [ec, n] = co_await asio::async_write(socket_, bufs, kTuple);
    co_return !ec;
  }

  awaitable<bool> writeChunk(std::string_view data) {
    char size[24];
    int len = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    std::array<asio::const_buffer, 3> bufs{asio::buffer(size, static_cast<std::size_t>(len)), asio::buffer(data),
                                           asio::buffer("\r\n", 2)};
    auto [ec, n] = co_await asio::async_write(socket_, bufs, kTuple);
    co_return !ec;
  }

  bool servesModel(const std::string& m) const {
    for (const auto& x : g_opt.models)
      if (x == m) return true;
    return false;
  }

  awaitable<bool> handle(http::request<http::string_body>& req) {
    const std::string target(req.target());
    const bool keep = req.keep_alive();
    // "requests" counts model traffic, not probes and test controls.
    if (!target.starts_with("/mock/") && target != "/health" && target != "/metrics/orca") ++g_requests;
    if (target == "/health")
      co_return co_await writeFull(g_health_down ? 503 : 200, "text/plain", g_health_down ? "down\n" : "ok\n") && keep;
    // Test controls: fail or pass /health from now on; count activation calls.
    if (target == "/mock/health/down" || target == "/mock/health/up") {
      g_health_down = target == "/mock/health/down";
      co_return co_await writeFull(200, "text/plain", "ok\n") && keep;
    }
    if (target == "/mock/activate") {
      ++g_activations;
      co_return co_await writeFull(202, "application/json", "{\"activating\":true}") && keep;
    }
    if (target == "/mock/stats") {
      std::string body = "{\"connections\":" + std::to_string(g_connections.load()) +
                         ",\"requests\":" + std::to_string(g_requests.load()) +
                         ",\"activations\":" + std::to_string(g_activations.load()) +
                         ",\"shadow_requests\":" + std::to_string(g_shadow_requests.load()) +
                         ",\"completed\":" + std::to_string(g_completed.load()) +
                         ",\"prefill_tokens\":" + std::to_string(g_prefill_tokens.load()) +
                         ",\"cached_tokens\":" + std::to_string(g_cached_tokens.load()) + "}";
      co_return co_await writeFull(200, "application/json", body) && keep;
    }
    if (target == "/mock/echo") {
      // The request head as received, so tests can check what a proxy forwarded.
      std::string body = "{\"method\":";
      appendJsonString(body, req.method_string());
      body += ",\"headers\":{";
      bool first = true;
      for (const auto& f : req) {
        if (!first) body += ',';
        first = false;
        std::string name(f.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        appendJsonString(body, name);
        body += ':';
        appendJsonString(body, f.value());
      }
      body += "}}";
      co_return co_await writeFull(200, "application/json", body) && keep;
    }
    // Out-of-band load report, for proxies that poll it (Model.loadReport).
    if (target == "/metrics/orca") co_return co_await writeFull(200, "text/plain", loadReportText() + "\n") && keep;
    if (target == "/v1/models") {
      std::string body = "{\"object\":\"list\",\"data\":[";
      for (std::size_t i = 0; i < g_opt.models.size(); ++i) {
        if (i) body += ',';
        body += "{\"id\":";
        appendJsonString(body, g_opt.models[i]);
        body += ",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"infermesh-mock\"}";
      }
      body += "]}";
      co_return co_await writeFull(200, "application/json", body) && keep;
    }
    const bool chat = target == "/v1/chat/completions";
    const bool completion = target == "/v1/completions";
    const bool embeddings = target == "/v1/embeddings";
    if (!chat && !completion && !embeddings)
      co_return co_await writeFull(404, "application/json",
                                   errorJson("Unknown path " + target, "invalid_request_error", "not_found")) && keep;
    if (req.method() != http::verb::post)
      co_return co_await writeFull(405, "application/json",
                                   errorJson("Use POST", "invalid_request_error", "method_not_allowed")) && keep;
    if (req.count("x-infermesh-shadow")) ++g_shadow_requests;
    Request r;
    std::string error;
    if (!parseRequest(req.body(), r, error))
      co_return co_await writeFull(400, "application/json", errorJson(error, "invalid_request_error", "invalid_json")) && keep;
    if (r.model.empty())
      co_return co_await writeFull(400, "application/json",
                                   errorJson("you must provide a model parameter", "invalid_request_error", "missing_model")) && keep;
    if (!servesModel(r.model))
      co_return co_await writeFull(404, "application/json",
                                   errorJson("The model `" + r.model + "` does not exist", "invalid_request_error",
                                             "model_not_found")) && keep;
    if (uniform() < g_opt.rate_429)
      co_return co_await writeFull(429, "application/json",
                                   errorJson("Rate limit reached, retry later", "rate_limit_error", "rate_limit_exceeded"),
                                   "retry-after: " + std::to_string(g_opt.retry_after_s) + "\r\n") && keep;
    if (uniform() < g_opt.rate_500)
      co_return co_await writeFull(500, "application/json",
                                   errorJson("The server had an error while processing your request", "server_error",
                                             "internal_error")) && keep;

    if (g_opt.context_window && static_cast<unsigned>(r.prompt_tokens) > g_opt.context_window)
      co_return co_await writeFull(
          400, "application/json",
          errorJson("This model's maximum context length is " + std::to_string(g_opt.context_window) +
                        " tokens. However, your messages resulted in " + std::to_string(r.prompt_tokens) + " tokens.",
                    "invalid_request_error", "context_length_exceeded")) && keep;

    co_await takeSlot();
    Slot slot;
    const int prefill_ms = prefillMs(r);
    const std::string id = "chatcmpl-mock" + std::to_string(g_created.fetch_add(1));
    if (embeddings) {
      co_await sleep(g_opt.ttft_ms + prefill_ms);
      std::string body = "{\"object\":\"list\",\"data\":[";
      for (int i = 0; i < r.inputs; ++i) {
        if (i) body += ',';
        body += "{\"object\":\"embedding\",\"index\":" + std::to_string(i) +
                ",\"embedding\":[0.0123,-0.0456,0.0789,0.1011,-0.1213,0.1415,-0.1617,0.1819]}";
      }
      body += "],\"model\":";
      appendJsonString(body, r.model);
      body += ",\"usage\":{\"prompt_tokens\":" + std::to_string(r.prompt_tokens) +
              ",\"total_tokens\":" + std::to_string(r.prompt_tokens) + "}}";
      co_return co_await writeFull(200, "application/json", body) && keep;
    }

    const int n = r.max_tokens > 0 ? std::min(r.max_tokens, g_opt.chunks) : g_opt.chunks;
    constexpr int kWordCount = sizeof(kWords) / sizeof(kWords[0]);
    if (!r.stream) {
      co_await sleep(g_opt.ttft_ms + prefill_ms + g_opt.chunk_delay_ms * std::max(0, n - 1));
      std::string text;
      for (int i = 0; i < n; ++i) text += kWords[i % kWordCount];
      std::string body = "{\"id\":\"" + id + "\",\"object\":\"" + (chat ? "chat.completion" : "text_completion") +
                         "\",\"created\":1700000000,\"model\":";
      appendJsonString(body, r.model);
      body += ",\"choices\":[{\"index\":0,";
      if (chat) {
        body += "\"message\":{\"role\":\"assistant\",\"content\":";
        appendJsonString(body, text);
        body += "}";
      } else {
        body += "\"text\":";
        appendJsonString(body, text);
      }
      body += ",\"finish_reason\":\"" + std::string(n < g_opt.chunks ? "length" : "stop") + "\"}],\"usage\":" +
              usageJson(r.prompt_tokens, n) + "}";
      co_return co_await writeFull(200, "application/json", body) && keep;
    }

    std::string head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                       "transfer-encoding: chunked\r\n" + commonHeaders() + "\r\n";
    auto [hec, hn] = co_await asio::async_write(socket_, asio::buffer(head), kTuple);
    if (hec) co_return false;
    const bool reset = uniform() < g_opt.rate_reset;
    co_await sleep(g_opt.ttft_ms + prefill_ms);
    if (takeDrop()) {
      // Like an engine that crashes while the prompt is processed: the
      // head went out, no token ever does.
      socket_.set_option(asio::socket_base::linger(true, 0));
      socket_.close();
      co_return false;
    }
    const std::string prefix = "data: {\"id\":\"" + id + "\",\"object\":\"" +
                               (chat ? "chat.completion.chunk" : "text_completion") +
                               "\",\"created\":1700000000,\"model\":\"" + r.model + "\",\"choices\":[";
    for (int i = 0; i < n; ++i) {
      if (i) co_await sleep(g_opt.chunk_delay_ms);
      if (reset && i == n / 2) {
        // Abortive close (RST): what a crashing model server looks like.
        socket_.set_option(asio::socket_base::linger(true, 0));
        socket_.close();
        co_return false;
      }
      std::string event = prefix + "{\"index\":0,";
      if (chat) {
        event += "\"delta\":{";
        if (i == 0) event += "\"role\":\"assistant\",";
        event += "\"content\":";
        appendJsonString(event, kWords[i % kWordCount]);
        event += "}";
      } else {
        event += "\"text\":";
        appendJsonString(event, kWords[i % kWordCount]);
      }
      event += ",\"finish_reason\":" + std::string(i + 1 == n ? (n < g_opt.chunks ? "\"length\"" : "\"stop\"") : "null") +
               "}]}\n\n";
      if (!co_await writeChunk(event)) co_return false;
    }
    std::string tail;
    if (r.include_usage)
      tail += prefix + "],\"usage\":" + usageJson(r.prompt_tokens, n) + "}\n\n";
    tail += "data: [DONE]\n\n";
    if (!co_await writeChunk(tail)) co_return false;
    auto [eec, en] = co_await asio::async_write(socket_, asio::buffer("0\r\n\r\n", 5), kTuple);
    if (!eec) ++g_completed;
    co_return !eec && keep;
  }

  tcp::socket socket_;
};

awaitable<void> serve(tcp::socket socket) {
  Session s(std::move(socket));
  co_await s.run();
}

awaitable<void> acceptLoop(tcp::acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(kTuple);
    if (ec) co_return;
    socket.set_option(tcp::no_delay(true), ec);
    auto ex = socket.get_executor();
    asio::co_spawn(ex, serve(std::move(socket)), asio::detached);
  }
}


void usage() {
  std::fprintf(stderr,
               "usage: infermesh-mock-model [--host IP] [--port N] [--threads N] [--models a,b] [--name NAME]\n"
               "       [--ttft-ms N] [--chunk-delay-ms N] [--chunks N]\n"
               "       [--error-429-rate R] [--error-500-rate R] [--reset-rate R] [--retry-after S]\n"
               "       [--context-window TOKENS] [--max-concurrency N] [--drop-after-head N]\n"
               "       [--prefill-us-per-token US] [--prefix-cache-blocks N]\n"
               "Test controls: GET /mock/health/down and /mock/health/up flip /health; POST /mock/activate\n"
               "is counted (an activation webhook); /mock/stats reports counts.\n"
               "--drop-after-head N: the first N streams send their head, then drop the connection.\n"
               "--max-concurrency N: N batch slots; more requests wait in arrival order. The time to\n"
               "first token is --ttft-ms plus US per prompt token the prefix cache (N blocks of 64\n"
               "characters, LRU) lacks. Load (running, waiting, KV cache) is reported in the\n"
               "endpoint-load-metrics header of every answer and at GET /metrics/orca.\n"
               "Prints \"listening IP:PORT\" once ready. Rates are 0..1.\n");
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage();
      return 0;
    }
    if (i + 1 >= argc) {
      usage();
      return 2;
    }
    std::string v = argv[++i];
    try {
      if (a == "--host") g_opt.host = v;
      else if (a == "--port") g_opt.port = static_cast<unsigned short>(std::stoi(v));
      else if (a == "--threads") g_opt.threads = static_cast<unsigned>(std::max(1, std::stoi(v)));
      else if (a == "--models") g_opt.models = infermesh::bench::splitComma(v);
      else if (a == "--name") g_opt.name = v;
      else if (a == "--ttft-ms") g_opt.ttft_ms = std::stoi(v);
      else if (a == "--chunk-delay-ms") g_opt.chunk_delay_ms = std::stoi(v);
      else if (a == "--chunks") g_opt.chunks = std::max(1, std::stoi(v));
      else if (a == "--error-429-rate") g_opt.rate_429 = std::stod(v);
      else if (a == "--error-500-rate") g_opt.rate_500 = std::stod(v);
      else if (a == "--reset-rate") g_opt.rate_reset = std::stod(v);
      else if (a == "--retry-after") g_opt.retry_after_s = std::stoi(v);
      else if (a == "--context-window") g_opt.context_window = static_cast<unsigned>(std::stoul(v));
      else if (a == "--max-concurrency") g_opt.max_concurrency = static_cast<unsigned>(std::stoul(v));
      else if (a == "--prefill-us-per-token") g_opt.prefill_us_per_token = std::max(0, std::stoi(v));
      else if (a == "--prefix-cache-blocks") g_opt.prefix_cache_blocks = static_cast<unsigned>(std::stoul(v));
      else if (a == "--drop-after-head") g_opt.drop_after_head = std::max(0, std::stoi(v));
      else {
        usage();
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "invalid value for %s\n", a.c_str());
      return 2;
    }
  }
  std::signal(SIGPIPE, SIG_IGN);
  g_drops_left = g_opt.drop_after_head;
  asio::io_context io(static_cast<int>(g_opt.threads));
  tcp::acceptor acceptor(io);
  try {
    tcp::endpoint ep(asio::ip::make_address(g_opt.host), g_opt.port);
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen(asio::socket_base::max_listen_connections);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cannot listen on %s:%u: %s\n", g_opt.host.c_str(), g_opt.port, e.what());
    return 1;
  }
  auto local = acceptor.local_endpoint();
  std::printf("listening %s:%u\n", local.address().to_string().c_str(), local.port());
  std::fflush(stdout);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { io.stop(); });
  asio::co_spawn(io, acceptLoop(acceptor), asio::detached);
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < g_opt.threads; ++i) threads.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  return 0;
}
