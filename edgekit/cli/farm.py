"""``edgekit farm run|status|report|node``: matrix runs over many devices, locally or across hosts on Ray.

Argument handling and printing only: the work is ``edgekit.farm`` (scheduler, config) and, for ``--ray``
and ``node``, ``edgekit.farm.ray_backend`` / ``edgekit.farm.ray_node``, imported only when asked for so
edgekit works without the ``ray`` extra.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import typer
from rich.table import Table

from edgekit.cli.output import plain_console, styled
from edgekit.errors import EdgekitError, RayMissing

console = plain_console()
farm_app = typer.Typer(help="Run a matrix of models x recipes x devices x workloads (a farm).",
                       no_args_is_help=True)

_INVENTORY = typer.Option(None, "--inventory", help="devices.yaml to use instead of the default inventory")


def _require_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RayMissing("Ray is not installed; install the extra: pip install 'edgekit[ray]'")


@farm_app.command("run")
def run_cmd(
    farm_file: Path = typer.Argument(..., help="farm.yaml"),
    ray: str | None = typer.Option(None, "--ray", help="run on the Ray cluster at ADDRESS (host:port)"),
    inventory: Path | None = _INVENTORY,
    grace_s: float = typer.Option(60.0, "--grace-s", help="on Ctrl-C, how long running jobs may finish"),
) -> None:
    """Run every cell not yet in the store; Ctrl-C stops cleanly and the next run resumes."""
    from edgekit.farm.backend import Backend
    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import LocalBackend, run_farm

    farm = load_farm(farm_file)
    backend: Backend
    if ray is not None:
        if inventory is not None:
            raise EdgekitError("--inventory is for local runs; on Ray each node advertises its own devices")
        _require_ray()
        from edgekit.farm.ray_backend import RayBackend

        backend = RayBackend(ray)
    else:
        backend = LocalBackend(inventory)
    result = run_farm(farm, backend, console=console, grace_s=grace_s)
    for label, reason in result.failures[:20]:
        console.print(f"  failed {label}: {reason}", highlight=False, soft_wrap=True)
    if len(result.failures) > 20:
        console.print(f"  ... and {len(result.failures) - 20} more (edgekit farm status)", highlight=False)
    style = "green" if result.exit_code == 0 else "yellow" if result.interrupted else "red"
    console.print(styled(result.summary(), style), soft_wrap=True)
    if result.exit_code:
        # SystemExit, not typer.Exit: the CLI runs typer non-standalone, which would swallow the code.
        sys.exit(result.exit_code)


def _farm_name(target: str | None, name: str | None) -> str | None:
    if target is not None and name is not None:
        raise EdgekitError("give either a farm.yaml or --farm NAME, not both")
    if target is not None:
        from edgekit.farm.config import load_farm

        return load_farm(target).name
    return name


@farm_app.command("status")
def status_cmd(
    farm_file: str | None = typer.Argument(None, help="farm.yaml (default: every farm in the store)"),
    name: str | None = typer.Option(None, "--farm", help="the farm's name instead of its file"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """The stored state of each cell (ok or failed, attempts, reason)."""
    from edgekit.store import Store
    from edgekit.store.farm import farm_cells, farm_names

    farm = _farm_name(farm_file, name)
    with Store(read_only=True) as store:  # reads only: shared with other readers
        if farm is not None and farm_file is None and farm not in farm_names(store):
            from edgekit.errors import UnknownName

            raise UnknownName("farm", farm, farm_names(store))
        rows = farm_cells(store, farm)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table("farm", "model", "recipe", "device", "workload", "status", "attempts", "reason",
                  title=f"farm {farm}" if farm else "farms")
    for row in rows:
        style = "green" if row["status"] == "ok" else "red"
        table.add_row(row["farm"], row["model"], row["recipe"], row["device"], row["workload"],
                      styled(row["status"], style), str(row["attempts"]), row["reason"] or "")
    console.print(table)
    ok = sum(1 for r in rows if r["status"] == "ok")
    console.print(f"{ok} ok, {len(rows) - ok} failed of {len(rows)} stored cell(s)", highlight=False)


@farm_app.command("report")
def report_cmd(
    farm_file: Path = typer.Argument(..., help="farm.yaml"),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, csv, md or html"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write to this file instead of stdout"),
) -> None:
    """The farm's cells as ``edgekit report`` shows them (median, p90, CV, CI of each metric)."""
    from edgekit.cli.results import check_report_format, emit_report
    from edgekit.errors import NoMatchingRuns, StoreError
    from edgekit.farm.config import load_farm
    from edgekit.report.cells import build_cells
    from edgekit.store import Store
    from edgekit.store.farm import farm_cells
    from edgekit.store.queries import select_runs

    check_report_format(fmt, out)
    farm = load_farm(farm_file)
    with Store(read_only=True) as store:  # reads only: shared with other readers
        traces = {r["trace_id"] for r in farm_cells(store, farm.name) if r["status"] == "ok"}
        if not traces:
            raise StoreError(f"farm '{farm.name}' has no finished cell in the store; run it first")
        try:
            rows = [r for r in select_runs(store) if r["trace_id"] in traces]
        except NoMatchingRuns as exc:
            raise StoreError(f"farm '{farm.name}': {exc}") from exc
        emit_report(build_cells(rows), fmt, out, store)


@farm_app.command("node")
def node_cmd(
    head: bool = typer.Option(False, "--head", help="start the cluster's head node"),
    address: str | None = typer.Option(None, "--address", help="join the cluster at ADDRESS (host:port)"),
    inventory: Path | None = _INVENTORY,
    port: int | None = typer.Option(None, "--port", help="the head's port (with --head)"),
    temp_dir: Path | None = typer.Option(None, "--temp-dir", help="Ray's session directory for this node"),
) -> None:
    """Run a Ray node advertising this host's devices (one custom resource each) until Ctrl-C."""
    if head == (address is not None):
        raise EdgekitError("give exactly one of --head or --address ADDRESS")
    _require_ray()
    from edgekit.farm import ray_node

    info = ray_node.start_node(head=head, address=address, inventory=inventory, port=port, temp_dir=temp_dir)
    role = "head" if info.head else "worker"
    console.print(f"ray {role} node up at {info.address} (pid {info.pid}), devices: "
                  f"{', '.join(info.devices) or 'none'}; Ctrl-C stops it", highlight=False, soft_wrap=True)
    try:
        while psutil.pid_exists(info.pid) and psutil.Process(info.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping the node", highlight=False)
    except psutil.Error:
        pass
    finally:
        info.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(farm_app, name="farm")
