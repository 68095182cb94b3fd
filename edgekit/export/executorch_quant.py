"""Quantizing an eager model for ExecuTorch's XNNPACK delegate, in place, per recipe.

- ``8da4w``: torchao's 8-bit dynamic activations with symmetric 4-bit weight groups (XNNPACK qd8-f32-qb4w);
- ``8da8w``: 8-bit dynamic activations with 8-bit per-channel weights (qd8-f32-qc8w);
- ``q4``: affine 4-bit groups (a scale and a minimum per group of ``block_size`` weights, like llama.cpp's
  Q4_1). XNNPACK's group-wise 4-bit kernel is symmetric only, so each such linear is computed as two: the
  symmetric part ``D * (Q - 8)`` through the 4-bit kernel with the group scales set to ``D`` (not chosen
  again), plus the offsets, ``blocksum(x) @ M'^T`` with ``M' = m + 8 D`` per group, through a small
  8-bit linear over the group sums of the input. When the source weights already lie on such a grid (a
  Q4_1 GGUF dequantized), ``D``, ``m`` and ``Q`` are recovered exactly and the grid is kept; otherwise
  they are the group's min/max grid.
- ``head: int8``: the output layer through 8da8w whatever the body's scheme (it is untied from the
  embedding first); ``embedding: 4bit|8bit``: the table through ExecuTorch's quantized embedding kernels
  (``quantized_decomposed::embedding_4bit`` / ``embedding_byte``, groups of 32).

Linear layers whose width the group size does not divide stay in float and are returned as skipped,
never hidden. This module quantizes; it does not export.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from edgekit.errors import ExportError
from edgekit.export.recipes import Recipe

EMBEDDING_GROUP = 32
INT4 = torch.int4  # type: ignore[attr-defined]  # torch's stubs lack the sub-byte dtypes


@dataclass
class QuantStats:
    linear_total: int = 0
    linear_quantized: int = 0
    skipped: list[str] = field(default_factory=list)
    grid_exact: int = 0  # q4 linears whose source weights lay exactly on an affine 4-bit grid
    embedding: str = "float"


def affine_grid(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """(Q in 0..15 [N, K], scale D [N, K/group], minimum m [N, K/group], exact) of a weight's affine 4-bit
    groups: the min/max grid of each group, which is exactly the source grid when the weights already are
    one (then ``exact``)."""
    n, k = weight.shape
    w = weight.detach().double().reshape(n, k // group, group)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scale = (high - low) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round((w - low[..., None]) / safe[..., None]), 0, 15)
    rebuilt = q * scale[..., None] + low[..., None]
    exact = bool(torch.allclose(rebuilt, w, rtol=0, atol=1e-6 * float(w.abs().max().clamp(min=1e-12))))
    return q.reshape(n, k).to(torch.int8), scale.float(), low.float(), exact


class AffineLinear(torch.nn.Module):
    """``y = x W^T + b`` for affine-grid 4-bit ``W``, as a symmetric 4-bit linear plus a group-offset path."""

    def __init__(self, linear: torch.nn.Linear, group: int) -> None:
        super().__init__()
        from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
            IntxUnpackedToInt8Tensor,
            IntxUnpackedToInt8TensorActivationQuantization,
        )

        q, scale, low, self.exact = affine_grid(linear.weight, group)
        self.group = group
        n, k = linear.weight.shape
        symmetric = scale.repeat_interleave(group, dim=1) * (q.float() - 8)
        self.main = torch.nn.Linear(k, n, bias=linear.bias is not None)
        quantized = IntxUnpackedToInt8Tensor.from_hp(
            symmetric, (1, group), INT4,
            activation_quantization=IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN,
            intx_choose_qparams_algorithm=None, custom_scale=scale, custom_zero_point=torch.zeros_like(scale,
                                                                                                    dtype=torch.int8),
        )  # fmt: skip
        self.main.weight = torch.nn.Parameter(quantized, requires_grad=False)
        if linear.bias is not None:
            self.main.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.offsets = torch.nn.Linear(k // group, n, bias=False)
        self.offsets.weight = torch.nn.Parameter(low + 8 * scale, requires_grad=False)  # M' [N, K/group]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sums = x.reshape(*x.shape[:-1], x.shape[-1] // self.group, self.group).sum(dim=-1)
        return self.main(x) + self.offsets(sums)


def _replace(model: torch.nn.Module, names: list[str], make: Any) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))


def _untie_head(model: Any) -> None:
    head = getattr(model, "lm_head", None)
    if head is not None:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)


def quantize_model(model: Any, recipe: Recipe) -> QuantStats:
    """Quantize ``model`` in place per recipe (see the module docstring)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    logging.getLogger("torchao").setLevel(logging.ERROR)
    q = recipe.quantize
    stats = QuantStats()
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    stats.linear_total = len(linears)
    if q.head == "int8" or q.embedding != "none":
        _untie_head(model)
    eight = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    try:
        if q.embedding != "none":
            embedding = model.get_input_embeddings()
            embedding.padding_idx = None  # only gradients use it, and it hides the op from the kernel fusion
            bits = INT4 if q.embedding == "4bit" else torch.int8
            quantize_(model, IntxWeightOnlyConfig(weight_dtype=bits, granularity=PerGroup(EMBEDDING_GROUP)),
                      filter_fn=lambda m, fqn: isinstance(m, torch.nn.Embedding))  # fmt: skip
            stats.embedding = q.embedding
        body = [name for name in linears if not (q.head == "int8" and name == "lm_head")]
        if q.scheme in ("8da4w", "q4"):
            group = q.block_size or 32
            stats.skipped = [name for name in body if linears[name].in_features % group]
            body = [name for name in body if name not in stats.skipped]
            if q.scheme == "8da4w":
                four = Int8DynamicActivationIntxWeightConfig(weight_dtype=INT4,
                                                             weight_granularity=PerGroup(group))
                quantize_(model, four, filter_fn=lambda m, fqn: fqn in body)
            else:
                _replace(model, body, lambda lin: AffineLinear(lin, group))
                stats.grid_exact = sum(1 for m in model.modules() if isinstance(m, AffineLinear) and m.exact)
                # A row of one group has a single offset: kept float (8 bits per channel of one input fails).
                quantize_(model, eight, filter_fn=lambda m, fqn: fqn.endswith(".offsets") and m.in_features > 1)
        elif q.scheme == "8da8w":
            quantize_(model, eight, filter_fn=lambda m, fqn: fqn in body)
        if q.head == "int8":
            quantize_(model, eight, filter_fn=lambda m, fqn: fqn == "lm_head")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torchao quantization ({q.scheme}) failed: {type(exc).__name__}: {exc}") from exc
    if q.scheme != "none":
        stats.linear_quantized = stats.linear_total - len(stats.skipped)
    return stats
