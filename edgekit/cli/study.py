"""``edgekit study --protocol slm-survey --models M... --devices D...``: run a published measurement
protocol through the profiler, store every trace, and print the protocol's table beside the paper's own
figures (shipped with edgekit; another CSV with --reference-csv, none with --no-reference). Parsing and
printing only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from edgekit.report.study import Protocol, StudyRow
    from edgekit.store.db import Store

console = Console()


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def study_cmd(
    protocol: str = typer.Option("slm-survey", "--protocol", help="the measurement protocol (slm-survey)"),
    models: list[str] = typer.Option([], "--models", help="model specs, comma-separated or repeated"),
    devices: list[str] = typer.Option([], "--devices", help="inventory device names, comma-separated or repeated"),
    recipe: str | None = typer.Option(None, "--recipe", help="the protocol's 4-bit recipe (default: its engine's)"),
    extra: list[str] = typer.Option([], "--extra-recipes", help="more of the protocol's 4-bit recipes (other "
                                    "runtimes), comma-separated or repeated: extra rows"),
    reference_csv: Path | None = typer.Option(
        None,
        "--reference-csv",
        help="published figures as reference rows (default: the survey's, shipped with edgekit); CSV columns: "
        "model, params, device, prefill_ms, decode_ms_per_token, weights_mb, kv_cache_mb, compute_mb, other_mb, source",
    ),
    no_reference: bool = typer.Option(False, "--no-reference", help="show measured rows only"),
    no_run: bool = typer.Option(False, "--no-run", help="do not profile; print the table from stored runs"),
    inventory: Path | None = typer.Option(None, "--inventory", help="device inventory file"),
    python: str | None = typer.Option(None, "--python", help="the devices' Python (default: the profiler's choice)"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, md, csv, json or html (with --out: the table, "
                            "the measured artifacts' quality against speed and their median runs' timelines)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the table (or the HTML page) to this file"),
) -> None:
    """Run PROTOCOL for every model on every device, then print its table."""
    from edgekit.cli.results import waiting
    from edgekit.errors import StoreError
    from edgekit.report.study import (
        STUDY_FORMATS,
        SURVEY_REFERENCE,
        get_protocol,
        measured_rows,
        read_reference_csv,
        render_study,
        study_table,
    )
    from edgekit.report.study_run import StudyTest, run_protocol
    from edgekit.store import Store

    spec = get_protocol(protocol)
    if fmt not in STUDY_FORMATS:
        raise StoreError(f"unknown study format '{fmt}'; known: {', '.join(STUDY_FORMATS)}")
    if fmt == "html" and out is None:
        raise StoreError("--format html needs --out FILE (the page is one self-contained HTML file)")
    model_list, device_list = _split(models), _split(devices)
    if not no_run and (not model_list or not device_list):
        raise StoreError("a study run needs --models and --devices (or --no-run to print stored runs)")
    default_reference = SURVEY_REFERENCE if spec.name == "slm-survey" else None
    reference = None if no_reference else (reference_csv or default_reference)
    references = read_reference_csv(reference) if reference else []
    recipes = [recipe or spec.recipes[0], *_split(extra)]

    def show(test: StudyTest) -> None:
        state = f"[red]failed[/red]: {escape(test.error)}" if test.error else f"stored {escape(str(test.trace_path))}"
        console.print(f"{escape(test.model)} ({escape(test.recipe)}) on {escape(test.device)}: {state}",
                      highlight=False, soft_wrap=True)

    if not no_run:  # each test opens the store for its own write only, so others can use it in between
        run_protocol(spec, model_list, device_list, recipes, None, inventory=inventory, python=python, on_test=show)
    with Store(read_only=True, on_wait=waiting) as store:
        rows = measured_rows(store, spec, model_list, device_list) + references
        page = study_html(store, spec, rows, model_list, device_list) if fmt == "html" else ""
    if fmt == "table" and out is None and console.is_terminal:
        console.print(study_table(spec, rows))
        return
    text = page or (study_table_text(spec, rows) if fmt == "table" else render_study(spec, rows, fmt))
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)


def study_html(store: Store, spec: Protocol, rows: list[StudyRow], models: list[str], devices: list[str]) -> str:
    from edgekit.report.cells import build_cells
    from edgekit.report.pages import study_page
    from edgekit.report.study import protocol_runs
    from edgekit.report.timeline import report_timelines

    cells = build_cells(protocol_runs(store, spec, models, devices))
    timelines, note = report_timelines(store, cells, [])
    return study_page(spec, rows, cells, timelines, note)


def study_table_text(spec: Protocol, rows: list[StudyRow]) -> str:
    from edgekit.report.study import study_table

    buffer = Console(file=io.StringIO(), width=200, record=True)
    buffer.print(study_table(spec, rows))
    return buffer.export_text()


def register(app: typer.Typer) -> None:
    app.command("study")(study_cmd)
