"""The store under real faults: the host's disk fills up during an ingest, and other edgekit processes
hold the database (DuckDB admits one writer process, or several readers, at a time)."""

from __future__ import annotations

import errno
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.errors import IngestError, StoreBusy
from edgekit.store import Store, ingest_trace
from tests.store.cli import _SHIM, assert_one_line_error, edgekit
from tests.store.conftest import table_counts
from tests.store.tracegen import ArtifactSpec, ProfileSpec, make_profile

SPEC = ProfileSpec(runs=2, warmup=0, gen_len=6, prompt_len=8, sample_ms=50)

# Holds the store read-write (after storing the trace in argv[1]) until its stdin closes: another edgekit
# process in the middle of its writes.
_HOLDER = (
    "import sys; from edgekit.store import Store, ingest_trace\n"
    "with Store() as store:\n"
    "    ingest_trace(sys.argv[1], store=store)\n"
    "    print('holding', flush=True)\n"
    "    sys.stdin.read()\n"
)


def _await_line(proc: subprocess.Popen, stream: str, needle: str, timeout_s: float = 120.0) -> str:
    """Read ``proc``'s ``stream`` until a line containing ``needle`` (fails on EOF or after ``timeout_s``)."""
    fd = getattr(proc, stream).fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while needle.encode() not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no '{needle}' from the process within {timeout_s} s: {seen.decode(errors='replace')}"
            if selector.select(left):
                chunk = os.read(fd, 65536)
                assert chunk, f"the process ended before saying '{needle}': {seen.decode(errors='replace')}"
                seen += chunk
    return seen.decode(errors="replace")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A second edgekit process holding the store read-write, having stored a trace of its own."""
    trace, _, _ = make_profile(tmp_path, "held", ProfileSpec(runs=2, warmup=0, gen_len=6, seed=7), ArtifactSpec())
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(trace)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=dict(os.environ))  # fmt: skip
    try:
        _await_line(proc, "stdout", "holding")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _release(holder: subprocess.Popen) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0


def _finish_after_waiting(proc: subprocess.Popen, holder: subprocess.Popen) -> tuple[bytes, bytes]:
    """Once ``proc`` says it waits for the store, let ``holder`` go; ``proc``'s output when it is done."""
    try:
        _await_line(proc, "stderr", "in use by another edgekit process; waiting up to")
        _release(holder)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SHIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ))  # fmt: skip


def test_two_edgekit_processes_writing_at_once_both_runs_are_stored(edgekit_home, tmp_path, holder):
    mine, _, _ = make_profile(tmp_path, "mine", SPEC, ArtifactSpec())
    second = _cli("ingest", str(mine))
    out, err = _finish_after_waiting(second, holder)
    assert second.returncode == 0, err
    assert b"stored as trace" in out
    with Store(read_only=True) as store:
        assert table_counts(store)["traces"] == 2
        assert store.con.execute("SELECT count(DISTINCT device_id), count(*) FROM runs").fetchone() == (1, 4)


def test_a_read_only_command_waits_for_the_writer_and_deletes_nothing(edgekit_home, tmp_path, holder):
    samples = edgekit_home / "samples"
    stray = samples / ("f" * 64 + ".parquet")  # what a writer has renamed into place but not yet committed
    stray.write_bytes(b"not yet committed")
    report = _cli("report", "--format", "json")
    out, err = _finish_after_waiting(report, holder)
    assert report.returncode == 0, err
    assert {cell["device_id"] for cell in json.loads(out)["cells"]} == {"pixel-8"}
    assert stray.read_bytes() == b"not yet committed"
    readers = [_cli("report", "--format", "csv") for _ in range(2)]  # readers share the store
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0 and b"pixel-8" in out, err
    assert stray.is_file()


def test_a_store_that_stays_busy_is_one_line_naming_the_wait(edgekit_home, tmp_path, holder, monkeypatch):
    mine, _, _ = make_profile(tmp_path, "mine", SPEC, ArtifactSpec())
    monkeypatch.setenv("EDGEKIT_STORE_WAIT_S", "0.5")
    proc = edgekit("ingest", str(mine))
    assert proc.returncode == 2, proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "still after waiting 0.5 s (EDGEKIT_STORE_WAIT_S)" in error[0], proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(StoreBusy, match="still after waiting 0.2 s"):
        Store(wait_s=0.2)
    _release(holder)
    with Store(read_only=True) as store:
        assert table_counts(store)["traces"] == 1  # the holder's; the refused ingest stored nothing
    monkeypatch.setenv("EDGEKIT_STORE_WAIT_S", "soon")
    assert_one_line_error(edgekit("report"), "EDGEKIT_STORE_WAIT_S must be a number of seconds from 0 to 86400")


def test_study_holds_the_store_only_while_it_writes(edgekit_home, tmp_path, monkeypatch):
    """Between its tests (the protocol's 10 s gap) a study leaves the store to others."""
    monkeypatch.setenv("EDGEKIT_STORE_WAIT_S", "0")
    model = str(tmp_path / "no-such-[/x]-[host]-model")  # printed as text, not as markup
    study = _cli("study", "--models", model, "--devices", "a,b", "--no-reference", "--format", "json")
    try:
        _await_line(study, "stdout", f"{model} (gguf-q4_k_m) on a: failed")
        with Store() as store:  # a writer gets it at once
            assert table_counts(store)["traces"] == 0
    finally:
        study.kill()
        study.communicate()


# --- the host's disk fills up ---------------------------------------------------------------------------


@pytest.fixture
def small_samples_disk(edgekit_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The store's samples folder on its own 1 MiB tmpfs (root), else writes there fail with ENOSPC by
    injection; yields (the folder, "tmpfs" or "injected")."""
    samples = edgekit_home / "samples"
    samples.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(samples)],
                             capture_output=True, check=False).returncode == 0  # fmt: skip
    try:
        yield samples, "tmpfs" if mounted else "injected"
    finally:
        if mounted and subprocess.run(["umount", str(samples)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(samples)], check=True)  # a file still open: detach it anyway


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_host_disk_full_during_ingest_keeps_nothing_half_written(small_samples_disk, tmp_path, monkeypatch):
    samples, how = small_samples_disk
    earlier, _, _ = make_profile(tmp_path, "earlier", SPEC, ArtifactSpec())
    later, _, _ = make_profile(tmp_path, "later", ProfileSpec(runs=3, warmup=0, gen_len=6, seed=3), ArtifactSpec())
    with Store() as store:
        ingest_trace(earlier, store=store)
        before = store.con.execute("SELECT * EXCLUDE (ingested_at) FROM traces").fetchall()
        files = sorted(p.name for p in samples.iterdir())
        if how == "tmpfs":
            filler = _fill(samples)
        else:
            import edgekit.store.samples as samples_module

            def full(*args: object, **kwargs: object) -> None:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(samples_module.pq, "write_table", full)
        with pytest.raises(IngestError, match=r"cannot write its samples under .*No space left on device.*; "
                                              "nothing was kept"):  # fmt: skip
            ingest_trace(later, store=store)
        assert store.con.execute("SELECT * EXCLUDE (ingested_at) FROM traces").fetchall() == before
        assert table_counts(store) == {"devices": 1, "artifacts": 1, "traces": 1, "runs": 2}
        assert sorted(p.name for p in samples.iterdir() if p.name != "filler") == files  # no .tmp left
    if how == "tmpfs":  # the command line says it in one line too; then space is freed and it goes in
        assert_one_line_error(edgekit("ingest", str(later)), "No space left on device")
        filler.unlink()
    else:
        monkeypatch.undo()
    with Store() as store:
        assert ingest_trace(later, store=store).stored
        assert table_counts(store)["runs"] == 5
        assert store.con.execute(f"SELECT count(DISTINCT trace_id) FROM {store.samples_view()}").fetchone()[0] == 2
