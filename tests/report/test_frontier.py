"""The quality-against-speed frontier: the algorithm on hand-made points whose answer is known by construction,
then the frontier ``edgekit report --format json|md`` carries for the generated store."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from edgekit.report.cells import Cell
from edgekit.report.frontier import (
    PICK_FASTEST,
    PICK_SMALLEST,
    Candidate,
    dominates,
    fastest_within,
    frontier_groups,
    pareto_front,
    smallest_within,
)
from edgekit.report.stats import Summary
from tests.report.conftest import PROFILES, expected_frontier, true_decode_tok_s
from tests.store.cli import edgekit


def _c(name: str, tok_s: float, ppl: float, mem: float | None = 100.0) -> Candidate:
    return Candidate(name, tok_s, ppl, mem)


def _names(candidates: list) -> list[str]:
    return [c.name for c in candidates]


def test_dominance_needs_at_least_as_good_on_both_and_better_on_one():
    assert dominates(_c("a", 10, 1.01), _c("b", 9, 1.02))
    assert dominates(_c("a", 10, 1.01), _c("b", 10, 1.02))  # equal speed, better quality
    assert dominates(_c("a", 11, 1.02), _c("b", 10, 1.02))  # equal quality, faster
    assert not dominates(_c("a", 10, 1.02), _c("b", 10, 1.02))  # identical: neither
    assert not dominates(_c("a", 11, 1.05), _c("b", 10, 1.02))  # a trade-off: neither
    assert not dominates(_c("b", 10, 1.02), _c("a", 11, 1.05))


def test_front_of_a_staircase_with_dominated_points_under_it():
    # A staircase built to be the frontier (each step faster and worse), plus one point under each step.
    stairs = [_c(f"s{i}", 10.0 * (i + 1), 1.0 + 0.01 * i) for i in range(5)]
    under = [_c(f"u{i}", s.decode_tok_s - 1, s.ppl_ratio + 0.001) for i, s in enumerate(stairs)]
    shuffled = stairs + under
    random.Random(1).shuffle(shuffled)
    assert _names(pareto_front(shuffled)) == ["s4", "s3", "s2", "s1", "s0"]  # fastest first
    assert pareto_front([]) == []
    assert _names(pareto_front([_c("only", 1, 2.0)])) == ["only"]
    twins = [_c("x", 10, 1.01), _c("y", 10, 1.01), _c("z", 9, 1.02)]
    assert _names(pareto_front(twins)) == ["x", "y"]  # equal points are both kept, neither dominates


@pytest.mark.parametrize("seed", range(20))
def test_front_members_are_undominated_and_everything_else_is_dominated(seed):
    rng = random.Random(seed)
    # Coarse values make ties in speed and in quality common.
    points = [_c(f"p{i}", rng.randint(1, 8) * 5.0, 1 + rng.randint(0, 6) / 100) for i in range(rng.randint(1, 14))]
    front = pareto_front(points)
    for member in front:
        assert not any(dominates(other, member) for other in points)
    for point in set(_names(points)) - set(_names(front)):
        (candidate,) = [p for p in points if p.name == point]
        assert any(dominates(member, candidate) for member in front)
    speeds = [c.decode_tok_s for c in front]
    assert speeds == sorted(speeds, reverse=True)
    for a, b in itertools.pairwise(front):  # along the frontier, faster means worse (or equal, for twins)
        assert a.ppl_ratio >= b.ppl_ratio


def test_fastest_within_one_percent():
    points = [_c("fast-bad", 50, 1.30), _c("edge", 30, 1.01), _c("good", 20, 1.004), _c("ref", 10, 1.0)]
    assert fastest_within(points).name == "edge"  # exactly 1.01 is within 1%
    assert fastest_within(points, 1.005).name == "good"
    assert fastest_within([_c("a", 10, 1.02), _c("b", 20, 1.2)]) is None
    tie = [_c("worse", 30, 1.008), _c("better", 30, 1.002)]
    assert fastest_within(tie).name == "better"


def test_smallest_within_five_percent():
    points = [_c("tiny-bad", 50, 1.30, mem=50), _c("edge", 30, 1.05, mem=80), _c("mid", 40, 1.02, mem=90),
              _c("ref", 10, 1.0, mem=500), _c("unmeasured", 45, 1.0, mem=None)]  # fmt: skip
    assert smallest_within(points).name == "edge"  # exactly 1.05 is within 5%; 1.30 is not
    assert smallest_within(points, 1.03).name == "mid"
    assert smallest_within([_c("x", 10, 1.0, mem=None)]) is None  # no peak memory: never "smallest"
    assert smallest_within([_c("a", 10, 1.2)]) is None
    assert smallest_within([_c("slow", 10, 1.0, mem=80), _c("fast", 20, 1.01, mem=80)]).name == "fast"


def _cell(device: str, model: str, recipe: str, tok_s: float | None, ppl: float | None, mem: float = 100.0) -> Cell:
    cell = Cell(device, f"{recipe}-sha".ljust(64, "0"), 50, 50, 1, 4, model, None, None, recipe, None, "rt", None,
                None)  # fmt: skip
    cell.summaries = {"decode_tok_s": Summary(3, tok_s, ci_low=tok_s and tok_s * 0.9, ci_high=tok_s and tok_s * 1.1),
                      "peak_mem_mb": Summary(3, mem)}  # fmt: skip
    cell.quality = {"ppl_ratio": ppl}
    return cell


def test_groups_are_per_device_workload_and_model_and_name_what_cannot_be_placed():
    cells = [
        _cell("phone", "small", "fast", 40, 1.30), _cell("phone", "small", "good", 20, 1.0),
        _cell("phone", "large", "fast", 10, 1.001),  # another model: its own frontier, however good
        _cell("board", "small", "fast", 8, 1.30), _cell("board", "small", "broken", None, 1.0),
        _cell("board", "small", "old", 12, None),
    ]  # fmt: skip
    groups = {(g.device_id, g.model_id): g for g in frontier_groups(cells)}
    assert set(groups) == {("phone", "small"), ("phone", "large"), ("board", "small")}
    assert [e.recipe for e in groups[("phone", "small")].frontier] == ["fast", "good"]
    assert [e.recipe for e in groups[("phone", "large")].frontier] == ["fast"]
    board = groups[("board", "small")]
    assert [e.recipe for e in board.frontier] == ["fast"]
    assert [n.split(" ")[0] for n in board.not_placed] == ["broken", "old"]
    assert "no successful decode" in board.not_placed[0] and "no perplexity ratio" in board.not_placed[1]
    assert board.picks[PICK_FASTEST] is None and "no artifact has ppl ratio <= 1.01" in board.pick_note(PICK_FASTEST)
    assert groups[("phone", "small")].picks[PICK_FASTEST].recipe == "good"


def test_report_json_carries_the_frontier_the_generator_implies(filled):
    proc = edgekit("report", "--format", "json", home=filled.home)
    assert proc.returncode == 0, proc.stderr
    groups = {(g["device_id"], g["model_id"]): g for g in json.loads(proc.stdout)["frontier"]}
    assert set(groups) == {("pixel-8", "tiny-llama"), ("pixel-8", "tiny-qwen"), ("rpi5", "tiny-llama")}
    for (device, model), group in groups.items():
        front, fastest, smallest = expected_frontier(device, model)
        assert [e["recipe"] for e in group["frontier"]] == front, (device, model)
        assert group["picks"][PICK_FASTEST].get("recipe") == fastest
        assert group["picks"][PICK_SMALLEST].get("recipe") == smallest
        every = group["frontier"] + group["dominated"]
        assert len(every) == sum(1 for s, a in PROFILES.values() if s.device == device and a.model_id == model)
    llama = groups[("pixel-8", "tiny-llama")]
    # By construction (see conftest): four on the frontier, gguf-q4_k_m beaten by pte-q4 on both axes.
    assert [e["recipe"] for e in llama["frontier"]] == ["onnx-int4", "pte-q4", "onnx-int8", "onnx-fp32"]
    assert [e["recipe"] for e in llama["dominated"]] == ["gguf-q4_k_m"]
    assert (llama["picks"][PICK_FASTEST]["recipe"], llama["picks"][PICK_SMALLEST]["recipe"]) == ("onnx-int8", "pte-q4")
    int8 = llama["picks"][PICK_FASTEST]
    assert int8["decode_tok_s_ci_low"] <= true_decode_tok_s("pixel-int8") <= int8["decode_tok_s_ci_high"]
    assert int8["ppl_ratio"] == pytest.approx(1.0058) and int8["runtime"] == "onnxruntime"
    assert int8["ppl_ratio_ci_low"] < 1.0058 < int8["ppl_ratio_ci_high"] and int8["kl_mean"] == pytest.approx(0.0039)
    assert {e["runtime"] for e in llama["frontier"]} == {"onnxruntime", "executorch"}
    qwen = groups[("pixel-8", "tiny-qwen")]["picks"][PICK_FASTEST]
    assert "no artifact has ppl ratio <= 1.01" in qwen["none"]


def test_report_markdown_carries_the_same_frontier(filled):
    proc = edgekit("report", "--format", "md", "--device", "pixel-8", "--model", "tiny-llama", home=filled.home)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("## Quality against speed", 1)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    assert rows[0][:5] == ["device", "workload", "model", "row", "recipe"]
    by_row = {r[3]: r[4] for r in rows[1:]}
    assert [by_row[f"frontier {i}"] for i in range(1, 5)] == ["onnx-int4", "pte-q4", "onnx-int8", "onnx-fp32"]
    assert (by_row[PICK_FASTEST], by_row[PICK_SMALLEST]) == ("onnx-int8", "pte-q4")
    qwen = edgekit("report", "--format", "md", "--model", "tiny-qwen", home=filled.home)
    assert "no artifact has ppl ratio <= 1.01 (lowest: onnx-int4 at 1.0200)" in qwen.stdout
