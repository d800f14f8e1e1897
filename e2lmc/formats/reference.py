"""`reference.yaml`: one phase's models, checkpoint roles, score selections, weights and rules.

One per phase in the bundle's `<phase>/reference_data/`, read by the scoring program from
Codabench's `/app/input/ref` (never mounted in the prediction step). It says which
checkpoint plays which role (released, hidden, final), which checkpoints each score
uses, the scores' weights, the submission rules and the alignment judge's settings.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import UserError
from .alignment import AlignmentSettings
from .files import read_format, write_format
from .rules import SubmissionRules

REFERENCE_FILE = "reference.yaml"
REFERENCE_KIND = "e2lmc.reference"

Role = Literal["released", "hidden", "final"]
ROLES: tuple[str, ...] = typing.get_args(Role)
CustomCodePolicy = Literal["allow", "flag", "refuse"]
CUSTOM_CODE_POLICIES: tuple[str, ...] = typing.get_args(CustomCodePolicy)


@dataclass
class Checkpoint:
    name: str  # the subfolder name, e.g. iter_0004000
    iteration: int
    tokens: float
    role: Role


@dataclass
class Model:
    id: str
    size: str  # e.g. 500m, 1b, 3b
    architecture: str  # arch1 (deep) or arch2 (wide)
    mixture: Literal["science", "web"]
    checkpoints: list[Checkpoint]

    def checkpoint_id(self, checkpoint: Checkpoint) -> str:
        return f"{self.id}/{checkpoint.name}"


@dataclass
class Selection:
    """Which models and checkpoints a score uses."""

    models: list[str]
    roles: list[Role]
    every_iterations: int | None = None  # keep iterations that are multiples of this
    max_tokens: float | None = None

    def picks(self, checkpoint: Checkpoint) -> bool:
        return (
            checkpoint.role in self.roles
            and (not self.every_iterations or checkpoint.iteration % self.every_iterations == 0)
            and (self.max_tokens is None or checkpoint.tokens <= self.max_tokens)
        )


@dataclass
class ComplianceSelection:
    science_model: str
    web_model: str
    roles: list[Role] = field(default_factory=lambda: list(ROLES))


@dataclass
class ScoreSelections:
    signal_quality: Selection
    ranking_consistency: Selection  # steps compared with each model's final checkpoint
    scientific_compliance: ComplianceSelection


COMPONENTS = ("signal_quality", "ranking_consistency", "scientific_compliance")


@dataclass
class ReferenceData:
    phase: str
    models: list[Model]
    scores: ScoreSelections
    weights: dict[str, float] = field(
        default_factory=lambda: {"signal_quality": 0.5, "ranking_consistency": 0.1, "scientific_compliance": 0.4}
    )
    validation: SubmissionRules = field(default_factory=SubmissionRules)
    show_hidden_values: bool = False  # may the report show values of hidden checkpoints?
    description: str = ""
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)
    custom_metric_code: CustomCodePolicy = "flag"  # a metric computed by the submission's own code (docs/security.md)

    def model(self, model_id: str) -> Model:
        return next(m for m in self.models if m.id == model_id)

    @property
    def n_checkpoints(self) -> int:
        return sum(len(m.checkpoints) for m in self.models)

    @property
    def sq_only(self) -> bool:
        """Released checkpoints only (a participant's run on the public repos): ranking
        consistency and scientific compliance, which need hidden ones, are not computed."""
        return all(c.role == "released" for m in self.models for c in m.checkpoints)

    def check(self, where: str) -> None:
        """Cross-field rules a per-key check cannot see."""
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise UserError(f"{where}: model ids must be unique")
        named = [
            *self.scores.signal_quality.models,
            *self.scores.ranking_consistency.models,
            self.scores.scientific_compliance.science_model,
            self.scores.scientific_compliance.web_model,
        ]
        for model_id in named:
            if model_id not in ids:
                raise UserError(f"{where}: scores name model '{model_id}', which is not under models")
        if set(self.weights) != set(COMPONENTS):
            raise UserError(f"{where}: weights must name exactly {', '.join(COMPONENTS)}")
        if any(not 0 <= w <= 1 for w in self.weights.values()) or abs(sum(self.weights.values()) - 1) > 1e-9:
            raise UserError(f"{where}: weights must lie in [0, 1] and sum to 1")
        self.alignment.check(where)



def write_reference(reference: ReferenceData, directory: str | Path) -> Path:
    return write_format(Path(directory) / REFERENCE_FILE, REFERENCE_KIND, reference)


def read_reference(directory: str | Path) -> ReferenceData:
    return read_format(ReferenceData, Path(directory) / REFERENCE_FILE, REFERENCE_KIND)
