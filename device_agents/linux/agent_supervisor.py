"""The agent's supervisor: header, idle baseline, then the runner as a child process (one per crash),
sampled from a thread, then the footer and ``summary.json``.

Keeping the runner in its own process means the sampler never competes with the measured loop for the
interpreter lock, and a runner that crashes (a signal, a native abort) costs only the repetition it was
in: the supervisor records an ``error`` event with the runner's stderr tail and starts a fresh runner for
the remaining repetitions.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time

from agent_sensors import detect_power_source, device_facts
from agent_trace import Sampler, TraceWriter

AGENT_NAME = "edgekit-linux-agent"
AGENT_VERSION = "2.0.0"
SCHEMA_VERSION = 1
STDERR_TAIL_CHARS = 2000
ENTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edgekit_agent.py")
_MONO = time.monotonic_ns


def _child_argv(args, first_index, load_events):
    # The child takes the supervisor's own command line (test hooks included) plus where to start.
    argv = [sys.executable, ENTRY, "--runner-child", *args.agent_argv, "--first-index", str(first_index)]
    if not load_events:
        argv.append("--no-load-events")
    return argv


def _file_tail(path, n_chars=STDERR_TAIL_CHARS):
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        fh.seek(max(0, os.path.getsize(path) - n_chars))
        return fh.read().decode("utf-8", "replace")
    return ""


def supervise(args):
    os.makedirs(args.out, exist_ok=True)
    overrides = {}
    if args.device_json:
        with open(args.device_json) as fh:
            overrides = json.load(fh)
    power = detect_power_source()
    writer = TraceWriter(os.path.join(args.out, "trace.jsonl"))
    stderr_path = os.path.join(args.out, "runner.stderr")
    runtime = args.runtime
    header = {
        "type": "header", "schema_version": SCHEMA_VERSION,
        "agent": {"name": AGENT_NAME, "version": AGENT_VERSION},
        "runner": {"kind": {"onnxruntime-genai": "python-onnxruntime-genai", "onnxruntime": "python-onnxruntime",
                            "executorch": "python-executorch"}.get(runtime, "python-" + str(runtime)),
                   "version": None},
        "device": device_facts(overrides),
        "artifact": {"sha256": args.artifact_sha256, "model_id": args.model_id, "recipe": args.recipe,
                     "runtime": runtime, "file": os.path.basename(args.model)},
        "workload": {"prompt_len": args.prompt_len, "gen_len": args.gen_len, "warmup": args.warmup,
                     "runs": args.runs, "threads": args.threads, "sample_ms": args.sample_ms,
                     "prompt_ids": args.prompt_ids},
        "power_source": power.name, "power_source_detail": power.detail,
        "started_at": datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 - devices may run Python < 3.11
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if power.energy_range_uj:
        header["energy_range_uj"] = power.energy_range_uj
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        header["runner"]["version"] = version(runtime)
    writer.write(header)
    sampler = None if args.no_sampler else Sampler(writer, args.sample_ms / 1000.0, power, args.pss_ms / 1000.0)
    if sampler is not None:
        sampler.start()

    def event(name, run=-1, warmup=False, **extra):
        record = {"type": "event", "name": name, "ts_ns": _MONO(), "run": run, "warmup": warmup}
        record.update(extra)
        writer.write(record)

    event("baseline_start")
    time.sleep(args.baseline_ms / 1000.0)
    event("baseline_end")

    total = args.warmup + args.runs
    index = 0  # position in the plan (warm-ups first, then measured runs)
    completed = failed = 0
    self_hwm_kb = None
    load_failed = False
    first_child = True
    # A SIGTERM (the host gave up) still writes a footer-less trace and takes the runner down with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    while index < total and not load_failed:
        with open(stderr_path, "ab") as err:
            child = subprocess.Popen(_child_argv(args, index, first_child), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=err)
        if sampler is not None:
            sampler.pid = child.pid
        first_child = False
        current = None  # (run, warmup) of the repetition in flight
        for raw in child.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not ours: the runner's events are JSON objects only
            kind = record.get("type")
            if kind == "sample":
                writer.write_raw(line, kind)
            elif kind == "event":
                writer.write_raw(line, kind)
                name = record["name"]
                if name == "run_start":
                    current = (record["run"], record["warmup"])
                elif name in ("run_end", "error"):
                    if record["run"] >= 0:
                        index += 1
                        if not record["warmup"]:
                            completed += name == "run_end"
                            failed += name == "error"
                    else:
                        load_failed = True
                    current = None
            elif kind == "runner_exit":
                self_hwm_kb = record.get("self_hwm_kb")
        code = child.wait()
        if sampler is not None:
            sampler.pid = None
        if code != 0 and current is not None:
            run, warmup = current
            reason = "crash"
            message = "runner exited with " + (f"signal {-code}" if code < 0 else f"code {code}")
            if code in (-signal.SIGKILL, 137):
                message += " (SIGKILL: the out-of-memory killer is a likely cause)"
            event("error", run, warmup, reason=reason, message=message,
                  stderr_tail=_file_tail(stderr_path))
            index += 1
            if not warmup:
                failed += 1
        elif code != 0 and not load_failed and index < total:
            event("error", -1, False, reason="crash", message=f"runner exited with {code} before running",
                  stderr_tail=_file_tail(stderr_path))
            load_failed = True
    if sampler is not None:
        sampler.stop()
    status = "ok" if completed > 0 and not load_failed else "failed"
    writer.write({"type": "footer", "ts_ns": _MONO(), "status": status, "runs_completed": completed,
                  "runs_failed": failed, "self_hwm_kb": self_hwm_kb})
    summary = {"agent_version": AGENT_VERSION, "status": status, "runs_completed": completed,
               "runs_failed": failed, "events": writer.events, "samples": writer.samples}
    writer.close()
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh)
    print(json.dumps(summary))
    return 0 if status == "ok" else 1


