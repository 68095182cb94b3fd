"""A Hugging Face decoder-only model made exportable the way ExecuTorch's own LLM export builds programs.

Two changes to the eager model, both through transformers' own extension points:

- the KV cache is one pair of buffers per layer, ``[1, max_context, kv_heads, head_dim]`` (sequence at
  dim 1), written in place by ``llama::update_cache`` at the position the step starts at;
- attention is ``llama::custom_sdpa``, registered as an attention implementation: it reads only the filled
  part of the cache, is causal from the start position on, and maps query heads to KV heads itself (GQA)
  instead of expanding K and V.

So a decode step costs what the tokens in the cache cost, not what the cache could hold. The program's
method is ``forward(input_ids[1, seq], cache_position[seq]) -> logits[1, 1, vocab]``: the logits of the
last position only (the output layer is not run for the others, as ExecuTorch's LLM export does). Only
``cache_position[0]`` places the cache write; the whole vector feeds the rotary embedding, so positions
must be contiguous. ``import executorch.extension.llm.custom_ops.custom_ops`` registers the ops for export
and for the Python runtime; runners elsewhere provide their own kernels (``android_harness/``).

``PortableDecoderLM`` is the fallback for runtimes without these kernels: transformers' static cache with
``index_put_`` writes that ExecuTorch's re-inplacing pass turns into in-place writes, and attention over
every cache slot.
"""

from __future__ import annotations

from typing import Any

import torch

ATTENTION_NAME = "edgekit_custom_sdpa"
CUSTOM_OPS = ("llama::update_cache", "llama::custom_sdpa")


def load_custom_ops() -> None:
    """Register ``llama::`` ops (export and the Python runtime). The package itself is empty: the module is
    ``custom_ops.custom_ops``."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401


def _custom_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
                 scaling: float | None = None, dropout: float = 0.0,
                 **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    """transformers attention function: query [B, Hq, S, D]; key/value are the cache buffers [B, S_max, Hkv, D]
    as ``_InPlaceCache.update`` returns them; the start position comes through the model's kwargs."""
    out = torch.ops.llama.custom_sdpa(query.transpose(1, 2), key, value, kwargs["edgekit_start_pos"], None, 0.0, True,
                                      scaling)  # fmt: skip
    return out, None  # [B, S, Hq, D]; transformers reshapes it to [B, S, Hq * D]


def register_attention() -> None:
    from transformers import AttentionInterface

    load_custom_ops()
    # No mask function is registered on purpose: transformers then builds no mask, custom_sdpa needs none.
    AttentionInterface.register(ATTENTION_NAME, _custom_sdpa)


class _InPlaceCache:
    """What the decoder layers need of a transformers Cache when ``cache_position`` is given: ``update``."""

    def __init__(self, owner: torch.nn.Module, layers: int, max_context: int, kv_heads: int, head_dim: int) -> None:
        self.owner = owner
        for i in range(layers):
            owner.register_buffer(f"k_cache_{i}", torch.zeros(1, max_context, kv_heads, head_dim), persistent=False)
            owner.register_buffer(f"v_cache_{i}", torch.zeros(1, max_context, kv_heads, head_dim), persistent=False)
        self.start_pos: Any = 0
        self.is_sliding = [False] * layers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               cache_kwargs: Any = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        k_cache = getattr(self.owner, f"k_cache_{layer_idx}")
        v_cache = getattr(self.owner, f"v_cache_{layer_idx}")
        torch.ops.llama.update_cache(key_states.transpose(1, 2), k_cache, self.start_pos)
        torch.ops.llama.update_cache(value_states.transpose(1, 2), v_cache, self.start_pos)
        return k_cache, v_cache

    def get_seq_length(self, layer_idx: int = 0) -> int:  # transformers asks only without cache_position
        raise NotImplementedError("the in-place cache needs cache_position")


class CustomOpsDecoderLM(torch.nn.Module):
    """``forward(input_ids, cache_position) -> last logits`` with the custom cache and attention."""

    def __init__(self, model: Any, max_context: int) -> None:
        super().__init__()
        config = model.config
        register_attention()
        config._attn_implementation = ATTENTION_NAME
        self.model = model
        self.max_context = max_context
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.cache = _InPlaceCache(self, config.num_hidden_layers, max_context, kv_heads, head_dim)

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        start_pos = cache_position[0].item()
        torch._check_is_size(start_pos)
        torch._check(start_pos + input_ids.shape[1] <= self.max_context)
        self.cache.start_pos = start_pos
        out = self.model(input_ids=input_ids, cache_position=cache_position, position_ids=cache_position.unsqueeze(0),
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1,
                         edgekit_start_pos=start_pos)  # fmt: skip
        return out.logits


class PortableDecoderLM(torch.nn.Module):
    """The fallback: transformers' static cache (portable ``index_put_`` writes), last logits only."""

    def __init__(self, model: Any, max_context: int) -> None:
        super().__init__()
        from transformers import GenerationConfig
        from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

        model.generation_config = GenerationConfig(
            use_cache=True, cache_implementation="static", max_length=max_context,
            cache_config={"batch_size": 1, "max_cache_len": max_context},
        )  # fmt: skip
        self.inner = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=max_context).model

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=input_ids, cache_position=cache_position)[:, -1:, :]
