"""``edgekit ingest``, ``edgekit report``, ``edgekit compare`` and ``edgekit trace``: the results store's
command line. Parsing and printing only; the work lives in ``edgekit.store`` and ``edgekit.report``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from edgekit.errors import StoreError

if TYPE_CHECKING:
    from edgekit.store.db import Store

console = Console()

_DEVICE = typer.Option([], "--device", "-d", help="only this device (repeatable)")
_MODEL = typer.Option([], "--model", "-m", help="only this model id (repeatable)")
_RECIPE = typer.Option([], "--recipe", "-r", help="only this recipe (repeatable)")


def waiting(line: str) -> None:
    """Say on stderr that the command waits for the results store (another edgekit process has it)."""
    typer.echo(line, err=True)


def _write_or_print(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    _write_file(text, out)
    console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)


def _write_file(text: str, out: Path) -> None:
    """Write ``out`` atomically (a temporary sibling renamed into place)."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write '{out}': {exc.strerror}") from exc


def ingest_cmd(
    traces: list[Path] = typer.Argument(..., help="trace.jsonl files written by the device agents"),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="the artifact's manifest.json or directory (default: manifest.json beside the trace)"
    ),
) -> None:
    """Store traces in the results database (idempotent: a trace already stored is skipped)."""
    from edgekit.store import Store, ingest_trace

    with Store(on_wait=waiting) as store:
        for path in traces:
            result = ingest_trace(path, manifest, store=store)
            state = "stored" if result.stored else "already stored"
            failed = f", {result.runs_failed} failed" if result.runs_failed else ""
            console.print(
                f"{path}: {state} as trace {result.trace_id[:12]} ({len(result.run_ids)} runs{failed}; "
                f"device {result.device_id}, artifact {result.artifact_sha256[:12]})",
                markup=False,  # paths and device names are text: '[x]' in them is not a style
                highlight=False,
                soft_wrap=True,
            )


def report_cmd(
    device: list[str] = _DEVICE,
    model: list[str] = _MODEL,
    recipe: list[str] = _RECIPE,
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, csv, md or html"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write to this file instead of stdout"),
    runs: list[str] = typer.Option([], "--run", help="with --format html: show this run's timeline (repeatable; "
                                   "default: the median run of each cell)"),
) -> None:
    """Per device x artifact x workload: median, p90, CV and 95% CI of TTFT, tok/s, memory and energy, and
    per device the artifacts that are best on speed and quality together."""
    from edgekit.report.cells import report_cells
    from edgekit.store import Store
    from edgekit.store.queries import Filters

    check_report_format(fmt, out, runs)
    with Store(read_only=True, on_wait=waiting) as store:
        cells = report_cells(store, Filters(devices=device, models=model, recipes=recipe))
        emit_report(cells, fmt, out, store, runs)


def check_report_format(fmt: str, out: Path | None, runs: list[str] | None = None) -> None:
    """Refuse a bad ``--format``/``--out``/``--run`` combination before anything is read."""
    from edgekit.report import FORMATS

    if fmt not in FORMATS:
        raise StoreError(f"unknown format '{fmt}'; known: {', '.join(FORMATS)}")
    if fmt == "html" and out is None:
        raise StoreError("--format html needs --out FILE (the report is one self-contained HTML file)")
    if runs and fmt != "html":
        raise StoreError("--run chooses the runs whose timelines the HTML report shows; use it with --format html")


def emit_report(
    cells: list[Any], fmt: str, out: Path | None, store: Store | None = None, runs: list[str] | None = None
) -> None:
    """Report cells as a rich table on a terminal, else as ``fmt`` text to stdout or (atomically) ``out``; the
    HTML report shows run timelines read from ``store`` (``runs``, else each cell's median run)."""
    from edgekit.report.render import render_text, to_table

    if fmt == "table" and out is None and console.is_terminal:
        console.print(to_table(cells))
        return
    if fmt == "html":
        from edgekit.report.html import to_html
        from edgekit.report.timeline import report_timelines

        timelines, note = report_timelines(store, cells, runs or []) if store is not None else ([], "")
        text = to_html(cells, timelines, timeline_note=note)
    else:
        text = render_text(cells, fmt)
    _write_or_print(text, out)


def compare_cmd(
    a: str = typer.Argument(..., help="an artifact (sha256 prefix), device, recipe or model"),
    others: list[str] = typer.Argument(..., help="one or more of the same kind as A (e.g. three formats' recipes)"),
    device: list[str] = _DEVICE,
    model: list[str] = _MODEL,
    recipe: list[str] = _RECIPE,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    html_out: Path | None = typer.Option(None, "--html", help="also write an HTML page: the ratio tables, the "
                                         "compared artifacts' quality against speed and their median runs' timelines"),
) -> None:
    """How A compares with each other on everything else held equal: ratios of medians with 95% bootstrap
    CIs; with several, all side by side on one schema."""
    from edgekit.report.compare import compare, render_comparison, render_side_by_side
    from edgekit.store import Store
    from edgekit.store.queries import Filters

    filters = Filters(devices=device, models=model, recipes=recipe)
    with Store(read_only=True, on_wait=waiting) as store:
        results = [compare(store, a, b, filters) for b in others]
        if html_out is not None:
            from edgekit.report.pages import compare_page, compared_cells
            from edgekit.report.timeline import report_timelines

            timelines, note = report_timelines(store, compared_cells(results), [])
            _write_file(compare_page(results, timelines, note), html_out)
    if html_out is not None and not as_json:  # JSON on stdout stays parseable
        console.print(f"wrote {html_out}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(results[0].to_json() if len(results) == 1 else "[" + ",".join(r.to_json() for r in results) + "]")
    elif len(results) == 1:
        render_comparison(results[0], console)
    else:
        render_side_by_side(results, console)


def trace_cmd(
    run_id: str = typer.Argument(..., help="a run id from the report's JSON/CSV (a unique prefix is enough)"),
    out: Path = typer.Option(..., "--out", "-o", help="Chrome/Perfetto trace-event JSON to write"),
) -> None:
    """Export one stored run as a Chrome trace-event JSON that ui.perfetto.dev opens."""
    from edgekit.report.perfetto import export_run
    from edgekit.store import Store

    with Store(read_only=True, on_wait=waiting) as store:
        text = export_run(store, run_id)
    _write_or_print(text, out)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest_cmd)
    app.command("report")(report_cmd)
    app.command("compare")(compare_cmd)
    app.command("trace")(trace_cmd)
