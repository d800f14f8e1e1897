#!/bin/bash
# The engine's GPU checks in one call (docs/engine.md): the real 1B shape at 2,048-token
# five-shot prompts, against lm-eval's HF backend; then where the passes' time goes (torch profiler).
# Run from the repository root with lm-eval's wheel (and dill) in .whl/ and the embedded
# tokenizer in zoo/default/tokenizer; figures go to $OUT (or ./gpu_check).
set -u
OUT=$(realpath -m "${OUT:-gpu_check}"); mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
cd benchmarks
python3 real_shapes.py --shape 1b --checkpoints 2 --samples 1000 --prompt-tokens 2040 --lm-eval-samples 150 \
    --json "$OUT/1b_2048.json" 2>&1 | grep -v "Loading weights" | tee "$OUT/1b_2048.log"
python3 real_shapes.py --shape 1b --checkpoints 1 --samples 300 --prompt-tokens 2040 --lm-eval-samples 0 \
    --profile "$OUT/1b_profile.txt" --json "$OUT/1b_2048_profiled.json" 2>&1 | grep -v "Loading weights" | tail -30
head -40 "$OUT/1b_profile.txt"
