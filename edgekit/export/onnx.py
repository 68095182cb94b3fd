"""ONNX export with a KV cache, and ONNX Runtime quantization.

The graph comes from optimum-onnx's exporter (task ``text-generation-with-past``): past key/values are
inputs and present key/values outputs, so prefill and decode can be run and timed separately. Then:

- int8: ONNX Runtime dynamic quantization, restricted to MatMuls whose weight is a constant (the
  attention score MatMuls have two activations and stay in float);
- int4: ONNX Runtime's MatMulNBits quantizer (weight-only, blockwise).

Known trap: optimum de-duplicates tied weights, so a tied ``lm_head`` becomes MatMul(x,
Transpose(embedding)) with no constant weight, and the int4 quantizer silently skips it.
``materialize_transposed_weights`` gives such a MatMul its own constant so it is quantized; the
quantized-layer count in the manifest catches it when a recipe does not.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ExportError
from edgekit.export.recipes import Recipe

QUANTIZED_MATMUL_OPS = ("MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul")


def export_onnx(hf_dir: Path, out_dir: Path, recipe: Recipe, work_dir: Path) -> Path:
    """Export ``hf_dir`` to ``out_dir/model.onnx`` (plus external data if large), quantized per recipe."""
    import onnx

    float_dir = work_dir / "onnx-float"
    _optimum_export(hf_dir, float_dir)
    model = onnx.load(str(float_dir / "model.onnx"))
    scheme = recipe.quantize.scheme
    if recipe.quantize.materialize_tied_lm_head:
        materialize_transposed_weights(model)
    out_path = out_dir / "model.onnx"
    if scheme == "none":
        _save(model, out_path)
    elif scheme == "int8":
        staged = work_dir / "pre-int8.onnx"
        _save(model, staged)
        _quantize_int8(model, staged, out_path)
    elif scheme == "int4":
        _quantize_int4(model, out_path, recipe)
    else:  # recipes validate schemes; this guards a new scheme added without an implementation
        raise ExportError(f"ONNX quantization scheme '{scheme}' is not implemented")
    return out_path


def _optimum_export(hf_dir: Path, out: Path) -> None:
    from optimum.exporters.onnx import main_export

    logging.getLogger("optimum").setLevel(logging.ERROR)
    try:
        main_export(
            str(hf_dir),
            output=str(out),
            task="text-generation-with-past",
            do_validation=False,  # edgekit's own parity gate validates, on fixed prompts
            device="cpu",
        )
    except Exception as exc:  # optimum raises ValueError/KeyError/RuntimeError for unsupported models
        raise ExportError(f"ONNX export failed: {exc}") from exc
    if not (out / "model.onnx").exists():
        raise ExportError(f"ONNX export produced no model.onnx in {out}")


def _save(model: Any, path: Path) -> None:
    import onnx

    large = model.ByteSize() > 1_900_000_000
    onnx.save_model(model, str(path), save_as_external_data=large, location=path.name + ".data")


def _constant_names(model: Any) -> set[str]:
    return {init.name for init in model.graph.initializer}


def weight_matmuls(model: Any) -> list[Any]:
    """MatMul nodes whose second input is a constant weight."""
    consts = _constant_names(model)
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in consts]


def materialize_transposed_weights(model: Any) -> int:
    """Rewrite MatMul(x, Transpose(W)) with constant W into MatMul(x, W_T) with its own constant.

    Returns how many MatMuls were rewritten. The Transpose stays if anything else reads it.
    """
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    rewritten = 0
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        producer = producers.get(node.input[1])
        if producer is None or producer.op_type != "Transpose" or producer.input[0] not in inits:
            continue
        perm = next((list(a.ints) for a in producer.attribute if a.name == "perm"), [1, 0])
        if perm != [1, 0]:
            continue
        weight = numpy_helper.to_array(inits[producer.input[0]])
        name = f"{producer.input[0]}.materialized_T"
        if name not in inits:
            tensor = numpy_helper.from_array(np.ascontiguousarray(weight.T), name)
            model.graph.initializer.append(tensor)
            inits[name] = tensor
        node.input[1] = name
        rewritten += 1
    if rewritten:
        still_read = {i for n in model.graph.node for i in n.input}
        dead = [n for n in model.graph.node if n.op_type == "Transpose" and not set(n.output) & still_read]
        for node in dead:
            model.graph.node.remove(node)
    return rewritten


def _quantize_int8(model: Any, staged: Path, out_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n.name for n in weight_matmuls(model)]
    _quiet_ort_logging()
    try:
        quantize_dynamic(
            str(staged),
            str(out_path),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            per_channel=True,
            use_external_data_format=staged.stat().st_size > 1_900_000_000,
        )
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {exc}") from exc


def _quantize_int4(model: Any, out_path: Path, recipe: Recipe) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _quiet_ort_logging()
    try:
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=recipe.quantize.block_size or 32,
            is_symmetric=recipe.quantize.symmetric,
            accuracy_level=4,  # int8 activations in the kernel: the fast path on CPUs
        )
        quantizer.process()
    except Exception as exc:
        raise ExportError(f"int4 (MatMulNBits) quantization failed: {exc}") from exc
    _save(quantizer.model.model, out_path)


def _quiet_ort_logging() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)


def quantization_counts(path: Path) -> dict[str, int]:
    """How many linear layers the graph computes quantized, and how many still in float."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    quantized = sum(ops[op] for op in QUANTIZED_MATMUL_OPS)
    consts = _constant_names(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    float_linear = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        weight = node.input[1]
        producer = producers.get(weight)
        tied = producer is not None and producer.op_type == "Transpose" and producer.input[0] in consts
        if weight in consts or tied:
            float_linear += 1
    return {"quantized": quantized, "float": float_linear}


def io_signature(path: Path) -> dict[str, list[dict[str, Any]]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}
