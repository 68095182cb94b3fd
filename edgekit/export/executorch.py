"""The ExecuTorch target: a decoder-only model as a ``.pte`` for the XNNPACK delegate.

Path: eager fp32 model -> quantized per recipe (``executorch_quant.py``) -> made exportable with ExecuTorch's
LLM custom ops, in-place KV cache and custom SDPA (``executorch_llm.py``; or the portable fallback when the
recipe says ``attention: portable``) -> ``torch.export`` (strict) with a dynamic sequence length, so one
method serves prefill and decode -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> ``.pte``.

The method is ``forward(input_ids[1, seq], cache_position[seq]) -> logits[1, 1, vocab]`` (the last
position's) with ``1 <= seq <= max_context - 1``; the cache lives inside the program. The manifest lists the
operators outside ATen's that the program calls (``requires``), so a runner without them refuses it before
running. ``open_runner`` drives the program through ExecuTorch's Python runtime for the quality gate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._progress import Steps
from edgekit.errors import ExportError
from edgekit.export.recipes import Recipe
from edgekit.export.target import Exported
from edgekit.manifest import Delegation, kv_cache_layout
from edgekit.models.sources import PreparedModel

# Operator namespaces outside ATen's and ExecuTorch's core: a runner has to provide their kernels itself.
_EXTRA_NAMESPACES = ("llama::", "quantized_decomposed::")


def load_runtime_ops() -> None:
    """The kernels ``.pte`` programs of this target may call, registered for ExecuTorch's Python runtime."""
    import executorch.kernels.quantized  # noqa: F401  quantized_decomposed:: embedding kernels

    from edgekit.export.executorch_llm import load_custom_ops

    load_custom_ops()


class ExecutorchTarget:
    label = "ExecuTorch .pte (XNNPACK)"

    def export(self, prepared: PreparedModel, recipe: Recipe, staged: Path, work: Path, progress: Steps) -> Exported:
        from edgekit.export.executorch_quant import quantize_model
        from edgekit.models import load_model

        model = load_model(prepared)
        config = model.config
        stats = quantize_model(model, recipe)
        artifact = staged / "model.pte"
        lowered = _lower(model, recipe)
        artifact.write_bytes(lowered["buffer"])
        seq = f"seq_len<={recipe.max_context - 1}"
        return Exported(
            artifact=artifact,
            runtime="executorch",
            kv_cache=kv_cache_layout(config, recipe.max_context),
            signature={"method": "forward", "inputs": [
                {"name": "input_ids", "dtype": "int64", "shape": [1, seq]},
                {"name": "cache_position", "dtype": "int64", "shape": [seq]}],
                "outputs": [{"name": "logits", "dtype": "float32", "shape": [1, 1, config.vocab_size]}]},
            linear_total=stats.linear_total,
            linear_quantized=stats.linear_quantized,
            skipped_layers=stats.skipped,
            embedding=stats.embedding,
            delegation=lowered["delegation"],
            requires=lowered["requires"],
            details={"exporter": "torch.export + ExecuTorch to_edge_transform_and_lower (XNNPACK)",
                     "attention": recipe.attention, "q4_groups_on_source_grid": stats.grid_exact},
        )  # fmt: skip

    def open_runner(self, staged: Path, exported: Exported, recipe: Recipe) -> PteRunner:
        return PteRunner(exported.artifact, recipe.threads)


def _lower(model: Any, recipe: Recipe) -> dict[str, Any]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from edgekit.export.executorch_llm import CustomOpsDecoderLM, PortableDecoderLM

    logging.getLogger("torchao").setLevel(logging.ERROR)
    max_context = recipe.max_context
    with torch.no_grad():
        try:
            wrapper = (CustomOpsDecoderLM if recipe.attention == "custom" else PortableDecoderLM)(model, max_context)
            seq = torch.export.Dim("seq_len", min=1, max=max_context - 1)
            example = (torch.zeros((1, 2), dtype=torch.long), torch.arange(2, dtype=torch.long))
            program = torch.export.export(wrapper.eval(), example, dynamic_shapes=({1: seq}, {0: seq}), strict=True)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               compile_config=EdgeCompileConfig(_check_ir_validity=False))  # fmt: skip
            info = get_delegation_info(edge.exported_program().graph_module)
            # Quant fusion turns dequantize + embedding into the quantized embedding kernels; re-inplacing
            # makes the portable fallback's cache writes in place; constraint-based shape evaluation plans
            # memory for the dynamic length.
            executorch = edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True, do_quant_fusion_and_const_prop=True, run_reinplace_pass=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
            ))  # fmt: skip
        except ExportError:
            raise
        except Exception as exc:  # torch.export / lowering raise a zoo of types
            raise ExportError(f"ExecuTorch export failed: {type(exc).__name__}: {exc}") from exc
    kernels = {_kernel_name(node.target) for node in executorch.exported_program().graph_module.graph.nodes
               if node.op == "call_function"}  # fmt: skip
    requires = sorted(name for name in kernels if name.startswith(_EXTRA_NAMESPACES))
    delegation = Delegation(
        backend="xnnpack", delegated_nodes=int(info.num_delegated_nodes),
        non_delegated_nodes=int(info.num_non_delegated_nodes), delegated_subgraphs=int(info.num_delegated_subgraphs),
        share=info.num_delegated_nodes / max(1, info.num_delegated_nodes + info.num_non_delegated_nodes),
    )  # fmt: skip
    return {"buffer": executorch.buffer, "delegation": delegation, "requires": requires}


def _kernel_name(target: Any) -> str:
    """The kernel a runtime looks up for a graph node: ``llama::custom_sdpa.out`` (operators only)."""
    name = getattr(target, "name", None)
    return str(name()) if callable(name) else ""


class PteRunner:
    """The gate's runner: a ``.pte`` with the edgekit signature through ExecuTorch's Python runtime."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        from edgekit._quiet import native_stderr_silenced

        load_runtime_ops()
        # The pool is sized before a method is loaded: resizing it afterwards hangs XNNPACK's next call.
        portable_lib._unsafe_reset_threadpool(threads)
        with native_stderr_silenced():
            self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.pos = 0

    def reset(self) -> None:
        self.pos = 0  # the cache is rewritten from position 0; custom_sdpa never reads past the position

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        return self._run(token_ids)

    def step(self, token_id: int) -> np.ndarray:
        return self._run([token_id])

    def _run(self, token_ids: list[int]) -> np.ndarray:
        import torch

        n = len(token_ids)
        ids = torch.tensor([token_ids], dtype=torch.long)
        positions = torch.arange(self.pos, self.pos + n, dtype=torch.long)
        (logits,) = self.method.execute([ids, positions])
        self.pos += n
        return np.asarray(logits[0, -1].float().numpy(), dtype=np.float32)
