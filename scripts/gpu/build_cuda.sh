#!/usr/bin/env bash
# Builds a CUDA-capable release `delf` into target-cuda/delf for a lent GPU machine (docs/development.md).
# Links against the full torch 2.11.0 wheel's libraries (libtorch_cuda.so kept, libtorch.so unpatched); the CUDA
# runtime libraries themselves are not needed here (--allow-shlib-undefined) and come from the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Overridable: where the CUDA libtorch folder and the cargo target folder live.
DEST=${CUDA_LIBTORCH_DIR:-$PWD/.cache/libtorch-cuda}
BUILD=${CUDA_TARGET_DIR:-$PWD/target-cuda-build}
if [[ ! -f $DEST/torch/lib/libtorch_cuda.so ]]; then
  WHEEL=$(ls .cache/wheels/torch-2.11.0-*.whl 2>/dev/null | head -1 || true)
  if [[ -z $WHEEL ]]; then
    .cache/venv/bin/pip download -q --disable-pip-version-check --no-deps -d .cache/wheels torch==2.11.0
    WHEEL=$(ls .cache/wheels/torch-2.11.0-*.whl | head -1)
  fi
  mkdir -p "$DEST" && unzip -q -o "$WHEEL" -d "$DEST" 'torch/lib/*.so*'
  ln -sfn "$PWD/.cache/libtorch/torch/include" "$DEST/torch/include"
  cp .cache/libtorch/torch/build-version "$DEST/torch/build-version"
fi
LIBTORCH="$DEST/torch" CARGO_TARGET_DIR="$BUILD" \
  RUSTFLAGS="-C link-arg=-Wl,--allow-shlib-undefined" cargo build --release -p delf-cli
mkdir -p target-cuda && cp "$BUILD/release/delf" target-cuda/delf && strip target-cuda/delf
readelf -d target-cuda/delf | grep -q 'libtorch_cuda.so' || { echo "libtorch_cuda.so not linked" >&2; exit 1; }
ls -la target-cuda/delf
