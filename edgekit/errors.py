"""The one exception tree of edgekit.

Every failure a user can cause or meet (bad input, a missing file, a device that went away, an artifact
that fails its parity gate) is an ``EdgekitError``. The CLI turns it into one line and exit code 2.
Library exceptions (onnx, torch, adbutils, ...) are translated at the boundary with ``raise ... from``
so callers never see them raw. Facts live in fields and are shown by ``__str__``.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Root of every error edgekit raises on purpose."""

    exit_code = 2


class ConfigError(EdgekitError):
    """A recipe, inventory or farm file that does not validate."""


class ModelSourceError(EdgekitError):
    """A model source that cannot be loaded: missing, not a model, corrupt, unsupported."""


class UnsupportedArchitecture(ModelSourceError):
    def __init__(self, arch: str, known: list[str]) -> None:
        self.arch = arch
        self.known = known
        super().__init__(f"unsupported architecture '{arch}'; supported: {', '.join(sorted(known))}")


class UnknownName(EdgekitError):
    """A name picked from a registry (recipe, model alias, device) that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        listing = ", ".join(sorted(known)) if known else "none"
        super().__init__(f"unknown {kind} '{name}'; known: {listing}")


class ExportError(EdgekitError):
    """The export itself failed (conversion, lowering, quantization)."""


class ParityError(EdgekitError):
    """The artifact was written but failed its parity/quality gate; its manifest says so."""

    def __init__(self, artifact_dir: str, failures: list[str]) -> None:
        self.artifact_dir = artifact_dir
        self.failures = failures
        super().__init__(f"artifact {artifact_dir} failed the parity gate: " + "; ".join(failures))


class ArtifactError(EdgekitError):
    """An artifact directory that is missing, incomplete or has a bad manifest."""
