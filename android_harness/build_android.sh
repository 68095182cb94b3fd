#!/bin/sh
# Cross-compiles edgekit_runner for Android arm64-v8a.
#
#   ANDROID_NDK=/path/to/ndk EXECUTORCH_SRC=/path/to/executorch android_harness/build_android.sh
#     -> android_harness/build/android-arm64-v8a/bin/edgekit_runner
#        android_harness/build/android-arm64-v8a/lib/   (shared libraries the binary needs, if any)
#
# ANDROID_NDK: an Android NDK (r26 or newer), the directory holding build/cmake/android.toolchain.cmake.
# EXECUTORCH_SRC: an ExecuTorch source checkout with its submodules (third-party/ populated), of the
#   same release as the executorch wheel that exported the .pte files (the flatbuffer schema and the
#   operator set must match). ExecuTorch is built in the same CMake configure as the runner, with the
#   XNNPACK delegate, the module / data loader / tensor / threadpool extensions and the optimized,
#   quantized and LLM kernels, all linked statically into the one binary.
# Optional: ANDROID_PLATFORM (default android-26), JOBS (default 2), CMAKE (default cmake), PYTHON (the
# interpreter ExecuTorch's build-time code generation runs with, default python3).
# Exit status: 2 with one line per problem when the inputs are missing or wrong, else CMake's.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build="$here/build/android-arm64-v8a"
platform=${ANDROID_PLATFORM:-android-26}
cmake_bin=${CMAKE:-cmake}

problems=0
problem() { echo "build_android.sh: $1" >&2; problems=$((problems + 1)); }
if [ -z "${ANDROID_NDK:-}" ]; then
  problem "ANDROID_NDK is not set; point it at an Android NDK (the directory with build/cmake/android.toolchain.cmake)"
elif [ ! -f "$ANDROID_NDK/build/cmake/android.toolchain.cmake" ]; then
  problem "ANDROID_NDK=$ANDROID_NDK is not an Android NDK: no build/cmake/android.toolchain.cmake there"
fi
if [ -z "${EXECUTORCH_SRC:-}" ]; then
  problem "EXECUTORCH_SRC is not set; point it at an ExecuTorch source checkout (git clone --recursive)"
elif [ ! -f "$EXECUTORCH_SRC/CMakeLists.txt" ] || [ ! -d "$EXECUTORCH_SRC/backends/xnnpack" ]; then
  problem "EXECUTORCH_SRC=$EXECUTORCH_SRC is not an ExecuTorch checkout: no CMakeLists.txt and backends/xnnpack there"
elif [ ! -f "$EXECUTORCH_SRC/backends/xnnpack/third-party/XNNPACK/CMakeLists.txt" ]; then
  problem "EXECUTORCH_SRC=$EXECUTORCH_SRC has no submodules: run git submodule update --init --recursive there"
fi
command -v "$cmake_bin" >/dev/null 2>&1 || problem "cmake not found (set CMAKE or put cmake on PATH)"
[ "$problems" -eq 0 ] || exit 2

mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  "$cmake_bin" -S "$here" -B "$build" \
    -DCMAKE_TOOLCHAIN_FILE="$ANDROID_NDK/build/cmake/android.toolchain.cmake" \
    -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM="$platform" -DANDROID_STL=c++_static \
    -DCMAKE_BUILD_TYPE=Release -DEXECUTORCH_SRC="$EXECUTORCH_SRC" \
    -DPYTHON_EXECUTABLE="${PYTHON:-python3}"
fi
"$cmake_bin" --build "$build" --target edgekit_runner -j "${JOBS:-2}"
mkdir -p "$build/lib"
# Everything is static with c++_static; a shared C++ runtime would be copied here for the push.
if [ -f "$build/libc++_shared.so" ]; then cp -f "$build/libc++_shared.so" "$build/lib/"; fi
echo "$build/bin/edgekit_runner"
