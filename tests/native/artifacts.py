"""Tiny test artifacts for the native runner's three backends, made directly with each ecosystem's own tool,
each with a manifest.json like an export's.

Stand-ins until edgekit's exporters write these formats (``edgekit/export``): simple and replaceable, and
not a second exporter. ``.pte``: a Hugging Face model whose attention calls ExecuTorch's LLM custom ops
(``llama::update_cache``, ``llama::custom_sdpa``) over a KV cache inside the program, lowered to XNNPACK;
ONNX: the ORT GenAI model builder; GGUF: llama.cpp's convert_hf_to_gguf.py with a byte-level SentencePiece
vocabulary (the tiny models have no tokenizer, and both converters insist on one). The manifests carry real file
hashes and shapes; their quality section says the gate did not run.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgekit import manifest as mf

ATTENTION = "edgekit_test_custom_sdpa"


def _custom_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: Any = None,
                           dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:  # fmt: skip
    """HF attention function: query [B, Hq, S, D]; key/value are the whole cache buffers [B, S_max, Hkv, D]."""
    import torch

    query = query.transpose(1, 2)
    return torch.ops.llama.custom_sdpa(query, key, value, kwargs["start_pos"], None, 0.0, True, scaling), None


class _Cache:
    """The part of a transformers Cache the decoder layers use: update() writes through llama::update_cache."""

    def __init__(self, owner: Any, layers: int, max_context: int, kv_heads: int, head_dim: int) -> None:
        import torch

        self.owner, self.start_pos, self.is_sliding = owner, 0, [False] * layers
        for i in range(layers):
            for kind in ("k", "v"):
                owner.register_buffer(f"{kind}_cache_{i}", torch.zeros(1, max_context, kv_heads, head_dim),
                                      persistent=False)  # fmt: skip

    def update(self, key: Any, value: Any, layer: int, cache_kwargs: Any = None) -> tuple[Any, Any]:
        import torch

        k, v = getattr(self.owner, f"k_cache_{layer}"), getattr(self.owner, f"v_cache_{layer}")
        torch.ops.llama.update_cache(key.transpose(1, 2), k, self.start_pos)
        torch.ops.llama.update_cache(value.transpose(1, 2), v, self.start_pos)
        return k, v


def _wrapper(model: Any, max_context: int) -> Any:
    import torch
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _custom_sdpa_attention)
    config = model.config
    config._attn_implementation = ATTENTION
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.cache = _Cache(self, config.num_hidden_layers, max_context, config.num_key_value_heads, head_dim)

        def forward(self, input_ids: Any, cache_position: Any) -> Any:
            start = cache_position[0].item()
            torch._check(start >= 0)
            torch._check(start + input_ids.shape[1] <= max_context)
            self.cache.start_pos = start
            return self.model(input_ids=input_ids, cache_position=cache_position,
                              position_ids=cache_position.unsqueeze(0), past_key_values=self.cache, use_cache=True,
                              start_pos=start).logits  # fmt: skip

    return Decoder().eval()


def custom_op_pte(hf_dir: Path, out_dir: Path, *, max_context: int = 256, quantize: bool = False) -> Path:
    """``out_dir`` with model.pte (forward(input_ids, cache_position) -> logits) and its manifest."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  the llama:: ops, eager and runtime
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    if quantize:  # 8-bit dynamic activations, 4-bit weights in groups of 32 (XNNPACK's 8da4w)
        from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
        from torchao.quantization.granularity import PerGroup

        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32))
        quantize_(model, config, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear))
    wrapper = _wrapper(model, max_context)
    seq = torch.export.Dim("seq", min=1, max=max_context - 1)
    example = (torch.zeros((1, 2), dtype=torch.long), torch.arange(2, dtype=torch.long))
    with torch.no_grad():
        program = torch.export.export(wrapper, example, dynamic_shapes=({1: seq}, {0: seq}), strict=True)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        pte = edge.to_executorch(ExecutorchBackendConfig(
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.pte").write_bytes(pte.buffer)
    write_manifest(out_dir, hf_dir, "executorch", "model.pte", max_context, requires=operators(pte),
                   recipe="test-pte-8da4w" if quantize else "test-pte-fp32")
    return out_dir


def operators(program: Any) -> list[str]:
    """The kernel names (``namespace::op.overload``) an ExecuTorch program calls: what its manifest requires."""
    return sorted({f"{op.name}.{op.overload}" if op.overload else op.name
                   for plan in program.executorch_program.execution_plan for op in plan.operators})  # fmt: skip


def genai_dir(hf_dir: Path, out_dir: Path, work: Path, *, precision: str = "fp32") -> Path:
    """``out_dir`` as the ORT GenAI model builder writes it (genai_config.json, model.onnx, ...) + manifest."""
    import json

    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(_staged(hf_dir, work / "hf")),
           "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c", str(work / "cache")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        raise RuntimeError(f"the GenAI model builder failed ({proc.returncode}): {proc.stderr[-2000:]}")
    max_context = json.loads((out_dir / "genai_config.json").read_text())["search"]["max_length"]
    write_manifest(out_dir, hf_dir, "onnxruntime-genai", "model.onnx", max_context, recipe=f"test-onnx-{precision}")
    return out_dir


def _staged(hf_dir: Path, stage: Path) -> Path:
    """``hf_dir``'s config and weights (linked) with a byte-level tokenizer: both tools insist on one."""
    import json

    stage.mkdir(parents=True, exist_ok=True)
    for f in hf_dir.iterdir():
        if f.suffix in (".json", ".safetensors") and not f.name.startswith("tokenizer"):
            (stage / f.name).symlink_to(f.resolve())
    _byte_spm(stage / "tokenizer.model")  # the converters pad the vocabulary to the model's size
    (stage / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer",
                                                             "add_bos_token": False, "add_eos_token": False}))
    return stage


# A SentencePiece model for edgekit's ByteTokenizer (id = byte + 3; 0 <unk>, 1 <s>, 2 </s>), so that
# convert_hf_to_gguf.py can write a vocabulary for a tokenizer-less tiny model. llama.cpp's SPM tokenizer
# maps a space to U+2581 before lookup, so byte 0x20's id is that piece and the byte piece <0x20>, which
# sentencepiece requires with byte fallback, is parked at an id the tokenizer never produces.
def _byte_spm(path: Path) -> None:
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    model.trainer_spec.model_type = pb.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.vocab_size = 261
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id = 0, 1, 2
    model.trainer_spec.pad_id = -1
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    model.normalizer_spec.escape_whitespaces = True
    piece = pb.ModelProto.SentencePiece
    for text, kind in (("<unk>", piece.UNKNOWN), ("<s>", piece.CONTROL), ("</s>", piece.CONTROL)):
        model.pieces.add(piece=text, type=kind)
    for byte in range(256):
        model.pieces.add(piece="\u2581" if byte == 0x20 else f"<0x{byte:02X}>",
                         type=piece.NORMAL if byte == 0x20 else piece.BYTE)  # fmt: skip
    model.pieces.add(piece="<0x20>", type=piece.BYTE)
    model.pieces.add(piece="<|endoftext|>", type=piece.CONTROL)  # looked up by name for some architectures
    path.write_bytes(model.SerializeToString())


def gguf_file(hf_dir: Path, out_dir: Path, work: Path, llama_cpp: Path, *, outtype: str = "f32") -> Path:
    """``out_dir`` with model.gguf converted by llama.cpp's own convert_hf_to_gguf.py + manifest."""
    import json

    stage = _staged(hf_dir, work / "hf")
    out_dir.mkdir(parents=True, exist_ok=True)
    src = llama_cpp / "src"
    cmd = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(stage), "--outtype", outtype,
           "--outfile", str(out_dir / "model.gguf")]  # fmt: skip
    env = {"PYTHONPATH": str(src / "gguf-py"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    max_context = json.loads((hf_dir / "config.json").read_text())["max_position_embeddings"]
    write_manifest(out_dir, hf_dir, "llama.cpp", "model.gguf", max_context, recipe=f"test-gguf-{outtype}")
    return out_dir


def write_manifest(out_dir: Path, hf_dir: Path, runtime: mf.Runtime, artifact: str, max_context: int, *,
                   recipe: str, requires: list[str] | None = None) -> mf.Manifest:  # fmt: skip
    import json
    from types import SimpleNamespace

    config = json.loads((hf_dir / "config.json").read_text())
    target = {"executorch": "executorch", "onnxruntime-genai": "onnx", "llama.cpp": "gguf"}[runtime]
    kv = mf.kv_cache_layout(SimpleNamespace(**config), max_context)
    nan = float("nan")
    manifest = mf.Manifest(
        manifest_version=mf.MANIFEST_VERSION, created_at=datetime.now(UTC).isoformat(),
        model=mf.ModelInfo(id=f"tiny-{config['model_type']}", source_kind="tiny", source_sha256="0" * 64,
                           architecture=config["model_type"], parameters=0, vocab_size=config["vocab_size"],
                           tokenizer=False),
        recipe={"name": recipe, "target": target}, target=target, runtime=runtime, artifact=artifact,  # type: ignore[arg-type]
        tool_versions=mf.tool_versions(), files=mf.describe_files(out_dir), signature={}, max_context=max_context,
        kv_cache=kv, requires=requires or [],
        quantization=mf.Quantization(scheme="test", bits=32, block_size=None, head="body", embedding="float",
                                     linear_total=0, linear_quantized=0, linear_float=0, skipped_layers=[]),
        parity=mf.Quality(text="not measured: a test fixture", n_ctx=0, chunks=0, tokens=0, kl_mean=nan,
                          kl_ci=(nan, nan), kl_p99=nan, kl_max=nan, top1_agreement=nan, top1_ci=(nan, nan),
                          ppl_reference=nan, ppl_artifact=nan, ppl_ratio=nan, ppl_ratio_ci=(nan, nan),
                          max_abs_logit_diff=nan),
        gate=mf.GateResult(passed=False, failures=["not gated: a test fixture"], thresholds={}),
        export_wall_s=0.0,
    )  # fmt: skip
    mf.write_manifest(out_dir, manifest)
    return manifest
