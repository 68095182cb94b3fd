#!/bin/sh
# Cross-compiles edgekit_runner for Android arm64-v8a: one executable per runtime, each directory
# self-contained and pushable as it is.
#
#   ANDROID_NDK=... EXECUTORCH_SRC=... ORT_GENAI_ANDROID=... ORT_ANDROID=... LLAMA_CPP_SRC=... \
#     android_harness/build_android.sh
#     -> android_harness/build/android-arm64-v8a/<runtime>/bin/edgekit_runner (and edgekit_sampler, the
#                                                         agent's sampler)
#        android_harness/build/android-arm64-v8a/<runtime>/lib/   (shared libraries it needs, if any)
#
# BACKENDS: the runtimes to build (default: "executorch onnxruntime-genai llama.cpp"); each needs its inputs.
# ANDROID_NDK: an Android NDK (r26 or newer), the directory holding build/cmake/android.toolchain.cmake.
# executorch:
#   EXECUTORCH_SRC: an ExecuTorch source checkout with its submodules (third-party/ populated), of the same
#   release as the executorch wheel that exported the .pte files (the flatbuffer schema and the operator set
#   must match). Built in the same configure with the XNNPACK delegate, the module / data loader / tensor /
#   threadpool extensions and the optimized and quantized kernels, linked statically; the LLM custom ops
#   are the runner's own (src/llm_kernels.cpp).
# onnxruntime-genai (GenAI publishes prebuilt Android libraries, no source build):
#   ORT_GENAI_ANDROID: the onnxruntime-genai Android package (the AAR from Maven Central,
#   com.microsoft.onnxruntime:onnxruntime-genai-android, unzipped): jni/arm64-v8a/libonnxruntime-genai.so;
#   ORT_ANDROID: the ONNX Runtime Android package it was built against (com.microsoft.onnxruntime:
#   onnxruntime-android, unzipped): jni/arm64-v8a/libonnxruntime.so, bundled under that name (GenAI loads
#   it by name). Both use the NDK's shared C++ runtime: libc++_shared.so is copied from the NDK into lib/.
#   Optional ORT_GENAI_VERSION (the package's release, for --version).
# llama.cpp:
#   LLAMA_CPP_SRC: a llama.cpp source tree of the release that wrote the GGUF files (scripts/build_llama_cpp.sh
#   keeps one in <its build>/src), built in the same configure, static, CPU only, without its tools.
#   Optional LLAMA_CPP_VERSION (e.g. b11312, for --version).
# Optional: ANDROID_PLATFORM (default android-26), JOBS (default 2), CMAKE (default cmake), PYTHON (the
# interpreter ExecuTorch's build-time code generation runs with, default python3).
# Exit status: 2 with one line per problem when the inputs are missing or wrong, else CMake's.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
abi=arm64-v8a
build="$here/build/android-$abi"
platform=${ANDROID_PLATFORM:-android-26}
cmake_bin=${CMAKE:-cmake}
backends=${BACKENDS:-executorch onnxruntime-genai llama.cpp}

problems=0
problem() { echo "build_android.sh: $1" >&2; problems=$((problems + 1)); }
# need VAR FILE WHAT: VAR must be set to a directory holding FILE.
need() {
  eval "_value=\${$1:-}"
  if [ -z "$_value" ]; then
    problem "$1 is not set; point it at $3"
  elif [ ! -e "$_value/$2" ]; then
    problem "$1=$_value is not $3: no $2 there"
  fi
}

if [ -z "${ANDROID_NDK:-}" ]; then
  problem "ANDROID_NDK is not set; point it at an Android NDK (the directory with build/cmake/android.toolchain.cmake)"
elif [ ! -f "$ANDROID_NDK/build/cmake/android.toolchain.cmake" ]; then
  problem "ANDROID_NDK=$ANDROID_NDK is not an Android NDK: no build/cmake/android.toolchain.cmake there"
fi
set --
for backend in $backends; do
  case "$backend" in
    executorch)
      if [ -z "${EXECUTORCH_SRC:-}" ]; then
        problem "EXECUTORCH_SRC is not set; point it at an ExecuTorch source checkout (git clone --recursive)"
      elif [ ! -f "$EXECUTORCH_SRC/CMakeLists.txt" ] || [ ! -d "$EXECUTORCH_SRC/backends/xnnpack" ]; then
        problem "EXECUTORCH_SRC=$EXECUTORCH_SRC is not an ExecuTorch checkout: no CMakeLists.txt and backends/xnnpack there"
      elif [ ! -f "$EXECUTORCH_SRC/backends/xnnpack/third-party/XNNPACK/CMakeLists.txt" ]; then
        problem "EXECUTORCH_SRC=$EXECUTORCH_SRC has no submodules: run git submodule update --init --recursive there"
      fi
      set -- "$@" -DEXECUTORCH_SRC="${EXECUTORCH_SRC:-}" -DPYTHON_EXECUTABLE="${PYTHON:-python3}" ;;
    onnxruntime-genai)
      need ORT_GENAI_ANDROID "jni/$abi/libonnxruntime-genai.so" "the unzipped onnxruntime-genai-android package"
      need ORT_ANDROID "jni/$abi/libonnxruntime.so" "the unzipped onnxruntime-android package"
      set -- "$@" -DORT_GENAI_LIBRARY="${ORT_GENAI_ANDROID:-}/jni/$abi/libonnxruntime-genai.so" \
        -DORT_LIBRARY="${ORT_ANDROID:-}/jni/$abi/libonnxruntime.so" -DORT_LIBRARY_SONAME=libonnxruntime.so \
        -DORT_GENAI_VERSION="${ORT_GENAI_VERSION:-unknown}" ;;
    llama.cpp)
      need LLAMA_CPP_SRC "include/llama.h" "a llama.cpp source tree"
      set -- "$@" -DLLAMA_CPP_SRC="${LLAMA_CPP_SRC:-}" -DLLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-unknown}" ;;
    *) problem "BACKENDS names '$backend'; the runtimes are executorch, onnxruntime-genai and llama.cpp" ;;
  esac
done
command -v "$cmake_bin" >/dev/null 2>&1 || problem "cmake not found (set CMAKE or put cmake on PATH)"
[ "$problems" -eq 0 ] || exit 2

mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  "$cmake_bin" -S "$here" -B "$build" \
    -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \
    -DANDROID_ABI="$abi" -DANDROID_PLATFORM="$platform" -DANDROID_STL=c++_static \
    -DCMAKE_BUILD_TYPE=Release "$@"
fi
"$cmake_bin" --build "$build" -j "${JOBS:-2}"
case " $backends " in
  *" onnxruntime-genai "*)
    # The prebuilt GenAI and ONNX Runtime libraries need the NDK's shared C++ runtime (the runner itself
    # links libc++ statically and talks to them through their C APIs only).
    cxx=$(find "$ANDROID_NDK/toolchains/llvm/prebuilt" -path "*aarch64-linux-android/libc++_shared.so" | head -n 1)
    [ -n "$cxx" ] && cp -f "$cxx" "$build/onnxruntime-genai/lib/" ;;
esac
for backend in $backends; do echo "$build/$backend/bin/edgekit_runner $build/$backend/bin/edgekit_sampler"; done
