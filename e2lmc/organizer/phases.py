"""The competition's three phases and which checkpoints each one evaluates.

Every phase scores the same way (docs/scoring.md); they differ in the checkpoints:
- warm-up: a reduced set for quick feedback — the largest size is left out, and so are
  the hidden checkpoints held out for the final phase;
- development: every model, the same held-out checkpoints still left out;
- final: everything, so every other hidden checkpoint is one no earlier submission
  was ever run on.

A checkpoint set is described once, in full, by its series file (`formats/series.py`: the
embedded set's, or the real competition's `tiiuae/dense-*` repos); `phase_reference`
and `phase_manifest` cut its reference data and manifest down per phase.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from ..errors import UserError
from ..formats.manifest import CheckpointManifest
from ..formats.reference import ReferenceData, Selection


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    start: datetime
    end: datetime
    description: str
    leaves_out_largest: bool  # the largest model size
    leaves_out_held_out: bool  # the hidden checkpoints kept for the final phase
    max_submissions_per_day: int
    max_submissions: int | None = None  # per participant over the whole phase


# The original competition's schedule (competition/pages/timeline.md). Codabench refuses phases that
# overlap or touch, so each one hands over at noon (UTC) on the site's date.
PHASES = (
    PhaseSpec("warm-up", datetime(2025, 7, 7, 12), datetime(2025, 8, 11, 11, 59),
              "Quick feedback on a reduced checkpoint set: the two smaller sizes and the web-only model, "
              "with part of the hidden checkpoints.", True, True, max_submissions_per_day=10),
    PhaseSpec("development", datetime(2025, 8, 11, 12), datetime(2025, 10, 20, 11, 59),
              "The full set of models, with part of the hidden checkpoints.", False, True,
              max_submissions_per_day=10),
    PhaseSpec("final", datetime(2025, 10, 20, 12), datetime(2025, 11, 3, 23, 59),
              "Every model and every checkpoint, including hidden checkpoints no earlier phase used. "
              "Few submissions: the last one counts.", False, False, max_submissions_per_day=3, max_submissions=3),
)
PHASE_NAMES = tuple(p.name for p in PHASES)


def shifted(phases: tuple[PhaseSpec, ...], start: datetime | None) -> tuple[PhaseSpec, ...]:
    """The same schedule moved so that the first phase starts at `start`."""
    if start is None:
        return phases
    delta: timedelta = start - phases[0].start
    return tuple(replace(p, start=p.start + delta, end=p.end + delta) for p in phases)


def phase_spec(name: str) -> PhaseSpec:
    for spec in PHASES:
        if spec.name == name:
            return spec
    raise UserError(f"unknown phase '{name}' (the phases are: {', '.join(PHASE_NAMES)})")


def held_out_iterations(full: ReferenceData) -> set[int]:
    """Every other hidden iteration of the science models, kept for the final phase."""
    hidden = sorted({c.iteration for m in full.models if m.mixture == "science"
                     for c in m.checkpoints if c.role == "hidden"})
    return set(hidden[1::2])


def phase_reference(full: ReferenceData, phase: str) -> ReferenceData:
    """The reference data of one phase, cut from the full checkpoint set."""
    spec = phase_spec(phase)
    held_out = held_out_iterations(full) if spec.leaves_out_held_out else set()
    sizes = list(dict.fromkeys(m.size for m in full.models))  # listed from the smallest
    dropped_size = sizes[-1] if spec.leaves_out_largest and len(sizes) > 1 else None
    models = [
        replace(m, checkpoints=[c for c in m.checkpoints if c.iteration not in held_out])
        for m in full.models if m.size != dropped_size
    ]
    kept = {m.id for m in models}
    scores = full.scores
    compliance = scores.scientific_compliance
    if not {compliance.science_model, compliance.web_model} <= kept:
        raise UserError(f"phase {phase} would leave out the models scientific compliance compares")

    def kept_models(selection: Selection) -> Selection:
        return replace(selection, models=[m for m in selection.models if m in kept])

    return replace(
        full,
        phase=phase,
        models=models,
        scores=replace(scores, signal_quality=kept_models(scores.signal_quality),
                       ranking_consistency=kept_models(scores.ranking_consistency)),
        description=f"{full.description} Phase {phase}: {spec.description}",
    )


def phase_manifest(full: CheckpointManifest, reference: ReferenceData) -> CheckpointManifest:
    """The entries of `full` that the phase's reference data names, in its order, with
    the roles they play in the phase."""
    by_id = {e.id: e for e in full.checkpoints}
    roles = {m.checkpoint_id(c): c.role for m in reference.models for c in m.checkpoints}
    missing = [i for i in roles if i not in by_id]
    if missing:
        raise UserError(f"the checkpoint manifest has no entry for {missing[0]} (phase {reference.phase})")
    return CheckpointManifest([replace(by_id[i], role=role) for i, role in roles.items()],
                              description=reference.description, tokens_per_rule_token=full.tokens_per_rule_token,
                              weights_digest=full.weights_digest)
