"""One stored run shown, not summarised: decode latency per token index, and power and temperature over the
run's trace with the phases (load, prefill, decode) shaded.

The time panels span the whole trace the run belongs to (model load to the last repetition), so a power
spike at load or a thermal throttle half-way through the repetitions is visible; the chosen run's prefill
and decode are shaded strongly, the trace's other repetitions faintly (warm-up repetitions are not stored and
stay unshaded). The per-token panel shows the chosen run over the other successful runs of its cell. The
default run of a cell is its median run (by decode tok/s). Only the run's own sample file is read, only the
rows inside the window, and long windows are averaged into at most ``MAX_POINTS`` buckets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from edgekit.errors import StoreError
from edgekit.report.cells import Cell
from edgekit.store.db import Store
from edgekit.store.queries import dict_rows, run_by_id

MARGIN_NS = 200_000_000
MAX_POINTS = 3000
MAX_ZONES = 4
MAX_DEFAULT_TIMELINES = 12
PHASE_COLORS = {"load": "#8c8c8c", "prefill": "#DD8452", "decode": "#55A868"}
_RUN_FIELDS = "run_id, run, ok, run_start_ns, prefill_start_ns, prefill_end_ns, run_end_ns, error_ns, decode_step_ns"


@dataclass
class Phase:
    name: str  # load | prefill | decode
    start_s: float  # seconds from the window's start
    end_s: float
    chosen: bool  # the shown run's own phase (or the trace's load)


@dataclass
class RunTimeline:
    run_id: str
    run: int
    device_id: str
    model_id: str
    recipe: str
    ok: bool
    decode_tok_s: float | None
    token_ms: list[float]  # decode latency of token index 1..G-1 (index 0 is the prefill's)
    cell_token_ms: list[list[float]] = field(default_factory=list)  # the cell's other successful runs
    phases: list[Phase] = field(default_factory=list)
    time_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)  # NaN where a sample has no power
    temperature_c: dict[str, list[float]] = field(default_factory=dict)  # hottest zones; NaN where unread
    power_source: str | None = None
    bucket_ms: float | None = None  # set when the samples were averaged into buckets

    @property
    def label(self) -> str:
        return f"{self.device_id} / {self.model_id} / {self.recipe}, run {self.run}"


def token_latencies_ms(prefill_end_ns: int | None, steps_ns: list[int] | None) -> list[float]:
    """Milliseconds of each decode step after the prefill (token indices 1..G-1)."""
    if prefill_end_ns is None or not steps_ns:
        return []
    stamps = [prefill_end_ns, *steps_ns]
    return [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]


def median_run(store: Store, cell: Cell) -> str | None:
    """The cell's run at the median decode tok/s (the lower middle one for an even count)."""
    if not cell.run_ids:
        return None
    marks = ", ".join("?" for _ in cell.run_ids)
    rows = store.con.execute(
        f"SELECT run_id FROM runs WHERE run_id IN ({marks}) AND ok AND decode_tok_s IS NOT NULL "
        "ORDER BY decode_tok_s, run_id", cell.run_ids,
    ).fetchall()  # fmt: skip
    return rows[(len(rows) - 1) // 2][0] if rows else None


def default_runs(store: Store, cells: list[Cell], limit: int = MAX_DEFAULT_TIMELINES) -> tuple[list[str], int]:
    """The median run of each cell, for the first ``limit`` cells; (run ids, cells left out)."""
    runs = [run for cell in cells[:limit] if (run := median_run(store, cell)) is not None]
    return runs, max(0, len(cells) - limit)


def _phases(runs: list[dict[str, Any]], chosen: str, origin: int, load: tuple[int | None, int | None]) -> list[Phase]:
    phases = []
    if load[0] is not None and load[1] is not None:
        phases.append(Phase("load", (load[0] - origin) / 1e9, (load[1] - origin) / 1e9, True))
    for run in runs:
        mine = run["run_id"] == chosen
        if run["prefill_start_ns"] is not None and run["prefill_end_ns"] is not None:
            phases.append(Phase("prefill", (run["prefill_start_ns"] - origin) / 1e9,
                                (run["prefill_end_ns"] - origin) / 1e9, mine))  # fmt: skip
        steps = run["decode_step_ns"] or []
        if run["prefill_end_ns"] is not None and steps:
            phases.append(Phase("decode", (run["prefill_end_ns"] - origin) / 1e9, (steps[-1] - origin) / 1e9, mine))
    return phases


def _last_moment(run: dict[str, Any]) -> int | None:
    moments = (run["run_end_ns"], run["error_ns"], run["prefill_end_ns"], run["run_start_ns"],
               *(run["decode_step_ns"] or []))  # fmt: skip
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _bucketed(time_s: np.ndarray, series: np.ndarray, edges: np.ndarray) -> np.ndarray:
    index = np.clip(np.searchsorted(edges, time_s, side="right") - 1, 0, len(edges) - 2)
    sums = np.zeros(len(edges) - 1)
    counts = np.zeros(len(edges) - 1)
    present = ~np.isnan(series)
    np.add.at(sums, index[present], series[present])
    np.add.at(counts, index[present], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _samples(store: Store, timeline: RunTimeline, trace_id: str, start: int, end: int) -> None:
    try:
        source = store.samples_of(trace_id)
    except StoreError:
        return  # a trace without samples: the panels say so
    rows = store.con.execute(
        f"SELECT ts_ns, power_uw, thermal_mc FROM {source} WHERE ts_ns BETWEEN ? AND ? ORDER BY ts_ns", [start, end]
    ).fetchall()
    if not rows:
        return
    time_s = np.array([(r[0] - start) / 1e9 for r in rows])
    power = np.array([np.nan if r[1] is None else r[1] / 1e6 for r in rows])
    zones: dict[str, np.ndarray] = {}
    for i, row in enumerate(rows):
        for zone, value in dict(row[2] or {}).items():
            zones.setdefault(str(zone), np.full(len(rows), np.nan))[i] = value / 1000
    hottest = sorted(zones, key=lambda z: (-np.nanmax(zones[z]), z))[:MAX_ZONES]
    if len(rows) > MAX_POINTS:
        edges = np.linspace(time_s[0], time_s[-1], MAX_POINTS + 1)
        timeline.bucket_ms = float(edges[1] - edges[0]) * 1000
        power = _bucketed(time_s, power, edges)
        zones = {z: _bucketed(time_s, zones[z], edges) for z in hottest}
        time_s = (edges[:-1] + edges[1:]) / 2
    timeline.time_s = time_s.tolist()
    timeline.power_w = power.tolist()
    timeline.temperature_c = {z: zones[z].tolist() for z in hottest}


def load_timeline(store: Store, run_id: str) -> RunTimeline:
    """The run ``run_id`` (a unique prefix is enough) with its trace's phases and samples."""
    run = run_by_id(store, run_id)
    trace_runs = dict_rows(store.con.execute(
        f"SELECT {_RUN_FIELDS} FROM runs WHERE trace_id = ? ORDER BY run", [run["trace_id"]]))  # fmt: skip
    cell_runs = store.con.execute(
        "SELECT prefill_end_ns, decode_step_ns FROM runs WHERE device_id = ? AND artifact_sha256 = ? "
        "AND prompt_len = ? AND gen_len = ? AND warmup = ? AND threads = ? AND ok AND run_id <> ? "
        "ORDER BY run_id LIMIT 200",
        [run["device_id"], run["artifact_sha256"], run["prompt_len"], run["gen_len"], run["warmup"], run["threads"],
         run["run_id"]],
    ).fetchall()  # fmt: skip
    timeline = RunTimeline(
        run_id=run["run_id"], run=run["run"], device_id=run["device_id"], model_id=run["model_id"],
        recipe=run["recipe"], ok=run["ok"], decode_tok_s=run["decode_tok_s"],
        token_ms=token_latencies_ms(run["prefill_end_ns"], run["decode_step_ns"]),
        cell_token_ms=[t for r in cell_runs if (t := token_latencies_ms(r[0], r[1]))],
        power_source=run["power_source"],
    )  # fmt: skip
    firsts = [m for r in trace_runs if (m := r["run_start_ns"] or r["prefill_start_ns"]) is not None]
    lasts = [m for r in trace_runs if (m := _last_moment(r)) is not None]
    starts = [m for m in (run["load_start_ns"], *firsts) if m is not None]
    if not starts or not lasts:
        return timeline
    origin = min(starts) - MARGIN_NS
    timeline.phases = _phases(trace_runs, run["run_id"], origin, (run["load_start_ns"], run["load_end_ns"]))
    _samples(store, timeline, run["trace_id"], origin, max(lasts) + MARGIN_NS)
    return timeline


def _shade(ax: Any, phases: list[Phase]) -> None:
    for phase in phases:
        ax.axvspan(phase.start_s, phase.end_s, color=PHASE_COLORS[phase.name], alpha=0.35 if phase.chosen else 0.1,
                   linewidth=0)  # fmt: skip


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#a00")


def timeline_figure(timeline: RunTimeline) -> Figure:
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax_tokens, ax_power, ax_temp = fig.subplots(3, 1, gridspec_kw={"height_ratios": [1.1, 1, 1]})
    for other in timeline.cell_token_ms:
        ax_tokens.plot(range(1, len(other) + 1), other, color="grey", alpha=0.2, linewidth=0.8)
    if timeline.token_ms:
        ax_tokens.plot(range(1, len(timeline.token_ms) + 1), timeline.token_ms, color=PHASE_COLORS["decode"],
                       linewidth=1.5, marker=".", markersize=3, label=f"run {timeline.run}")  # fmt: skip
        others = Patch(color="grey", alpha=0.4, label=f"the cell's other runs ({len(timeline.cell_token_ms)})")
        ax_tokens.legend(handles=[*ax_tokens.get_lines()[-1:], others], fontsize=8)
    else:
        _empty(ax_tokens, "no decode steps recorded in this run")
    ax_tokens.set(xlabel="token index", ylabel="decode ms/token", title=f"{timeline.label} ({timeline.run_id})")
    ax_tokens.grid(True, alpha=0.3)
    time_s = np.array(timeline.time_s)
    power = np.array(timeline.power_w, dtype=float)
    if len(time_s) and not np.all(np.isnan(power)):
        ax_power.plot(time_s, power, color="#C44E52", linewidth=0.9)
    else:
        _empty(ax_power, f"no power samples ({timeline.power_source or 'no power sensor'})")
    ax_power.set(ylabel="power (W)")
    for zone, values in timeline.temperature_c.items():
        ax_temp.plot(time_s, values, linewidth=0.9, label=zone)
    if timeline.temperature_c:
        ax_temp.legend(fontsize=7, loc="upper left")
    else:
        _empty(ax_temp, "no temperature samples")
    averaged = f" (samples averaged over {timeline.bucket_ms:.0f} ms)" if timeline.bucket_ms else ""
    ax_temp.set(xlabel=f"seconds from the trace's start{averaged}", ylabel="temperature (°C)")
    for ax in (ax_power, ax_temp):
        _shade(ax, timeline.phases)
        ax.grid(True, alpha=0.3)
        if timeline.phases:
            ax.set_xlim(0, max(max(p.end_s for p in timeline.phases), time_s[-1] if len(time_s) else 0.0))
    ax_power.legend(handles=[Patch(color=c, alpha=0.45, label=n) for n, c in PHASE_COLORS.items()],
                    fontsize=8, loc="upper right", title="strong: this run", title_fontsize=7)  # fmt: skip
    return fig


def timeline_alt(timeline: RunTimeline) -> str:
    tokens = timeline.token_ms
    decode = (f"decode latency per token index 1–{len(tokens)} (median {float(np.median(tokens)):.1f} ms, "
              f"first {tokens[0]:.1f} ms, last {tokens[-1]:.1f} ms)") if tokens else "no decode steps"  # fmt: skip
    power = np.array(timeline.power_w, dtype=float)
    watts = (f"power {np.nanmin(power):.2f}–{np.nanmax(power):.2f} W" if len(power) and not np.all(np.isnan(power))
             else "no power samples")  # fmt: skip
    zones = [v for values in timeline.temperature_c.values() for v in values if v == v]
    temps = f"temperature up to {max(zones):.1f} °C" if zones else "no temperature samples"
    span = f" over {timeline.time_s[-1]:.1f} s" if timeline.time_s else ""
    return (f"Run {timeline.run_id} ({timeline.label}): {decode}; {watts} and {temps}{span}, "
            "with load, prefill and decode shaded.")  # fmt: skip


def report_timelines(store: Store, cells: list[Cell], run_ids: list[str]) -> tuple[list[RunTimeline], str]:
    """The timelines a report shows (``run_ids``, else the median run of each cell) and a note saying which."""
    if run_ids:
        chosen = {line.run_id: line for line in (load_timeline(store, run_id) for run_id in run_ids)}
        return list(chosen.values()), "The runs chosen with --run."
    medians, left_out = default_runs(store, cells)
    note = "The median run (by decode tok/s) of each cell"
    note += f"; {left_out} more cells not shown (choose runs with --run)." if left_out else "."
    return [load_timeline(store, run_id) for run_id in medians], note
