"""A checkpoint series as data: which models, which iterations, which role each plays.

Which hidden checkpoints the real competition uses is the organizers' choice, so it is a
file they edit, not code. A series file (`format: e2lmc.series`, docs/formats.md) lists
the models (a hub repo or a local folder each, size, architecture, mixture), the
iterations that are released to participants, the hidden ones and the final one, how
iterations convert to training tokens, and which checkpoints signal quality uses.

The real competition's file ships as `e2lmc/data/series/e2lm.yaml`; `e2lmc zoo build`
writes the embedded set's next to its checkpoints (`series.yaml`). From a series come
the full reference data (`series_reference`, cut per phase by `phases`) and the
checkpoint manifest of the placed checkpoints (`placed_manifest`: `<model id>/iter_XXXXXXX`
under a data folder, as `e2lmc checkpoints fetch` lays them out).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import UserError
from .files import read_format, write_format
from .manifest import CheckpointManifest, ManifestEntry
from .reference import Checkpoint, ComplianceSelection, Model, ReferenceData, ScoreSelections, Selection

if TYPE_CHECKING:  # numpy is imported where iterations are converted: the command line reads this module
    import numpy as np

SERIES_KIND = "e2lmc.series"
SERIES_FILE = "series.yaml"
E2LM_SERIES = Path(__file__).resolve().parents[1] / "data" / "series" / "e2lm.yaml"
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")

# The organizers' Megatron batch ramp-up: global batch 1024 reached from 256 in
# steps of 256 over 4,882,812 samples, with 4096-token sequences.
GLOBAL_BATCH = 1024
RAMPUP_BATCH = (256, 256, 4_882_812)  # start batch, increment, ramp-up samples
SEQUENCE_LENGTH = 4096


def tokens_text(tokens: float) -> str:
    """A token count as people write it: 206B, 4.92M, 492k, 320 (never "0.000492B")."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{suffix}"
    return f"{tokens:.3g}"


def iterations_to_tokens(
    iterations: float | Sequence[float] | np.ndarray,
    global_batch: int = GLOBAL_BATCH,
    rampup: Sequence[int] = RAMPUP_BATCH,
    sequence_length: int = SEQUENCE_LENGTH,
) -> np.ndarray:
    """Training tokens seen after `iterations` optimizer steps.

    During the ramp-up the batch grows from `rampup[0]` by `rampup[1]`, each size
    lasting rampup[2] / number-of-increments samples (a fractional number of
    iterations, as in the organizers' `gtokens` field); after it, `global_batch`.
    """
    import numpy as np

    start, increment, ramp_samples = rampup
    n_increments = (global_batch - start) // increment
    samples_per_stage = ramp_samples / n_increments
    its = np.asarray(iterations, dtype=float)
    samples = np.zeros_like(its)
    stage_start = 0.0  # iteration at which the current stage begins
    for stage in range(n_increments):
        batch = start + stage * increment
        stage_len = samples_per_stage / batch
        samples += batch * np.clip(its - stage_start, 0.0, stage_len)
        stage_start += stage_len
    samples += global_batch * np.clip(its - stage_start, 0.0, None)
    return samples * sequence_length


EMBEDDED_PHASE = "embedded"  # the reference data's phase for a whole embedded set (`e2lmc zoo build`)


def embedded_description(preset: str) -> str:
    """The series description of an embedded set of `preset`: what tells the scoring which set it scores."""
    return f"Embedded checkpoint set, preset '{preset}'."


def checkpoint_name(iteration: int) -> str:
    """The subfolder of one checkpoint, as in the real repos."""
    return f"iter_{iteration:07d}"


@dataclass
class SeriesModel:
    id: str
    size: str  # listed from the smallest: the warm-up phase leaves the last size out
    architecture: str
    mixture: Literal["science", "web"]
    repo: str | None = None  # a Hugging Face hub repo holding iter_XXXXXXX subfolders
    revision: str | None = None
    path: str | None = None  # or a local folder holding them (relative to the series file)


@dataclass
class Tokens:
    """Training tokens after n iterations: n x per_iteration, or the real models' batch
    ramp-up (`iterations_to_tokens`: global_batch, rampup [start, increment, samples], sequence_length)."""

    per_iteration: int | None = None
    global_batch: int | None = None
    rampup: list[int] | None = None
    sequence_length: int | None = None

    def of(self, iterations: list[int]) -> list[float]:
        if self.per_iteration is not None:
            return [float(i * self.per_iteration) for i in iterations]
        assert self.global_batch and self.rampup and self.sequence_length
        return [float(t) for t in iterations_to_tokens(iterations, self.global_batch, self.rampup,
                                                        self.sequence_length)]


@dataclass
class Iterations:
    released: list[int]  # given to participants (the public repos' subfolders)
    hidden: list[int]  # held back: ranking consistency, and the final phase's fresh checkpoints
    final: int


@dataclass
class SignalQualityRule:
    every_iterations: int | None = None  # the organizers used multiples of 4000 …
    max_tokens: float | None = None  # … up to 206B tokens


@dataclass
class Series:
    description: str
    models: list[SeriesModel]
    iterations: Iterations
    tokens: Tokens
    signal_quality: SignalQualityRule = field(default_factory=SignalQualityRule)

    def check(self, where: str) -> None:
        """Every rule a per-key check cannot see, one sentence naming the key."""
        ids = [m.id for m in self.models]
        for i, model in enumerate(self.models):
            label = f"{where}: models[{i}] ({model.id})"
            if not MODEL_ID.match(model.id) or model.id in ids[:i]:
                raise UserError(f"{label}: the id must be unique, letters, digits, '.', '_' or '-'")
            if model.repo is None and model.path is None:
                hint = " (the web-only model is private: write its repo there, or pass --web-model)" \
                    if model.mixture == "web" else ""
                raise UserError(f"{label} needs 'repo' (a hub repo) or 'path' (a local folder){hint}")
            if model.repo is not None and model.path is not None:
                raise UserError(f"{label} has both 'repo' and 'path': keep one")
            if model.repo is not None and not REPO_NAME.match(model.repo):
                raise UserError(f"{label}: repo '{model.repo}' is not a hub repo name such as tiiuae/dense-1b-arch1")
        web = [m for m in self.models if m.mixture == "web"]
        if len(web) != 1:
            raise UserError(f"{where}: models must include exactly one with mixture: web (it has {len(web)})")
        if self.compliance_pair() is None:
            raise UserError(f"{where}: the web-only model {web[0].id} needs a science model of the same size and "
                            "architecture (scientific compliance compares the two)")
        it = self.iterations
        for key, values in (("released", it.released), ("hidden", it.hidden)):
            if not values or values != sorted(set(values)) or values[0] <= 0:
                raise UserError(f"{where}: iterations.{key} must be positive iterations, increasing, at least one")
        if not (it.released[-1] < it.hidden[0] and it.hidden[-1] < it.final):
            raise UserError(f"{where}: iterations must run released < hidden < final "
                            f"(released ends at {it.released[-1]}, hidden spans {it.hidden[0]}-{it.hidden[-1]}, "
                            f"final is {it.final})")
        tokens = self.tokens
        ramp = (tokens.global_batch, tokens.rampup, tokens.sequence_length)
        by_iteration = tokens.per_iteration is not None and all(v is None for v in ramp)
        by_ramp = tokens.per_iteration is None and None not in ramp and len(tokens.rampup or []) == 3
        if not (by_iteration or by_ramp):
            raise UserError(f"{where}: tokens needs either per_iteration, or global_batch, rampup "
                            "[start, increment, samples] and sequence_length")

    def compliance_pair(self) -> tuple[SeriesModel, SeriesModel] | None:
        """(science model, web-only model) of the same size and architecture, if any."""
        web = next(m for m in self.models if m.mixture == "web")
        return next(((m, web) for m in self.models
                     if m.mixture == "science" and (m.size, m.architecture) == (web.size, web.architecture)), None)

    @property
    def steps(self) -> list[tuple[int, str]]:
        """(iteration, role) in training order."""
        it = self.iterations
        return [*((i, "released") for i in it.released), *((i, "hidden") for i in it.hidden), (it.final, "final")]


def _expand_ranges(data: dict) -> dict:
    """`{first, last, every}` in iterations.released/hidden, written out as a list."""
    iterations = data.get("iterations")
    if isinstance(iterations, dict):
        for key in ("released", "hidden"):
            value = iterations.get(key)
            if isinstance(value, dict) and set(value) == {"first", "last", "every"} and \
                    all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()) and value["every"] > 0:
                iterations[key] = list(range(value["first"], value["last"] + 1, value["every"]))
    return data


def read_series(path: str | Path, web_repo: str | None = None) -> Series:
    """A series file, checked; `web_repo` sets the web-only model's repo (its name is the
    organizers' secret, so the shipped file leaves it empty)."""

    def prepare(data: dict) -> dict:
        data = _expand_ranges(data)
        for model in data.get("models") or []:
            if web_repo is not None and isinstance(model, dict) and model.get("mixture") == "web":
                model.update(repo=web_repo, path=None)
        return data

    return read_format(Series, Path(path), SERIES_KIND, prepare=prepare)


def write_series(series: Series, path: str | Path) -> Path:
    return write_format(Path(path), SERIES_KIND, series)


def series_reference(series: Series, phase: str = "full") -> ReferenceData:
    """Every model and checkpoint with its role; the web-only model is wholly hidden."""
    steps = series.steps
    tokens = series.tokens.of([i for i, _ in steps])
    models = []
    for m in series.models:
        checkpoints = [Checkpoint(checkpoint_name(i), i, t, "hidden" if m.mixture == "web" and role == "released"
                                  else role) for (i, role), t in zip(steps, tokens)]
        models.append(Model(m.id, m.size, m.architecture, m.mixture, checkpoints))
    pair = series.compliance_pair()
    assert pair is not None  # Series.check
    twin, web = pair
    science = [m.id for m in series.models if m.mixture == "science"]
    rule = series.signal_quality
    return ReferenceData(
        phase=phase,
        models=models,
        scores=ScoreSelections(
            signal_quality=Selection(science, ["released"], rule.every_iterations, rule.max_tokens),
            ranking_consistency=Selection(science, ["hidden", "final"]),
            scientific_compliance=ComplianceSelection(twin.id, web.id),
        ),
        description=series.description,
    )


def released_reference(series: Series) -> ReferenceData:
    """What a participant can score alone (phase 'released'): the public repos' checkpoints
    that signal quality uses. RC and CS need the hidden checkpoints: the scorer and the
    report compute SQ only for reference data without any."""
    reference = series_reference(series, phase="released")
    selection = reference.scores.signal_quality
    for model in reference.models:
        model.checkpoints = [c for c in model.checkpoints if model.id in selection.models and selection.picks(c)]
    return reference


def placed_path(model_id: str, iteration: int) -> str:
    """Where a checkpoint lies under a data folder: `<model id>/iter_XXXXXXX`."""
    return f"{model_id}/{checkpoint_name(iteration)}"


def placed_manifest(series: Series) -> CheckpointManifest:
    """Paths relative to the data folder the checkpoints are placed in, with the roles of
    the reference data."""
    return CheckpointManifest([ManifestEntry(m.checkpoint_id(c), path=placed_path(m.id, c.iteration), role=c.role)
                               for m in series_reference(series).models for c in m.checkpoints],
                              description=series.description)
