// The seam between the runner's driver (main.cpp: options, prompt ids, the timing loop, the trace) and
// one inference runtime. Each executable links exactly one implementation (backend_executorch.cpp,
// backend_genai.cpp, backend_llama.cpp), so a device gets only the libraries of the runtime it runs.
//
// A backend loads a model and produces the model's greedy tokens: prefill returns the argmax of the
// last prompt position's logits, step feeds one token and returns the argmax of its logits. It never
// reads a clock or writes the trace; the driver stamps events around its calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace edgekit {

// The runner's exit codes (android_harness/README.md).
constexpr int kExitOk = 0;
constexpr int kExitRunFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitModel = 3;

// Ok (code 0) or a problem: kExitUsage (the workload cannot run on this model), kExitModel (the model
// cannot be opened or loaded), kExitRunFailed (a forward failed).
struct Status {
  int code = kExitOk;
  std::string message;
  bool ok() const { return code == kExitOk; }
  static Status Ok() { return {}; }
  static Status Usage(std::string m) { return {kExitUsage, std::move(m)}; }
  static Status Model(std::string m) { return {kExitModel, std::move(m)}; }
  static Status Failed(std::string m) { return {kExitRunFailed, std::move(m)}; }
};

// What the driver hands a backend at load time.
struct LoadRequest {
  std::string model;        // --model as given
  std::string load_mode;    // mmap | file
  long threads = 0;         // --threads (0: the runtime's default)
  long prompt_len = 0;      // P
  long gen_len = 0;         // G: one token from prefill + G-1 decode steps
  long ctx = 0;             // --ctx (0: the backend's default)
  bool logits = false;      // --print-logits: the driver reads last_logits() after every token
};

// What a backend reports after loading (the runner_info line).
struct ModelInfo {
  long vocab_size = 0;
  long max_context = 0;     // positions the loaded model can hold
  long threads = 0;         // threads in effect
  std::string facts_json;   // extra runner_info members, each starting with a comma (may be empty)
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Opens the model, sized for the request's workload. Usage: the workload does not fit the model;
  // Model: the file is missing, unreadable or not a model of this runtime.
  virtual Status load(const LoadRequest& request, ModelInfo* info) = 0;
  // Called before each repetition, outside its timed events: start again at position 0.
  virtual Status begin_run() { return Status::Ok(); }
  // The prompt at positions 0..P-1; *token = argmax of the last position's logits.
  virtual Status prefill(const std::vector<int64_t>& ids, int64_t* token) = 0;
  // `token` at `position`; *next = argmax of its logits.
  virtual Status step(int64_t token, long position, int64_t* next) = 0;
  // The vocab_size logits the last prefill or step took its token from; valid until the next call. Only
  // read when LoadRequest::logits was set: a backend may skip copying them out otherwise (GenAI does).
  virtual const float* last_logits() const = 0;
};

std::unique_ptr<Backend> make_backend();
// "executorch 1.5.1+cpu", "onnxruntime-genai 0.15.2 (onnxruntime 1.32.0)", "llama.cpp b11312".
std::string backend_version();
// --kernels: the operators this runner can execute, one per line on stdout (ExecuTorch: the kernel
// registry's names; runtimes without a kernel registry print nothing). Returns the exit code.
int print_kernels();

// Index of the largest of `n` floats (the first one on ties, as torch.argmax).
int64_t argmax(const float* values, long n);

}  // namespace edgekit
