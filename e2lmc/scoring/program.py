"""The scoring program: ingestion results + a phase's reference data -> scores.json and the report.

Codabench's scoring step (`scoring_program/score.py` -> `e2lmc score`): reads
`/app/input/res` (what ingestion wrote, and the worker's `metadata` about how it went) and
`/app/input/ref` (the phase's reference data), asks the alignment judge where the phase
enables it, and writes `scores.json` (the leaderboard row) and `detailed_results.html` to
`/app/output`. A failed or incomplete ingestion ends in one sentence, never a score.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from ..errors import InvalidSubmission, UserError, output_folder
from ..formats.reference import read_reference
from ..formats.results import RESULTS_FILE, read_results
from .evaluation import Evaluation, Leaderboard, evaluate
from .judge import draw, judge_samples
from .uncertainty import PreviousRun, build_spread, compare_runs, spread_line

INTEGER_COLUMNS = ("valid", "n_samples", "custom_code")

CODABENCH_METADATA = "metadata"  # written by the Codabench worker next to our results
SCORES_FILE = "scores.json"
REPORT_FILE = "detailed_results.html"
SQ_ONLY_NOTE = ("signal quality only: ranking consistency, scientific compliance and the global score need the "
                "hidden checkpoints, which only the competition's scoring sees")


def check_ingestion_status(res_dir: Path) -> None:
    """Fail if the Codabench worker recorded a non-zero exit for the ingestion program, or
    any exit at all for the submission as a program of its own."""
    path = res_dir / CODABENCH_METADATA
    if not path.is_file():
        return  # local runs have no worker metadata
    try:
        status = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return
    status = status if isinstance(status, dict) else {}
    code = status.get("ingestionExitCode")
    if isinstance(code, int) and code != 0:
        raise UserError(f"The ingestion step failed (exit code {code}, see its log), so there are no complete "
                        "results to score.")
    if isinstance(status.get("exitCode"), int):
        # Codabench runs a submission's own metadata.yaml `command` beside the ingestion program, with the
        # same output folder: whatever the ingestion step wrote may have been replaced (docs/security.md).
        raise InvalidSubmission("The submission ran a program of its own (a 'command' in its metadata.yaml) "
                                "beside the ingestion step, so its results cannot be trusted; a submission is "
                                "task files only: remove the command.")


def write_scores(leaderboard: Leaderboard, out_dir: Path, sq_only: bool = False) -> Path:
    """`scores.json`: a flat object of finite numbers keyed by leaderboard column."""
    row = leaderboard.as_dict(sq_only)
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:  # never expected: every score function is defined everywhere
        raise RuntimeError(f"non-finite scores: {bad}")
    path = out_dir / SCORES_FILE
    path.write_text(json.dumps({k: round(v, 6) for k, v in row.items()}, indent=1) + "\n")
    return path


def format_row(leaderboard: Leaderboard, sq_only: bool = False) -> str:
    """The leaderboard row as a small two-line table for the terminal and logs."""
    row = leaderboard.as_dict(sq_only)
    widths = {k: max(len(k), 8) for k in row}
    head = "  ".join(k.rjust(widths[k]) for k in row)
    body = "  ".join(
        (f"{v:.0f}" if k in INTEGER_COLUMNS or (k == "alignment" and v < 0) else f"{v:.4f}").rjust(widths[k])
        for k, v in row.items()
    )
    return f"{head}\n{body}"


def run_scoring(res_dir: Path, ref_dir: Path, out_dir: Path, allow_partial: bool = False,
                previous: PreviousRun | None = None) -> Evaluation:
    """The scoring step, as Codabench runs it: scores.json, then the report (and its CSV);
    `previous`: a local run's earlier result, which the report's advice compares."""
    check_ingestion_status(res_dir)
    if not (res_dir / RESULTS_FILE).is_file():
        raise UserError(
            f"{res_dir} holds no {RESULTS_FILE}: the ingestion step produced no results to score."
        )
    results = read_results(res_dir)
    reference = read_reference(ref_dir)
    if not results.complete and not allow_partial:
        done = len(results.done_ids())
        raise UserError(
            f"Ingestion results are incomplete: the ingestion step stopped after {done} checkpoint(s)."
        )
    drawn = draw(results.alignment_samples, results.plan_digest, reference.alignment.secret)
    alignment = judge_samples(drawn, reference.alignment)  # never raises for the judge's sake
    evaluation = evaluate(results, reference, allow_partial, alignment)
    output_folder(out_dir, "--output")
    write_scores(evaluation.leaderboard, out_dir, reference.sq_only)
    from .report import write_report  # matplotlib: only once there is something to draw

    write_report(evaluation, out_dir / REPORT_FILE, previous)
    return evaluation


def summary(evaluation: Evaluation, out_dir: Path, previous: PreviousRun | None = None) -> list[str]:
    """The step's log: the leaderboard row (with its spread across builds where it was
    measured), what it leaves out, the broken rules, the change from `previous`, the files."""
    sq_only, board = evaluation.reference.sq_only, evaluation.leaderboard
    spread = build_spread(evaluation.reference)
    compared = compare_runs(previous, evaluation)
    return [format_row(board, sq_only), *([spread_line(board, spread)] if spread and not sq_only else []),
            *([SQ_ONLY_NOTE] if sq_only else []),
            *(f"invalid submission: {problem}." for problem in evaluation.verdict.problems),
            *([compared] if compared else []),
            f"wrote {out_dir / SCORES_FILE} and {out_dir / REPORT_FILE}"]
