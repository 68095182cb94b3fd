"""SmoothQuant over ORT GenAI's fp32 graph (Xiao et al. 2023), before ``onnx_quant``'s ``8da8w``.

With one activation scale per tensor, a few input channels hundreds of times larger than the rest leave
the others a handful of levels. Each linear input j is divided by s_j = a_j^alpha / w_j^(1 - alpha) (a_j:
the channel's largest magnitude on calibration text, w_j: the largest weight reading it) and the weights'
row j multiplied by it, exactly: the division folds into the producing RMSNorm's scale, or into the columns
of the ``up_proj`` whose output is multiplied into the ``down_proj``'s input. It never runs a model: the
caller computes the maxima (``onnx.activation_maxima``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.export.onnx_quant import Graph, linear_nodes

NORMS = {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 2}  # op -> its scale input


def smoothable_inputs(model: Any) -> list[str]:
    """The linear layers' inputs ``smooth`` can rescale exactly (see ``_fold_target``)."""
    g = Graph(model)
    consumers = _consumers(g)
    names = dict.fromkeys(n.input[0] for n in linear_nodes(model) if n.op_type == "MatMul")
    return [x for x in names if _fold_target(g, consumers, x) is not None]


def smooth(model: Any, maxima: dict[str, np.ndarray], *, alpha: float) -> list[str]:
    """SmoothQuant over ``model`` in place, given each input's per-channel maxima of |x| (from calibration);
    returns the inputs it rescaled. A weight another node also reads (a tied lm_head) is left alone."""
    g = Graph(model)
    consumers = _consumers(g)
    done = []
    for x, a in maxima.items():
        target = _fold_target(g, consumers, x)
        users = consumers.get(x, [])
        if target is None or any(len(consumers[u.input[1]]) != 1 for u in users):
            continue
        weights = [g.array(u.input[1]) for u in users]  # [K, N] each
        w = np.max([np.abs(m).max(axis=1) for m in weights], axis=0)
        a = np.asarray(a, dtype=np.float64)
        ratio = np.power(np.maximum(a, 1e-12), alpha) / np.power(np.maximum(w, 1e-12), 1 - alpha)
        s = np.clip(np.where((a > 0) & (w > 0), ratio, 1.0), 1e-5, 1e5)
        for user, m in zip(users, weights, strict=True):
            _set(g, user.input[1], m * s[:, None].astype(np.float32))
        _set(g, target, (g.array(target) / s).astype(np.float32))  # a scale [K] or up_proj's columns [., K]
        done.append(x)
    return done


def _consumers(g: Graph) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in g.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _fold_target(g: Graph, consumers: dict[str, list[Any]], x: str) -> str | None:
    """The initializer x's per-channel division can go into (its last axis runs over x's channels): the
    scale of the RMSNorm writing x (its first output, read by linear layers only), or the weight of the
    MatMul whose output is one factor of the Mul writing x (the gated MLP's up_proj: silu(gate) * up) and
    is read by nothing else."""
    if not consumers.get(x) or any(u.op_type != "MatMul" or u.input[1] not in g.inits for u in consumers[x]):
        return None
    producer = g.producer.get(x)
    if producer is None:
        return None
    if producer.op_type in NORMS and producer.output[0] == x:
        scale = producer.input[NORMS[producer.op_type]]
        return scale if scale in g.inits and len(consumers[scale]) == 1 else None
    if producer.op_type == "Mul":
        for factor in producer.input:
            mm = g.producer.get(factor)
            if (mm is not None and mm.op_type == "MatMul" and mm.input[1] in g.inits
                    and len(consumers[factor]) == 1 and len(consumers[mm.input[1]]) == 1):  # fmt: skip
                return mm.input[1]
    return None


def _set(g: Graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    g.inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))
