"""ExecuTorch export: a decoder-only model with a static KV cache, lowered to XNNPACK, as ``.pte``.

Path: eager HF model -> torchao quantization (8da4w / 8da8w linears, optional 4/8-bit embedding) ->
transformers' ``TorchExportableModuleForDecoderOnlyLM`` (static KV cache held as mutable buffers) ->
``torch.export`` (strict) with a dynamic sequence length so one method serves prefill and decode ->
``to_edge_transform_and_lower`` with the XNNPACK partitioner -> ``.pte``.

The method is ``forward(input_ids[1, seq], cache_position[seq]) -> logits[1, seq, vocab]`` with
``1 <= seq <= max_context - 1``; the cache lives inside the program. Linear layers a group size cannot
divide are left in float and counted, never hidden.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ExportError
from edgekit.export.embedding import quantize_embeddings
from edgekit.export.recipes import Recipe


@dataclass
class PteExportStats:
    linear_total: int
    linear_quantized: int
    skipped_layers: list[str]
    delegated_nodes: int
    non_delegated_nodes: int
    delegated_subgraphs: int

    @property
    def delegated_share(self) -> float:
        total = self.delegated_nodes + self.non_delegated_nodes
        return self.delegated_nodes / total if total else 0.0


def _is_quantized(weight: Any) -> bool:
    import torch

    data = weight.data if isinstance(weight, torch.nn.Parameter) else weight
    return type(data) is not torch.Tensor


def quantize_model(model: Any, recipe: Recipe) -> tuple[int, int, list[str]]:
    """Quantize ``model`` in place per recipe; returns (linear total, linear quantized, skipped names)."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    q = recipe.quantize
    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    skipped: list[str] = []
    if q.embedding != "none":
        quantize_embeddings(model, 4 if q.embedding == "4bit" else 8, q.embedding_group_size)
    if q.scheme == "8da4w":
        group = q.block_size or 32
        skipped = [name for name, m in linears.items() if m.in_features % group]
        config: Any = Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4,  # type: ignore[attr-defined]
            weight_granularity=PerGroup(group),
        )
    elif q.scheme == "8da8w":
        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    else:
        return len(linears), 0, []
    skip = set(skipped)
    try:
        quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn not in skip)
    except Exception as exc:
        raise ExportError(f"torchao quantization ({q.scheme}) failed: {exc}") from exc
    quantized = sum(1 for m in linears.values() if _is_quantized(m.weight))
    return len(linears), quantized, skipped


def export_pte(model: Any, out_path: Path, recipe: Recipe) -> PteExportStats:
    """Quantize, export and lower ``model`` (modified in place) to ``out_path``."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass
    from transformers import GenerationConfig
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    logging.getLogger("torchao").setLevel(logging.ERROR)
    total, quantized, skipped = quantize_model(model, recipe)
    max_context = recipe.max_context
    model.generation_config = GenerationConfig(
        use_cache=True,
        cache_implementation="static",
        max_length=max_context,
        cache_config={"batch_size": 1, "max_cache_len": max_context},
    )
    with torch.no_grad():
        try:
            wrapper = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=max_context)
            seq = torch.export.Dim("seq_len", min=1, max=max_context - 1)
            example = torch.zeros((1, 2), dtype=torch.long)
            program = wrapper.export(
                input_ids=example,
                cache_position=torch.arange(2, dtype=torch.long),
                dynamic_shapes={"input_ids": {1: seq}, "cache_position": {0: seq}},
                strict=True,
            )
            edge = to_edge_transform_and_lower(
                program,
                partitioner=[XnnpackPartitioner()],
                compile_config=EdgeCompileConfig(_check_ir_validity=False),
            )
            info = get_delegation_info(edge.exported_program().graph_module)
            # Quant fusion turns torchao's dequantize_affine + embedding into the runtime's quantized
            # embedding kernels; constraint-based shape evaluation plans memory for the dynamic length.
            buffer = edge.to_executorch(
                ExecutorchBackendConfig(
                    extract_delegate_segments=True,
                    do_quant_fusion_and_const_prop=True,
                    memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                    sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                )
            ).buffer
        except ExportError:
            raise
        except Exception as exc:  # torch.export / lowering raise a zoo of types
            raise ExportError(f"ExecuTorch export failed: {type(exc).__name__}: {exc}") from exc
    out_path.write_bytes(buffer)
    return PteExportStats(
        linear_total=total,
        linear_quantized=quantized,
        skipped_layers=skipped,
        delegated_nodes=int(info.num_delegated_nodes),
        non_delegated_nodes=int(info.num_non_delegated_nodes),
        delegated_subgraphs=int(info.num_delegated_subgraphs),
    )
