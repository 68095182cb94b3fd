"""Content-addressed, verified, atomic push of an artifact directory to a device.

An artifact directory (any directory of regular files; exported ones hold ``manifest.json``) lands at
``<workdir>/artifacts/<sha256>/`` (runners' code bundles at ``<workdir>/runners/<sha256>/``) where the
sha256 is the directory's content address (``edgekit.manifest.content_address``: the digest of its
``sha256sum``-style listing). Names and contents both count; timestamps and permissions do not.

Skip rule (decided here, relied on elsewhere): an artifact is "present" only when ``sha256sum`` run ON the
device over every file at the final path gives the local digests. There is no marker file: a marker
would let a file corrupted after the push pass as present, and hashing a 100 MB artifact on a device takes
a fraction of a second next to copying it.

Atomicity: files go into ``<workdir>/artifacts/.tmp-<sha>-<random>/``, each is hashed on the device, and
only then is the directory renamed to the final path, so a partial or corrupt file never sits there. A
corrupt copy already at the final path is moved aside before the verified one takes its place. A device
that drops mid-copy (``DeviceUnreachable``) is retried with exponential backoff from a fresh temporary
directory. Free space is checked before copying, and a write that fails for lack of space says so.

A push holds the device's lock (``edgekit.devices.lock``; re-entrant, so a profile that holds it pushes
without waiting on itself): two pushes of one artifact to one device never run at once, so the clean-up of
temporary directories left by an interrupted push never removes the one another push is filling.

This module must not know about any one transport: it only uses the ``Device`` contract and POSIX
commands every device has (``mkdir``, ``mv``, ``rm``, ``ls``, ``df``, ``sha256sum``, ``test``).
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit._progress import BytesFn
from edgekit.devices.base import Device, ProgressFn
from edgekit.devices.lock import device_lock
from edgekit.errors import (
    ArtifactError,
    DeviceUnreachable,
    EdgekitError,
    InsufficientSpace,
    PushError,
    PushGaveUp,
    TransportError,
)
from edgekit.manifest import content_address

_HASH_CHUNK_BYTES = 1 << 20
# Per-file slack for block rounding when comparing against the device's free space.
_BLOCK_SLACK_BYTES = 4096
_NO_SPACE_MARKERS = ("no space left", "enospc", "disk full", "not enough space", "quota exceeded")


@dataclass(frozen=True)
class ArtifactFile:
    relpath: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ArtifactDigest:
    root: Path
    sha256: str
    files: tuple[ArtifactFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


@dataclass(frozen=True)
class PushResult:
    device: str
    sha256: str
    remote_path: str
    skipped: bool
    total_bytes: int
    sent_bytes: int
    seconds: float
    attempts: int

    @property
    def mb_per_s(self) -> float:
        """Throughput of the bytes actually sent (0 when skipped), in MB/s (10^6 bytes)."""
        return self.sent_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def digest_artifact(artifact_dir: str | Path) -> ArtifactDigest:
    """Hash every file of ``artifact_dir`` and the directory as a whole (see the module docstring)."""
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist or is not a directory")
    files: list[ArtifactFile] = []
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ArtifactError(f"artifact {root}: {rel} is a symlink; only regular files are pushed")
        if path.is_dir():
            continue
        if not path.is_file():
            raise ArtifactError(f"artifact {root}: {rel} is not a regular file")
        if "\n" in rel or "\\" in rel:
            raise ArtifactError(f"artifact {root}: file name {rel!r} contains a newline or backslash")
        files.append(ArtifactFile(rel, _file_sha256(path), path.stat().st_size))
    if not files:
        raise ArtifactError(f"artifact directory {root} holds no files")
    return ArtifactDigest(root, content_address((f.relpath, f.sha256) for f in files), tuple(files))


def _remote_digests(device: Device, base: str, files: tuple[ArtifactFile, ...]) -> list[str | None]:
    """sha256 of each file under ``base`` computed ON the device; ``None`` for a file it could not read."""
    paths = [posixpath.join(base, f.relpath) for f in files]
    result = device.run(["sha256sum", *paths], timeout_s=600.0)
    by_path: dict[str, str] = {}
    for line in result.text().splitlines():
        # sha256sum prefixes a line with "\" when it had to escape the name; names here never need it.
        digest, _, name = line.lstrip("\\").partition("  ")
        if len(digest) == 64:
            by_path[name] = digest.lower()
    return [by_path.get(p) for p in paths]


def _verified(device: Device, base: str, files: tuple[ArtifactFile, ...]) -> list[str]:
    """Relative paths whose on-device sha256 differs from the local one (empty: all verified)."""
    remote = _remote_digests(device, base, files)
    return [f.relpath for f, got in zip(files, remote, strict=True) if got != f.sha256]


def _exists(device: Device, path: str) -> bool:
    return device.run(["test", "-e", path], timeout_s=30.0).ok


def free_bytes(device: Device, path: str) -> int | None:
    """Free bytes of the filesystem holding ``path`` as the device's ``df -Pk`` reports it."""
    result = device.run(["df", "-Pk", path], timeout_s=30.0)
    lines = result.text().strip().splitlines()
    if not result.ok or len(lines) < 2:
        return None
    fields = " ".join(lines[1:]).split()  # a long device name can wrap onto its own line
    try:
        return int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None


def _is_no_space(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _NO_SPACE_MARKERS)


def _remove_stale_tmp(device: Device, artifacts_dir: str, sha: str) -> None:
    listing = device.run(["ls", "-a", artifacts_dir], timeout_s=30.0)
    stale = [
        posixpath.join(artifacts_dir, n)
        for n in listing.text().split()
        if n.startswith(f".tmp-{sha}-") or n.startswith(f".old-{sha}-")
    ]
    if stale:
        device.run(["rm", "-rf", *stale], timeout_s=120.0)


class _Bar:
    """Aggregates per-file copy progress into (bytes done, bytes total) of the whole artifact."""

    def __init__(self, report: BytesFn | None, total_bytes: int) -> None:
        self._report = report
        self._total = total_bytes
        self._base = 0

    def restart(self) -> None:
        """(Re)start at zero when a copy begins; an artifact that is skipped never reports."""
        self._base = 0
        if self._report:
            self._report(0, self._total)

    def file_callback(self) -> ProgressFn:
        base, report, total = self._base, self._report, self._total

        def update(done: int, _file_total: int) -> None:
            if report:
                report(base + done, total)

        return update

    def file_done(self, size_bytes: int) -> None:
        self._base += size_bytes
        if self._report:
            self._report(self._base, self._total)


def _copy_verified(
    device: Device, digest: ArtifactDigest, tmp: str, bar: _Bar, artifacts_dir: str
) -> None:
    """Copy every file into ``tmp`` and check each one's sha256 on the device."""
    subdirs = sorted({posixpath.dirname(posixpath.join(tmp, f.relpath)) for f in digest.files})
    device.run(["mkdir", "-p", *subdirs], timeout_s=60.0, check=True)
    bar.restart()
    for f in digest.files:
        remote = posixpath.join(tmp, f.relpath)
        try:
            device.push(str(digest.root / f.relpath), remote, progress=bar.file_callback())
        except DeviceUnreachable:
            raise
        except TransportError as exc:
            if _is_no_space(exc):
                raise InsufficientSpace(
                    device.name, artifacts_dir, digest.total_bytes, free_bytes(device, artifacts_dir),
                    failed_write=f.relpath,
                ) from exc
            raise
        bar.file_done(f.size_bytes)
    bad = _verified(device, tmp, digest.files)
    if bad:
        # A short file is what a full disk leaves behind when the transport does not report the error.
        short = _short_files(device, tmp, digest, bad)
        if short:
            raise InsufficientSpace(
                device.name, artifacts_dir, digest.total_bytes, free_bytes(device, artifacts_dir),
                failed_write=short[0],
            )
        raise PushError(device.name, f"sha256 mismatch on the device after copy: {', '.join(bad[:5])}")


def _short_files(device: Device, tmp: str, digest: ArtifactDigest, bad: list[str]) -> list[str]:
    """Of the files that failed verification, those shorter on the device than here."""
    sizes = {f.relpath: f.size_bytes for f in digest.files}
    short = []
    result = device.run(["wc", "-c", *(posixpath.join(tmp, rel) for rel in bad)], timeout_s=60.0)
    for line in result.text().splitlines():
        count, _, name = line.strip().partition(" ")
        rel = posixpath.relpath(name.strip(), tmp) if name.strip().startswith(tmp + "/") else None
        if rel in sizes and count.isdigit() and int(count) < sizes[rel]:
            short.append(rel)
    return short


def _install(device: Device, tmp: str, final: str, artifacts_dir: str, sha: str) -> None:
    """Rename the verified ``tmp`` to ``final``, moving aside whatever (unverified) sits there."""
    old = None
    if _exists(device, final):
        old = posixpath.join(artifacts_dir, f".old-{sha}-{secrets.token_hex(4)}")
        device.run(["mv", final, old], timeout_s=60.0, check=True)
    device.run(["mv", tmp, final], timeout_s=60.0, check=True)
    if old:
        device.run(["rm", "-rf", old], timeout_s=120.0)


def push_artifact(
    device: Device,
    artifact_dir: str | Path,
    workdir: str,
    *,
    reopen: Callable[[], Device] | None = None,
    retries: int = 4,
    backoff_s: float = 0.5,
    progress: BytesFn | None = None,
    area: str = "artifacts",
    lock_wait_s: float = 0.0,
) -> PushResult:
    """Push ``artifact_dir`` to ``<workdir>/<area>/<sha256>/`` on ``device`` (see the module docstring);
    ``area`` is ``artifacts`` for exported models, ``runners`` for the runners' code bundles.

    ``reopen`` returns a freshly connected device after a drop; without it the same object is retried.
    ``progress`` is called with (bytes done, bytes total) of the artifact while files are copied.
    ``lock_wait_s``: how long to wait for the device's lock when another process holds it (``DeviceBusy``).
    """
    start_s = time.monotonic()
    digest = digest_artifact(artifact_dir)
    with device_lock(device.name, wait_s=lock_wait_s):
        return _push_locked(device, digest, workdir, reopen, retries, backoff_s, progress, area, start_s)


def _push_locked(device: Device, digest: ArtifactDigest, workdir: str, reopen: Callable[[], Device] | None,
                 retries: int, backoff_s: float, progress: BytesFn | None, area: str, start_s: float) -> PushResult:
    """``push_artifact``'s attempts, with the device's lock held."""
    name = device.name
    last_exc: DeviceUnreachable | None = None
    bar = _Bar(progress, digest.total_bytes)
    current, reopened = device, None  # ``reopened`` is closed here; the caller owns ``device``
    try:
        for attempt in range(1, retries + 2):
            try:
                if attempt > 1 and reopen is not None:
                    if reopened is not None:
                        _close_quietly(reopened)
                        reopened = None
                    current = reopened = reopen()
                skipped = _attempt(current, digest, posixpath.join(workdir, area), bar)
                return PushResult(name, digest.sha256, posixpath.join(workdir, area, digest.sha256), skipped,
                                  digest.total_bytes, 0 if skipped else digest.total_bytes,
                                  time.monotonic() - start_s, attempt)
            except DeviceUnreachable as exc:
                last_exc = exc
                if attempt <= retries:
                    time.sleep(backoff_s * 2 ** (attempt - 1))
    finally:
        if reopened is not None:
            _close_quietly(reopened)
    raise PushGaveUp(name, f"device kept dropping after {retries + 1} attempts: {last_exc}") from last_exc


def _attempt(device: Device, digest: ArtifactDigest, artifacts_dir: str, bar: _Bar) -> bool:
    """One try: True when the artifact was already present and verified, False when it was copied."""
    final = posixpath.join(artifacts_dir, digest.sha256)
    if not _verified(device, final, digest.files):
        return True
    device.run(["mkdir", "-p", artifacts_dir], timeout_s=60.0, check=True)
    _remove_stale_tmp(device, artifacts_dir, digest.sha256)
    needed = digest.total_bytes + _BLOCK_SLACK_BYTES * len(digest.files)
    free = free_bytes(device, artifacts_dir)
    if free is not None and free < needed:
        raise InsufficientSpace(device.name, artifacts_dir, needed, free)
    tmp = posixpath.join(artifacts_dir, f".tmp-{digest.sha256}-{secrets.token_hex(4)}")
    try:
        _copy_verified(device, digest, tmp, bar, artifacts_dir)
        _install(device, tmp, final, artifacts_dir, digest.sha256)
    except DeviceUnreachable:
        raise  # the next attempt removes the stale temporary directory once the device is back
    except EdgekitError:
        _cleanup(device, tmp)
        raise
    return False


def _close_quietly(device: Device) -> None:
    with contextlib.suppress(EdgekitError):
        device.close()


def _cleanup(device: Device, tmp: str) -> None:
    with contextlib.suppress(EdgekitError):
        device.run(["rm", "-rf", tmp], timeout_s=120.0)
