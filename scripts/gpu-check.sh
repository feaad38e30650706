#!/usr/bin/env bash
# The GPU paths the test suite cannot reach (CI has no GPU): CUDA device choice, NCCL, distillation on
# the GPU with one rank and with two ranks sharing it (gloo), the seed's gradient-averaging rule on
# CUDA, a whole `frugal compress` of the digits model on the GPU, and NVML power for the server.
# Needs an NVIDIA GPU and frugal's compression and serving packages importable by $PYTHON.
#
#   scripts/gpu-check.sh [OUT_DIR]        # writes OUT_DIR/digits (the artifact) and prints a log
set -euo pipefail
out=${1:-gpu-check}
py=${PYTHON:-python3}
mkdir -p "$out"
checks=$(mktemp --suffix=.py)  # a file, not stdin: the spawned distillation workers re-import it
trap 'rm -f "$checks"' EXIT

cat >"$checks" <<'PY'
import os, time
import onnxruntime
import torch
import torch.distributed as dist
from frugal.compression.config import CompressionConfig
from frugal.compression.device import distributed_backend, pick_device
from frugal.compression.distributed import Topology
from frugal.compression.steps.distillation import first_step_gradients, run_local_workers
from frugal.serving.server.power import open_nvml


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device visible"
    print("torch", torch.__version__, "|", torch.cuda.get_device_name(0), "| GPUs", torch.cuda.device_count())
    print("pick_device:", pick_device(), "rank 1 ->", pick_device(1))
    gpus = torch.cuda.device_count()
    print("backend, 1 rank per GPU:", distributed_backend("cuda", 1, gpus), f"| {gpus + 1} ranks on {gpus} GPU(s):", distributed_backend("cuda", gpus + 1, gpus))
    print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())

    meter = open_nvml()
    assert meter is not None, "NVML is not readable"
    meter.sample(); time.sleep(1.0); sample = meter.sample()
    print(f"nvml: {sample.watts:.1f} W, {sample.joules:.1f} J over ~1 s")

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    dist.init_process_group("nccl", rank=0, world_size=1)
    t = torch.arange(4.0, device="cuda"); dist.all_reduce(t); dist.destroy_process_group()
    print("nccl all_reduce (world 1):", t.tolist())

    config = CompressionConfig.model_validate(
        {"model": {"uri": "zoo://digits-mlp"}, "distillation": {"student": {"width": 0.25}, "batchSize": 64}, "output": "/nonexistent"}
    )
    single = first_step_gradients(Topology(0, 1, "127.0.0.1", 0), config)
    averaged = run_local_workers(2, first_step_gradients, config)
    worst = max(float((a - b).abs().max()) for a, b in zip(single, averaged, strict=True))
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(single, averaged, strict=True)), worst
    print(f"2 ranks on the GPU average to the 1-rank full-batch gradient: max |diff| {worst:.2e} over {len(single)} tensors")


if __name__ == "__main__":
    main()
PY
"$py" "$checks"

start=$(date +%s)
"$py" -m frugal.compression.compress_command --model zoo://digits-mlp --pruning structured:0.5 --fine-tune-epochs 5 \
  --distill --epochs 20 --student-width 0.5 --workers 2 \
  --quantization dynamic-int8 --quantization fp16 --max-drop 0.01 --repeats 3 --quiet \
  --out "$out/digits"
echo "frugal compress digits on the GPU (2 distillation workers): $(( $(date +%s) - start )) s"
