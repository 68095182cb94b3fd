"""Model sources: every kind of bad input is one clear ModelSourceError, and good ones resolve offline."""

from __future__ import annotations

import json
import shutil

import pytest

from edgekit.errors import ModelSourceError, UnknownName, UnsupportedArchitecture
from edgekit.models import load_model, prepare
from edgekit.models.sources import _bundled_gguf


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, shared_cache):
    """A copy of the tiny llama's HF directory that tests can damage."""
    import os

    os.environ.setdefault("EDGEKIT_CACHE", str(shared_cache))
    prepared = prepare("tiny-llama")
    target = tmp_path_factory.mktemp("hf") / "tiny"
    shutil.copytree(prepared.hf_dir, target)
    return target


def test_tiny_models_for_four_architectures():
    for arch in ("llama", "qwen2", "phi3", "gemma"):
        prepared = prepare(f"tiny-{arch}")
        assert prepared.architecture == arch
        assert (prepared.hf_dir / "config.json").exists()
        assert len(prepared.source_sha256) == 64


def test_tiny_model_is_cached_and_stable():
    assert prepare("tiny-qwen2") == prepare("tiny-qwen2")


def test_hf_dir_source(tiny_dir):
    prepared = prepare(str(tiny_dir))
    assert prepared.source_kind == "hf-dir" and prepared.architecture == "llama"
    assert load_model(prepared).config.num_hidden_layers == 2


def test_missing_path():
    with pytest.raises(ModelSourceError, match=r"model path '/nonexistent/model' does not exist"):
        prepare("/nonexistent/model")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelSourceError, match="not a model directory: no config.json"):
        prepare(str(tmp_path))


def test_unsupported_architecture(tmp_path, tiny_dir):
    bad = tmp_path / "bert"
    shutil.copytree(tiny_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(UnsupportedArchitecture, match=r"unsupported architecture 'bert'; supported: gemma, llama"):
        prepare(str(bad))


def test_truncated_safetensors(tmp_path, tiny_dir):
    bad = tmp_path / "trunc"
    shutil.copytree(tiny_dir, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSourceError, match="not a valid safetensors file: truncated"):
        prepare(str(bad))


def test_garbage_safetensors(tmp_path, tiny_dir):
    bad = tmp_path / "garbage"
    shutil.copytree(tiny_dir, bad)
    (bad / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelSourceError, match="not a valid safetensors file"):
        prepare(str(bad))


def test_truncated_gguf(tmp_path):
    real = _bundled_gguf("smollm2-135m")
    bad = tmp_path / "cut.gguf"
    with real.open("rb") as fh:
        bad.write_bytes(fh.read(4096))
    with pytest.raises(ModelSourceError, match="truncated or corrupt GGUF"):
        prepare(str(bad))


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "fake.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelSourceError, match="not a GGUF file"):
        prepare(str(bad))


def test_unknown_alias_lists_known():
    with pytest.raises(UnknownName, match=r"unknown model 'smollm9'; known: smollm2-135m, tiny-gemma"):
        prepare("smollm9")


def test_hub_id_offline_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelSourceError, match=r"hub model 'someorg/somemodel' is not in the local cache"):
        prepare("someorg/somemodel")
