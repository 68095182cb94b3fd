"""One stored run as a Chrome trace-event JSON document (the JSON format ui.perfetto.dev and
chrome://tracing open).

Layout: one process (the device, named with "M" metadata) with one thread "runner" holding nested complete
("X") slices, run ⊃ prefill, decode ⊃ one slice per decode step; the sampler's series are counter ("C")
tracks (memory in MB, power in W, per-zone temperature in °C, per-core frequency in MHz). Timestamps are
microseconds from the start of the exported window (the run plus a margin of samples on both sides).
Only this run's sample file is read, and only the window's rows.
"""

from __future__ import annotations

import json
from typing import Any

from edgekit.store.db import Store
from edgekit.store.queries import dict_rows, run_by_id

MARGIN_NS = 200_000_000
PID = 1
RUNNER_TID = 1


def _us(ts_ns: int, origin_ns: int) -> float:
    return (ts_ns - origin_ns) / 1000


def _slice(name: str, start_ns: int, end_ns: int, origin_ns: int, **args: Any) -> dict[str, Any]:
    return {
        "name": name, "cat": "edgekit", "ph": "X", "pid": PID, "tid": RUNNER_TID,
        "ts": _us(start_ns, origin_ns), "dur": max(0.0, (end_ns - start_ns) / 1000), "args": args,
    }  # fmt: skip


def _counter(name: str, ts_ns: int, origin_ns: int, values: dict[str, float]) -> dict[str, Any]:
    return {"name": name, "ph": "C", "pid": PID, "ts": _us(ts_ns, origin_ns), "args": values}


def _slices(run: dict[str, Any], origin_ns: int) -> list[dict[str, Any]]:
    start, end = run["run_start_ns"] or run["prefill_start_ns"], run["run_end_ns"]
    steps: list[int] = list(run["decode_step_ns"] or [])
    if end is None:  # a failed repetition: show what it did until its error (or last recorded moment)
        moments = (run["error_ns"], run["prefill_end_ns"], run["prefill_start_ns"], *steps)
        end = max([t for t in moments if t is not None] or [start])
    out = [_slice(f"run {run['run']}", start, end, origin_ns, run_id=run["run_id"], ok=run["ok"], error=run["error"])]
    if run["prefill_start_ns"] is not None and run["prefill_end_ns"] is not None:
        out.append(_slice("prefill", run["prefill_start_ns"], run["prefill_end_ns"], origin_ns,
                          prompt_len=run["prompt_len"], ttft_ms=run["ttft_ms"]))  # fmt: skip
    if run["prefill_end_ns"] is not None and steps:
        out.append(_slice("decode", run["prefill_end_ns"], steps[-1], origin_ns,
                          tokens=len(steps) + 1, decode_tok_s=run["decode_tok_s"]))  # fmt: skip
        previous = run["prefill_end_ns"]
        for index, ts in enumerate(steps, start=1):
            out.append(_slice(f"token {index}", previous, ts, origin_ns, token_index=index))
            previous = ts
    return out


def _counters(store: Store, run: dict[str, Any], start_ns: int, end_ns: int, origin_ns: int) -> list[dict[str, Any]]:
    source = store.samples_of(run["trace_id"])
    rows = dict_rows(store.con.execute(
        f"SELECT ts_ns, rss_kb, pss_kb, power_uw, cpu_freq_khz, thermal_mc FROM {source} "
        "WHERE ts_ns BETWEEN ? AND ? ORDER BY ts_ns",
        [start_ns, end_ns],
    ))  # fmt: skip
    out = []
    for row in rows:
        ts = row["ts_ns"]
        memory = {k: row[f"{k}_kb"] / 1024 for k in ("rss", "pss") if row[f"{k}_kb"] is not None}
        if memory:
            out.append(_counter("memory (MB)", ts, origin_ns, memory))
        if row["power_uw"] is not None:
            out.append(_counter("power (W)", ts, origin_ns, {"power": row["power_uw"] / 1e6}))
        zones = row["thermal_mc"] or {}
        if zones:
            out.append(_counter("temperature (°C)", ts, origin_ns, {str(k): v / 1000 for k, v in dict(zones).items()}))
        freqs = row["cpu_freq_khz"] or []
        if freqs:
            out.append(_counter("cpu freq (MHz)", ts, origin_ns, {f"cpu{i}": f / 1000 for i, f in enumerate(freqs)}))
    return out


def trace_events(store: Store, run_id: str) -> dict[str, Any]:
    run = run_by_id(store, run_id)
    start = run["run_start_ns"] or run["prefill_start_ns"]
    moments = (run["run_end_ns"], run["error_ns"], run["prefill_end_ns"], start, *(run["decode_step_ns"] or []))
    last = max(t for t in moments if t)
    window_start, window_end = start - MARGIN_NS, last + MARGIN_NS
    origin = window_start
    header = json.loads(run["header_json"])
    device = header.get("device", {})
    meta = [
        {"name": "process_name", "ph": "M", "pid": PID,
         "args": {"name": f"{run['device_id']} ({device.get('soc', '?')})"}},
        {"name": "thread_name", "ph": "M", "pid": PID, "tid": RUNNER_TID,
         "args": {"name": f"runner: {run['model_id']} / {run['recipe']}"}},
        {"name": "process_sort_index", "ph": "M", "pid": PID, "args": {"sort_index": 0}},
    ]  # fmt: skip
    events = meta + _slices(run, origin) + _counters(store, run, window_start, window_end, origin)
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "metadata": {
            "run_id": run["run_id"], "trace_id": run["trace_id"], "device": run["device_id"],
            "model": run["model_id"], "recipe": run["recipe"], "origin_ts_ns": origin,
            "prompt_len": run["prompt_len"], "gen_len": run["gen_len"],
        },
    }


def export_run(store: Store, run_id: str) -> str:
    return json.dumps(trace_events(store, run_id), separators=(",", ":")) + "\n"
