"""The ONNX target: ONNX Runtime GenAI's layout, made by GenAI's own model builder, quantized per recipe.

The builder (``onnxruntime_genai.models.builder``, run in a child process by ``_genai_build``) writes
``model.onnx`` + ``model.onnx.data`` + ``genai_config.json`` (+ the tokenizer when the source has one):
fused ops (GroupQueryAttention with rotary inside, SkipSimplifiedLayerNormalization), inputs
``input_ids``, ``attention_mask`` and ``past_key_values.{i}.key/value``, outputs ``logits`` and
``present.*``; GenAI runs it with one past/present buffer of ``max_length`` positions per layer.
Schemes (``quantize.scheme``):

- ``none``: the builder's fp32 graph;
- ``int4``: the builder's own int4 (symmetric RTN blocks, accuracy level 4, and with tied embeddings
  one 4-bit table shared by the embedding and the lm_head): what the ecosystem ships;
- ``uint4``: the builder's asymmetric int4 (``is_symmetric=false``: RTN min/max blocks with a 4-bit zero
  point each, MatMulNBits' own asymmetric form, the same fast kernels), otherwise as ``int4``;
- ``int8``, ``8da8w`` and ``q4``: the builder's fp32 graph rewritten by ``onnx_quant`` (8-bit blocks;
  8-bit per-channel weights with activations quantized at run time, ORT's dynamic quantization; affine
  4-bit blocks that keep a Q4_1 source's grid exactly).

``quantize.head: int8`` puts the lm_head (and the embedding, shared when tied) at 8 bits. Every
supported architecture (llama, qwen2, phi3, gemma) is one the builder supports, so there is no other
exporter. The gate runs the graph in a plain ``onnxruntime.InferenceSession`` (the kernels GenAI
calls) with GenAI's shared past/present buffers; the devices run it through ``onnxruntime_genai``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._progress import Steps
from edgekit.errors import ConfigError, ExportError
from edgekit.export.recipes import Recipe
from edgekit.export.target import Exported
from edgekit.manifest import kv_cache_layout
from edgekit.models.sources import PreparedModel

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CONFIG_FILE = "genai_config.json"
BUILD_TIMEOUT_S = 3600.0
ACCURACY_LEVEL = 4  # MatMulNBits with int8 activations: the fast CPU path (level 0 is 2-4x slower)
SMOOTH_ALPHA = 0.5  # SmoothQuant's migration strength (the paper's default)
FUSED_OPS = ("GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
             "MatMulNBits", "DynamicQuantizeMatMul", "GatherBlockQuantized", "MatMul", "Gather")  # fmt: skip


def _genai_version() -> str:
    try:
        return metadata.version("onnxruntime-genai")
    except metadata.PackageNotFoundError as exc:
        raise ExportError("the ONNX target needs onnxruntime-genai (pip install onnxruntime-genai)") from exc


def _builder_args(recipe: Recipe) -> tuple[str, list[str]]:
    """The builder's precision and extra options for ``recipe``."""
    q = recipe.quantize
    if q.scheme not in ("int4", "uint4"):
        return "fp32", []
    symmetric = "true" if q.scheme == "int4" else "false"
    options = [f"block_size={q.block_size}", f"accuracy_level={ACCURACY_LEVEL}", f"is_symmetric={symmetric}"]
    if q.head == "int8":  # the lm_head stays float here and gets its 8 bits from onnx_quant
        options += ["shared_embeddings=false", "nodes_to_exclude=/lm_head/MatMul"]
    return "int4", options


def _check_shared_blocks(hf_config: Any, model_id: str, recipe: Recipe) -> None:
    """The builder's int4 shares one 4-bit table between a tied embedding and the lm_head, and that table is
    read back in whole rows: with a block that does not divide the hidden size the graph's Reshape of the
    padded blocks fails at run time, so it is refused here, before the build."""
    q = recipe.quantize
    if q.scheme not in ("int4", "uint4") or q.head == "int8" or not q.block_size:
        return
    hidden = hf_config.hidden_size
    if hf_config.tie_word_embeddings and hidden % q.block_size:
        fits = min(hidden & -hidden, 256)  # the largest power of two that divides it, as recipes allow
        raise ConfigError(f"recipe '{recipe.name}': block_size {q.block_size} does not divide {model_id}'s hidden "
                          f"size {hidden}; the builder's shared 4-bit embedding needs whole blocks"
                          + (f" (block_size {fits} does)" if fits >= 16 else ""))  # fmt: skip


def run_builder(hf_dir: Path, out: Path, precision: str, cache: Path, options: list[str]) -> None:
    argv = [sys.executable, "-m", "edgekit.export._genai_build", str(hf_dir), str(out), precision, str(cache),
            *options]  # fmt: skip
    log = out.parent / f"{out.name}.log"
    try:
        with log.open("w") as fh:
            done = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S,
                                  check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"the ORT GenAI model builder ran past {BUILD_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0 or not (out / MODEL_FILE).exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        raise ExportError(f"the ORT GenAI model builder failed (exit {done.returncode}): " + " | ".join(tail))


class OnnxTarget:
    label = "ONNX (ORT GenAI)"

    def export(self, prepared: PreparedModel, recipe: Recipe, staged: Path, work: Path, progress: Steps) -> Exported:
        import onnx

        from edgekit.export import onnx_quant

        version = _genai_version()
        q = recipe.quantize
        precision, options = _builder_args(recipe)
        hf_config = _hf_config(prepared)
        _check_shared_blocks(hf_config, prepared.model_id, recipe)
        smoothing: dict[str, Any] = {}
        built = work / "genai"
        with progress.step(f"ORT GenAI model builder ({precision})"):
            run_builder(prepared.hf_dir, built, precision, work / "builder-cache", options)
        config = json.loads((built / CONFIG_FILE).read_text())
        if recipe.max_context > config["model"]["context_length"]:
            raise ExportError(f"recipe max_context {recipe.max_context} exceeds the model's context length "
                              f"{config['model']['context_length']}")  # fmt: skip
        body: onnx_quant.Precision | None = q.scheme if q.scheme in ("int8", "8da8w", "q4") else None  # type: ignore[assignment]
        head: onnx_quant.Precision | None = "int8" if q.head == "int8" else body
        if body is None and head is None:
            # The builder's graph as it is, but for its asymmetric int4's shared embedding (see onnx_quant).
            model = onnx.load(str(built / MODEL_FILE), load_external_data=q.scheme == "uint4")
            if q.scheme == "uint4" and onnx_quant.mend_shared_embedding(model):
                onnx.save_model(model, str(staged / MODEL_FILE), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=DATA_FILE)  # fmt: skip
            else:
                for name in (MODEL_FILE, DATA_FILE):
                    shutil.copy2(built / name, staged / name)
            embedding, skipped = _embedding_kind(model), []
        else:
            model = onnx.load(str(built / MODEL_FILE))
            if body in onnx_quant.PER_CHANNEL:
                with progress.step("Calibrating activations (SmoothQuant)"):
                    smoothing = _smooth(model, built, prepared, recipe, hf_config.vocab_size)
            with progress.step(f"Quantizing the graph (body {body or precision}, head {head or 'as body'})"):
                result = onnx_quant.quantize_graph(model, body=body, head=head, block=q.block_size or 32,
                                                   accuracy_level=ACCURACY_LEVEL)  # fmt: skip
                onnx.save_model(model, str(staged / MODEL_FILE), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=DATA_FILE)  # fmt: skip
            embedding, skipped = result.embedding, result.skipped
        for path in built.iterdir():  # genai_config.json and the tokenizer files
            if path.name not in (MODEL_FILE, DATA_FILE) and not _is_gguf(path):
                shutil.copy2(path, staged / path.name)
        # GenAI allocates max_length positions per layer up front (past/present share one buffer).
        config["search"]["max_length"] = recipe.max_context
        (staged / CONFIG_FILE).write_text(json.dumps(config, indent=4) + "\n")
        linears = onnx_quant.linear_nodes(model)
        quantized = sum(n.op_type in onnx_quant.LINEAR_QUANTIZED_OPS for n in linears)
        ops = Counter(n.op_type for n in model.graph.node)
        share = bool(config["search"].get("past_present_share_buffer"))
        return Exported(
            artifact=staged / MODEL_FILE,
            runtime="onnxruntime-genai",
            kv_cache=kv_cache_layout(hf_config, recipe.max_context, dtype="float32", preallocated=share),
            signature=io_signature(model),
            linear_total=len(linears),
            linear_quantized=quantized,
            skipped_layers=skipped,
            embedding=embedding,
            requires=["onnxruntime-genai"],
            details={
                "exporter": f"onnxruntime-genai model builder {version}",
                "builder_precision": precision,
                "quantized_by": _quantized_by(q.scheme, q.head),
                "linear_layers": "graph MatMul/MatMulNBits nodes (q, k, v fused into one), lm_head included",
                "accuracy_level": ACCURACY_LEVEL if q.scheme not in ("none", "8da8w") else None,
                **({"smoothquant": smoothing} if smoothing else {}),
                "graph_ops": {op: ops[op] for op in FUSED_OPS if ops[op]},
                "past_present_share_buffer": share,
                "files": sorted(p.name for p in staged.iterdir()),
            },
        )  # fmt: skip

    def open_runner(self, staged: Path, exported: Exported, recipe: Recipe) -> GenAIGraphRunner:
        return GenAIGraphRunner(staged, threads=recipe.threads, max_context=recipe.max_context)


def _smooth(model: Any, built: Path, prepared: PreparedModel, recipe: Recipe, vocab_size: int) -> dict[str, Any]:
    """SmoothQuant (``onnx_smooth.smooth``) calibrated on ``edgekit.data.training_text`` (not the gate's text):
    the per-channel maxima of every smoothable linear input over one chunk of up to max_context tokens."""
    from edgekit.data import training_text
    from edgekit.export import onnx_smooth
    from edgekit.models import load_tokenizer

    ids = load_tokenizer(prepared, vocab_size).encode(training_text())[: recipe.max_context]
    names = onnx_smooth.smoothable_inputs(model)
    maxima = activation_maxima(built, names, ids, threads=recipe.threads, max_context=recipe.max_context)
    smoothed = onnx_smooth.smooth(model, maxima, alpha=SMOOTH_ALPHA)
    return {"alpha": SMOOTH_ALPHA, "calibration_tokens": len(ids), "inputs_smoothed": len(smoothed),
            "calibration_text": "edgekit/data/corpus.txt"}  # fmt: skip


def activation_maxima(built: Path, names: list[str], ids: list[int], *, threads: int,
                      max_context: int) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-channel max |x| of each tensor in ``names`` when the builder's graph in ``built`` prefills ``ids``:
    the graph is run from a copy of its header with those tensors as extra outputs, reading the same data."""
    import onnx

    probe = built / "probe.onnx"
    header = onnx.load(str(built / MODEL_FILE), load_external_data=False)
    header.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    onnx.save_model(header, str(probe))
    try:
        runner = GenAIGraphRunner(built, threads=threads, max_context=max_context, model_file=probe.name)
        outputs = runner.probe(ids, names)
    finally:
        probe.unlink(missing_ok=True)
    return {n: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0) for n, v in outputs.items()}


def _is_gguf(path: Path) -> bool:
    # A tokenizer converted from a GGUF source names the GGUF file itself as its vocab file, so the
    # builder copies the whole model (98 MB for SmolLM2) as tokenizer.model; GenAI reads tokenizer.json.
    with path.open("rb") as fh:
        return fh.read(4) == b"GGUF"


def _quantized_by(scheme: str, head: str) -> str:
    body = {"none": "not quantized (fp32)", "int4": "the model builder (int4, symmetric RTN)",
            "uint4": "the model builder (int4, asymmetric RTN: 4-bit zero points)",
            "int8": "edgekit onnx_quant (8-bit symmetric blocks)",
            "8da8w": "edgekit onnx_quant (8-bit per-channel weights, dynamic 8-bit activations: DynamicQuantizeMatMul)",
            "q4": "edgekit onnx_quant (affine 4-bit blocks: MatMulNBits + block-sum offsets)"}[scheme]  # fmt: skip
    return body + ("; lm_head and embedding 8-bit by edgekit onnx_quant" if head == "int8" else "")


def _hf_config(prepared: PreparedModel) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(prepared.hf_dir))


def _embedding_kind(model: Any) -> str:
    node = next(n for n in model.graph.node if "input_ids" in n.input and n.op_type.startswith("Gather"))
    if node.op_type == "Gather":
        return "float"
    bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
    shared = node.input[0] not in {t.name for t in model.graph.initializer}  # a Reshape of the lm_head's tensor
    return f"{bits}bit" + ("-shared" if shared else "")


def io_signature(model: Any) -> dict[str, list[dict[str, Any]]]:
    import onnx

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "dtype": onnx.TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


class GenAIGraphRunner:
    """The GenAI graph in onnxruntime, fed as ORT GenAI feeds it: one past/present buffer per layer of
    ``max_context`` positions bound as both input and output, an attention mask of ones over the
    positions so far, the new tokens as ``input_ids``; the logits of the last new position come back."""

    def __init__(self, directory: Path, *, threads: int, max_context: int, model_file: str = MODEL_FILE) -> None:
        import onnxruntime as ort

        decoder = json.loads((directory / CONFIG_FILE).read_text())["model"]["decoder"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(directory / model_file), options, providers=["CPUExecutionProvider"])
        shape = (1, decoder["num_key_value_heads"], max_context, decoder["head_size"])
        self.buffers = {f"{i}.{kind}": ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
                        for i in range(decoder["num_hidden_layers"]) for kind in ("key", "value")}  # fmt: skip
        self.max_context = max_context
        self.ones = np.ones((1, max_context), dtype=np.int64)
        self.binding = self.session.io_binding()
        self.binding.bind_output("logits")
        for name, value in self.buffers.items():
            self.binding.bind_ortvalue_input(f"past_key_values.{name}", value)
            self.binding.bind_ortvalue_output(f"present.{name}", value)
        self.position = 0

    def reset(self) -> None:
        self.position = 0  # the mask says how many cached positions are valid; stale ones are never read

    def prefill(self, token_ids: list[int]) -> np.ndarray:
        return self._run(np.asarray([token_ids], dtype=np.int64))

    def step(self, token_id: int) -> np.ndarray:
        return self._run(np.asarray([[token_id]], dtype=np.int64))

    def probe(self, token_ids: list[int], names: list[str]) -> dict[str, np.ndarray]:
        """Prefill ``token_ids`` and return the graph outputs ``names`` (tensors inside the graph exposed as
        outputs) instead of the logits."""
        for name in names:  # bound after logits and the present buffers: the last outputs, in this order
            self.binding.bind_output(name)
        self._run(np.asarray([token_ids], dtype=np.int64))
        outputs = self.binding.get_outputs()[-len(names) :] if names else []
        return {n: v.numpy() for n, v in zip(names, outputs, strict=True)}

    def _run(self, ids: np.ndarray) -> np.ndarray:
        total = self.position + ids.shape[1]
        if total > self.max_context:
            raise ExportError(f"position {total} is past the artifact's max_context {self.max_context}")
        self.binding.bind_cpu_input("input_ids", ids)
        self.binding.bind_cpu_input("attention_mask", self.ones[:, :total])
        self.binding.bind_output("logits")
        self.session.run_with_iobinding(self.binding)
        self.position = total
        logits = self.binding.get_outputs()[0].numpy()
        return np.asarray(logits[0, -1], dtype=np.float32)
