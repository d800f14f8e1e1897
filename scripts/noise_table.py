"""The noise floor's table: the spread of each task's scores across builds of the embedded set.

Reads the JSON files scripts/zoo_sweep.py wrote, one per build (scripts/noise_floor.sh runs
one per seed), and prints docs/zoo.md's table: per task, the mean and the standard deviation
across builds (n - 1 in the denominator) of the global score, SQ, RC and CS, and their
range; then the pooled deviations of the science tasks (the root mean square of their
deviations), which `e2lmc/scoring/uncertainty.py` prints beside every score on the set.

    python scripts/noise_table.py noise_floor/seed*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COLUMNS = ("score", "SQ", "RC", "CS")
NOT_SCIENCE = ("e2lmc_everyday_endings",)  # the at-chance control task: its spread is not a science task's


def spreads(runs: list[dict]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Each task's values per column across `runs` (zoo_sweep.py's reports), and the pooled
    standard deviation of each column over the science tasks (the root mean square of
    their sample standard deviations; tasks with one build are left out)."""
    tasks = list(dict.fromkeys(task for run in runs for task in run["tasks"]))
    values = {task: {column: np.array([run["tasks"][task][column] for run in runs if task in run["tasks"]], dtype=float)
                     for column in COLUMNS} for task in tasks}
    pooled = {}
    for column in COLUMNS:
        deviations = [v[column].std(ddof=1) for task, v in values.items()
                      if task not in NOT_SCIENCE and len(v[column]) > 1]
        if deviations:
            pooled[column] = float(np.sqrt(np.mean(np.square(deviations))))
    return values, pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="zoo_sweep.py --json files, one per build")
    args = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in args.runs]
    seeds = ", ".join(str(run.get("seed", "?")) for run in runs)
    devices = ", ".join(sorted({run.get("device", "cpu") for run in runs}))
    print(f"{len(runs)} builds (seeds {seeds}; devices {devices})\n")
    print("| task | builds | " + " | ".join(f"{c}: mean ± sd (range)" for c in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    values, pooled = spreads(runs)
    for task, columns in values.items():
        cells = []
        for column in COLUMNS:
            v = columns[column]
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            cells.append(f"{v.mean():.3f} ± {sd:.3f} ({v.min():.3f}–{v.max():.3f})")
        print(f"| `{task}` | {len(columns['score'])} | " + " | ".join(cells) + " |")
    print("\npooled over the science tasks (root mean square of their deviations):")
    print(", ".join(f"{c} {d:.3f}" for c, d in pooled.items()))


if __name__ == "__main__":
    main()
