"""The one exception tree of edgekit.

Every failure a user can cause or meet (bad input, a missing file, a device that went away, an artifact
that fails its parity gate) is an ``EdgekitError`` defined here. The CLI turns it into one line and exit
code 2. Library exceptions (onnx, torch, adbutils, ...) are translated at the boundary with
``raise ... from`` so callers never see them raw.

Facts live in fields and are shown by ``__str__``; decisions read the fields, never the message: the
farm retries an error whose class says ``retryable = True`` (the device dropped, was busy, timed out, the
store was held by another process) and records the others as permanent. Rewording a message must never
change what edgekit does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class EdgekitError(Exception):
    """Root of every error edgekit raises on purpose."""

    exit_code = 2
    # Whether trying the same thing again may succeed (the farm retries these; see farm/job.py).
    retryable = False


# --- configuration and names ------------------------------------------------------------------------


class ConfigError(EdgekitError):
    """A recipe, inventory, workload or farm file that does not validate."""


class UnknownName(EdgekitError):
    """A name picked from a registry (recipe, model alias, device) that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        listing = ", ".join(sorted(known)) if known else "none"
        super().__init__(f"unknown {kind} '{name}'; known: {listing}")


class WorkloadError(ConfigError):
    """A workload that no agent can run, or that does not fit the artifact (prompt + generation > context)."""


# --- models, export, artifacts ----------------------------------------------------------------------


class ModelSourceError(EdgekitError):
    """A model source that cannot be loaded: missing, not a model, corrupt, unsupported."""


class UnsupportedArchitecture(ModelSourceError):
    def __init__(self, arch: str, known: list[str]) -> None:
        self.arch = arch
        self.known = known
        super().__init__(f"unsupported architecture '{arch}'; supported: {', '.join(sorted(known))}")


class ExportError(EdgekitError):
    """The export itself failed (conversion, lowering, quantization)."""


class LlamaCppUnavailable(EdgekitError):
    """llama.cpp (its tools, libraries and converter) could not be found or built (``edgekit.llamacpp``)."""


class ParityError(EdgekitError):
    """The artifact was written but failed its parity/quality gate; its manifest says so."""

    def __init__(self, artifact_dir: str, failures: list[str]) -> None:
        self.artifact_dir = artifact_dir
        self.failures = failures
        super().__init__(f"artifact {artifact_dir} failed the parity gate: " + "; ".join(failures))


class ArtifactError(EdgekitError):
    """An artifact directory that is missing, incomplete or has a bad manifest."""


# --- devices ----------------------------------------------------------------------------------------


class TransportError(EdgekitError):
    """A device could not be reached or a transfer/command failed at the transport level."""

    retryable = True

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        self.message = message
        super().__init__(f"device '{device}': {message}")


class DeviceUnreachable(TransportError):
    """The device is offline, refused the connection or dropped it (transient: retry may help)."""


class CommandTimeout(TransportError):
    def __init__(self, device: str, argv: Sequence[str], timeout_s: float) -> None:
        self.argv = list(argv)
        self.timeout_s = timeout_s
        super().__init__(device, f"command {self.argv[:3]} timed out after {timeout_s:g}s")


class CommandFailed(TransportError):
    """A command ran on the device and exited non-zero (``Device.run(..., check=True)``)."""

    retryable = False

    def __init__(self, device: str, argv: Sequence[str], exit_code: int, stderr_tail: str) -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        super().__init__(device, f"command {self.argv[:3]} exited with {exit_code}: {stderr_tail.strip()}")


class RemoteFileMissing(TransportError):
    """A pull of a file that does not exist on the device (never answered with an empty file)."""

    retryable = False

    def __init__(self, device: str, path: str) -> None:
        self.path = path
        super().__init__(device, f"pull: no such file on the device: {path}")


class HostKeyRejected(TransportError):
    """The device's host key is unknown or differs from the one on record; nothing was sent to it."""

    retryable = False


class DeviceBusy(EdgekitError):
    """The device is locked by another job (this process or another); a transient condition."""

    retryable = True

    def __init__(self, device: str, holder: str, waited_s: float) -> None:
        self.device = device
        self.holder = holder
        self.waited_s = waited_s
        super().__init__(f"device '{device}' is busy (locked by {holder}); waited {waited_s:g}s")


class PushError(EdgekitError):
    """The push could not be completed (transfer kept failing, verification failed, rename failed)."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"push to device '{device}': {message}")


class PushGaveUp(PushError):
    """The device kept dropping during a push, through every retry of the push itself."""

    retryable = True


class InsufficientSpace(PushError):
    """The device has less free space than the artifact needs, or a write on it ran out of space."""

    def __init__(
        self, device: str, path: str, needed_bytes: int, free_bytes: int | None, failed_write: str = ""
    ) -> None:
        self.path = path
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        self.failed_write = failed_write
        free = "unknown" if free_bytes is None else fmt_bytes(free_bytes)
        if failed_write:
            message = (f"ran out of space in {path} writing {failed_write} (the artifact needs "
                       f"{fmt_bytes(needed_bytes)}; df reports {free} free, so inodes or a quota may be "
                       f"exhausted)")
        else:
            message = f"not enough free space in {path}: needs {fmt_bytes(needed_bytes)}, free {free}"
        super().__init__(device, message)


def fmt_bytes(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


# --- profiling --------------------------------------------------------------------------------------


class ProfileError(EdgekitError):
    """A profiling run that could not produce a trace."""


class DeviceLost(ProfileError):
    """The device dropped while the agent ran, every attempt; partial files are kept."""

    retryable = True

    def __init__(self, device: str, attempts: int, trace_dir: Path, cause: str) -> None:
        self.device = device
        self.attempts = attempts
        self.trace_dir = trace_dir
        super().__init__(
            f"device '{device}' dropped during the run {attempts} time(s); partial files kept in {trace_dir}: "
            f"{cause}"
        )


class ProfileTimeout(ProfileError):
    retryable = True

    def __init__(self, device: str, timeout_s: float, trace_dir: Path, leftovers: list[str]) -> None:
        self.device = device
        self.timeout_s = timeout_s
        self.trace_dir = trace_dir
        self.leftovers = leftovers
        left = "nothing of the run is left running there" if not leftovers else f"still running after kill: {leftovers}"
        super().__init__(
            f"device '{device}': the agent did not finish within {timeout_s:g}s and was "
            f"killed; {left}; partial files kept in {trace_dir}"
        )


class RunnerFailed(ProfileError):
    """The runner on the device could not run the artifact (its trace holds an error before any run)."""

    def __init__(self, device: str, reason: str, message: str, trace_dir: Path) -> None:
        self.device = device
        self.reason = reason
        self.detail = message
        self.trace_dir = trace_dir
        super().__init__(
            f"device '{device}': the agent could not run the artifact ({reason}): {message}; trace kept in {trace_dir}"
        )


class OutOfMemory(RunnerFailed):
    """The device ran out of memory loading or running the artifact: trying again fails the same way."""


class NoTrace(ProfileError):
    """The agent exited without writing a trace."""

    def __init__(self, device: str, exit_code: int, tail: str) -> None:
        self.device = device
        self.exit_code = exit_code
        self.tail = tail
        super().__init__(f"device '{device}': the agent exited with {exit_code} and wrote no trace: {tail}")


class NativeRunnerMissing(ProfileError):
    """The native runner (Android sh agent + C++ runner) is not built for the device or cannot run an artifact."""


class AgentError(EdgekitError):
    """The agent cannot be found, pushed or started on the device."""


class RuntimeMissing(EdgekitError):
    """The device's Python cannot import the runtime the artifact needs; nothing was run."""

    def __init__(self, device: str, python: str, runtime: str, module: str, package: str, detail: str) -> None:
        self.device = device
        self.python = python
        self.runtime = runtime
        self.detail = detail
        super().__init__(
            f"device '{device}': the artifact needs {runtime}, but '{python}' there cannot "
            f"`import {module}` ({detail}); install it on the device (pip install {package}) or pick "
            f"another Python for the device"
        )


class TraceError(EdgekitError):
    def __init__(self, path: Path, problem: str, kept_at: Path | None = None) -> None:
        self.path = path
        self.problem = problem
        self.kept_at = kept_at
        where = f" (kept at {kept_at})" if kept_at else ""
        super().__init__(f"trace '{path}' rejected: {problem}{where}")


# --- results store and reports ----------------------------------------------------------------------


class StoreError(EdgekitError):
    """The results database cannot be opened, migrated or written."""


class StoreBusy(StoreError):
    """Another edgekit process holds the results database; waiting and trying again works."""

    retryable = True

    def __init__(self, db_path: Path, detail: str, waited_s: float = 0.0) -> None:
        self.db_path = db_path
        self.detail = detail
        self.waited_s = waited_s
        waited = f"still after waiting {waited_s:g} s (EDGEKIT_STORE_WAIT_S)" if waited_s else "now"
        super().__init__(
            f"the results database '{db_path}' is in use by another edgekit process {waited}; "
            f"try again when it has finished ({detail})"
        )


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


class StudyError(EdgekitError):
    """A study that cannot run (a recipe that is not the protocol's)."""


# --- emulated devices and the farm ------------------------------------------------------------------


class EmulatorError(EdgekitError):
    """An emulated device that cannot be started, stopped or found, or options that do not go together."""


class SandboxError(EmulatorError):
    """bubblewrap is missing, cannot create namespaces here, or the sandbox died."""


class RayMissing(EdgekitError):
    """``--ray`` or ``farm node`` without the optional Ray extra installed."""


class RayNodeError(EdgekitError):
    """A Ray node that could not be started, joined or stopped."""


# --- limits on what a device sends (edgekit.limits) -------------------------------------------------


class LimitExceeded(TransportError):
    """A device sent (or announced) more than a limit of ``edgekit.limits`` allows; nothing of it was kept.

    Not retryable: a device that sends a 4 GB trace does so again."""

    retryable = False

    def __init__(self, device: str, what: str, limit: str) -> None:
        self.what = what
        self.limit = limit  # "name = value (how to change it)", from Limits.describe
        super().__init__(device, f"{what}: over the limit {limit}")
