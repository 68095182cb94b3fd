"""Ingestion into a real DuckDB file: what is stored, idempotence, transactions, crashes, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edgekit.errors import IngestError, TraceError, UnknownArtifact
from edgekit.manifest import read_manifest
from edgekit.profile.metrics import compute_metrics
from edgekit.profile.trace import load_trace
from edgekit.store import Store, ingest_trace
from tests.store.cli import assert_one_line_error, edgekit
from tests.store.conftest import table_counts
from tests.store.tracegen import ArtifactSpec, ProfileSpec, generate, make_profile, write_artifact, write_trace


def _snapshot(store: Store) -> dict:
    out = {}
    for table in ("devices", "artifacts", "traces", "runs"):
        rows = store.con.execute(f"SELECT * EXCLUDE (ingested_at) FROM {table}" if table == "traces"
                                 else f"SELECT * FROM {table}").fetchall()  # fmt: skip
        out[table] = sorted(map(repr, rows))
    out["files"] = sorted(p.name for p in store.samples_dir.iterdir())
    return out


def test_a_trace_is_stored_with_raw_timestamps_and_the_metric_module_numbers(store, tmp_path):
    trace_path, manifest_path, truth = make_profile(tmp_path, "p", ProfileSpec(runs=4, fail_runs=(1,)), ArtifactSpec())
    before = trace_path.read_bytes()
    result = ingest_trace(trace_path, store=store)
    assert result.stored and result.runs_failed == 1 and len(result.run_ids) == 4
    assert trace_path.read_bytes() == before  # ingestion never moves or edits the trace
    assert table_counts(store) == {"devices": 1, "artifacts": 1, "traces": 1, "runs": 4}

    expected = compute_metrics(load_trace(trace_path), read_manifest(manifest_path))
    rows = store.con.execute(
        "SELECT run, ok, error, ttft_ms, decode_tok_s, energy_per_token_mj, prefill_start_ns, prefill_end_ns, "
        "decode_step_ns FROM runs ORDER BY run"
    ).fetchall()
    for row, metric in zip(rows, expected.runs, strict=True):
        assert row[0] == metric.run and row[1] == metric.ok
        assert row[3] == metric.ttft_ms and row[4] == metric.decode_tok_s and row[5] == metric.energy_per_token_mj
        if metric.ok:
            # The raw timestamps reproduce the metric: TTFT and decode tok/s from the stored stamps.
            assert (row[7] - row[6]) / 1e6 == pytest.approx(metric.ttft_ms)
            assert len(row[8]) == 50 - 1
            assert 49 / ((row[8][-1] - row[7]) / 1e9) == pytest.approx(metric.decode_tok_s)
        else:
            assert row[2].startswith("oom")
    assert [r[3] for r in rows if r[1]] == pytest.approx(truth.ttft_ms)

    n_samples = store.con.execute(f"SELECT count(*) FROM {store.samples_view()}").fetchone()[0]
    assert n_samples == len(load_trace(trace_path).samples) > 100
    sha = store.con.execute("SELECT sha256, model_id, params, recipe, quant_bits, kv_kind FROM artifacts").fetchone()
    assert sha == (result.artifact_sha256, "tiny-llama", 135_000_000, "onnx-int4", 4, "grows")


def test_the_same_trace_twice_changes_nothing(store, tmp_path):
    trace_path, _, _ = make_profile(tmp_path, "p", ProfileSpec(), ArtifactSpec())
    first = ingest_trace(trace_path, store=store)
    snapshot = _snapshot(store)
    db_bytes = (store.db_path).stat().st_size
    again = ingest_trace(trace_path, store=store)
    assert not again.stored and again.trace_id == first.trace_id and again.run_ids == first.run_ids
    assert _snapshot(store) == snapshot
    assert store.db_path.stat().st_size == db_bytes
    store.close()  # DuckDB allows one writing process: the CLI below is another one
    proc = edgekit("ingest", str(trace_path))
    assert proc.returncode == 0 and "already stored" in proc.stdout, proc.stderr


def test_a_known_artifact_needs_no_manifest_the_second_time(store, tmp_path):
    first, _, _ = make_profile(tmp_path, "a", ProfileSpec(seed=1), ArtifactSpec())
    ingest_trace(first, store=store)
    # Same artifact, another device, and no manifest anywhere near the trace.
    _, sha = write_artifact(tmp_path / "elsewhere", ArtifactSpec())
    records, _ = generate(ProfileSpec(device="rpi5", seed=2), ArtifactSpec(), sha)
    lonely = write_trace(tmp_path / "lonely" / "trace.jsonl", records)
    result = ingest_trace(lonely, store=store)
    assert result.stored and result.device_id == "rpi5"
    assert table_counts(store) == {"devices": 2, "artifacts": 1, "traces": 2, "runs": 10}


def test_invalid_later_part_rolls_back_everything_including_the_sample_file(store, tmp_path):
    """The last write of the transaction (rows stored with the trace, as a farm cell is) is refused by the
    schema after the sample file was written; nothing may remain. (A clock glitch no longer gets this far:
    the trace's validation refuses it, see test_bad_traces.)"""
    _, sha = write_artifact(tmp_path / "bad", ArtifactSpec())
    records, _ = generate(ProfileSpec(runs=3), ArtifactSpec(), sha)
    bad = write_trace(tmp_path / "bad" / "trace.jsonl", records)

    def refused(con, trace_id, run_ids):
        con.execute("INSERT INTO runs (run_id) VALUES (?)", [run_ids[0]])  # NOT NULL columns missing

    with pytest.raises(IngestError, match="the store refused it, nothing was kept"):
        ingest_trace(bad, store=store, also=refused)
    assert table_counts(store) == {"devices": 0, "artifacts": 0, "traces": 0, "runs": 0}
    assert list(store.samples_dir.iterdir()) == []
    good, _, _ = make_profile(tmp_path, "good", ProfileSpec(), ArtifactSpec())
    assert ingest_trace(good, store=store).stored  # the connection is usable after the rollback
    assert table_counts(store)["runs"] == 5


def test_a_killed_ingest_leaves_a_whole_trace_or_nothing(edgekit_home, tmp_path):
    trace_path, _, _ = make_profile(tmp_path, "big", ProfileSpec(runs=40, sample_ms=10), ArtifactSpec())
    script = "import sys; from edgekit.store import ingest_trace; ingest_trace(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", script, str(trace_path)], env=dict(os.environ))
    time.sleep(2.5)  # long enough to be mid-ingest on a loaded machine, sometimes past it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store() as store:
        counts = table_counts(store)
        assert counts["traces"] in (0, 1)
        assert counts["runs"] == 40 * counts["traces"]
        files = sorted(p.name for p in store.samples_dir.iterdir())
        expected = [r[0] for r in store.con.execute("SELECT samples_file FROM traces").fetchall()]
        assert files == sorted(expected)  # orphans and temporary files were removed on open
        assert ingest_trace(trace_path, store=store).trace_id  # and ingesting again completes the job
        assert table_counts(store)["runs"] == 40


def test_orphan_and_temporary_sample_files_are_removed_on_open(edgekit_home, tmp_path):
    trace_path, _, _ = make_profile(tmp_path, "p", ProfileSpec(), ArtifactSpec())
    with Store() as store:
        ingest_trace(trace_path, store=store)
        kept = {p.name for p in store.samples_dir.iterdir()}
        (store.samples_dir / ("f" * 64 + ".parquet")).write_bytes(b"orphan of a crashed ingest")
        (store.samples_dir / ("e" * 64 + ".parquet.tmp")).write_bytes(b"half written")
    with Store() as store:
        assert {p.name for p in store.samples_dir.iterdir()} == kept
        assert store.con.execute(f"SELECT count(DISTINCT trace_id) FROM {store.samples_view()}").fetchone()[0] == 1


def _bad_traces(tmp_path):
    manifest_path, sha = write_artifact(tmp_path / "art", ArtifactSpec())
    records, _ = generate(ProfileSpec(), ArtifactSpec(), sha)
    newer = [dict(records[0], schema_version=2), *records[1:]]
    return manifest_path, {
        "newer": (write_trace(tmp_path / "newer" / "trace.jsonl", newer), "schema version 2 is newer"),
        "truncated": (write_trace(tmp_path / "truncated" / "trace.jsonl", records[: len(records) // 2]),
                      "no footer: the trace is truncated"),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["newer", "truncated"])
def test_bad_traces_are_refused_with_a_clear_message_and_nothing_stored(store, tmp_path, case):
    manifest_path, cases = _bad_traces(tmp_path)
    path, message = cases[case]
    with pytest.raises(TraceError, match=message):
        ingest_trace(path, manifest_path, store=store)
    assert table_counts(store) == {"devices": 0, "artifacts": 0, "traces": 0, "runs": 0}
    assert path.is_file()


def test_unknown_artifact_and_wrong_manifest_are_refused(store, tmp_path):
    _, sha = write_artifact(tmp_path / "art", ArtifactSpec())
    records, _ = generate(ProfileSpec(), ArtifactSpec(), sha)
    lonely = write_trace(tmp_path / "lonely" / "trace.jsonl", records)
    with pytest.raises(UnknownArtifact, match=f"its artifact {sha[:12]} .* is not in the store; pass --manifest"):
        ingest_trace(lonely, store=store)
    other_manifest, _ = write_artifact(tmp_path / "other", ArtifactSpec(recipe="onnx-fp32", scheme="none"))
    with pytest.raises(IngestError, match=f"the trace ran artifact {sha[:12]} but manifest"):
        ingest_trace(lonely, other_manifest, store=store)
    assert table_counts(store) == {"devices": 0, "artifacts": 0, "traces": 0, "runs": 0}


def test_cli_ingest_bad_inputs_are_one_line_exit_2(edgekit_home, tmp_path):
    manifest_path, cases = _bad_traces(tmp_path)
    assert_one_line_error(edgekit("ingest", str(cases["newer"][0]), "--manifest", str(manifest_path)),
                          "schema version 2 is newer than this edgekit reads")  # fmt: skip
    assert_one_line_error(edgekit("ingest", str(cases["truncated"][0])), "no footer: the trace is truncated")
    _, sha = write_artifact(tmp_path / "art2", ArtifactSpec(model_id="other"))
    records, _ = generate(ProfileSpec(), ArtifactSpec(model_id="other"), sha)
    lonely = write_trace(tmp_path / "lonely" / "trace.jsonl", records)
    assert_one_line_error(edgekit("ingest", str(lonely)), "is not in the store; pass --manifest FILE")
    assert_one_line_error(edgekit("ingest", str(tmp_path / "missing.jsonl")), "file does not exist")
    with Store() as store:
        assert table_counts(store) == {"devices": 0, "artifacts": 0, "traces": 0, "runs": 0}
    ok = edgekit("ingest", str(lonely), "--manifest", str(tmp_path / "art2"))
    assert ok.returncode == 0 and "stored as trace" in ok.stdout, ok.stderr


def test_cli_ingest_prints_paths_as_text_not_markup(edgekit_home, tmp_path):
    trace_path, _, _ = make_profile(tmp_path, "run-[/x]-[host]", ProfileSpec(runs=1), ArtifactSpec())
    proc = edgekit("ingest", str(trace_path))
    assert proc.returncode == 0, proc.stderr
    assert f"{trace_path}: stored as trace" in proc.stdout
