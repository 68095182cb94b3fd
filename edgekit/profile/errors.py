"""Errors of a profiling run (kept apart so the run and the native-runner modules can share them)."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError


class ProfileError(EdgekitError):
    """A profiling run that could not produce a trace."""


class ProfileTimeout(ProfileError):
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


class NativeRunnerMissing(ProfileError):
    """The native runner (Android sh agent + C++ runner) is not built for the device."""
