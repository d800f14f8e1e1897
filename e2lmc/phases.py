"""The competition's three phases and which checkpoints each one evaluates.

Every phase scores the same way (DESIGN §5); they differ in the checkpoints:
- warm-up: a reduced set for quick feedback — the largest size is left out, and so are
  the hidden checkpoints held out for the final phase;
- development: every model, the same held-out checkpoints still left out;
- final: everything, so every other hidden checkpoint is one no earlier submission
  was ever run on.

A checkpoint set is described once, in full (`ReferenceData` with every model and
checkpoint, plus where each checkpoint lives); `phase_reference` and `phase_manifest`
cut it down per phase. The embedded set comes from `zoo.reference_for`; the real
competition's `tiiuae/dense-*` repos from `e2lm_reference` / `e2lm_manifest`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .errors import UserError
from .formats import CheckpointManifest, Checkpoint, ComplianceSelection, ManifestEntry, Model, ReferenceData, \
    ScoreSelections, Selection
from .scoring import iterations_to_tokens


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


# The site's schedule (seeds/competition_site_home.md). Codabench refuses phases that
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
                              description=reference.description)


# ------------------------------------------------------------ the real checkpoints


@dataclass(frozen=True)
class E2LMSeries:
    """The real competition's checkpoints (DESIGN §3): the released ones every 4000
    iterations up to 206B tokens, hidden ones up to ~1T, and the final one."""

    web_repo: str  # the hidden 0.5B web-only model; its name is the organizers' secret
    released: tuple[int, ...] = tuple(range(4000, 56001, 4000))
    hidden: tuple[int, ...] = tuple(range(64000, 224001, 16000))
    final: int = 240000
    sizes: tuple[str, ...] = ("500m", "1b", "3b")
    architectures: tuple[str, ...] = ("arch1", "arch2")
    data_root: str | None = None  # checkpoints pre-placed as <data_root>/<repo name>/iter_…


def _iteration_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def e2lm_reference(series: E2LMSeries) -> ReferenceData:
    if not series.released or not series.hidden or max(series.hidden) >= series.final:
        raise UserError("the E2LM series needs released and hidden iterations, all before the final one")
    steps = [(i, "released") for i in series.released] + [(i, "hidden") for i in series.hidden]
    steps.append((series.final, "final"))

    def checkpoints(web: bool) -> list[Checkpoint]:
        return [Checkpoint(_iteration_name(i), i, float(iterations_to_tokens(i)),
                           "hidden" if web and role == "released" else role) for i, role in steps]

    science = [Model(f"dense-{s}-{a}", s, a, "science", checkpoints(False))
               for s in series.sizes for a in series.architectures]
    twin = science[0]
    web = Model(f"{twin.id}-web", twin.size, twin.architecture, "web", checkpoints(True))
    ids = [m.id for m in science]
    return ReferenceData(
        phase="full",
        models=[*science, web],
        scores=ScoreSelections(
            signal_quality=Selection(ids, ["released"], every_iterations=4000, max_tokens=206e9),
            ranking_consistency=Selection(ids, ["hidden", "final"]),
            scientific_compliance=ComplianceSelection(twin.id, web.id),
        ),
        description="The E2LM checkpoints (tiiuae/dense-*).",
    )


def e2lm_manifest(series: E2LMSeries, reference: ReferenceData) -> CheckpointManifest:
    """Hub repos and `iter_…` subfolders, or paths under `data_root` when pre-placed."""
    entries = []
    for model in reference.models:
        repo = series.web_repo if model.mixture == "web" else f"tiiuae/{model.id}"
        for c in model.checkpoints:
            cid = model.checkpoint_id(c)
            if series.data_root:
                placed = f"{series.data_root.rstrip('/')}/{repo.split('/')[-1]}/{c.name}"
                entries.append(ManifestEntry(cid, path=placed, role=c.role))
            else:
                entries.append(ManifestEntry(cid, repo=repo, subfolder=c.name, role=c.role))
    return CheckpointManifest(entries, description=reference.description)
