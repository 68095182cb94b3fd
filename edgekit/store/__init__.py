"""The results store: an embedded DuckDB database plus Parquet sample files under the edgekit home.

``Store`` opens (and migrates) it, ``ingest_trace`` adds one profiled trace, ``queries`` selects runs for
the reports. Nothing here computes a metric: the numbers come from ``edgekit.profile.metrics``. Its
errors live with every other one in ``edgekit.errors``. Names are imported lazily, so importing this
package costs no DuckDB or Arrow import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.store.db import Store, open_store
    from edgekit.store.ingest import IngestResult, ingest_trace

_WHERE = {"Store": "db", "open_store": "db", "IngestResult": "ingest", "ingest_trace": "ingest"}

__all__ = ["IngestResult", "Store", "ingest_trace", "open_store"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'edgekit.store' has no attribute '{name}'")
    return getattr(importlib.import_module(f"edgekit.store.{_WHERE[name]}"), name)
