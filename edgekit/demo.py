"""``make demo``: the main job on embedded defaults.

1. export the bundled SmolLM2-135M-Instruct to the three formats: its own Q4_1 GGUF (llama.cpp), ONNX q4
   (ORT GenAI layout, the GGUF's 4-bit grid kept) and ExecuTorch 8da4w, each through the quality gate (the
   artifact cache makes a second run take seconds);
2. start one emulated phone and one emulated board (identity kept across runs);
3. profile every artifact on both devices with the survey's workload (50-token prompt, 50 generated
   tokens, 10 s cool-down), by the one runner rule: the phone (no Python) runs everything through the
   native runner, the board through the Python agent where it drives the runtime (GGUF: native); each
   trace goes into the results store;
4. print one table, then stop the emulated devices. ``edgekit report`` shows the runs afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgekit._quiet import quiet_libraries
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.manifest import Manifest

DEMO_MODEL = "smollm2-135m"
DEMO_RECIPES = ("gguf-source", "onnx-q4", "pte-8da4w")


def summary_table(manifests: list[Manifest]) -> Table:
    table = Table(title=f"{DEMO_MODEL}: exported artifacts")
    for column in ("recipe", "file", "size MB", "quantized", "delegated", "KL", "same top-1", "ppl ratio", "gate"):
        table.add_column(column)
    for m in manifests:
        q, p = m.quantization, m.parity
        delegated = f"{m.delegation.share:.0%}" if m.delegation else "-"
        table.add_row(
            m.recipe_name,
            m.artifact,
            f"{m.weights_bytes / 1e6:.1f}",
            f"{q.linear_quantized}/{q.linear_total}",
            delegated,
            f"{p.kl_mean:.4f}",
            f"{p.top1_agreement:.3f}",
            f"{p.ppl_ratio:.3f}",
            "[green]passed[/green]" if m.gate.passed else "[red]failed[/red]",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args()
    quiet_libraries()
    console = Console()
    from edgekit.cli.export import manifest_table
    from edgekit.cli.progress import cli_steps
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
            with cli_steps() as steps:
                result = export(DEMO_MODEL, resolve_recipe(name), target, progress=steps)
            console.print(manifest_table(result.manifest))
            manifests.append(result.manifest)
    except EdgekitError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)
    console.print(summary_table(manifests))
    try:
        rows = profile_everywhere([args.out / f"{DEMO_MODEL}-{name}" for name in DEMO_RECIPES], console)
    except EdgekitError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)
    console.print(profile_table(rows))
    console.print("next: `.venv/bin/edgekit report`, `edgekit report --format html -o report.html`, `edgekit study`")


def profile_everywhere(artifacts: list[Path], console: Console) -> list[tuple[str, str, str, Any]]:
    from edgekit.emulator import manager
    from edgekit.measure import profile_and_store
    from edgekit.profile.run import ProfileRequest
    from edgekit.workload import Workload

    console.rule("edgekit emulator start (1 phone, 1 board)")
    devices = [*manager.ensure("phone", 1), *manager.ensure("board", 1)]
    workload = Workload(prompt_len=50, gen_len=50, runs=3, warmup=1, cooldown_s=10.0)  # the survey's, 3 runs
    rows = []
    try:
        for device in devices:
            for artifact in artifacts:
                console.rule(f"edgekit profile {artifact.name} --device {device.name}")
                done = profile_and_store(ProfileRequest(artifact, workload), device.name)
                result = done.result
                rows.append((device.name, artifact.name.removeprefix(f"{DEMO_MODEL}-"), result.runner, result.metrics))
    finally:
        for device in devices:
            manager.stop(device.name)
    return rows


def profile_table(rows: list[tuple[str, str, str, Any]]) -> Table:
    table = Table(title=f"{DEMO_MODEL}: profiled on emulated devices (P=50, G=50, median of 3 runs)")
    for column in ("device", "recipe", "runner", "TTFT ms", "prefill tok/s", "decode tok/s", "peak RSS MB",
                   "weights / KV / runtime MB", "energy mJ/token"):  # fmt: skip
        table.add_column(column)

    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for device, recipe, runner, m in rows:
        mem = m.memory
        split = " / ".join(num(mem[k] / 1024 if mem[k] is not None else None, ".0f")
                           for k in ("weights_kb", "kv_cache_kb", "runtime_kb"))  # fmt: skip
        energy = m.median("energy_per_token_mj")
        table.add_row(
            device, recipe, runner,
            num(m.median("ttft_ms"), ".1f"), num(m.median("prefill_tok_s"), ".0f"),
            num(m.median("decode_tok_s"), ".1f"),
            num(mem["peak_rss_kb"] / 1024 if mem["peak_rss_kb"] else None, ".0f"), split,
            num(energy, ".2f") if energy is not None else f"- ({m.energy_missing_reason})",
        )  # fmt: skip
    return table


if __name__ == "__main__":
    main()
