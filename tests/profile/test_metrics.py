"""The metric definitions against traces whose answers are known by construction."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import TraceError
from edgekit.manifest import Manifest
from edgekit.profile.metrics import (
    CHARGING,
    NO_SENSOR,
    compute_metrics,
    counter_energy_j,
    integrate_power_j,
    percentile,
    power_points,
)
from edgekit.profile.trace import load_trace, parse_lines
from tests.store.tracegen import ArtifactSpec, fake_manifest

MS = 1_000_000
P, G = 10, 5


def manifest(kind: str = "grows") -> Manifest:
    """A manifest with a 4 MiB model file and a 1 kB/token KV cache of 512 positions."""
    spec = ArtifactSpec(target="onnx" if kind == "grows" else "executorch", weights_bytes=4096 * 1024,
                        kv_bytes_per_token=1024, max_context=512)
    return fake_manifest(spec)


def build(power_w: float = 3.0, idle_w: float = 1.0, source: str | None = "hwmon", charging=None, runs: int = 2):
    """Idle 1 W for 1 s, then runs at ``power_w``: prefill 100 ms, decode steps every 20 ms."""
    header = {
        "type": "header",
        "schema_version": 1,
        "agent": {"name": "test", "version": "0"},
        "device": {"name": "d", "charging": charging},
        "artifact": {"sha256": "a"},
        "workload": {"prompt_len": P, "gen_len": G, "warmup": 0, "runs": runs, "threads": 1, "sample_ms": 10},
        "power_source": source,
    }
    events, samples = [], []
    t = 0

    def ev(name, run, **kw):
        events.append({"type": "event", "name": name, "ts_ns": t, "run": run, "warmup": False, **kw})

    ev("baseline_start", -1)
    t += 1000 * MS
    ev("baseline_end", -1)
    ev("load_start", -1)
    t += 50 * MS
    ev("load_end", -1)
    busy = []
    for run in range(runs):
        ev("run_start", run)
        start = t
        ev("prefill_start", run)
        t += 100 * MS
        ev("prefill_end", run)
        for k in range(1, G):
            t += 20 * MS
            ev("decode_step", run, token_index=k)
        ev("run_end", run)
        busy.append((start, t))
        t += 200 * MS
    for ts in range(0, t + 1, 10 * MS):
        on = any(a <= ts <= b for a, b in busy)
        samples.append(
            {
                "type": "sample",
                "ts_ns": ts,
                "rss_kb": 10_000 + (ts // MS),
                "power_uw": int((power_w if on else idle_w) * 1e6),
            }
        )
    footer = {"type": "footer", "ts_ns": t, "status": "ok", "runs_completed": runs, "runs_failed": 0, "self_hwm_kb": 1}
    return [json.dumps(r) for r in [header, *events, *samples, footer]]


def test_latency_definitions(tmp_path):
    m = compute_metrics(parse_lines(tmp_path / "t", build()), manifest())
    run = m.runs[0]
    assert run.ok and run.ttft_ms == pytest.approx(100)
    assert run.prefill_tok_s == pytest.approx(P / 0.1)
    assert run.decode_tok_s == pytest.approx((G - 1) / (4 * 0.020))
    assert run.decode_ms == pytest.approx([20.0] * (G - 1))
    assert m.load_ms == pytest.approx(50)
    assert m.cv("decode_tok_s") == pytest.approx(0, abs=1e-9)


def test_energy_above_idle(tmp_path):
    m = compute_metrics(parse_lines(tmp_path / "t", build(power_w=3.0, idle_w=1.0)), manifest())
    assert m.idle_power_w == pytest.approx(1.0, rel=1e-6)
    run = m.runs[0]
    duration_s = 0.1 + 4 * 0.02
    # Power steps from idle to 3 W between samples 10 ms apart: allow that one sample of slope per edge.
    assert run.energy_j == pytest.approx(2.0 * duration_s, rel=0.06)
    assert run.energy_per_token_mj == pytest.approx(run.energy_j / G * 1e3)
    assert run.avg_power_decode_w == pytest.approx(3.0, rel=0.05)


def test_energy_missing_is_a_reason_not_a_guess(tmp_path):
    m = compute_metrics(parse_lines(tmp_path / "t", build(source=None)), manifest())
    assert m.runs[0].energy_j is None and m.runs[0].energy_missing_reason == NO_SENSOR
    m = compute_metrics(parse_lines(tmp_path / "t", build(source="battery", charging=True)), manifest())
    assert m.runs[0].energy_per_token_mj is None and m.energy_missing_reason == CHARGING


def test_memory_breakdown(tmp_path):
    m = compute_metrics(parse_lines(tmp_path / "t", build()), manifest())
    assert m.memory["weights_kb"] == 4096
    assert m.memory["kv_cache_kb"] == (P + G) * 1024 // 1024
    assert m.memory["runtime_kb"] == m.memory["peak_rss_kb"] - 4096 - (P + G)
    static = compute_metrics(parse_lines(tmp_path / "t", build()), manifest("preallocated"))
    assert static.memory["kv_cache_kb"] == 512


def test_peak_pss_per_run_else_over_the_measured_runs(tmp_path):
    """PSS is read sparsely: a run's peak is its own samples' maximum; with none inside any run, the
    samples between the first and last measured run stand in; outside them (baseline, load) never."""
    records = [json.loads(line) for line in build(runs=2)]
    runs = [(e["ts_ns"], e["run"]) for e in records if e.get("name") in ("run_start", "run_end")]
    (start0, _), (end0, _), (start1, _), (end1, _) = runs
    gap = (end0 + start1) // 2  # between the two runs
    for r in records:
        if r["type"] == "sample":
            r["pss_kb"] = {start0 + 20 * MS: 700, end1 - 20 * MS: 900, gap: 1200, 500 * MS: 5000}.get(r["ts_ns"])
    m = compute_metrics(parse_lines(tmp_path / "a", [json.dumps(r) for r in records]), manifest())
    assert [r.peak_pss_kb for r in m.runs] == [700, 900] and m.memory["peak_pss_kb"] == 900
    for r in records:
        if r["type"] == "sample":
            r["pss_kb"] = {gap: 1200, 500 * MS: 5000}.get(r["ts_ns"])
    m = compute_metrics(parse_lines(tmp_path / "b", [json.dumps(r) for r in records]), manifest())
    assert [r.peak_pss_kb for r in m.runs] == [None, None] and m.memory["peak_pss_kb"] == 1200
    for r in records:
        if r["type"] == "sample":
            r["pss_kb"] = {500 * MS: 5000}.get(r["ts_ns"])
    m = compute_metrics(parse_lines(tmp_path / "c", [json.dumps(r) for r in records]), manifest())
    assert m.memory["peak_pss_kb"] is None


def test_failed_run_is_recorded_and_others_count(tmp_path):
    lines = build(runs=3)
    records = [json.loads(line) for line in lines]
    records = [r for r in records if not (r.get("run") == 1 and r.get("name") == "run_end")]
    records.insert(-1, {"type": "event", "name": "error", "ts_ns": 1, "run": 1, "reason": "oom", "message": "boom"})
    m = compute_metrics(parse_lines(tmp_path / "t", [json.dumps(r) for r in records]), manifest())
    assert [r.ok for r in m.runs] == [True, False, True]
    assert m.runs[1].error == "oom: boom"
    assert m.median("decode_tok_s") == pytest.approx(50.0)


def test_integral_and_percentile_helpers():
    samples = power_points([{"ts_ns": i * MS, "power_uw": 2_000_000} for i in range(0, 1001, 10)])
    assert integrate_power_j(samples, 0, 1000 * MS) == pytest.approx(2.0)
    assert integrate_power_j(samples, 0, 1000 * MS, offset_w=0.5) == pytest.approx(1.5)
    assert integrate_power_j(samples[:1], 0, MS) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 90) == 5


def test_energy_counter_is_read_at_the_window_ends():
    # 2 W (2000 µJ per ms) sampled every 10 ms; a 32-bit-style counter that wraps at 1_000_000 µJ.
    wrap = 1_000_000
    samples = [{"ts_ns": i * MS, "energy_uj": (500_000 + 2000 * i) % wrap} for i in range(0, 1001, 10)]
    # Window ends between samples: the counter is interpolated there, not rounded to the nearest sample.
    assert counter_energy_j(samples, 103 * MS, 897 * MS, wrap) == pytest.approx(2.0 * 0.794)
    # Power changes inside the window: 2 W until 500 ms, then 6 W; only the window's part counts.
    step = [{"ts_ns": i * MS, "energy_uj": 2000 * min(i, 500) + 6000 * max(i - 500, 0)} for i in range(0, 1001, 10)]
    assert counter_energy_j(step, 450 * MS, 555 * MS, None) == pytest.approx(2.0 * 0.05 + 6.0 * 0.055)
    assert counter_energy_j(samples, 103 * MS, 897 * MS, None) is None  # wrapped with no known range
    assert counter_energy_j(samples[:3], 0, 900 * MS, wrap) is None  # the window is not covered


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda ls: ls[:-1], "no footer: the trace is truncated"),
        (
            lambda ls: [ls[0].replace('"schema_version": 1', '"schema_version": 9'), *ls[1:]],
            "schema version 9 is newer",
        ),
        (lambda ls: [*ls[:3], "{not json", *ls[3:]], "line 4 is not valid JSON"),
        (lambda ls: ls[1:], "first line is not a header"),
    ],
)
def test_bad_traces_are_rejected_and_kept_aside(tmp_path, mutate, problem):
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(mutate(build())) + "\n")
    with pytest.raises(TraceError, match=problem):
        load_trace(path)
    assert not path.exists() and (tmp_path / "trace.jsonl.rejected").exists()


def test_boot_clock_samples_are_mapped(tmp_path):
    records = [json.loads(line) for line in build()]
    offset = 777 * MS
    for r in records:
        if r["type"] == "sample":
            r["ts_boot_ns"] = r.pop("ts_ns") + offset
    records.insert(1, {"type": "event", "name": "clock_sync", "ts_ns": 0, "ts_boot_ns": offset, "run": -1})
    trace = parse_lines(tmp_path / "t", [json.dumps(r) for r in records])
    assert trace.samples[0]["ts_ns"] == 0
    assert compute_metrics(trace, manifest()).runs[0].energy_j is not None
