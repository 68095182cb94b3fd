#!/bin/sh
# Builds edgekit_runner for this machine: one executable per runtime available here, each directory
# self-contained (bin/edgekit_runner + lib/, RUNPATH $ORIGIN/../lib) and pushable as it is.
#
#   android_harness/build_host.sh  -> android_harness/build/host/executorch/{bin,lib}
#                                     android_harness/build/host/onnxruntime-genai/{bin,lib}
#                                     android_harness/build/host/llama.cpp/{bin,lib}
#
# Where each runtime comes from:
#   executorch         the executorch wheel of the project's Python (its CMake package and libraries)
#   onnxruntime-genai  the onnxruntime-genai wheel's libonnxruntime-genai.so and the onnxruntime wheel's
#                      libonnxruntime.so.<version>, bundled as libonnxruntime.so.1, the name GenAI loads
#                      it by (without it in lib/ the process would abort before main)
#   llama.cpp          LLAMA_CPP_DIR, else scripts/build_llama_cpp.sh's build if that is already made
#                      (this script does not start its 20-minute build: run that script first)
# A runtime that is not available is skipped with one line on stderr and its old output removed; none
# available is exit 2. Idempotent: configures again only when the inputs change, then lets the build
# tool decide what is out of date, so a second call returns in about a second. Prints each runner built.
# Environment: PYTHON (default: the repository's .venv, else python3), JOBS (default 2), LLAMA_CPP_DIR.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build="$here/build/host"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then PYTHON="$here/../.venv/bin/python"; else PYTHON=python3; fi
fi
command -v cmake >/dev/null 2>&1 || { echo "build_host.sh: cmake not found on PATH" >&2; exit 2; }
skip() { echo "build_host.sh: skipping $1: $2" >&2; rm -rf "${build:?}/$1"; }
built=""

# -- ExecuTorch ---------------------------------------------------------------------------------------
et_prefix=$("$PYTHON" -c 'import importlib.util as u; s = u.find_spec("executorch"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null || true)
if [ -n "$et_prefix" ] && [ -d "$et_prefix/share/cmake" ]; then
  built="$built executorch"
else
  et_prefix=""
  skip executorch "$PYTHON has no executorch wheel with a CMake package (share/cmake)"
fi

# -- ONNX Runtime GenAI ---------------------------------------------------------------------------------
genai=$("$PYTHON" - <<'EOF' 2>/dev/null || true
import importlib.metadata as m
import importlib.util as u
from pathlib import Path

g, o = u.find_spec("onnxruntime_genai"), u.find_spec("onnxruntime")
if g and o:
    genai = Path(g.submodule_search_locations[0]) / "libonnxruntime-genai.so"
    ort = sorted((Path(o.submodule_search_locations[0]) / "capi").glob("libonnxruntime.so.*.*"))
    if genai.is_file() and ort:
        print(genai, ort[-1], m.version("onnxruntime-genai"), sep="\n")
EOF
)
genai_lib=$(echo "$genai" | sed -n 1p); ort_lib=$(echo "$genai" | sed -n 2p); genai_version=$(echo "$genai" | sed -n 3p)
if [ -n "$genai_lib" ] && [ -n "$ort_lib" ]; then
  built="$built onnxruntime-genai"
else
  genai_lib="" ort_lib="" genai_version=unknown
  skip onnxruntime-genai "$PYTHON has no onnxruntime-genai wheel with libonnxruntime-genai.so and onnxruntime wheel with libonnxruntime.so.*"
fi

# -- llama.cpp ------------------------------------------------------------------------------------------
llama_dir=${LLAMA_CPP_DIR:-}
if [ -z "$llama_dir" ] && [ -x "$here/../scripts/build_llama_cpp.sh" ]; then
  llama_dir=$(LLAMA_CPP_CACHED_ONLY=1 PYTHON="$PYTHON" "$here/../scripts/build_llama_cpp.sh" 2>/dev/null | tail -n 1) || llama_dir=""
fi
llama_version=unknown
if [ -n "$llama_dir" ] && [ -f "$llama_dir/include/llama.h" ] && [ -d "$llama_dir/lib" ]; then
  built="$built llama.cpp"
  number=$(sed -n 's/^llama_cpp_build_number=//p' "$llama_dir/BUILD_INFO" 2>/dev/null || true)
  [ -n "$number" ] && [ "$number" != 0 ] && llama_version="b$number"
else
  llama_dir=""
  skip llama.cpp "no llama.cpp build (set LLAMA_CPP_DIR, or build one with scripts/build_llama_cpp.sh)"
fi

if [ -z "$built" ]; then
  echo "build_host.sh: no runtime available to build a runner for" >&2
  exit 2
fi

# -- configure (only when the inputs changed) and build ---------------------------------------------------
mkdir -p "$build"
inputs="$et_prefix|$genai_lib|$ort_lib|$genai_version|$llama_dir|$llama_version"
if [ ! -f "$build/CMakeCache.txt" ] || [ "$(cat "$build/configure.inputs" 2>/dev/null)" != "$inputs" ]; then
  rm -f "$build/configure.inputs"
  cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEXECUTORCH_WHEEL_PREFIX="$et_prefix" \
    -DORT_GENAI_LIBRARY="$genai_lib" -DORT_LIBRARY="$ort_lib" -DORT_GENAI_VERSION="$genai_version" \
    -DLLAMA_CPP_DIR="$llama_dir" -DLLAMA_CPP_VERSION="$llama_version" >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; echo "build_host.sh: cmake configure failed" >&2; exit 1; }
  printf '%s\n' "$inputs" > "$build/configure.inputs"
fi
cmake --build "$build" -j "${JOBS:-2}" >"$build/build.log" 2>&1 ||
  { tail -n 60 "$build/build.log" >&2; echo "build_host.sh: build failed (log: $build/build.log)" >&2; exit 1; }

# Each runner must start from its own directory (its libraries resolved from lib/ alone).
for runtime in $built; do
  runner="$build/$runtime/bin/edgekit_runner"
  if ! env -u LD_LIBRARY_PATH "$runner" --version >/dev/null 2>"$build/$runtime.start.err"; then
    cat "$build/$runtime.start.err" >&2
    echo "build_host.sh: $runner does not start (a library missing from $build/$runtime/lib?)" >&2
    exit 1
  fi
  echo "$runner"
done
