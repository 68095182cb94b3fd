"""The HTML report is one self-contained file that a real headless Chromium renders: the cell table is in
the DOM and every plot (a base64 PNG data URI) decodes to an image with a width."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.report.conftest import PROFILES
from tests.store.cli import edgekit

_CHECK_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(img => ({complete: img.complete, width: img.naturalWidth,
                                                          height: img.naturalHeight}));
  const rows = document.querySelectorAll("table#cells tbody tr").length;
  const out = document.createElement("pre");
  out.id = "edgekit-check";
  out.textContent = JSON.stringify({images, rows});
  document.body.appendChild(out);
});
</script>
"""


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def chromium_dump_dom(page: Path) -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium); the HTML test needs it")
    with tempfile.TemporaryDirectory(prefix="edgekit-chromium-") as profile:
        proc = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network needed
             "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_html_report_is_self_contained_and_renders_in_chromium(filled, tmp_path):
    out = tmp_path / "report.html"
    proc = edgekit("report", "--format", "html", "-o", str(out), home=filled.home)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")

    collector = _Collector()
    collector.feed(text)
    tags = collector.tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    for tag, attrs in tags:
        for attribute in ("src", "href"):
            value = attrs.get(attribute)
            assert value is None or value.startswith("data:"), (tag, attribute, value[:80] if value else value)
    assert "url(" not in text and "@import" not in text
    images = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert len(images) == 4
    for src in images:
        assert src and src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")

    checked = tmp_path / "checked.html"
    checked.write_text(text.replace("</body>", _CHECK_SCRIPT + "</body>"), encoding="utf-8")
    dom = chromium_dump_dom(checked)
    match = re.search(r'<pre id="edgekit-check">(.*?)</pre>', dom, re.S)
    assert match, "the check script did not run: " + dom[-500:]
    result = json.loads(match.group(1).replace("&quot;", '"'))
    assert result["rows"] == len(PROFILES)
    assert len(result["images"]) == 4
    assert all(img["complete"] and img["width"] > 0 and img["height"] > 0 for img in result["images"]), result
    for device in ("pixel-8", "rpi5"):
        assert f"<td>{device}</td>" in dom
