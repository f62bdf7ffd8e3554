#!/usr/bin/env bash
# Every check that needs a GPU, in one run on a bare GPU machine (PyTorch, torchvision, transformers; no Ray):
# the GPU check, the precision benchmark (the shapes model at its batch and at a compute-bound one; the seed
# model with `auto` timing bf16, fp32 and fp16 on its own step), the serving benchmark's direct calls, and the
# seed's model under torch.compile at batch 512 (at 256, eager and compiled gave 15.8 % and 22.3 % MFU on an
# H200), each output kept in OUT.
# Carry .whl (`make gpu-check-wheels`) with the tree. Usage: benchmarks/gpu/device_checks.sh OUT [PYTHON]
set -uo pipefail
out=${1:?usage: device_checks.sh OUT [PYTHON]}
python=${2:-python3}
mkdir -p "$out"
"$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/mmray-site .whl/*.whl || exit 1
export PYTHONPATH=platform:/tmp/mmray-site:.whl/site PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
status=0
run() {  # run NAME SECONDS ARGS...: one check, its output in OUT/NAME.log
    local name=$1 seconds=$2
    shift 2
    timeout "$seconds" "$python" "$@" 2>&1 | tee "$out/$name.log" || status=1
}
run check 300 benchmarks/gpu/check.py --out "$out"
run precision 60 benchmarks/precision.py --device cuda --batch 256 --steps 30 --rounds 3
run precision-4096 60 benchmarks/precision.py --device cuda --batch 4096 --steps 5 --rounds 3
run seed-auto 60 benchmarks/gpu/check.py --seed-only --precision auto --steps 10 --out "$out/auto"
run serve-direct 50 benchmarks/serve_throughput.py --direct-only --seconds 3 --out "$out"
run compiled 120 benchmarks/gpu/check.py --seed-only --compile --batch 512 --out "$out/compiled"
exit $status
