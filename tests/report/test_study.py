"""The slm-survey study table from stored runs with P=G=50, plus reference rows from a CSV."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from edgekit.export.recipes import nominal_bits
from edgekit.report.study import PROTOCOLS, REFERENCE_COLUMNS, read_reference_csv
from edgekit.report.study_run import StudyError, run_protocol
from edgekit.store import Store
from tests.report.conftest import PROFILES
from tests.store.cli import assert_one_line_error, edgekit

EXAMPLE_CSV = Path(__file__).resolve().parents[1] / "store" / "slm_survey_reference_example.csv"


def test_study_table_from_stored_runs_matches_the_generator(filled):
    proc = edgekit("study", "--protocol", "slm-survey", "--no-run", "--models", "tiny-llama,tiny-qwen",
                   "--devices", "pixel-8", "--devices", "rpi5", "--reference-csv", str(EXAMPLE_CSV),
                   "--format", "json", home=filled.home)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["protocol"]["prompt_len"] == 50 and doc["protocol"]["gen_len"] == 50
    measured = {(r["model"], r["device"], r["source"]): r for r in doc["rows"] if r["source"].startswith("measured")}
    # 4-bit only: the fp32 and 8-bit profiles are not part of the survey's protocol.
    four_bit = [n for n, (_, a) in PROFILES.items() if nominal_bits(a.scheme) == 4]
    assert set(four_bit) == {"pixel-int4", "pixel-qwen", "pixel-pte", "pixel-gguf", "rpi-int4"}
    assert set(measured) == {(PROFILES[n][1].model_id, PROFILES[n][0].device, f"measured ({PROFILES[n][1].recipe})")
                             for n in four_bit}  # fmt: skip
    for name in four_bit:
        spec, artifact = PROFILES[name]
        row = measured[(artifact.model_id, spec.device, f"measured ({artifact.recipe})")]
        truth = filled.truths[name]
        assert row["params"] == artifact.params and row["runs"] == spec.runs
        assert row["prefill_ms"] == pytest.approx(statistics.median(truth.ttft_ms))
        assert row["decode_ms_per_token"] == pytest.approx(statistics.median([1000 / t for t in truth.decode_tok_s]))
        assert row["weights_mb"] == pytest.approx(artifact.weights_bytes / 2**20, abs=1e-3)
        assert row["kv_cache_mb"] == pytest.approx(artifact.kv_bytes_per_token * 100 // 1024 / 1024)
        assert row["other_mb"] == pytest.approx(spec.base_rss_kb / 1024)
        assert row["compute_mb"] == pytest.approx(spec.compute_kb / 1024)
    references = [r for r in doc["rows"] if r["source"].startswith("reference")]
    assert len(references) == 3 and all("FORMAT EXAMPLE" in r["source"] for r in references)
    assert references[1]["params"] == 1_100_000_000 and references[2]["prefill_ms"] is None
    table = edgekit("study", "--no-run", "--models", "tiny-llama", "--devices", "pixel-8", home=filled.home)
    assert table.returncode == 0 and "tiny-llama" in table.stdout and "Small Language Models" in table.stdout


def test_reference_csv_problems_name_the_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,device,source,latency\nm,d,s,1\n")
    with pytest.raises(Exception, match="unknown column\\(s\\) latency"):
        read_reference_csv(bad)
    bad.write_text(",".join(REFERENCE_COLUMNS) + "\nm,1B,d,fast,,,,,,paper\n")
    with pytest.raises(Exception, match="line 2: 'prefill_ms' must be a number, got 'fast'"):
        read_reference_csv(bad)


def test_study_errors(filled, tmp_path):
    assert_one_line_error(edgekit("study", "--protocol", "mlperf", "--no-run", home=filled.home),
                          "unknown protocol 'mlperf'; known: slm-survey")  # fmt: skip
    assert_one_line_error(edgekit("study", "--models", "tiny-llama", home=filled.home), "needs --models and --devices")
    assert_one_line_error(edgekit("study", "--no-run", "--format", "xml", home=filled.home),
                          "unknown study format 'xml'; known: table, md, csv, json, html")  # fmt: skip
    html = edgekit("study", "--no-run", "--format", "html", home=filled.home)
    assert_one_line_error(html, "--format html needs --out")
    assert_one_line_error(edgekit("study", "--no-run", "--models", "nosuch", home=filled.home), "no runs match")
    with Store(tmp_path / "home") as store, pytest.raises(StudyError, match="uses gguf-q4_k_m, gguf-source, "):
        run_protocol(PROTOCOLS["slm-survey"], ["tiny-llama"], ["local"], "onnx-fp32", store)


# Exports tiny-llama with gguf-q4_k_m (the survey's engine) unless the session's shared cache already has it.
def test_study_runs_the_protocol_through_the_profiler_on_the_local_device(edgekit_home):
    """The real chain: export tiny-llama with the protocol's 4-bit recipe (llama.cpp's Q4_K_M), profile it on this
    host through edgekit.profile.run (P=50, G=50; the native runner's llama.cpp backend), ingest the pulled trace,
    print the table from the store beside the survey's published rows."""
    proc = edgekit("study", "--protocol", "slm-survey", "--models", "tiny-llama", "--devices", "local",
                   "--python", sys.executable, "--format", "json", timeout_s=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    (row,) = [r for r in doc["rows"] if r["source"].startswith("measured")]
    assert (row["model"], row["device"], row["source"]) == ("tiny-llama", "local", "measured (gguf-q4_k_m)")
    assert len(doc["rows"]) > 1, "the survey's own figures are shown beside the measured row by default"
    assert row["runs"] == PROTOCOLS["slm-survey"].runs
    assert row["prefill_ms"] > 0 and row["decode_ms_per_token"] > 0 and row["weights_mb"] > 0
    with Store() as store:
        workload = store.con.execute("SELECT DISTINCT prompt_len, gen_len FROM runs").fetchall()
    assert workload == [(50, 50)]
