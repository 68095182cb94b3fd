"""The export CLI as a user runs it: a real subprocess, one line and exit 2 on bad input, nothing left
in --out, and the manifest printed as a table or JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def edgekit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def _one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("model", "recipe", "message"),
    [
        ("/nonexistent/dir", "onnx-fp32", "model path '/nonexistent/dir' does not exist"),
        ("tiny-llama", "onnx-int3", "unknown recipe 'onnx-int3'; known:"),
        ("nosuchmodel", "onnx-fp32", "unknown model 'nosuchmodel'; known: smollm2-135m"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, model, recipe, message):
    out = tmp_path / "out"
    proc = edgekit("export", model, "--recipe", recipe, "--out", str(out))
    _one_line_error(proc, message)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notamodel").mkdir()
    proc = edgekit("export", str(tmp_path / "notamodel"), "--recipe", "onnx-fp32", "--out", str(tmp_path / "o"))
    _one_line_error(proc, "is not a model directory: no config.json")
    assert not (tmp_path / "o").exists()


def test_out_of_range_recipe_value(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        "name: bad\ndescription: d\ntarget: onnx\nquantize: {scheme: int4, block_size: 12}\n"
        "gate: {max_abs_logit_diff: 1, min_top1_agreement: 0.5, max_ppl_ratio: 2}\n"
    )
    proc = edgekit("export", "tiny-llama", "--recipe", str(recipe), "--out", str(tmp_path / "o"))
    _one_line_error(proc, "block_size must be a power of two >= 16, got 12")
    assert not (tmp_path / "o").exists()


def test_debug_shows_traceback(tmp_path):
    proc = edgekit("--debug", "export", "tiny-llama", "--recipe", "nope", "--out", str(tmp_path / "o"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_export_then_inspect(tmp_path):
    out = tmp_path / "art"
    proc = edgekit("export", "tiny-qwen2", "--recipe", "onnx-int8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "gate passed" in proc.stdout and "quantized linears" in proc.stdout
    shown = edgekit("inspect", str(out), "--json")
    manifest = json.loads(shown.stdout)
    assert manifest["recipe"]["name"] == "onnx-int8" and manifest["gate"]["passed"]
    table = edgekit("inspect", str(out))
    assert "same top-1" in table.stdout and "KL" in table.stdout and "onnx-int8" in table.stdout
    again = edgekit("export", "tiny-qwen2", "--recipe", "onnx-int8", "--out", str(out))
    _one_line_error(again, "already exists and is not empty")


def test_inspect_not_an_artifact(tmp_path):
    _one_line_error(edgekit("inspect", str(tmp_path)), "is not an edgekit artifact")


def test_recipes_lists_one_line_each():
    proc = edgekit("recipes")
    assert proc.returncode == 0
    for name in ("onnx-fp32", "onnx-int8", "onnx-int4", "pte-fp32", "pte-8da4w"):
        assert name in proc.stdout
