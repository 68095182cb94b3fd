"""The one metric definition: every number edgekit reports is computed here, on the host, from the raw
timestamps and samples of a validated trace. Agents never compute metrics.

Per measured repetition:
- TTFT = prefill_end - prefill_start (model load excluded, tokenization excluded: ids are given);
- prefill tok/s = P / TTFT;
- decode tok/s = (G - 1) / (t_last - t_first), t_first = prefill_end (the first generated token),
  t_last = the last decode step; per-token decode latencies are the gaps between consecutive tokens;
- energy above idle = integral of (power - idle baseline) over [prefill_start, run_end], the baseline
  being the mean power over the trace's baseline window; energy per token = that / G; average power
  per phase = mean power over prefill and over decode. A cumulative energy counter, when the source has
  one, is used instead of integrating power (with wrap handling).
Memory (survey-style breakdown), at the peak RSS of the measured runs: weights = the artifact's model
files' bytes (resident once loaded), KV cache from the manifest's layout (static programs allocate
max_context; past/present graphs hold P + G), runtime = peak RSS - weights - KV cache, and the runtime
part split into compute and other by the idle-baseline RSS (``split_runtime_memory``).
A value known to be invalid is None with a reason, never a guess.

``METRICS`` is the registry of reported metrics (key, source field, unit, direction): the store, the
reports, the comparisons and the CLI iterate it instead of naming metrics themselves.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import TraceError
from edgekit.manifest import Manifest
from edgekit.profile.trace import Trace


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: the ``RunMetrics`` field (and store column) it comes from, how to show it."""

    key: str  # the name reports and JSON use
    column: str  # the RunMetrics field / runs column holding the per-repetition value
    label: str
    unit: str
    higher_is_better: bool
    scale: float = 1.0  # reported value = stored value * scale


# The metrics every report, comparison and the CLI summarise per repetition (median, p90, CV, 95% CI).
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("ttft_ms", "ttft_ms", "TTFT", "ms", higher_is_better=False),
    MetricSpec("prefill_tok_s", "prefill_tok_s", "prefill", "tok/s", higher_is_better=True),
    MetricSpec("decode_tok_s", "decode_tok_s", "decode", "tok/s", higher_is_better=True),
    MetricSpec("peak_mem_mb", "peak_rss_kb", "peak memory", "MB", higher_is_better=False, scale=1 / 1024),
    MetricSpec("energy_per_token_mj", "energy_per_token_mj", "energy", "mJ/tok", higher_is_better=False),
)

NO_SENSOR = "no power sensor on this device"
CHARGING = "device was charging and has no rail sensor: battery power is not what the SoC drew"


@dataclass
class RunMetrics:
    run: int
    ok: bool
    error: str | None = None
    ttft_ms: float | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    decode_ms_p50: float | None = None
    decode_ms_p90: float | None = None
    decode_ms: list[float] = field(default_factory=list)
    run_wall_ms: float | None = None
    peak_rss_kb: int | None = None
    peak_pss_kb: int | None = None
    energy_j: float | None = None  # above idle, prefill_start .. run_end
    energy_gross_j: float | None = None  # including idle
    energy_per_token_mj: float | None = None
    energy_missing_reason: str | None = None
    avg_power_prefill_w: float | None = None
    avg_power_decode_w: float | None = None


@dataclass
class ProfileMetrics:
    runs: list[RunMetrics]
    prompt_len: int
    gen_len: int
    threads: int
    load_ms: float | None
    idle_power_w: float | None
    power_source: str | None
    memory: dict[str, int | None]
    temperature_max_c: float | None
    freq_mean_khz: float | None
    self_hwm_kb: int | None
    baseline_rss_kb: int | None  # the runner's RSS in the idle baseline window (before the model loads)

    @property
    def ok_runs(self) -> list[RunMetrics]:
        return [r for r in self.runs if r.ok]

    def median(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.ok_runs if getattr(r, name) is not None]
        return statistics.median(values) if values else None

    def cv(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.ok_runs if getattr(r, name) is not None]
        if len(values) < 2 or statistics.mean(values) == 0:
            return None
        return statistics.stdev(values) / statistics.mean(values)

    @property
    def energy_missing_reason(self) -> str | None:
        reasons = {r.energy_missing_reason for r in self.ok_runs if r.energy_missing_reason}
        return "; ".join(sorted(reasons)) or None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = {m.key: {"median": _scaled(self.median(m.column), m.scale), "cv": self.cv(m.column)}
                          for m in METRICS}  # fmt: skip
        return out


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def stored_run_fields() -> tuple[str, ...]:
    """The per-repetition metric fields stored with every run (the raw step gaps are not)."""
    return tuple(f for f in RunMetrics.__dataclass_fields__ if f not in ("run", "ok", "error", "decode_ms"))


def ms_per_token(decode_tok_s: float | None) -> float | None:
    """Decode latency per token, as the SLM survey reports it."""
    return 1000.0 / decode_tok_s if decode_tok_s else None


def split_runtime_memory(runtime_kb: float | None, baseline_rss_kb: float | None) -> tuple[float | None, float | None]:
    """(compute, other) of the runtime part of the memory breakdown, as the SLM survey draws it: "other"
    is the runner process's resident memory in the idle baseline window before the model is loaded
    (interpreter, runtime libraries), "compute" the rest (activations, scratch, allocator slack). Without a
    baseline, other is unknown and compute is the whole runtime part."""
    if runtime_kb is None:
        return None, baseline_rss_kb
    return runtime_kb - (baseline_rss_kb or 0.0), baseline_rss_kb


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _power_w(sample: dict[str, Any]) -> float | None:
    value = sample.get("power_uw")
    return value / 1e6 if isinstance(value, int | float) else None


def _window(samples: list[dict[str, Any]], start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """Samples (sorted by ts_ns, as a validated trace has them) inside [start, end]."""
    lo = bisect.bisect_left(samples, start_ns, key=lambda s: s["ts_ns"])
    hi = bisect.bisect_right(samples, end_ns, key=lambda s: s["ts_ns"])
    return samples[lo:hi]


def power_points(samples: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(ts_ns, watts) of every sample that has a power reading, in time order."""
    return [(s["ts_ns"], p) for s in samples if (p := _power_w(s)) is not None]


def integrate_power_j(
    points: list[tuple[int, float]], start_ns: int, end_ns: int, offset_w: float = 0.0
) -> float | None:
    """Trapezoid integral of (power - offset) over [start, end] from ``power_points``; the window's ends
    are interpolated from their neighbours."""
    if len(points) < 2 or end_ns <= start_ns:
        return None
    # The window must be covered by samples near both ends; otherwise the integral is a guess.
    slack_ns = 0.2 * (end_ns - start_ns)
    if points[0][0] > start_ns + slack_ns or points[-1][0] < end_ns - slack_ns:
        return None
    times = [t for t, _ in points]

    def value_at(t: int) -> float:
        i = bisect.bisect_left(times, t)
        if i == 0:
            return points[0][1]
        if i == len(points):
            return points[-1][1]
        (t0, p0), (t1, p1) = points[i - 1], points[i]
        return p0 if t1 == t0 else p0 + (p1 - p0) * (t - t0) / (t1 - t0)

    lo, hi = bisect.bisect_right(times, start_ns), bisect.bisect_left(times, end_ns)
    curve = [(start_ns, value_at(start_ns)), *points[lo:hi], (end_ns, value_at(end_ns))]
    total = 0.0
    for (t0, p0), (t1, p1) in itertools.pairwise(curve):
        total += (p0 + p1) / 2 * (t1 - t0) / 1e9
    return total - offset_w * (end_ns - start_ns) / 1e9


def counter_energy_j(samples: list[dict[str, Any]], start_ns: int, end_ns: int, range_uj: int | None) -> float | None:
    """Energy from a cumulative counter (µJ) over [start, end], wrap-aware: the counter is unwrapped into a
    running total and read at the window's ends by linear interpolation between the samples around them."""
    points = [(s["ts_ns"], s["energy_uj"]) for s in samples if isinstance(s.get("energy_uj"), int | float)]
    if len(points) < 2 or end_ns <= start_ns:
        return None
    slack_ns = 0.2 * (end_ns - start_ns)
    if points[0][0] > start_ns + slack_ns or points[-1][0] < end_ns - slack_ns:
        return None
    times, totals = [points[0][0]], [0.0]
    for (_, e0), (t1, e1) in itertools.pairwise(points):
        delta = e1 - e0
        if delta < 0:  # the counter wrapped
            if not range_uj:
                return None
            delta += range_uj
        times.append(t1)
        totals.append(totals[-1] + delta)

    def total_at(t: int) -> float:
        i = min(max(bisect.bisect_left(times, t), 1), len(times) - 1)
        (t0, e0), (t1, e1) = (times[i - 1], totals[i - 1]), (times[i], totals[i])
        return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)

    return (total_at(end_ns) - total_at(start_ns)) / 1e6


def _mean_power(points: list[tuple[int, float]], start_ns: int, end_ns: int) -> float | None:
    energy = integrate_power_j(points, start_ns, end_ns)
    return energy / ((end_ns - start_ns) / 1e9) if energy is not None and end_ns > start_ns else None


def _idle_power_w(trace: Trace, points: list[tuple[int, float]]) -> float | None:
    starts, ends = trace.events_named("baseline_start"), trace.events_named("baseline_end")
    if not starts or not ends:
        return None
    return _mean_power(points, starts[0]["ts_ns"], ends[0]["ts_ns"])


def _energy_unavailable(trace: Trace) -> str | None:
    source = trace.header.get("power_source")
    if not source:
        return NO_SENSOR
    if source == "battery" and trace.header["device"].get("charging"):
        return CHARGING
    return None


def _run_metrics(
    trace: Trace, run: int, events: list[dict[str, Any]], idle_w: float | None, points: list[tuple[int, float]]
) -> RunMetrics:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_name.setdefault(event["name"], []).append(event)
    errors = by_name.get("error", [])
    if errors or "run_end" not in by_name or "prefill_end" not in by_name:
        first = errors[0] if errors else {}
        reason = first.get("reason", "incomplete")
        message = first.get("message") or "repetition did not finish"
        return RunMetrics(run=run, ok=False, error=f"{reason}: {message}")
    w = trace.workload
    prompt_len, gen_len = w["prompt_len"], w["gen_len"]
    t_start = by_name["run_start"][0]["ts_ns"] if "run_start" in by_name else by_name["prefill_start"][0]["ts_ns"]
    t_prefill0 = by_name["prefill_start"][0]["ts_ns"]
    t_first = by_name["prefill_end"][0]["ts_ns"]
    t_end = by_name["run_end"][0]["ts_ns"]
    steps = sorted(by_name.get("decode_step", []), key=lambda e: e.get("token_index", 0))
    token_times = [t_first, *(e["ts_ns"] for e in steps)]
    if len(token_times) != gen_len:
        return RunMetrics(run=run, ok=False, error=f"incomplete: {len(token_times)} of {gen_len} tokens recorded")
    gaps_ms = [(b - a) / 1e6 for a, b in itertools.pairwise(token_times)]
    ttft_ns = t_first - t_prefill0
    metrics = RunMetrics(
        run=run,
        ok=True,
        ttft_ms=ttft_ns / 1e6,
        prefill_tok_s=prompt_len / (ttft_ns / 1e9) if ttft_ns > 0 else None,
        decode_tok_s=(gen_len - 1) / ((token_times[-1] - t_first) / 1e9) if gen_len > 1 else None,
        decode_ms=gaps_ms,
        decode_ms_p50=percentile(gaps_ms, 50) if gaps_ms else None,
        decode_ms_p90=percentile(gaps_ms, 90) if gaps_ms else None,
        run_wall_ms=(t_end - t_start) / 1e6,
    )
    window = _window(trace.samples, t_start, t_end)
    rss = [s["rss_kb"] for s in window if isinstance(s.get("rss_kb"), int)]
    pss = [s["pss_kb"] for s in window if isinstance(s.get("pss_kb"), int)]
    metrics.peak_rss_kb = max(rss) if rss else None
    metrics.peak_pss_kb = max(pss) if pss else None
    reason = _energy_unavailable(trace)
    if reason is None:
        gross = counter_energy_j(trace.samples, t_prefill0, t_end, trace.header.get("energy_range_uj"))
        if gross is None:
            gross = integrate_power_j(points, t_prefill0, t_end)
        if gross is None:
            reason = "too few power samples in the run window"
        elif idle_w is None:
            reason = "no idle baseline was measured"
            metrics.energy_gross_j = gross
        else:
            metrics.energy_gross_j = gross
            metrics.energy_j = gross - idle_w * (t_end - t_prefill0) / 1e9
            metrics.energy_per_token_mj = metrics.energy_j / gen_len * 1e3
        metrics.avg_power_prefill_w = _mean_power(points, t_prefill0, t_first)
        metrics.avg_power_decode_w = _mean_power(points, t_first, token_times[-1])
    metrics.energy_missing_reason = reason
    return metrics


def memory_breakdown(
    manifest: Manifest, prompt_len: int, gen_len: int, peak_rss_kb: int | None
) -> dict[str, int | None]:
    # Weights: every model file of the artifact (an ONNX graph may keep its tensors in a .data file).
    weights_kb = manifest.weights_bytes // 1024
    kv_kb = manifest.kv_cache.bytes_for(prompt_len + gen_len) // 1024
    runtime_kb = peak_rss_kb - weights_kb - kv_kb if peak_rss_kb is not None else None
    return {"weights_kb": weights_kb, "kv_cache_kb": kv_kb, "runtime_kb": runtime_kb, "peak_rss_kb": peak_rss_kb}


def _baseline_rss_kb(trace: Trace) -> int | None:
    starts, ends = trace.events_named("baseline_start"), trace.events_named("baseline_end")
    if not starts or not ends:
        return None
    window = _window(trace.samples, starts[0]["ts_ns"], ends[0]["ts_ns"])
    rss = [s["rss_kb"] for s in window if isinstance(s.get("rss_kb"), int)]
    return int(statistics.median(rss)) if rss else None


def compute_metrics(trace: Trace, manifest: Manifest) -> ProfileMetrics:
    """Every metric of a validated trace. A trace the validation let through but that still cannot be
    computed is a ``TraceError`` naming the failure, never a raw exception: a farm records it and goes on."""
    try:
        return _compute(trace, manifest)
    except TraceError:
        raise
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise TraceError(trace.path, f"metrics cannot be computed ({type(exc).__name__}: {exc})") from exc


def _compute(trace: Trace, manifest: Manifest) -> ProfileMetrics:
    w = trace.workload
    measured: dict[int, list[dict[str, Any]]] = {}
    for event in trace.events:
        if event["run"] >= 0 and not event.get("warmup", False):
            measured.setdefault(event["run"], []).append(event)
    if not measured:
        raise TraceError(trace.path, "it records no measured repetition (no event with run >= 0)")
    points = power_points(trace.samples)
    idle_w = _idle_power_w(trace, points)
    runs = [_run_metrics(trace, run, events, idle_w, points) for run, events in sorted(measured.items())]
    load = trace.events_named("load_start"), trace.events_named("load_end")
    load_ms = (load[1][0]["ts_ns"] - load[0][0]["ts_ns"]) / 1e6 if load[0] and load[1] else None
    # Peak memory while inferring (the measured runs), the survey's notion; the load peak is not in it.
    run_rss = [r.peak_rss_kb for r in runs if r.peak_rss_kb is not None]
    run_pss = [r.peak_pss_kb for r in runs if r.peak_pss_kb is not None]
    memory = memory_breakdown(manifest, w["prompt_len"], w["gen_len"], max(run_rss) if run_rss else None)
    if not run_pss and runs:  # PSS is read sparsely (it is costly): runs shorter than its period may have none
        stamps = [e["ts_ns"] for events in measured.values() for e in events]
        phase = _window(trace.samples, min(stamps), max(stamps))
        run_pss = [s["pss_kb"] for s in phase if isinstance(s.get("pss_kb"), int)]
    memory["peak_pss_kb"] = max(run_pss) if run_pss else None
    temps = [
        v / 1000 for s in trace.samples for v in (s.get("thermal_mc") or {}).values() if isinstance(v, int | float)
    ]
    freqs = [f for s in trace.samples for f in (s.get("cpu_freq_khz") or []) if isinstance(f, int | float)]
    return ProfileMetrics(
        runs=runs,
        prompt_len=w["prompt_len"],
        gen_len=w["gen_len"],
        threads=w["threads"],
        load_ms=load_ms,
        idle_power_w=idle_w,
        power_source=trace.header.get("power_source"),
        memory=memory,
        temperature_max_c=max(temps) if temps else None,
        freq_mean_khz=statistics.fmean(freqs) if freqs else None,
        self_hwm_kb=trace.footer.get("self_hwm_kb"),
        baseline_rss_kb=_baseline_rss_kb(trace),
    )
