"""``edgekit report`` numbers against an independent computation on the generated traces' true values."""

from __future__ import annotations

import csv
import io
import json
import statistics

import numpy as np
import pytest

from edgekit.profile.metrics import CHARGING, NO_SENSOR
from edgekit.report.stats import bootstrap_median_ci, bootstrap_medians
from tests.report.conftest import PROFILES, RUNS, expected_frontier, true_decode_tok_s
from tests.store.cli import assert_one_line_error, edgekit


def _report(filled, *args: str) -> list[dict]:
    proc = edgekit("report", "--format", "json", *args, home=filled.home)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["cells"]


def _cell(cells: list[dict], device: str, sha: str) -> dict:
    (cell,) = [c for c in cells if c["device_id"] == device and c["artifact_sha256"] == sha]
    return cell


def test_cell_statistics_match_an_independent_computation(filled):
    cells = _report(filled)
    assert len(cells) == len(PROFILES)
    for name, (spec, artifact) in PROFILES.items():
        cell = _cell(cells, spec.device, filled.artifacts[name])
        truth = filled.truths[name]
        assert cell["n_runs"] == RUNS and cell["n_failed"] == 0
        assert (cell["prompt_len"], cell["gen_len"], cell["model_id"], cell["recipe"]) == (
            50, 50, artifact.model_id, artifact.recipe)  # fmt: skip
        for key, values in (("ttft_ms", truth.ttft_ms), ("decode_tok_s", truth.decode_tok_s)):
            assert cell[f"{key}_median"] == pytest.approx(statistics.median(values), rel=1e-9)
            assert cell[f"{key}_p90"] == pytest.approx(float(np.percentile(values, 90)), rel=1e-9)
            assert cell[f"{key}_cv"] == pytest.approx(statistics.stdev(values) / statistics.mean(values), rel=1e-9)
            assert cell[f"{key}_ci_low"] <= statistics.median(values) <= cell[f"{key}_ci_high"]
        prefill = [50 / (t / 1000) for t in truth.ttft_ms]
        assert cell["prefill_tok_s_median"] == pytest.approx(statistics.median(prefill), rel=1e-9)
        # The true generator values lie inside the 95% CI of the stable cells.
        if spec.jitter <= 0.02:
            assert cell["ttft_ms_ci_low"] <= spec.prefill_ms <= cell["ttft_ms_ci_high"]
            assert cell["decode_tok_s_ci_low"] <= true_decode_tok_s(name) <= cell["decode_tok_s_ci_high"]
        # Peak memory is what the generator's sampler reported while generating.
        kv_kb = artifact.kv_bytes_per_token * 100 // 1024
        peak_kb = spec.base_rss_kb + artifact.weights_bytes // 1024 + kv_kb + spec.compute_kb
        assert cell["peak_mem_mb_median"] == pytest.approx(peak_kb / 1024)
        assert cell["weights_mb"] == pytest.approx(artifact.weights_bytes / 1024 / 1024, abs=1e-3)
        assert cell["kv_cache_mb"] == pytest.approx(kv_kb / 1024)


def test_energy_per_token_and_its_missing_reasons(filled):
    cells = _report(filled)
    spec, _ = PROFILES["pixel-int4"]
    truth = filled.truths["pixel-int4"]
    # Independent: (busy - idle) power over prefill_start .. run_end (+1 ms), per generated token.
    per_run = [
        (spec.busy_w - spec.idle_w) * (ttft / 1000 + 49 / tok_s + 0.001) / 50 * 1000
        for ttft, tok_s in zip(truth.ttft_ms, truth.decode_tok_s, strict=True)
    ]
    pixel = _cell(cells, "pixel-8", filled.artifacts["pixel-int4"])
    assert pixel["energy_per_token_mj_median"] == pytest.approx(statistics.median(per_run), rel=0.03)
    assert pixel["energy_note"] == ""
    no_sensor = _cell(cells, "rpi5", filled.artifacts["rpi-int4"])
    assert no_sensor["energy_per_token_mj_median"] is None and NO_SENSOR in no_sensor["energy_note"]
    charging = _cell(cells, "rpi5", filled.artifacts["rpi-fp32"])
    assert charging["energy_per_token_mj_median"] is None and CHARGING in charging["energy_note"]


def test_unstable_cells_are_flagged(filled):
    cells = _report(filled)
    jittery = _cell(cells, "rpi5", filled.artifacts["rpi-int4"])
    assert "ttft_ms" in jittery["unstable"] and jittery["ttft_ms_cv"] > 0.05
    steady = _cell(cells, "pixel-8", filled.artifacts["pixel-int4"])
    assert steady["unstable"] == ""
    md = edgekit("report", "--format", "md", "--device", "rpi5", home=filled.home)
    assert md.returncode == 0 and "unstable: ttft_ms" in md.stdout


@pytest.mark.parametrize("n", [2, 3, 4, 7, 10, 51])
def test_fast_bootstrap_medians_equal_numpy_medians_of_the_same_resamples(n):
    values = list(np.random.default_rng(n).normal(10, 2, size=n).round(1))  # rounding makes ties
    fast = bootstrap_medians(values, 300, 5)
    idx = np.random.default_rng(5).integers(0, n, size=(300, n))
    assert np.allclose(fast, np.median(np.sort(values)[idx], axis=1))


def test_bootstrap_is_seeded_and_brackets_the_median():
    values = list(np.random.default_rng(3).normal(100, 5, size=25))
    assert bootstrap_median_ci(values) == bootstrap_median_ci(values)
    low, high = bootstrap_median_ci(values) or (None, None)
    assert low < statistics.median(values) < high


def test_filters_and_formats(filled):
    only = _report(filled, "--device", "pixel-8", "--recipe", "onnx-int4")
    assert {(c["device_id"], c["recipe"]) for c in only} == {("pixel-8", "onnx-int4")} and len(only) == 2
    assert {c["model_id"] for c in _report(filled, "--model", "tiny-qwen")} == {"tiny-qwen"}
    proc = edgekit("report", "--format", "csv", home=filled.home)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == len(PROFILES) and float(rows[0]["ttft_ms_median"]) > 0
    table = edgekit("report", home=filled.home)
    assert table.returncode == 0 and "pixel-8" in table.stdout and "tiny-qwen" in table.stdout
    out = filled.home / "report.md"
    assert edgekit("report", "--format", "md", "-o", str(out), home=filled.home).returncode == 0
    cells_part, frontier_part = out.read_text().split("## Quality against speed")
    assert sum(line.startswith("| ") for line in cells_part.splitlines()) == len(PROFILES) + 1  # header + a row a cell
    groups = {(spec.device, artifact.model_id) for spec, artifact in PROFILES.values()}
    rows = sum(len(expected_frontier(*g)[0]) + 2 for g in groups)  # each group: its frontier, then its two picks
    assert sum(line.startswith("| ") for line in frontier_part.splitlines()) == rows + 1


def test_filters_that_match_nothing_are_one_line_exit_2(filled):
    line = assert_one_line_error(edgekit("report", "--device", "nope", home=filled.home), "no runs match device nope")
    assert "pixel-8" in line and "rpi5" in line  # says what the store does have
    assert_one_line_error(edgekit("report", "--format", "xml", home=filled.home), "unknown format 'xml'")
    assert_one_line_error(edgekit("report", "--format", "html", home=filled.home), "--format html needs --out")
