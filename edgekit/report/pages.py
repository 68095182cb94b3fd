"""HTML pages of ``edgekit compare`` and ``edgekit study``, made of the report's own parts.

A comparison page holds each pair's sentence and ratio table, the quality-against-speed chart of the
compared artifacts (when the two sides are different artifacts: a device comparison holds the artifact
fixed, so its quality does not move) and the timelines of each compared cell's median run. A study page
holds the protocol's table (reference rows included), the chart of the measured artifacts per device (the
runtimes' 4-bit formats against each other) and the timelines of their median runs. Same rules as the
report: one self-contained file, stable figure ids, alt text.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from edgekit.report.cells import Cell
from edgekit.report.compare import Comparison, ratio_rows
from edgekit.report.frontier import frontier_groups
from edgekit.report.html import frontier_sections, page, slug, table_html, timeline_sections
from edgekit.report.study import HEADERS, Protocol, StudyRow, row_strings
from edgekit.report.timeline import RunTimeline


def compared_cells(results: Sequence[Comparison]) -> list[Cell]:
    """Every cell the comparisons paired, once each, in report order."""
    seen: dict[tuple[object, ...], Cell] = {}
    for result in results:
        for pair in result.cells:
            for cell in pair:
                seen.setdefault((cell.device_id, cell.artifact_sha256, cell.workload()), cell)
    return sorted(seen.values(), key=lambda c: (c.device_id, c.model_id, c.recipe, c.workload()))


def compare_page(results: Sequence[Comparison], timelines: Sequence[RunTimeline], timeline_note: str) -> str:
    first = results[0]
    title = f"edgekit compare {first.a} {' '.join(r.b for r in results)}"
    sections = [f"<h2>{html.escape(first.kind.capitalize())}s compared</h2>"]
    for result in results:
        for index, pair in enumerate(result.pairs):
            context = ", ".join(f"{k}={v}" for k, v in pair.context.items())
            sections.append(f"<h3>{html.escape(pair.sentence)}</h3><p class=\"note\">{html.escape(context)}</p>")
            headers = ["metric", result.a, result.b, f"{result.a} / {result.b}", "95% CI"]
            sections.append(table_html(headers, ratio_rows(pair), table_id=slug("ratios", result.b, index)))
    cells = compared_cells(results)
    if first.kind != "device":
        sections += ["<h2>Quality against speed</h2>", *frontier_sections(frontier_groups(cells))]
    sections += ["<h2>Runs</h2>", *timeline_sections(timelines, timeline_note)]
    return page(title, sections)


def study_page(protocol: Protocol, rows: list[StudyRow], cells: list[Cell], timelines: Sequence[RunTimeline],
               timeline_note: str) -> str:  # fmt: skip
    intro = (f"<p>Protocol <code>{html.escape(protocol.name)}</code>: P={protocol.prompt_len}, "
             f"G={protocol.gen_len}, {protocol.weight_bits}-bit weights, {protocol.gap_s:g} s between tests. "
             "Reference rows are the published figures.</p>")  # fmt: skip
    classes = ["pick" if r.source.startswith("reference") else "" for r in rows]
    sections = [intro, table_html(list(HEADERS), [row_strings(r) for r in rows], classes, "study"),
                "<h2>Quality against speed</h2>", *frontier_sections(frontier_groups(cells)),
                "<h2>Runs</h2>", *timeline_sections(timelines, timeline_note)]  # fmt: skip
    return page(protocol.title, sections)
