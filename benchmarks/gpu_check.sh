#!/usr/bin/env bash
# GPU check (issue 18, item 5): a Qwen2-0.5B-like reward model (random init, no download) trained in
# bf16 with DDP and FSDP (tokens/s, MFU), shared-prefix throughput, the data benchmark at 10M rankings.
#   bash benchmarks/gpu_check.sh --out DIR [--steps 300] [--peak-tflops 989] [--skip-data]
#   bash benchmarks/gpu_check.sh --dry-run --out DIR     # CPU, tiny config: what the test runs
# Writes DIR/gpu_check.json and DIR/gpu_check.md. Options: python benchmarks/gpu_check.py --help
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case " $* " in
  *" --dry-run "*) export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" CUDA_VISIBLE_DEVICES="" ;;
  *) command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv ;;
esac
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
