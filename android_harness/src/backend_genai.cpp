// The ONNX Runtime GenAI backend: a model directory in GenAI's layout (genai_config.json + model.onnx
// + weights) through GenAI's C API, greedy.
//
// GenAI computes lazily, and the events must be stamped where the forward really runs:
//   AppendTokens(prompt)    runs the prefill forward;
//   GenerateNextToken       selects the next token from the logits already computed and appends it;
//                           it runs a forward only when the logits are stale (the appended token's);
//   GetLogits               runs that pending forward and copies the last position's logits.
// So prefill = AppendTokens + GetLogits + argmax + GenerateNextToken, and every step = GetLogits (the
// forward of the token appended last) + argmax + GenerateNextToken: one forward each, and the token
// the runtime appends is checked to be the argmax (a disagreement is a failed repetition).
//
// GenAI has no C header in its packages: the functions used are declared here, with the signatures of
// its C API (ort_genai_c.h, unchanged from 0.11 to 0.18).
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <vector>

#include "backend.h"

#ifndef EDGEKIT_GENAI_VERSION
#define EDGEKIT_GENAI_VERSION "unknown"
#endif

extern "C" {
typedef struct OgaResult OgaResult;
typedef struct OgaConfig OgaConfig;
typedef struct OgaModel OgaModel;
typedef struct OgaGeneratorParams OgaGeneratorParams;
typedef struct OgaGenerator OgaGenerator;
typedef struct OgaTensor OgaTensor;
const char* OgaResultGetError(const OgaResult*);
void OgaDestroyResult(OgaResult*);
OgaResult* OgaCreateConfig(const char* config_path, OgaConfig** out);
OgaResult* OgaConfigOverlay(OgaConfig* config, const char* json);
OgaResult* OgaCreateModelFromConfig(const OgaConfig* config, OgaModel** out);
void OgaDestroyConfig(OgaConfig*);
void OgaDestroyModel(OgaModel*);
OgaResult* OgaCreateGeneratorParams(const OgaModel* model, OgaGeneratorParams** out);
OgaResult* OgaGeneratorParamsSetSearchNumber(OgaGeneratorParams* params, const char* name, double value);
OgaResult* OgaGeneratorParamsSetSearchBool(OgaGeneratorParams* params, const char* name, bool value);
void OgaDestroyGeneratorParams(OgaGeneratorParams*);
OgaResult* OgaCreateGenerator(const OgaModel* model, const OgaGeneratorParams* params, OgaGenerator** out);
void OgaDestroyGenerator(OgaGenerator*);
OgaResult* OgaGenerator_AppendTokens(OgaGenerator* generator, const int32_t* input_ids, size_t count);
OgaResult* OgaGenerator_GenerateNextToken(OgaGenerator* generator);
OgaResult* OgaGenerator_GetNextTokens(const OgaGenerator* generator, const int32_t** out, size_t* out_count);
OgaResult* OgaGenerator_GetLogits(OgaGenerator* generator, OgaTensor** out);
OgaResult* OgaGenerator_GetInput(const OgaGenerator* generator, const char* name, OgaTensor** out);
size_t OgaGenerator_GetSequenceCount(const OgaGenerator* generator, size_t index);
OgaResult* OgaTensorGetType(OgaTensor*, int* out);  // OgaElementType, an int-sized enum
OgaResult* OgaTensorGetShapeRank(OgaTensor*, size_t* out);
OgaResult* OgaTensorGetShape(OgaTensor*, int64_t* shape_dims, size_t shape_dims_count);
OgaResult* OgaTensorGetData(OgaTensor*, void** out);
void OgaDestroyTensor(OgaTensor*);
void OgaShutdown();
// ONNX Runtime's one exported entry point (onnxruntime_c_api.h): its version, as loaded.
struct OrtApiBase {
  const void* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};
const OrtApiBase* OrtGetApiBase();
}

namespace edgekit {
namespace {

constexpr int kFloat32 = 1;                             // OgaElementType_float32
constexpr int kElementBytes[] = {0, 4, 1, 1, 2, 2, 4, 8, 0, 1, 2, 8, 4, 8, 8, 16, 2};  // by OgaElementType

// The message of a failed call ("" on success); the result is freed.
std::string take_error(OgaResult* result) {
  if (result == nullptr) return "";
  std::string text = OgaResultGetError(result);
  OgaDestroyResult(result);
  return text.empty() ? "unknown GenAI error" : text;
}

// The first `"key": value` in a JSON text, as written (a number or a string's contents); "" if absent.
// genai_config.json names each key used here once.
std::string json_value(const std::string& text, const std::string& key) {
  const size_t at = text.find("\"" + key + "\"");
  if (at == std::string::npos) return "";
  size_t p = text.find(':', at + key.size() + 2);
  if (p == std::string::npos) return "";
  p = text.find_first_not_of(" \t\r\n", p + 1);
  if (p == std::string::npos) return "";
  if (text[p] == '"') {
    const size_t end = text.find('"', p + 1);
    return end == std::string::npos ? "" : text.substr(p + 1, end - p - 1);
  }
  const size_t end = text.find_first_of(",}] \t\r\n", p);
  return text.substr(p, end - p);
}

long json_long(const std::string& text, const std::string& key) {
  const std::string value = json_value(text, key);
  return value.empty() ? 0 : std::strtol(value.c_str(), nullptr, 10);
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

class GenaiBackend final : public Backend {
 public:
  ~GenaiBackend() override {
    if (logits_) OgaDestroyTensor(logits_);
    if (generator_) OgaDestroyGenerator(generator_);
    if (params_) OgaDestroyGeneratorParams(params_);
    if (model_) OgaDestroyModel(model_);
    if (config_) OgaDestroyConfig(config_);
    OgaShutdown();  // GenAI's globals must go before the process's static destructors run
  }

  Status load(const LoadRequest& request, ModelInfo* info) override {
    // --model is the artifact's main file (model.onnx) or its directory; GenAI reads the directory.
    std::string dir = request.model;
    if (!is_directory(dir)) {
      std::FILE* probe = std::fopen(dir.c_str(), "rb");
      if (probe == nullptr) return Status::Model("cannot open model '" + dir + "': " + std::strerror(errno));
      std::fclose(probe);
      const size_t slash = dir.rfind('/');
      dir = slash == std::string::npos ? "." : dir.substr(0, slash);
    }
    std::ifstream in(dir + "/genai_config.json");
    if (!in) return Status::Model("'" + dir + "' is not an ORT GenAI model directory: no genai_config.json");
    std::stringstream text;
    text << in.rdbuf();
    const std::string config = text.str();
    const long vocab = json_long(config, "vocab_size");
    const long context_length = json_long(config, "context_length");
    const long layers = json_long(config, "num_hidden_layers");
    if (vocab < 1 || context_length < 1)
      return Status::Model("'" + dir + "/genai_config.json' has no model.vocab_size or model.context_length");

    const long P = request.prompt_len;
    const long G = request.gen_len;
    // GenAI allocates the KV cache for max_length positions (past and present share one buffer).
    max_length_ = request.ctx > 0 ? request.ctx : P + G;
    if (P + G > max_length_ || max_length_ > context_length)
      return Status::Usage("prompt " + std::to_string(P) + " + generated " + std::to_string(G) + " tokens" +
                           (request.ctx > 0 ? " in --ctx " + std::to_string(request.ctx) : "") +
                           " do not fit the model: prompt + generated <= max_length <= context_length " +
                           std::to_string(context_length) + " needed");
    // ONNX Runtime's intra-op pool counts the calling thread; 0 would leave its default (one per core),
    // which the trace could not state, so the default is resolved here.
    threads_ = request.threads > 0 ? request.threads : static_cast<long>(std::thread::hardware_concurrency());
    std::string error = take_error(OgaCreateConfig(dir.c_str(), &config_));
    if (error.empty()) {
      const std::string overlay = "{\"model\":{\"decoder\":{\"session_options\":{\"intra_op_num_threads\":" +
                                  std::to_string(threads_) + "}}}}";
      error = take_error(OgaConfigOverlay(config_, overlay.c_str()));
    }
    if (error.empty()) error = take_error(OgaCreateModelFromConfig(config_, &model_));
    if (error.empty()) error = take_error(OgaCreateGeneratorParams(model_, &params_));
    if (error.empty())
      error = take_error(OgaGeneratorParamsSetSearchNumber(params_, "max_length", static_cast<double>(max_length_)));
    if (error.empty()) error = take_error(OgaGeneratorParamsSetSearchBool(params_, "do_sample", false));
    if (!error.empty()) return Status::Model("'" + dir + "' could not be loaded by ORT GenAI: " + error);

    logits_wanted_ = request.logits;
    info->vocab_size = vocab_ = vocab;
    info->max_context = max_length_;
    info->threads = threads_;
    info->facts_json = ",\"context_length\":" + std::to_string(context_length);
    // The KV cache as GenAI allocates it: a generator's first past-key input, times keys and values of
    // every layer (its creation allocates them; nothing runs).
    if (const Status s = begin_run(); !s.ok()) return Status::Model("'" + dir + "': " + s.message);
    std::string past = json_value(config, "past_key_names");
    char name[256];
    std::snprintf(name, sizeof name, past.empty() ? "past_key_values.%d.key" : past.c_str(), 0);
    OgaTensor* tensor = nullptr;
    if (layers > 0 && take_error(OgaGenerator_GetInput(generator_, name, &tensor)).empty()) {
      size_t rank = 0;
      int type = 0;
      OgaTensorGetShapeRank(tensor, &rank);
      std::vector<int64_t> shape(rank);
      OgaTensorGetShape(tensor, shape.data(), rank);
      OgaTensorGetType(tensor, &type);
      long long elements = 1;
      for (int64_t d : shape) elements *= d;
      if (type > 0 && type < static_cast<int>(sizeof kElementBytes / sizeof kElementBytes[0]))
        info->facts_json += ",\"kv_cache_bytes\":" + std::to_string(2LL * layers * elements * kElementBytes[type]);
      OgaDestroyTensor(tensor);
    }
    return Status::Ok();
  }

  // A fresh generator per repetition (GenAI's way to start again at position 0).
  Status begin_run() override {
    if (generator_) OgaDestroyGenerator(generator_);
    generator_ = nullptr;
    const std::string error = take_error(OgaCreateGenerator(model_, params_, &generator_));
    return error.empty() ? Status::Ok() : Status::Failed("creating a generator failed: " + error);
  }

  Status prefill(const std::vector<int64_t>& ids, int64_t* token) override {
    prompt_.assign(ids.begin(), ids.end());
    if (const std::string e = take_error(OgaGenerator_AppendTokens(generator_, prompt_.data(), prompt_.size()));
        !e.empty())
      return Status::Failed("AppendTokens: " + e);
    return next_token(token);
  }

  Status step(int64_t token, long position, int64_t* next) override {
    // The driver feeds back the token this backend returned, which GenAI has already appended.
    const size_t length = OgaGenerator_GetSequenceCount(generator_, 0);
    if (length != static_cast<size_t>(position) + 1)
      return Status::Failed("GenAI holds " + std::to_string(length) + " tokens, expected " +
                            std::to_string(position + 1) + " (token " + std::to_string(token) + " at position " +
                            std::to_string(position) + ")");
    return next_token(next);
  }

  const float* last_logits() const override { return last_; }

 private:
  // GenAI runs the pending forward, picks its greedy token and appends it (GenerateNextToken), as an app's
  // loop and the Python agent's do. With --print-logits the logits are copied out first (GetLogits runs
  // the forward) and GenAI's pick is checked against their argmax; that read is 3% of a step at two
  // threads, so it is not paid when nobody reads the logits.
  Status next_token(int64_t* token) {
    if (logits_) OgaDestroyTensor(logits_);  // the previous call's copy
    logits_ = nullptr;
    last_ = nullptr;
    if (!logits_wanted_) return pick(token, -1);
    if (const std::string e = take_error(OgaGenerator_GetLogits(generator_, &logits_)); !e.empty())
      return Status::Failed("GetLogits: " + e);
    OgaTensor* logits = logits_;
    size_t rank = 0;
    int type = 0;
    void* data = nullptr;
    OgaTensorGetShapeRank(logits, &rank);
    std::vector<int64_t> shape(rank);
    OgaTensorGetShape(logits, shape.data(), rank);
    OgaTensorGetType(logits, &type);
    OgaTensorGetData(logits, &data);
    Status status;
    if (type != kFloat32 || rank < 1 || shape[rank - 1] != vocab_) {
      status = Status::Failed("logits are not float32 [..., " + std::to_string(vocab_) + "] (element type " +
                              std::to_string(type) + ", last dim " +
                              std::to_string(rank ? shape[rank - 1] : 0) + ")");
    } else {
      long rows = 1;
      for (size_t d = 0; d + 1 < rank; ++d) rows *= static_cast<long>(shape[d]);
      last_ = static_cast<const float*>(data) + (rows - 1) * vocab_;
      *token = argmax(last_, vocab_);
    }
    if (!status.ok()) return status;
    return pick(token, *token);
  }

  // GenerateNextToken and the token GenAI appended; with ``argmax`` >= 0 it must be that one.
  Status pick(int64_t* token, int64_t argmax) {
    if (const std::string e = take_error(OgaGenerator_GenerateNextToken(generator_)); !e.empty())
      return Status::Failed("GenerateNextToken: " + e);
    const int32_t* chosen = nullptr;
    size_t count = 0;
    if (const std::string e = take_error(OgaGenerator_GetNextTokens(generator_, &chosen, &count)); !e.empty())
      return Status::Failed("GetNextTokens: " + e);
    if (count < 1) return Status::Failed("GenAI appended no token");
    if (argmax >= 0 && chosen[0] != argmax)
      return Status::Failed("GenAI appended token " + std::to_string(chosen[0]) + " but the argmax of its logits is " +
                            std::to_string(argmax));
    *token = chosen[0];
    return Status::Ok();
  }

  OgaConfig* config_ = nullptr;
  OgaModel* model_ = nullptr;
  OgaGeneratorParams* params_ = nullptr;
  OgaGenerator* generator_ = nullptr;
  OgaTensor* logits_ = nullptr;  // GetLogits' copy, kept until the next call
  const float* last_ = nullptr;
  long vocab_ = 0;
  long max_length_ = 0;
  long threads_ = 0;
  bool logits_wanted_ = false;
  std::vector<int32_t> prompt_;
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<GenaiBackend>(); }

std::string backend_version() {
  return std::string("onnxruntime-genai ") + EDGEKIT_GENAI_VERSION + ", onnxruntime " +
         OrtGetApiBase()->GetVersionString();
}

int print_kernels() { return kExitOk; }  // ONNX Runtime resolves its operators itself

}  // namespace edgekit
