"""What a participant should read after a low score: one sentence per problem found.

A score of 0.297 says nothing about what to change. These checks look at what the
report already shows — the released checkpoints' curves, the task's chance level, and
today's aggregates (the scientific-compliance tally) — and say in words what is wrong:
curves at chance, flat curves, a model that gets worse as it trains, a science model no
better than the web-only one. Nothing derived from hidden checkpoints beyond those
aggregates is used, so nothing more can leak through the sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..formats.results import compared_metrics
from ..formats.series import EMBEDDED_PHASE
from .evaluation import Evaluation, Point
from .formulas import NOISE_SIGMAS, signal_quality
from .uncertainty import PreviousRun, compare_runs

LENGTH_NORMALISED = ("acc_norm", "acc_mutual_info")  # metrics that do not favour short answers by construction
LETTERED_FIX = ("The task asks for a letter after listed options (\"Answer: B\"): small models learn to answer "
                "by the label late, and sit at chance on it long after they know the answers. Score the answers' own "
                "words instead: the options' texts as the choices (doc_to_choice), the prompt without the letters.")
FALLING_RHO = -0.5  # Spearman's rho of value against training order below this: the curve falls
BETTER_METRIC = 0.02  # SQ by which another metric of the task must beat the submitted one to be suggested
MAX_COMPARED = 16  # other metrics compared at most (ingestion keeps as many per checkpoint)


@dataclass(frozen=True)
class Advice:
    """One problem the report names, and what to do about it."""

    kind: str  # at_chance, flat, falling, not_scientific, fine
    sentence: str


def visible_points(ev: Evaluation, model_id: str) -> list[Point]:
    """A model's points the report may show: the released ones (every one where the
    reference data allows), in training order, without missing values."""
    show_hidden = ev.reference.show_hidden_values
    return [p for p in ev.curves[model_id]
            if (show_hidden or p.checkpoint.role == "released") and math.isfinite(p.value)]


def sampling_noise(ev: Evaluation) -> float | None:
    """The standard error of one checkpoint's accuracy at the chance level (binomial over
    the task's samples); None where the task has no chance level."""
    chance, n = ev.results.chance_level, ev.results.n_samples
    if chance is None or n <= 0:
        return None
    return math.sqrt(chance * (1 - chance) / n)


def advise(ev: Evaluation, previous: PreviousRun | None = None) -> list[Advice]:
    """Every problem found, most basic first; one 'fine' sentence when there is none; then,
    on a set whose noise was measured, how this run compares with the `previous` one."""
    models = [m.id for m in ev.reference.models if len(visible_points(ev, m.id)) >= 2]
    found = (_at_chance(ev, models) + _flat(ev, models) + _falling(ev, models) + _not_scientific(ev)
             + _better_metric(ev))
    if not found:
        found = [Advice("fine", "No curve is at chance, flat or falling, and the science model is ahead of the "
                                "web-only one: to raise SQ further, remove the samples that add noise "
                                "(e2lmc diagnose lists them).")]
    if ev.reference.phase == EMBEDDED_PHASE and any(d.kind in ("at_chance", "flat") for d in found):
        found.append(Advice("embedded", "The embedded models know only the synthetic science world they were "
                                        "trained on (zoo.md in the starting kit, docs/zoo.md in the repository: "
                                        "its facts, their phrasings, the two sample tasks): a question about "
                                        "anything else stays at chance on them, whatever it does on the real "
                                        "models."))
    if said := compare_runs(previous, ev):
        found.append(Advice("compared", said))
    return found


def _trend(ev: Evaluation, model_id: str) -> tuple[float, float, float]:
    """A model's curve over the visible checkpoints as a straight line against tokens (least
    squares): how much it rises from the first to the last, its value at the last, and the
    standard error of that rise for checkpoints whose values scatter by one unit."""
    points = visible_points(ev, model_id)
    x = np.array([p.checkpoint.tokens for p in points], dtype=float)
    y = np.array([p.value for p in points], dtype=float)
    sxx = float(np.sum((x - x.mean()) ** 2))
    if sxx == 0:
        return 0.0, float(y.mean()), math.inf
    slope = float(np.sum((x - x.mean()) * (y - y.mean()))) / sxx
    span = float(x[-1] - x[0])
    return slope * span, float(y.mean()) + slope * float(x[-1] - x.mean()), span / math.sqrt(sxx)


def _at_chance(ev: Evaluation, models: list[str]) -> list[Advice]:
    """Models that neither rise beyond sampling noise over the window nor end it above (or
    below) chance by more than that: a curve that starts below chance and ends far above it
    averages near chance, and is not at chance."""
    chance, noise = ev.results.chance_level, sampling_noise(ev)
    if chance is None or noise is None or not models:
        return []
    near = []
    for m in models:
        rise, end, rise_error = _trend(ev, m)
        if abs(rise) <= NOISE_SIGMAS * noise * rise_error and abs(end - chance) <= NOISE_SIGMAS * noise:
            near.append(m)
    if not near:
        return []
    who = ("Every model stays" if len(near) == len(models)
           else f"{len(near)} of {len(models)} models ({', '.join(near)}) stay")
    fix = (LETTERED_FIX if ev.results.lettered else
           "Questions the models can learn early — shorter, about frequent facts, with clearly wrong distractors — "
           "give a signal sooner.")
    return [Advice("at_chance", f"{who} at chance level ({chance:.3g}, what guessing among the choices gets; "
                                f"±{NOISE_SIGMAS * noise:.2g} is sampling noise with {ev.results.n_samples} "
                                "samples) over the released checkpoints, with no rise beyond that noise: these "
                                f"models do not answer better than guessing yet, so SQ measures noise. {fix}")]


def _flat(ev: Evaluation, models: list[str]) -> list[Advice]:
    noise = sampling_noise(ev)
    flat = []
    for m in models:
        values = [p.value for p in visible_points(ev, m)]
        spread = max(values) - min(values)
        if spread == 0 or (noise is not None and spread <= NOISE_SIGMAS * noise):
            flat.append(m)
    if not flat:
        return []
    return [Advice("flat", f"Flat curve{'s' if len(flat) > 1 else ''} ({', '.join(flat)}): the values move less "
                           "than sampling noise over the released checkpoints, so their ranks are noise and SQ "
                           "rewards nothing (a constant curve still gets SQ 0.5 by the published formula). More "
                           "samples shrink the noise; easier or more frequent facts make the curve rise.")]


def _falling(ev: Evaluation, models: list[str]) -> list[Advice]:
    from scipy.stats import spearmanr

    noise = sampling_noise(ev)
    falling = []
    for m in models:
        values = [p.value for p in visible_points(ev, m)]
        if len(values) >= 4 and len(set(values)) > 1:
            rho = float(spearmanr(np.arange(len(values)), values).statistic)
            rise, _, rise_error = _trend(ev, m)
            beyond_noise = noise is None or -rise > NOISE_SIGMAS * noise * rise_error
            if rho < FALLING_RHO and beyond_noise:
                falling.append(f"{m}, ρ = {rho:.2f}")
    if not falling:
        return []
    return [Advice("falling", f"Getting worse with training ({'; '.join(falling)}: Spearman's ρ of the value "
                              "against training order): the task may reward something training removes — an "
                              "answer that is longer or made of rarer tokens, a bias in the distractors — rather "
                              "than knowledge. Compare acc with acc_norm, and look at what the falling samples "
                              "share (e2lmc diagnose).")]


def metrics_sq(ev: Evaluation) -> dict[str, float]:
    """SQ of every metric the results keep (the submitted one first), each oriented, over
    the SQ selection's released checkpoints, averaged over its models: what another
    `task_metric` of the same task would give, without a rerun. Only the metrics every one
    of those checkpoints has count: a name is the score child's to choose, and a name seen
    on a hidden checkpoint alone could carry what that checkpoint's responses were."""
    selection, results = ev.reference.scores.signal_quality, ev.results
    by_id = {c.id: c.metrics for c in results.checkpoints if c.error is None}
    curves = {model.id: [model.checkpoint_id(c) for c in sorted(model.checkpoints, key=lambda c: c.iteration)
                         if c.role == "released" and selection.picks(c)]
              for model in (ev.reference.model(m) for m in selection.models)}
    released = [by_id.get(cid, {}) for ids in curves.values() for cid in ids]
    shared = set.intersection(*(set(values) for values in released)) if released else set()
    metrics = compared_metrics(results.task_metric, sorted(shared))[:1 + MAX_COMPARED]
    found = {}
    for metric in metrics:
        per_model = [signal_quality([results.oriented(metric) * by_id.get(cid, {}).get(metric, math.nan)
                                     for cid in ids]).score for ids in curves.values()]
        found[metric] = float(np.mean(per_model)) if per_model else 0.0
    return found


def _better_metric(ev: Evaluation) -> list[Advice]:
    found = metrics_sq(ev)
    submitted = ev.results.task_metric
    better = [(m, sq) for m, sq in found.items() if m != submitted and sq >= found[submitted] + BETTER_METRIC]
    if not better:
        return []
    metric, sq = max(better, key=lambda item: item[1])
    return [Advice("other_metric", f"The task also computes {metric}: its SQ on the released checkpoints is "
                                   f"{sq:.3f}, against {found[submitted]:.3f} for {submitted}. task_metric: "
                                   f"{metric} in metadata.yaml would submit that one (e2lmc run shows its RC and CS "
                                   "too).")]


def _not_scientific(ev: Evaluation) -> list[Advice]:
    cs, selection = ev.scientific_compliance, ev.reference.scores.scientific_compliance
    shared = cs.wins + cs.ties + cs.losses
    if not shared or cs.score > 0:
        return []
    causes = ("Either the task measures what web text teaches as well as science text (general language, common "
              "sense): ask about scientific knowledge itself")
    if ev.results.task_metric.split(",")[0] not in LENGTH_NORMALISED and not ev.results.lettered:
        causes += ("; or a prior both models share decides, most often the answers' lengths (a summed likelihood "
                   "prefers shorter answers whatever the model knows): e2lmc diagnose measures it on the web-only "
                   "model and says so")
    return [Advice("not_scientific", f"The science-mixture model ({selection.science_model}) is not ahead of the "
                                     f"web-only one ({selection.web_model}): higher at {cs.wins} of {shared} shared "
                                     f"checkpoints where not both guess, so CS is 0. {causes}.")]
