"""The GGUF target against the real llama.cpp: every tiny architecture x every converting scheme exported,
run through the ctypes runner and judged by its recipe's gate; the binding checked against llama.h; an
f32 GGUF checked against eager PyTorch; GGUF sources passed through and requantized; bad input refused.

llama.cpp is built by scripts/build_llama_cpp.sh when missing: these tests fail (never skip) when it
cannot be built."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgekit import llamacpp
from edgekit.data import gate_text
from edgekit.errors import LlamaCppUnavailable
from edgekit.export.gguf import QUANT_TYPES, describe_gguf
from edgekit.export.llama_runner import STRUCTS, LlamaRunner
from edgekit.export.pipeline import export
from edgekit.export.recipes import Recipe, load_recipe_file, parse_recipe, recipes_dir
from edgekit.manifest import read_manifest, sha256_file
from edgekit.models import ByteTokenizer, load_model, load_tokenizer, prepare

ARCHS = ("llama", "qwen2", "phi3", "gemma")
SCHEMES = ("f32", "f16", "q8_0", "q4_0", "q4_k_m")
# Attention + MLP weight matrices per layer (phi3 fuses q/k/v and gate/up) x 2 layers, plus the output layer.
LINEARS = {"llama": 15, "qwen2": 15, "gemma": 15, "phi3": 9}


def recipe(name: str, **changes: object) -> Recipe:
    loaded = load_recipe_file(recipes_dir() / f"{name}.yaml")
    # One runner thread for the tiny models: a decode step of theirs is ~0.4 ms of work, and two threads
    # meeting at every operator's barrier on a shared 2-core machine made it ~10 ms. Threads change how
    # fast the gate runs, not the artifact.
    return parse_recipe({**loaded.model_dump(), "threads": 1, **changes}, name)


def test_llama_cpp_is_built_and_located():
    build = llamacpp.locate()
    assert re.fullmatch(r"b\d+ \([0-9a-f]{7,}\)", build.version), build.version
    for tool in ("llama-quantize", "llama-perplexity", "llama-bench"):
        assert os.access(build.tool(tool), os.X_OK), tool
    assert build.libllama.is_file() and (build.include_dir / "llama.h").is_file() and build.convert_script.is_file()
    assert llamacpp.locate() is build  # once per process


def test_ctypes_structs_match_llama_h(tmp_path):
    """Sizes and offsets of every struct the binding passes by value, as the C compiler lays them out."""
    build = llamacpp.locate()
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "llama.h"', "int main(void) {"]
    for cname, struct in STRUCTS.items():
        tag = cname if cname == "llama_batch" else f"struct {cname}"
        lines.append(f'printf("{cname} %zu\\n", sizeof({tag}));')
        lines += [f'printf("{cname}.{f} %zu\\n", offsetof({tag}, {f}));' for f, _ in struct._fields_]
    (tmp_path / "layout.c").write_text("\n".join([*lines, "return 0; }"]))
    subprocess.run(["cc", f"-I{build.include_dir}", "layout.c", "-o", "layout"], cwd=tmp_path, check=True)
    out = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout
    c_layout = dict(line.rsplit(" ", 1) for line in out.splitlines())
    py_layout = {}
    for cname, struct in STRUCTS.items():
        py_layout[cname] = str(ctypes.sizeof(struct))
        py_layout.update({f"{cname}.{f}": str(getattr(struct, f).offset) for f, _ in struct._fields_})
    assert py_layout == c_layout


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_export_runs_in_llama_cpp_and_passes_gate(arch, scheme, tmp_path):
    r = recipe(f"gguf-{scheme}")
    out = tmp_path / "artifact"
    result = export(f"tiny-{arch}", r, out)
    m = read_manifest(out)
    assert m.gate.passed, m.gate.failures
    assert result.manifest.model_dump() == m.model_dump()
    assert (m.runtime, m.artifact, m.requires) == ("llama.cpp", "model.gguf", ["llama.cpp"])
    assert next(f for f in m.files if f.name == "model.gguf").sha256 == sha256_file(out / "model.gguf")
    p, gate = m.parity, r.gate
    assert p.tokens >= 10_000 and p.kl_mean <= gate.max_kl and p.top1_agreement >= gate.min_top1_agreement
    assert p.ppl_ratio <= gate.max_ppl_ratio and p.max_abs_logit_diff <= gate.max_abs_logit_diff
    # The manifest's tensor facts are what the file holds (read again here, independently of the target).
    facts = describe_gguf(out / "model.gguf")
    details = m.details
    assert details["llama.cpp"] == llamacpp.locate().version
    assert details["tensor_type_per_tensor"] == facts["per_tensor"]
    q = m.quantization
    assert q.linear_total == LINEARS[arch] == len(facts["linear_types"])
    written = set(facts["linear_types"].values())
    if scheme in ("f32", "f16"):
        assert q.linear_quantized == 0 and written == {scheme.upper()}
    else:
        assert q.linear_quantized == q.linear_total and not written & {"F32", "F16"}
    # Row widths of 128 are not K-quant blocks (256): llama-quantize falls back, and the manifest says so.
    # (Q4_0 keeps the output layer at q6_K, which falls back too.)
    fallbacks = details["fallbacks"]
    assert all(facts["per_tensor"][f["tensor"]] == f["written"].upper() for f in fallbacks)
    assert {f["wanted"] for f in fallbacks} <= {"q4_K", "q5_K", "q6_K"}
    if scheme == "q4_k_m":
        assert len(fallbacks) > len(facts["linear_types"]) // 2  # every matrix with 128 input columns
    elif scheme == "q4_0":
        assert {f["tensor"] for f in fallbacks} <= {"output.weight", "token_embd.weight"}
    else:
        assert fallbacks == []
    kv = m.kv_cache
    assert (kv.layers, kv.kv_heads, kv.head_dim, kv.dtype, kv.kind) == (2, 2, 32, "float16", "preallocated")
    assert m.signature == {"n_ctx": r.max_context, "vocab": 512}
    if scheme == "f32":  # the byte-level tokenizer written for the converter splits text as edgekit does
        text = gate_text()[:3000] + " café — naïve 日本語  two  spaces\n\ttab"
        runner = LlamaRunner(llamacpp.locate().libllama, out / "model.gguf", n_ctx=64, n_threads=1)
        assert runner.tokenize(text) == ByteTokenizer(512).encode(text)


def _tiny_f32_gguf(tmp_path):
    export("tiny-llama", recipe("gguf-f32"), tmp_path / "f32")
    return tmp_path / "f32" / "model.gguf"


def test_f32_gguf_logits_match_eager_pytorch(tmp_path):
    gguf = _tiny_f32_gguf(tmp_path)
    prepared = prepare("tiny-llama")
    model = load_model(prepared)
    ids = load_tokenizer(prepared, 512).encode(gate_text())[:300]
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    build = llamacpp.locate()
    # With f32 KV cells and plain attention the conversion and the binding are exact up to float order;
    # llama.cpp's default f16 cache (what devices run, and the gate measures) moves logits by ~0.1.
    for exact_kv, bound in ((True, 2e-3), (False, 0.25)):
        runner = LlamaRunner(build.libllama, gguf, n_ctx=512, n_threads=1, exact_kv=exact_kv)
        runner.reset()
        got = [runner.prefill(ids[:200])] + [runner.step(t) for t in ids[200:299]]
        diff = max(float(np.abs(reference[199 + i] - g).max()) for i, g in enumerate(got))
        assert diff < bound, (exact_kv, diff)
        runner.close()


def test_f32_gguf_greedy_tokens_equal_eager(tmp_path):
    gguf = _tiny_f32_gguf(tmp_path)
    prepared = prepare("tiny-llama")
    model = load_model(prepared)
    prompt = load_tokenizer(prepared, 512).encode("Alice was beginning to get very tired of sitting")
    with torch.no_grad():
        eager = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt) :]
    runner = LlamaRunner(llamacpp.locate().libllama, gguf, n_ctx=512, n_threads=1)
    runner.reset()
    logits, tokens = runner.prefill(prompt), []
    for _ in range(32):
        tokens.append(int(logits.argmax()))
        logits = runner.step(tokens[-1])
    assert tokens == eager.tolist()


def test_gguf_source_passes_through_byte_identical_and_requantizes(tmp_path):
    source = _tiny_f32_gguf(tmp_path)
    result = export(str(source), recipe("gguf-source"), tmp_path / "source")
    m = result.manifest
    assert m.gate.passed, m.gate.failures
    assert sha256_file(tmp_path / "source" / "model.gguf") == sha256_file(source)
    assert m.model.source_kind == "gguf" and m.details["made_by"] == "the source GGUF, unchanged"
    assert m.parity.kl_mean < 1e-3  # the file against its own dequantized weights
    # The dequantized directory holds no copy of the GGUF (transformers saves one as tokenizer.model).
    prepared = prepare(str(source))
    assert prepared.gguf_file == source.resolve() and prepared.has_tokenizer
    assert not (prepared.hf_dir / "tokenizer.model").exists()
    requantized = export(str(source), recipe("gguf-q8_0"), tmp_path / "q8").manifest
    assert requantized.gate.passed, requantized.gate.failures
    assert set(describe_gguf(tmp_path / "q8" / "model.gguf")["linear_types"].values()) == {"Q8_0"}
    assert "--allow-requantize" in requantized.details["made_by"]


def test_every_scheme_has_a_recipe():
    for scheme in ("source", *QUANT_TYPES):
        assert load_recipe_file(recipes_dir() / f"gguf-{scheme}.yaml").quantize.scheme == scheme


# --- bad input: one line, exit 2 ------------------------------------------------------------------


def _edgekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=900)


def _one_line(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    # Steps that finished before the problem are listed ("  ✓ step"); the problem itself is one line.
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("  ✓ ")]
    assert len(lines) == 1 and pattern in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_source_scheme_refuses_a_model_that_is_not_gguf(tmp_path):
    proc = _edgekit("export", "tiny-llama", "--recipe", str(recipes_dir() / "gguf-source.yaml"),
                    "--out", str(tmp_path / "out"))  # fmt: skip
    _one_line(proc, "scheme 'source' passes a GGUF source through unchanged, but 'tiny-llama' is a tiny source")
    assert not (tmp_path / "out").exists()


def test_corrupt_gguf_source(tmp_path):
    good = _tiny_f32_gguf(tmp_path).read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(good[: len(good) // 3])
    proc = _edgekit("export", str(bad), "--recipe", str(recipes_dir() / "gguf-q8_0.yaml"), "--out",
                    str(tmp_path / "out"))  # fmt: skip
    _one_line(proc, "cut.gguf")
    assert not (tmp_path / "out").exists()


def test_a_build_that_cannot_be_made_is_one_error(tmp_path, monkeypatch):
    """No cmake on PATH and an empty build cache: the build script refuses, and so does locate()."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    for tool in ("bash", "sh", "uname", "grep", "sha256sum", "cut", "cat", "head", "mkdir", "env", "dirname"):
        found = shutil.which(tool)
        assert found, tool
        (fakebin / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(fakebin))
    monkeypatch.setenv("EDGEKIT_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(llamacpp.ENV_DIR, raising=False)
    llamacpp._forget()
    try:
        with pytest.raises(LlamaCppUnavailable, match=r"build_llama_cpp.sh exited with 2: .*cmake not found") as err:
            llamacpp.locate(log=lambda line: None)
        assert err.value.exit_code == 2
    finally:
        llamacpp._forget()


def test_a_directory_that_is_no_build_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setenv(llamacpp.ENV_DIR, str(tmp_path))
    llamacpp._forget()
    try:
        with pytest.raises(LlamaCppUnavailable, match="is not a llama.cpp build: no BUILD_INFO"):
            llamacpp.locate()
    finally:
        llamacpp._forget()


# --- the real model (minutes on 2 cores) ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gguf-q8_0", "gguf-q4_k_m"])
def test_smollm2_passes_gate(name, tmp_path):
    r = load_recipe_file(recipes_dir() / f"{name}.yaml")
    m = export("smollm2-135m", r, tmp_path / name).manifest
    assert m.gate.passed, m.gate.failures
    assert m.model.architecture == "llama" and m.model.source_kind == "bundled"
    # Requantized from the bundled Q4_1 file itself, tokenizer metadata and all: 30 layers x 7 + the head.
    assert "--allow-requantize" in m.details["made_by"] and m.details["tokenizer"] == "from the source GGUF"
    assert m.quantization.linear_quantized == m.quantization.linear_total == 211
    assert m.signature == {"n_ctx": r.max_context, "vocab": 49152}
    if name == "gguf-q8_0":  # the bar for 8 bits
        assert m.parity.ppl_ratio <= 1.01 and m.parity.top1_agreement >= 0.95
        assert set(describe_gguf(tmp_path / name / "model.gguf")["linear_types"].values()) == {"Q8_0"}
    else:  # widths of 576 are not K-quant blocks: most tensors fall back, and the manifest lists them
        assert m.details["fallbacks"] and m.artifact_bytes is not None and m.artifact_bytes < 120e6
