// edgekit_runner: times greedy generation from fixed token ids through one inference runtime (the
// backend this executable was built with: backend.h) and writes trace events (device_agents/TRACE.md).
//
// It records raw timestamps only; every metric is computed on the host. It has no tokenizer: the prompt
// ids come from the host in the --prompt-ids file (the same ids every runner gets). This file is the
// driver every backend shares: options, prompt ids, the timing loop and the output lines; it must not
// know any runtime's API. See android_harness/README.md for the command line, the output lines and the
// exit codes.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <new>
#include <string>
#include <vector>

#include "backend.h"
#include "proc_fields.h"
#include "trace_writer.h"

#ifndef EDGEKIT_RUNNER_VERSION
#define EDGEKIT_RUNNER_VERSION "1.1.0"
#endif

namespace {

using edgekit::kExitModel;
using edgekit::kExitOk;
using edgekit::kExitRunFailed;
using edgekit::kExitUsage;
using edgekit::Status;

struct Options {
  std::string model;
  std::string trace;
  std::string prompt_ids_file;
  long prompt_len = -1;  // -1: the count of --prompt-ids
  long gen_len = 32;
  long warmup = 1;
  long runs = 3;
  long threads = 0;
  long ctx = 0;
  bool print_tokens = false;
  bool print_logits = false;
  std::string load_mode = "mmap";
};

const char* kUsage =
    "usage: edgekit_runner --model FILE --prompt-ids FILE [--prompt-len P] [--gen-len G] [--warmup W]\n"
    "                      [--runs R] [--threads T] [--trace FILE] [--print-tokens] [--print-logits]\n"
    "                      [--load-mode mmap|file] [--ctx N]\n"
    "       edgekit_runner --clock-sync | --kernels | --version | --help\n";

std::string version_string() {
  return std::string("edgekit_runner ") + EDGEKIT_RUNNER_VERSION + " (" + edgekit::backend_version() + ")";
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
    if (arg == "--print-tokens" || arg == "--print-logits") {
      (arg == "--print-tokens" ? opt->print_tokens : opt->print_logits) = true;
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
                            {"--threads", &opt->threads, 0},       {"--ctx", &opt->ctx, 1}};
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

// A /proc file's whole text (empty when it cannot be read).
std::string proc_text(const char* path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

long self_hwm_kb() { return edgekit::field_kb(proc_text("/proc/self/status"), "VmHWM:"); }

// The runner's own memory at the end of a repetition (its KV cache at its largest), read after the last
// token and before run_end: every repetition has a PSS figure however short it is, where the agent's
// sampler reads PSS only now and then (smaps_rollup walks every page, 1-3 ms for a 135M model).
std::string memory_sample(int64_t ts_ns) {
  const std::string status = proc_text("/proc/self/status");
  return "{\"type\":\"sample\",\"ts_ns\":" + std::to_string(ts_ns) +
         ",\"rss_kb\":" + edgekit::kb_json(edgekit::field_kb(status, "VmRSS:")) +
         ",\"hwm_kb\":" + edgekit::kb_json(edgekit::field_kb(status, "VmHWM:")) +
         ",\"pss_kb\":" + edgekit::kb_json(edgekit::field_kb(proc_text("/proc/self/smaps_rollup"), "Pss:")) + "}";
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

// {"type":"logits",...}: a diagnostic for comparing a runtime's numbers with another's, off by default.
// Formatted after the event is stamped, so it lands in the next phase's time: never time with it on.
std::string logits_line(int run, bool warm, long index, const float* values, long n) {
  std::string text = "{\"type\":\"logits\",\"run\":" + std::to_string(run) + ",\"warmup\":" +
                     (warm ? "true" : "false") + ",\"token_index\":" + std::to_string(index) + ",\"values\":[";
  char number[32];
  for (long v = 0; v < n; ++v) {
    std::snprintf(number, sizeof number, "%s%.9g", v ? "," : "", values[v]);
    text += number;
  }
  return text + "]}";
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
  const long P = static_cast<long>(prompt.size());
  const long G = opt.gen_len;

  std::unique_ptr<edgekit::Backend> backend = edgekit::make_backend();
  edgekit::LoadRequest request{opt.model, opt.load_mode, opt.threads, P, G, opt.ctx, opt.print_logits};
  edgekit::ModelInfo info;
  trace.event("load_start", monotonic_ns(), -1, false);
  if (const Status loaded = backend->load(request, &info); !loaded.ok()) {
    if (loaded.code == kExitUsage) return usage_error(loaded.message);
    std::fprintf(stderr, "edgekit_runner: %s\n", loaded.message.c_str());
    trace.error(monotonic_ns(), -1, false, "runtime-error", loaded.message);
    return kExitModel;
  }
  trace.event("load_end", monotonic_ns(), -1, false);
  for (int64_t id : prompt) {
    if (id >= info.vocab_size)
      return usage_error("prompt id " + std::to_string(id) + " is outside the vocabulary (" +
                         std::to_string(info.vocab_size) + " ids)");
  }
  trace.line("{\"type\":\"runner_info\",\"version\":" + edgekit::json_string(version_string()) +
             ",\"vocab_size\":" + std::to_string(info.vocab_size) + ",\"max_context\":" +
             std::to_string(info.max_context) + ",\"threads\":" + std::to_string(info.threads) +
             ",\"prompt_ids\":" + json_ids(prompt) + info.facts_json + "}");
  trace.flush();

  long completed = 0;
  long failed = 0;
  std::vector<int64_t> generated;
  generated.reserve(G);
  for (long i = 0; i < opt.warmup + opt.runs; ++i) {
    const bool warm = i < opt.warmup;
    const int r = static_cast<int>(warm ? i : i - opt.warmup);
    generated.clear();
    // Outside the repetition's events: what a runtime needs to start again at position 0.
    const Status reset = backend->begin_run();
    trace.event("run_start", monotonic_ns(), r, warm);
    if (!reset.ok()) {
      trace.error(monotonic_ns(), r, warm, "runtime-error", "starting a repetition failed: " + reset.message);
      failed += warm ? 0 : 1;
      continue;
    }
    trace.event("prefill_start", monotonic_ns(), r, warm);
    int64_t token = 0;
    if (const Status s = backend->prefill(prompt, &token); !s.ok()) {
      trace.error(monotonic_ns(), r, warm, "runtime-error", "prefill failed: " + s.message);
      failed += warm ? 0 : 1;
      continue;
    }
    generated.push_back(token);
    // Stamped once the token is known (after the argmax), like each decode_step.
    trace.event("prefill_end", monotonic_ns(), r, warm);
    if (opt.print_logits) trace.line(logits_line(r, warm, 0, backend->last_logits(), info.vocab_size));
    bool ok = true;
    for (long k = 1; k < G; ++k) {
      if (const Status s = backend->step(generated.back(), P + k - 1, &token); !s.ok()) {
        trace.error(monotonic_ns(), r, warm, "runtime-error",
                    "decode step " + std::to_string(k) + " failed: " + s.message);
        ok = false;
        break;
      }
      generated.push_back(token);
      trace.event("decode_step", monotonic_ns(), r, warm, ",\"token_index\":" + std::to_string(k));
      if (opt.print_logits) trace.line(logits_line(r, warm, k, backend->last_logits(), info.vocab_size));
    }
    if (!ok) {
      failed += warm ? 0 : 1;
      continue;
    }
    trace.line(memory_sample(monotonic_ns()));
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

namespace edgekit {
int64_t argmax(const float* values, long n) {
  long best = 0;
  for (long v = 1; v < n; ++v) {
    if (values[v] > values[best]) best = v;
  }
  return best;
}
}  // namespace edgekit

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
  if (argc == 2 && std::strcmp(argv[1], "--kernels") == 0) return edgekit::print_kernels();
  Options opt;
  if (const std::string problem = parse_args(argc, argv, &opt); !problem.empty()) return usage_error(problem);
  std::FILE* out = stdout;
  if (!opt.trace.empty()) {
    out = std::fopen(opt.trace.c_str(), "w");
    if (out == nullptr) return usage_error("cannot write --trace '" + opt.trace + "': " + std::strerror(errno));
  }
  edgekit::TraceWriter trace(out);
  try {
    return run(opt, trace);
  } catch (const std::bad_alloc&) {
    trace.error(edgekit::monotonic_ns(), -1, false, "oom", "out of memory (std::bad_alloc)");
    std::fprintf(stderr, "edgekit_runner: out of memory\n");
    return kExitRunFailed;
  }
}
