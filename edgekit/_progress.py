"""Progress as an injected callback: library code reports steps and bytes, the caller decides how to show
them. Nothing here prints; the CLI supplies rich displays (``edgekit/cli/progress.py``), the farm and the
tests supply nothing and see nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

# Called with (bytes_done, bytes_total) of a whole transfer; (0, total) when a copy (re)starts.
BytesFn = Callable[[int, int], None]


class Steps(Protocol):
    """Reports the named steps of a long job (export: resolving, loading, lowering, the gate)."""

    def step(self, description: str) -> contextlib.AbstractContextManager[None]: ...


class NoSteps:
    """Steps that show nothing (the default)."""

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        yield


NO_STEPS = NoSteps()
