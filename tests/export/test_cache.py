"""The artifact cache: an artifact is reused only when the same code would make it again, and an export
asked for afresh replaces the cached one."""

from __future__ import annotations

from edgekit import paths
from edgekit.export import pipeline
from edgekit.export.pipeline import export
from edgekit.export.recipes import resolve_recipe
from edgekit.manifest import read_manifest


def test_no_cache_replaces_the_entry_and_other_exporter_code_misses(tmp_path, monkeypatch):
    recipe = resolve_recipe("onnx-fp32")
    first = export("tiny-llama", recipe, tmp_path / "a")
    again = export("tiny-llama", recipe, tmp_path / "b")
    assert again.cached and again.manifest.created_at == first.manifest.created_at
    key = pipeline._cache_key(first.manifest.model.source_sha256, recipe)
    fresh = export("tiny-llama", recipe, tmp_path / "c", use_cache=False)
    assert not fresh.cached and fresh.manifest.created_at != first.manifest.created_at
    # the cache now holds the fresh export, not the first one
    assert read_manifest(paths.cache_dir("artifacts") / key).created_at == fresh.manifest.created_at
    assert export("tiny-llama", recipe, tmp_path / "d").manifest.created_at == fresh.manifest.created_at
    # edgekit's export code is part of the key: changed code makes its artifact again
    monkeypatch.setattr(pipeline, "exporter_digest", lambda: "0" * 64)
    assert pipeline._cache_key(first.manifest.model.source_sha256, recipe) != key
    assert not export("tiny-llama", recipe, tmp_path / "e").cached
