"""A real headless Chromium for the HTML tests: load a page (with a check script injected first thing in its
head) and read back what the browser saw, or take a screenshot of it.

The check script records every error the page raises (a resource that fails to load, a script error, a
``console.error``/``console.warn``) and, once the page has loaded, writes the state of every figure, the
frontier tables and the cell table into the DOM as JSON; Chromium's own console log (stderr) is checked
too. No network: every host resolves to nothing.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND")  # fmt: skip

CHECK_SCRIPT = """<script>
window.__edgekitErrors = [];
window.addEventListener("error", (e) => {
  const t = e.target;
  window.__edgekitErrors.push(t && t !== window && t.tagName ? "failed to load " + t.tagName : String(e.message));
}, true);
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { window.__edgekitErrors.push(level + ": " + args.join(" ")); original(...args); };
}
window.addEventListener("load", () => {
  const figures = Array.from(document.querySelectorAll("figure")).map((f) => {
    const img = f.querySelector("img");
    return {id: f.id, alt: img ? img.alt : "", complete: !!img && img.complete,
            width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0};
  });
  const tables = {};
  for (const t of document.querySelectorAll("table")) {
    tables[t.id] = Array.from(t.tBodies[0].rows).map((r) => Array.from(r.cells).map((c) => c.textContent));
  }
  const out = document.createElement("pre");
  out.id = "edgekit-check";
  out.textContent = JSON.stringify({figures, tables, images: document.images.length,
                                    errors: window.__edgekitErrors});
  document.body.appendChild(out);
});
</script>"""


def _binary() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium); the HTML tests need it")
    return binary


def _run(args: list[str], page: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="edgekit-chromium-") as profile:
        proc = subprocess.run([_binary(), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                              capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def console_messages(stderr: str) -> list[str]:
    """Chromium's console log lines (``--enable-logging=stderr``). A report has no script and logs nothing,
    so any message there is the browser complaining (a resource it refused, a page error)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def load_and_check(page: Path, tmp_path: Path) -> dict[str, Any]:
    """Open ``page`` (a copy with the check script) in Chromium; the check script's findings, plus the
    browser's own console errors under "console"."""
    text = page.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in text
    checked = tmp_path / f"checked-{page.name}"
    checked.write_text(text.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + CHECK_SCRIPT, 1),
                       encoding="utf-8")  # fmt: skip
    proc = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom"], checked)
    match = re.search(r'<pre id="edgekit-check">(.*?)</pre>', proc.stdout, re.S)
    assert match, "the check script did not run: " + proc.stdout[-500:]
    result: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    result["console"] = console_messages(proc.stderr)
    result["dom"] = proc.stdout
    return result


def screenshot(page: Path, out: Path, width: int = 1200, height: int = 1500) -> Path:
    """A PNG of the top ``width`` x ``height`` CSS pixels of ``page`` as Chromium draws it."""
    _run([f"--screenshot={out}", f"--window-size={width},{height}", "--hide-scrollbars",
          "--virtual-time-budget=10000"], page)  # fmt: skip
    assert out.is_file() and out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    return out
