#!/usr/bin/env bash
# Here, before a device run: packs what the lent GPU machine's image lacks into .gpu-bundle/site.tar.xz (git-ignored;
# the device tool carries it). The image has python3 3.12 with torch, triton and nvcc, but no tilelang and no
# sglang; its registries are unreachable. The bundle holds TileLang from this venv (abi3 binaries: its CUDA parts, no
# Ascend/Metal/WebGPU), z3 (libtilelang.so links libz3; stripped), and apache-tvm-ffi downloaded for the device's
# Python. bench/gpu_check.sh unpacks it when it is there. Must stay under the tool's 64 MiB carry limit.
#
# Usage from the repo root: bash bench/gpu_bundle.sh   then the device tool's run with command
# "bash bench/gpu_check.sh" and carry [".gpu-bundle"].
# Environment: PYTHON (the venv to pack from), DEVICE_PYTHON (3.12, the device's), BUNDLE_DIR (.gpu-bundle), XZ_LEVEL (9;
# the offline test packs at 0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}
LIMIT_MIB=56  # the carry limit (64 MiB) less room for the working tree
DEST=${BUNDLE_DIR:-.gpu-bundle}
XZ_LEVEL=${XZ_LEVEL:-9}
SITE=$("$PY" -c "import pathlib, tilelang; print(pathlib.Path(tilelang.__file__).parents[1])")
TVM_FFI=$("$PY" -c "import importlib.metadata as m; print(m.version('apache-tvm-ffi'))")
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

echo "gpu_bundle: tilelang $("$PY" -c "import importlib.metadata as m; print(m.version('tilelang'))") from $SITE, apache-tvm-ffi $TVM_FFI for Python $DEVICE_PYTHON"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$STAGE/wheels" "apache-tvm-ffi==$TVM_FFI"
mkdir -p "$STAGE/site"
"$PY" -m zipfile -e "$STAGE"/wheels/apache_tvm_ffi-*.whl "$STAGE/site"

# tilelang: the CUDA toolchain's parts; C++ sources of other backends and caches stay behind
(cd "$SITE" && tar -cf - --exclude=__pycache__ \
    --exclude='tilelang/src/ascend' --exclude='tilelang/src/metal' \
    --exclude='tilelang/src/webgpu' --exclude='tilelang/3rdparty/tvm/src' \
    tilelang tilelang-*.dist-info z3 z3_solver-*.dist-info) | tar -C "$STAGE/site" -xf -
strip --strip-unneeded "$STAGE"/site/z3/lib/libz3.so*  # shipped with its symbol table: half its size

mkdir -p "$DEST"
tar -C "$STAGE/site" -cf - . | xz -T0 "-$XZ_LEVEL" >"$DEST/site.tar.xz"
SIZE_MIB=$(( $(stat -c %s "$DEST/site.tar.xz") / 1048576 ))
echo "gpu_bundle: $DEST/site.tar.xz, $SIZE_MIB MiB"
[ "$SIZE_MIB" -le "$LIMIT_MIB" ] || { echo "gpu_bundle: over $LIMIT_MIB MiB: the device tool cannot carry it" >&2; exit 1; }
