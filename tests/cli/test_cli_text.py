"""What devices, files and other hosts say is printed as text: a ``[/x]`` in it must not raise rich's
``MarkupError`` (a traceback instead of the output) and a ``[host]`` must not vanish."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import devices as devices_cli

HOSTILE = "device said [/x] about [host] and [bold]"


def _edgekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "COLUMNS": "250"}, stdin=subprocess.DEVNULL)


def test_farm_status_prints_a_stored_reason_with_brackets_as_it_is() -> None:
    from edgekit.store import Store
    from edgekit.store.farm import CellRecord, record_failed

    with Store() as store:
        record_failed(store, CellRecord("t", "k" * 24, "tiny-llama", "onnx-fp32", "phone-1", "short"), HOSTILE, 3,
                      None)
    shown = _edgekit("farm", "status", "--farm", "t")
    assert shown.returncode == 0, shown.stderr
    assert HOSTILE in shown.stdout
    assert "MarkupError" not in shown.stderr


def test_device_facts_and_errors_with_brackets_print_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    row = {"name": "phone-1", "transport": "adb", "model": "[host] [/x]", "soc": "[bold]", "cores": 4, "abi": None,
           "ram_bytes": None, "os_version": "[/]", "battery_pct": None, "charging": False, "temperature_c": None,
           "free_bytes": None, "reachable": False, "error": HOSTILE}
    console = devices_cli.console
    monkeypatch.setattr(console, "size", (400, 40))
    with console.capture() as captured:
        console.print(devices_cli._table([row]))
    text = captured.get()
    for part in ("[host] [/x]", "[bold]", "[/]", HOSTILE):
        assert part in text


def test_an_error_with_brackets_is_one_line_as_it_is_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "[/x]" / "[host]"
    done = _edgekit("push", str(missing))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0], done.stderr
