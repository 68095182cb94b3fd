"""The "slm-survey" study table: the measurement protocol of "Small Language Models: Survey, Measurements,
and Insights" (4-bit weights, a 50-token prompt, 50 generated tokens, 10 s between tests) and its table.

The table is built from the store (runs with P=50, G=50 on 4-bit artifacts): model, parameters, device,
prefill latency of the 50-token prompt (median TTFT), decode latency per token (median over runs) and
memory in MB split as the survey draws it (weights / KV cache / compute / other). Every formula is
``edgekit.profile.metrics``'s (``memory_breakdown``, ``split_runtime_memory``, ``ms_per_token``); this
module only groups stored values and takes medians.

Reference rows come from a CSV with the columns ``REFERENCE_COLUMNS`` (``read_reference_csv``); edgekit
ships the survey's own published figures for 20 models on the Jetson Orin NX (``SURVEY_REFERENCE``, read
from the paper's figures, each row citing its source) and shows them by default. Running the protocol
lives in ``study_run.py``.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekit.errors import NoMatchingRuns, StoreError
from edgekit.profile.metrics import ms_per_token, split_runtime_memory
from edgekit.report.render import fmt_params
from edgekit.store.db import Store
from edgekit.store.queries import Filters, select_runs
from edgekit.workload import Workload


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    recipes: tuple[str, ...]  # the first is the default
    prompt_len: int
    gen_len: int
    gap_s: float
    weight_bits: int
    runs: int = 5
    warmup: int = 1
    max_context: int = 2048  # the context every artifact of the study is exported for (the survey's n_ctx)

    def workload(self) -> Workload:
        """The protocol's workload; the gap between tests is its cool-down."""
        return Workload(prompt_len=self.prompt_len, gen_len=self.gen_len, runs=self.runs, warmup=self.warmup,
                        cooldown_s=self.gap_s)  # fmt: skip


PROTOCOLS = {
    # The survey ran every model in llama.cpp at 4 bits with n_ctx 2048 "to eliminate the impact of inference
    # engine implementations": its engine is the default; the other runtimes' 4-bit recipes can be added.
    "slm-survey": Protocol(
        name="slm-survey",
        title="Small Language Models: Survey, Measurements, and Insights",
        recipes=("gguf-q4_k_m", "gguf-source", "gguf-q4_0", "pte-q4", "pte-8da4w", "onnx-q4", "onnx-int4"),
        prompt_len=50,
        gen_len=50,
        gap_s=10.0,
        weight_bits=4,
    )
}

SURVEY_REFERENCE = Path(__file__).resolve().parents[1] / "data" / "slm-survey-reference.csv"

# The reference CSV: one row per published measurement. Required: model, device, source. Numbers may be
# empty (not published). params: a count (135000000) or with a suffix (135M, 1.1B).
REFERENCE_COLUMNS = (
    "model", "params", "device", "prefill_ms", "decode_ms_per_token",
    "weights_mb", "kv_cache_mb", "compute_mb", "other_mb", "source",
)  # fmt: skip
_REQUIRED = ("model", "device", "source")
_NUMBERS = ("prefill_ms", "decode_ms_per_token", "weights_mb", "kv_cache_mb", "compute_mb", "other_mb")


@dataclass
class StudyRow:
    model: str
    params: int | None
    device: str
    prefill_ms: float | None
    decode_ms_per_token: float | None
    weights_mb: float | None
    kv_cache_mb: float | None
    compute_mb: float | None
    other_mb: float | None
    runs: int
    source: str  # "measured (<recipe>)" or the reference's citation


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        from edgekit.errors import UnknownName

        raise UnknownName("protocol", name, list(PROTOCOLS))
    return PROTOCOLS[name]


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _mb(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def protocol_runs(store: Store, protocol: Protocol, models: list[str], devices: list[str]) -> list[dict[str, Any]]:
    """The stored repetitions the protocol's table is made of: its workload, on its weight width."""
    filters = Filters(devices=devices, models=models, prompt_len=protocol.prompt_len, gen_len=protocol.gen_len)
    rows = [r for r in select_runs(store, filters) if r["quant_bits"] == protocol.weight_bits]
    if not rows:
        raise NoMatchingRuns(f"{filters.describe()} on {protocol.weight_bits}-bit artifacts")
    return rows


def measured_rows(store: Store, protocol: Protocol, models: list[str], devices: list[str]) -> list[StudyRow]:
    rows = protocol_runs(store, protocol, models, devices)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model_id"], row["device_id"], row["recipe"]), []).append(row)
    out = []
    for (model, device, recipe), members in groups.items():
        ok = [r for r in members if r["ok"]]
        traces = list({r["trace_id"]: r for r in members}.values())
        runtime = _median([t["runtime_kb"] for t in traces if t["runtime_kb"] is not None])
        compute, other = split_runtime_memory(
            runtime, _median([t["baseline_rss_kb"] for t in traces if t["baseline_rss_kb"] is not None]))
        out.append(StudyRow(
            model=model,
            params=members[0]["params"],
            device=device,
            prefill_ms=_median([r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]),
            decode_ms_per_token=_median([v for r in ok if (v := ms_per_token(r["decode_tok_s"])) is not None]),
            weights_mb=_mb(_median([t["weights_kb"] for t in traces if t["weights_kb"] is not None])),
            kv_cache_mb=_mb(_median([t["kv_cache_kb"] for t in traces if t["kv_cache_kb"] is not None])),
            compute_mb=_mb(compute),
            other_mb=_mb(other),
            runs=len(ok),
            source=f"measured ({recipe})",
        ))  # fmt: skip
    return sorted(out, key=lambda r: (r.params or 0, r.model, r.device, r.source))


def _parse_params(text: str, where: str) -> int | None:
    text = text.strip().replace("_", "").replace(",", "")
    if not text:
        return None
    scale = {"K": 1e3, "M": 1e6, "B": 1e9}.get(text[-1].upper(), 1.0)
    try:
        return int(float(text[:-1] if scale != 1.0 else text) * scale)
    except ValueError as exc:
        raise StoreError(f"{where}: params must be a count like 135000000 or 135M, got '{text}'") from exc


def read_reference_csv(path: Path) -> list[StudyRow]:
    """Reference rows from a CSV with a header of ``REFERENCE_COLUMNS`` (any order, unknown columns refused)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read reference CSV '{path}': {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in REFERENCE_COLUMNS]
    missing = [c for c in _REQUIRED if c not in header]
    if unknown or missing:
        problems = ([f"unknown column(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing column(s) {', '.join(missing)}"] if missing else []
        )
        raise StoreError(f"reference CSV '{path}': {'; '.join(problems)}; expected {', '.join(REFERENCE_COLUMNS)}")
    rows = []
    for number, record in enumerate(reader, start=2):
        where = f"reference CSV '{path}' line {number}"
        for column in _REQUIRED:
            if not (record.get(column) or "").strip():
                raise StoreError(f"{where}: '{column}' is empty")
        values: dict[str, float | None] = {}
        for column in _NUMBERS:
            raw = (record.get(column) or "").strip()
            try:
                values[column] = float(raw) if raw else None
            except ValueError as exc:
                raise StoreError(f"{where}: '{column}' must be a number, got '{raw}'") from exc
        rows.append(StudyRow(
            model=record["model"].strip(), params=_parse_params(record.get("params") or "", where),
            device=record["device"].strip(), runs=0, source=f"reference: {record['source'].strip()}",
            **values,
        ))  # fmt: skip
    return rows


def _cell(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


STUDY_FORMATS = ("table", "md", "csv", "json", "html")
HEADERS = ("model", "params", "device", "prefill ms (50 tok)", "decode ms/token", "weights MB", "KV cache MB",
           "compute/runtime MB", "other MB", "runs", "source")  # fmt: skip


def row_strings(row: StudyRow) -> list[str]:
    return [row.model, fmt_params(row.params), row.device, _cell(row.prefill_ms), _cell(row.decode_ms_per_token, 2),
            _cell(row.weights_mb), _cell(row.kv_cache_mb), _cell(row.compute_mb), _cell(row.other_mb),
            str(row.runs) if row.runs else "", row.source]  # fmt: skip


def study_table(protocol: Protocol, rows: list[StudyRow]) -> Table:
    table = Table(*HEADERS, title=f"{protocol.title} — protocol '{protocol.name}' (P={protocol.prompt_len}, "
                                  f"G={protocol.gen_len}, {protocol.weight_bits}-bit)")  # fmt: skip
    for row in rows:
        table.add_row(*row_strings(row), style="dim" if row.source.startswith("reference") else None)
    return table


def render_study(protocol: Protocol, rows: list[StudyRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"protocol": asdict(protocol), "rows": [asdict(r) for r in rows]}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(StudyRow)], lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
        return buffer.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(row_strings(r)) + " |" for r in rows]
        return f"**{protocol.title}** (protocol `{protocol.name}`)\n\n" + "\n".join(lines) + "\n"
    raise StoreError(f"unknown study format '{fmt}'; known: {', '.join(STUDY_FORMATS)}")
