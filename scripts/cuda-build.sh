#!/usr/bin/env bash
# Builds real CUDA binaries (the test suite with `--features cuda` and the GPU bench) on a
# machine without CUDA or a GPU, from registry packages only:
#   - pinned CUDA 13.0 (update 2) parts from PyPI: nvcc and its compiler parts (nvvm, crt,
#     CCCL headers), the runtime headers, cuBLAS, NVRTC, cuRAND (newer PTX would not load on driver 580);
#   - a stand-in `nvidia-smi` answering compute capability 9.0 (H100/H200) for dfdx's build
#     script;
#   - a link-time stand-in for `libcuda.so.1` (the driver library is only on GPU machines):
#     every driver entry point the binaries reference, as an empty function.
# The binaries use the GPU machine's own CUDA libraries at run time (see README, "GPU").
#
# Usage: bash scripts/cuda-build.sh [output dir, default target/cuda-bin]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/cuda-bin}
toolkit=target/cuda-toolkit
root=$toolkit/unpacked/nvidia/cu13
stubs=$toolkit/stubs

packages=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.88
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

if [ ! -f "$toolkit/unpacked/.complete-13.0.88" ]; then
  echo "== downloading ${#packages[@]} CUDA 13.0 wheels from PyPI"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$toolkit/wheels" "${packages[@]}"
  for w in "$toolkit"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$toolkit/unpacked"
  done
  chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
  touch "$toolkit/unpacked/.complete-13.0.88"
fi

echo "== stand-ins: nvidia-smi (compute capability 9.0) and unversioned library names"
mkdir -p "$stubs"
cat > "$stubs/nvidia-smi" <<'SMI'
#!/bin/sh
printf 'compute_cap\n9.0\n'
SMI
chmod +x "$stubs/nvidia-smi"
# The linker looks for libX.so; the wheels ship libX.so.<major>.
for lib in cublas cublasLt nvrtc curand cudart; do
  real=$(ls "$root"/lib/lib$lib.so.* 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] && ln -sf "$(realpath "$real")" "$stubs/lib$lib.so"
done
ls -la "$stubs"

# libcuda.so.1 stand-in: every driver entry point cudarc declares, as an empty function.
# Only the linker sees it; at run time the GPU machine's driver library is loaded instead.
cudarc=$(cargo metadata --format-version 1 --features cuda 2>/dev/null \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')
grep -ohE 'pub fn (cu[A-Za-z0-9_]+)\(' "$cudarc/src/driver/sys.rs" \
  | sed -E 's/pub fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u > "$stubs/libcuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
echo "libcuda.so stand-in: $(wc -l < "$stubs/libcuda_stub.c") entry points"

echo "== building with --features cuda (CUDA 13.0 nvcc, sm_90)"
export CUDA_ROOT="$PWD/$root"
export PATH="$PWD/$stubs:$PWD/$root/bin:$PATH"
export LIBRARY_PATH="$PWD/$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR=target/cuda
targets=(--tests --example gpu_step_bench)
cargo build --release --features cuda "${targets[@]}"
mkdir -p "$out"
cargo build --release --features cuda "${targets[@]}" --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' \
  | while read -r exe; do cp "$exe" "$out/"; done
echo "== binaries (copy $out to the GPU machine; run with the machine's CUDA libraries)"
total=0
for f in "$out"/*; do
  size=$(stat -c %s "$f"); total=$((total + size))
  printf '%10d  %s\n' "$size" "$f"
done
printf '%10d  total\n' "$total"
# Binaries that use the GPU need the driver and the CUDA 13 libraries; the others (CPU-only
# tests) need neither, as the linker drops unused libraries.
for f in "$out"/*; do
  if readelf -d "$f" | grep -q 'libcuda.so.1'; then
    echo "== $f needs:"
    readelf -d "$f" | grep NEEDED
  fi
done
