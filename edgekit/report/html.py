"""The HTML report: ONE self-contained file (inline CSS, plots as base64 PNG data URIs, tables as HTML).

No script, font, stylesheet or image is fetched from anywhere, so the file opens offline and can be mailed
around. Every string from the store is escaped. Numbers are the same as the text formats'.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime

from edgekit.report.cells import Cell
from edgekit.report.plots import render_pngs
from edgekit.report.render import header_cells, row_cells
from edgekit.report.stats import BOOTSTRAP_RESAMPLES

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; } td:nth-child(-n+5) { text-align: left; }
tr.unstable { background: #fff6d5; }
figure { margin: 1em 0 2em 0; } img { max-width: 100%; }
"""


def table_html(headers: list[str], rows: list[list[str]], classes: list[str] | None = None, table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, sections: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def to_html(cells: list[Cell], title: str = "edgekit report") -> str:
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    intro = (
        f"<p>Generated {html.escape(generated)}. {len(cells)} cells (device × artifact × workload). "
        f"Median [95% percentile-bootstrap CI, {BOOTSTRAP_RESAMPLES} resamples]; "
        "highlighted rows are unstable (CV &gt; 5%).</p>"
    )
    table = table_html(
        header_cells(), [row_cells(c) for c in cells], ["unstable" if c.unstable else "" for c in cells], "cells"
    )
    figures = []
    for caption, png in render_pngs(cells):
        data = base64.b64encode(png).decode("ascii")
        figures.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return page(title, [intro, "<h2>Cells</h2>", table, "<h2>Plots</h2>", *figures])
