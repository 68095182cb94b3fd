#!/usr/bin/env python3
"""edgekit's on-device profiling agent for Linux boards and emulated devices (one file, stdlib only,
plus the runtime it drives: onnxruntime, or executorch's Python runtime).

It runs ON the device with the device's own Python:

    python3 edgekit_agent.py --artifact DIR --out DIR --prompt-len 50 --gen-len 50 --warmup 1 --runs 5 \
        --threads 2 --sample-ms 20 [--baseline-s 1] [--device-json FILE]

and writes ``DIR/trace.jsonl`` in the format of ``device_agents/TRACE.md`` plus ``DIR/summary.json``
(counts only). It records raw facts; it never computes a rate, an average or an energy.

Shape: this process is the supervisor. It writes the header, measures the idle baseline, then starts
the runner (this same file with ``--runner-child``) as a child process that loads the artifact and runs
the repetitions, and samples the child's memory, the CPU frequencies, the thermal zones and the power
source from a thread while it waits. Keeping the runner in its own process means the sampler never
competes with the measured loop for the interpreter lock, and a runner that crashes (a signal, a native
abort) costs only the repetition it was in: the supervisor records an ``error`` event with the runner's
stderr tail and starts a fresh runner for the remaining repetitions. The child writes its events as
JSON lines on its stdout after each repetition, never inside a timed phase.

Test hooks (``--fail-run K --fail-mode error|oom|crash|hang``) make measured repetition K fail in a
real way (an exception, a real MemoryError under an address-space limit, an abort, a hang).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback

AGENT_NAME = "edgekit-linux-agent"
AGENT_VERSION = "1.0.0"
SCHEMA_VERSION = 1
STDERR_TAIL_CHARS = 2000
_MONO = time.monotonic_ns


# ------------------------------------------------------------------------------------------------
# small readers (every sensor read opens the file anew: emulated sysfs files are replaced atomically)
# ------------------------------------------------------------------------------------------------
def _read_text(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path):
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _status_kb(pid):
    """(VmRSS, VmHWM) of ``pid`` in kB, None where unreadable."""
    data = _read_bytes(f"/proc/{pid}/status")
    return _field_kb(data, b"VmRSS:"), _field_kb(data, b"VmHWM:")


def _pss_kb(pid):
    return _field_kb(_read_bytes(f"/proc/{pid}/smaps_rollup"), b"Pss:")


def _read_bytes(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def _field_kb(data, key):
    """The number after ``key`` in a /proc ``Key:   123 kB`` listing, or None."""
    if not data:
        return None
    at = data.find(key)
    if at < 0:
        return None
    end = data.find(b"\n", at)
    try:
        return int(data[at + len(key):end if end >= 0 else None].split()[0])
    except (ValueError, IndexError):
        return None


def _cpu_index(path):
    name = path.split("/cpufreq/")[0].rsplit("/cpu", 1)[1]
    return int(name) if name.isdigit() else 1 << 30


def _thermal_zones():
    """[(label, temp path)]: label = the zone's type, made unique with the zone name when repeated."""
    zones = []
    seen = set()
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*"),
                       key=lambda p: int(p.rsplit("zone", 1)[1]) if p.rsplit("zone", 1)[1].isdigit() else 0):
        if not os.path.exists(zone + "/temp"):
            continue
        label = (_read_text(zone + "/type") or "").strip() or os.path.basename(zone)
        if label in seen:
            label = f"{label}:{os.path.basename(zone)}"
        seen.add(label)
        zones.append((label, zone + "/temp"))
    return zones


# ------------------------------------------------------------------------------------------------
# power sources: the first that exists wins (battery, hwmon, RAPL, NVML)
# ------------------------------------------------------------------------------------------------
class PowerSource:
    """Reads one power source; ``read()`` returns (power_uw, energy_uj, voltage_uv, current_ua)."""

    name = None
    detail = None
    energy_range_uj = None

    def read(self):
        return None, None, None, None


class BatterySource(PowerSource):
    name = "battery"

    def __init__(self, base):
        self.base = base
        self.detail = base
        self.status = (_read_text(base + "/status") or "").strip()
        current = _read_int(base + "/current_now") or 0
        # Positive power = consumed. AOSP reports negative current while discharging, some devices
        # positive: calibrate on the sign seen now against status. Charging/Full/unknown keeps AOSP's.
        self.sign = -1
        if self.status == "Discharging" and current > 0:
            self.sign = 1
        self.detail = f"{base} (status {self.status or 'unknown'}, current sign {self.sign:+d})"
        self._v, self._i = base + "/voltage_now", base + "/current_now"

    def read(self):
        voltage_uv, current_ua = _read_int(self._v), _read_int(self._i)
        if voltage_uv is None or current_ua is None:
            return None, None, voltage_uv, current_ua
        return self.sign * voltage_uv * current_ua // 1_000_000, None, voltage_uv, current_ua


class HwmonSource(PowerSource):
    name = "hwmon"

    def __init__(self, power_path, energy_path, detail, rail=None):
        self._power, self._energy, self._rail = power_path, energy_path, rail
        self.detail = detail

    def read(self):
        power_uw = _read_int(self._power) if self._power else None
        if self._rail is not None:  # INA3221: mV x mA = uW
            millivolts, milliamps = _read_int(self._rail[0]), _read_int(self._rail[1])
            if millivolts is not None and milliamps is not None:
                power_uw = millivolts * milliamps
        energy_uj = _read_int(self._energy) if self._energy else None
        return power_uw, energy_uj, None, None


class RaplSource(PowerSource):
    name = "rapl"

    def __init__(self, zone):
        self._energy = zone + "/energy_uj"
        self.energy_range_uj = _read_int(zone + "/max_energy_range_uj")
        label = (_read_text(zone + "/name") or "").strip()
        self.detail = "{} ({})".format(zone, label or "package")

    def read(self):
        return None, _read_int(self._energy), None, None


class NvmlSource(PowerSource):
    name = "nvml"

    def __init__(self, nvml):
        self._nvml = nvml
        self._handle = nvml.nvmlDeviceGetHandleByIndex(0)
        name = nvml.nvmlDeviceGetName(self._handle)
        self.detail = "nvml gpu 0 (%s)" % (name.decode() if isinstance(name, bytes) else name)

    def read(self):
        power_uw = energy_uj = None
        with contextlib.suppress(Exception):
            power_uw = int(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) * 1000  # mW
        with contextlib.suppress(Exception):
            energy_uj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) * 1000  # mJ
        return power_uw, energy_uj, None, None


def _hwmon_source():
    for hwmon in sorted(glob.glob("/sys/class/hwmon/hwmon*")):
        chip = (_read_text(hwmon + "/name") or "").strip()
        powers = sorted(p for p in glob.glob(hwmon + "/power*_input") if _read_int(p) is not None)
        energies = sorted(p for p in glob.glob(hwmon + "/energy*_input") if _read_int(p) is not None)
        if powers or energies:
            used = [os.path.basename(p) for p in (powers[:1] + energies[:1])]
            return HwmonSource(powers[0] if powers else None, energies[0] if energies else None,
                               "{} {} {}".format(os.path.basename(hwmon), chip, "+".join(used)))
        # Jetson INA3221: in_power*_input (mW) where present, else curr*_input (mA) x in*_input (mV).
        in_powers = sorted(p for p in glob.glob(hwmon + "/in_power*_input") if _read_int(p) is not None)
        if in_powers:
            return _MilliwattSource(in_powers[0], f"{os.path.basename(hwmon)} {chip} {os.path.basename(in_powers[0])}")
        for label_path in sorted(glob.glob(hwmon + "/in*_label")):
            channel = os.path.basename(label_path)[2:-6]
            volts, amps = f"{hwmon}/in{channel}_input", f"{hwmon}/curr{channel}_input"
            label = (_read_text(label_path) or "").strip()
            if label.upper().startswith("VDD_IN") and _read_int(volts) is not None \
                    and _read_int(amps) is not None:
                return HwmonSource(None, None, f"{os.path.basename(hwmon)} {chip} rail '{label}'",
                                   rail=(volts, amps))
    return None


class _MilliwattSource(HwmonSource):
    def __init__(self, path, detail):
        super().__init__(None, None, detail)
        self._mw = path

    def read(self):
        milliwatts = _read_int(self._mw)
        return (milliwatts * 1000 if milliwatts is not None else None), None, None, None


def detect_power_source():
    battery = "/sys/class/power_supply/battery"
    if _read_int(battery + "/voltage_now") is not None and _read_int(battery + "/current_now") is not None:
        return BatterySource(battery)
    hwmon = _hwmon_source()
    if hwmon is not None:
        return hwmon
    for zone in sorted(glob.glob("/sys/class/powercap/intel-rapl:*")):
        if zone.count(":") == 1 and _read_int(zone + "/energy_uj") is not None:
            return RaplSource(zone)
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return NvmlSource(pynvml)
    except Exception:  # absent, no driver, no GPU: no NVML power
        pass
    return PowerSource()


# ------------------------------------------------------------------------------------------------
# trace writing and sampling (supervisor side)
# ------------------------------------------------------------------------------------------------
class TraceWriter:
    """Appends one JSON object per line; thread-safe; flushed per line so a kill loses little."""

    def __init__(self, path):
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.events = 0
        self.samples = 0

    def write(self, record):
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            if record.get("type") == "event":
                self.events += 1
            elif record.get("type") == "sample":
                self.samples += 1

    def write_raw(self, line, kind):
        with self._lock:
            self._file.write(line if line.endswith("\n") else line + "\n")
            self._file.flush()
            if kind == "event":
                self.events += 1
            elif kind == "sample":
                self.samples += 1

    def close(self):
        with self._lock:
            self._file.close()


class Sampler:
    """Samples every ``period_s`` from a thread until stopped; the runner's pid may change."""

    def __init__(self, writer, period_s, power, pss_period_s):
        self.writer = writer
        self.period_s = period_s
        self.power = power
        self.pid = None
        # smaps_rollup walks every page of the runner under its mmap lock (0.5 ms for a small onnxruntime
        # process, 10+ ms for a 135M-parameter fp32 one), so PSS is read at most every pss_period_s and
        # never more often than keeps that read under 0.5 % of one core; other samples carry null.
        self.pss_period_ns = int(pss_period_s * 1e9)
        self._pss_gap_ns = self.pss_period_ns
        self._last_pss_ns = None
        self._freq = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"),
                            key=_cpu_index)
        self._zones = _thermal_zones()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgekit-sampler", daemon=True)

    def sample(self):
        ts_ns = _MONO()
        pid = self.pid
        rss = hwm = pss = None
        if pid is not None:
            rss, hwm = _status_kb(pid)
            if self._last_pss_ns is None or ts_ns - self._last_pss_ns >= self._pss_gap_ns:
                cpu_ns = time.thread_time_ns()
                pss = _pss_kb(pid)
                self._pss_gap_ns = max(self.pss_period_ns, 200 * (time.thread_time_ns() - cpu_ns))
                self._last_pss_ns = ts_ns
        power_uw, energy_uj, voltage_uv, current_ua = self.power.read()
        return {"type": "sample", "ts_ns": ts_ns, "rss_kb": rss, "hwm_kb": hwm, "pss_kb": pss,
                "cpu_freq_khz": [_read_int(p) for p in self._freq],
                "thermal_mc": {label: _read_int(path) for label, path in self._zones},
                "power_uw": power_uw, "energy_uj": energy_uj, "voltage_uv": voltage_uv,
                "current_ua": current_ua}

    def _loop(self):
        # The sampler yields to the runner: a lower priority for this thread only (Linux: per-thread nice).
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        next_ns = _MONO()
        period_ns = int(self.period_s * 1e9)
        while not self._stop.is_set():
            self.writer.write(self.sample())
            next_ns += period_ns
            delay_s = (next_ns - _MONO()) / 1e9
            if delay_s < 0:  # fell behind (a loaded device): resynchronise instead of bursting
                next_ns = _MONO()
                delay_s = 0
            self._stop.wait(delay_s)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)


def artifact_sha256(directory):
    """The artifact's content address, as edgekit's push computes it (sha256 of a sha256sum listing)."""
    lines = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(chunk)
            lines.append((os.path.relpath(path, directory).replace(os.sep, "/"), digest.hexdigest()))
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(lines))
    return hashlib.sha256(listing.encode()).hexdigest()


def device_facts(overrides):
    facts = {"name": platform.node(), "model": None, "soc": None, "cores": os.cpu_count(),
             "abi": platform.machine(), "ram_kb": None, "os": platform.platform(),
             "battery_pct": None, "charging": None, "temperature_mc": None}
    model = _read_text("/sys/firmware/devicetree/base/model") or _read_text(
        "/sys/devices/virtual/dmi/id/product_name")
    facts["model"] = model.replace("\0", "").strip() if model else None
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            facts["ram_kb"] = int(line.split()[1])
    battery = "/sys/class/power_supply/battery"
    capacity = _read_int(battery + "/capacity")
    if capacity is not None:
        facts["battery_pct"] = float(capacity)
        status = (_read_text(battery + "/status") or "").strip()
        facts["charging"] = status in ("Charging", "Full") if status else None
    zones = _thermal_zones()
    temps = [t for t in (_read_int(path) for _label, path in zones) if t is not None]
    facts["temperature_mc"] = max(temps) if temps else None
    facts.update({k: v for k, v in overrides.items() if v is not None})
    return facts


def prompt_ids(vocab_size, length):
    """Fixed, deterministic prompt ids spread over the vocabulary, skipping the first ids (specials)."""
    low = 3 if vocab_size > 16 else 0
    span = max(1, vocab_size - low)
    return [low + (i * 7919 + 13) % span for i in range(length)]


# ------------------------------------------------------------------------------------------------
# runners (child side): the only code inside timed phases
# ------------------------------------------------------------------------------------------------
class OnnxLoop:
    """Prefill + greedy decode through onnxruntime with past/present key-values; buffers reused."""

    kind = "python-onnxruntime"

    def __init__(self, path, threads, max_positions):
        import numpy as np
        import onnxruntime as ort

        self.np = np
        self.version = ort.__version__
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted(n for n in inputs if n.startswith("past_key_values."))
        self.output_names = ["logits"] + [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.has_mask = "attention_mask" in inputs
        self.has_positions = "position_ids" in inputs
        self.empty_past = {n: np.zeros((1, int(inputs[n].shape[1]), 0, int(inputs[n].shape[3])),
                                       dtype=np.float32) for n in self.past_names}
        self.mask = np.ones((1, max_positions), dtype=np.int64)
        self.positions = np.arange(max_positions, dtype=np.int64)[None, :]
        self.one_id = np.zeros((1, 1), dtype=np.int64)

    def generate(self, ids, gen_len, stamp, hook):
        """Prefill ``ids`` then greedy-decode to ``gen_len`` tokens; ``stamp(name, k)`` records an event (see
        TRACE.md). Returns the tokens."""
        np = self.np
        n = len(ids)
        run = self.session.run
        names = self.output_names
        past_names = self.past_names
        feed = dict(self.empty_past)
        feed["input_ids"] = np.asarray([ids], dtype=np.int64)
        if self.has_mask:
            feed["attention_mask"] = self.mask[:, :n]
        if self.has_positions:
            feed["position_ids"] = self.positions[:, :n]
        stamp("prefill_start", None)
        out = run(names, feed)
        stamp("prefill_end", None)
        token = int(out[0][0, -1].argmax())
        tokens = [token]
        pos = n
        one = self.one_id
        feed["input_ids"] = one
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            one[0, 0] = token
            for i, name in enumerate(past_names):
                feed[name] = out[i + 1]
            if self.has_mask:
                feed["attention_mask"] = self.mask[:, :pos + 1]
            if self.has_positions:
                feed["position_ids"] = self.positions[:, pos:pos + 1]
            out = run(names, feed)
            stamp("decode_step", k)
            token = int(out[0][0, -1].argmax())
            tokens.append(token)
            pos += 1
        return tokens


class PteLoop:
    """Prefill + greedy decode through executorch's Python runtime (static KV cache in the program)."""

    kind = "python-executorch"

    def __init__(self, path, threads, max_positions):
        import torch
        from executorch.runtime import Runtime

        self.torch = torch
        try:
            from importlib.metadata import version

            self.version = version("executorch")
        except Exception:
            self.version = None
        with contextlib.suppress(Exception):
            torch.set_num_threads(threads)
        # XNNPACK runs on ExecuTorch's own thread pool (one thread per core by default), not torch's:
        # size it as asked, as the native runner does, or --threads would not hold for delegated work.
        with contextlib.suppress(Exception):
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        self.method = Runtime.get().load_program(path).load_method("forward")
        self.positions = [torch.tensor([p], dtype=torch.long) for p in range(max_positions)]
        # A decode step does what the native runner's does: write the token and the position into the
        # input tensors, execute, argmax the logits in place. Through the Python binding's call the step
        # also converts both inputs and clones the output, and between two steps the interpreter runs on
        # caches the step has just flushed: that cost 2-4% of a 10 ms step on a 2-core x86 VM (measured
        # time-sliced against a loop that times execute() alone), this path ~1%. Inputs the program does
        # not plan are bound by reference (ExecuTorch shares their data), so they are set once and then
        # written through numpy views; a planned output stays at its offset in the planned memory, so it
        # is fetched once, uncloned, and read in place. Otherwise, or on another binding, each step goes
        # through the call.
        raw = getattr(self.method, "_method", None)
        self.raw = raw if all(hasattr(raw, name) for name in ("set_inputs", "execute", "get_outputs")) else None
        meta = self.method.metadata
        self.inputs_by_reference = not any(meta.input_tensor_meta(i).is_memory_planned()
                                           for i in range(meta.num_inputs()))
        self.output_in_place = meta.output_tensor_meta(0).is_memory_planned()
        self.one_id = torch.zeros((1, 1), dtype=torch.long)
        self.position = torch.zeros(1, dtype=torch.long)

    def generate(self, ids, gen_len, stamp, hook):
        """Prefill ``ids``, then greedy-decode to ``gen_len`` tokens; returns the tokens."""
        torch = self.torch
        n = len(ids)
        prompt = torch.tensor([ids], dtype=torch.long)
        prompt_positions = torch.arange(n, dtype=torch.long)
        stamp("prefill_start", None)
        (logits,) = self.method.execute([prompt, prompt_positions])
        stamp("prefill_end", None)
        tokens = [int(logits.numpy()[0, -1].argmax())]
        if self.raw is None:
            self._decode_by_call(tokens, n, gen_len, stamp, hook)
        else:
            self._decode_in_place(tokens, n, gen_len, stamp, hook)
        return tokens

    def _decode_by_call(self, tokens, n, gen_len, stamp, hook):
        execute, one, positions = self.method.execute, self.one_id, self.positions
        one_np = one.numpy()
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            one_np[0, 0] = tokens[-1]
            (logits,) = execute([one, positions[n + k - 1]])
            stamp("decode_step", k)
            tokens.append(int(logits.numpy()[0, -1].argmax()))

    def _decode_in_place(self, tokens, n, gen_len, stamp, hook):
        raw, inputs = self.raw, [self.one_id, self.position]
        one_np, position_np = self.one_id.numpy(), self.position.numpy()
        set_each_step = not self.inputs_by_reference
        logits_np = None
        raw.set_inputs(inputs)
        for k in range(1, gen_len):
            if hook is not None:
                hook(k)
            one_np[0, 0] = tokens[-1]
            position_np[0] = n + k - 1
            if set_each_step:
                raw.set_inputs(inputs)
            raw.execute()
            stamp("decode_step", k)
            if logits_np is None or not self.output_in_place:
                logits_np = raw.get_outputs(False)[0].numpy()
            tokens.append(int(logits_np[0, -1].argmax()))


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
    """Load the artifact and run repetitions ``args.first_run ..``; events go to stdout as JSON lines."""
    _die_with_parent()
    # Events get a private copy of stdout; fd 1 itself joins stderr, so whatever a runtime prints cannot
    # corrupt the event stream the supervisor parses.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    with open(os.path.join(args.artifact, "manifest.json")) as fh:
        manifest = json.load(fh)
    path = os.path.join(args.artifact, manifest["artifact"])
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
        if manifest.get("runtime") == "onnxruntime":
            loop = OnnxLoop(path, args.threads, max_positions)
        elif manifest.get("runtime") == "executorch":
            loop = PteLoop(path, args.threads, max_positions)
        else:
            raise RuntimeError("unknown runtime {!r} in the manifest".format(manifest.get("runtime")))
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
    ids = prompt_ids(int(manifest["model"]["vocab_size"]), args.prompt_len)
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
            rss, hwm = _status_kb("self")
            memory = {"type": "sample", "ts_ns": memory_ns, "rss_kb": rss, "hwm_kb": hwm,
                      "pss_kb": _pss_kb("self"), "power_uw": None, "energy_uj": None}
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
    _status_rss, hwm = _status_kb("self")
    emit({"type": "runner_exit", "self_hwm_kb": hwm})
    return 0


# ------------------------------------------------------------------------------------------------
# supervisor
# ------------------------------------------------------------------------------------------------
def _child_argv(args, first_index, load_events):
    argv = [sys.executable, os.path.abspath(__file__), "--runner-child", "--artifact", args.artifact,
            "--out", args.out, "--prompt-len", str(args.prompt_len), "--gen-len", str(args.gen_len),
            "--warmup", str(args.warmup), "--runs", str(args.runs), "--threads", str(args.threads),
            "--sample-ms", str(args.sample_ms), "--first-index", str(first_index)]
    if args.fail_run is not None:
        argv += ["--fail-run", str(args.fail_run), "--fail-mode", args.fail_mode]
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
    with open(os.path.join(args.artifact, "manifest.json")) as fh:
        manifest = json.load(fh)
    overrides = {}
    if args.device_json:
        with open(args.device_json) as fh:
            overrides = json.load(fh)
    power = detect_power_source()
    writer = TraceWriter(os.path.join(args.out, "trace.jsonl"))
    stderr_path = os.path.join(args.out, "runner.stderr")
    runtime = manifest.get("runtime")
    header = {
        "type": "header", "schema_version": SCHEMA_VERSION,
        "agent": {"name": AGENT_NAME, "version": AGENT_VERSION},
        "runner": {"kind": {"onnxruntime": "python-onnxruntime", "executorch": "python-executorch"}.get(
            runtime, "python-" + str(runtime)), "version": None},
        "device": device_facts(overrides),
        "artifact": {"sha256": args.artifact_sha256 or artifact_sha256(args.artifact),
                     "model_id": manifest.get("model", {}).get("id"),
                     "recipe": (manifest.get("recipe") or {}).get("name"),
                     "runtime": runtime, "file": manifest.get("artifact")},
        "workload": {"prompt_len": args.prompt_len, "gen_len": args.gen_len, "warmup": args.warmup,
                     "runs": args.runs, "threads": args.threads, "sample_ms": args.sample_ms,
                     "prompt_ids": prompt_ids(int(manifest["model"]["vocab_size"]), args.prompt_len)},
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
    time.sleep(max(0.0, args.baseline_s))
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


def parse_args(argv):
    parser = argparse.ArgumentParser(description="edgekit on-device profiling agent (Linux)")
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    parser.add_argument("--artifact", required=True, help="artifact directory (manifest.json + model)")
    parser.add_argument("--out", required=True, help="run directory for trace.jsonl and summary.json")
    parser.add_argument("--prompt-len", type=int, default=50)
    parser.add_argument("--gen-len", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample-ms", type=int, default=20)
    parser.add_argument("--baseline-s", type=float, default=1.0)
    parser.add_argument("--pss-ms", type=int, default=250, help="read PSS at most this often (0: every sample)")
    parser.add_argument("--device-json", default=None, help="device facts from the host (name, model...)")
    parser.add_argument("--artifact-sha256", default=None, help="content address (computed if absent)")
    parser.add_argument("--no-sampler", action="store_true", help="no samples (overhead benchmarks)")
    parser.add_argument("--fail-run", type=int, default=None, help="test hook: fail measured run K")
    parser.add_argument("--fail-mode", choices=("error", "oom", "crash", "hang"), default="error")
    parser.add_argument("--runner-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-load-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 10 <= args.sample_ms <= 100:
        parser.error(f"--sample-ms must be within 10..100, got {args.sample_ms}")
    if args.prompt_len < 1 or args.gen_len < 1 or args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--prompt-len, --gen-len, --runs and --threads must be >= 1, --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.runner_child:
        return runner_child(args)
    return supervise(args)


if __name__ == "__main__":
    sys.exit(main())
