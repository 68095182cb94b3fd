"""``edgekit compare A B``: two artifacts, devices, recipes or models, everything else held equal.

A and B are resolved by matching the store (artifact sha256 prefix, then device, recipe, model id); both
must be the same kind. Cells of A and B are paired when they agree on every other dimension (device,
model/artifact, workload), and for each pair and metric the report gives median(A) / median(B) with a
95% bootstrap CI (both sides resampled independently), plus one sentence per pair for decode speed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from edgekit.errors import NoMatchingRuns, StoreError
from edgekit.profile.metrics import METRICS
from edgekit.report.cells import Cell, report_cells
from edgekit.report.render import fmt_number
from edgekit.report.stats import bootstrap_ratio_ci
from edgekit.store.db import Store
from edgekit.store.queries import Filters, known_names

_WORKLOAD = ("prompt_len", "gen_len", "warmup", "threads")
# kind -> (cell attribute that differs, attributes that must be equal)
_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "artifact": ("artifact_sha256", ("device_id", *_WORKLOAD)),
    "device": ("device_id", ("artifact_sha256", *_WORKLOAD)),
    "recipe": ("recipe", ("device_id", "model_id", *_WORKLOAD)),
    "model": ("model_id", ("device_id", "recipe", *_WORKLOAD)),
}
_MIN_PREFIX = 6


@dataclass
class MetricRatio:
    metric: str
    unit: str
    a_median: float | None
    b_median: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass
class PairComparison:
    context: dict[str, Any]
    ratios: list[MetricRatio]
    sentence: str


@dataclass
class Comparison:
    kind: str
    a: str
    b: str
    pairs: list[PairComparison] = field(default_factory=list)
    cells: list[tuple[Cell, Cell]] = field(default_factory=list, repr=False)  # (A, B) of each pair, not in JSON

    def to_json(self) -> str:
        doc = {"kind": self.kind, "a": self.a, "b": self.b, "pairs": [asdict(p) for p in self.pairs]}
        return json.dumps(doc, indent=2, default=str)


def _kinds_of(store: Store, name: str, cells: list[Cell]) -> dict[str, str]:
    """Every kind ``name`` matches, with the canonical value it stands for."""
    matches: dict[str, str] = {}
    if len(name) >= _MIN_PREFIX:
        shas = sorted({c.artifact_sha256 for c in cells if c.artifact_sha256.startswith(name.lower())})
        if len(shas) > 1:
            raise StoreError(f"'{name}' matches several artifacts: {', '.join(s[:12] for s in shas)}")
        if shas:
            matches["artifact"] = shas[0]
    for kind, attribute in (("device", "device_id"), ("recipe", "recipe"), ("model", "model_id")):
        if any(getattr(c, attribute) == name for c in cells):
            matches[kind] = name
    return matches


def _resolve(store: Store, a: str, b: str, cells: list[Cell]) -> tuple[str, str, str]:
    kinds_a, kinds_b = _kinds_of(store, a, cells), _kinds_of(store, b, cells)
    for name, kinds in ((a, kinds_a), (b, kinds_b)):
        if not kinds:
            what = f"'{name}' (not an artifact sha256 prefix, device, recipe or model)"
            raise NoMatchingRuns(what, known_names(store))
    for kind in _KINDS:
        if kind in kinds_a and kind in kinds_b:
            if kinds_a[kind] == kinds_b[kind]:
                raise StoreError(f"'{a}' and '{b}' are the same {kind}")
            return kind, kinds_a[kind], kinds_b[kind]
    raise StoreError(
        f"cannot compare '{a}' ({'/'.join(kinds_a)}) with '{b}' ({'/'.join(kinds_b)}): they must be the same kind"
    )


def _sentence(a: str, b: str, ratio: MetricRatio, context: dict[str, Any]) -> str:
    where = f"on {context['device_id']}" if "device_id" in context else f"with {context.get('artifact', '?')}"
    if ratio.ratio is None:
        return f"no decode speed to compare for {a} and {b} {where}"
    ci = f" (95% CI {ratio.ci_low:.2f}–{ratio.ci_high:.2f})" if ratio.ci_low is not None and ratio.ci_high else ""
    if ratio.ratio >= 1:
        return f"{a} is {ratio.ratio:.2f}× faster than {b} at decode {where}{ci}"
    inverse_ci = ""
    if ratio.ci_low and ratio.ci_high:
        inverse_ci = f" (95% CI {1 / ratio.ci_high:.2f}–{1 / ratio.ci_low:.2f})"
    return f"{a} is {1 / ratio.ratio:.2f}× slower than {b} at decode {where}{inverse_ci}"


def compare(store: Store, a: str, b: str, filters: Filters | None = None) -> Comparison:
    cells = report_cells(store, filters)
    kind, value_a, value_b = _resolve(store, a, b, cells)
    attribute, same = _KINDS[kind]
    side_a = {tuple(getattr(c, k) for k in same): c for c in cells if getattr(c, attribute) == value_a}
    side_b = {tuple(getattr(c, k) for k in same): c for c in cells if getattr(c, attribute) == value_b}
    result = Comparison(kind, a, b)
    for key in sorted(side_a.keys() & side_b.keys(), key=str):
        cell_a, cell_b = side_a[key], side_b[key]
        context: dict[str, Any] = dict(zip(same, key, strict=True))
        if "artifact_sha256" in context:
            context["artifact"] = f"{cell_a.model_id}/{cell_a.recipe} ({cell_a.artifact_sha256[:12]})"
            del context["artifact_sha256"]
        ratios = []
        for metric in METRICS:
            va, vb = cell_a.values[metric.key], cell_b.values[metric.key]
            ma, mb = cell_a.summaries[metric.key].median, cell_b.summaries[metric.key].median
            ci = bootstrap_ratio_ci(va, vb)
            ratios.append(MetricRatio(metric.key, metric.unit, ma, mb, ma / mb if ma is not None and mb else None,
                                      ci[0] if ci else None, ci[1] if ci else None))  # fmt: skip
        decode = next(r for r in ratios if r.metric == "decode_tok_s")
        result.pairs.append(PairComparison(context, ratios, _sentence(a, b, decode, context)))
        result.cells.append((cell_a, cell_b))
    if not result.pairs:
        raise NoMatchingRuns(f"both '{a}' and '{b}' with everything else equal ({kind}s never share a cell)")
    return result


def render_side_by_side(results: list[Comparison], console: Console) -> None:
    """Several comparisons against the same A as one table per context: one row per name, every metric's
    median and its ratio to A with the 95% CI."""
    contexts: dict[str, list[tuple[str, PairComparison]]] = {}
    for result in results:
        for pair in result.pairs:
            key = ", ".join(f"{k}={v}" for k, v in pair.context.items())
            contexts.setdefault(key, []).append((result.b, pair))
    for context, pairs in contexts.items():
        first = results[0]
        columns = [f"{r.metric} ({r.unit})" for r in pairs[0][1].ratios]
        table = Table("", *columns, title=f"{first.kind}s side by side, {context}")
        table.add_row(first.a, *(fmt_number(r.a_median) for r in pairs[0][1].ratios))
        for name, pair in pairs:
            cells = []
            for r in pair.ratios:  # r.ratio is A / B with its CI; the row shows B / A
                ci = f" [{1 / r.ci_high:.2f}–{1 / r.ci_low:.2f}]" if r.ci_low and r.ci_high else ""
                ratio = f" ({1 / r.ratio:.2f}× A{ci})" if r.ratio else ""
                cells.append(f"{fmt_number(r.b_median)}{ratio}")
            table.add_row(name, *cells)
        console.print(table)


def ratio_rows(pair: PairComparison) -> list[list[str]]:
    """One row per metric: name, A's median, B's median, A / B and its 95% CI."""
    rows = []
    for r in pair.ratios:
        ci = f"{r.ci_low:.3f}–{r.ci_high:.3f}" if r.ci_low is not None and r.ci_high is not None else "—"
        ratio = f"{r.ratio:.3f}×" if r.ratio is not None else "—"
        rows.append([f"{r.metric} ({r.unit})", fmt_number(r.a_median), fmt_number(r.b_median), ratio, ci])
    return rows


def render_comparison(result: Comparison, console: Console) -> None:
    for pair in result.pairs:
        console.print(f"[bold]{pair.sentence}[/bold]", highlight=False)
        context = ", ".join(f"{k}={v}" for k, v in pair.context.items())
        table = Table("metric", result.a, result.b, f"{result.a} / {result.b}", "95% CI", title=context)
        for row in ratio_rows(pair):
            table.add_row(*row)
        console.print(table)
