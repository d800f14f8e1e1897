#!/bin/bash
# The embedded set's noise floor across seeds, on a GPU machine in one call (docs/zoo.md,
# "The noise floor"). Trains the default set once per seed of $SEEDS on the GPU (float32:
# the recipe of `e2lmc zoo build`, not its bits), runs scripts/zoo_sweep.py's six tasks on
# each (one process per seed, side by side) and writes seed<K>.json to $OUT, after each task,
# packed into $OUT/seeds.tgz at the end (the device tool brings back only a few files);
# then, here or anywhere:  tar xzf seeds.tgz && python scripts/noise_table.py seed*.json
# It also builds the tiny set with the pinned CPU kernels and says whether its weights are the
# organizers' on this machine's processor, and compares its kernels' fingerprint with the
# organizers' processor's (scripts/kernel_fingerprint.py).
# Where lm-eval is not installed, carry it and its missing dependencies as wheels in .whl/
# (name it in the device tool's carry where .whl/ is git-ignored); they are unpacked into
# /tmp/site, which a .pth file puts on every Python's path (the task children's too: they get
# no PYTHONPATH of ours).
set -u
OUT=$(realpath -m "${OUT:-noise_floor}"); mkdir -p "$OUT"; rm -f "$OUT/seeds.tgz"
SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7"}  # eight side by side on 16 cores: training ~350 s, evaluation ~165 s
PRESET=${PRESET:-default} DEVICE=${DEVICE:-cuda}  # PRESET=tiny DEVICE=cpu: a dry run of this script
SECONDS_PER_SEED=${SECONDS_PER_SEED:-570}  # a seed still running then stops; its JSON keeps the tasks done
SWEEP_ARGS=${SWEEP_ARGS:-}  # a changed recipe for every seed, e.g. "--set warmup_steps=48" (zoo_sweep.py's options)
if ! python3 -c "import lm_eval" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    echo /tmp/site > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/e2lmc-noise-floor.pth"
fi
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 1
    lscpu | grep -E "^(Model name|Vendor ID|CPU\(s\))"
    echo "flags: $(grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
mkdir -p /tmp/noise_logs
for seed in $SEEDS; do
    timeout "$SECONDS_PER_SEED" python3 scripts/zoo_sweep.py --preset "$PRESET" --seed "$seed" --device "$DEVICE" \
        --sandbox none --threads 2 --out "/tmp/zoo$seed" --json "$OUT/seed$seed.json" $SWEEP_ARGS \
        > "/tmp/noise_logs/seed$seed.log" 2>&1 &
done
python3 - >> "$OUT/machine.txt" 2>&1 <<'EOF'
import time
from pathlib import Path

from e2lmc.embedded import sets, zoo

start = time.perf_counter()
zoo.build("tiny", Path("/tmp/tiny"))
print(f"tiny set, pinned CPU kernels, {time.perf_counter() - start:.0f} s:", sets.provenance(Path("/tmp/tiny")))
EOF
python3 scripts/kernel_fingerprint.py --json "$OUT/fingerprint.json" > /dev/null 2>&1 &&
    python3 scripts/kernel_fingerprint.py --compare benchmarks/results/kernel_fingerprint_intel_xeon.json \
        "$OUT/fingerprint.json" >> "$OUT/machine.txt"  # where this processor parts from the organizers'
wait
cat "$OUT/machine.txt"
compgen -G "$OUT/seed*.json" > /dev/null &&
    tar -C "$OUT" -czf "$OUT/seeds.tgz" $(cd "$OUT" && ls seed*.json) && rm "$OUT"/seed*.json
for seed in $SEEDS; do
    echo "== seed $seed"; grep -v -E "Warning|warn\(|^\s*$" "/tmp/noise_logs/seed$seed.log" | tail -n 12
done | tee "$OUT/logs.txt"
