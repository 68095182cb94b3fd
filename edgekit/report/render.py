"""Text renderings of report cells: a rich terminal table, JSON, CSV and Markdown.

Every format shows the same cells and numbers; JSON and CSV carry every statistic (median, p90, CV, CI
bounds) flat, the table and Markdown show median [95% CI] and CV. Flags: "unstable" names the metrics whose
CV exceeds 5%; the energy column says why energy is missing. JSON and Markdown also carry the quality
against speed frontier of each device (``frontier.py``), as rows the HTML report shows too. HTML lives in
``html.py``.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from edgekit.profile.metrics import METRICS, MetricSpec
from edgekit.report import FORMATS
from edgekit.report.cells import Cell
from edgekit.report.frontier import PICKS, Entry, Group, frontier_groups, groups_json
from edgekit.report.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Summary

__all__ = ["FORMATS", "render_text", "to_csv", "to_json", "to_markdown", "to_table"]


def fmt_number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.1f}"


def fmt_summary(summary: Summary) -> str:
    if summary.median is None:
        return "—"
    text = fmt_number(summary.median)
    if summary.ci_low is not None and summary.ci_high is not None:
        text += f" [{fmt_number(summary.ci_low)}–{fmt_number(summary.ci_high)}]"
    return text


def fmt_cv(summary: Summary) -> str:
    return "—" if summary.cv is None else f"{summary.cv * 100:.1f}%"


def header_cells() -> list[str]:
    cols = ["device", "model", "params", "recipe", "workload", "runs"]
    for metric in METRICS:
        cols += [f"{metric.label} ({metric.unit})", f"{metric.label} CV"]
    return [*cols, "flags"]


def _flags(cell: Cell) -> str:
    flags = []
    if cell.unstable:
        flags.append("unstable: " + ", ".join(cell.unstable))
    if cell.n_failed:
        flags.append(f"{cell.n_failed} failed ({'; '.join(cell.errors)})")
    if cell.energy_note:
        flags.append("energy " + cell.energy_note)
    return " | ".join(flags)


def fmt_params(params: int | None) -> str:
    if not params:
        return "—"
    if params >= 1e9:
        return f"{params / 1e9:.2f}B"
    if params >= 1e7:
        return f"{params / 1e6:.0f}M"
    return f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.0f}K"


def row_cells(cell: Cell) -> list[str]:
    out = [cell.device_id, cell.model_id, fmt_params(cell.params), cell.recipe, cell.workload(), str(cell.n_runs)]
    for metric in METRICS:
        summary = cell.summaries[metric.key]
        out += [fmt_summary(summary), fmt_cv(summary)]
    return [*out, _flags(cell)]


def _metric_doc(metric: MetricSpec) -> str:
    return f"{metric.key}: {metric.label} in {metric.unit}"


def to_json(cells: list[Cell]) -> str:
    doc: dict[str, Any] = {
        "statistics": {
            "median": "median over successful repetitions",
            "p90": "90th percentile (linear interpolation)",
            "cv": "sample standard deviation / mean",
            "ci": f"95% percentile bootstrap of the median, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
            "metrics": [_metric_doc(m) for m in METRICS],
        },
        "cells": [{**cell.flat(), "run_ids": cell.run_ids} for cell in cells],
        "frontier": groups_json(frontier_groups(cells)),
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


def to_csv(cells: list[Cell]) -> str:
    records = [cell.flat() for cell in cells]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(cells: list[Cell]) -> str:
    cols = header_cells()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row_cells(cell)) + " |" for cell in cells]
    note = f"Median [95% bootstrap CI, {BOOTSTRAP_RESAMPLES} resamples]; CV > 5% flags a cell unstable."
    frontier = ["| " + " | ".join(FRONTIER_HEADERS) + " |", "|" + "---|" * len(FRONTIER_HEADERS)]
    frontier += ["| " + " | ".join(_md_escape(c) for c in row) + " |"
                 for group in frontier_groups(cells) for row in frontier_rows(group)]  # fmt: skip
    quality = f"## Quality against speed\n\n{FRONTIER_NOTE}\n\n" + "\n".join(frontier)
    return "\n".join(lines) + f"\n\n{note}\n\n{quality}\n"


FRONTIER_HEADERS = ["device", "workload", "model", "row", "recipe", "runtime", "decode tok/s [95% CI]",
                    "ppl ratio [95% CI]", "mean KL", "peak memory MB", "artifact MB", "artifact"]  # fmt: skip
FRONTIER_NOTE = (
    "Per device, workload and model: the artifacts no other one beats on both decode speed (median tok/s) and "
    "quality (perplexity ratio against the fp32 reference, from the quality gate), fastest first; then "
    "the fastest artifact within 1% perplexity and the one with the smallest peak memory within 5%."
)


def fmt_ratio(value: float | None, low: float | None = None, high: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" [{low:.4f}–{high:.4f}]" if low is not None and high is not None else "")


def _entry_cells(entry: Entry) -> list[str]:
    recipe = entry.recipe + ("" if entry.gate_passed is not False else " (gate failed)")
    decode = fmt_summary(Summary(1, entry.decode_tok_s, ci_low=entry.decode_ci[0], ci_high=entry.decode_ci[1]))
    return [recipe, entry.runtime or "—", decode, fmt_ratio(entry.ppl_ratio, *entry.ppl_ci),
            fmt_number(entry.kl_mean), fmt_number(entry.peak_mem_mb), fmt_number(entry.artifact_mb),
            entry.artifact_sha256[:12]]  # fmt: skip


def frontier_rows(group: Group) -> list[list[str]]:
    """The group's frontier (fastest first), then its picks; a pick nothing qualifies for says why."""
    where = [group.device_id, group.workload, group.model_id]
    rows = [[*where, f"frontier {i}", *_entry_cells(e)] for i, e in enumerate(group.frontier, start=1)]
    for pick in PICKS:
        chosen = group.picks.get(pick)
        rows.append([*where, pick, *(_entry_cells(chosen) if chosen else [group.pick_note(pick)] + ["—"] * 7)])
    return rows


def to_table(cells: list[Cell]) -> Table:
    """Compact terminal table: one column per metric holding "median [CI] CV"."""
    headers = ["device", "model", "params", "recipe", "workload", "runs"]
    headers += [f"{m.label} ({m.unit})" for m in METRICS]
    table = Table(*headers, "flags", title="edgekit report: median [95% CI] CV", show_lines=False)
    for cell in cells:
        values = [f"{fmt_summary(cell.summaries[m.key])} {fmt_cv(cell.summaries[m.key])}" for m in METRICS]
        table.add_row(*row_cells(cell)[:6], *values, _flags(cell), style="yellow" if cell.unstable else None)
    return table


def render_text(cells: list[Cell], fmt: str) -> str:
    if fmt == "json":
        return to_json(cells)
    if fmt == "csv":
        return to_csv(cells)
    if fmt == "md":
        return to_markdown(cells)
    if fmt == "table":
        console = Console(record=True, width=200, file=io.StringIO())
        console.print(to_table(cells))
        return console.export_text()
    raise ValueError(f"not a text format: {fmt}")
