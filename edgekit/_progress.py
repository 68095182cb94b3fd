"""Progress display for long steps: one rich line per step with a spinner and elapsed time.

Steps whose size is known (copies) use a bar with throughput; steps of unknown length (exporting,
lowering, parity) use a spinner. Everything goes to stderr so ``--json`` output on stdout stays clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


class StepProgress:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self._progress.add_task(description, total=1)
        try:
            yield
        except BaseException:
            # The error itself is reported once by the caller; a failed step leaves no line behind.
            self._progress.remove_task(task)
            raise
        self._progress.update(task, completed=1, description=f"[green]✓[/green] {description}")


@contextmanager
def steps(transient: bool = False) -> Iterator[StepProgress]:
    progress = Progress(
        SpinnerColumn(finished_text=" "),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
    with progress:
        yield StepProgress(progress)
