"""Reports over the results store: cell tables (text, JSON, CSV, Markdown, HTML), plots, comparisons,
Perfetto traces of single runs and the SLM-survey study table. Numbers come from the store, whose metrics
come from ``edgekit.profile.metrics``; this package only summarizes and draws them. Nothing is imported
here eagerly: matplotlib is loaded only when a plot is drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgekit.store.db import Store
    from edgekit.store.queries import Filters

FORMATS = ("table", "json", "csv", "md", "html")


def build_report(store: Store, filters: Filters | None, fmt: str) -> str:
    """The report over the runs ``filters`` select, in ``fmt`` (one of ``FORMATS``)."""
    from edgekit.report.cells import report_cells

    cells = report_cells(store, filters)
    if fmt == "html":
        from edgekit.report.html import to_html

        return to_html(cells)
    from edgekit.report.render import render_text

    return render_text(cells, fmt)


__all__ = ["FORMATS", "build_report"]
