"""``edgekit push ARTIFACT_DIR --device NAME``: content-addressed, verified push of an artifact.

Argument handling and printing only; the push itself is ``edgekit.devices.push``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from edgekit import inventory
from edgekit.cli.progress import cli_bytes
from edgekit.devices.push import push_artifact


def push_cmd(
    artifact_dir: Path = typer.Argument(..., help="Artifact directory to push."),
    device: str = typer.Option(inventory.LOCAL_NAME, "--device", "-d", help="Device name (inventory)."),
    inventory_file: Path | None = typer.Option(None, "--inventory", help="Inventory file to use."),
    retries: int = typer.Option(4, "--retries", help="Retries when the device drops mid-copy."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Push ARTIFACT_DIR to <workdir>/artifacts/<sha256>/ on the device; skipped when already there."""
    entry = inventory.get(device, inventory_file)
    with inventory.connect(entry) as dev, cli_bytes(f"push {entry.name}") as bar:
        result = push_artifact(
            dev, artifact_dir, entry.resolved_workdir(), reopen=lambda: inventory.connect(entry),
            retries=retries, progress=None if as_json else bar,
        )
    if as_json:
        typer.echo(json.dumps({**asdict(result), "mb_per_s": result.mb_per_s}, indent=2))
    elif result.skipped:
        typer.echo(f"already present and verified on {result.device}: {result.remote_path} "
                   f"({result.seconds:.2f} s)")
    else:
        typer.echo(f"pushed {result.total_bytes / 1e6:.1f} MB to {result.device}:{result.remote_path} in "
                   f"{result.seconds:.2f} s ({result.mb_per_s:.1f} MB/s, attempts {result.attempts})")


def register(app: typer.Typer) -> None:
    app.command("push")(push_cmd)
