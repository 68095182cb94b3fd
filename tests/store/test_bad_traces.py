"""Hostile traces: each class of bad input a device can send is one ``TraceError`` with one line naming the
problem, nothing of it is stored, and the traces stored before are untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgekit.errors import TraceError
from edgekit.store import Store, ingest_trace
from tests.store.cli import assert_one_line_error, edgekit
from tests.store.conftest import table_counts
from tests.store.tracegen import ArtifactSpec, ProfileSpec, generate, make_profile, write_artifact

Records = list[dict[str, Any]]
SPEC = ProfileSpec(runs=2, warmup=0, gen_len=6, prompt_len=8, sample_ms=50)


def _first(records: Records, name: str, run: int = 0) -> dict[str, Any]:
    return next(r for r in records if r["type"] == "event" and r["name"] == name and r["run"] == run
                and not r["warmup"])  # fmt: skip


def _sample(records: Records) -> dict[str, Any]:
    return next(r for r in records if r["type"] == "sample")


def _set(record: Callable[[Records], dict[str, Any]], key: str, value: Any) -> Callable[[Records], None]:
    def edit(records: Records) -> None:
        record(records)[key] = value

    return edit


def _drop(name: str) -> Callable[[Records], None]:
    def edit(records: Records) -> None:
        records.remove(_first(records, name))

    return edit


def _shift(name: str, to: str, delta_ns: int = 0) -> Callable[[Records], None]:
    """Put event ``name`` of repetition 0 at the time of event ``to`` plus ``delta_ns``."""

    def edit(records: Records) -> None:
        _first(records, name)["ts_ns"] = _first(records, to)["ts_ns"] + delta_ns

    return edit


def _all_steps_at_prefill_end(records: Records) -> None:
    end = _first(records, "prefill_end")["ts_ns"]
    for r in records:
        if r["type"] == "event" and r["name"] == "decode_step" and r["run"] == 0:
            r["ts_ns"] = end


def _no_measured_runs(records: Records) -> None:
    records[:] = [r for r in records if not (r["type"] == "event" and r["run"] >= 0)]


# (case id, edit of the records or raw text transform, what the one line must say)
EDITS: list[tuple[str, Callable[[Records], None], str]] = [
    ("nan-in-int-field", _set(_sample, "rss_kb", float("nan")), "NaN is not a finite number"),
    ("infinity-in-power", _set(_sample, "power_uw", float("inf")), "Infinity is not a finite number"),
    ("minus-infinity-ts", _set(lambda r: _first(r, "run_end"), "ts_ns", float("-inf")),
     "-Infinity is not a finite number"),
    ("int-beyond-64-bits", _set(lambda r: _first(r, "prefill_end"), "ts_ns", 1 << 70), "does not fit 64 bits"),
    ("string-in-int-field", _set(_sample, "rss_kb", "12 kB"), "rss_kb must be a number or null, got str"),
    ("thermal-as-list", _set(_sample, "thermal_mc", [45000]), "thermal_mc must map zone names to numbers"),
    ("freq-as-number", _set(_sample, "cpu_freq_khz", 1800000), "cpu_freq_khz must be a list of numbers"),
    ("runner-as-string", _set(lambda r: r[0], "runner", "native"), "header: runner must be an object, got str"),
    ("device-cores-as-float", _set(lambda r: r[0]["device"], "cores", 8.5), "cores must be an integer or null"),
    ("token-index-as-string", _set(lambda r: _first(r, "decode_step"), "token_index", "1"),
     "token_index must be an integer"),
    ("footer-counts-as-string", _set(lambda r: r[-1], "runs_completed", "2"), "runs_completed must be an integer"),
    ("zero-gen-len", _set(lambda r: r[0]["workload"], "gen_len", 0), "workload gen_len=0 out of range"),
    ("missing-prefill-start", _drop("prefill_start"), "prefill_end without prefill_start"),
    ("no-measured-repetition", _no_measured_runs, "no measured repetition"),
    ("prefill-ends-before-it-starts", _shift("prefill_end", "prefill_start", -5_000_000),
     "prefill_end is 5.000 ms before prefill_start (timestamps go backwards)"),
    ("decode-steps-out-of-order", _shift("decode_step", "run_end", 0),
     "before decode_step 1 (timestamps go backwards)"),
    ("load-ends-before-it-starts", _set(lambda r: _first(r, "load_end", -1), "ts_ns", 0),
     "load_end is 6000.000 ms before load_start"),
    ("zero-ttft", _shift("prefill_end", "prefill_start"), "prefill took 0 ns"),
    ("zero-decode-time", _all_steps_at_prefill_end, "5 decode steps took 0 ns"),
]


def _deep(text: str, depth: int) -> str:
    lines = text.splitlines()
    lines[1] = lines[1][:-1] + ',"extra":' + "[" * depth + "]" * depth + "}"
    return "\n".join(lines) + "\n"


# Raw text: what ``json.dumps`` of records cannot produce.
RAW: list[tuple[str, Callable[[str], bytes], str]] = [
    ("nested-100000-deep", lambda t: _deep(t, 100_000).encode(), "nests deeper than 8 levels"),
    ("nested-20-deep", lambda t: _deep(t, 20).encode(), "nests deeper than 8 levels"),
    ("truncated-mid-line", lambda t: t.encode()[: len(t) // 2], "is not valid JSON"),
    ("no-footer", lambda t: "".join(t.splitlines(keepends=True)[:-1]).encode(), "no footer: the trace is truncated"),
    ("bad-utf-8", lambda t: t.encode().replace(b"pixel-8", b"pixel-\xff"), "not UTF-8 text"),
    ("1e999-is-infinite", lambda t: t.replace('"battery_pct":80.0', '"battery_pct":1e999').encode(),
     "number 1e999 is not finite"),
    ("int-of-5000-digits", lambda t: t.replace('"energy_uj":null', '"energy_uj":' + "9" * 5000, 1).encode(),
     "integer 999999999999999999999999... does not fit 64 bits"),
    ("not-an-object", lambda t: t.replace(t.splitlines()[1], "[1,2]", 1).encode(), "line 2 is not a trace record"),
]


@pytest.fixture
def stored(store: Store, tmp_path: Path) -> tuple[Store, Path, dict[str, Any]]:
    """A store holding one earlier trace, the manifest of the artifact the bad traces name, and a snapshot."""
    earlier, _, _ = make_profile(tmp_path, "earlier", SPEC, ArtifactSpec(), manifest_beside=True)
    ingest_trace(earlier, store=store)
    manifest, _ = write_artifact(tmp_path / "art", ArtifactSpec())
    return store, manifest, _snapshot(store)


def _snapshot(store: Store) -> dict[str, Any]:
    return {**table_counts(store), "rows": store.con.execute("SELECT run_id, ttft_ms FROM runs ORDER BY 1").fetchall(),
            "files": sorted(p.name for p in store.samples_dir.iterdir())}  # fmt: skip


def _good_records(manifest: Path) -> Records:
    from edgekit.manifest import read_manifest

    records, _ = generate(replace(SPEC, seed=1), ArtifactSpec(), read_manifest(manifest).address())  # not the earlier
    return records


def _text(records: Records) -> str:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)


def _refused(stored: tuple[Store, Path, dict[str, Any]], path: Path, message: str) -> None:
    store, manifest, before = stored
    with pytest.raises(TraceError) as caught:
        ingest_trace(path, manifest, store=store)
    line = str(caught.value)
    assert message in line and "\n" not in line, line
    assert _snapshot(store) == before  # nothing of the bad trace, everything of the earlier one
    assert not any(p.name.endswith(".tmp") for p in store.samples_dir.iterdir())


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in EDITS], ids=[c[0] for c in EDITS])
def test_a_bad_trace_is_one_trace_error_and_the_store_is_intact(stored, tmp_path, edit, message):
    records = _good_records(stored[1])
    edit(records)
    path = tmp_path / "bad" / "trace.jsonl"
    path.parent.mkdir()
    path.write_text(_text(records))
    _refused(stored, path, message)


@pytest.mark.parametrize(("transform", "message"), [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_bad_trace_text_is_one_trace_error_and_the_store_is_intact(stored, tmp_path, transform, message):
    path = tmp_path / "bad" / "trace.jsonl"
    path.parent.mkdir()
    path.write_bytes(transform(_text(_good_records(stored[1]))))
    _refused(stored, path, message)


def test_the_edited_good_trace_is_stored(stored, tmp_path):
    """The cases above differ from a trace that is stored by their one edit only."""
    store, manifest, before = stored
    path = tmp_path / "fine" / "trace.jsonl"
    path.parent.mkdir()
    path.write_text(_text(_good_records(manifest)))
    assert ingest_trace(path, manifest, store=store).stored
    assert table_counts(store)["traces"] == before["traces"] + 1


def test_cli_bad_trace_is_one_line_exit_2(edgekit_home, tmp_path):
    manifest, _ = write_artifact(tmp_path / "art", ArtifactSpec())
    records = _good_records(manifest)
    _sample(records)["rss_kb"] = float("nan")
    path = tmp_path / "nan" / "trace.jsonl"
    path.parent.mkdir()
    path.write_text(_text(records))
    assert_one_line_error(edgekit("ingest", str(path), "--manifest", str(manifest)), "NaN is not a finite number")
