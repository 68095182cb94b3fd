// Sizing ExecuTorch's shared CPU thread pool, which the XNNPACK delegate and the optimized kernels
// both run on.
//
// A source build of ExecuTorch installs extension/threadpool/threadpool.h; the pip wheel ships the
// compiled library (libexecutorch_threadpool.so) but not that header, so for the wheel we declare the
// two entry points we call, with the signatures the library exports. Only member functions are called,
// through the pointer the library hands out; the class is never constructed here.
#pragma once

#include <cstddef>
#include <cstdint>

#if __has_include(<executorch/extension/threadpool/threadpool.h>)
#include <executorch/extension/threadpool/threadpool.h>
#else
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool
#endif

namespace edgekit {

// Resizes the pool to `threads` (> 0; 0 keeps the library's default, one per performant core) and
// returns the size in effect, or 0 when there is no pool.
inline size_t set_threads(uint32_t threads) {
  auto* pool = ::executorch::extension::threadpool::get_threadpool();
  if (pool == nullptr) return 0;
  if (threads > 0 && pool->get_thread_count() != threads) pool->_unsafe_reset_threadpool(threads);
  return pool->get_thread_count();
}

}  // namespace edgekit
