"""``edgekit profile ARTIFACT_DIR --device NAME`` and ``edgekit run MODEL --recipe R --device D``.

Argument handling and printing only: the run is ``edgekit.profile.run``, every number comes from
``edgekit.profile.metrics``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from edgekit.cli.output import joined, plain_console
from edgekit.cli.progress import cli_steps
from edgekit.measure import StoredProfile, profile_and_store
from edgekit.profile.metrics import METRICS
from edgekit.profile.run import ProfileRequest, ProfileResult
from edgekit.workload import Workload

console = plain_console()


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def _cv(value: float | None) -> str:
    return "" if value is None else f" (CV {value:.1%})"


def result_table(result: ProfileResult) -> Table:
    m = result.metrics
    ok, total = len(m.ok_runs), len(m.runs)
    table = Table(title=Text(f"{result.manifest.model_id} · {result.manifest.recipe_name} on {result.device}"),
                  show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    mem = m.memory
    rows: list[tuple[str, str | Text]] = [
        ("workload", f"prompt {m.prompt_len} · generate {m.gen_len} · {m.threads} threads · "
                     f"{ok}/{total} runs ok · runner {result.trace.header['runner']['kind']}"),
        *((spec.label, _fmt(_scaled(m.median(spec.column), spec.scale), ".1f", f" {spec.unit}")
           + _cv(m.cv(spec.column))) for spec in METRICS if spec.key in _HEADLINE),
        ("decode latency", f"p50 {_fmt(m.median('decode_ms_p50'), '.2f', ' ms')} · "
                           f"p90 {_fmt(m.median('decode_ms_p90'), '.2f', ' ms')}"),
        ("load", _fmt(m.load_ms, ".0f", " ms")),
        ("peak RSS / PSS", f"{_fmt(_mb(mem.get('peak_rss_kb')), '.1f', ' MB')} / "
                           f"{_fmt(_mb(mem.get('peak_pss_kb')), '.1f', ' MB')}"),
        ("memory breakdown", f"weights {_fmt(_mb(mem.get('weights_kb')), '.1f', ' MB')} · "
                             f"KV cache {_fmt(_mb(mem.get('kv_cache_kb')), '.1f', ' MB')} · "
                             f"runtime {_fmt(_mb(mem.get('runtime_kb')), '.1f', ' MB')}"),
    ]
    reason = m.energy_missing_reason
    if reason is None and m.median("energy_per_token_mj") is not None:
        rows += [
            ("energy / token", _fmt(m.median("energy_per_token_mj"), ".2f", " mJ") + " above idle"
             + _cv(m.cv("energy_per_token_mj"))),
            ("avg power", f"prefill {_fmt(m.median('avg_power_prefill_w'), '.2f', ' W')} · decode "
                          f"{_fmt(m.median('avg_power_decode_w'), '.2f', ' W')} · "
                          f"idle {_fmt(m.idle_power_w, '.2f', ' W')} ({m.power_source})"),
        ]
    else:
        rows.append(("energy", joined(("missing", "yellow"), f": {reason or 'no energy computed'}")))
    rows += [
        ("temperature max", _fmt(m.temperature_max_c, ".1f", " °C")),
        ("cpu freq mean", _fmt(m.freq_mean_khz / 1000 if m.freq_mean_khz is not None else None, ".0f", " MHz")),
        ("cool-down", f"waited {result.conditioning.waited_s:.1f} s"
                      + ("" if result.conditioning.reached_threshold else " (threshold not reached)")),
        ("trace", str(result.trace_dir)),
    ]
    for run in m.runs:
        if not run.ok:
            rows.append((f"run {run.run}", joined(("failed", "red"), f": {run.error}")))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


_HEADLINE = ("ttft_ms", "prefill_tok_s", "decode_tok_s")  # the registry's rows shown at the top


def result_json(result: ProfileResult) -> dict[str, Any]:
    return {"run_id": result.run_id, "device": result.device, "trace_dir": str(result.trace_dir),
            "runner": result.runner, "runtime_version": result.runtime_version,
            "host_wall_s": result.host_wall_s, "agent_span_s": result.agent_span_s,
            "attempts": result.attempts, "conditioning": result.conditioning.to_dict(),
            "metrics": result.metrics.to_dict()}


def _workload(prompt_len: int, gen_len: int, runs: int, warmup: int, threads: int, cooldown_s: float,
              sample_ms: int, runner: str, timeout_s: float | None) -> Workload:
    return Workload.parse(
        {"prompt_len": prompt_len, "gen_len": gen_len, "runs": runs, "warmup": warmup, "threads": threads,
         "cooldown_s": cooldown_s, "sample_ms": sample_ms, "runner": runner, "timeout_s": timeout_s},
        "profile options",
    )  # fmt: skip


def _show(done: StoredProfile, as_json: bool) -> None:
    result = done.result
    if as_json:
        typer.echo(json.dumps({**result_json(result), "trace_id": done.trace_id}, indent=2, default=str))
    else:
        console.print(result_table(result))
        console.print(f"stored as trace {done.trace_id[:12]} (see `edgekit report`)", highlight=False)


_DEVICE = typer.Option("local", "--device", "-d", help="Device name (see `edgekit devices`).")
_PROMPT = typer.Option(50, "--prompt-len", help="Prompt tokens (prefill).")
_GEN = typer.Option(50, "--gen-len", help="Generated tokens (1 from prefill + G-1 decode steps).")
_RUNS = typer.Option(5, "--runs", help="Measured repetitions.")
_WARMUP = typer.Option(1, "--warmup", help="Warm-up repetitions (recorded, not measured).")
_THREADS = typer.Option(2, "--threads", help="Runtime threads.")
_COOLDOWN = typer.Option(10.0, "--cooldown-s", help="Longest cool-down wait before the run.")
_SAMPLE = typer.Option(20, "--sample-ms", help="Sampler period, 10..100 ms.")
_RUNNER = typer.Option("auto", "--runner", help="python | native | auto (native on phones).")
_PYTHON = typer.Option(None, "--python", help="The device's Python (default python3; emulated: host's).")
_TIMEOUT = typer.Option(None, "--timeout-s", help="Kill the agent after this long (default: generous).")
_INVENTORY = typer.Option(None, "--inventory", help="Inventory file to use.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def profile_cmd(
    artifact_dir: Path = typer.Argument(..., help="An artifact directory written by `edgekit export`."),
    device: str = _DEVICE, prompt_len: int = _PROMPT, gen_len: int = _GEN, runs: int = _RUNS,
    warmup: int = _WARMUP, threads: int = _THREADS, cooldown_s: float = _COOLDOWN, sample_ms: int = _SAMPLE,
    runner: str = _RUNNER, python: str | None = _PYTHON, timeout_s: float | None = _TIMEOUT,
    inventory_file: Path | None = _INVENTORY, as_json: bool = _JSON,
) -> None:
    """Profile ARTIFACT_DIR on a device: latency, throughput, memory, energy, temperature."""
    workload = _workload(prompt_len, gen_len, runs, warmup, threads, cooldown_s, sample_ms, runner, timeout_s)
    _show(profile_and_store(ProfileRequest(artifact_dir, workload), device, inventory=inventory_file, python=python),
          as_json)


def run_cmd(
    model: str = typer.Argument(..., help="smollm2-135m, tiny-<arch>, a HF directory, a .gguf or a hub id"),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Export recipe (see `edgekit recipes`)."),
    device: str = _DEVICE, prompt_len: int = _PROMPT, gen_len: int = _GEN, runs: int = _RUNS,
    warmup: int = _WARMUP, threads: int = _THREADS, cooldown_s: float = _COOLDOWN, sample_ms: int = _SAMPLE,
    runner: str = _RUNNER, python: str | None = _PYTHON, timeout_s: float | None = _TIMEOUT,
    inventory_file: Path | None = _INVENTORY, as_json: bool = _JSON,
) -> None:
    """Export MODEL with RECIPE, push it and profile it on DEVICE in one go."""
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import resolve_recipe

    workload = _workload(prompt_len, gen_len, runs, warmup, threads, cooldown_s, sample_ms, runner, timeout_s)
    with tempfile.TemporaryDirectory(prefix="edgekit-run-") as tmp:
        with cli_steps() as steps:
            exported = export(model, resolve_recipe(recipe), Path(tmp) / "artifact", progress=steps)
        request = ProfileRequest(exported.out_dir, workload)
        _show(profile_and_store(request, device, inventory=inventory_file, python=python), as_json)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_cmd)
    app.command("run")(run_cmd)
