"""The farm's exporter: every (model, recipe) a farm needs, exported once, in the order the cells need them,
in one background thread, through the content-hash artifact cache. An export that fails (the parity
gate, say) is kept as that pair's error so the scheduler fails its cells with the reason and goes on.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit import paths
from edgekit.errors import EdgekitError, ParityError
from edgekit.farm.config import Farm


@dataclass
class Artifact:
    path: Path | None = None
    sha: str | None = None
    error: str | None = None  # the export failed: every cell of it fails with this reason


class Exporter:
    """Exports (model, recipe) pairs in a daemon thread, in the order given, and keeps the outcomes."""

    def __init__(self, farm: Farm, pairs: list[tuple[str, str]], run_stop: threading.Event | None = None) -> None:
        self.farm = farm
        self.pairs = pairs
        self.root = paths.home() / "farm" / farm.name / "artifacts"
        self._done: dict[tuple[str, str], Artifact] = {}
        self._current: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="farm-export", daemon=True)
        self.stop = threading.Event()
        self._run_stop = run_stop  # the farm's own stop: a farm stopped before the thread looks exports nothing

    def start(self) -> None:
        self.thread.start()

    def get(self, pair: tuple[str, str]) -> Artifact | None:
        with self._lock:
            return self._done.get(pair)

    def close(self, say: Callable[[str], None]) -> None:
        """Start no further export and wait for the one under way, which cannot be stopped halfway. A thread
        left exporting would write into the cache after the farm returned, and would trace beside the next
        export in this process (torch's tracing state is global: the two graphs mix)."""
        self.stop.set()
        if self.thread.ident is None:
            return
        with self._lock:
            current = self._current
        if self.thread.is_alive() and current is not None:
            say(f"waiting for the export of {current[0]} with {current[1]} to finish")
        self.thread.join()

    def _loop(self) -> None:
        for pair in self.pairs:
            if self.stop.is_set() or (self._run_stop is not None and self._run_stop.is_set()):
                return
            with self._lock:
                self._current = pair
            result = self._export(*pair)
            with self._lock:
                self._done[pair] = result
                self._current = None

    def _export(self, model: str, recipe_name: str) -> Artifact:
        from edgekit.devices.push import digest_artifact
        from edgekit.export.pipeline import export

        out = self.root / f"{re.sub(r'[^A-Za-z0-9._-]', '_', model)}--{recipe_name}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if out.exists():  # a previous run's copy: export again (a cache hit, so only a copy)
                shutil.rmtree(out)
            result = export(model, self.farm.recipes[recipe_name], out)
            return Artifact(result.out_dir, digest_artifact(result.out_dir).sha256)
        except ParityError as exc:
            return Artifact(error=f"export failed the parity gate: {'; '.join(exc.failures)}")
        except EdgekitError as exc:
            return Artifact(error=f"export failed: {exc}")
        except Exception as exc:  # a converter's own exception: the cells fail, the farm goes on
            return Artifact(error=f"export failed: {type(exc).__name__}: {exc}")
