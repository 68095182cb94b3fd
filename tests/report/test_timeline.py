"""Run timelines against generated profiles whose shape is known: decode latency growing by a set amount per
token index, a power level of its own during load, phases where the trace's events put them."""

from __future__ import annotations

import re
import statistics

import numpy as np
import pytest

from edgekit.report import timeline as timeline_module
from edgekit.report.cells import report_cells
from edgekit.report.timeline import load_timeline, median_run, timeline_alt, timeline_figure
from edgekit.store import Store, ingest_trace
from tests.store.cli import assert_one_line_error, edgekit
from tests.store.tracegen import ArtifactSpec, ProfileSpec, make_profile

GROWTH_MS = 0.5
SPEC = ProfileSpec(runs=5, decode_ms=20, decode_growth_ms=GROWTH_MS, load_w=7.0, idle_w=1.0, busy_w=3.5, seed=5)


@pytest.fixture
def stored(tmp_path):
    trace, _, truth = make_profile(tmp_path, "growing", SPEC, ArtifactSpec())
    with Store() as store:
        result = ingest_trace(trace, store=store)
    return result, truth


def _inside(timeline, start_s: float, end_s: float) -> np.ndarray:
    t = np.array(timeline.time_s)
    return np.array(timeline.power_w)[(t > start_s) & (t < end_s)]


def test_timeline_of_the_median_run(stored):
    result, truth = stored
    with Store() as store:
        (cell,) = report_cells(store)
        chosen = median_run(store, cell)
        # The median of five decode speeds is one of the runs: the one the generator made third fastest.
        by_speed = sorted(zip(truth.decode_tok_s, truth.run_ids, strict=True))
        assert chosen == result.run_ids[by_speed[2][1]]
        line = load_timeline(store, chosen)
    assert line.decode_tok_s == pytest.approx(statistics.median(truth.decode_tok_s))
    assert len(line.token_ms) == SPEC.gen_len - 1 and len(line.cell_token_ms) == SPEC.runs - 1
    slope = np.polyfit(np.arange(len(line.token_ms)), line.token_ms, 1)[0]
    assert slope == pytest.approx(GROWTH_MS, abs=0.1)  # the decode slows as the cache fills, as generated

    phases = {(p.name, p.chosen): p for p in line.phases}
    load = phases[("load", True)]
    assert load.end_s - load.start_s == pytest.approx(0.3)  # the generator loads for 300 ms
    prefill = phases[("prefill", True)]
    assert (prefill.end_s - prefill.start_s) * 1000 == pytest.approx(truth.ttft_ms[truth.run_ids.index(line.run)])
    assert sum(1 for p in line.phases if p.name == "decode") == SPEC.runs
    assert sum(1 for p in line.phases if p.chosen) == 3  # load, and this run's prefill and decode
    # The samples sit where the phases say: load power during load, busy power in decode, idle before.
    assert np.median(_inside(line, load.start_s + 0.02, load.end_s - 0.02)) == pytest.approx(SPEC.load_w, rel=0.02)
    decode = phases[("decode", True)]
    assert np.median(_inside(line, decode.start_s, decode.end_s)) == pytest.approx(SPEC.busy_w, rel=0.02)
    assert np.median(_inside(line, 0, load.start_s - 0.02)) == pytest.approx(SPEC.idle_w, rel=0.02)
    assert set(line.temperature_c) == {"cpu-thermal", "soc-thermal"}
    assert min(line.time_s) >= 0 and line.time_s[-1] >= max(p.end_s for p in line.phases)
    assert timeline_figure(line).axes  # draws
    alt = timeline_alt(line)
    assert line.run_id in alt and "decode latency per token index 1–49" in alt
    low, high = map(float, re.search(r"power (\d+\.\d+)–(\d+\.\d+) W", alt).groups())
    assert low == pytest.approx(SPEC.idle_w, rel=0.02) and high == pytest.approx(SPEC.load_w, rel=0.02)


def test_long_windows_are_averaged_into_buckets(stored, monkeypatch):
    result, _ = stored
    monkeypatch.setattr(timeline_module, "MAX_POINTS", 40)
    with Store() as store:
        line = load_timeline(store, result.run_ids[0])
    assert len(line.time_s) == 40 and line.bucket_ms and line.bucket_ms > 20
    assert SPEC.idle_w * 0.98 < min(line.power_w) and max(line.power_w) < SPEC.load_w * 1.02
    assert "averaged over" in timeline_figure(line).axes[2].get_xlabel()


def test_a_run_without_power_or_decode_still_draws(tmp_path):
    trace, _, _ = make_profile(tmp_path, "f", ProfileSpec(runs=2, fail_runs=(0,), power_source=None), ArtifactSpec())
    with Store() as store:
        result = ingest_trace(trace, store=store)
        failed = load_timeline(store, result.run_ids[0])
    assert failed.token_ms == [] and not failed.ok
    assert all(np.isnan(failed.power_w)) and failed.temperature_c
    assert timeline_figure(failed).axes
    assert "no decode steps" in timeline_alt(failed) and "no power samples" in timeline_alt(failed)


def test_run_option_errors_are_one_line(stored, tmp_path):
    assert_one_line_error(edgekit("report", "--format", "md", "--run", "abc"), "use it with --format html")
    out = tmp_path / "r.html"
    assert_one_line_error(edgekit("report", "--format", "html", "-o", str(out), "--run", "nosuchrun"),
                          "no runs match run id 'nosuchrun'")  # fmt: skip
    assert not out.exists()
