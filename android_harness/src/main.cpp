// edgekit_runner: loads an edgekit .pte (static KV cache inside the program) with ExecuTorch's Module
// API and times greedy generation from fixed token ids, writing trace events (device_agents/TRACE.md).
//
// It records raw timestamps only; every metric is computed on the host. It has no tokenizer: the prompt
// ids come from the host in the --prompt-ids file (the same ids every runner gets).
// See android_harness/README.md for the command line, the output lines and the exit codes.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/error.h>
#include <executorch/runtime/platform/runtime.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "threads.h"
#include "trace_writer.h"

#ifndef EDGEKIT_RUNNER_VERSION
#define EDGEKIT_RUNNER_VERSION "1.0.0"
#endif
#ifndef EDGEKIT_EXECUTORCH_VERSION
#define EDGEKIT_EXECUTORCH_VERSION "unknown"
#endif

namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
using executorch::runtime::Tag;

constexpr int kExitOk = 0;
constexpr int kExitRunFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitModel = 3;
constexpr const char* kExpected =
    "forward(input_ids int64[1, seq], cache_position int64[seq]) -> logits float32[1, seq, vocab]";

struct Options {
  std::string model;
  std::string trace;
  std::string prompt_ids_file;
  long prompt_len = -1;  // -1: the count of --prompt-ids
  long gen_len = 32;
  long warmup = 1;
  long runs = 3;
  long threads = 0;
  bool print_tokens = false;
  std::string load_mode = "mmap";
};

const char* kUsage =
    "usage: edgekit_runner --model FILE.pte --prompt-ids FILE [--prompt-len P] [--gen-len G] [--warmup W]\n"
    "                      [--runs R] [--threads T] [--trace FILE] [--print-tokens]\n"
    "                      [--load-mode mmap|file]\n"
    "       edgekit_runner --clock-sync | --version | --help\n";

std::string version_string() {
  return std::string("edgekit_runner ") + EDGEKIT_RUNNER_VERSION + " (executorch " + EDGEKIT_EXECUTORCH_VERSION +
         ")";
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "edgekit_runner: %s\n%s", message.c_str(), kUsage);
  return kExitUsage;
}

bool parse_count(const char* text, long min_value, long* out) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min_value) return false;
  *out = value;
  return true;
}

// Returns an empty string on success, else the problem.
std::string parse_args(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--print-tokens") {
      opt->print_tokens = true;
      continue;
    }
    if (i + 1 >= argc) return "option " + arg + " needs a value";
    const char* value = argv[++i];
    struct Count {
      const char* name;
      long* field;
      long min_value;
    };
    const Count counts[] = {{"--prompt-len", &opt->prompt_len, 1}, {"--gen-len", &opt->gen_len, 1},
                            {"--warmup", &opt->warmup, 0},         {"--runs", &opt->runs, 1},
                            {"--threads", &opt->threads, 0}};
    bool matched = false;
    for (const Count& c : counts) {
      if (arg == c.name) {
        if (!parse_count(value, c.min_value, c.field))
          return arg + " must be an integer >= " + std::to_string(c.min_value) + ", got '" + value + "'";
        matched = true;
      }
    }
    if (matched) continue;
    if (arg == "--model") {
      opt->model = value;
    } else if (arg == "--trace") {
      opt->trace = value;
    } else if (arg == "--prompt-ids") {
      opt->prompt_ids_file = value;
    } else if (arg == "--load-mode") {
      if (std::strcmp(value, "mmap") != 0 && std::strcmp(value, "file") != 0)
        return std::string("--load-mode must be mmap or file, got '") + value + "'";
      opt->load_mode = value;
    } else {
      return "unknown option '" + arg + "'";
    }
  }
  if (opt->model.empty()) return "--model is required";
  if (opt->prompt_ids_file.empty()) return "--prompt-ids is required (the host writes the prompt's token ids)";
  return "";
}

const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Long: return "int64";
    case ScalarType::Int: return "int32";
    case ScalarType::Short: return "int16";
    case ScalarType::Char: return "int8";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Bool: return "bool";
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    default: return "other-dtype";
  }
}

const char* tag_name(Tag tag) {
  switch (tag) {
    case Tag::None: return "None";
    case Tag::Int: return "int";
    case Tag::Double: return "float";
    case Tag::Bool: return "bool";
    case Tag::String: return "str";
    default: return "non-tensor";
  }
}

// "int64[1, 127]" for a tensor, the tag name for anything else.
template <typename TagFn, typename MetaFn>
std::string describe_value(TagFn tag_of, MetaFn meta_of, size_t index) {
  auto tag = tag_of(index);
  if (!tag.ok()) return "?";
  if (tag.get() != Tag::Tensor) return tag_name(tag.get());
  auto meta = meta_of(index);
  if (!meta.ok()) return "tensor";
  std::string text = dtype_name(meta->scalar_type());
  text += "[";
  const auto sizes = meta->sizes();
  for (size_t d = 0; d < sizes.size(); ++d) text += (d ? ", " : "") + std::to_string(sizes[d]);
  return text + "]";
}

std::string describe_signature(const MethodMeta& meta) {
  std::string text = "forward(";
  for (size_t i = 0; i < meta.num_inputs(); ++i) {
    text += (i ? ", " : "") + describe_value([&](size_t k) { return meta.input_tag(k); },
                                             [&](size_t k) { return meta.input_tensor_meta(k); }, i);
  }
  text += ") -> ";
  for (size_t i = 0; i < meta.num_outputs(); ++i) {
    text += (i ? ", " : "") + describe_value([&](size_t k) { return meta.output_tag(k); },
                                             [&](size_t k) { return meta.output_tensor_meta(k); }, i);
  }
  return text;
}

struct Signature {
  long max_seq = 0;  // the largest seq the method accepts (max_context - 1)
  long vocab = 0;
};

// Empty string when `meta` has the edgekit static-KV-cache signature, else what is wrong.
std::string check_signature(const MethodMeta& meta, Signature* sig) {
  if (meta.num_inputs() != 2) return "2 inputs expected, found " + std::to_string(meta.num_inputs());
  if (meta.num_outputs() != 1) return "1 output expected, found " + std::to_string(meta.num_outputs());
  const int ranks[2] = {2, 1};
  const char* names[2] = {"input_ids", "cache_position"};
  for (size_t i = 0; i < 2; ++i) {
    auto tag = meta.input_tag(i);
    auto tm = meta.input_tensor_meta(i);
    if (!tag.ok() || tag.get() != Tag::Tensor || !tm.ok()) return std::string(names[i]) + " is not a tensor";
    if (tm->scalar_type() != ScalarType::Long)
      return std::string(names[i]) + " must be int64, found " + dtype_name(tm->scalar_type());
    if (static_cast<int>(tm->sizes().size()) != ranks[i])
      return std::string(names[i]) + " must have rank " + std::to_string(ranks[i]) + ", found rank " +
             std::to_string(tm->sizes().size());
  }
  auto tag = meta.output_tag(0);
  auto out = meta.output_tensor_meta(0);
  if (!tag.ok() || tag.get() != Tag::Tensor || !out.ok()) return "logits is not a tensor";
  if (out->scalar_type() != ScalarType::Float)
    return std::string("logits must be float32, found ") + dtype_name(out->scalar_type());
  if (out->sizes().size() != 3)
    return "logits must have rank 3 [1, seq, vocab] (a program with a KV cache inside), found rank " +
           std::to_string(out->sizes().size());
  sig->max_seq = meta.input_tensor_meta(0)->sizes()[1];
  sig->vocab = out->sizes()[2];
  if (meta.input_tensor_meta(0)->sizes()[0] != 1) return "input_ids batch must be 1";
  if (sig->max_seq < 1 || sig->vocab < 1) return "input_ids and logits have empty dimensions";
  return "";
}

long self_hwm_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

std::string error_text(Error e) {
  char code[16];
  std::snprintf(code, sizeof code, " (0x%x)", static_cast<unsigned>(e));
  return std::string(executorch::runtime::to_string(e)) + code;
}

bool read_prompt_ids(const std::string& path, std::vector<int64_t>* ids, std::string* problem) {
  std::ifstream in(path);
  if (!in) {
    *problem = "cannot read --prompt-ids file '" + path + "'";
    return false;
  }
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    errno = 0;
    const long long value = std::strtoll(word.c_str(), &end, 10);
    if (errno != 0 || *end != '\0' || value < 0) {
      *problem = "--prompt-ids file '" + path + "' holds '" + word + "', not a token id";
      return false;
    }
    ids->push_back(value);
  }
  if (ids->empty()) {
    *problem = "--prompt-ids file '" + path + "' holds no ids";
    return false;
  }
  return true;
}

int64_t argmax_last_row(const executorch::aten::Tensor& logits, long seq, long vocab) {
  const float* row = logits.const_data_ptr<float>() + (seq - 1) * vocab;
  long best = 0;
  for (long v = 1; v < vocab; ++v) {
    if (row[v] > row[best]) best = v;
  }
  return best;
}

std::string json_ids(const std::vector<int64_t>& ids) {
  std::string text = "[";
  for (size_t i = 0; i < ids.size(); ++i) text += (i ? "," : "") + std::to_string(ids[i]);
  return text + "]";
}

int run(const Options& opt, edgekit::TraceWriter& trace) {
  using edgekit::monotonic_ns;
  trace.clock_sync();
  std::vector<int64_t> prompt;
  std::string problem;
  if (!read_prompt_ids(opt.prompt_ids_file, &prompt, &problem)) return usage_error(problem);
  if (opt.prompt_len > 0 && opt.prompt_len != static_cast<long>(prompt.size()))
    return usage_error("--prompt-len " + std::to_string(opt.prompt_len) + " but the --prompt-ids file holds " +
                       std::to_string(prompt.size()) + " ids");
  const long threads = static_cast<long>(edgekit::set_threads(static_cast<uint32_t>(opt.threads)));

  trace.event("load_start", monotonic_ns(), -1, false);
  auto fail_load = [&](const std::string& message) {
    std::fprintf(stderr, "edgekit_runner: %s\n", message.c_str());
    trace.error(monotonic_ns(), -1, false, "runtime-error", message);
    return kExitModel;
  };
  std::FILE* probe = std::fopen(opt.model.c_str(), "rb");
  if (probe == nullptr) return fail_load("cannot open model '" + opt.model + "': " + std::strerror(errno));
  std::fclose(probe);
  // mmap: weights the delegate does not copy stay file-backed pages (what a phone app does);
  // file: the whole program is read into the heap first.
  Module module(opt.model, opt.load_mode == "file" ? Module::LoadMode::File : Module::LoadMode::Mmap);
  if (const Error e = module.load(); e != Error::Ok)
    return fail_load("'" + opt.model + "' is not a loadable ExecuTorch program: " + error_text(e));
  auto meta = module.method_meta("forward");
  if (!meta.ok()) {
    std::string names;
    if (auto found = module.method_names(); found.ok()) {
      for (const auto& n : found.get()) names += (names.empty() ? "" : ", ") + n;
    }
    return fail_load("'" + opt.model + "' has no method 'forward' (methods: " + (names.empty() ? "none" : names) +
                     "); expected " + kExpected);
  }
  Signature sig;
  if (const std::string problem = check_signature(meta.get(), &sig); !problem.empty())
    return fail_load("'" + opt.model + "' does not have the edgekit KV-cache signature: " + problem + ". Expected " +
                     kExpected + ", found " + describe_signature(meta.get()));
  if (const Error e = module.load_method("forward"); e != Error::Ok)
    return fail_load("loading method 'forward' of '" + opt.model + "' failed: " + error_text(e) +
                     " (an unregistered operator or backend is named on stderr)");
  trace.event("load_end", monotonic_ns(), -1, false);

  const long max_context = sig.max_seq + 1;
  const long P = static_cast<long>(prompt.size());
  const long G = opt.gen_len;
  for (int64_t id : prompt) {
    if (id >= sig.vocab)
      return usage_error("prompt id " + std::to_string(id) + " is outside the vocabulary (" +
                         std::to_string(sig.vocab) + " ids)");
  }
  if (P > sig.max_seq || P + G - 1 > max_context)
    return usage_error("prompt " + std::to_string(P) + " + generated " + std::to_string(G) +
                       " tokens do not fit the program: prompt <= " + std::to_string(sig.max_seq) +
                       " and prompt + generated - 1 <= max_context " + std::to_string(max_context) + " needed");
  trace.line("{\"type\":\"runner_info\",\"version\":" + edgekit::json_string(version_string()) +
             ",\"vocab_size\":" + std::to_string(sig.vocab) + ",\"max_context\":" + std::to_string(max_context) +
             ",\"threads\":" + std::to_string(threads) + ",\"prompt_ids\":" + json_ids(prompt) + "}");
  trace.flush();

  namespace ext = executorch::extension;
  std::vector<int64_t> positions(P);
  for (long i = 0; i < P; ++i) positions[i] = i;
  auto prefill_ids = ext::from_blob(prompt.data(), {1, static_cast<int>(P)}, ScalarType::Long);
  auto prefill_pos = ext::from_blob(positions.data(), {static_cast<int>(P)}, ScalarType::Long);
  int64_t step_id = 0;
  int64_t step_pos = 0;
  auto step_ids = ext::from_blob(&step_id, {1, 1}, ScalarType::Long);
  auto step_positions = ext::from_blob(&step_pos, {1}, ScalarType::Long);
  const std::vector<EValue> prefill_inputs{EValue(*prefill_ids), EValue(*prefill_pos)};
  const std::vector<EValue> step_inputs{EValue(*step_ids), EValue(*step_positions)};

  long completed = 0;
  long failed = 0;
  std::vector<int64_t> generated;
  generated.reserve(G);
  for (long i = 0; i < opt.warmup + opt.runs; ++i) {
    const bool warm = i < opt.warmup;
    const int r = static_cast<int>(warm ? i : i - opt.warmup);
    generated.clear();
    trace.event("run_start", monotonic_ns(), r, warm);
    trace.event("prefill_start", monotonic_ns(), r, warm);
    auto out = module.execute("forward", prefill_inputs);
    if (!out.ok()) {
      trace.error(monotonic_ns(), r, warm, "runtime-error", "forward (prefill) failed: " + error_text(out.error()));
      failed += warm ? 0 : 1;
      continue;
    }
    generated.push_back(argmax_last_row(out.get()[0].toTensor(), P, sig.vocab));
    trace.event("prefill_end", monotonic_ns(), r, warm);
    bool ok = true;
    for (long k = 1; k < G; ++k) {
      step_id = generated.back();
      step_pos = P + k - 1;
      auto step = module.execute("forward", step_inputs);
      if (!step.ok()) {
        trace.error(monotonic_ns(), r, warm, "runtime-error",
                    "forward (decode step " + std::to_string(k) + ") failed: " + error_text(step.error()));
        ok = false;
        break;
      }
      generated.push_back(argmax_last_row(step.get()[0].toTensor(), 1, sig.vocab));
      trace.event("decode_step", monotonic_ns(), r, warm, ",\"token_index\":" + std::to_string(k));
    }
    if (!ok) {
      failed += warm ? 0 : 1;
      continue;
    }
    trace.event("run_end", monotonic_ns(), r, warm);
    if (opt.print_tokens)
      trace.line("{\"type\":\"tokens\",\"run\":" + std::to_string(r) + ",\"warmup\":" + (warm ? "true" : "false") +
                 ",\"ids\":" + json_ids(generated) + "}");
    completed += warm ? 0 : 1;
    trace.flush();
  }
  trace.clock_sync();
  trace.line("{\"type\":\"runner_footer\",\"ts_ns\":" + std::to_string(monotonic_ns()) + ",\"status\":\"" +
             (failed ? "failed" : "ok") + "\",\"runs_completed\":" + std::to_string(completed) +
             ",\"runs_failed\":" + std::to_string(failed) + ",\"self_hwm_kb\":" + std::to_string(self_hwm_kb()) + "}");
  trace.flush();
  return failed ? kExitRunFailed : kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("%s\n", version_string().c_str());
    return kExitOk;
  }
  if (argc == 2 && std::strcmp(argv[1], "--help") == 0) {
    std::printf("%s", kUsage);
    return kExitOk;
  }
  if (argc == 2 && std::strcmp(argv[1], "--clock-sync") == 0) {
    // One clock_sync event on stdout: how the sh agent, which has no monotonic clock, gets one.
    edgekit::TraceWriter(stdout).clock_sync();
    return kExitOk;
  }
  Options opt;
  if (const std::string problem = parse_args(argc, argv, &opt); !problem.empty()) return usage_error(problem);
  std::FILE* out = stdout;
  if (!opt.trace.empty()) {
    out = std::fopen(opt.trace.c_str(), "w");
    if (out == nullptr) return usage_error("cannot write --trace '" + opt.trace + "': " + std::strerror(errno));
  }
  executorch::runtime::runtime_init();
  edgekit::TraceWriter trace(out);
  try {
    return run(opt, trace);
  } catch (const std::bad_alloc&) {
    trace.error(edgekit::monotonic_ns(), -1, false, "oom", "out of memory (std::bad_alloc)");
    std::fprintf(stderr, "edgekit_runner: out of memory\n");
    return kExitRunFailed;
  }
}
