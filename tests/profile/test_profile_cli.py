"""``edgekit profile`` through its Typer command against the emulated board named in an inventory file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from edgekit.cli import profile as profile_cli
from edgekit.emulator import _board_files
from tests.fixtures.board import BoardHandle


def _app() -> typer.Typer:
    app = typer.Typer()
    profile_cli.register(app)
    return app


def test_profile_command_prints_json_and_table(shared_board: BoardHandle, tiny_onnx: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(
        "devices:\n"
        f"  - name: {shared_board.alias}\n"
        "    transport: ssh\n"
        f"    address: {{host: {shared_board.alias}, ssh_config: {shared_board.ssh_config}}}\n"
        f"    workdir: {_board_files.WORKDIR}\n"
        "    tags: {class: board}\n")
    args = [str(tiny_onnx), "--device", shared_board.alias, "--inventory", str(inventory), "--python",
            sys.executable, "--prompt-len", "8", "--gen-len", "12", "--runs", "2", "--warmup", "0",
            "--threads", "1", "--cooldown-s", "0", "--sample-ms", "20"]
    runner = CliRunner()
    as_json = runner.invoke(_app(), ["profile", *args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["device"] == shared_board.alias and data["runner"] == "python"
    assert [r["ok"] for r in data["metrics"]["runs"]] == [True, True]
    assert data["metrics"]["summary"]["decode_tok_s"]["median"] > 0
    assert Path(data["trace_dir"], "trace.jsonl").is_file()

    table = runner.invoke(_app(), ["profile", *args], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    for label in ("TTFT", "prefill", "decode", "peak RSS / PSS", "memory breakdown", "energy / token",
                  "avg power", "temperature max", "cpu freq mean"):
        assert label in table.stdout, table.stdout
