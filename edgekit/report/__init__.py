"""Reports over the results store: cell tables (text, JSON, CSV, Markdown, HTML), plots, the quality
against speed frontier of each device, timelines and Perfetto traces of single runs, comparisons and the
SLM-survey study table. Numbers come from the store, whose metrics
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
        from edgekit.report.timeline import report_timelines

        timelines, note = report_timelines(store, cells, [])
        return to_html(cells, timelines, timeline_note=note)
    from edgekit.report.render import render_text

    return render_text(cells, fmt)


__all__ = ["FORMATS", "build_report"]
