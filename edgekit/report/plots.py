"""The report's figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state).

Four figures, drawn from report cells only: latency against parameter count, decode tok/s per device x
recipe, the memory breakdown as stacked bars (weights / KV cache / runtime, as the SLM survey draws it) and
energy per token (cells without valid energy are named, not drawn as zero). Nothing here reads the store.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from PIL import Image

from edgekit.report.cells import Cell
from edgekit.report.render import fmt_params

_MAX_BARS = 60


def png_bytes(fig: Figure) -> bytes:
    """The figure as a 256-colour palette PNG: a quarter of the bytes of a true-colour one (noisy power
    series are the worst case), with no visible loss on flat-coloured charts."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    palette.save(out, format="png", optimize=True)
    return out.getvalue()


def _err(median: float | None, low: float | None, high: float | None) -> tuple[float, float]:
    if median is None or low is None or high is None:
        return 0.0, 0.0
    return max(0.0, median - low), max(0.0, high - median)


def latency_vs_params(cells: list[Cell]) -> Figure:
    fig = Figure(figsize=(10, 4))
    ax_ttft, ax_decode = fig.subplots(1, 2)
    markers = "osD^vP*X"
    recipes = sorted({c.recipe for c in cells})
    for device in sorted({c.device_id for c in cells}):
        for recipe in recipes:
            mine = [c for c in cells if c.device_id == device and c.recipe == recipe and c.params
                    and c.summaries["ttft_ms"].median is not None]  # fmt: skip
            if not mine:
                continue
            label = f"{device} / {recipe}"
            marker = markers[recipes.index(recipe) % len(markers)]
            xs = [c.params / 1e6 for c in mine if c.params]
            ttft = [c.summaries["ttft_ms"] for c in mine]
            bars = [_err(s.median, s.ci_low, s.ci_high) for s in ttft]
            ax_ttft.errorbar(xs, [s.median for s in ttft], yerr=[[b[0] for b in bars], [b[1] for b in bars]],
                             fmt=marker, capsize=3, label=label)  # fmt: skip
            decode = [c.summaries["decode_tok_s"].median for c in mine]
            ax_decode.plot(xs, [1000 / d if d else 0.0 for d in decode], marker, label=label)
    ax_ttft.set(xscale="log", xlabel="parameters (log scale)", ylabel="TTFT (ms)", title="Prefill latency")
    ax_decode.set(xscale="log", xlabel="parameters (log scale)", ylabel="decode (ms/token)",
                  title="Decode latency")  # fmt: skip
    sizes = sorted({c.params for c in cells if c.params})
    for ax in (ax_ttft, ax_decode):
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks([p / 1e6 for p in sizes], [fmt_params(p) for p in sizes], fontsize=7)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def decode_by_device_recipe(cells: list[Cell]) -> Figure:
    devices = sorted({c.device_id for c in cells})
    recipes = sorted({c.recipe for c in cells})
    fig = Figure(figsize=(max(6, 1.2 * len(devices) * max(1, len(recipes)) / 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(recipes))
    for j, recipe in enumerate(recipes):
        heights: list[float] = []
        errors: tuple[list[float], list[float]] = ([], [])
        for device in devices:
            mine = [c.summaries["decode_tok_s"] for c in cells if c.device_id == device and c.recipe == recipe]
            best = max((s for s in mine if s.median is not None), key=lambda s: s.median or 0, default=None)
            heights.append(best.median if best and best.median is not None else 0.0)
            low, high = _err(best.median, best.ci_low, best.ci_high) if best else (0.0, 0.0)
            errors[0].append(low)
            errors[1].append(high)
        ax.bar([i + j * width for i in range(len(devices))], heights, width, yerr=errors, capsize=2, label=recipe)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(devices))], devices, rotation=20, ha="right")
    ax.set(ylabel="decode tok/s (median, 95% CI)", title="Decode throughput per device × recipe (fastest model)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _short(cell: Cell) -> str:
    return f"{cell.device_id}\n{cell.model_id}\n{cell.recipe}"


def memory_breakdown(cells: list[Cell]) -> Figure:
    shown = cells[:_MAX_BARS]
    fig = Figure(figsize=(max(6, 0.9 * len(shown)), 4.5))
    ax = fig.subplots()
    bottoms = [0.0] * len(shown)
    for part, label, color in (("weights", "weights", "#4C72B0"), ("kv_cache", "KV cache", "#DD8452"),
                               ("runtime", "runtime / compute", "#55A868")):  # fmt: skip
        heights = [max(0.0, (c.memory_kb.get(part) or 0.0) / 1024) for c in shown]
        ax.bar(range(len(shown)), heights, bottom=bottoms, label=label, color=color)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_xticks(range(len(shown)), [_short(c) for c in shown], fontsize=7)
    ax.set(ylabel="MB (median over traces)", title="Memory breakdown at peak RSS")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def energy_per_token(cells: list[Cell]) -> Figure:
    shown = cells[:_MAX_BARS]
    fig = Figure(figsize=(max(6, 0.9 * len(shown)), 4.5))
    ax = fig.subplots()
    for i, cell in enumerate(shown):
        s = cell.summaries["energy_per_token_mj"]
        if s.median is None:
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8, color="#a00")
            continue
        low, high = _err(s.median, s.ci_low, s.ci_high)
        ax.bar(i, s.median, yerr=[[low], [high]], capsize=3, color="#8172B3")
    ax.set_xticks(range(len(shown)), [_short(c) for c in shown], fontsize=7)
    ax.set(ylabel="mJ per generated token (above idle)", title="Energy per token (n/a: no valid energy)")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


# (stable id, caption, what it shows for alt text, drawing function)
FIGURES: tuple[tuple[str, str, str, Callable[[list[Cell]], Figure]], ...] = (
    ("latency-vs-params", "Latency against parameter count",
     "median TTFT (with 95% CI) and decode ms per token against parameters, one series per device and recipe",
     latency_vs_params),
    ("decode-by-device-recipe", "Decode tok/s per device × recipe",
     "bars of median decode tok/s with 95% CIs, grouped by device, one bar per recipe (its fastest model)",
     decode_by_device_recipe),
    ("memory-breakdown", "Memory breakdown (weights / KV cache / runtime)",
     "stacked bars of weights, KV cache and runtime memory in MB per cell", memory_breakdown),
    ("energy-per-token", "Energy per token",
     "bars of median mJ per generated token above idle per cell; n/a where no valid energy", energy_per_token),
)  # fmt: skip


def render_pngs(cells: list[Cell]) -> list[tuple[str, bytes]]:
    return [(caption, png_bytes(draw(cells))) for _, caption, _, draw in FIGURES]
