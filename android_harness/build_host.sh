#!/bin/sh
# Builds edgekit_runner for this machine against the executorch pip wheel of the project's Python.
#
#   android_harness/build_host.sh          -> android_harness/build/host/bin/edgekit_runner
#                                             android_harness/build/host/lib/*.so (the runtime it needs)
#
# Idempotent: configures once (again only when the wheel location changes), then lets the build tool
# decide what is out of date, so a second call returns in about a second.
# Environment: PYTHON (default: the repository's .venv, else python3), JOBS (default 2).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build="$here/build/host"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then PYTHON="$here/../.venv/bin/python"; else PYTHON=python3; fi
fi
command -v cmake >/dev/null 2>&1 || { echo "build_host.sh: cmake not found on PATH" >&2; exit 2; }
prefix=$("$PYTHON" -c 'import importlib.util as u; s = u.find_spec("executorch"); print(s.submodule_search_locations[0] if s else "")')
if [ -z "$prefix" ] || [ ! -d "$prefix/share/cmake" ]; then
  echo "build_host.sh: $PYTHON has no executorch wheel with a CMake package (share/cmake)" >&2
  exit 2
fi
mkdir -p "$build"
if ! grep -q "^EXECUTORCH_WHEEL_PREFIX:PATH=$prefix\$" "$build/CMakeCache.txt" 2>/dev/null; then
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEXECUTORCH_WHEEL_PREFIX="$prefix" >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; echo "build_host.sh: cmake configure failed" >&2; exit 1; }
fi
cmake --build "$build" -j "${JOBS:-2}"
echo "$build/bin/edgekit_runner"
