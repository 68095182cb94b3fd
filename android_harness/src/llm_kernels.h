// ExecuTorch's LLM custom operators (llama::update_cache.out, llama::custom_sdpa.out) for the runner's
// kernel registry; see llm_kernels.cpp.
#pragma once

namespace edgekit {

// Registers each kernel the registry does not already have. Call once, before loading a program.
void register_llm_kernels();

}  // namespace edgekit
