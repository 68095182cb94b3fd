"""Profile and store: the one path from an artifact and a device to a stored run.

``profile_and_store`` is what ``edgekit profile``, ``edgekit run``, the demo and the study call;
``store_result`` is the second half, which the farm's driver calls for the results its jobs bring back.
The trace is validated and its metrics computed once, by the profiler; the store takes them as they are.
This module owns no step of its own: profiling is ``edgekit.profile.run``, storing ``edgekit.store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import StoreBusy
from edgekit.profile.run import ProfileRequest, ProfileResult, profile
from edgekit.store.db import Store
from edgekit.store.ingest import AlsoWrite, IngestResult, ingest_parsed


@dataclass
class StoredProfile:
    result: ProfileResult
    stored: IngestResult

    @property
    def trace_id(self) -> str:
        return self.stored.trace_id


def store_result(result: ProfileResult, *, store: Store | None = None, also: AlsoWrite | None = None) -> IngestResult:
    """Store a finished profile (idempotent: a trace already stored changes nothing)."""
    return ingest_parsed(result.trace, result.manifest, result.metrics, store=store, also=also)


def profile_and_store(
    request: ProfileRequest,
    device_name: str | None = None,
    *,
    inventory: str | Path | None = None,
    python: str | None = None,
    store: Store | None = None,
) -> StoredProfile:
    """Profile ``request`` on the inventory device ``device_name`` and store the run. The store is opened
    for the store step only (waiting for another process that has it); if it stays busy the error says
    where the trace is kept and how to store it later."""
    result = profile(request, device_name, inventory=inventory, python=python)
    try:
        return StoredProfile(result, store_result(result, store=store))
    except StoreBusy as exc:
        later = f"edgekit ingest {result.trace.path} --manifest {request.artifact_dir}"
        detail = f"{exc.detail}; the run's trace is kept: `{later}` stores it"
        raise StoreBusy(exc.db_path, detail, exc.waited_s) from exc
