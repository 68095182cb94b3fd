"""Errors of the results store and the reports built on it (all ``EdgekitError``: one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError


class StoreError(EdgekitError):
    """The results database cannot be opened, migrated or written."""


class IngestError(StoreError):
    """A trace that cannot be stored; nothing of it was kept."""

    def __init__(self, trace_path: Path, problem: str) -> None:
        self.trace_path = trace_path
        self.problem = problem
        super().__init__(f"trace '{trace_path}' not ingested: {problem}")


class UnknownArtifact(IngestError):
    """The trace ran an artifact the store has never seen and no manifest was supplied."""

    def __init__(self, trace_path: Path, sha256: str, model_id: str | None, recipe: str | None) -> None:
        self.sha256 = sha256
        super().__init__(
            trace_path,
            f"its artifact {sha256[:12]} (model {model_id or '?'}, recipe {recipe or '?'}) is not in the store; "
            "pass --manifest FILE or put the artifact's manifest.json next to the trace",
        )


class NoMatchingRuns(StoreError):
    """A filter or a name that selects nothing in the store."""

    def __init__(self, what: str, known: dict[str, list[str]] | None = None) -> None:
        self.what = what
        self.known = known or {}
        listing = "; ".join(f"{kind}: {', '.join(names) or 'none'}" for kind, names in self.known.items())
        super().__init__(f"no runs match {what}" + (f" (the store has {listing})" if listing else ""))
