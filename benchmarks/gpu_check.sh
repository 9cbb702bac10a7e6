#!/usr/bin/env bash
# GPU check of bmstudy: train step (128^3 batch 4, fp32 + mixed precision), peak device memory,
# whole-case inference (0.833 mm brain, 27 windows) at batch 1/4/8, mirrored strategy on all GPUs,
# paper-profile training smoke test. Writes JSON; under 8 minutes on one GPU (budget 450 s + start-up).
#
#   bash benchmarks/gpu_check.sh                 # -> ${OUT:-.}/gpu_check.json
#   bash benchmarks/gpu_check.sh --quick         # reduced sizes, runs on a CPU (tested without a GPU)
#
# Extra arguments go to benchmarks/gpu_check.py (e.g. --budget-s 300, --sections inference);
# GPU_CHECK_TIMEOUT (default 480 s) is the hard limit of the whole script.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"; elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
out="${OUT:-.}/gpu_check$([[ " $* " == *" --quick "* ]] && echo _quick).json"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
timeout "${GPU_CHECK_TIMEOUT:-480}" "$py" benchmarks/gpu_check.py --json "$out" "$@"
echo "wrote $out"
