#!/usr/bin/env bash
# GPU check: seeded sampling on CUDA vs CPU (fp32, bf16), the hf: reward in bf16 vs fp32, the gradient
# signal, a Ray actor with num_gpus=1, 4 DPO steps under `accelerate launch`, greedy eval answers,
# held-out gold pairs and a tiny `pvar run` with `device:` set. One line per check; exit 1 on a
# failure. Needs a CUDA machine with pvar set up (bash scripts/setup.sh --dev); no hub, no vLLM.
#
#   bash scripts/gpu-check.sh            # on the first CUDA device
#   bash scripts/gpu-check.sh --quick    # tiny models only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec timeout 600 "$PY" scripts/gpu_check.py "$@"
