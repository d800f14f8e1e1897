"""The commands behind Codabench's two steps: `e2lmc ingest` (prediction) and `e2lmc score` (scoring).

`ingestion_program/ingest.py` and `scoring_program/score.py` call these with Codabench's
paths, which are also their defaults here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..formats.manifest import MANIFEST_FILE
from ..formats.results import RESULTS_FILE
from .options import add_command, add_run_limits, run_limits

CODABENCH_SUBMISSION = Path("/app/ingested_program")
CODABENCH_INPUT_DATA = Path("/app/input_data")
CODABENCH_RES = Path("/app/input/res")
CODABENCH_REF = Path("/app/input/ref")
CODABENCH_OUTPUT = Path("/app/output")


def _ingest(args: argparse.Namespace) -> int:
    from ..ingestion.program import ingest

    start = time.perf_counter()
    results = ingest(args.submission, args.input_data, args.output, run_limits(args), manifest_name=args.manifest,
                     checkpoint_root=args.checkpoint_root)
    print(f"evaluated task '{results.task_name}' ({results.task_metric}) on {len(results.checkpoints)} checkpoints "
          f"in {time.perf_counter() - start:.0f} s; wrote {args.output / RESULTS_FILE}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from ..scoring.program import run_scoring, summary

    print("\n".join(summary(run_scoring(args.res, args.ref, args.output, args.allow_partial), args.output)))
    return 0


def add_program_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "ingest",
        help="run a submitted task on every checkpoint of a manifest (the Codabench prediction step)",
        description="Plan the submitted lm-eval task in a separate process, evaluate its requests on every "
        "checkpoint of the manifest, score them with the task's own code and write ingestion_results.json. "
        "A rerun resumes. Defaults are Codabench's prediction-step paths.",
        examples=["e2lmc ingest --submission my_task/ --input-data zoo/default --output /tmp/res",
                  "e2lmc ingest                                # Codabench's paths (/app/ingested_program, "
                  "/app/input_data, …)"],
    )
    p.add_argument("--submission", type=Path, default=CODABENCH_SUBMISSION,
                   help="the submission, a folder or zip (default: %(default)s)")
    p.add_argument("--input-data", type=Path, default=CODABENCH_INPUT_DATA,
                   help="folder holding the checkpoint manifest (default: %(default)s)")
    p.add_argument("--manifest", default=MANIFEST_FILE,
                   help="the manifest's file name in that folder; a bundle has one per phase (default: %(default)s)")
    p.add_argument("--checkpoint-root", type=Path,
                   help="the folder the manifest's relative paths lie under, e.g. /app/data where the organizers "
                        "placed the checkpoints (default: the --input-data folder)")
    p.add_argument("--output", type=Path, default=CODABENCH_OUTPUT, help="where to write (default: %(default)s)")
    add_run_limits(p)
    p.set_defaults(func=_ingest)

    p = add_command(
        sub, "score",
        help="score ingestion results against a phase's reference data (the Codabench scoring step)",
        description="Compute the leaderboard scores of one submission and write scores.json and "
        "detailed_results.html. Defaults are Codabench's scoring-step paths.",
        examples=["e2lmc score --res run_output/my_task/res --ref zoo/default/reference --output /tmp/scores"],
    )
    p.add_argument("--res", type=Path, default=CODABENCH_RES, help="ingestion output (default: %(default)s)")
    p.add_argument("--ref", type=Path, default=CODABENCH_REF, help="the phase's reference data (default: %(default)s)")
    p.add_argument("--output", type=Path, default=CODABENCH_OUTPUT, help="where to write (default: %(default)s)")
    p.add_argument("--allow-partial", action="store_true",
                   help="score whatever checkpoints were evaluated instead of failing on incomplete results")
    p.set_defaults(func=_score)
