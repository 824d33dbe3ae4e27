#!/usr/bin/env bash
# Builds the `dgm` binary with CUDA (`--features cuda`) on a machine with neither a GPU nor a CUDA toolkit
# (issue 22), from NVIDIA's CUDA 13.0 compiler wheels on PyPI — the version the lent GPU machines' driver
# (580) runs; PTX from a newer toolkit fails there with CUDA_ERROR_UNSUPPORTED_PTX_VERSION, so it is pinned.
#
# usage: scripts/build-cuda.sh [OUT]        OUT: where the stripped binary goes (default target/cuda/dgm-cuda;
#                                           OUT.xz next to it is the copy to carry to a GPU machine)
# environment:
#   DGM_CUDA_ROOT     where the wheels are unpacked (default ~/.cache/dgm/cuda-13.0; reused when present)
#   CUDA_COMPUTE_CAP  the GPU's compute capability for candle's kernels (default 90: H100 / H200)
#   PYTHON            the interpreter whose pip downloads the wheels (default python3)
#
# What it does: `pip download` nvidia-cuda-nvcc, -nvvm, -cuda-runtime, -cuda-crt and -cuda-cccl 13.0.* (they
# unpack into one `nvidia/cu13` root with bin/nvcc, include/ and lib/; nvcc uses the system gcc), then
# `cargo build --release -p dgm-cli --features cuda` into target/cuda (its own target folder, so the CPU build
# is not rebuilt). candle-kernels compiles its PTX and its static MoE library with that nvcc; cudarc is built
# with dynamic loading (vendor/README.md), so the CUDA driver, cuBLAS, cuRAND and NVRTC are opened when a
# CUDA device is first used, not linked: no driver or stub library is needed to build. The binary needs
# libcudart.so.13 at run time (the GPU machine's PyTorch environment carries it: see bench/gpu/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/cuda/dgm-cuda}"
root="${DGM_CUDA_ROOT:-$HOME/.cache/dgm/cuda-13.0}"
py="${PYTHON:-python3}"
cuda="$root/nvidia/cu13"

if [ ! -x "$cuda/bin/nvcc" ]; then
  echo "downloading the CUDA 13.0 compiler wheels into $root ..." >&2
  mkdir -p "$root/wheels"
  "$py" -m pip download --no-deps --quiet --dest "$root/wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-runtime==13.0.*" \
    "nvidia-cuda-crt==13.0.*" "nvidia-cuda-cccl==13.0.*"
  for w in "$root"/wheels/*.whl; do
    "$py" -m zipfile -e "$w" "$root/"
  done
  chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
fi
# the linker looks for libcudart.so; the wheel ships only the versioned name
ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"
"$cuda/bin/nvcc" --version | tail -2 >&2

export PATH="$cuda/bin:$PATH" CUDA_HOME="$cuda" CUDA_PATH="$cuda" NVCC="$cuda/bin/nvcc"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$cuda/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --release -p dgm-cli --features cuda --target-dir target/cuda
mkdir -p "$(dirname "$out")"
strip -o "$out" target/cuda/release/dgm
# the stripped binary (~62 MiB, most of it candle's kernels) nearly fills the 64 MiB that travel to a GPU
# machine; xz takes it to ~9 MB, and bench/gpu/run.sh unpacks it there
xz -T0 -6 -c "$out" >"$out.xz"
echo "built $out ($(du -h "$out" | cut -f1)) and $out.xz ($(du -h "$out.xz" | cut -f1)); CUDA 13.0, compute capability $CUDA_COMPUTE_CAP" >&2
