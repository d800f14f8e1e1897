"""What the sandbox costs (docs/security.md): child start-up, and end-to-end ingestion.

Runs, in one process and one run, each isolation level this machine allows:
1. the plan stage of a small task (a child start, lm-eval building the task) — the
   difference to level `none` is the sandbox's cost per child start;
2. `ingest` of the science sample on every checkpoint of the default embedded set.

    python benchmarks/sandbox_cost.py [--zoo zoo/default] [--repeats 3] [--skip-ingest] 2>/dev/null

(ingestion's progress bars go to stderr; the table goes to stdout)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2lmc.embedded.world import SCIENCE_TASK  # noqa: E402
from e2lmc.ingestion.preflight import preflight
from e2lmc.ingestion.program import ingest
from e2lmc.limits import (
    Limits,  # noqa: E402
    SandboxSettings,
)
from e2lmc.sandboxed.sandbox import LEVELS, rank, strongest_level  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("zoo/default"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    submission = args.zoo / "tasks" / SCIENCE_TASK
    levels = [level for level in LEVELS if rank(level) <= rank(strongest_level())]
    print(f"levels available here: {', '.join(levels)}")
    plan_times: dict[str, float] = {}
    for level in levels:
        limits = Limits(sandbox=SandboxSettings(level=level))
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                preflight(submission, Path(tmp), limits)
                runs.append(time.perf_counter() - start)
        plan_times[level] = statistics.median(runs)
        print(f"plan stage (one child), level {level:10s}: median {plan_times[level]:.2f} s of {args.repeats} "
              f"({', '.join(f'{r:.2f}' for r in runs)}); sandbox cost {plan_times[level] - plan_times['none']:+.2f} s")
    if args.skip_ingest:
        return
    for level in levels:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            results = ingest(submission, args.zoo, Path(tmp) / "out", Limits(sandbox=SandboxSettings(level=level)))
            seconds = time.perf_counter() - start
        print(f"ingestion of {SCIENCE_TASK} on {len(results.checkpoints)} checkpoints, level {level:10s}: "
              f"{seconds:.1f} s")


if __name__ == "__main__":
    main()
