"""The GGUF export target: one ``model.gguf`` for llama.cpp, made by llama.cpp's own tools.

Where the file comes from depends on the source:

- a GGUF source (the bundled SmolLM2, a user's ``.gguf``): scheme ``source`` copies it unchanged; every
  other scheme is ``llama-quantize --allow-requantize`` from that file, so its tokenizer metadata stays
  exactly as the source has it;
- a Hugging Face directory: ``convert_hf_to_gguf.py`` writes an f32 GGUF once per source and llama.cpp
  build (cached like converted models), and ``llama-quantize`` makes the scheme from it. A model without a
  tokenizer (the tiny test models) gets a SentencePiece model that mirrors edgekit's ``ByteTokenizer``
  (``_byte_spm``), written into a staging directory, never into the model's own.

llama-quantize picks per-tensor types itself (Q4_K_M mixes q4_K and q6_K; a row width not divisible by 256
falls back to q5_0/q8_0), so the manifest records the types actually in the file and the fallbacks it
announced. ``open_runner`` runs the file through llama.cpp's C API (``llama_runner``).

This module makes and describes GGUF files; it does not judge them (the pipeline's gate does) and does not
build llama.cpp (``edgekit.llamacpp``).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgekit import llamacpp, paths
from edgekit._progress import Steps
from edgekit.errors import ExportError
from edgekit.export.llama_runner import LlamaRunner
from edgekit.export.quality import ArtifactRunner
from edgekit.export.recipes import Recipe
from edgekit.export.target import Exported
from edgekit.manifest import kv_cache_layout
from edgekit.models.sources import PreparedModel

ARTIFACT = "model.gguf"
# llama-quantize's names for the schemes (the ftype argument).
QUANT_TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k_m": "Q4_K_M"}
CONVERT_TIMEOUT_S = 3600
QUANTIZE_TIMEOUT_S = 3600
FLOAT_TYPES = ("F32", "F16", "BF16")
_LINEAR = re.compile(r"^blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down|gate_up))\.weight$")
# "warning: blk.0.attn_k.weight - ncols 128 not divisible by 256 (required for type q4_K) -> falling back to q5_0"
_FALLBACK = re.compile(r"^warning:\s+(\S+)\s+-\s+(.*?)\s+\(required for type\s+(\S+)\)\s+->\s+falling back to\s+(\S+)")
_CONVERTED_VERSION = "v1"  # bump when what goes into a converted f32 GGUF changes (tokenizer staging)
BYTE_OFFSET = 3  # edgekit's ByteTokenizer: id = byte + 3


class GgufTarget:
    label = "GGUF (llama.cpp)"

    def export(self, prepared: PreparedModel, recipe: Recipe, staged: Path, work: Path, progress: Steps) -> Exported:
        from transformers import AutoConfig

        scheme = recipe.quantize.scheme
        if scheme == "source" and prepared.gguf_file is None:
            raise ExportError(
                f"recipe '{recipe.name}': scheme 'source' passes a GGUF source through unchanged, but "
                f"'{prepared.model_id}' is a {prepared.source_kind} source, not a .gguf file; pick a converting "
                f"scheme ({', '.join(QUANT_TYPES)})"
            )
        with progress.step("Locating llama.cpp (built on first use)"):
            build = llamacpp.locate()
        artifact = staged / ARTIFACT
        fallbacks: list[dict[str, str]] = []
        if scheme == "source":
            assert prepared.gguf_file is not None
            with progress.step(f"Copying {prepared.gguf_file.name}"):
                shutil.copyfile(prepared.gguf_file, artifact)
            origin = "the source GGUF, unchanged"
        elif prepared.gguf_file is not None:
            with progress.step(f"llama-quantize {QUANT_TYPES[scheme]} from {prepared.gguf_file.name}"):
                fallbacks = _quantize(build, prepared.gguf_file, artifact, QUANT_TYPES[scheme], requantize=True)
            origin = f"llama-quantize --allow-requantize {QUANT_TYPES[scheme]} from the source GGUF"
        else:
            with progress.step("convert_hf_to_gguf.py to f32 (cached per source)"):
                f32 = _converted_f32(build, prepared, work)
            if scheme == "f32":
                shutil.copyfile(f32, artifact)
            else:
                with progress.step(f"llama-quantize {QUANT_TYPES[scheme]}"):
                    fallbacks = _quantize(build, f32, artifact, QUANT_TYPES[scheme], requantize=False)
            origin = "convert_hf_to_gguf.py --outtype f32" + (
                "" if scheme == "f32" else f", then llama-quantize {QUANT_TYPES[scheme]}")  # fmt: skip
        facts = describe_gguf(artifact)
        linear_types = facts["linear_types"]
        quantized = [name for name, kind in linear_types.items() if kind not in FLOAT_TYPES]
        float_linears = [name for name, kind in linear_types.items() if kind in FLOAT_TYPES]
        quantizing = scheme not in ("f32", "f16")
        tokenizer = ("from the source GGUF" if prepared.gguf_file is not None else
                     "the model's own" if prepared.has_tokenizer else
                     "byte-level SentencePiece mirroring edgekit's ByteTokenizer (id = byte + 3)")  # fmt: skip
        details: dict[str, Any] = {
            "llama.cpp": build.version,
            "made_by": origin,
            "tokenizer": tokenizer,
            "file_type": facts["file_type"],
            "tensor_types": facts["type_counts"],
            "tensor_types_by_name": facts["types_by_name"],
            "fallbacks": fallbacks,
        }
        if len(facts["per_tensor"]) <= 64:
            details["tensor_type_per_tensor"] = facts["per_tensor"]
        config = AutoConfig.from_pretrained(str(prepared.hf_dir))
        return Exported(
            artifact=artifact,
            runtime="llama.cpp",
            kv_cache=kv_cache_layout(config, recipe.max_context, dtype="float16", preallocated=True),
            signature={"n_ctx": recipe.max_context, "vocab": facts["vocab"]},
            linear_total=len(linear_types),
            linear_quantized=len(quantized),
            skipped_layers=float_linears if quantizing else [],
            embedding=facts["embedding"],
            requires=["llama.cpp"],
            details=details,
        )

    def open_runner(self, staged: Path, exported: Exported, recipe: Recipe) -> ArtifactRunner:
        build = llamacpp.locate()
        return LlamaRunner(build.libllama, exported.artifact, n_ctx=recipe.max_context, n_threads=recipe.threads)


# --- llama.cpp's tools ------------------------------------------------------------------------------


def _run(argv: list[str], *, what: str, timeout_s: float, cwd: Path | None = None) -> str:
    """Run a tool; its output (stdout and stderr together), or ``ExportError`` with its last lines."""
    try:
        proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=timeout_s, stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"{what} did not finish within {timeout_s:g} s") from exc
    except OSError as exc:
        raise ExportError(f"{what} could not be started: {exc}") from exc
    if proc.returncode != 0:
        raise ExportError(f"{what} failed with exit code {proc.returncode}: {_tail(proc.stdout)}")
    return proc.stdout


def _tail(output: str, lines: int = 6) -> str:
    kept = [line.strip() for line in output.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[-1200:] or "(no output)"


def _quantize(build: llamacpp.LlamaCpp, src: Path, out: Path, qtype: str, *, requantize: bool) -> list[dict[str, str]]:
    """``llama-quantize`` ``src`` to ``qtype``; the per-tensor fallbacks it announced."""
    argv = [str(build.tool("llama-quantize")), *(["--allow-requantize"] if requantize else []), str(src), str(out),
            qtype]  # fmt: skip
    output = _run(argv, what=f"llama-quantize {qtype}", timeout_s=QUANTIZE_TIMEOUT_S)
    if not out.is_file():
        raise ExportError(f"llama-quantize {qtype} exited 0 but wrote no file: {_tail(output)}")
    fallbacks = []
    for line in output.splitlines():
        if m := _FALLBACK.match(line.strip()):
            fallbacks.append({"tensor": m[1], "wanted": m[3], "written": m[4], "why": m[2]})
    return fallbacks


def _converted_f32(build: llamacpp.LlamaCpp, prepared: PreparedModel, work: Path) -> Path:
    """The source as an f32 GGUF, converted once per source and llama.cpp build (cached)."""
    cached = paths.cache_dir("gguf") / f"{prepared.source_sha256[:24]}-{build.commit}-{_CONVERTED_VERSION}-f32.gguf"
    if cached.is_file():
        return cached
    model_dir, extra = prepared.hf_dir, []
    if not prepared.has_tokenizer:
        model_dir = _byte_tokenizer_staging(prepared, work / re.sub(r"[^\w.-]", "_", prepared.model_id))
        extra = ["--no-space-prefix"]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{cached.name}.", dir=cached.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        argv = [sys.executable, "-P", str(Path(__file__).with_name("_gguf_convert.py")), str(build.src_dir), *extra,
                str(model_dir), "--outtype", "f32", "--outfile", str(tmp)]  # fmt: skip
        # From inside llama.cpp's tree: the converter imports its own modules (conversion/, gguf-py/).
        _run(argv, what="convert_hf_to_gguf.py", timeout_s=CONVERT_TIMEOUT_S, cwd=build.src_dir)
        if tmp.stat().st_size == 0:
            raise ExportError("convert_hf_to_gguf.py exited 0 but wrote an empty file")
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached


def _byte_tokenizer_staging(prepared: PreparedModel, stage: Path) -> Path:
    """A directory for the converter: the model's config and weights (linked) plus a tokenizer that
    tokenizes like ``ByteTokenizer``. Kept apart from the model directory, where a tokenizer file would
    change what the model is (``PreparedModel.has_tokenizer``)."""
    import json

    vocab = json.loads((prepared.hf_dir / "config.json").read_text()).get("vocab_size", 0)
    if vocab < 256 + BYTE_OFFSET + 2:
        raise ExportError(f"'{prepared.model_id}' has no tokenizer and a vocabulary of {vocab}; a GGUF needs one, "
                          f"and the byte-level stand-in needs at least {256 + BYTE_OFFSET + 2} ids")  # fmt: skip
    stage.mkdir(parents=True)
    for path in prepared.hf_dir.iterdir():
        if path.name in ("config.json", "generation_config.json") or path.suffix == ".safetensors":
            (stage / path.name).symlink_to(path.resolve())
    (stage / "tokenizer.model").write_bytes(_byte_spm())
    config = {"tokenizer_class": "LlamaTokenizer", "add_prefix_space": False, "add_bos_token": False,
              "add_eos_token": False}  # fmt: skip
    (stage / "tokenizer_config.json").write_text(json.dumps(config))
    return stage


def _byte_spm() -> bytes:
    """A SentencePiece model whose ids are ByteTokenizer's: 0 <unk>, 1 <s>, 2 </s>, 3 + b the byte b.

    Bytes are byte-fallback pieces, except the space: llama.cpp's SentencePiece tokenizer turns every space
    into U+2581 before looking it up, so id 35 (0x20 + 3) is the normal piece U+2581, and the <0x20> byte
    piece that sentencepiece insists on is parked at 259, which ByteTokenizer never produces. Id 260 is
    <|endoftext|>: llama.cpp's phi3 vocabulary looks that token up.
    """
    from sentencepiece import sentencepiece_model_pb2

    pb: Any = sentencepiece_model_pb2  # generated protobuf classes, untyped
    model = pb.ModelProto()
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.byte_fallback = True
    trainer.vocab_size = 256 + BYTE_OFFSET + 2
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    kinds = pb.ModelProto.SentencePiece
    pieces = [("<unk>", kinds.UNKNOWN), ("<s>", kinds.CONTROL), ("</s>", kinds.CONTROL)]
    pieces += [("\u2581", kinds.NORMAL) if b == 0x20 else (f"<0x{b:02X}>", kinds.BYTE) for b in range(256)]
    pieces += [("<0x20>", kinds.BYTE), ("<|endoftext|>", kinds.CONTROL)]
    for text, kind in pieces:
        piece = model.pieces.add()
        piece.piece, piece.type, piece.score = text, kind, 0.0
    return bytes(model.SerializeToString())


# --- what is in a GGUF file -------------------------------------------------------------------------


def describe_gguf(path: Path) -> dict[str, Any]:
    """Tensor types of a GGUF file as written: per tensor, counted by type and by name pattern, the
    linear (attention and MLP weight matrices, plus the output layer, which is the embedding table when
    tied) layers' types, the embedding's type and the vocabulary size."""
    from gguf import GGUFReader, LlamaFileType

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:
        raise ExportError(f"{path.name} is not a readable GGUF file: {exc}") from exc
    per_tensor = {t.name: t.tensor_type.name for t in reader.tensors}
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    linear = {name: kind for name, kind in per_tensor.items() if _LINEAR.match(name) and len(shapes[name]) == 2}
    head = "output.weight" if "output.weight" in per_tensor else "token_embd.weight"
    if head in per_tensor:
        linear[head] = per_tensor[head]
    by_name: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, kind in per_tensor.items():
        by_name[re.sub(r"^blk\.\d+\.", "blk.*.", name)][kind] += 1
    field = reader.fields.get("tokenizer.ggml.tokens")
    vocab = len(field.data) if field is not None else shapes.get("token_embd.weight", [0, 0])[-1]
    file_type = reader.fields.get("general.file_type")
    embedding = per_tensor.get("token_embd.weight", "absent")
    return {
        "per_tensor": per_tensor,
        "type_counts": dict(collections.Counter(per_tensor.values()).most_common()),
        "types_by_name": {name: ", ".join(f"{k} x{n}" for k, n in c.most_common()) for name, c in by_name.items()},
        "linear_types": linear,
        "embedding": embedding + (" (tied to the output layer)" if head == "token_embd.weight" else ""),
        "vocab": int(vocab),
        "file_type": LlamaFileType(int(file_type.parts[file_type.data[0]][0])).name if file_type else None,
    }
