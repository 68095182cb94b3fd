"""``edgekit compare`` on artifacts with a known speed ratio, and ``edgekit trace`` as Perfetto JSON."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from tests.store.cli import assert_one_line_error, edgekit


def _compare(filled, *args: str) -> dict:
    proc = edgekit("compare", *args, "--json", home=filled.home)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _ratio(pair: dict, metric: str) -> dict:
    return next(r for r in pair["ratios"] if r["metric"] == metric)


def test_recipes_compare_with_the_generated_speed_ratio(filled):
    result = _compare(filled, "onnx-int4", "onnx-fp32")
    assert result["kind"] == "recipe"
    pairs = {p["context"]["device_id"]: p for p in result["pairs"]}
    assert set(pairs) == {"pixel-8", "rpi5"}
    pixel = pairs["pixel-8"]
    decode = _ratio(pixel, "decode_tok_s")
    int4, fp32 = filled.truths["pixel-int4"].decode_tok_s, filled.truths["pixel-fp32"].decode_tok_s
    assert decode["ratio"] == pytest.approx(statistics.median(int4) / statistics.median(fp32))
    assert decode["ci_low"] <= 2.0 <= decode["ci_high"]  # 25 vs 50 ms per token by construction
    ttft = _ratio(pixel, "ttft_ms")
    assert ttft["ci_low"] <= 0.5 <= ttft["ci_high"]
    assert pixel["sentence"].startswith("onnx-int4 is 2.0") and "faster than onnx-fp32 at decode on pixel-8" in (
        pixel["sentence"])  # fmt: skip
    text = edgekit("compare", "onnx-int4", "onnx-fp32", "--device", "pixel-8", home=filled.home)
    assert text.returncode == 0 and "faster than onnx-fp32" in text.stdout and "rpi5" not in text.stdout


def test_artifacts_by_sha_prefix_and_devices(filled):
    result = _compare(filled, filled.artifacts["pixel-int4"][:10], filled.artifacts["pixel-fp32"][:10])
    assert result["kind"] == "artifact" and len(result["pairs"]) == 2
    devices = _compare(filled, "pixel-8", "rpi5")
    assert devices["kind"] == "device"
    assert len(devices["pairs"]) == 2  # tiny-llama int4 and fp32 ran on both; tiny-qwen only on the pixel
    for pair in devices["pairs"]:
        assert _ratio(pair, "decode_tok_s")["ratio"] > 1.5  # the pixel is the faster device


def test_compare_errors_are_one_line(filled):
    assert_one_line_error(edgekit("compare", "pixel-8", "onnx-int4", home=filled.home), "must be the same kind")
    assert_one_line_error(edgekit("compare", "nosuch", "onnx-int4", home=filled.home), "no runs match 'nosuch'")
    assert_one_line_error(edgekit("compare", "onnx-int4", "onnx-int4", home=filled.home), "are the same recipe")


def _nested(outer: dict, inner: dict) -> bool:
    eps = 1e-6
    return outer["ts"] - eps <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"] + eps


def test_trace_export_is_perfetto_json_with_nested_slices_and_counters(filled, tmp_path):
    run_id = filled.run_ids["pixel-int4"][3]
    out = tmp_path / "run.json"
    proc = edgekit("trace", run_id, "-o", str(out), home=filled.home)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    meta = {e["name"] for e in events if e["ph"] == "M"}
    assert {"process_name", "thread_name"} <= meta
    slices = [e for e in events if e["ph"] == "X"]
    by_name = {e["name"]: e for e in slices}
    run, prefill, decode = by_name["run 3"], by_name["prefill"], by_name["decode"]
    tokens = [e for e in slices if e["name"].startswith("token ")]
    assert len(tokens) == 49
    assert _nested(run, prefill) and _nested(run, decode) and all(_nested(decode, t) for t in tokens)
    # Any two slices of the one thread either nest or do not overlap (what Perfetto needs for a stack).
    ordered = sorted(slices, key=lambda e: (e["ts"], -e["dur"]))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            assert b["ts"] >= a["ts"] + a["dur"] - 1e-6 or _nested(a, b), (a["name"], b["name"])
    truth = filled.truths["pixel-int4"]
    assert prefill["dur"] == pytest.approx(truth.ttft_ms[truth.run_ids.index(3)] * 1000)
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in slices)

    counters = [e for e in events if e["ph"] == "C"]
    tracks: dict[str, list[float]] = {}
    for event in counters:
        assert event["args"] and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in event["args"].values()
        ), event
        tracks.setdefault(event["name"], []).append(event["ts"])
    assert {"memory (MB)", "power (W)", "temperature (°C)", "cpu freq (MHz)"} <= set(tracks)
    for name, stamps in tracks.items():
        assert stamps == sorted(stamps) and stamps[0] >= 0, name
    assert min(tracks["power (W)"]) < run["ts"] and max(tracks["power (W)"]) > run["ts"] + run["dur"]


def test_trace_of_unknown_run_is_one_line(filled, tmp_path):
    assert_one_line_error(edgekit("trace", "nosuchrun", "-o", str(tmp_path / "x.json"), home=filled.home),
                          "no runs match run id 'nosuchrun'")  # fmt: skip
    assert not (tmp_path / "x.json").exists()


def test_trace_of_a_failed_run_ends_at_its_error(tmp_path):
    from edgekit.report.perfetto import trace_events
    from edgekit.store import Store, ingest_trace
    from tests.store.tracegen import ArtifactSpec, ProfileSpec, make_profile

    trace, _, _ = make_profile(tmp_path, "f", ProfileSpec(runs=3, fail_runs=(1,)), ArtifactSpec())
    with Store() as store:
        result = ingest_trace(trace, store=store)
        doc = trace_events(store, result.run_ids[1])
        error_ns, start_ns = store.con.execute(
            "SELECT error_ns, run_start_ns FROM runs WHERE run_id = ?", [result.run_ids[1]]
        ).fetchone()
    (run,) = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert run["args"]["ok"] is False and run["args"]["error"].startswith("oom")
    assert run["dur"] == pytest.approx((error_ns - start_ns) / 1000)
