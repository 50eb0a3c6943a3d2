#!/usr/bin/env bash
# Check that a torch image (a modelpack torch base, or a model image built on one) uses the GPU:
# runs it with `--gpus all`, shows what torch sees, and compares a matmul on the GPU with the
# same matmul on the CPU. Needs an NVIDIA GPU, its driver and the NVIDIA container toolkit.
#
# Usage: scripts/gpu-check.sh IMAGE        e.g. modelpack-base/torch:2.5.1-py3.11-cu124
# Exit status: 0 the GPU works and agrees with the CPU, 1 it does not, 2 usage.
set -euo pipefail

die() {
  echo "gpu-check: $1" >&2
  exit "${2:-1}"
}

[[ $# -eq 1 && -n "$1" && "$1" != -* ]] || die "usage: scripts/gpu-check.sh IMAGE" 2
IMAGE="$1"
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker image inspect "$IMAGE" >/dev/null 2>&1 || docker pull "$IMAGE" >/dev/null || die "no image $IMAGE"

# The model images run as an unprivileged user with an entrypoint: override both.
docker run --rm --gpus all --network none --user 0 --entrypoint python3 "$IMAGE" -c '
import sys
import torch

print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}")
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no GPU (driver, --gpus, or a CPU-only torch build?)")
for index in range(torch.cuda.device_count()):
    name = torch.cuda.get_device_name(index)
    major, minor = torch.cuda.get_device_capability(index)
    print(f"GPU {index}: {name} (compute capability {major}.{minor})")
torch.manual_seed(0)
a = torch.randn(1024, 1024, dtype=torch.float64)
b = torch.randn(1024, 1024, dtype=torch.float64)
on_cpu = a @ b
on_gpu = (a.cuda() @ b.cuda()).cpu()
difference = (on_cpu - on_gpu).abs().max().item()
print(f"matmul 1024x1024 float64: largest difference GPU vs CPU {difference:.3e}")
if not torch.allclose(on_cpu, on_gpu, rtol=1e-9, atol=1e-9):
    sys.exit("gpu-check: the GPU result differs from the CPU result")
print("gpu-check: ok")
' || die "$IMAGE failed the GPU check"
