#!/usr/bin/env bash
# Build llama.cpp (CPU, shared libs, relocatable) from the copy vendored in the
# llama-cpp-python sdist, so the only download is from the Python package index.
#
# Usage: scripts/build_llama_cpp.sh            # prints the cache dir as the last stdout line
#   PYTHON=...                 python whose pip downloads the sdist (default: <repo>/.venv/bin/python, else python3)
#   LLAMA_CPP_PYTHON_VERSION   sdist version (default 0.3.36 = llama.cpp b11312 / 0c1e57098)
#   LLAMA_CPP_SDIST=path.tar.gz  use this sdist instead of downloading it
#   LLAMA_EXTRA_TARGETS="llama-completion llama-tokenize"   extra CMake targets to build and copy into bin/
#   JOBS (default 2), EDGEKIT_BUILD_CACHE, VERBOSE=1 (stream the build log to stderr)
#   LLAMA_CPP_CACHED_ONLY=1    print the build if it is finished, else exit 3 without building
#
# Result: <cache>/llama.cpp/<version>-<hash>/{bin,lib,include,src,BUILD_INFO}
# <hash> covers the version, CMake flags, targets, CC/CXX/CFLAGS/CXXFLAGS, uname -s/-m and the
# host CPU flags, so a different CPU (GGML_NATIVE) gets its own build.
# Exit codes: 0 ok, 2 missing cmake/compiler/python, 3 not built (LLAMA_CPP_CACHED_ONLY=1), 1 anything else.
set -euo pipefail

LCP_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
VERBOSE="${VERBOSE:-0}"
EXTRA_TARGETS="${LLAMA_EXTRA_TARGETS:-}"

# Pins known for the default version (sdist sha256, upstream build number / commit).
LLAMA_BUILD_NUMBER=0
LLAMA_BUILD_COMMIT=unknown
SDIST_SHA256=""
if [ "$LCP_VERSION" = "0.3.36" ]; then
    LLAMA_BUILD_NUMBER=11312
    LLAMA_BUILD_COMMIT=0c1e57098
    SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
fi

log() { printf 'build_llama_cpp: %s\n' "$*" >&2; }
die() { printf 'build_llama_cpp: error: %s\n' "$1" >&2; exit "${2:-1}"; }

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

case "$(uname -s)" in
    Darwin) RPATH='@loader_path/../lib;@loader_path' ;;
    *)      RPATH='$ORIGIN/../lib;$ORIGIN' ;;
esac

CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=ON
    -DBUILD_SHARED_LIBS=ON
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_SERVER=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DGGML_BACKEND_DL=OFF
    "-DCMAKE_INSTALL_RPATH=$RPATH"
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
    "-DLLAMA_BUILD_NUMBER=$LLAMA_BUILD_NUMBER"
    "-DLLAMA_BUILD_COMMIT=$LLAMA_BUILD_COMMIT"
)
# shellcheck disable=SC2206
TARGETS=(llama llama-bench llama-quantize llama-perplexity $EXTRA_TARGETS)

cpu_flags() {
    if [ -r /proc/cpuinfo ]; then
        # x86: "flags", arm64: "Features"; first core is representative
        grep -m1 -E '^(flags|Features)[[:space:]]*:' /proc/cpuinfo || true
    elif command -v sysctl >/dev/null 2>&1; then
        sysctl -n machdep.cpu.brand_string machdep.cpu.features hw.optional.arm64 2>/dev/null || true
    fi
}

hash_str() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -c1-12
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 | cut -c1-12
    else cksum | cut -d' ' -f1
    fi
}

# Source patches applied after extraction (part of the cache key).
PATCHES="perplexity-log-flush-v1"

KEY_MATERIAL="version=$LCP_VERSION
patches=$PATCHES
flags=${CMAKE_FLAGS[*]}
targets=${TARGETS[*]}
env=CC=${CC:-} CXX=${CXX:-} CFLAGS=${CFLAGS:-} CXXFLAGS=${CXXFLAGS:-}
os=$(uname -s) arch=$(uname -m)
cpu=$(cpu_flags)"
HASH="$(printf '%s' "$KEY_MATERIAL" | hash_str)"

CACHE_ROOT="${EDGEKIT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekit-build}/llama.cpp"
FINAL="$CACHE_ROOT/$LCP_VERSION-$HASH"
STAMP=".edgekit-complete"

# Fast path: nothing but the checks above.
if [ -f "$FINAL/$STAMP" ]; then
    echo "$FINAL"
    exit 0
fi
# LLAMA_CPP_CACHED_ONLY=1: report a finished build, never start one (android_harness/build_host.sh).
if [ "${LLAMA_CPP_CACHED_ONLY:-0}" = "1" ]; then
    log "no finished build at $FINAL"
    exit 3
fi

# --- prerequisites (exit 2 with one line) ---
command -v cmake >/dev/null 2>&1 || die "cmake not found (apt-get install cmake)" 2
CXX_BIN="${CXX:-}"
if [ -z "$CXX_BIN" ]; then
    for c in c++ g++ clang++; do command -v "$c" >/dev/null 2>&1 && { CXX_BIN="$c"; break; }; done
fi
CC_BIN="${CC:-}"
if [ -z "$CC_BIN" ]; then
    for c in cc gcc clang; do command -v "$c" >/dev/null 2>&1 && { CC_BIN="$c"; break; }; done
fi
{ [ -n "$CXX_BIN" ] && command -v "$CXX_BIN" >/dev/null 2>&1 && [ -n "$CC_BIN" ] && command -v "$CC_BIN" >/dev/null 2>&1; } \
    || die "C/C++ compiler not found (apt-get install build-essential)" 2
tar --version >/dev/null 2>&1 || die "tar not found" 2

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON="$REPO_ROOT/.venv/bin/python"
    else PYTHON="$(command -v python3 || true)"; fi
fi
[ -n "$PYTHON" ] || die "no python found (set PYTHON=...)" 2

GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

mkdir -p "$CACHE_ROOT"

# Serialise concurrent builds of the same key (best effort: needs flock).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.lock-$LCP_VERSION-$HASH"
    flock 9
    if [ -f "$FINAL/$STAMP" ]; then echo "$FINAL"; exit 0; fi
fi

TMP="$(mktemp -d "$CACHE_ROOT/.tmp-$LCP_VERSION-$HASH.XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
LOG="$TMP/build.log"
: >"$LOG"

run() {
    # run a command with output to the log (and stderr when VERBOSE=1); show the log tail on failure
    if [ "$VERBOSE" = "1" ]; then
        "$@" 2>&1 | tee -a "$LOG" >&2 || { die "failed: $*" 1; }
    else
        "$@" >>"$LOG" 2>&1 || { tail -n 40 "$LOG" >&2; die "failed: $* (log above)" 1; }
    fi
}

# --- sdist: reuse a shared download, verify its hash when pinned ---
SDIST_NAME="llama_cpp_python-$LCP_VERSION.tar.gz"
SDIST_DIR="$CACHE_ROOT/sdist"
mkdir -p "$SDIST_DIR"
if [ -n "${LLAMA_CPP_SDIST:-}" ]; then
    SDIST="$LLAMA_CPP_SDIST"
else
    SDIST="$SDIST_DIR/$SDIST_NAME"
fi
sha_of() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi; }
if [ -f "$SDIST" ] && [ -n "$SDIST_SHA256" ] && [ "$(sha_of "$SDIST")" != "$SDIST_SHA256" ]; then
    [ -n "${LLAMA_CPP_SDIST:-}" ] && die "$SDIST: sha256 mismatch (expected $SDIST_SHA256)"
    log "cached sdist has a wrong sha256, downloading again"
    rm -f "$SDIST"
fi
if [ ! -f "$SDIST" ]; then
    log "downloading llama-cpp-python==$LCP_VERSION sdist with $PYTHON -m pip"
    run "$PYTHON" -m pip download --disable-pip-version-check --no-binary :all: --no-deps \
        "llama-cpp-python==$LCP_VERSION" -d "$TMP/dl"
    [ -f "$TMP/dl/$SDIST_NAME" ] || die "pip did not produce $SDIST_NAME"
    if [ -n "$SDIST_SHA256" ] && [ "$(sha_of "$TMP/dl/$SDIST_NAME")" != "$SDIST_SHA256" ]; then
        die "downloaded $SDIST_NAME: sha256 mismatch (expected $SDIST_SHA256)"
    fi
    mv "$TMP/dl/$SDIST_NAME" "$SDIST.part.$$" && mv "$SDIST.part.$$" "$SDIST"
fi

# --- extract vendor/llama.cpp into OUT/src ---
OUT="$TMP/out"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/include" "$TMP/x"
log "extracting vendor/llama.cpp from $SDIST"
run tar -xzf "$SDIST" -C "$TMP/x" "llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
mv "$TMP/x/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp" "$OUT/src"
rm -rf "$TMP/x"
[ -f "$OUT/src/include/llama.h" ] || die "vendored llama.cpp has no include/llama.h"
if [ "$LLAMA_BUILD_COMMIT" = unknown ]; then
    # "feat: update llama.cpp to ggml-org/llama.cpp@<sha>" in the sdist changelog section of this version
    LLAMA_BUILD_COMMIT="$(tar -xzOf "$SDIST" "llama_cpp_python-$LCP_VERSION/CHANGELOG.md" 2>/dev/null \
        | awk -v v="## [$LCP_VERSION]" 'index($0,v)==1{f=1;next} /^## \[/{f=0} f' \
        | grep -o 'llama.cpp@[0-9a-f]*' | head -n1 | cut -d@ -f2 || true)"
    [ -n "$LLAMA_BUILD_COMMIT" ] || LLAMA_BUILD_COMMIT=unknown
fi

# --- patches ---
# llama-perplexity logs through common's async logger, whose singleton is leaked on purpose
# (upstream issue 22142) and never flushed before main() returns: under CPU load the last lines
# ("Final estimate: PPL", the KL-divergence statistics) are lost while the exit code is 0.
# Pause (= drain and join) the logger before returning.
PPL_CPP="$OUT/src/tools/perplexity/perplexity.cpp"
if [ -f "$PPL_CPP" ] && ! grep -q 'common_log_pause(common_log_main());' "$PPL_CPP"; then
    sed '/^    llama_backend_free();$/a\
    common_log_pause(common_log_main());
' "$PPL_CPP" >"$PPL_CPP.tmp" && mv "$PPL_CPP.tmp" "$PPL_CPP"
    grep -q 'common_log_pause(common_log_main());' "$PPL_CPP" || die "could not patch $PPL_CPP"
fi

# --- configure + build (build dir is thrown away) ---
BUILD="$TMP/build"
log "configuring (${CMAKE_FLAGS[*]})"
run env CC="$CC_BIN" CXX="$CXX_BIN" cmake -S "$OUT/src" -B "$BUILD" ${GENERATOR[@]+"${GENERATOR[@]}"} "${CMAKE_FLAGS[@]}" \
    "-DLLAMA_BUILD_COMMIT=$LLAMA_BUILD_COMMIT"
log "building ${TARGETS[*]} with $JOBS jobs (log: $LOG)"
start=$(date +%s)
run cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}"
secs=$(( $(date +%s) - start ))

# --- lay out bin/ lib/ include/ ---
for t in "${TARGETS[@]}"; do
    [ "$t" = llama ] && continue
    f="$(find "$BUILD" -type f -name "$t" -perm -u+x | head -n1)"
    [ -n "$f" ] || die "built target $t not found"
    cp -p "$f" "$OUT/bin/"
done
# shared libs (keep the soname symlinks)
find "$BUILD" \( -name 'lib*.so*' -o -name 'lib*.dylib' \) \( -type f -o -type l \) -exec cp -P -p {} "$OUT/lib/" \;
[ -n "$(ls "$OUT/lib" | grep '^libllama' || true)" ] || die "libllama not found in build tree"
cp -p "$OUT/src/include/"*.h "$OUT/include/"
cp -p "$OUT/src/ggml/include/"*.h "$OUT/include/"

# sanity: the tools start and resolve their libs through the relative RPATH
"$OUT/bin/llama-bench" --help >/dev/null 2>&1 || die "bin/llama-bench does not run (library lookup?)"

cat >"$OUT/BUILD_INFO" <<EOF
llama_cpp_python_version=$LCP_VERSION
llama_cpp_build_number=$LLAMA_BUILD_NUMBER
llama_cpp_commit=$LLAMA_BUILD_COMMIT
patches=$PATCHES
sdist=$SDIST_NAME
sdist_sha256=$(sha_of "$SDIST")
key_hash=$HASH
cmake_flags=${CMAKE_FLAGS[*]}
targets=${TARGETS[*]}
generator=${GENERATOR[*]:-default}
compiler=$("$CXX_BIN" --version 2>/dev/null | head -n1)
cmake=$(cmake --version | head -n1)
uname=$(uname -srm)
$(cpu_flags | sed 's/^[^:]*:[[:space:]]*/cpu_flags=/')
build_seconds=$secs
jobs=$JOBS
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
rm -rf "$BUILD"
mv "$LOG" "$OUT/build.log"
: >"$OUT/$STAMP"

# --- publish atomically ---
if [ -e "$FINAL" ]; then
    if [ -f "$FINAL/$STAMP" ]; then echo "$FINAL"; exit 0; fi
    rm -rf "$FINAL"   # leftover without stamp: not ours to keep
fi
mv "$OUT" "$FINAL"
log "built in ${secs}s: $FINAL"
echo "$FINAL"
