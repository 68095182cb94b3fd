"""``edgekit export``, ``edgekit recipes`` and ``edgekit inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from edgekit.cli.output import joined, plain_console, styled
from edgekit.cli.progress import cli_steps

if TYPE_CHECKING:
    from edgekit.manifest import Manifest

console = plain_console()


def export_cmd(
    model: str = typer.Argument(..., help="smollm2-135m, tiny-<arch>, a HF directory, a .gguf file or a hub id"),
    recipe: str = typer.Option(..., "--recipe", "-r", help="recipe name (see `edgekit recipes`) or YAML file"),
    out: Path = typer.Option(..., "--out", "-o", help="artifact directory to create (must not exist)"),
    max_context: int | None = typer.Option(None, "--max-context", help="override the recipe's max context"),
    no_cache: bool = typer.Option(False, "--no-cache", help="export again even if a cached artifact exists"),
) -> None:
    """Export MODEL with RECIPE into OUT, run the parity gate, and write manifest.json."""
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import parse_recipe, resolve_recipe

    resolved = resolve_recipe(recipe)
    if max_context is not None:
        resolved = parse_recipe({**resolved.model_dump(), "max_context": max_context}, f"'{resolved.name}'")
    with cli_steps() as steps:
        result = export(model, resolved, out, use_cache=not no_cache, progress=steps)
    console.print(manifest_table(result.manifest))
    console.print(joined(("gate passed", "green"), f": {result.out_dir}" + (" (from cache)" if result.cached else "")))


def recipes_cmd() -> None:
    """List the built-in export recipes, one line each."""
    from edgekit.export.recipes import builtin_recipes

    table = Table("recipe", "target", "quantization", "description", box=None)
    for name, recipe in builtin_recipes().items():
        q = recipe.quantize
        scheme = q.scheme if q.block_size is None else f"{q.scheme}/{q.block_size}"
        if q.embedding != "none":
            scheme += f" emb {q.embedding}"
        table.add_row(name, recipe.target, scheme, recipe.description)
    console.print(table)


def inspect_cmd(
    artifact_dir: Path = typer.Argument(..., help="an artifact directory written by `edgekit export`"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest as JSON"),
) -> None:
    """Print an artifact's manifest."""
    from edgekit.manifest import read_manifest

    manifest = read_manifest(artifact_dir)
    if as_json:
        print(manifest.to_json(), end="")
    else:
        console.print(manifest_table(manifest))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def manifest_table(m: Manifest) -> Table:
    """The facts of one manifest as a two-column table."""
    table = Table(title=Text(f"{m.model_id} · {m.recipe_name}"), show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    q, p, gate, kv = m.quantization, m.parity, m.gate, m.kv_cache
    rows: list[tuple[str, str | Text]] = [
        ("status", styled("passed", "green") if gate.passed else styled("failed: " + "; ".join(gate.failures), "red")),
        ("architecture", f"{m.model.architecture} · {m.model.parameters / 1e6:.1f}M params"),
        ("source sha256", m.model.source_sha256[:16] + "…"),
        ("target", f"{m.target} ({m.runtime}) · {m.artifact}"),
        ("files", ", ".join(f"{f.name} {_mb(f.bytes)}" for f in m.files)),
        ("max context", str(m.max_context)),
        ("kv cache", f"{kv.layers} layers × {kv.kv_heads} kv heads × {kv.head_dim} · {kv.dtype} · {kv.kind}"),
        ("quantized linears", f"{q.linear_quantized}/{q.linear_total} ({q.scheme}"
                              + (f", blocks of {q.block_size}" if q.block_size else "") + f"; output layer {q.head}; "
                              f"embedding {q.embedding})"),
    ]
    if m.requires:
        rows.append(("requires", ", ".join(m.requires)))
    if m.delegation is not None:
        d = m.delegation
        rows.append(("xnnpack delegated", f"{d.share:.0%} of nodes in {d.delegated_subgraphs} subgraphs"))
    t = gate.thresholds
    rows += [
        ("quality text", f"{p.text}: {p.tokens} tokens scored in {p.chunks} chunks of {p.n_ctx}"),
        ("KL divergence", f"{p.kl_mean:.4f} (95% CI {p.kl_ci[0]:.4f}–{p.kl_ci[1]:.4f}; p99 {p.kl_p99:.3f}) "
                          f"(≤ {t['max_kl']:g})"),
        ("perplexity ratio", f"{p.ppl_ratio:.4f} (95% CI {p.ppl_ratio_ci[0]:.4f}–{p.ppl_ratio_ci[1]:.4f}; "
                             f"{p.ppl_artifact:.3f} vs fp32 {p.ppl_reference:.3f}) (≤ {t['max_ppl_ratio']:g})"),
        ("same top-1", f"{p.top1_agreement:.3f} (95% CI {p.top1_ci[0]:.3f}–{p.top1_ci[1]:.3f}) "
                       f"(≥ {t['min_top1_agreement']:g})"),
        ("max |Δlogit|", f"{p.max_abs_logit_diff:.4g} (≤ {t['max_abs_logit_diff']:g}, a sanity bound)"),
        ("export wall", f"{m.export_wall_s:.1f} s"),
        ("tools", ", ".join(f"{k} {v}" for k, v in m.tool_versions.items() if v)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("recipes")(recipes_cmd)
    app.command("inspect")(inspect_cmd)
