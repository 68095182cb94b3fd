#!/system/bin/sh
# edgekit Android agent: runs the native runner (android_harness/) on a phone and writes trace.jsonl
# in the format of device_agents/TRACE.md.
#
# POSIX sh only, for Android's mksh with toybox (and busybox sh): no arrays, no [[ ]], no ${x//},
# no `date +%N`, no awk. Arithmetic stays within 32 bits (mksh's integers). The sampling loop uses
# shell builtins (read, echo, kill -0) and forks nothing (where the shell's `read -t` cannot pause it,
# a `sleep` per tick). While the runner runs, edgekit_sampler (built beside it) samples instead, for a
# sixth of the CPU time a tick of this loop costs; this loop is the fallback (--sampler sh).
#
# It records raw facts only and never computes a metric. Clocks: the runner and edgekit_sampler stamp
# with CLOCK_MONOTONIC (ts_ns); this script stamps its samples with /proc/uptime (CLOCK_BOOTTIME,
# ts_boot_ns) and gets monotonic timestamps for its own events by asking the runner
# (`edgekit_runner --clock-sync`, which also leaves a clock_sync event in the trace).
#
# usage: sh agent.sh --runner PATH --lib-dir DIR --model FILE --runtime R --model-id ID --recipe NAME
#                    --artifact-sha256 SHA --out DIR [--device-json FILE] --prompt-len P --prompt-ids FILE
#                    --gen-len G --warmup W --runs R --threads T --sample-ms S [--pss-ms 100] [--baseline-ms 1000]
#                    [--timeout-s N] [--max-context N]
# The flags after --lib-dir are the ones the Python agent takes, with the same names: the host builds both
# command lines from one Workload (edgekit/workload.py). --sampler: who samples while the runner runs,
# `native` (edgekit_sampler beside the runner, the default where it is there and starts) or `sh` (this
# script's own loop, as it samples the idle baseline).
# Exit status: 0 ok; 1 a repetition failed or the runner died; 2 bad usage; 3 the runner could not
# start (missing shared library) or could not load the model.

AGENT_NAME=edgekit-android-agent
AGENT_VERSION=2.1.0

usage() {
  echo "agent.sh: $1" >&2
  echo "usage: sh agent.sh --runner PATH --lib-dir DIR --model FILE --runtime R --model-id ID --recipe NAME --artifact-sha256 SHA --out DIR [--device-json FILE] --prompt-len P --prompt-ids FILE --gen-len G --warmup W --runs R --threads T --sample-ms S [--pss-ms 100] [--baseline-ms 1000] [--timeout-s N] [--max-context N] [--sampler native|sh]" >&2
  exit 2
}

RUNNER= LIB_DIR= MODEL= RUNTIME= OUT= P= G= W= R= T= S= BASELINE_MS=1000 DEVICE_JSON= PROMPT_IDS=
ARTIFACT_SHA= MODEL_ID= RECIPE= TIMEOUT_S=0 MAX_CONTEXT=0 PSS_MS=100 SAMPLER=native
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage "option $1 needs a value"
  case "$1" in
    --runner) RUNNER=$2 ;;
    --lib-dir) LIB_DIR=$2 ;;
    --model) MODEL=$2 ;;
    --runtime) RUNTIME=$2 ;;
    --out) OUT=$2 ;;
    --prompt-len) P=$2 ;;
    --gen-len) G=$2 ;;
    --warmup) W=$2 ;;
    --runs) R=$2 ;;
    --threads) T=$2 ;;
    --sample-ms) S=$2 ;;
    --pss-ms) PSS_MS=$2 ;;
    --baseline-ms) BASELINE_MS=$2 ;;
    --device-json) DEVICE_JSON=$2 ;;
    --prompt-ids) PROMPT_IDS=$2 ;;
    --artifact-sha256) ARTIFACT_SHA=$2 ;;
    --model-id) MODEL_ID=$2 ;;
    --recipe) RECIPE=$2 ;;
    --timeout-s) TIMEOUT_S=$2 ;;
    --max-context) MAX_CONTEXT=$2 ;;
    --sampler) SAMPLER=$2 ;;
    *) usage "unknown option $1" ;;
  esac
  shift 2
done

is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
for pair in "runner:$RUNNER" "lib-dir:$LIB_DIR" "model:$MODEL" "runtime:$RUNTIME" "model-id:$MODEL_ID" \
            "recipe:$RECIPE" "artifact-sha256:$ARTIFACT_SHA" "out:$OUT" "prompt-ids:$PROMPT_IDS"; do
  [ -n "${pair#*:}" ] || usage "--${pair%%:*} is required"
done
for pair in "prompt-len:$P" "gen-len:$G" "warmup:$W" "runs:$R" "threads:$T" "sample-ms:$S" "pss-ms:$PSS_MS" \
            "baseline-ms:$BASELINE_MS" "timeout-s:$TIMEOUT_S" "max-context:$MAX_CONTEXT"; do
  is_uint "${pair#*:}" || usage "--${pair%%:*} must be a non-negative integer, got '${pair#*:}'"
done
[ "$S" -ge 10 ] && [ "$S" -le 100 ] || usage "--sample-ms must be 10..100, got $S"
[ -f "$MODEL" ] || usage "model '$MODEL' does not exist"
[ -x "$RUNNER" ] || usage "runner '$RUNNER' is not an executable file"
[ -d "$LIB_DIR" ] || usage "lib dir '$LIB_DIR' does not exist"
[ -f "$PROMPT_IDS" ] || usage "prompt ids file '$PROMPT_IDS' does not exist"
case "$RUNTIME" in *[!a-z0-9._-]*) usage "--runtime must be a runtime name, got '$RUNTIME'" ;; esac
case "$ARTIFACT_SHA" in *[!0-9a-f]*) usage "--artifact-sha256 must be a hex digest" ;; esac
case "$SAMPLER" in native|sh) ;; *) usage "--sampler must be native or sh, got '$SAMPLER'" ;; esac

mkdir -p "$OUT" || usage "cannot create --out '$OUT'"
TRACE="$OUT/trace.jsonl"
BODY="$OUT/.body.jsonl"          # this script's events and samples
RUNNER_OUT="$OUT/runner.jsonl"   # the runner's own lines (kept for inspection)
RUNNER_ERR="$OUT/runner.stderr"
SAMPLES="$OUT/.samples.jsonl"    # edgekit_sampler's samples of the run
rm -f "$TRACE" "$BODY" "$RUNNER_OUT" "$RUNNER_ERR" "$SAMPLES"
: > "$BODY"
# Only the runner gets the library path: system tools keep their own libraries.
RUNNER_LD_PATH="$LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# -- small helpers --------------------------------------------------------------------------------------
# Lines that may hold a backslash go through printf: mksh's echo interprets escapes.

# JSON string from stdin (ASCII kept, control and non-ASCII bytes dropped, lines joined with \n).
json_text() {
  _out=
  while IFS= read -r _line || [ -n "$_line" ]; do
    _out="$_out${_out:+\\n}$_line"
  done <<EOF_JSON_TEXT
$(tr -d '\000-\011\013-\037\200-\377' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
EOF_JSON_TEXT
  printf '%s\n' "\"$_out\""
}
json_quote() { printf '%s' "$1" | json_text; }

# The first line of a file, or empty.
first_line() { _v=; [ -r "$1" ] && read -r _v 2>/dev/null < "$1"; echo "$_v"; }

# uptime "12345.67" -> ts_boot_ns in $BOOT_NS (10 ms resolution)
boot_ns() {
  read -r _up _idle < /proc/uptime
  _s=${_up%.*}; _f=${_up#*.}
  case "$_f" in ?) _f="${_f}0" ;; esac
  BOOT_CS="$_s${_f%"${_f#??}"}"   # in 10 ms units
  # /proc/uptime truncates to 10 ms: stamp the middle of that step, so sample times are unbiased.
  BOOT_NS="${BOOT_CS}5000000"
}

# Runs `runner --clock-sync`: appends its clock_sync event to the body, sets NOW_NS (monotonic).
clock_now() {
  _sync=$(LD_LIBRARY_PATH="$RUNNER_LD_PATH" "$RUNNER" --clock-sync 2>>"$RUNNER_ERR") || return 1
  echo "$_sync" >> "$BODY"
  _t=${_sync#*\"ts_ns\":}; NOW_NS=${_t%%,*}
  is_uint "$NOW_NS"
}

event() {  # name ts_ns [extra members starting with a comma]
  echo "{\"type\":\"event\",\"name\":\"$1\",\"ts_ns\":$2,\"run\":-1,\"warmup\":false$3}" >> "$BODY"
}

# The dynamic loader's complaint about a missing library, as the library's name (empty if none).
# bionic: CANNOT LINK EXECUTABLE "x": library "libfoo.so" not found
# glibc:  x: error while loading shared libraries: libfoo.so: cannot open shared object file
missing_library() {
  sed -n -e 's/.*library "\([^"]*\)" not found.*/\1/p' \
         -e 's/.*error while loading shared libraries: \([^:]*\):.*/\1/p' "$1" | head -n 1
}

# -- device facts ---------------------------------------------------------------------------------------
prop() { _p=$(getprop "$1" 2>/dev/null); echo "${_p:-$2}"; }
BATT=/sys/class/power_supply/battery
count_cpus() {  # "0-7" (or "0") in cpu/present; anything else (a list, garbage): count the cpu directories
  _r=$(first_line /sys/devices/system/cpu/present)
  _lo=${_r%%-*}; _hi=${_r#*-}
  if is_uint "$_lo" && is_uint "$_hi"; then echo $((_hi - _lo + 1)); return; fi
  _n=0; for _c in /sys/devices/system/cpu/cpu[0-9]*; do [ -d "$_c" ] && _n=$((_n + 1)); done; echo "$_n"
}
json_num() { is_uint "${1#-}" && [ -n "$1" ] && echo "$1" || echo null; }
# The same check without a fork, for the sampling loop: sets $_n to $1 when it is an integer, else null.
# Every number a sample writes is read from sysfs or /proc, which a kernel or vendor may fill with anything.
num() { case "${1#-}" in ''|*[!0-9]*) _n=null ;; *) _n=$1 ;; esac; }

if [ -n "$DEVICE_JSON" ] && [ -r "$DEVICE_JSON" ]; then
  DEVICE=$(tr -d '\n' < "$DEVICE_JSON")
else
  ram_kb=null
  while read -r _k _v _u; do [ "$_k" = "MemTotal:" ] && is_uint "$_v" && ram_kb=$_v && break; done < /proc/meminfo
  status=$(first_line "$BATT/status")
  case "$status" in Charging|Full) charging=true ;; Discharging|"Not charging") charging=false ;; *) charging=null ;; esac
  temp=$(first_line "$BATT/temp")   # tenths of a degree C
  if is_uint "${temp#-}" && [ -n "$temp" ]; then temp_mc=$((temp * 100)); else temp_mc=$(json_num "$(first_line /sys/class/thermal/thermal_zone0/temp)"); fi
  DEVICE="{\"name\":$(json_quote "$(prop persist.sys.device_name "$(prop ro.product.device unknown)")"),\
\"model\":$(json_quote "$(prop ro.product.model unknown)"),\"soc\":$(json_quote "$(prop ro.soc.model "$(prop ro.board.platform unknown)")"),\
\"cores\":$(count_cpus),\"abi\":$(json_quote "$(prop ro.product.cpu.abi unknown)"),\"ram_kb\":$ram_kb,\
\"os\":$(json_quote "Android $(prop ro.build.version.release "?") (SDK $(prop ro.build.version.sdk "?"))"),\
\"battery_pct\":$(json_num "$(first_line "$BATT/capacity")"),\"charging\":$charging,\"temperature_mc\":$temp_mc}"
fi

# Power: the battery gauge. The sign of current_now differs between devices; calibrate it against
# status while discharging (consumption must come out positive). Unknown while charging: AOSP's
# convention (negative = discharging) is assumed and the header says charging, so the host does not
# use the energy.
POWER_SOURCE=null POWER_DETAIL=null CURRENT_SIGN=-1
if [ -r "$BATT/voltage_now" ] && [ -r "$BATT/current_now" ]; then
  POWER_SOURCE='"battery"'
  _cur=$(first_line "$BATT/current_now")
  if [ "$(first_line "$BATT/status")" = "Discharging" ] && is_uint "$_cur"; then CURRENT_SIGN=1; fi
  POWER_DETAIL=$(json_quote "$BATT voltage_now x current_now, current sign $CURRENT_SIGN while discharging ($(first_line "$BATT/status"))")
fi

# -- samples --------------------------------------------------------------------------------------------
# Thermal zones as "label=temp-path" words, labels read once (a zone's type does not change).
THERMAL_ZONES=
for _z in /sys/class/thermal/thermal_zone[0-9]*; do
  [ -r "$_z/temp" ] || continue
  read -r _t 2>/dev/null < "$_z/type" || _t=${_z##*/}
  case "$_t" in ''|*[!A-Za-z0-9_.:-]*) _t=${_z##*/} ;; esac  # a word without quotes, spaces or '='
  THERMAL_ZONES="$THERMAL_ZONES $_t=$_z/temp"
done
FREQ_FILES=
for _f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq; do [ -r "$_f" ] && FREQ_FILES="$FREQ_FILES $_f"; done

# Memory every tick from /proc/PID/statm (one short line: the resident pages); the peak (VmHWM, from
# /proc/PID/status, read a byte at a time by the shell) and PSS (/proc/PID/smaps_rollup walks every page
# of the runner under its mmap lock: 1-3 ms for a 135M-parameter model) every tick while the runner is
# small (under PSS_CHEAP_KB resident, a read well under 0.3 ms), else at most every PSS_MS (--pss-ms, the
# workload's pss_ms the host passes to both agents) and, as the Python agent does, never more often than
# keeps that read under 0.5% of a core: the next one comes 200x its CPU time later. That time is the
# shell's own from /proc/self/schedstat, which the kernel brings up to date for a running task only at a tick
# or when it sleeps: read bare, most reads look free (a 48 MB runner was read every 2-4 ticks where the
# settled cost spaces it 10 apart), so the shell sleeps a millisecond (settle) before each of the two reads
# and their difference is the read's CPU time. The samples between carry null; the runner itself reads its
# PSS once at the end of every repetition.
# What each tick costs is taken from the runner's cores when it runs as many threads as the device has.
PSS_CHEAP_KB=32768
PSS_EVERY=$(( (PSS_MS + S - 1) / S )); _pss_due=0; _pss_cost_ns=0

# This shell's CPU time in ns modulo 1e9 into CPU_NS (the last nine digits of schedstat's first field keep
# mksh's 32-bit arithmetic); empty where the kernel has no schedstat.
cpu_ns() {
  CPU_NS=
  read -r _run _rest 2>/dev/null < /proc/$$/schedstat || return 0
  is_uint "$_run" || return 0
  _run=000000000$_run
  _run=${_run#"${_run%?????????}"}
  CPU_NS=$((1$_run - 1000000000))
}
# The number after key $2 ("VmHWM:", "Pss:") in the "Key:   123 kB" listing $1 into FIELD; empty where the
# file or the key is missing or the number is not one.
proc_field() {
  FIELD=
  while read -r _k _v _u; do [ "$_k" = "$2" ] && is_uint "$_v" && FIELD=$_v && break; done 2>/dev/null < "$1"
}
proc_field /proc/$$/smaps KernelPageSize:
PAGE_KB=${FIELD:-4}

# PSS of process $1 into pss (null where it cannot be read).
read_pss() { proc_field "/proc/$1/smaps_rollup" Pss:; pss=${FIELD:-null}; }

# One sample line for process $1 (empty: no process, memory fields null) into the body.
sample() {
  rss=null hwm=null pss=null
  # A runner that has exited but is not reaped yet (a zombie) still answers kill -0; its statm is all zeros.
  if [ -n "$1" ] && read -r _size _res _rest 2>/dev/null < "/proc/$1/statm" && is_uint "$_res" &&
     is_uint "$_size" && [ "$_size" -gt 0 ]; then
    rss=$((_res * PAGE_KB))
    _pss_due=$((_pss_due - 1))
    if [ "$_pss_due" -le 0 ] || [ "$rss" -lt "$PSS_CHEAP_KB" ]; then
      proc_field "/proc/$1/status" VmHWM:; hwm=${FIELD:-null}
      if [ "$rss" -lt "$PSS_CHEAP_KB" ]; then
        read_pss "$1"
      else
        settle; cpu_ns; _c0=$CPU_NS
        read_pss "$1"
        settle; cpu_ns
        if [ -n "$_c0" ] && [ -n "$CPU_NS" ]; then
          _pss_cost_ns=$(( (CPU_NS - _c0 + 1000000000) % 1000000000 ))
          [ "$_pss_cost_ns" -gt 100000000 ] && _pss_cost_ns=100000000   # 0.1 s: 20 s apart at most
        fi
        _pss_due=$(( (_pss_cost_ns / 5000 + S - 1) / S ))   # 200 x cost, in ms (ns / 5000), in ticks
      fi
      [ "$_pss_due" -lt "$PSS_EVERY" ] && _pss_due=$PSS_EVERY
    fi
  fi
  freqs=
  for _f in $FREQ_FILES; do read -r _v 2>/dev/null < "$_f" || _v=; num "$_v"; freqs="$freqs${freqs:+,}$_n"; done
  thermal=
  for _z in $THERMAL_ZONES; do
    read -r _v 2>/dev/null < "${_z#*=}" || _v=
    num "$_v"; thermal="$thermal${thermal:+,}\"${_z%%=*}\":$_n"
  done
  power=null volt=null cur=null
  if [ "$POWER_SOURCE" != null ]; then
    read -r volt 2>/dev/null < "$BATT/voltage_now" || volt=
    num "$volt"; volt=$_n
    read -r cur 2>/dev/null < "$BATT/current_now" || cur=
    num "$cur"; cur=$_n
    if is_uint "$volt" && is_uint "${cur#-}"; then
      # mV x uA / 1000 = uW, split so every product fits 32 bits
      _mv=$((volt / 1000)); _c=$((cur * CURRENT_SIGN)); _neg=
      [ "$_c" -lt 0 ] && _neg=- && _c=$((-_c))
      power=$_neg$((_mv * (_c / 1000) + _mv * (_c % 1000) / 1000))
    fi
  fi
  boot_ns
  echo "{\"type\":\"sample\",\"ts_boot_ns\":$BOOT_NS,\"rss_kb\":$rss,\"hwm_kb\":$hwm,\"pss_kb\":$pss,\"cpu_freq_khz\":[$freqs],\"thermal_mc\":{$thermal},\"power_uw\":$power,\"energy_uj\":null,\"voltage_uv\":$volt,\"current_ua\":$cur}" >> "$BODY"
}

if [ "$S" -lt 100 ]; then SLEEP="0.0$S"; else SLEEP="0.1"; fi
case "$S" in ?) SLEEP="0.00$S" ;; esac

# The pause between samples: `read -t` on a FIFO nobody writes to where the shell's read takes a fractional
# timeout (mksh, busybox ash, bash; checked here by timing five pauses), else `sleep`, a fork and exec per
# tick (about 1 ms of CPU, taken from the runner's cores).
nap() { sleep "$SLEEP"; }
settle() { sleep 0.001; }   # a sleep brings this shell's schedstat up to date (see sample)
watch_nap() { sleep 0.1; }   # the pause of the loop that only watches the runner (edgekit_sampler samples)
if mkfifo "$OUT/.nap" 2>/dev/null; then
  exec 3<>"$OUT/.nap"
  rm -f "$OUT/.nap"
  boot_ns; _t0=$BOOT_CS
  for _i in 1 2 3 4 5; do read -t 0.02 _x <&3; done 2>/dev/null
  boot_ns
  if [ $((BOOT_CS - _t0)) -ge 8 ] && [ $((BOOT_CS - _t0)) -le 50 ]; then
    nap() { read -t "$SLEEP" _x <&3; }
    settle() { read -t 0.001 _x <&3; }
    watch_nap() { read -t 0.1 _x <&3; }
  fi
fi

# edgekit_sampler beside the runner; this shell samples where it is missing or cannot start.
SAMPLER_BIN="${RUNNER%/*}/edgekit_sampler"
if [ "$SAMPLER" = native ] && ! { [ -x "$SAMPLER_BIN" ] && "$SAMPLER_BIN" --version >/dev/null 2>&1; }; then
  SAMPLER=sh
fi

# -- trace assembly -------------------------------------------------------------------------------------
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
RUNNER_VERSION=$(LD_LIBRARY_PATH="$RUNNER_LD_PATH" "$RUNNER" --version 2>/dev/null)
PROMPT_JSON=null

write_trace() {  # status runs_completed runs_failed self_hwm_kb footer_ts_ns (no status: no footer, a partial trace)
  {
    printf '%s\n' "{\"type\":\"header\",\"schema_version\":1,\"agent\":{\"name\":\"$AGENT_NAME\",\"version\":\"$AGENT_VERSION\",\"sampler\":\"$SAMPLER\"},\
\"runner\":{\"kind\":\"native-$RUNTIME\",\"version\":$(json_quote "${RUNNER_VERSION:-unknown}")},\"device\":$DEVICE,\
\"artifact\":{\"sha256\":$(json_quote "$ARTIFACT_SHA"),\"model_id\":$(json_quote "${MODEL_ID:-unknown}"),\
\"recipe\":$(json_quote "${RECIPE:-unknown}"),\"runtime\":\"$RUNTIME\",\"file\":$(json_quote "${MODEL##*/}")},\
\"workload\":{\"prompt_len\":$P,\"gen_len\":$G,\"warmup\":$W,\"runs\":$R,\"threads\":$T,\"sample_ms\":$S,\"prompt_ids\":$PROMPT_JSON},\
\"power_source\":$POWER_SOURCE,\"power_source_detail\":$POWER_DETAIL,\"started_at\":\"$STARTED_AT\"}"
    cat "$BODY"
    [ -f "$SAMPLES" ] && grep '}$' "$SAMPLES"   # whole lines only
    # the runner's events and its end-of-repetition memory samples; its runner_info / tokens /
    # runner_footer lines stay in runner.jsonl
    [ -f "$RUNNER_OUT" ] && grep -e '"type":"event"' -e '"type":"sample"' "$RUNNER_OUT"
    if [ -n "$1" ]; then echo "{\"type\":\"footer\",\"ts_ns\":$5,\"status\":\"$1\",\"runs_completed\":$2,\"runs_failed\":$3,\"self_hwm_kb\":$4}"; fi
  } > "$TRACE.tmp" && mv "$TRACE.tmp" "$TRACE"
}

# An error the runner could not write itself; run/warmup of the repetition it interrupted, if any.
agent_error() {  # ts_ns reason message
  _last=$( [ -f "$RUNNER_OUT" ] && grep '"name":"run_start"' "$RUNNER_OUT" | tail -n 1)
  _run=-1 _warm=false
  if [ -n "$_last" ] && [ -z "$(grep -F -e "$(echo "$_last" | sed -n 's/.*\("run":[0-9]*,"warmup":[a-z]*\).*/\1/p')" "$RUNNER_OUT" | grep -e '"run_end"' -e '"error"')" ]; then
    _t=${_last#*\"run\":}; _run=${_t%%,*}
    _t=${_last#*\"warmup\":}; _warm=${_t%%\}*}; _warm=${_warm%%,*}
  fi
  _tail=$(tail -n 8 "$RUNNER_ERR" 2>/dev/null | json_text)
  printf '%s\n' "{\"type\":\"event\",\"name\":\"error\",\"ts_ns\":$1,\"run\":$_run,\"warmup\":$_warm,\"reason\":\"$2\",\"message\":$(json_quote "$3"),\"stderr_tail\":$_tail}" >> "$BODY"
}

# -- 1. can the runner start at all? (shared libraries) -------------------------------------------------
if ! clock_now; then
  lib=$(missing_library "$RUNNER_ERR")
  boot_ns
  # No process could read CLOCK_MONOTONIC: these two records carry the boot clock instead.
  if [ -n "$lib" ]; then
    agent_error "$BOOT_NS" missing-library "library $lib not found in $LIB_DIR (the runner could not start)"
  else
    agent_error "$BOOT_NS" crash "the runner could not start: $(tail -n 1 "$RUNNER_ERR" 2>/dev/null)"
  fi
  write_trace failed 0 0 null "$BOOT_NS"
  echo "agent.sh: ${lib:+missing library $lib; }runner did not start, see $TRACE" >&2
  exit 3
fi

# -- 2. idle baseline -----------------------------------------------------------------------------------
event baseline_start "$NOW_NS"
boot_ns; _end=$(( $BOOT_CS + BASELINE_MS / 10 ))   # in 10 ms units
while :; do
  sample ""
  boot_ns; [ "$BOOT_CS" -ge "$_end" ] && break
  nap
done
clock_now && event baseline_end "$NOW_NS"

# -- 3. the run, sampled ----------------------------------------------------------------------------------
set -- --model "$MODEL" --prompt-len "$P" --prompt-ids "$PROMPT_IDS" --gen-len "$G" --warmup "$W" --runs "$R" \
  --threads "$T" --trace "$RUNNER_OUT"
# The runtime's cache holds the artifact's max_context positions, as an app that ships it allocates it.
[ "$MAX_CONTEXT" -gt 0 ] && set -- "$@" --ctx "$MAX_CONTEXT"
LD_LIBRARY_PATH="$RUNNER_LD_PATH" "$RUNNER" "$@" 2>>"$RUNNER_ERR" 3<&- &
pid=$!
# The run's samples: edgekit_sampler (android_harness/src/sampler.cpp) reads what sample() reads, for a sixth
# of its CPU time, and stamps the runner's clock; this loop then only watches the runner and the timeout.
spid=
if [ "$SAMPLER" = native ]; then
  set -- --pid "$pid" --out "$SAMPLES" --sample-ms "$S" --pss-ms "$PSS_MS"
  for _f in $FREQ_FILES; do set -- "$@" --freq "$_f"; done
  for _z in $THERMAL_ZONES; do set -- "$@" --thermal "$_z"; done
  [ "$POWER_SOURCE" != null ] &&
    set -- "$@" --voltage "$BATT/voltage_now" --current "$BATT/current_now" --current-sign "$CURRENT_SIGN"
  "$SAMPLER_BIN" "$@" 2>>"$RUNNER_ERR" 3<&- &
  spid=$!
fi
# Stopped from outside (the host's timeout, adb disconnect): take the runner down too.
# What was recorded so far is written as a trace without a footer, which the host keeps aside as partial.
trap 'kill -9 "$pid" 2>/dev/null; [ -n "$spid" ] && kill "$spid" 2>/dev/null; write_trace ""; exit 143' TERM INT HUP
boot_ns; _deadline=$(( $BOOT_CS + TIMEOUT_S * 100 ))
timed_out=
while kill -0 "$pid" 2>/dev/null; do
  if [ -n "$spid" ]; then boot_ns; else sample "$pid"; fi
  if [ "$TIMEOUT_S" -gt 0 ] && [ "$BOOT_CS" -ge "$_deadline" ]; then
    kill -9 "$pid" 2>/dev/null; timed_out=1; break
  fi
  if [ -n "$spid" ]; then watch_nap; else nap; fi
done
wait "$pid"
rc=$?
# The sampler stops by itself once the runner is gone; a TERM makes sure of it.
if [ -n "$spid" ]; then kill "$spid" 2>/dev/null; wait "$spid"; fi
trap - TERM INT HUP
sample ""
clock_now || NOW_NS=0

# -- 4. footer --------------------------------------------------------------------------------------------
footer=$(grep '"type":"runner_footer"' "$RUNNER_OUT" 2>/dev/null | tail -n 1)
info=$(grep '"type":"runner_info"' "$RUNNER_OUT" 2>/dev/null | tail -n 1)
[ -n "$info" ] && PROMPT_JSON=$(echo "$info" | sed -n 's/.*"prompt_ids":\(\[[0-9,]*\]\).*/\1/p')
[ -n "$PROMPT_JSON" ] || PROMPT_JSON=null
field() { echo "$footer" | sed -n "s/.*\"$1\":\([0-9-]*\).*/\1/p"; }
if [ -n "$footer" ]; then
  completed=$(field runs_completed); failed=$(field runs_failed); hwm=$(field self_hwm_kb)
else
  completed=$(grep '"name":"run_end"' "$RUNNER_OUT" 2>/dev/null | grep -c '"warmup":false')
  failed=$((R - completed)); hwm=null
fi
status=ok
if [ -n "$timed_out" ]; then
  agent_error "$NOW_NS" timeout "the runner ran past --timeout-s $TIMEOUT_S and was killed"; status=failed
elif [ "$rc" -gt 128 ]; then
  sig=$((rc - 128))
  if [ "$sig" -eq 9 ]; then reason=oom; else reason=crash; fi   # SIGKILL on Android: the low-memory killer
  agent_error "$NOW_NS" "$reason" "the runner died with signal $sig"; status=failed
elif [ "$rc" -ne 0 ]; then
  status=failed
  lib=$(missing_library "$RUNNER_ERR")
  [ -n "$lib" ] && agent_error "$NOW_NS" missing-library "library $lib not found in $LIB_DIR"
  # exit 2/3: the runner refused the workload or the model and said why in its own error event
  [ -z "$lib" ] && [ -z "$footer" ] && ! grep -q '"name":"error"' "$RUNNER_OUT" 2>/dev/null &&
    agent_error "$NOW_NS" runtime-error "the runner exited with status $rc"
fi
[ "$failed" -gt 0 ] 2>/dev/null && status=failed
write_trace "$status" "${completed:-0}" "${failed:-0}" "${hwm:-null}" "$NOW_NS"
[ "$status" = ok ] && exit 0
[ "$rc" -eq 3 ] && exit 3
exit 1
