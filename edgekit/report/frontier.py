"""What to ship on a device: the Pareto frontier of decode speed against quality loss, and two named picks.

An artifact is on the frontier when no other artifact of its group is both at least as fast (median decode
tok/s) and at least as good (perplexity ratio against the fp32 reference, from the quality gate), and
strictly better in one of the two. The picks: "fastest within 1% ppl" (the highest decode speed among
ppl ratio <= 1.01) and "smallest within 5% ppl" (the lowest peak memory among ppl ratio <= 1.05); a pick
that no artifact qualifies for is None, never the nearest miss.

A group is one device, one workload and one model: the gate measures each artifact against its own model's
fp32 reference, so a ppl ratio says nothing across models (a 135M model at 1.00 is not better than a 1B
model at 1.01). Point estimates decide; the intervals are carried for display. This module computes from
report cells only: it neither reads the store nor formats output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgekit.report.cells import Cell

FASTEST_WITHIN = 1.01
SMALLEST_WITHIN = 1.05
PICK_FASTEST = "fastest within 1% ppl"
PICK_SMALLEST = "smallest within 5% ppl"
PICKS = (PICK_FASTEST, PICK_SMALLEST)


@dataclass(frozen=True)
class Candidate:
    name: str
    decode_tok_s: float  # higher is better
    ppl_ratio: float  # lower is better (1.0: the fp32 reference's perplexity)
    peak_mem_mb: float | None  # lower is better; None: not measured (never the "smallest")


C = TypeVar("C", bound=Candidate)


def dominates(a: Candidate, b: Candidate) -> bool:
    """a is at least as fast and at least as good as b, and strictly better in one."""
    at_least = a.decode_tok_s >= b.decode_tok_s and a.ppl_ratio <= b.ppl_ratio
    return at_least and (a.decode_tok_s > b.decode_tok_s or a.ppl_ratio < b.ppl_ratio)


def _by_speed(candidate: Candidate) -> tuple[float, float, str]:
    return -candidate.decode_tok_s, candidate.ppl_ratio, candidate.name


def pareto_front(candidates: Sequence[C]) -> list[C]:
    """The candidates no other one dominates, fastest first (equal ones are all kept)."""
    front = [c for c in candidates if not any(dominates(other, c) for other in candidates)]
    return sorted(front, key=_by_speed)


def fastest_within(candidates: Sequence[C], max_ppl_ratio: float = FASTEST_WITHIN) -> C | None:
    """The fastest candidate with ppl ratio <= ``max_ppl_ratio`` (ties: the better quality); None if none."""
    eligible = [c for c in candidates if c.ppl_ratio <= max_ppl_ratio]
    return min(eligible, key=_by_speed, default=None)


def smallest_within(candidates: Sequence[C], max_ppl_ratio: float = SMALLEST_WITHIN) -> C | None:
    """The candidate with the lowest peak memory and ppl ratio <= ``max_ppl_ratio`` (ties: the faster)."""
    eligible = [c for c in candidates if c.ppl_ratio <= max_ppl_ratio and c.peak_mem_mb is not None]
    return min(eligible, key=lambda c: (c.peak_mem_mb, *_by_speed(c)), default=None)


@dataclass(frozen=True)
class Entry(Candidate):
    """One artifact of a group, with what the reports show beside the three deciding numbers."""

    artifact_sha256: str = ""
    recipe: str = ""
    runtime: str | None = None
    decode_ci: tuple[float | None, float | None] = (None, None)
    ppl_ci: tuple[float | None, float | None] = (None, None)
    kl_mean: float | None = None
    artifact_mb: float | None = None
    gate_passed: bool | None = None
    run_ids: tuple[str, ...] = ()

    @property
    def ppl_increase_pct(self) -> float:
        return (self.ppl_ratio - 1) * 100


@dataclass
class Group:
    """The artifacts of one model on one device under one workload."""

    device_id: str
    model_id: str
    workload: str
    prompt_len: int
    gen_len: int
    warmup: int
    threads: int
    entries: list[Entry] = field(default_factory=list)  # fastest first
    frontier: list[Entry] = field(default_factory=list)  # fastest first
    picks: dict[str, Entry | None] = field(default_factory=dict)
    not_placed: list[str] = field(default_factory=list)  # "recipe (sha): why it has no point"

    def pick_note(self, pick: str) -> str:
        """Why ``pick`` is empty (call only when it is)."""
        limit = FASTEST_WITHIN if pick == PICK_FASTEST else SMALLEST_WITHIN
        if not self.entries:
            return "no artifact has both a decode speed and a ppl ratio"
        best = min(self.entries, key=lambda e: (e.ppl_ratio, e.name))
        measured = "" if pick == PICK_FASTEST else " and a measured peak memory"
        return (f"no artifact has ppl ratio <= {limit:.2f}{measured} "
                f"(lowest: {best.recipe} at {best.ppl_ratio:.4f})")  # fmt: skip


def _entry(cell: Cell) -> Entry | str:
    """The cell as a frontier entry, or why it cannot be placed."""
    decode = cell.summaries["decode_tok_s"]
    ppl = cell.quality.get("ppl_ratio")
    if decode.median is None:
        return "no successful decode"
    if ppl is None:
        return "no perplexity ratio in its manifest"
    peak = cell.summaries["peak_mem_mb"].median
    return Entry(
        name=f"{cell.recipe} ({cell.artifact_sha256[:12]})", decode_tok_s=decode.median, ppl_ratio=ppl,
        peak_mem_mb=peak, artifact_sha256=cell.artifact_sha256, recipe=cell.recipe, runtime=cell.runtime,
        decode_ci=(decode.ci_low, decode.ci_high),
        ppl_ci=(cell.quality.get("ppl_ratio_ci_low"), cell.quality.get("ppl_ratio_ci_high")),
        kl_mean=cell.quality.get("kl_mean"),
        artifact_mb=None if cell.artifact_bytes is None else cell.artifact_bytes / 2**20,
        gate_passed=cell.gate_passed, run_ids=tuple(cell.run_ids),
    )  # fmt: skip


def frontier_groups(cells: list[Cell]) -> list[Group]:
    """One group per device x workload x model, sorted by device, workload and model."""
    groups: dict[tuple[Any, ...], Group] = {}
    for cell in cells:
        key = (cell.device_id, cell.prompt_len, cell.gen_len, cell.warmup, cell.threads, cell.model_id)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(cell.device_id, cell.model_id, cell.workload(), cell.prompt_len,
                                        cell.gen_len, cell.warmup, cell.threads)  # fmt: skip
        entry = _entry(cell)
        if isinstance(entry, str):
            group.not_placed.append(f"{cell.recipe} ({cell.artifact_sha256[:12]}): {entry}")
        else:
            group.entries.append(entry)
    for group in groups.values():
        group.entries.sort(key=_by_speed)
        group.frontier = pareto_front(group.entries)
        group.picks = {PICK_FASTEST: fastest_within(group.entries), PICK_SMALLEST: smallest_within(group.entries)}
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1:5], k[5]))]


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {
        "artifact_sha256": entry.artifact_sha256, "recipe": entry.recipe, "runtime": entry.runtime,
        "decode_tok_s_median": entry.decode_tok_s, "decode_tok_s_ci_low": entry.decode_ci[0],
        "decode_tok_s_ci_high": entry.decode_ci[1], "ppl_ratio": entry.ppl_ratio, "ppl_ratio_ci_low": entry.ppl_ci[0],
        "ppl_ratio_ci_high": entry.ppl_ci[1], "kl_mean": entry.kl_mean, "peak_mem_mb_median": entry.peak_mem_mb,
        "artifact_mb": entry.artifact_mb, "gate_passed": entry.gate_passed,
    }  # fmt: skip


def groups_json(groups: list[Group]) -> list[dict[str, Any]]:
    """The groups as JSON-ready records: frontier (fastest first), picks (None when nothing qualifies, with
    the reason), the dominated artifacts and those that could not be placed."""
    out = []
    for g in groups:
        on_front = {e.artifact_sha256 for e in g.frontier}
        picks: dict[str, Any] = {}
        for pick in PICKS:
            chosen = g.picks.get(pick)
            picks[pick] = _entry_json(chosen) if chosen else {"none": g.pick_note(pick)}
        out.append({
            "device_id": g.device_id, "model_id": g.model_id, "prompt_len": g.prompt_len, "gen_len": g.gen_len,
            "warmup": g.warmup, "threads": g.threads, "quality": "ppl_ratio", "speed": "decode_tok_s_median",
            "frontier": [_entry_json(e) for e in g.frontier], "picks": picks,
            "dominated": [_entry_json(e) for e in g.entries if e.artifact_sha256 not in on_front],
            "not_placed": g.not_placed,
        })  # fmt: skip
    return out
