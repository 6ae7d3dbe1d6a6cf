#include "proxy/ratelimit/redis_store.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace infermesh::ratelimit {
namespace {

// GCRA over one key (docs/redis.md). KEYS[1]: the limit's key, holding the
// theoretical arrival time (TAT) in microseconds of Redis TIME. ARGV[1]:
// units (> 0 take, < 0 give back, 0 only read), ARGV[2]: capacity,
// ARGV[3]: window in microseconds. Returns {granted, remaining,
// retry_after_us, reset_after_us}. The emission interval window/capacity
// may be fractional; the TAT is rounded to whole microseconds against the
// caller (up on a take, down on a give), so the fleet never gets more than
// capacity per window.
constexpr std::string_view kGcraScript = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local amount = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if tat > now + window then tat = now + window end
local granted = 0
if amount > 0 then
  local available = math.floor((now + window - tat) * capacity / window)
  if available < 0 then available = 0 end
  if available > capacity then available = capacity end
  granted = math.min(amount, available)
  tat = tat + math.ceil(granted * window / capacity)
  if tat > now + window then tat = now + window end
elseif amount < 0 then
  tat = tat - math.floor(-amount * window / capacity)
  if tat < now then tat = now end
end
local used = tat - now
if used > 0 then
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil(window / 1000))
else
  redis.call('DEL', KEYS[1])
end
local remaining = math.floor((window - used) * capacity / window)
if remaining < 0 then remaining = 0 end
local retry = 0
if granted < amount then
  local want = math.min(amount, capacity)
  retry = math.ceil(used + want * window / capacity - window)
  if retry < 0 then retry = 0 end
end
return {granted, remaining, retry, used}
)lua";

// Commands written per pipeline round; a wakeup drains the whole queue in
// rounds of this many.
constexpr std::size_t kPipelineChunk = 256;

struct ReplyFree {
  void operator()(redisReply* r) const {
    if (r != nullptr) freeReplyObject(r);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

struct ContextFree {
  void operator()(redisContext* c) const {
    if (c != nullptr) redisFree(c);
  }
};
using Context = std::unique_ptr<redisContext, ContextFree>;

timeval toTimeval(std::chrono::milliseconds d) {
  const auto ms = std::max<std::int64_t>(1, d.count());
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

bool startsWith(const redisReply* r, std::string_view prefix) {
  return r->str != nullptr && std::string_view(r->str, r->len).substr(0, prefix.size()) == prefix;
}

std::optional<std::int64_t> parseInt(const char* s, std::size_t n) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s, s + n, v);
  if (ec != std::errc() || end != s + n || n == 0) return std::nullopt;
  return v;
}

// hiredis writes with write(2); a server that went away would raise
// SIGPIPE. Blocked in the store's thread, the write fails with EPIPE
// instead; the pending signal is taken back so it never reaches anyone.
void blockSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void drainSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  timespec zero{0, 0};
  while (sigtimedwait(&set, nullptr, &zero) == SIGPIPE) {
  }
}

}  // namespace

struct RedisStore::Impl {
  enum class Kind { kTake, kGive, kAdd, kGet };

  struct Op {
    Kind kind;
    std::string key;  // prefixed
    std::int64_t amount = 0;
    std::int64_t capacity = 0;
    std::int64_t window_us = 0;
    std::int64_t expire_at_ms = 0;
    std::function<void(const TakeResult&)> take_done = nullptr;
    std::function<void(std::optional<std::int64_t>)> value_done = nullptr;
    bool rejected = false;  // fail without trying
  };

  explicit Impl(RedisOptions o) : options(std::move(o)) {
    if (options.reconnect_min.count() < 1) options.reconnect_min = std::chrono::milliseconds(1);
    if (options.reconnect_max < options.reconnect_min) options.reconnect_max = options.reconnect_min;
    thread = std::thread([this] { run(); });
  }

  ~Impl() {
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_one();
    thread.join();
  }

  void submit(Op op) {
    {
      std::lock_guard lk(mu);
      if (stop || live >= options.max_queue) op.rejected = true;
      if (op.rejected) {
        rejected.fetch_add(1, std::memory_order_relaxed);
      } else {
        ++live;
      }
      queue.push_back(std::move(op));
    }
    cv.notify_one();
  }

  // ---- the store's thread ----

  void run() {
    blockSigpipe();
    bool ever_connected = false;
    auto backoff = options.reconnect_min;
    auto next_attempt = std::chrono::steady_clock::now();
    for (;;) {
      if (!ctx && std::chrono::steady_clock::now() >= next_attempt) {
        if (connect()) {
          if (ever_connected) reconnects.fetch_add(1, std::memory_order_relaxed);
          ever_connected = true;
          backoff = options.reconnect_min;
          is_connected.store(true, std::memory_order_release);
        } else {
          errors.fetch_add(1, std::memory_order_relaxed);
          next_attempt = std::chrono::steady_clock::now() + backoff;
          backoff = std::min(backoff * 2, options.reconnect_max);
        }
      }
      std::deque<Op> batch;
      bool idle = false;
      {
        std::unique_lock lk(mu);
        auto ready = [&] { return stop || !queue.empty(); };
        if (!ready()) {
          if (!ctx) {
            cv.wait_until(lk, next_attempt, ready);
          } else if (options.health_interval.count() > 0) {
            idle = !cv.wait_for(lk, options.health_interval, ready);
          } else {
            cv.wait(lk, ready);
          }
        }
        if (stop) break;
        batch.swap(queue);
        live = 0;
      }
      if (!ctx) {
        // Disconnected: fail fast, no I/O.
        for (auto& op : batch) {
          if (!op.rejected) rejected.fetch_add(1, std::memory_order_relaxed);
          fail(op);
        }
        continue;
      }
      if (batch.empty()) {
        if (idle) ping();
      } else {
        process(batch);
      }
      if (!ctx) {  // lost just now: the first attempt after reconnect_min
        next_attempt = std::chrono::steady_clock::now() + backoff;
        backoff = std::min(backoff * 2, options.reconnect_max);
      }
    }
    // Stopping: everything still queued fails, including what the failing
    // callbacks queue.
    for (;;) {
      std::deque<Op> batch;
      {
        std::lock_guard lk(mu);
        if (queue.empty()) break;
        batch.swap(queue);
        live = 0;
      }
      for (auto& op : batch) {
        if (!op.rejected) rejected.fetch_add(1, std::memory_order_relaxed);
        fail(op);
      }
    }
    is_connected.store(false, std::memory_order_release);
    ctx.reset();
  }

  void setError(std::string e) {
    std::lock_guard lk(error_mu);
    last_error = std::move(e);
  }

  void contextError(const char* what) {
    std::string e = what;
    if (ctx && ctx->err != 0) {
      e += ": ";
      e += ctx->errstr;  // a timeout reads "Resource temporarily unavailable"
    }
    setError(std::move(e));
  }

  void dropConnection() {
    ctx.reset();
    is_connected.store(false, std::memory_order_release);
    drainSigpipe();
  }

  Reply command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(
        redisCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
  }

  // Connects, authenticates, selects the db and (once per store) loads the
  // script to learn its SHA1.
  bool connect() {
    ctx.reset(redisConnectWithTimeout(options.host.c_str(), options.port, toTimeval(options.connect_timeout)));
    if (!ctx) {
      setError("connect: out of memory");
      return false;
    }
    if (ctx->err != 0) {
      contextError("connect");
      dropConnection();
      return false;
    }
    redisSetTimeout(ctx.get(), toTimeval(options.command_timeout));
    redisEnableKeepAlive(ctx.get());
    auto expectOk = [&](const std::vector<std::string>& args, const char* what) {
      Reply r = command(args);
      if (!r) {
        contextError(what);
        return false;
      }
      if (r->type != REDIS_REPLY_STATUS) {
        setError(std::string(what) + ": " +
                 (r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : "unexpected reply"));
        return false;
      }
      return true;
    };
    if (!options.password.empty() && !expectOk({"AUTH", options.password}, "AUTH")) {
      dropConnection();
      return false;
    }
    if (options.db != 0 && !expectOk({"SELECT", std::to_string(options.db)}, "SELECT")) {
      dropConnection();
      return false;
    }
    if (sha.empty()) {
      Reply r = command({"SCRIPT", "LOAD", std::string(kGcraScript)});
      if (!r) {
        contextError("SCRIPT LOAD");
        dropConnection();
        return false;
      }
      if (r->type != REDIS_REPLY_STRING) {
        setError(std::string("SCRIPT LOAD: ") +
                 (r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : "unexpected reply"));
        dropConnection();
        return false;
      }
      sha.assign(r->str, r->len);
    }
    return true;
  }

  void ping() {
    Reply r = command({"PING"});
    if (!r) {
      errors.fetch_add(1, std::memory_order_relaxed);
      contextError("PING");
      dropConnection();
    }
  }

  std::vector<std::string> commandsOf(const Op& op, bool full_script) const {
    switch (op.kind) {
      case Kind::kTake:
      case Kind::kGive: {
        const std::int64_t units = op.kind == Kind::kTake ? op.amount : -op.amount;
        return {full_script ? "EVAL" : "EVALSHA", full_script ? std::string(kGcraScript) : sha, "1", op.key,
                std::to_string(units), std::to_string(op.capacity), std::to_string(op.window_us)};
      }
      case Kind::kAdd:
        return {};  // four commands, see append()
      case Kind::kGet:
        return {"GET", op.key};
    }
    return {};
  }

  bool appendArgs(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return redisAppendCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data()) == REDIS_OK;
  }

  // Writes one call's commands to the output buffer; the replies it takes.
  int append(const Op& op, bool full_script) {
    commands_sent.fetch_add(1, std::memory_order_relaxed);
    if (op.kind == Kind::kAdd) {
      bool ok = appendArgs({"MULTI"}) && appendArgs({"INCRBY", op.key, std::to_string(op.amount)}) &&
                appendArgs({"PEXPIREAT", op.key, std::to_string(op.expire_at_ms)}) && appendArgs({"EXEC"});
      return ok ? 4 : -1;
    }
    return appendArgs(commandsOf(op, full_script)) ? 1 : -1;
  }

  enum class Outcome { kDone, kNoScript, kLost };

  // Reads one call's replies and completes it, unless the script has to be
  // sent again (kNoScript) or the connection is gone (kLost, not completed).
  Outcome complete(Op& op, int replies, bool last_try) {
    Reply last;
    for (int i = 0; i < replies; ++i) {
      void* raw = nullptr;
      if (redisGetReply(ctx.get(), &raw) != REDIS_OK || raw == nullptr) {
        errors.fetch_add(1, std::memory_order_relaxed);
        contextError("reply");
        if (raw != nullptr) freeReplyObject(raw);
        return Outcome::kLost;
      }
      last.reset(static_cast<redisReply*>(raw));
    }
    const redisReply* r = last.get();
    if (r->type == REDIS_REPLY_ERROR) {
      if (startsWith(r, "NOSCRIPT") && !last_try && (op.kind == Kind::kTake || op.kind == Kind::kGive))
        return Outcome::kNoScript;
      errors.fetch_add(1, std::memory_order_relaxed);
      setError(std::string(r->str, r->len));
      // A replica after a failover: connect again (the name may point at
      // the new primary by now).
      if (startsWith(r, "READONLY")) readonly = true;
      fail(op);
      return Outcome::kDone;
    }
    switch (op.kind) {
      case Kind::kTake:
      case Kind::kGive: {
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) return malformed(op);
        for (std::size_t i = 0; i < 4; ++i)
          if (r->element[i]->type != REDIS_REPLY_INTEGER) return malformed(op);
        TakeResult res;
        res.ok = true;
        res.granted = r->element[0]->integer;
        res.remaining = r->element[1]->integer;
        res.retry_after = std::chrono::microseconds(r->element[2]->integer);
        res.reset_after = std::chrono::microseconds(r->element[3]->integer);
        if (op.take_done) invoke(op.take_done, res);
        return Outcome::kDone;
      }
      case Kind::kAdd: {
        // EXEC: [INCRBY's reply, PEXPIREAT's reply]; nil if aborted.
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER) {
          if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_ERROR)
            setError(std::string(r->element[0]->str, r->element[0]->len));
          return malformed(op);
        }
        invoke(op.value_done, std::optional<std::int64_t>(r->element[0]->integer));
        return Outcome::kDone;
      }
      case Kind::kGet: {
        std::optional<std::int64_t> v;
        if (r->type == REDIS_REPLY_NIL) {
          v = 0;
        } else if (r->type == REDIS_REPLY_STRING) {
          v = parseInt(r->str, r->len);
        } else if (r->type == REDIS_REPLY_INTEGER) {
          v = r->integer;
        }
        if (!v) return malformed(op);
        invoke(op.value_done, v);
        return Outcome::kDone;
      }
    }
    return malformed(op);
  }

  Outcome malformed(Op& op) {
    errors.fetch_add(1, std::memory_order_relaxed);
    if (!readonly) setError("unexpected reply type");
    fail(op);
    return Outcome::kDone;
  }

  // Pipelines the batch in rounds; a NOSCRIPT reply sends that call again
  // with EVAL and the script's text (which also caches it in Redis).
  void process(std::deque<Op>& batch) {
    std::vector<Op*> live_ops;
    for (auto& op : batch) {
      if (op.rejected) {
        fail(op);
      } else {
        live_ops.push_back(&op);
      }
    }
    std::size_t next = 0;
    while (next < live_ops.size()) {
      const std::size_t end = std::min(live_ops.size(), next + kPipelineChunk);
      if (!round(live_ops, next, end, false)) {
        failRest(live_ops, next);
        return;
      }
      next = end;
      if (readonly) {
        readonly = false;
        dropConnection();
        failRest(live_ops, next);
        return;
      }
    }
  }

  // Sends live_ops[begin, end) and completes them; `begin` advances past
  // every call completed. False when the connection was lost.
  bool round(std::vector<Op*>& ops, std::size_t& begin, std::size_t end, bool full_script) {
    std::vector<int> replies;
    for (std::size_t i = begin; i < end; ++i) {
      const int n = append(*ops[i], full_script);
      if (n < 0) {
        setError("out of memory");
        dropConnection();
        return false;
      }
      replies.push_back(n);
    }
    std::vector<Op*> again;
    for (std::size_t i = begin; i < end; ++i) {
      const Outcome o = complete(*ops[i], replies[i - begin], full_script);
      if (o == Outcome::kLost) {
        dropConnection();
        for (Op* op : again) fail(*op);
        begin = i;
        return false;
      }
      if (o == Outcome::kNoScript) again.push_back(ops[i]);
    }
    begin = end;
    if (!again.empty()) {
      script_reloads.fetch_add(1, std::memory_order_relaxed);
      std::size_t b = 0;
      if (!round(again, b, again.size(), true)) {
        failRest(again, b);
        return false;
      }
    }
    return true;
  }

  void failRest(std::vector<Op*>& ops, std::size_t from) {
    for (std::size_t i = from; i < ops.size(); ++i) fail(*ops[i]);
  }

  template <typename F, typename V>
  static void invoke(F& f, const V& v) {
    try {
      f(v);
    } catch (...) {
    }
  }

  static void fail(Op& op) {
    if (op.take_done) invoke(op.take_done, TakeResult{});
    if (op.value_done) invoke(op.value_done, std::optional<std::int64_t>());
    op.take_done = nullptr;
    op.value_done = nullptr;
  }

  RedisOptions options;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Op> queue;
  std::size_t live = 0;  // queued calls not marked rejected
  bool stop = false;

  // The store's thread only.
  Context ctx;
  std::string sha;
  bool readonly = false;

  std::atomic<bool> is_connected{false};
  std::atomic<std::uint64_t> commands_sent{0}, errors{0}, rejected{0}, reconnects{0}, script_reloads{0};
  mutable std::mutex error_mu;
  std::string last_error;

  std::thread thread;  // last: started once everything above exists
};

RedisStore::RedisStore(RedisOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

RedisStore::~RedisStore() = default;

void RedisStore::take(std::string key, std::int64_t want, std::int64_t capacity, std::chrono::milliseconds window,
                      std::function<void(const TakeResult&)> done) {
  Impl::Op op{Impl::Kind::kTake, impl_->options.key_prefix + key};
  op.amount = want;
  op.capacity = capacity;
  op.window_us = window.count() * 1000;
  op.take_done = std::move(done);
  op.rejected = want < 0 || capacity < 1 || window.count() < 1;
  impl_->submit(std::move(op));
}

void RedisStore::give(std::string key, std::int64_t amount, std::int64_t capacity, std::chrono::milliseconds window) {
  if (amount <= 0 || capacity < 1 || window.count() < 1) return;
  Impl::Op op{Impl::Kind::kGive, impl_->options.key_prefix + key};
  op.amount = amount;
  op.capacity = capacity;
  op.window_us = window.count() * 1000;
  impl_->submit(std::move(op));
}

void RedisStore::add(std::string key, std::int64_t amount, std::chrono::system_clock::time_point window_end,
                     std::function<void(std::optional<std::int64_t>)> done) {
  Impl::Op op{Impl::Kind::kAdd, impl_->options.key_prefix + key};
  op.amount = amount;
  op.expire_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        (window_end + impl_->options.counter_expiry_margin).time_since_epoch())
                        .count();
  op.value_done = std::move(done);
  impl_->submit(std::move(op));
}

void RedisStore::get(std::string key, std::function<void(std::optional<std::int64_t>)> done) {
  Impl::Op op{Impl::Kind::kGet, impl_->options.key_prefix + key};
  op.value_done = std::move(done);
  impl_->submit(std::move(op));
}

bool RedisStore::connected() const { return impl_->is_connected.load(std::memory_order_acquire); }
std::uint64_t RedisStore::commandsSent() const { return impl_->commands_sent.load(std::memory_order_relaxed); }
std::uint64_t RedisStore::errors() const { return impl_->errors.load(std::memory_order_relaxed); }
std::uint64_t RedisStore::rejected() const { return impl_->rejected.load(std::memory_order_relaxed); }
std::uint64_t RedisStore::reconnects() const { return impl_->reconnects.load(std::memory_order_relaxed); }
std::uint64_t RedisStore::scriptReloads() const { return impl_->script_reloads.load(std::memory_order_relaxed); }

std::string RedisStore::lastError() const {
  std::lock_guard lk(impl_->error_mu);
  return impl_->last_error;
}

}  // namespace infermesh::ratelimit
