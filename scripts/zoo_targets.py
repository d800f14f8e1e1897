"""Check the embedded checkpoint set against its targets with lm-eval's own HF backend.

Runs both sample tasks on every checkpoint of a built set (`e2lmc zoo build`) through
lm-evaluation-harness's Hugging Face backend, writes the results in the ingestion
results format (one folder per task), scores them with the phase reference of the set,
and prints each target with its measured value:

- science task, final checkpoints: small < medium < large for each architecture;
- science task: the science model beats the web-only model at >= 80% of released checkpoints;
- everyday task: scientific compliance <= 0.3;
- science task: signal quality over released checkpoints >= 0.8.

    python scripts/zoo_targets.py zoo/default [--out zoo_targets/] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from e2lmc.formats.manifest import read_manifest
from e2lmc.formats.reference import read_reference
from e2lmc.formats.results import CheckpointResult, IngestionResults, write_results
from e2lmc.sandboxed.submission import open_submission
from e2lmc.sandboxed.tasks import load_task, run_task
from e2lmc.scoring.evaluation import evaluate
from e2lmc.scoring.program import format_row


def lm_eval_results(zoo: Path, task_dir: Path, batch_size: int) -> IngestionResults:
    """Evaluate a task folder on every checkpoint of the zoo with lm-eval's HFLM."""
    from lm_eval.models.huggingface import HFLM

    with tempfile.TemporaryDirectory() as workdir:
        submission = open_submission(task_dir, Path(workdir))
        task_dict = load_task(submission)
        n_samples = len(list(task_dict["tasks"][submission.task_name].eval_docs))
        results = IngestionResults(submission.task_name, submission.task_metric, True, n_samples)
        for entry in tqdm(read_manifest(zoo).checkpoints, desc=submission.task_name, unit="ckpt"):
            start = time.perf_counter()
            lm = HFLM(pretrained=str(zoo / entry.path), device="cpu", dtype="float32", batch_size=batch_size)
            metrics = run_task(submission, task_dict, lm)
            results.checkpoints.append(CheckpointResult(entry.id, metrics, time.perf_counter() - start))
    results.complete = True
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("zoo", type=Path)
    parser.add_argument("--out", type=Path, default=Path("zoo_targets"))
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    reference = read_reference(args.zoo / "reference")
    evaluations = {}
    for task_dir in sorted((args.zoo / "tasks").iterdir()):
        results = lm_eval_results(args.zoo, task_dir, args.batch_size)
        write_results(results, args.out / task_dir.name)
        evaluations[task_dir.name] = ev = evaluate(results, reference)
        print(f"\n{task_dir.name} ({results.task_metric}, {results.n_samples} samples)\n{format_row(ev.leaderboard)}")

    science = evaluations["e2lmc_science_cloze"]
    everyday = evaluations["e2lmc_everyday_endings"]
    final = {m: points[-1].value for m, points in science.curves.items()}
    print("\nTargets")
    for arch in ("arch1", "arch2"):
        values = [final[f"dense-{size}-{arch}"] for size in ("small", "medium", "large")]
        print(f"  science final {arch}: small {values[0]:.3f} < medium {values[1]:.3f} < large {values[2]:.3f}: "
              f"{'met' if values[0] < values[1] < values[2] else 'NOT met'}")
    sel = reference.scores.scientific_compliance
    web = {p.checkpoint.iteration: p.value for p in science.curves[sel.web_model]}
    released = [p for p in science.curves[sel.science_model] if p.checkpoint.role == "released"]
    wins = sum(p.value > web[p.checkpoint.iteration] for p in released) / len(released)
    print(f"  science model beats web-only at {wins:.0%} of released checkpoints (>= 80%): "
          f"{'met' if wins >= 0.8 else 'NOT met'}")
    cs = everyday.leaderboard.scientific_compliance
    print(f"  everyday task CS {cs:.3f} (<= 0.3): {'met' if cs <= 0.3 else 'NOT met'}")
    sq = science.leaderboard.signal_quality
    print(f"  science task SQ over released {sq:.3f} (>= 0.8): {'met' if sq >= 0.8 else 'NOT met'}")
    for model, s in science.signal_quality.items():
        print(f"    {model:<20} monotonicity {s.monotonicity:.3f} autocorrelation {s.autocorrelation:.3f} SQ {s.score:.3f}")


if __name__ == "__main__":
    main()
