// ExecuTorch's LLM custom operators, implemented here for the runner's kernel registry:
//
//   llama::update_cache.out(Tensor value, Tensor(a!) cache, SymInt start_pos, *, Tensor(b!) out)
//   llama::custom_sdpa.out(Tensor query, Tensor key, Tensor value, SymInt start_pos, Tensor? attn_mask,
//                          float dropout_p, bool is_causal, float? scale, *, Tensor(a!) out)
//
// edgekit's .pte programs keep their KV cache as per-layer buffers [B, S_max, H_kv, D] (sequence at dim
// 1) that update_cache writes in place, and attend over the filled part only with custom_sdpa. The
// executorch pip wheel ships no runtime library with these kernels (only the Python-side AOT library),
// so the runner brings its own. Written from the operators' schemas and documented semantics; float32
// only, which is what edgekit exports. It registers a kernel only where the registry has none, so a
// build that also links ExecuTorch's own LLM kernels keeps those.
//
// Without an attention mask custom_sdpa reads only cache positions below start_pos + seq (the rest hold
// a previous repetition's stale entries); with one, like ExecuTorch's kernel, the mask spans the whole
// cache and decides. Must not allocate per call on the hot path (scratch rows are thread-local).
#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_runtime_context.h>
#include <executorch/runtime/kernel/operator_registry.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <vector>

#include "llm_kernels.h"

namespace edgekit {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::KernelRuntimeContext;
using executorch::runtime::Span;

// One line on stderr naming the operator and the problem, then the context fails the method's execute.
void fail(KernelRuntimeContext& ctx, const char* op, const char* format, ...) {
  char text[400];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  std::fprintf(stderr, "edgekit_runner: %s: %s\n", op, text);
  ctx.fail(Error::InvalidArgument);
}

bool contiguous(const Tensor& t) {
  const auto order = t.dim_order();
  for (size_t d = 0; d < order.size(); ++d) {
    if (order[d] != static_cast<executorch::aten::DimOrderType>(d)) return false;
  }
  return true;
}

// ---- llama::update_cache.out -------------------------------------------------------------------------

void update_cache_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  constexpr const char* kOp = "llama::update_cache.out";
  if (stack.size() < 4) return fail(ctx, kOp, "expected 4 arguments, got %zu", stack.size());
  const Tensor& value = stack[0]->toTensor();
  Tensor& cache = stack[1]->toTensor();
  const int64_t start_pos = stack[2]->toInt();
  if (value.dim() != 4 || cache.dim() != 4)
    return fail(ctx, kOp, "value and cache must be 4-d [B, S, H, D], got %zd-d and %zd-d", value.dim(), cache.dim());
  if (value.element_size() != cache.element_size() || value.scalar_type() != cache.scalar_type())
    return fail(ctx, kOp, "value and cache must have the same dtype");
  for (int d : {0, 2, 3}) {
    if (value.size(d) != cache.size(d))
      return fail(ctx, kOp, "value and cache differ in dim %d: %zd vs %zd", d, value.size(d), cache.size(d));
  }
  if (!contiguous(value) || !contiguous(cache)) return fail(ctx, kOp, "value and cache must be contiguous");
  const int64_t seq = value.size(1);
  const int64_t max_seq = cache.size(1);
  if (start_pos < 0 || start_pos + seq > max_seq)
    return fail(ctx, kOp, "start_pos %lld + seq %lld exceeds the cache's %lld positions",
                static_cast<long long>(start_pos), static_cast<long long>(seq), static_cast<long long>(max_seq));
  const size_t row_bytes = static_cast<size_t>(value.size(2) * value.size(3)) * value.element_size();
  const auto* src = static_cast<const char*>(value.const_data_ptr());
  auto* dst = static_cast<char*>(cache.mutable_data_ptr());
  for (int64_t b = 0; b < value.size(0); ++b) {
    std::memcpy(dst + (b * max_seq + start_pos) * row_bytes, src + b * seq * row_bytes, seq * row_bytes);
  }
  // `out` is a placeholder of shape (1,): the op's effect is the cache write.
}

// ---- llama::custom_sdpa.out --------------------------------------------------------------------------

float dot(const float* a, const float* b, int64_t n) {
  // Eight independent partial sums: the compiler can keep them in vector registers (a single running
  // sum is a serial dependency chain it may not reorder).
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

struct Sdpa {
  const float* q;
  const float* k;
  const float* v;
  const float* mask;  // additive [S, mask_stride], or null
  float* out;
  int64_t batch, seq, q_heads, kv_heads, head_dim, max_seq, start_pos, mask_stride;
  bool causal;
  float scale;

  // One output row: query row i of head h in batch b.
  void row(int64_t b, int64_t h, int64_t i, std::vector<float>& scores, std::vector<float>& acc) const {
    const int64_t D = head_dim;
    const int64_t group = h / (q_heads / kv_heads);
    // Without a mask only the filled positions are read; a mask covers the whole cache and decides.
    const int64_t keys = causal ? start_pos + i + 1 : (mask ? max_seq : start_pos + seq);
    const int64_t kv_stride = kv_heads * D;  // from one position to the next
    const float* qrow = q + ((b * seq + i) * q_heads + h) * D;
    const float* kbase = k + (b * max_seq * kv_heads + group) * D;
    const float* vbase = v + (b * max_seq * kv_heads + group) * D;
    const float* mrow = mask ? mask + i * mask_stride : nullptr;
    if (static_cast<int64_t>(scores.size()) < keys) scores.resize(keys);
    if (static_cast<int64_t>(acc.size()) < D) acc.resize(D);
    float top = -INFINITY;
    for (int64_t j = 0; j < keys; ++j) {
      float s = scale * dot(qrow, kbase + j * kv_stride, D);
      if (mrow) s += mrow[j];
      scores[j] = s;
      top = s > top ? s : top;
    }
    float total = 0;
    for (int64_t j = 0; j < keys; ++j) {
      scores[j] = std::exp(scores[j] - top);
      total += scores[j];
    }
    float* a = acc.data();
    std::fill(a, a + D, 0.0f);
    for (int64_t j = 0; j < keys; ++j) {
      const float p = scores[j];
      const float* vrow = vbase + j * kv_stride;
      for (int64_t d = 0; d < D; ++d) a[d] += p * vrow[d];
    }
    float* orow = out + ((b * seq + i) * q_heads + h) * D;
    const float inv = 1.0f / total;
    for (int64_t d = 0; d < D; ++d) orow[d] = a[d] * inv;
  }
};

void custom_sdpa_out(KernelRuntimeContext& ctx, Span<EValue*> stack) {
  constexpr const char* kOp = "llama::custom_sdpa.out";
  if (stack.size() < 9) return fail(ctx, kOp, "expected 9 arguments, got %zu", stack.size());
  const Tensor& q = stack[0]->toTensor();
  const Tensor& k = stack[1]->toTensor();
  const Tensor& v = stack[2]->toTensor();
  const int64_t start_pos = stack[3]->toInt();
  const EValue& mask_value = *stack[4];
  const double dropout = stack[5]->toDouble();
  const bool causal = stack[6]->toBool();
  const EValue& scale_value = *stack[7];
  Tensor& out = stack[8]->toTensor();

  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    return fail(ctx, kOp, "query, key and value must be 4-d [B, S, H, D]");
  const Tensor* all[] = {&q, &k, &v, &out};
  for (const Tensor* t : all) {
    if (t->scalar_type() != ScalarType::Float) return fail(ctx, kOp, "only float32 tensors are supported");
  }
  for (int d = 0; d < 4; ++d) {
    if (k.size(d) != v.size(d)) return fail(ctx, kOp, "key and value differ in dim %d", d);
  }
  const int64_t B = q.size(0), S = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t max_seq = k.size(1), Hkv = k.size(2);
  if (k.size(0) != B || k.size(3) != D) return fail(ctx, kOp, "query and key differ in batch or head_dim");
  if (Hkv < 1 || Hq % Hkv != 0) return fail(ctx, kOp, "%zd query heads are not a multiple of %zd kv heads", Hq, Hkv);
  if (start_pos < 0 || start_pos + S > max_seq)
    return fail(ctx, kOp, "start_pos %lld + seq %lld exceeds the cache's %lld positions",
                static_cast<long long>(start_pos), static_cast<long long>(S), static_cast<long long>(max_seq));
  if (dropout != 0.0) return fail(ctx, kOp, "dropout_p must be 0 at inference, got %g", dropout);
  if (!contiguous(q) || !contiguous(k) || !contiguous(v)) return fail(ctx, kOp, "inputs must be contiguous");
  const float* mask = nullptr;
  int64_t mask_stride = 0;
  if (mask_value.isTensor()) {
    const Tensor& m = mask_value.toTensor();
    if (causal) return fail(ctx, kOp, "attn_mask and is_causal cannot both be set");
    if (m.scalar_type() != ScalarType::Float || m.dim() != 2 || m.size(0) != S || m.size(1) != max_seq ||
        !contiguous(m))
      return fail(ctx, kOp, "attn_mask must be a contiguous float32 [seq, cache positions] additive mask");
    mask = m.const_data_ptr<float>();
    mask_stride = m.size(1);
  }
  const float scale = scale_value.isNone() ? 1.0f / std::sqrt(static_cast<float>(D))
                                           : static_cast<float>(scale_value.toDouble());
  // The planned output has the largest shape the program allows; this call's is the query's.
  if (executorch::runtime::resize_tensor(out, q.sizes()) != Error::Ok)
    return fail(ctx, kOp, "cannot resize out to the query's shape");

  const Sdpa job{q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(), mask,
                 out.mutable_data_ptr<float>(), B, S, Hq, Hkv, D, max_seq, start_pos, mask_stride, causal, scale};
  // Rows ordered (batch, head, position): the pool's contiguous chunks then hold whole heads, whose
  // causal rows cost the same per head, so the threads get even shares.
  const bool done = executorch::extension::parallel_for(0, B * Hq * S, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    thread_local std::vector<float> acc;
    for (int64_t r = begin; r < end; ++r) job.row(r / (Hq * S), (r / S) % Hq, r % S, scores, acc);
  });
  if (!done) return fail(ctx, kOp, "the thread pool could not run the rows");
}

}  // namespace

void register_llm_kernels() {
  static const executorch::runtime::Kernel kernels[] = {
      executorch::runtime::Kernel("llama::update_cache.out", update_cache_out),
      executorch::runtime::Kernel("llama::custom_sdpa.out", custom_sdpa_out),
  };
  // Not registry_has_op_function: it logs an error for every name it does not find.
  const auto registered = executorch::runtime::get_registered_kernels();
  for (const auto& kernel : kernels) {
    bool present = false;  // ExecuTorch's own kernel is linked
    for (const auto& other : registered) present = present || std::strcmp(other.name_, kernel.name_) == 0;
    if (present) continue;
    if (executorch::runtime::register_kernel(kernel) != Error::Ok)
      std::fprintf(stderr, "edgekit_runner: could not register %s\n", kernel.name_);
  }
}

}  // namespace edgekit
