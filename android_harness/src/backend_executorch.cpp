// The ExecuTorch backend: an edgekit .pte (static KV cache inside the program) through ExecuTorch's
// Module API, with the XNNPACK delegate, the optimized and quantized kernels and the runner's own LLM
// kernels (llm_kernels.cpp).
//
// The program's forward must be forward(input_ids int64[1, seq], cache_position int64[seq]) ->
// logits float32[1, seq, vocab]; the token is the argmax of the last logits row. A program that calls an
// operator or a delegate this build lacks is refused at load with one line naming all of them.
#include <executorch/extension/memory_allocator/malloc_memory_allocator.h>
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/backend/interface.h>
#include <executorch/runtime/core/error.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/platform/runtime.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "backend.h"
#include "llm_kernels.h"
#include "pte_contents.h"
#include "threads.h"

#ifndef EDGEKIT_EXECUTORCH_VERSION
#define EDGEKIT_EXECUTORCH_VERSION "unknown"
#endif

namespace edgekit {
namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::MethodMeta;
using executorch::runtime::Tag;

constexpr const char* kExpected =
    "forward(input_ids int64[1, seq], cache_position int64[seq]) -> logits float32[1, seq, vocab]";

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

// Empty string when `meta` has the edgekit static-KV-cache signature, else what is wrong.
std::string check_signature(const MethodMeta& meta, long* max_seq, long* vocab) {
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
  *max_seq = meta.input_tensor_meta(0)->sizes()[1];
  *vocab = out->sizes()[2];
  if (meta.input_tensor_meta(0)->sizes()[0] != 1) return "input_ids batch must be 1";
  if (*max_seq < 1 || *vocab < 1) return "input_ids and logits have empty dimensions";
  return "";
}

std::string error_text(Error e) {
  char code[16];
  std::snprintf(code, sizeof code, " (0x%x)", static_cast<unsigned>(e));
  return std::string(executorch::runtime::to_string(e)) + code;
}

std::set<std::string> registered_kernels() {
  std::set<std::string> names;
  for (const auto& kernel : executorch::runtime::get_registered_kernels()) names.insert(kernel.name_);
  return names;
}

// "" when every operator and delegate of `path`'s forward is available, else one sentence naming the
// missing ones. A file that cannot be read this way is left to the loader to judge.
std::string missing_parts(const std::string& path) {
  PteContents contents;
  std::string problem;
  if (!read_pte_contents(path, "forward", &contents, &problem)) return "";
  const std::set<std::string> kernels = registered_kernels();
  std::set<std::string> missing_ops;
  for (const auto& op : contents.operators) {
    if (!kernels.count(op)) missing_ops.insert(op);
  }
  std::set<std::string> missing_backends;
  for (const auto& id : contents.delegates) {
    if (!executorch::runtime::get_backend_class(id.c_str())) missing_backends.insert(id);
  }
  std::string text;
  auto list = [](const std::set<std::string>& names) {
    std::string joined;
    for (const auto& n : names) joined += (joined.empty() ? "" : ", ") + n;
    return joined;
  };
  if (!missing_ops.empty())
    text += std::to_string(missing_ops.size()) + " operator(s) this runner lacks: " + list(missing_ops);
  if (!missing_backends.empty())
    text += std::string(text.empty() ? "" : "; ") + "delegate(s) this runner lacks: " + list(missing_backends);
  return text;
}

class ExecutorchBackend final : public Backend {
 public:
  Status load(const LoadRequest& request, ModelInfo* info) override {
    info->threads = static_cast<long>(set_threads(static_cast<uint32_t>(request.threads)));
    const std::string& path = request.model;
    std::FILE* probe = std::fopen(path.c_str(), "rb");
    if (probe == nullptr) return Status::Model("cannot open model '" + path + "': " + std::strerror(errno));
    std::fclose(probe);
    // mmap: weights the delegate does not copy stay file-backed pages (what a phone app does);
    // file: the whole program is read into the heap first. The temp allocator serves kernels that ask
    // their context for scratch memory (ExecuTorch's own LLM kernels do, where a build links them).
    module_ = std::make_unique<Module>(path, request.load_mode == "file" ? Module::LoadMode::File : Module::LoadMode::Mmap,
                                       nullptr, nullptr,
                                       std::make_unique<executorch::extension::MallocMemoryAllocator>());
    if (const Error e = module_->load(); e != Error::Ok)
      return Status::Model("'" + path + "' is not a loadable ExecuTorch program: " + error_text(e));
    auto meta = module_->method_meta("forward");
    if (!meta.ok()) {
      std::string names;
      if (auto found = module_->method_names(); found.ok()) {
        for (const auto& n : found.get()) names += (names.empty() ? "" : ", ") + n;
      }
      return Status::Model("'" + path + "' has no method 'forward' (methods: " + (names.empty() ? "none" : names) +
                           "); expected " + kExpected);
    }
    long max_seq = 0;
    if (const std::string problem = check_signature(meta.get(), &max_seq, &vocab_); !problem.empty())
      return Status::Model("'" + path + "' does not have the edgekit KV-cache signature: " + problem + ". Expected " +
                           kExpected + ", found " + describe_signature(meta.get()));
    if (const std::string missing = missing_parts(path); !missing.empty())
      return Status::Model("'" + path + "' needs " + missing + " (edgekit_runner --kernels lists the operators it has)");
    if (const Error e = module_->load_method("forward"); e != Error::Ok)
      return Status::Model("loading method 'forward' of '" + path + "' failed: " + error_text(e) +
                           " (the runtime's log on stderr names the cause)");
    const long max_context = max_seq + 1;
    // The cache's size is fixed at export: --ctx may only restate it (the agents pass every artifact's own).
    if (request.ctx > 0 && request.ctx != max_context)
      return Status::Usage("--ctx " + std::to_string(request.ctx) + " differs from the program's max_context " +
                           std::to_string(max_context) + ", fixed at export");
    const long P = request.prompt_len;
    const long G = request.gen_len;
    if (P > max_seq || P + G - 1 > max_context)
      return Status::Usage("prompt " + std::to_string(P) + " + generated " + std::to_string(G) +
                           " tokens do not fit the program: prompt <= " + std::to_string(max_seq) +
                           " and prompt + generated - 1 <= max_context " + std::to_string(max_context) + " needed");
    info->vocab_size = vocab_;
    info->max_context = max_context;
    // The program's planned memory: activations and, in edgekit's programs, the KV cache buffers.
    long long planned = 0;
    for (size_t i = 0; i < meta->num_memory_planned_buffers(); ++i) {
      if (auto size = meta->memory_planned_buffer_size(i); size.ok()) planned += size.get();
    }
    info->facts_json = ",\"planned_memory_bytes\":" + std::to_string(planned);

    namespace ext = executorch::extension;
    positions_.resize(P);
    for (long i = 0; i < P; ++i) positions_[i] = i;
    prompt_.assign(P, 0);
    auto prefill_ids = ext::from_blob(prompt_.data(), {1, static_cast<int>(P)}, ScalarType::Long);
    auto prefill_pos = ext::from_blob(positions_.data(), {static_cast<int>(P)}, ScalarType::Long);
    auto step_ids = ext::from_blob(&step_id_, {1, 1}, ScalarType::Long);
    auto step_positions = ext::from_blob(&step_pos_, {1}, ScalarType::Long);
    prefill_inputs_ = {EValue(*prefill_ids), EValue(*prefill_pos)};
    step_inputs_ = {EValue(*step_ids), EValue(*step_positions)};
    tensors_ = {prefill_ids, prefill_pos, step_ids, step_positions};
    return Status::Ok();
  }

  // Each repetition starts at position 0: stale cache entries past the prompt are never read (the
  // attention covers positions below cache_position only), so the cache is not wiped.
  Status prefill(const std::vector<int64_t>& ids, int64_t* token) override {
    std::copy(ids.begin(), ids.end(), prompt_.begin());
    return forward(prefill_inputs_, static_cast<long>(ids.size()), token);
  }

  Status step(int64_t token, long position, int64_t* next) override {
    step_id_ = token;
    step_pos_ = position;
    return forward(step_inputs_, 1, next);
  }

  const float* last_logits() const override { return last_; }

 private:
  Status forward(const std::vector<EValue>& inputs, long seq, int64_t* token) {
    auto out = module_->execute("forward", inputs);
    if (!out.ok()) return Status::Failed("forward failed: " + error_text(out.error()));
    last_ = out.get()[0].toTensor().const_data_ptr<float>() + (seq - 1) * vocab_;
    *token = argmax(last_, vocab_);
    return Status::Ok();
  }

  std::unique_ptr<Module> module_;
  long vocab_ = 0;
  const float* last_ = nullptr;  // in the program's output tensor
  std::vector<int64_t> prompt_;
  std::vector<int64_t> positions_;
  int64_t step_id_ = 0;
  int64_t step_pos_ = 0;
  std::vector<executorch::extension::TensorPtr> tensors_;  // keep the inputs' tensor objects alive
  std::vector<EValue> prefill_inputs_;
  std::vector<EValue> step_inputs_;
};

void init_once() {
  static const bool done = [] {
    executorch::runtime::runtime_init();
    register_llm_kernels();
    return true;
  }();
  (void)done;
}

}  // namespace

std::unique_ptr<Backend> make_backend() {
  init_once();
  return std::make_unique<ExecutorchBackend>();
}

std::string backend_version() { return std::string("executorch ") + EDGEKIT_EXECUTORCH_VERSION; }

int print_kernels() {
  init_once();
  for (const auto& name : registered_kernels()) std::printf("%s\n", name.c_str());
  return kExitOk;
}

}  // namespace edgekit
