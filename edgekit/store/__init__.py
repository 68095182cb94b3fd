"""The results store: an embedded DuckDB database plus Parquet sample files under the edgekit home.

``Store`` opens (and migrates) it, ``ingest_trace`` adds one profiled trace, ``queries`` selects runs for
the reports. Nothing here computes a metric: the numbers come from ``edgekit.profile.metrics``.
Names are imported lazily, so ``edgekit.store.errors`` (needed by every CLI command) costs no DuckDB or
Arrow import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.store.db import Store, open_store
    from edgekit.store.errors import IngestError, NoMatchingRuns, StoreError, UnknownArtifact
    from edgekit.store.ingest import IngestResult, ingest_trace

_WHERE = {
    "Store": "db", "open_store": "db", "IngestError": "errors", "NoMatchingRuns": "errors",
    "StoreError": "errors", "UnknownArtifact": "errors", "IngestResult": "ingest", "ingest_trace": "ingest",
}  # fmt: skip

__all__ = [
    "IngestError",
    "IngestResult",
    "NoMatchingRuns",
    "Store",
    "StoreError",
    "UnknownArtifact",
    "ingest_trace",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgekit.store' has no attribute '{name}'")
    return getattr(importlib.import_module(f"edgekit.store.{_WHERE[name]}"), name)
