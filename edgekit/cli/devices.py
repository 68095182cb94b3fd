"""``edgekit devices [--json]``: every known device with live facts, as a table or JSON.

Lists the inventory (file entries, running emulated devices, the local device) plus any device the adb
server sees that the inventory does not name. Facts come from ``Device.info()``, gathered in parallel
with a bound per device; a device that cannot be reached is shown as unreachable with the reason, which
is not an error of the command.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgekit import inventory
from edgekit.cli.output import joined, plain_console
from edgekit.devices import adb_server
from edgekit.devices.base import DeviceInfo
from edgekit.errors import EdgekitError, UnknownName

console = plain_console()


def _entries(inventory_file: Path | None) -> list[inventory.DeviceEntry]:
    entries = inventory.load(inventory_file)
    serials = {e.serial for e in entries if e.transport == "adb"}
    try:
        seen = adb_server.devices(timeout_s=10.0)
    except EdgekitError:
        seen = []  # no adb client or server: the inventory is still worth listing
    for listing in seen:
        if listing.serial not in serials:
            entry = inventory.DeviceEntry(name=listing.serial, transport="adb", serial=listing.serial)
            entry._origin = "adb-server"
            entries.append(entry)
    return entries


def _probe(entry: inventory.DeviceEntry, out: dict[str, Any], timeout_s: float) -> None:
    try:
        with inventory.connect(entry, timeout_s=timeout_s) as device:
            out["info"] = device.info()
    except EdgekitError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # a transport bug must not hide the other devices
        out["error"] = f"{type(exc).__name__}: {exc}"


def gather(entries: list[inventory.DeviceEntry], timeout_s: float) -> list[dict[str, Any]]:
    """One JSON-ready row per entry: the entry's facts plus ``Device.info()`` (or why it failed)."""
    results: list[dict[str, Any]] = [{} for _ in entries]
    threads = [threading.Thread(target=_probe, args=(e, r, timeout_s / 2), daemon=True)
               for e, r in zip(entries, results, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)  # the threads run in parallel, so the whole wait is about timeout_s
    rows = []
    for entry, result in zip(entries, results, strict=True):
        info: DeviceInfo = result.get("info") or DeviceInfo(entry.name, entry.transport, reachable=False)
        facts = asdict(info)
        facts.pop("name")
        facts.pop("transport")
        if "info" not in result and "error" not in result:
            result["error"] = f"no answer within {timeout_s:g}s"
        rows.append({
            "name": entry.name,
            "transport": entry.transport,
            "origin": entry.origin,
            "class": entry.tags.device_class,
            "serial": entry.serial,
            "address": entry.address.model_dump() if entry.address else None,
            "workdir": entry.resolved_workdir(),
            **facts,
            "error": result.get("error"),
        })
    return rows


def _fmt(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("name", "transport", "model", "SoC/CPU", "cores", "ABI", "RAM", "OS", "battery", "temp",
                  "free", "reachable")
    for row in rows:
        battery = _fmt(row["battery_pct"], "{:.0f}%")
        if row["charging"]:
            battery += " (charging)"
        reachable = "yes" if row["reachable"] else joined(("no", "red"), f" {row.get('error') or ''}")
        table.add_row(
            row["name"], row["transport"], _fmt(row["model"]), _fmt(row["soc"]), _fmt(row["cores"]),
            _fmt(row["abi"]), _fmt(row["ram_bytes"] and row["ram_bytes"] / 2**30, "{:.1f} GiB"),
            _fmt(row["os_version"]), battery, _fmt(row["temperature_c"], "{:.1f} °C"),
            _fmt(row["free_bytes"] and row["free_bytes"] / 2**30, "{:.1f} GiB"), reachable,
        )
    return table


def devices_cmd(
    names: list[str] | None = typer.Argument(None, help="Only these devices (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
    inventory_file: Path | None = typer.Option(None, "--inventory", help="Inventory file to use."),
    timeout_s: float = typer.Option(20.0, "--timeout-s", help="Bound on probing each device."),
) -> None:
    """List known devices with live facts (model, SoC, cores, RAM, battery, temperature, free space)."""
    entries = _entries(inventory_file)
    if names:
        by_name = {e.name: e for e in entries}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UnknownName("device", unknown[0], sorted(by_name))
        entries = [by_name[n] for n in names]
    rows = gather(entries, timeout_s)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        console.print(_table(rows))


def register(app: typer.Typer) -> None:
    app.command("devices")(devices_cmd)
