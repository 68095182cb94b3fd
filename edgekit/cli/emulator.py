"""``edgekit emulator start|stop|list|status``: run emulated phones and boards on this host.

Only argument handling and printing live here; the process management is ``edgekit.emulator.manager``.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from edgekit.cli.output import plain_console
from edgekit.emulator import manager
from edgekit.errors import EmulatorError

console = plain_console()
emulator_app = typer.Typer(help="Run emulated phones and boards on this host.", no_args_is_help=True)


def _energy_j(status: manager.EmulatorStatus) -> str:
    energy = status.energy or {}
    for key in ("energy_j", "total_energy_j", "energy_uj", "total_uj"):
        if isinstance(energy.get(key), int | float):
            value = float(energy[key]) / (1e6 if key.endswith("uj") else 1.0)
            return f"{value:.3f} J"
    return "-" if not energy else "see --json"


def _table(statuses: list[manager.EmulatorStatus]) -> Table:
    table = Table("name", "kind", "running", "pid", "address", "energy")
    for st in statuses:
        table.add_row(st.name, st.kind, "yes" if st.running else "no", str(st.pid or "-"), st.address,
                      _energy_j(st))
    return table


def _print(statuses: list[manager.EmulatorStatus], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        console.print(_table(statuses))


@emulator_app.command("start")
def start_cmd(
    phones: int | None = typer.Option(None, "--phones", help="Number of emulated phones to have running."),
    boards: int | None = typer.Option(None, "--boards", help="Number of emulated boards to have running."),
    kind: str | None = typer.Option(None, "--kind", help="phone or board (with --name)."),
    name: str | None = typer.Option(None, "--name", help="Name of the one device to start."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Start emulated devices; with no options, one phone and one board."""
    if (kind or name) and (phones is not None or boards is not None):
        raise EmulatorError("use either --phones/--boards or --kind/--name, not both")
    if kind or name:
        if not kind:
            raise EmulatorError("--name needs --kind phone|board")
        started = [manager.start(kind, name)]
    else:
        counts = {"phone": 1, "board": 1} if phones is None and boards is None else {
            "phone": phones or 0, "board": boards or 0}
        started = [st for k, n in counts.items() for st in manager.ensure(k, n)]
    _print(started, as_json)


@emulator_app.command("stop")
def stop_cmd(
    name: str | None = typer.Argument(None, help="Emulated device to stop."),
    all_: bool = typer.Option(False, "--all", help="Stop every emulated device."),
) -> None:
    """Stop one emulated device (or all); identity and files are kept for the next start."""
    if all_ == (name is not None):
        raise EmulatorError("give exactly one of NAME or --all")
    stopped = manager.stop_all() if all_ else [manager.stop(name or "")]
    for st in stopped:
        console.print(f"stopped {st.name}")


@emulator_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List emulated devices, running or not."""
    _print(manager.list(), as_json)


@emulator_app.command("status")
def status_cmd(
    name: str | None = typer.Argument(None, help="Emulated device (all when omitted)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Status of emulated devices, with the ground-truth energy the emulator recorded."""
    statuses = [manager.status(name)] if name else manager.list()
    if as_json or name:
        typer.echo(json.dumps([s.to_dict() for s in statuses] if not name else statuses[0].to_dict(),
                              indent=2))
    else:
        console.print(_table(statuses))


def register(app: typer.Typer) -> None:
    app.add_typer(emulator_app, name="emulator")
