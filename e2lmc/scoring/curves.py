"""Signal quality for curves a participant measured: `e2lmc score-curves FILE`.

Accepts the organizers' published JSON (`{"data": {model: {"iteration": [...],
"gtokens": [...], benchmark: [...]}}}`), a JSON list of records, a CSV, or this
project's own `ingestion_results.json`; records have a `model`, an `iteration` and/or
`tokens` (`gtokens` in billions), and one numeric column per benchmark. The default
checkpoint selection is the organizers': iterations that are multiples of 4000, at most
206B tokens; with a phase's reference data, its own SQ selection (what the scorer uses).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..formats.reference import ReferenceData, read_reference
from ..formats.results import RESULTS_KIND, compared_metrics, metric_sign
from ..formats.series import iterations_to_tokens
from .formulas import SignalQuality, signal_quality

DEFAULT_EVERY_ITERATIONS = 4000
DEFAULT_MAX_TOKENS = 206e9
POSITION_KEYS = ("model", "iteration", "tokens", "gtokens")


@dataclass(frozen=True)
class CurvePoint:
    iteration: int | None
    tokens: float
    value: float


Curves = dict[str, dict[str, list[CurvePoint]]]  # benchmark -> model -> points in training order
ITERATION_NAME = re.compile(r"iter_0*(\d+)$")


def _records(path: Path, reference: ReferenceData | None = None) -> list[dict]:
    """Rows of the file as dicts, whatever its layout."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("format") == RESULTS_KIND:
        return _results_records(path, data, reference)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):  # the published layout
        rows = []
        for model, columns in data["data"].items():
            lengths = {len(v) for v in columns.values() if isinstance(v, list)}
            if len(lengths) != 1:
                raise UserError(f"{path}: the lists under data.{model} differ in length")
            for i in range(lengths.pop()):
                rows.append({"model": model, **{k: v[i] for k, v in columns.items() if isinstance(v, list)}})
        return rows
    raise UserError(f"{path} should hold a list of records or the published layout with a 'data' key")


def _results_records(path: Path, data: dict, reference: ReferenceData | None) -> list[dict]:
    """`ingestion_results.json` as records: one per evaluated checkpoint ('MODEL/iter_N'),
    with every metric the results keep (the submitted one first), each oriented
    higher-is-better; with reference data, only the checkpoints its SQ selection picks, at
    the training tokens it gives."""
    checkpoints = [r for r in data.get("checkpoints") or [] if isinstance(r, dict)]
    task_metric, downward = data.get("task_metric"), set(data.get("lower_is_better") or [])
    metrics = compared_metrics(task_metric, (k for r in checkpoints for k in (r.get("metrics") or {})))
    signs = {m: metric_sign(m, task_metric, data.get("higher_is_better", True), downward) for m in metrics}

    def values(result: dict) -> dict[str, float | None]:
        found = result.get("metrics") or {}
        return {m: None if (v := _number(found.get(m))) is None else signs[m] * v for m in metrics}

    picked = {}
    if reference is not None:
        selection = reference.scores.signal_quality
        picked = {m.checkpoint_id(c): (m.id, c) for m in reference.models if m.id in selection.models
                  for c in m.checkpoints if selection.picks(c)}
    rows = []
    for i, result in enumerate(checkpoints):
        cid = str(result.get("id", ""))
        if reference is not None:
            if cid in picked:
                model, checkpoint = picked[cid]
                rows.append({"model": model, "iteration": checkpoint.iteration, "tokens": checkpoint.tokens,
                             **values(result)})
            continue
        model, _, name = cid.rpartition("/")
        found = ITERATION_NAME.search(name)
        if not model or not found:
            raise UserError(f"{path}: checkpoint {i} ('{cid}') is not named MODEL/iter_N: pass --reference, the "
                            "reference data of the set it was evaluated on")
        rows.append({"model": model, "iteration": int(found.group(1)), **values(result)})
    if reference is not None and not rows:
        raise UserError(f"{path} has no checkpoint that the reference data's SQ selection picks: is it the "
                        "reference of the set these results come from?")
    return rows


def _number(value: object) -> float | None:
    """A float, or None for an empty / non-numeric cell."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def is_results_file(path: Path) -> bool:
    """Whether `path` is this project's `ingestion_results.json` (values already oriented)."""
    try:
        return path.suffix.lower() == ".json" and json.loads(path.read_text(encoding="utf-8")).get("format") \
            == RESULTS_KIND
    except (OSError, ValueError, AttributeError):
        return False


def read_curves(path: str | Path, reference: ReferenceData | None = None) -> Curves:
    """Parse a curves file into benchmark -> model -> points sorted by tokens (an
    ingestion results file: restricted to `reference`'s SQ selection when given)."""
    path = Path(path)
    rows = _records(path, reference)
    if not rows:
        raise UserError(f"{path} holds no records")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "model" not in row:
            raise UserError(f"{path}: record {i} has no 'model'")
        if not any(_number(row.get(k)) is not None for k in ("iteration", "tokens", "gtokens")):
            raise UserError(f"{path}: record {i} ({row['model']}) has no 'iteration', 'tokens' or 'gtokens'")
    # A benchmark is a column whose non-empty cells are all numbers.
    columns = dict.fromkeys(k for row in rows for k in row if k not in POSITION_KEYS)
    benchmarks = [
        c for c in columns
        if all(_number(r[c]) is not None for r in rows if r.get(c) not in (None, ""))
        and any(_number(r.get(c)) is not None for r in rows)
    ]
    if not benchmarks:
        raise UserError(f"{path} has no numeric benchmark column besides {', '.join(POSITION_KEYS)}")

    curves: Curves = {b: {} for b in benchmarks}
    for row in rows:
        iteration = _number(row.get("iteration"))
        if _number(row.get("tokens")) is not None:
            tokens = _number(row["tokens"])
        elif _number(row.get("gtokens")) is not None:
            tokens = _number(row["gtokens"]) * 1e9
        else:
            tokens = float(iterations_to_tokens(iteration))
        for b in benchmarks:
            value = _number(row.get(b))
            point = CurvePoint(
                None if iteration is None else int(iteration), tokens, math.nan if value is None else value
            )
            curves[b].setdefault(str(row["model"]), []).append(point)
    for by_model in curves.values():
        for points in by_model.values():
            points.sort(key=lambda p: p.tokens)
    return curves


def select(points: list[CurvePoint], every_iterations: int | None, max_tokens: float | None) -> list[CurvePoint]:
    """The organizers' checkpoint selection; `every_iterations` 0/None keeps every iteration."""
    if every_iterations and any(p.iteration is None for p in points):
        raise UserError(
            "some checkpoints give tokens but no iteration, so they cannot be selected by iteration: "
            "pass --every 0 to use every checkpoint"
        )
    return [
        p for p in points
        if (not every_iterations or p.iteration % every_iterations == 0)
        and (max_tokens is None or p.tokens <= max_tokens)
    ]


@dataclass(frozen=True)
class CurveScore:
    benchmark: str
    model: str
    sq: SignalQuality


def score_curves(
    curves: Curves,
    benchmarks: list[str] | None = None,
    every_iterations: int | None = DEFAULT_EVERY_ITERATIONS,
    max_tokens: float | None = DEFAULT_MAX_TOKENS,
    lower_is_better: bool = False,
) -> list[CurveScore]:
    """SQ of every (benchmark, model) curve after selection."""
    wanted = benchmarks or list(curves)
    unknown = [b for b in wanted if b not in curves]
    if unknown:
        raise UserError(f"no benchmark '{unknown[0]}' in the file (it has: {', '.join(curves)})")
    sign = -1.0 if lower_is_better else 1.0
    return [
        CurveScore(b, model, signal_quality([sign * p.value for p in select(points, every_iterations, max_tokens)]))
        for b in wanted
        for model, points in curves[b].items()
    ]


def score_file(path: Path, benchmarks: list[str] | None = None, every_iterations: int | None = None,
               max_tokens: float = DEFAULT_MAX_TOKENS, reference: Path | None = None,
               lower_is_better: bool = False) -> list[CurveScore]:
    """`e2lmc score-curves`: SQ of every curve of a file. An `ingestion_results.json` keeps
    every evaluated checkpoint unless `every_iterations` is given, or, with the `reference`
    data folder of its set, the checkpoints that reference's SQ selection picks; other files
    keep the organizers' selection by default. 0 for either limit keeps everything."""
    results_file = is_results_file(path)
    if reference and not results_file:
        raise UserError(f"--reference applies to an ingestion_results.json, and {path} is not one")
    reference_data = read_reference(reference) if reference else None
    if reference_data is not None or (results_file and every_iterations is None):
        every_iterations, max_tokens = 0, 0  # the reference's own selection, or every checkpoint of the results
        print(f"checkpoints: the SQ selection of {reference}, as the scorer's (values oriented higher-is-better)"
              if reference else "checkpoints: every evaluated one of every model in the file, hidden ones and the "
              "web-only model's included, so the mean is not the leaderboard's SQ: --reference DIR (the set's "
              "reference data) selects as the scorer does (values oriented higher-is-better)", file=sys.stderr)
    return score_curves(
        read_curves(path, reference_data),
        benchmarks=benchmarks,
        every_iterations=DEFAULT_EVERY_ITERATIONS if every_iterations is None else every_iterations or None,
        max_tokens=None if max_tokens <= 0 else max_tokens,
        lower_is_better=lower_is_better,
    )


def scores_json(scores: list[CurveScore]) -> str:
    """The scores as JSON records, one per curve (`--json`)."""
    return json.dumps([
        {"benchmark": s.benchmark, "model": s.model, "points": s.sq.n_points, "monotonicity": s.sq.monotonicity,
         "autocorrelation": s.sq.autocorrelation, "signal_quality": s.sq.score, "notes": list(s.sq.reasons)}
        for s in scores], indent=1)


def format_table(scores: list[CurveScore]) -> str:
    """A plain-text table, with each benchmark's mean SQ over its models."""
    lines = [f"{'benchmark':<16} {'model':<24} {'points':>6} {'monotonicity':>12} {'autocorr':>9} {'SQ':>7}"]
    for bench in dict.fromkeys(s.benchmark for s in scores):
        rows = [s for s in scores if s.benchmark == bench]
        for s in rows:
            lines.append(
                f"{bench:<16} {s.model:<24} {s.sq.n_points:>6} {s.sq.monotonicity:>12.4f} "
                f"{s.sq.autocorrelation:>9.4f} {s.sq.score:>7.4f}"
            )
        mean = float(np.mean([s.sq.score for s in rows]))
        lines.append(f"{bench:<16} {'mean':<24} {'':>6} {'':>12} {'':>9} {mean:>7.4f}")
    lines += [f"note: {s.benchmark}, {s.model}: {reason}" for s in scores for reason in s.sq.reasons]
    return "\n".join(lines)
