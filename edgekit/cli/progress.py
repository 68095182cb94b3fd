"""The CLI's progress displays (rich, on stderr so ``--json`` output on stdout stays clean): one line per
export step with a spinner and elapsed time, and a bar with throughput for a push. Library code only
calls the callbacks these provide (``edgekit._progress``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from edgekit._progress import BytesFn

console = Console(stderr=True)


class RichSteps:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        label = escape(description)
        task = self._progress.add_task(label, total=1)
        try:
            yield
        except BaseException:
            # The error itself is reported once by the caller; a failed step leaves no line behind.
            self._progress.remove_task(task)
            raise
        self._progress.update(task, completed=1, description=f"[green]✓[/green] {label}")


@contextlib.contextmanager
def cli_steps() -> Iterator[RichSteps]:
    """Export steps as spinner lines while the block runs."""
    progress = Progress(SpinnerColumn(finished_text=" "), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=console)  # fmt: skip
    with progress:
        yield RichSteps(progress)


@contextlib.contextmanager
def cli_bytes(label: str) -> Iterator[BytesFn]:
    """A transfer bar shown from the first report of a copy (a push that copies nothing shows none)."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=console)  # fmt: skip
    task: list[TaskID] = []

    def update(done: int, total: int) -> None:
        if not task:
            progress.start()
            task.append(progress.add_task(escape(label), total=total))
        progress.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            progress.stop()
