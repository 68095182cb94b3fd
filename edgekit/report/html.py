"""The HTML report: ONE self-contained file (inline CSS, plots as base64 PNG data URIs, tables as HTML).

No script, font, stylesheet or image is fetched from anywhere, so the file opens offline and can be mailed
around. Every string from the store is escaped. Numbers are the same as the text formats'. Every figure has
a stable id (derived from what it shows: the same store gives the same ids) and alt text that says what
it shows. Sections: what to ship on each device (quality against speed, with the frontier tables), the
cell table, the summary plots, and the timelines of single runs.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from matplotlib.figure import Figure

from edgekit.report.cells import Cell
from edgekit.report.frontier import Group, frontier_groups
from edgekit.report.frontier_plot import frontier_alt, frontier_figure
from edgekit.report.plots import FIGURES, png_bytes
from edgekit.report.render import FRONTIER_HEADERS, FRONTIER_NOTE, frontier_rows, header_cells, row_cells
from edgekit.report.stats import BOOTSTRAP_RESAMPLES
from edgekit.report.timeline import RunTimeline, timeline_alt, timeline_figure

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; } td:nth-child(-n+5) { text-align: left; }
table.frontier td { white-space: nowrap; } table.frontier td:nth-child(-n+4) { text-align: left; }
table.frontier td:nth-child(3) { white-space: normal; min-width: 16em; }
table.frontier td:last-child { font-family: monospace; }
tr.unstable { background: #fff6d5; } tr.pick { background: #eef6ee; }
figure { margin: 1em 0 2em 0; } img { max-width: 100%; } p.note { font-size: 12px; color: #555; }
"""


def table_html(headers: list[str], rows: list[list[str]], classes: list[str] | None = None, table_id: str = "",
               table_class: str = "") -> str:  # fmt: skip
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    kind = f' class="{table_class}"' if table_class else ""
    return f"<table{ident}{kind}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def slug(*parts: object) -> str:
    """An id fragment from names: lowercase letters, digits and single dashes."""
    text = "-".join(str(p) for p in parts).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"


def _unique(ident: str, used: set[str]) -> str:
    """``ident``, or ``ident-2``, ``-3``... when two names slug alike (e.g. devices 'a_1' and 'a-1')."""
    candidate, n = ident, 1
    while candidate in used:
        n += 1
        candidate = f"{ident}-{n}"
    used.add(candidate)
    return candidate


def figure_html(fig_id: str, fig: Figure, caption: str, alt: str) -> str:
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return (f'<figure id="{html.escape(fig_id)}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def frontier_sections(groups: list[Group]) -> list[str]:
    """Per device and workload: the quality-against-speed chart and the frontier table."""
    by_chart: dict[tuple[str, str], list[Group]] = {}
    for group in groups:
        by_chart.setdefault((group.device_id, group.workload), []).append(group)
    out = [f"<p>{html.escape(FRONTIER_NOTE)}</p>"]
    used: set[str] = set()
    for (device, workload), mine in by_chart.items():
        ident = _unique(slug(device, workload), used)
        out.append(f"<h3>{html.escape(device)} ({html.escape(workload)})</h3>")
        placed = [g for g in mine if g.entries]
        if placed:
            caption = f"Quality against speed on {device} ({workload})"
            out.append(figure_html(f"fig-frontier-{ident}", frontier_figure(placed), caption, frontier_alt(placed)))
        # The heading names the device and workload: the table starts at the model.
        rows = [row[2:] for g in mine for row in frontier_rows(g)]
        classes = ["" if row[1].startswith("frontier") else "pick" for row in rows]
        out.append(table_html(FRONTIER_HEADERS[2:], rows, classes, f"frontier-{ident}", "frontier"))
        missing = [f"{g.model_id}: {n}" for g in mine for n in g.not_placed]
        if missing:
            out.append(f'<p class="note">Not placed: {html.escape("; ".join(missing))}.</p>')
    return out


def timeline_sections(timelines: Sequence[RunTimeline], note: str = "") -> list[str]:
    out = [f'<p class="note">{html.escape(note)}</p>'] if note else []
    for timeline in timelines:
        out.append(figure_html(f"fig-timeline-{slug(timeline.run_id)}", timeline_figure(timeline),
                               f"Run {timeline.run_id}: {timeline.label}", timeline_alt(timeline)))  # fmt: skip
    return out


def to_html(cells: list[Cell], timelines: Sequence[RunTimeline] = (), title: str = "edgekit report",
            timeline_note: str = "") -> str:  # fmt: skip
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    intro = (
        f"<p>Generated {html.escape(generated)}. {len(cells)} cells (device × artifact × workload). "
        f"Median [95% percentile-bootstrap CI, {BOOTSTRAP_RESAMPLES} resamples]; "
        "highlighted rows are unstable (CV &gt; 5%).</p>"
    )
    table = table_html(
        header_cells(), [row_cells(c) for c in cells], ["unstable" if c.unstable else "" for c in cells], "cells"
    )
    figures = [figure_html(f"fig-{key}", draw(cells), caption, f"{caption}: {alt}")
               for key, caption, alt, draw in FIGURES]  # fmt: skip
    sections = [intro, "<h2>What to ship: quality against speed</h2>", *frontier_sections(frontier_groups(cells)),
                "<h2>Cells</h2>", table, "<h2>Plots</h2>", *figures]  # fmt: skip
    if timelines or timeline_note:
        sections += ["<h2>Runs</h2>", *timeline_sections(timelines, timeline_note)]
    return page(title, sections)
