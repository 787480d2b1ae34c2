#!/usr/bin/env bash
# The checks a lent GPU session runs, as one command from the repository root:
#
#     OUT=outputs/gpu bash benchmarks/gpu_checks.sh
#
# 1. every test marked `cuda` (SDPA/flex/flash backends in bf16, grouped-GEMM MoE, linear attention,
#    NCCL at world size 1, static-cache decoding under CUDA graphs);
# 2. the compile benchmark (bf16, eager against torch.compile), the MoE layouts on the GPU, and decode
#    tokens/s with the static KV cache under `mode="reduce-overhead"`.
# Each step is bounded by a timeout (about 9 minutes in all). Everything goes to `$OUT/gpu.log` (the
# tests' whole output to `$OUT/cuda_tests.log`). It uses the machine's own python3 and packages; the
# project's pins do not apply there, so the log starts with the versions it ran under.
set -u
out=${OUT:-outputs/gpu}
mkdir -p "$out"
log="$out/gpu.log"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  echo "## tests marked cuda"
  timeout 200 python3 -m pytest -m cuda -q -rfE -p no:cacheprovider -o addopts="" --continue-on-collection-errors \
      -W ignore::DeprecationWarning tests/ >"$out/cuda_tests.log" 2>&1
  tail -30 "$out/cuda_tests.log"
  echo "## bench_decode (bf16, cuda, CUDA graphs)"
  timeout 120 python3 benchmarks/bench_decode.py --device cuda --dtype bfloat16 2>&1 | tail -8
  echo "## bench_compile (bf16, cuda)"
  timeout 150 python3 benchmarks/bench_compile.py --device cuda --dtype bfloat16 --batch 32 --repeats 10 2>&1 | tail -6
  echo "## bench_moe (bf16, cuda)"
  timeout 60 python3 benchmarks/bench_moe.py --device cuda --dtype bfloat16 --tokens 16384 2>&1 | tail -12
} 2>&1 | tee "$log"
