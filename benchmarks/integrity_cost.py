"""What the leaderboard's defences cost: ingestion before and after them, in one run.

Ingests the science sample on every checkpoint of the default embedded set with this tree
and with a baseline commit (checked out as a git worktree), alternating, each run a fresh
`python` process (its imports included), nothing else running: its metric is lm-eval's
own, computed by the trusted metric child. Then the same task with its metric computed by
a `process_results` of its own (a fresh score child per checkpoint, here; one child for
all checkpoints at the baseline).

    python benchmarks/integrity_cost.py [--zoo zoo/default] [--baseline 156ff73] [--repeats 2] [--custom-repeats 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCIENCE = "e2lmc_science_cloze"
RUN = """
import sys
from pathlib import Path
from e2lmc.ingestion.program import ingest
from e2lmc.limits import Limits
ingest(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Limits())
"""
OWN_METRIC = "def process(doc, results):\n    lls = [ll for ll, _ in results]\n    " \
             "return {'acc': float(max(range(len(lls)), key=lls.__getitem__) == doc['label'])}\n"


def own_metric_task(science: Path, folder: Path) -> Path:
    """The science sample with a `process_results` of its own (the same values)."""
    shutil.copytree(science, folder)
    task = next(p for p in folder.glob("*.yaml") if p.name != "metadata.yaml")
    task.write_text(task.read_text() + "\nprocess_results: !function own.process\n")
    (folder / "own.py").write_text(OWN_METRIC)
    return folder


def timed(tree: Path, submission: Path, zoo: Path) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", RUN, str(submission), str(zoo), out], check=True, cwd=tree,
                       env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=REPO / "zoo" / "default")
    parser.add_argument("--baseline", default="156ff73", help="the commit before the defences")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tree on lm-eval's metric")
    parser.add_argument("--custom-repeats", type=int, default=1, help="runs of each tree on the task's own metric")
    args = parser.parse_args()
    zoo = args.zoo.resolve()
    baseline = Path(tempfile.gettempdir()) / f"e2lmc-baseline-{args.baseline}"
    if not baseline.is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(baseline), args.baseline],
                       check=True, capture_output=True)
    trees = {"baseline": baseline, "this tree": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        tasks = {"lm-eval's metric": zoo / "tasks" / SCIENCE,
                 "its own process_results": own_metric_task(zoo / "tasks" / SCIENCE, Path(tmp) / "own")}
        print(f"ingestion of {SCIENCE} on {zoo} (each tree in turn; median):")
        for (name, task), repeats in zip(tasks.items(), (args.repeats, args.custom_repeats), strict=True):
            runs: dict[str, list[float]] = {tree: [] for tree in trees}
            for _ in range(repeats):
                for tree, path in trees.items():
                    runs[tree].append(timed(path, task, zoo))
            medians = {tree: statistics.median(seconds) for tree, seconds in runs.items()}
            print(f"  {name:26s} baseline {medians['baseline']:6.1f} s, this tree {medians['this tree']:6.1f} s: "
                  f"x{medians['this tree'] / medians['baseline']:.2f}  (runs: "
                  + "; ".join(f"{tree} {', '.join(f'{s:.1f}' for s in seconds)}" for tree, seconds in runs.items())
                  + ")")


if __name__ == "__main__":
    main()
