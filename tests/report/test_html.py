"""The HTML report, and the compare and study pages, are self-contained files that a real headless Chromium
renders: every figure loads (no broken image, no console error), has its stable id and alt text, and the
frontier tables name the artifacts the generator's true values imply.

``EDGEKIT_REPORT_SCREENSHOT=docs/report-screenshot.png pytest tests/report/test_html.py -k report_renders``
also writes the README's screenshot of the report (palette PNG) to that path.
"""

from __future__ import annotations

import base64
import json
import os
import re
from html.parser import HTMLParser

from PIL import Image

from edgekit.report.frontier import PICK_FASTEST, PICK_SMALLEST
from tests.report.browser import load_and_check, screenshot
from tests.report.conftest import PROFILES, expected_frontier
from tests.store.cli import edgekit

WORKLOAD_SLUG = "p-50-g-50-w-1-t-4"  # P=50 G=50 W=1 t=4, as every generated profile runs
SUMMARY_FIGURES = {"fig-latency-vs-params", "fig-decode-by-device-recipe", "fig-memory-breakdown",
                   "fig-energy-per-token"}  # fmt: skip


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_self_contained(text: str) -> list[tuple[str, dict[str, str | None]]]:
    collector = _Collector()
    collector.feed(text)
    tags = collector.tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in tags:
        for attribute in ("src", "href"):
            value = attrs.get(attribute)
            assert value is None or value.startswith("data:"), (tag, attribute, value[:80] if value else value)
    assert "url(" not in text and "@import" not in text
    for tag, attrs in tags:
        if tag == "img":
            src = attrs["src"] or ""
            assert src.startswith("data:image/png;base64,")
            assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
            assert len(attrs.get("alt") or "") > 20
    return tags


def assert_rendered(result: dict, expected_ids: set[str]) -> None:
    """Every expected figure (and no other) loaded in Chromium, with alt text, and nothing logged an error."""
    figures = {f["id"]: f for f in result["figures"]}
    assert set(figures) == expected_ids
    assert result["images"] == len(expected_ids)
    for ident, figure in figures.items():
        assert figure["complete"] and figure["width"] > 100 and figure["height"] > 100, (ident, figure)
        assert len(figure["alt"]) > 20, ident
    assert result["errors"] == [] and result["console"] == [], (result["errors"], result["console"])


def _median_run(filled, name: str) -> str:
    """The lower-middle run by decode speed, from the generator's own numbers."""
    truth = filled.truths[name]
    ordered = sorted(zip(truth.decode_tok_s, truth.run_ids, strict=True))
    return filled.run_ids[name][ordered[(len(ordered) - 1) // 2][1]]


def _frontier_ids(devices: set[str]) -> set[str]:
    return {f"fig-frontier-{d}-{WORKLOAD_SLUG}" for d in devices}


def _rows_by_label(rows: list[list[str]], model: str) -> dict[str, str]:
    """Row label -> recipe of one model's rows (the HTML table's columns start at the model)."""
    return {r[1]: r[2] for r in rows if r[0] == model}


def test_report_renders_in_chromium_with_every_figure_and_the_frontier(filled, tmp_path):
    out = tmp_path / "report.html"
    proc = edgekit("report", "--format", "html", "-o", str(out), home=filled.home)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)

    result = load_and_check(out, tmp_path)
    devices = {spec.device for spec, _ in PROFILES.values()}
    timelines = {f"fig-timeline-{_median_run(filled, name)}" for name in PROFILES}
    assert_rendered(result, SUMMARY_FIGURES | _frontier_ids(devices) | timelines)
    assert len(result["tables"]["cells"]) == len(PROFILES)
    for device in devices:
        rows = result["tables"][f"frontier-{device}-{WORKLOAD_SLUG}"]
        for model in {a.model_id for s, a in PROFILES.values() if s.device == device}:
            front, fastest, smallest = expected_frontier(device, model)
            labels = _rows_by_label(rows, model)
            assert [labels[f"frontier {i}"] for i in range(1, len(front) + 1)] == front
            assert f"frontier {len(front) + 1}" not in labels
            for pick, recipe in ((PICK_FASTEST, fastest), (PICK_SMALLEST, smallest)):
                assert labels[pick] == recipe if recipe else labels[pick].startswith("no artifact has ppl ratio")
    pixel = _rows_by_label(result["tables"][f"frontier-pixel-8-{WORKLOAD_SLUG}"], "tiny-llama")
    assert [pixel[f"frontier {i}"] for i in range(1, 5)] == ["onnx-int4", "pte-q4", "onnx-int8", "onnx-fp32"]
    alt = next(f["alt"] for f in result["figures"] if f["id"] == f"fig-frontier-pixel-8-{WORKLOAD_SLUG}")
    assert "frontier onnx-int4" in alt and "fastest within 1% ppl: onnx-int8" in alt

    shot = screenshot(out, tmp_path / "report.png")
    with Image.open(shot) as image:
        assert image.size == (1200, 1500)
        assert len(image.convert("L").getcolors(1 << 16) or []) > 20  # drawn, not a blank page
        target = os.environ.get("EDGEKIT_REPORT_SCREENSHOT")
        if target:
            image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)


def test_chosen_runs_replace_the_median_runs(filled, tmp_path):
    chosen = filled.run_ids["pixel-pte"][0]
    out = tmp_path / "chosen.html"
    proc = edgekit("report", "--format", "html", "-o", str(out), "--device", "pixel-8", "--run", chosen,
                   home=filled.home)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ids = set(re.findall(r'<figure id="([^"]+)"', out.read_text(encoding="utf-8")))
    assert ids == SUMMARY_FIGURES | _frontier_ids({"pixel-8"}) | {f"fig-timeline-{chosen}"}


def test_compare_page_renders_in_chromium(filled, tmp_path):
    out = tmp_path / "compare.html"
    proc = edgekit("compare", "onnx-int4", "onnx-fp32", "--html", str(out), home=filled.home)
    assert proc.returncode == 0, proc.stderr
    assert "faster than onnx-fp32" in proc.stdout
    assert_self_contained(out.read_text(encoding="utf-8"))
    result = load_and_check(out, tmp_path)
    # Both recipes of tiny-llama on both devices (tiny-qwen's int4 has no fp32 to pair with).
    compared = ("pixel-int4", "pixel-fp32", "rpi-int4", "rpi-fp32")
    assert_rendered(result, _frontier_ids({"pixel-8", "rpi5"}) | {f"fig-timeline-{_median_run(filled, n)}"
                                                                 for n in compared})  # fmt: skip
    pixel = _rows_by_label(result["tables"][f"frontier-pixel-8-{WORKLOAD_SLUG}"], "tiny-llama")
    assert (pixel["frontier 1"], pixel["frontier 2"]) == ("onnx-int4", "onnx-fp32")
    ratios = [t for name, t in result["tables"].items() if name.startswith("ratios-")]
    assert len(ratios) == 2 and all(len(t) == 5 for t in ratios)  # one table per device, one row per metric
    devices = edgekit("compare", "pixel-8", "rpi5", "--html", str(out), "--json", home=filled.home)
    assert devices.returncode == 0 and "fig-frontier" not in out.read_text()  # one artifact, one quality
    assert json.loads(devices.stdout)["kind"] == "device"  # --json output stays parseable beside --html


def test_study_page_renders_in_chromium(filled, tmp_path):
    out = tmp_path / "study.html"
    proc = edgekit("study", "--no-run", "--models", "tiny-llama", "--devices", "pixel-8,rpi5", "--no-reference",
                   "--format", "html", "-o", str(out), home=filled.home)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_self_contained(out.read_text(encoding="utf-8"))
    result = load_and_check(out, tmp_path)
    four_bit = [n for n, (s, a) in PROFILES.items() if a.model_id == "tiny-llama" and a.scheme in ("int4", "q4",
                                                                                                 "q4_k_m")]  # fmt: skip
    assert_rendered(result, _frontier_ids({"pixel-8", "rpi5"}) | {f"fig-timeline-{_median_run(filled, n)}"
                                                                 for n in four_bit})  # fmt: skip
    assert len(result["tables"]["study"]) == len(four_bit)
    pixel = _rows_by_label(result["tables"][f"frontier-pixel-8-{WORKLOAD_SLUG}"], "tiny-llama")
    assert (pixel["frontier 1"], pixel["frontier 2"], pixel.get("frontier 3")) == ("onnx-int4", "pte-q4", None)


def test_the_browser_check_sees_broken_images_and_console_errors(tmp_path):
    """The machinery above can fail: a page with a broken image, a refused file and a script error."""
    page = tmp_path / "broken.html"
    bad = '<figure id="fig-bad"><img alt="bytes that are not a PNG" src="data:image/png;base64,AAAA"></figure>'
    missing = f'<figure id="fig-missing"><img alt="a missing file" src="{tmp_path.as_uri()}/nope.png"></figure>'
    script = "<script>console.error('boom'); undefinedFunction();</script>"
    page.write_text(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>{bad}{missing}{script}'
                    "</body></html>\n", encoding="utf-8")  # fmt: skip
    result = load_and_check(page, tmp_path)
    assert all(f["width"] == 0 for f in result["figures"]) and len(result["figures"]) == 2
    assert "error: boom" in result["errors"] and any("undefinedFunction" in e for e in result["errors"])
    assert sum(e == "failed to load IMG" for e in result["errors"]) == 2
    assert result["console"], "Chromium's own console log shows the errors too"
