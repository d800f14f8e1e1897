"""How much of a score on the embedded set is noise, and whether two runs differ by more.

The embedded set is one build of a small recipe: another seed draws another world and
trains other models, and a task's scores move with it. docs/zoo.md (*The noise floor*)
measured how much: eight builds of the default preset, six tasks (`scripts/noise_floor.sh`,
`scripts/noise_table.py`). Its deviations, pooled over the science tasks, are printed
beside every score of a run on that set ("0.86 ± 0.07 across builds of this set"), and a
change between two runs of a task smaller than the score's is called noise in the advice.
Scores on any other set carry no ±: their spread was never measured (and on the real
series it would come from hidden checkpoints).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..formats.reference import ReferenceData
from ..formats.results import RESULTS_FILE, read_results
from ..formats.series import EMBEDDED_PHASE, embedded_description
from .evaluation import Evaluation, Leaderboard


@dataclass(frozen=True)
class Spread:
    """One standard deviation of each leaderboard column across builds of a set."""

    score: float
    signal_quality: float
    ranking_consistency: float
    scientific_compliance: float
    builds: int  # how many builds it was measured over


# docs/zoo.md, *The noise floor*: the root mean square of five science tasks' standard
# deviations over eight builds (seeds 0-7) of the default preset
DEFAULT_SET_SPREAD = Spread(score=0.065, signal_quality=0.116, ranking_consistency=0.181, scientific_compliance=0.086,
                            builds=8)
MEASURED = {embedded_description("default"): DEFAULT_SET_SPREAD}


def build_spread(reference: ReferenceData) -> Spread | None:
    """The measured spread of the set `reference` describes; None where none was measured."""
    return MEASURED.get(reference.description) if reference.phase == EMBEDDED_PHASE else None


def spread_line(board: Leaderboard, spread: Spread) -> str:
    """The printed row's uncertainty: each score with its spread across builds."""
    return (f"on this set: score {board.score:.2f} ± {spread.score:.2f} across builds of this set (SQ ± "
            f"{spread.signal_quality:.2f}, RC ± {spread.ranking_consistency:.2f}, CS ± "
            f"{spread.scientific_compliance:.2f}; zoo.md, The noise floor)")


@dataclass(frozen=True)
class PreviousRun:
    """What a run's output folder held before this run replaced it."""

    scores: dict[str, float]  # its scores.json
    plan_digest: str | None  # the task it scored (ingestion results' plan digest)
    checkpoints: frozenset[str]  # the checkpoints it ran on: which set
    weights_digest: str = ""  # and which build of it


def previous_run(output: Path, scores_file: str) -> PreviousRun | None:
    """The earlier run in `output` (the same submission's folder), if it finished; None for
    anything unreadable there, which the new run then replaces."""
    try:
        scores = json.loads((output / scores_file).read_text())
        results = read_results(output / "res") if (output / "res" / RESULTS_FILE).is_file() else None
        if not isinstance(scores, dict) or not isinstance(scores.get("score"), (int, float)):
            return None
        values = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    except Exception:  # noqa: BLE001 - a stale or hostile file is no previous run, never a failed run
        return None
    if not all(math.isfinite(v) for v in values.values()):
        return None
    if results is None:
        return PreviousRun(values, None, frozenset())
    return PreviousRun(values, results.plan_digest, frozenset(c.id for c in results.checkpoints),
                       results.weights_digest)


def compare_runs(previous: PreviousRun | None, ev: Evaluation) -> str | None:
    """One sentence on the change from the previous run of a task on the same set: within
    the set's noise or beyond it. None without a previous run, for the same task again,
    another set, a set whose spread was not measured, or where either run was invalid."""
    board, spread = ev.leaderboard, build_spread(ev.reference)
    if previous is None or spread is None:
        return None
    if ev.results.plan_digest is not None and previous.plan_digest == ev.results.plan_digest:
        return None
    if (previous.checkpoints != frozenset(c.id for c in ev.results.checkpoints)
            or previous.weights_digest != ev.results.weights_digest):
        return None
    if not board.valid or previous.scores.get("valid") != 1:
        return None
    before, now = previous.scores["score"], board.score
    change = now - before
    if abs(change) < spread.score:
        return (f"This version of the task scores {now:.3f} and the previous run {before:.3f}: the change "
                f"({change:+.3f}) is smaller than the spread of scores across builds of this set "
                f"(± {spread.score:.3f}), so on the embedded set it may be noise rather than an improvement; judge "
                "the versions on what they ask, or change more before you compare again.")
    return (f"This version of the task scores {now:.3f} and the previous run {before:.3f}: the change ({change:+.3f}) "
            f"is larger than the spread of scores across builds of this set (± {spread.score:.3f}).")
