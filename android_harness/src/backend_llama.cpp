// The llama.cpp backend: a GGUF file through llama.h, greedy.
//
// The context is created at load (inside load_start/load_end, as an app does): n_ctx = --ctx, or the
// workload's P + G positions; its KV cache is llama.cpp's (f16 keys and values by default). Prefill is
// one llama_decode of the whole prompt with logits for its last token only; a step decodes one token.
// The token is the argmax of llama_get_logits_ith(ctx, -1). Each repetition clears the KV cache first.
// The context gets a CPU threadpool of its own, made as llama-bench and llama-cli make theirs (default
// parameters: threads poll 50 rounds before sleeping): without one, ggml starts and joins its worker
// threads at every llama_decode, which costs a decode step a thread start.
// llama.cpp's log goes to stderr, warnings and errors only.
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <llama.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if __has_include("llama-ext.h")
// llama.cpp's staging API (a C++ header in its source tree): the memory it allocated per buffer type,
// from its own accounting. Without it the KV cache size is computed from the model's shape.
#include "llama-ext.h"
#define EDGEKIT_LLAMA_MEMORY_BREAKDOWN 1
#endif

#include "backend.h"

#ifndef EDGEKIT_LLAMA_CPP_VERSION
#define EDGEKIT_LLAMA_CPP_VERSION "unknown"
#endif

namespace edgekit {
namespace {

void log_to_stderr(enum ggml_log_level level, const char* text, void*) {
  // The trace may be on stdout: llama.cpp's log never goes there. Its info/debug chatter is dropped.
  static bool continuing = false;  // GGML_LOG_LEVEL_CONT continues the previous message
  const bool keep = level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR ||
                    (level == GGML_LOG_LEVEL_CONT && continuing);
  if (level != GGML_LOG_LEVEL_CONT) continuing = keep;
  if (keep) std::fputs(text, stderr);
}

class LlamaBackend final : public Backend {
 public:
  LlamaBackend() {
    llama_log_set(log_to_stderr, nullptr);
    llama_backend_init();
  }
  ~LlamaBackend() override {
    if (ctx_) llama_free(ctx_);
    if (threadpool_) threadpool_free_(threadpool_);
    if (model_) llama_model_free(model_);
    llama_backend_free();
  }

  Status load(const LoadRequest& request, ModelInfo* info) override {
    const std::string& path = request.model;
    std::FILE* probe = std::fopen(path.c_str(), "rb");
    if (probe == nullptr) return Status::Model("cannot open model '" + path + "': " + std::strerror(errno));
    char magic[4] = {0, 0, 0, 0};
    const size_t got = std::fread(magic, 1, 4, probe);
    std::fclose(probe);
    if (got != 4 || std::memcmp(magic, "GGUF", 4) != 0)
      return Status::Model("'" + path + "' is not a GGUF file (no GGUF magic)");
    llama_model_params mp = llama_model_default_params();
    mp.load_mode = request.load_mode == "mmap" ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
    model_ = llama_model_load_from_file(path.c_str(), mp);
    if (model_ == nullptr)
      return Status::Model("'" + path + "' could not be loaded by llama.cpp (its log on stderr says why)");

    const long P = request.prompt_len;
    const long G = request.gen_len;
    const long n_ctx = request.ctx > 0 ? request.ctx : P + G;
    const long n_ctx_train = llama_model_n_ctx_train(model_);
    // The last generated token is never fed back: P + G - 1 positions are decoded, within the context and
    // the model's trained context. The context itself may be larger than that (the artifact's max_context
    // is an allocation; llama.cpp warns about it on stderr).
    if (P + G - 1 > n_ctx || (n_ctx_train > 0 && P + G - 1 > n_ctx_train))
      return Status::Usage("prompt " + std::to_string(P) + " + generated " + std::to_string(G) + " tokens" +
                           (request.ctx > 0 ? " in --ctx " + std::to_string(request.ctx) : "") +
                           " do not fit: prompt + generated - 1 <= n_ctx and <= the model's n_ctx_train " +
                           std::to_string(n_ctx_train) + " needed");
    const long threads = request.threads > 0 ? request.threads : static_cast<long>(std::thread::hardware_concurrency());
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(n_ctx);
    cp.n_batch = std::max<uint32_t>(cp.n_batch, static_cast<uint32_t>(P));  // the prompt is one llama_decode
    cp.n_seq_max = 1;
    cp.n_threads = static_cast<int32_t>(threads);
    cp.n_threads_batch = static_cast<int32_t>(threads);
    cp.no_perf = true;
    ctx_ = llama_init_from_model(model_, cp);
    if (ctx_ == nullptr)
      return Status::Model("llama.cpp could not create a context of " + std::to_string(n_ctx) + " positions for '" +
                           path + "' (its log on stderr says why)");
    if (Status s = attach_threadpool(static_cast<int>(threads)); !s.ok()) return s;
    vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_));
    info->vocab_size = vocab_;
    info->max_context = llama_n_ctx(ctx_);
    info->threads = threads;
    info->facts_json = ",\"n_ctx_train\":" + std::to_string(n_ctx_train) + ",\"kv_cache_bytes\":" +
                       std::to_string(kv_cache_bytes()) + ",\"kv_cache_source\":\"" + kv_cache_source() + "\"";
    return Status::Ok();
  }

  Status begin_run() override {
    llama_memory_clear(llama_get_memory(ctx_), true);
    return Status::Ok();
  }

  Status prefill(const std::vector<int64_t>& ids, int64_t* token) override {
    batch_.assign(ids.begin(), ids.end());
    return decode(token);
  }

  Status step(int64_t token, long position, int64_t* next) override {
    (void)position;  // llama_batch_get_one continues after the cache's last position
    batch_.assign(1, static_cast<llama_token>(token));
    return decode(next);
  }

  const float* last_logits() const override { return last_; }

 private:
  // The CPU backend's threadpool functions, looked up in its registry as llama-bench does (the CPU backend
  // may be a separately loaded library).
  Status attach_threadpool(int threads) {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) return Status::Failed("llama.cpp has no CPU backend loaded");
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
    auto* make = reinterpret_cast<decltype(ggml_threadpool_new)*>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
    threadpool_free_ =
        reinterpret_cast<decltype(ggml_threadpool_free)*>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
    if (make == nullptr || threadpool_free_ == nullptr) return Status::Failed("llama.cpp's CPU backend has no threadpool API");
    ggml_threadpool_params params = ggml_threadpool_params_default(threads);
    threadpool_ = make(&params);
    if (threadpool_ == nullptr) return Status::Failed("llama.cpp could not start " + std::to_string(threads) + " threads");
    llama_attach_threadpool(ctx_, threadpool_, nullptr);
    return Status::Ok();
  }

  Status decode(int64_t* token) {
    // A batch from llama_batch_get_one asks for the last token's logits only.
    const int32_t rc = llama_decode(ctx_, llama_batch_get_one(batch_.data(), static_cast<int32_t>(batch_.size())));
    if (rc != 0) return Status::Failed("llama_decode returned " + std::to_string(rc));
    last_ = llama_get_logits_ith(ctx_, -1);
    if (last_ == nullptr) return Status::Failed("llama_get_logits_ith(-1) returned no logits");
    *token = argmax(last_, vocab_);
    return Status::Ok();
  }

#ifdef EDGEKIT_LLAMA_MEMORY_BREAKDOWN
  // The context's own memory (the KV cache) summed over buffer types, as llama.cpp accounts it.
  long long kv_cache_bytes() const {
    long long total = 0;
    for (const auto& entry : llama_get_memory_breakdown(ctx_)) total += static_cast<long long>(entry.second.context);
    return total;
  }
  static const char* kv_cache_source() { return "llama_get_memory_breakdown"; }
#else
  // n_ctx x layers x (keys + values) x kv heads x head dim x f16 (the default cache type).
  long long kv_cache_bytes() const {
    const long long head_dim = llama_model_n_embd(model_) / llama_model_n_head(model_);
    return static_cast<long long>(llama_n_ctx(ctx_)) * llama_model_n_layer(model_) * 2 *
           llama_model_n_head_kv(model_) * head_dim * 2;
  }
  static const char* kv_cache_source() { return "computed"; }
#endif

  llama_model* model_ = nullptr;
  llama_context* ctx_ = nullptr;
  ggml_threadpool* threadpool_ = nullptr;
  decltype(ggml_threadpool_free)* threadpool_free_ = nullptr;
  long vocab_ = 0;
  const float* last_ = nullptr;  // llama.cpp's logits buffer
  std::vector<llama_token> batch_;
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<LlamaBackend>(); }

std::string backend_version() { return std::string("llama.cpp ") + EDGEKIT_LLAMA_CPP_VERSION; }

int print_kernels() { return kExitOk; }  // ggml resolves its operators itself

}  // namespace edgekit
