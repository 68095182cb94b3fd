"""The quality-against-speed chart of one device and workload (matplotlib, Agg canvas, no pyplot state).

Each artifact is a point at its quality loss (perplexity increase over the fp32 reference, from the quality
gate, with its 95% interval) and its median decode tok/s (with its 95% bootstrap CI); the marker's area is
its peak memory and its colour its runtime (the same colour for a runtime in every chart). The frontier of
each model is drawn as the staircase that bounds what the model's artifacts reach. Drawn from ``Group``s
(``frontier.py``) only; nothing here reads the store.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from edgekit.report.frontier import PICKS, Entry, Group

RUNTIME_COLORS = {"executorch": "#4C72B0", "onnxruntime-genai": "#DD8452", "onnxruntime": "#C44E52",
                  "llama.cpp": "#55A868"}  # fmt: skip
_OTHER_COLOR = "#8172B3"
_MARKERS = "osD^vP*X"
_MIN_AREA, _MAX_AREA = 40.0, 600.0
_PCT_TICKS = (-5, -1, 0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


def runtime_color(runtime: str | None) -> str:
    return RUNTIME_COLORS.get(runtime or "", _OTHER_COLOR)


def _err(value: float, low: float | None, high: float | None, scale: float = 1.0) -> tuple[float, float]:
    if low is None or high is None:
        return 0.0, 0.0
    return max(0.0, (value - low) * scale), max(0.0, (high - value) * scale)


def _area(entry: Entry, largest: float) -> float:
    if entry.peak_mem_mb is None or largest <= 0:
        return _MIN_AREA
    return _MIN_AREA + (_MAX_AREA - _MIN_AREA) * entry.peak_mem_mb / largest


def frontier_figure(groups: list[Group]) -> Figure:
    """One chart for groups that share a device and workload (one frontier per model)."""
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    entries = [e for g in groups for e in g.entries]
    largest = max((e.peak_mem_mb for e in entries if e.peak_mem_mb is not None), default=0.0)
    several = len(groups) > 1
    for index, group in enumerate(groups):
        marker = _MARKERS[index % len(_MARKERS)]
        for entry in group.entries:
            x = entry.ppl_increase_pct
            xerr = _err(entry.ppl_ratio, *entry.ppl_ci, scale=100)
            yerr = _err(entry.decode_tok_s, *entry.decode_ci)
            color = runtime_color(entry.runtime)
            ax.errorbar([x], [entry.decode_tok_s], xerr=[[xerr[0]], [xerr[1]]], yerr=[[yerr[0]], [yerr[1]]],
                        fmt="none", ecolor=color, alpha=0.6, capsize=2)  # fmt: skip
            ax.scatter([x], [entry.decode_tok_s], s=_area(entry, largest), c=color, marker=marker, alpha=0.75,
                       edgecolors="black" if entry in group.frontier else "none", linewidths=1.2, zorder=3)
            label = f"{group.model_id} / {entry.recipe}" if several else entry.recipe
            ax.annotate(label, (x, entry.decode_tok_s), textcoords="offset points", xytext=(8, 6), fontsize=8,
                        fontweight="bold" if entry in group.frontier else "normal")  # fmt: skip
        front = sorted(group.frontier, key=lambda e: (e.ppl_ratio, -e.decode_tok_s))
        if front:
            ax.plot([e.ppl_increase_pct for e in front], [e.decode_tok_s for e in front], drawstyle="steps-post",
                    color="black", linewidth=1, linestyle="--" if index else "-", zorder=2)  # fmt: skip
    ax.set_xscale("symlog", linthresh=1.0)
    low, high = ax.get_xlim()
    ticks = [t for t in _PCT_TICKS if low <= t <= high]
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set(xlabel="perplexity increase over fp32 (symlog scale; 95% interval)",
           ylabel="decode tok/s (median, 95% CI)")  # fmt: skip
    first = groups[0]
    ax.set_title(f"Quality against speed on {first.device_id} ({first.workload}); marker area: peak memory",
                 fontsize=10)  # fmt: skip
    ax.grid(True, alpha=0.3)
    runtimes = sorted({e.runtime or "?" for e in entries})
    handles = [Line2D([], [], marker="o", linestyle="", color=runtime_color(r), label=r) for r in runtimes]
    handles.append(Line2D([], [], color="black", label="frontier (black edge: on it)"))
    if several:
        handles += [Line2D([], [], marker=_MARKERS[i % len(_MARKERS)], linestyle="", color="grey", label=g.model_id)
                    for i, g in enumerate(groups)]  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig


def frontier_alt(groups: list[Group]) -> str:
    """The chart in words: what it plots and which artifacts are on each frontier and picked."""
    first = groups[0]
    parts = [f"Decode tok/s against perplexity increase on {first.device_id} ({first.workload})"]
    for group in groups:
        front = ", ".join(f"{e.recipe} ({e.decode_tok_s:.1f} tok/s, ppl ×{e.ppl_ratio:.3f})" for e in group.frontier)
        picks = "; ".join(f"{p}: {c.recipe if (c := group.picks.get(p)) else 'none'}" for p in PICKS)
        parts.append(f"{group.model_id}: {len(group.entries)} artifacts, frontier {front or 'empty'}; {picks}")
    return ". ".join(parts) + "."
