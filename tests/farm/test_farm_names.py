"""Names that come from another host or from a file are checked as plain names before they become
paths or code: a trace name a Ray node sends back, and the runtime an artifact's manifest names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit.errors import RayNodeError, WorkloadError
from edgekit.farm.ray_backend import _write_trace


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../victim", "/abs/victim", "x\0y"])
def test_a_trace_name_from_a_node_that_is_not_a_plain_name_is_refused_and_nothing_is_touched(
        tmp_path: Path, name: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("stored before")
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "earlier").mkdir()
    if name.startswith("/abs"):
        name = str(victim)
    with pytest.raises(RayNodeError, match="plain name"):
        _write_trace(traces, name, {"trace.jsonl": b"{}\n"})
    assert (victim / "keep.txt").read_text() == "stored before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces", "victim"]
    assert [p.name for p in traces.iterdir()] == ["earlier"]


@pytest.mark.parametrize("rel", ["../escape.txt", "/abs.txt", "a//b.txt", "sub/../../x.txt"])
def test_a_trace_file_path_from_a_node_that_leaves_the_trace_dir_is_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(RayNodeError):
        _write_trace(tmp_path / "traces", "run-1", {"trace.jsonl": b"{}\n", rel: b"x"})
    assert not (tmp_path / "traces" / "run-1").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_a_plain_trace_name_is_written_whole(tmp_path: Path) -> None:
    target = _write_trace(tmp_path / "traces", "run-1", {"trace.jsonl": b"{}\n", "attempt-1/PARTIAL.json": b"{}"})
    assert target == tmp_path / "traces" / "run-1"
    assert (target / "attempt-1" / "PARTIAL.json").read_bytes() == b"{}"
    assert [p.name for p in (tmp_path / "traces").iterdir()] == ["run-1"]


def test_a_runtime_name_that_is_not_a_known_runtime_never_becomes_code_on_the_device(tmp_path: Path) -> None:
    from edgekit.devices.local import LocalDevice
    from edgekit.profile.python_agent import check_runtime

    marker = tmp_path / "ran"
    hostile = f"os\nopen({str(marker)!r}, 'w').write('x')\nimport os"
    device = LocalDevice(name="local", workdir=str(tmp_path / "work"))
    with pytest.raises(WorkloadError, match="drives onnxruntime-genai, onnxruntime, executorch artifacts, not"):
        check_runtime(device, sys.executable, hostile)
    assert not marker.exists()


def test_a_trace_folder_over_the_run_limit_is_refused_by_its_node_unread(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # What a node ships to the driver is held in memory on both: a folder over what one run may pull (plus
    # the host's own files) is refused from its sizes, before a byte of it is read.
    from edgekit.errors import LimitExceeded
    from edgekit.farm.ray_backend import _read_tree

    trace = tmp_path / "run-1"
    trace.mkdir()
    (trace / "host.json").write_text("{}")
    assert _read_tree(trace, "pi") == {"host.json": b"{}"}
    with open(trace / "trace.jsonl", "wb") as f:  # sparse: no disk, no memory
        f.truncate(40 << 20)
    monkeypatch.setenv("EDGEKIT_LIMIT_PULL_RUN_BYTES", "1000000")
    with pytest.raises(LimitExceeded, match=r"trace folder run-1 \(41943042 bytes\).*pull_run_bytes = 1000000"):
        _read_tree(trace, "pi")
