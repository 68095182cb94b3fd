"""``make demo``: the main job on embedded defaults.

Today that is the export half: the bundled SmolLM2-135M-Instruct to ONNX int4 and ExecuTorch 8da4w,
both through the parity gate, then both manifests printed as one table. Re-running reuses the artifact
cache, so a second run takes seconds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekit._quiet import quiet_libraries
from edgekit.errors import EdgekitError

DEMO_MODEL = "smollm2-135m"
DEMO_RECIPES = ("onnx-int4", "pte-8da4w")


def summary_table(manifests: list[dict]) -> Table:
    table = Table(title=f"{DEMO_MODEL}: exported artifacts")
    for column in ("recipe", "file", "size MB", "quantized", "delegated", "max |Δlogit|", "top-1", "ppl ratio", "gate"):
        table.add_column(column)
    for m in manifests:
        artifact = next(f for f in m["files"] if f["name"] == m["artifact"])
        q, p = m["quantization"], m["parity"]
        delegated = f"{m['delegation']['share']:.0%}" if m.get("delegation") else "-"
        table.add_row(
            m["recipe"]["name"],
            artifact["name"],
            f"{sum(f['bytes'] for f in m['files']) / 1e6:.1f}",
            f"{q['linear_quantized']}/{q['linear_total']}",
            delegated,
            f"{p['max_abs_logit_diff']:.3f}",
            f"{p['top1_agreement']:.3f}",
            f"{p['ppl_ratio']:.3f}",
            "[green]passed[/green]" if m["gate"]["passed"] else "[red]failed[/red]",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args()
    quiet_libraries()
    console = Console()
    from edgekit.cli.export import manifest_table
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    args.out.mkdir(parents=True, exist_ok=True)
    manifests = []
    try:
        for name in DEMO_RECIPES:
            target = args.out / f"{DEMO_MODEL}-{name}"
            if target.exists():
                shutil.rmtree(target)  # the demo's own output: re-created (from the cache) every run
            console.rule(f"export {DEMO_MODEL} --recipe {name}")
            result = export(DEMO_MODEL, resolve_recipe(name), target)
            console.print(manifest_table(result.manifest))
            manifests.append(result.manifest)
    except EdgekitError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    console.print(summary_table(manifests))


if __name__ == "__main__":
    main()
