"""The trusted metric process: responses in, lm-eval's own metric out, no code of the submission.

Started by `sandboxed.isolation.ScoreChild.trusted` as `python -m e2lmc.sandboxed.confine
CONFINEMENT e2lmc.metrics.child PLAN_DIR`: it runs only this package's code and lm-eval's,
but on the submission's data (its regular expressions, its targets), so it is confined
and time-limited like any child, and it never sees the submission's folder. It reads
plan.json, rebuilds the task (`trusted.py`), answers "ready", then answers each line of
responses on its stdin with the metric's value, in the JSON lines of `sandboxed/child.py`.
"""

from __future__ import annotations

import json
import os
import sys

from ..errors import first_line
from ..formats.plan import read_plan


def main(plan_dir: str) -> int:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # lm-eval's prints go to stderr

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    sys.modules["evaluate"] = None  # type: ignore[assignment] - lm-eval loads an unknown metric through it: never here
    try:
        from .trusted import TrustedMetric

        metric = TrustedMetric(read_plan(plan_dir))
        send({"ready": True})
        for line in sys.stdin:
            responses = [tuple(v) if isinstance(v, list) else v for v in json.loads(line)["responses"]]
            values = metric.values(responses)
            send({"value": values[metric.plan.task_metric], "metrics": values})
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence for the parent
        send({"error": f"lm-eval could not compute the task's metric: {type(exc).__name__}: {first_line(exc, 300)}"})
        return 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
