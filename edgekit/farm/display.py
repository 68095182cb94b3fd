"""What a running farm shows: a live rich table (one row per device) on a terminal, plain lines otherwise.

The table shows each device's state, its current cell and attempt, and done/total; events (a cell
finished, failed, retried; a device quarantined) are printed as lines above it, so a log or a pipe sees
the same story as a person at a terminal. This module only renders what the scheduler tells it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {"running": "cyan", "backoff": "yellow", "quarantined": "red", "done": "green",
                "waiting": "dim", "idle": "dim", "stopped": "yellow"}  # fmt: skip


@dataclass
class DeviceRow:
    name: str
    total: int
    done: int = 0
    ok: int = 0
    failed: int = 0
    state: str = "idle"  # idle | waiting | running | backoff | quarantined | done | stopped
    cell: str = ""
    attempt: int = 0


class FarmView:
    """Context manager: ``event`` prints a line, ``refresh`` redraws the table (terminal only)."""

    def __init__(self, title: str, rows: list[DeviceRow], console: Console | None = None,
                 live: bool | None = None) -> None:
        self.console = console or Console()
        self.rows = rows
        self.title = title
        self.live_enabled = self.console.is_terminal if live is None else live
        self._live: Live | None = None

    def _table(self) -> Table:
        table = Table(title=self.title, expand=False)
        for column in ("device", "state", "current cell", "attempt", "done/total", "ok", "failed"):
            table.add_column(column)
        for row in self.rows:
            # Text, not markup: the live table is re-rendered inside ``event``'s markup-free prints.
            cells = (row.name, row.state, row.cell if row.state in ("running", "backoff", "waiting") else "",
                     str(row.attempt) if row.state == "running" else "", f"{row.done}/{row.total}",
                     str(row.ok), str(row.failed))  # fmt: skip
            styles = ("", _STATE_STYLE.get(row.state, ""), "", "", "", "", "red" if row.failed else "")
            table.add_row(*(Text(text, style=style) for text, style in zip(cells, styles, strict=True)))
        return table

    def __enter__(self) -> FarmView:
        if self.live_enabled:
            self._live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def progress(self, line: str) -> None:
        """A line only plain output needs (on a terminal the table shows it)."""
        if self._live is None:
            self.event(line)

    def event(self, line: str) -> None:
        self.console.print(line, highlight=False, soft_wrap=True, markup=False)
        self.refresh()
