"""Try settings of the embedded set quickly: train, score probe tasks, print the scores.

Builds a variant of a preset (the real `zoo` training code; the preset and the world's
mixture constants overridden from the command line), then runs the two sample tasks and
the held-out-phrasing tasks (scripts/heldout_tasks.py) through ingestion and scoring, and
prints each task's leaderboard row and the final checkpoints' values (small, medium,
large of arch1 and arch2, then web-only). docs/zoo.md's settings were chosen with it. It
runs itself again with the kernels pinned (e2lmc/embedded/kernels.py) and trains in that
process, where the overrides are: the weights are those `e2lmc zoo build` would train
(`--native-kernels`: the processor's own kernels instead, for the recipe's spread across seeds).
With `--device cuda` it trains and evaluates (in float32) on a GPU instead, for the
noise floor across seeds (scripts/noise_floor.sh): the same recipe, not the same bits.

    python scripts/zoo_sweep.py --preset default --set seq_len=1024 batch_size=1 \\
        --world ZIPF_EXPONENT=1.2 --form statement=0.5 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from e2lmc.embedded import world as world_module
from e2lmc.embedded import zoo
from e2lmc.embedded.kernels import kernels_pinned, pinned_environment
from e2lmc.formats.reference import read_reference
from e2lmc.ingestion.program import ingest
from e2lmc.limits import EngineSettings, Limits, SandboxSettings
from e2lmc.sandboxed.sandbox import CHOICES
from e2lmc.scoring.evaluation import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from heldout_tasks import write_heldout_tasks  # noqa: E402


def _parse(pairs: list[str]) -> dict[str, float]:
    return {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}


def preset_changes(preset: zoo.Preset, pairs: list[str]) -> dict[str, int | float]:
    """`field=value` texts as the preset's fields, each of its type (--set)."""
    kinds = {f.name: f.type for f in dataclasses.fields(preset)}
    return {k: (float if "float" in kinds[k] else int)(v) for k, v in (p.split("=", 1) for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--set", nargs="*", default=[], help="preset fields, e.g. seq_len=1024 steps=1500")
    parser.add_argument("--world", nargs="*", default=[], help="world constants, e.g. ZIPF_EXPONENT=1.2")
    parser.add_argument("--form", nargs="*", default=[], help="FORM_WEIGHTS entries, e.g. statement=0.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--out", type=Path, help="where to build (default: a new temporary folder)")
    parser.add_argument("--device", default="cpu", help="where to train and evaluate, e.g. cuda (default: cpu)")
    parser.add_argument("--sandbox", default="auto", choices=CHOICES, help="the task children's sandbox level")
    parser.add_argument("--native-kernels", action="store_true",
                        help="train on this processor's own kernels, not the organizers' bits (a default build took "
                             "434-513 s on two Xeon cores, 1,160 s pinned): for the recipe's spread across seeds")
    args = parser.parse_args()
    if not args.native_kernels and not kernels_pinned():  # before torch computes: it picks its kernels at first use
        os.execve(sys.executable, [sys.executable, *sys.argv], pinned_environment(dict(os.environ)))
    torch.set_num_threads(args.threads)
    preset = zoo.PRESETS[args.preset]
    preset = dataclasses.replace(preset, **preset_changes(preset, args.set))
    for name, value in _parse(args.world).items():
        setattr(world_module, name, value)
    world_module.FORM_WEIGHTS.update(_parse(args.form))

    out = args.out or Path(tempfile.mkdtemp(prefix="zoo_sweep_"))
    start = time.perf_counter()
    zoo.PRESETS[preset.name] = preset
    zoo.build(preset.name, out, args.seed, device=args.device, native_kernels=args.native_kernels)
    build_seconds = time.perf_counter() - start
    limits = Limits(engine=EngineSettings(devices=(args.device,), dtype="float32", threads=args.threads),
                    sandbox=SandboxSettings(level=args.sandbox))
    tasks = [out / "tasks" / world_module.SCIENCE_TASK, out / "tasks" / world_module.EVERYDAY_TASK,
             *write_heldout_tasks(out / "heldout", args.seed)]
    reference = read_reference(out / "reference")
    report = {"preset": dataclasses.asdict(preset), "world": _parse(args.world), "forms": world_module.FORM_WEIGHTS,
              "seed": args.seed, "device": args.device, "torch": torch.__version__,
              "kernels": "native" if args.native_kernels or args.device != "cpu" else "pinned",
              "build_seconds": round(build_seconds), "tasks": {}}
    for task in tasks:
        ev = evaluate(ingest(task, out, out / "results" / task.name, limits), reference)
        board = ev.leaderboard
        finals = {m: round(points[-1].value, 3) for m, points in ev.curves.items()}
        report["tasks"][task.name] = {"score": round(board.score, 4), "SQ": round(board.signal_quality, 3),
                                      "RC": round(board.ranking_consistency, 3),
                                      "CS": round(board.scientific_compliance, 3), "finals": finals,
                                      "n_samples": ev.results.n_samples,  # and every curve, to rescore offline:
                                      "curves": {m: [round(p.value, 4) for p in ps] for m, ps in ev.curves.items()}}
        print(f"{task.name:<24} score {board.score:.3f}  SQ {board.signal_quality:.3f}  "
              f"RC {board.ranking_consistency:.3f}  CS {board.scientific_compliance:.3f}  "
              f"finals {' '.join(f'{v:.2f}' for v in finals.values())}", flush=True)
        if args.json:  # after each task: a run stopped early keeps what it measured
            args.json.write_text(json.dumps(report, indent=1))
    print(f"build {build_seconds:.0f} s, total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
