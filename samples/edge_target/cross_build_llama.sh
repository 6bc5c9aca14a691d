#!/usr/bin/env bash
# Cross-build llama.cpp for aarch64 (shared libraries) from the vendored llama.cpp of the llama-cpp-python sdist
# at the version installed on this host, so the Python layer and the native library match.
#   GGML_NATIVE=OFF and -march=armv8.2-a+dotprod: a baseline every Cortex-A55/A76 class core runs
#   (Raspberry Pi 5, mid-range phones); nothing is tuned to the build machine.
#   GGML_OPENMP=OFF: ggml's own thread pool; the target then needs no libgomp.
# Output: $CACHE/llama-<version>/lib/{libllama.so,libggml*.so} (cached; reruns are instant).
set -euo pipefail
CACHE="${EDGELLM_ARM64_CACHE:-$HOME/.cache/edgellm/arm64}"
PY="${PYTHON:-python3}"
VERSION="${LLAMA_CPP_VERSION:-$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')}"
ARCH_FLAGS="${GGML_CPU_ARM_ARCH:-armv8.2-a+dotprod}"
JOBS="${JOBS:-2}"
OUT="$CACHE/llama-$VERSION"
if [[ -f "$OUT/.edgellm-build-ok" ]]; then
  echo "llama.cpp $VERSION aarch64: cached at $OUT/lib"; exit 0
fi
command -v aarch64-linux-gnu-g++ >/dev/null || {
  echo "missing aarch64-linux-gnu-g++: apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu" >&2; exit 2; }
start=$(date +%s)
SDIST_DIR="$CACHE/sdist"
SRC="$SDIST_DIR/llama_cpp_python-$VERSION"
mkdir -p "$SDIST_DIR"
if [[ ! -d "$SRC/vendor/llama.cpp" ]]; then
  "$PY" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$SDIST_DIR"
  tar -xzf "$SDIST_DIR/llama_cpp_python-$VERSION.tar.gz" -C "$SDIST_DIR"
fi
BUILD="$CACHE/build-llama-$VERSION"
TMP="$OUT.partial"
rm -rf "$TMP"
nice -n 10 cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
  -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="$ARCH_FLAGS" -DGGML_OPENMP=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' \
  -DCMAKE_INSTALL_PREFIX="$TMP" >"$CACHE/logs/cmake-configure.log"
nice -n 10 cmake --build "$BUILD" --target llama -j "$JOBS"
mkdir -p "$TMP/lib"
# every name the loader may ask for (libllama.so needs libggml.so.0, ...): a wheel cannot hold symlinks
for lib in "$BUILD"/bin/lib*.so "$BUILD"/bin/lib*.so.[0-9]; do cp -L "$lib" "$TMP/lib/"; done
aarch64-linux-gnu-readelf -h "$TMP/lib/libllama.so" | grep -q AArch64
cat >"$TMP/build.json" <<JSON
{"llama_cpp_python": "$VERSION", "arch": "aarch64", "march": "$ARCH_FLAGS", "ggml_native": false,
 "openmp": false, "compiler": "$(aarch64-linux-gnu-gcc -dumpfullversion)", "seconds": $(( $(date +%s) - start ))}
JSON
touch "$TMP/.edgellm-build-ok"
rm -rf "$OUT"; mv "$TMP" "$OUT"
echo "llama.cpp $VERSION aarch64: built in $(( $(date +%s) - start ))s at $OUT/lib"
