#!/usr/bin/env bash
# The GPU check, for any machine with NVIDIA GPUs: solves and verifies a full-size proof of
# compute and proof of VRAM through a prebuilt herd binary, and prints what they cost.
# No network needed. Exits non-zero on any mismatch or missed deadline.
#
#   scripts/gpu-check.sh [path/to/herd] [--json]
#
# Build the binary on a machine with Rust (no CUDA toolkit needed): cargo build --release -p herd-cli
set -euo pipefail
herd=${1:-target/release/herd}
shift || true
if [ ! -x "$herd" ]; then
    echo "gpu-check: no herd binary at $herd (build one: cargo build --release -p herd-cli)" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "gpu-check: nvidia-smi not found; relying on NVML" >&2

# cuBLAS and NVRTC are often installed as Python wheels (nvidia-cublas, nvidia-cuda-nvrtc)
# rather than system packages: put their lib directories on the loader's path.
extra=""
for lib in libcublas.so.13 libnvrtc.so.13 libcublas.so.12 libnvrtc.so.12; do
    if ! ldconfig -p 2>/dev/null | grep -q "$lib"; then
        found=$(find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$lib" -print 2>/dev/null | head -1 || true)
        [ -n "$found" ] && extra="$extra:$(dirname "$found")"
    fi
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$extra"
echo "gpu-check: LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >&2
exec timeout 300 "$herd" bench proof --gpu "$@"
