"""Weight quantization passes over ORT GenAI's fp32 graph: edgekit's own 8-bit and grid-preserving 4-bit.

The model builder writes every linear layer as ``MatMul(x, W)`` with ``W`` a constant [K, N], the tied
embedding as ``Gather(Transpose(lm_head weight))`` and an untied one as ``Gather(table)``. This module
rewrites those nodes in place (same output names, so the rest of the graph is untouched):

- ``int8``: ``MatMulNBits`` with 8-bit symmetric blocks along K (w = D * (Q - 128), Q in 1..255);
- ``8da8w``: ``DynamicQuantizeMatMul``, ONNX Runtime's dynamic quantization (what its ``quantize_dynamic``
  leaves after graph fusion): symmetric 8-bit weights with one scale per output channel, the activations
  quantized to 8 bits per tensor at run time (the same scheme as ExecuTorch's 8da8w). Its u8 x s8 integer
  GEMM decodes ~1.3x faster than 8-bit ``MatMulNBits`` on x86 (SmolLM2-135M, 1 thread);
- ``q4``: affine 4-bit blocks computed exactly with the fast symmetric kernel plus an offset path. Per
  block w = d * q + m (q in 0..15) = D * (Q - 8) + M' with D = d, Q = q and M' = m + 8 d, so
  ``y = MatMulNBits_sym(x; Q, D) + blocksum(x) @ M'^T`` where ``blocksum`` sums each block of K inputs
  (Reshape to [.., K/B, B], ReduceSum). One blocksum is shared by every linear reading the same input.
  (d, m) are RTN min/max per block, which is how llama.cpp makes Q4_1: a source dequantized from a
  Q4_1 GGUF gets its own grid back exactly (m = block min, d = (max - min) / 15). ``MatMulNBits`` takes
  only integer zero points, and float zero points run 50-140x slower in ORT 1.32, hence the offset path;
- the embedding follows the output layer's precision through ``GatherBlockQuantized`` (8-bit, or 4-bit
  plus the gathered per-block offsets), reading the lm_head's own quantized tensor when they are tied;
  under ``8da8w`` it gathers 8-bit rows (columns of the lm_head's tensor when tied) and their scales.

Before ``8da8w`` the caller runs ``onnx_smooth`` (SmoothQuant). It never runs a model or judges quality
(the gate does); it does not know recipes, only precisions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgekit.errors import ExportError

Precision = Literal["int8", "q4", "8da8w"]
MS = "com.microsoft"
OFFSET_TAG = "/blocksum_offset"  # in the names of the nodes of the q4 offset path (not linear layers)
LINEAR_QUANTIZED_OPS = ("MatMulNBits", "DynamicQuantizeMatMul")
PER_CHANNEL: tuple[Precision, ...] = ("8da8w",)  # one scale per output channel: no block size


# --- numbers --------------------------------------------------------------------------------------


@dataclass
class Blocks:
    """A weight [N, K] quantized in blocks of ``block`` along K: w = scale * (level - zero) + offset."""

    levels: np.ndarray  # uint8 [N, K], unsigned levels
    scales: np.ndarray  # float32 [N, K / block]
    offsets: np.ndarray | None  # float32 [N, K / block] (affine 4-bit only: M')
    bits: int
    block: int

    def dequantize(self) -> np.ndarray:
        n, k = self.levels.shape
        zero = 1 << (self.bits - 1)
        w = (self.levels.reshape(n, -1, self.block).astype(np.float32) - zero) * self.scales[..., None]
        if self.offsets is not None:
            w = w + self.offsets[..., None]
        return w.reshape(n, k)

    def signed(self) -> np.ndarray:
        """8-bit levels as int8 around zero (Q - 128): the symmetric form that needs no zero point."""
        return (self.levels.astype(np.int16) - 128).astype(np.int8)

    def packed(self) -> np.ndarray:
        """MatMulNBits' layout [N, K / block, block * bits / 8]; 4-bit levels two to a byte, low nibble first."""
        n, k = self.levels.shape
        q = self.levels if self.bits == 8 else self.levels[:, 0::2] | (self.levels[:, 1::2] << 4)
        return np.ascontiguousarray(q.reshape(n, k // self.block, -1))


def _blocked(w: np.ndarray, block: int) -> np.ndarray:
    n, k = w.shape
    if k % block:
        raise ExportError(f"a linear layer's input width {k} is not a multiple of the block size {block}")
    return w.astype(np.float32).reshape(n, k // block, block)


def quantize_sym8(w: np.ndarray, block: int) -> Blocks:
    """Symmetric 8-bit: D = max|w| / 127 per block (llama.cpp's Q8_0 grid, recovered exactly from one)."""
    wb = _blocked(w, block)
    scales = np.abs(wb).max(axis=-1) / 127.0
    safe = np.where(scales > 0, scales, 1.0)
    q = np.clip(np.rint(wb / safe[..., None]), -127, 127) + 128
    return Blocks(q.astype(np.uint8).reshape(w.shape), scales.astype(np.float32), None, 8, block)


def quantize_affine4(w: np.ndarray, block: int) -> Blocks:
    """Affine 4-bit, RTN min/max: m = min, d = (max - min) / 15, q = round((w - m) / d) (llama.cpp's Q4_1)."""
    wb = _blocked(w, block)
    low, high = wb.min(axis=-1), wb.max(axis=-1)
    d = (high - low) / 15.0
    safe = np.where(d > 0, d, 1.0)
    q = np.clip(np.rint((wb - low[..., None]) / safe[..., None]), 0, 15)
    offsets = (low + 8.0 * d).astype(np.float32)
    return Blocks(q.astype(np.uint8).reshape(w.shape), d.astype(np.float32), offsets, 4, block)


def quantize(w: np.ndarray, precision: Precision, block: int) -> Blocks:
    """``w`` [N, K] in ``precision``; per-channel precisions take the whole row as one block."""
    if precision in PER_CHANNEL:
        return quantize_sym8(w, w.shape[1])
    return quantize_sym8(w, block) if precision == "int8" else quantize_affine4(w, block)


# --- graph ----------------------------------------------------------------------------------------


@dataclass
class PassResult:
    linears: int  # linear layers rewritten
    skipped: list[str]  # linear layers left in float: their input width is not a multiple of the block
    embedding: str  # what the embedding table became: float | 4bit | 8bit, "-shared" when it reads the lm_head's


class Graph:
    """The model's graph with name lookups, and helpers that add initializers and nodes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.added: set[str] = set()

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name])

    def add_init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def const_i64(self, name: str, values: list[int]) -> str:
        if name not in self.inits:
            self.add_init(name, np.asarray(values, dtype=np.int64))
        return name

    def drop_unused(self) -> None:
        used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        for node in [n for n in self.graph.node if not set(n.output) & used and n.op_type == "Transpose"]:
            self.graph.node.remove(node)
        used = {i for n in self.graph.node for i in n.input}
        for tensor in [t for t in self.graph.initializer if t.name not in used]:
            self.graph.initializer.remove(tensor)


def linear_nodes(model: Any) -> list[Any]:
    """The graph's linear layers: MatMul with a constant 2-D weight, or MatMulNBits (offset helpers excluded)."""
    inits = {t.name: t for t in model.graph.initializer}
    return [
        n for n in model.graph.node
        if OFFSET_TAG not in n.name and (n.op_type in LINEAR_QUANTIZED_OPS
                                         or (n.op_type == "MatMul" and len(inits.get(n.input[1], _NO).dims) == 2))
    ]  # fmt: skip


class _NoTensor:
    dims: tuple[int, ...] = ()


_NO = _NoTensor()


def _lm_head(model: Any) -> Any:
    node = next((n for n in model.graph.node if "logits" in n.output), None)
    if node is None or node.op_type not in ("MatMul", *LINEAR_QUANTIZED_OPS):
        raise ExportError("the ONNX graph has no lm_head MatMul writing 'logits'")
    return node


def _embedding(g: Graph) -> tuple[Any, str | None]:
    """The Gather reading input_ids, and the lm_head weight it is tied to (None when it has its own table)."""
    node = next((n for n in g.graph.node if n.op_type in ("Gather", "GatherBlockQuantized")
                 and "input_ids" in n.input), None)  # fmt: skip
    if node is None:
        raise ExportError("the ONNX graph has no embedding Gather reading input_ids")
    producer = g.producer.get(node.input[0])
    if producer is not None and producer.op_type == "Transpose" and producer.input[0] in g.inits:
        return node, producer.input[0]
    return node, None


def quantize_graph(model: Any, *, body: Precision | None, head: Precision | None, block: int,
                   accuracy_level: int = 4) -> PassResult:  # fmt: skip
    """Rewrite ``model`` in place: float linear layers to ``body``, the lm_head and embedding to ``head``
    (None leaves them as they are)."""
    g = Graph(model)
    lm_head = _lm_head(model)
    head_weight = lm_head.input[1]
    embed, tied_to = _embedding(g)
    blocksums: dict[str, str] = {}
    rewritten = 0
    skipped: list[str] = []
    shared: tuple[str, str, np.ndarray | None] | None = None
    for node in linear_nodes(model):
        precision = head if node is lm_head else body
        if node.op_type != "MatMul" or precision is None:
            continue
        if precision not in PER_CHANNEL and g.inits[node.input[1]].dims[0] % block:  # kept, counted as float
            skipped.append(_layer_name(node))
            continue
        blocks = quantize(g.array(node.input[1]).T, precision, block)
        if precision in PER_CHANNEL:
            data, scales = _replace_linear_dynamic(g, node, blocks)
        else:
            data, scales = _replace_linear(g, node, blocks, blocksums, accuracy_level)
        rewritten += 1
        if node is lm_head:
            shared = (data, scales, blocks.offsets)
    if head is None or embed.op_type != "Gather":
        g.drop_unused()
        return PassResult(rewritten, skipped, "float" if embed.op_type == "Gather" else _gbq_kind(embed))
    if head not in PER_CHANNEL and _table_width(g, embed, tied_to) % block:
        g.drop_unused()
        return PassResult(rewritten, skipped, "float")
    if head in PER_CHANNEL:
        kind = _rows_embedding(g, embed, tied_to, shared if tied_to == head_weight else None)
        g.drop_unused()
        return PassResult(rewritten, skipped, kind)
    width = "8bit" if head == "int8" else "4bit"
    if shared is not None and tied_to == head_weight:
        data, scales, offsets = shared
        kind = f"{width}-shared"
    else:
        table = g.array(embed.input[0]) if tied_to is None else g.array(tied_to).T
        blocks = quantize(table, head, block)
        base = embed.name.strip("/").replace("/", ".")
        data = g.add_init(f"{base}.weight_Q{blocks.bits}", blocks.packed())
        scales = g.add_init(f"{base}.weight_scales", blocks.scales)
        offsets, kind = blocks.offsets, width
    offsets_name = None if offsets is None else g.add_init(f"{embed.name}/offset_table", offsets)
    _replace_embedding(g, embed, data, scales, offsets_name, bits=8 if head == "int8" else 4, block=block)
    g.drop_unused()
    return PassResult(rewritten, skipped, kind)


def mend_shared_embedding(model: Any) -> bool:
    """Point a tied embedding's ``GatherBlockQuantized`` at the lm_head's ``MatMulNBits`` tensors when the
    model builder left it without them (0.15.2, asymmetric int4: the table is a Reshape of the lm_head's
    float weight, and neither scales nor zero points are passed, so the graph does not load), as its
    symmetric int4 does; the float weight, then unused, is dropped. Whether anything changed."""
    g = Graph(model)
    head = _lm_head(model)
    gather = next((n for n in g.graph.node if n.op_type == "GatherBlockQuantized" and "input_ids" in n.input), None)
    if head.op_type != "MatMulNBits" or gather is None or len(gather.input) > 2:
        return False
    reshape = g.producer.get(gather.input[0])
    if reshape is None or reshape.op_type != "Reshape" or reshape.input[0] == head.input[1]:
        return False
    reshape.input[0] = head.input[1]
    gather.input.extend(head.input[2:4])  # scales, and zero points when there are
    g.drop_unused()
    return True


def _layer_name(node: Any) -> str:
    """'/model/layers.0/attn/qkv_proj/MatMul' -> 'model.layers.0.attn.qkv_proj', '/lm_head/MatMul' -> 'lm_head'."""
    return node.name.strip("/").removesuffix("/MatMul").replace("/", ".")


def _table_width(g: Graph, embed: Any, tied_to: str | None) -> int:
    return int(g.inits[tied_to].dims[0]) if tied_to is not None else int(g.inits[embed.input[0]].dims[1])


def _gbq_kind(node: Any) -> str:
    bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
    return f"{bits}bit"


def _replace_linear(g: Graph, node: Any, blocks: Blocks, blocksums: dict[str, str],
                    accuracy_level: int) -> tuple[str, str]:  # fmt: skip
    """MatMul -> MatMulNBits (+ the q4 offset path); returns the names of its levels and scales."""
    from onnx import helper

    n, k = blocks.levels.shape
    x, out = node.input[0], node.output[0]
    base = node.input[1].removesuffix(".weight")
    data = g.add_init(f"{base}.weight_Q{blocks.bits}", blocks.packed())
    scales = g.add_init(f"{base}.weight_scales", blocks.scales)
    index = list(g.graph.node).index(node)
    g.graph.node.remove(node)
    mnb_out = out if blocks.offsets is None else f"{out}/nbits"
    new = [helper.make_node("MatMulNBits", [x, data, scales], [mnb_out], name=f"{node.name}_Q{blocks.bits}",
                            domain=MS, K=k, N=n, bits=blocks.bits, block_size=blocks.block,
                            accuracy_level=accuracy_level)]  # fmt: skip
    if blocks.offsets is not None:
        offsets_t = g.add_init(f"{base}.weight_offsets_T", blocks.offsets.T)
        if x not in blocksums:
            shape = g.const_i64(f"{OFFSET_TAG}/shape_{k // blocks.block}x{blocks.block}",
                                [0, 0, k // blocks.block, blocks.block])  # fmt: skip
            axes = g.const_i64(f"{OFFSET_TAG}/axes_last", [-1])
            stem = f"{x}{OFFSET_TAG}"
            new[:0] = [helper.make_node("Reshape", [x, shape], [f"{stem}/blocks"], name=f"{stem}/Reshape"),
                       helper.make_node("ReduceSum", [f"{stem}/blocks", axes], [f"{stem}/sum"], keepdims=0,
                                        name=f"{stem}/ReduceSum")]  # fmt: skip
            blocksums[x] = f"{stem}/sum"
        stem = f"{node.name}{OFFSET_TAG}"
        new += [helper.make_node("MatMul", [blocksums[x], offsets_t], [f"{stem}/out"], name=f"{stem}/MatMul"),
                helper.make_node("Add", [mnb_out, f"{stem}/out"], [out], name=f"{stem}/Add")]  # fmt: skip
    for i, extra in enumerate(new):
        g.graph.node.insert(index + i, extra)
    return data, scales


def _replace_linear_dynamic(g: Graph, node: Any, blocks: Blocks) -> tuple[str, str]:
    """MatMul(x, W) -> DynamicQuantizeMatMul(x, Wq [K, N] int8, scales [N]); returns the names of Wq and scales."""
    from onnx import helper

    base = node.input[1].removesuffix(".weight")
    levels = blocks.signed().T  # [K, N], symmetric: no zero point
    data = g.add_init(f"{base}.weight_int8", levels)
    scales = g.add_init(f"{base}.weight_scales", blocks.scales[:, 0])
    index = list(g.graph.node).index(node)
    g.graph.node.remove(node)
    g.graph.node.insert(index, helper.make_node("DynamicQuantizeMatMul", [node.input[0], data, scales],
                                                [node.output[0]], name=f"{node.name}_8da8w", domain=MS))  # fmt: skip
    return data, scales


def _rows_embedding(g: Graph, embed: Any, tied_to: str | None, shared: tuple[str, str, Any] | None) -> str:
    """Gather(table, ids) -> 8-bit rows gathered with their per-row scales: from the lm_head's [K, V] int8
    tensor when tied (a column per token, transposed back), else from the table quantized per row."""
    from onnx import TensorProto, helper

    stem, out, ids = embed.name, embed.output[0], "input_ids"
    if shared is not None:
        data, scales, _ = shared
        axis, kind = 1, "8bit-shared"
    else:
        table = g.array(embed.input[0]) if tied_to is None else g.array(tied_to).T
        blocks = quantize_sym8(table, table.shape[1])
        base = embed.name.strip("/").replace("/", ".")
        data = g.add_init(f"{base}.weight_int8", blocks.signed())
        scales = g.add_init(f"{base}.weight_scales", blocks.scales[:, 0])
        axis, kind = 0, "8bit"
    last = g.const_i64(f"{stem}/axes_last", [-1])
    nodes = [helper.make_node("Gather", [data, ids], [f"{stem}/levels"], name=f"{stem}/Gather_levels", axis=axis)]
    levels = f"{stem}/levels"
    if axis == 1:  # [K, B, S] -> [B, S, K]
        nodes.append(helper.make_node("Transpose", [levels], [f"{stem}/rows"], name=f"{stem}/Transpose_rows",
                                      perm=[1, 2, 0]))  # fmt: skip
        levels = f"{stem}/rows"
    nodes += [
        helper.make_node("Cast", [levels], [f"{stem}/float"], name=f"{stem}/Cast", to=TensorProto.FLOAT),
        helper.make_node("Gather", [scales, ids], [f"{stem}/scales"], name=f"{stem}/Gather_scales"),
        helper.make_node("Unsqueeze", [f"{stem}/scales", last], [f"{stem}/scales_b"], name=f"{stem}/Unsqueeze"),
        helper.make_node("Mul", [f"{stem}/float", f"{stem}/scales_b"], [out], name=f"{stem}/Mul"),
    ]
    index = list(g.graph.node).index(embed)
    g.graph.node.remove(embed)
    for i, extra in enumerate(nodes):
        g.graph.node.insert(index + i, extra)
    return kind


def _replace_embedding(g: Graph, embed: Any, data: str, scales: str, offsets: str | None, *,
                       bits: int, block: int) -> None:  # fmt: skip
    """Gather(table, ids) -> GatherBlockQuantized over ``data`` (reshaped to [V, K * bits / 8]) (+ offsets)."""
    from onnx import helper

    levels = g.inits[data]
    vocab, n_blocks = int(levels.dims[0]), int(levels.dims[1])
    k = n_blocks * block
    stem = embed.name
    out = embed.output[0]
    index = list(g.graph.node).index(embed)
    g.graph.node.remove(embed)
    nodes = []
    table = data
    if len(levels.dims) == 3:  # the lm_head's MatMulNBits tensor: the same bytes, rows of K * bits / 8
        shape = g.const_i64(f"{stem}/table_shape", [vocab, k * bits // 8])
        table = f"{stem}/table"
        nodes.append(helper.make_node("Reshape", [data, shape], [table], name=f"{stem}/Reshape"))
    ids = "input_ids"
    gathered = out if offsets is None else f"{stem}/symmetric"
    nodes.append(helper.make_node("GatherBlockQuantized", [table, ids, scales], [gathered], name=f"{stem}Q",
                                  domain=MS, gather_axis=0, quantize_axis=1, block_size=block, bits=bits))
    if offsets is not None:  # + M' of each block, broadcast over its B values
        blocks_shape = g.const_i64(f"{stem}/blocks_shape", [0, 0, n_blocks, block])
        flat_shape = g.const_i64(f"{stem}/flat_shape", [0, 0, k])
        last = g.const_i64(f"{OFFSET_TAG}/axes_last", [-1])
        nodes += [
            helper.make_node("Reshape", [gathered, blocks_shape], [f"{stem}/blocks"], name=f"{stem}/Reshape_blocks"),
            helper.make_node("Gather", [offsets, ids], [f"{stem}/offsets"], name=f"{stem}/Gather_offsets"),
            helper.make_node("Unsqueeze", [f"{stem}/offsets", last], [f"{stem}/offsets_b"], name=f"{stem}/Unsqueeze"),
            helper.make_node("Add", [f"{stem}/blocks", f"{stem}/offsets_b"], [f"{stem}/affine"], name=f"{stem}/Add"),
            helper.make_node("Reshape", [f"{stem}/affine", flat_shape], [out], name=f"{stem}/Reshape_flat"),
        ]  # fmt: skip
    for i, extra in enumerate(nodes):
        g.graph.node.insert(index + i, extra)


def op_counts(model: Any) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node if n.op_type != "Constant").items()))
