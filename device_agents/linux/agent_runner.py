"""The runner process (``edgekit_agent.py --runner-child``): loads the model into its runtime and runs the
repetitions, writing its events to stdout as JSON lines after each repetition (never inside a timed phase).

It dies with its supervisor, and the test hooks (``--fail-run K --fail-mode error|oom|crash|hang``) make
measured repetition K fail in a real way: an exception, a real MemoryError under an address-space limit,
an abort, a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback

from agent_loops import GenAILoop, OnnxLoop, PteLoop
from agent_sensors import pss_kb, status_kb

STDERR_TAIL_CHARS = 2000
LOOPS = {"onnxruntime-genai": GenAILoop, "onnxruntime": OnnxLoop, "executorch": PteLoop}
_MONO = time.monotonic_ns


def _stderr_tail():
    """The tail of this process's stderr file (the runner's stderr is a file in the run directory)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
        path = os.readlink("/proc/self/fd/2")
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - STDERR_TAIL_CHARS))
            return fh.read().decode("utf-8", "replace")
    return ""


def _fault(mode):
    """A real failure of the kind asked for (test hook)."""
    if mode == "crash":
        sys.stderr.write("edgekit-agent: aborting on request (--fail-mode crash)\n")
        sys.stderr.flush()
        os.abort()
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "oom":
        import resource

        import numpy as np

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/status") as fh:
            vm_kb = int(next(line.split()[1] for line in fh if line.startswith("VmSize:")))
        resource.setrlimit(resource.RLIMIT_AS, ((vm_kb + 64 * 1024) * 1024, hard))
        try:
            np.ones(1 << 32, dtype=np.float64)  # 32 GiB, past the limit just set
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    raise RuntimeError("injected runtime failure (--fail-mode error)")


def _die_with_parent():
    """The runner must not outlive its supervisor (a killed agent leaves nothing behind)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(137)

    threading.Thread(target=watch, name="edgekit-parent-watch", daemon=True).start()


def runner_child(args):
    """Load the model and run repetitions ``args.first_index ..``; events go to stdout as JSON lines."""
    _die_with_parent()
    # Events get a private copy of stdout; fd 1 itself joins stderr, so whatever a runtime prints cannot
    # corrupt the event stream the supervisor parses.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    max_positions = args.prompt_len + args.gen_len + 1

    def emit(record):
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()

    def event(name, run, warmup, ts_ns, **extra):
        record = {"type": "event", "name": name, "ts_ns": ts_ns, "run": run, "warmup": warmup}
        record.update(extra)
        return record

    load_start = _MONO()
    try:
        loop = LOOPS[args.runtime](args.model, args.threads, max(max_positions, args.max_context))
    except ImportError as exc:
        emit(event("error", -1, False, _MONO(), reason="missing-library", message=str(exc),
                   stderr_tail=_stderr_tail()))
        return 3
    except MemoryError as exc:
        emit(event("error", -1, False, _MONO(), reason="oom", message="loading: %s" % (exc or "MemoryError"),
                   stderr_tail=_stderr_tail()))
        return 3
    except Exception as exc:
        emit(event("error", -1, False, _MONO(), reason="runtime-error", message=f"loading: {exc}",
                   stderr_tail=traceback.format_exc()[-STDERR_TAIL_CHARS:] + _stderr_tail()))
        return 3
    load_end = _MONO()
    ids = args.prompt_ids
    if not args.no_load_events:
        emit(event("load_start", -1, False, load_start))
        emit(event("load_end", -1, False, load_end))
    elif args.warmup > 0:
        # A runner restarted after a crash warms up once, unrecorded, so the runs after it are not cold.
        loop.generate(ids, args.gen_len, lambda name, k: None, None)
    plan = [(i, True) for i in range(args.warmup)] + [(i, False) for i in range(args.runs)]
    for run, warmup in plan[args.first_index:]:
        buffer = []
        append = buffer.append
        mono = _MONO

        def stamp(name, k, run=run, warmup=warmup, append=append, mono=mono):
            append((name, mono(), k))

        hook = None
        if not warmup and run == args.fail_run:
            at = max(1, args.gen_len // 2)

            def hook(k, at=at):
                if k == at:
                    _fault(args.fail_mode)

        # run_start goes out at once so the supervisor knows which repetition a crash interrupted.
        emit(event("run_start", run, warmup, _MONO()))
        try:
            loop.generate(ids, args.gen_len, stamp, hook)
            # The runner's own memory at the end of the repetition (KV cache at its largest), read after
            # the last token and before run_end, so every repetition has a PSS figure however short it
            # is; the sampler thread reads PSS only rarely because smaps_rollup is costly.
            memory_ns = _MONO()
            rss, hwm = status_kb("self")
            memory = {"type": "sample", "ts_ns": memory_ns, "rss_kb": rss, "hwm_kb": hwm,
                      "pss_kb": pss_kb("self"), "power_uw": None, "energy_uj": None}
            end_ns = _MONO()
            failure = None
        except MemoryError as exc:
            failure = ("oom", str(exc) or "MemoryError", traceback.format_exc())
        except Exception as exc:
            failure = ("runtime-error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        lines = []
        for name, ts_ns, k in buffer:
            record = event(name, run, warmup, ts_ns)
            if k is not None:
                record["token_index"] = k
            lines.append(json.dumps(record, separators=(",", ":")))
        if failure is None:
            lines.append(json.dumps(memory, separators=(",", ":")))
        out.write("".join(line + "\n" for line in lines))
        if failure is None:
            emit(event("run_end", run, warmup, end_ns))
        else:
            reason, message, trace_text = failure
            emit(event("error", run, warmup, _MONO(), reason=reason, message=message,
                       stderr_tail=(trace_text + _stderr_tail())[-STDERR_TAIL_CHARS:]))
    _status_rss, hwm = status_kb("self")
    emit({"type": "runner_exit", "self_hwm_kb": hwm})
    return 0


