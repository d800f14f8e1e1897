"""Files passed between stages: small versioned dataclasses, one reader and one writer each.

- `IngestionResults` — `ingestion_results.json`, written by ingestion after every
  checkpoint, read by scoring from `/app/input/res`.
- `ReferenceData` — `reference.yaml`, one per phase in `reference_data/<phase>/`,
  read by scoring from `/app/input/ref`.
- `CheckpointManifest` — `manifest.yaml`, the checkpoints ingestion evaluates (input
  data), written by the checkpoint-set builder or by hand for the real hub repos.
(`Plan`, ingestion's private hand-over between its stages, is in `plan.py`.)

docs/formats.md documents both with examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import UserError
from ..scoring.judge import AlignmentSample, AlignmentSettings
from ..scoring.formulas import ValidationRules

RESULTS_FILE = "ingestion_results.json"
REFERENCE_FILE = "reference.yaml"
FORMAT_VERSION = 1

Role = Literal["released", "hidden", "final"]
ROLES: tuple[str, ...] = typing.get_args(Role)

# --------------------------------------------------------------- generic reading


def _build(cls: Any, data: Any, where: str) -> Any:
    """Build `cls` (a dataclass, list, dict, Literal, optional or scalar type) from
    parsed JSON/YAML, naming the exact key in the error when something is off."""
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise UserError(f"{where} should be a mapping, not {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise UserError(f"{where} has unknown key '{unknown[0]}' (expected one of: {', '.join(fields)})")
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = _build(hints[name], data[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{where} is missing the key '{name}'")
        return cls(**kwargs)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, data, where)
    if origin is Literal:
        if data not in args:
            raise UserError(f"{where} is {data!r}; expected one of: {', '.join(map(str, args))}")
        return data
    if origin is list:
        if not isinstance(data, list):
            raise UserError(f"{where} should be a list, not {type(data).__name__}")
        return [_build(args[0], item, f"{where}[{i}]") for i, item in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise UserError(f"{where} should be a mapping, not {type(data).__name__}")
        return {str(k): _build(args[1], v, f"{where}.{k}") for k, v in data.items()}
    if cls is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise UserError(f"{where} should be a number, not {data!r}")
        return float(data)
    if cls is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise UserError(f"{where} should be an integer, not {data!r}")
        return data
    if cls in (str, bool) and not isinstance(data, cls):
        raise UserError(f"{where} should be a {cls.__name__}, not {data!r}")
    return data


def _load(path: Path, kind: str) -> dict:
    """Parse a JSON or YAML file into a dict, checking its format name and version."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"{path} is not valid {path.suffix[1:].upper()}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a mapping at the top level")
    if data.get("format") != kind:
        raise UserError(f"{path} is not a {kind} file (its 'format' key is {data.get('format')!r})")
    if data.get("version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {data.get('version')!r}; this e2lmc reads version {FORMAT_VERSION}"
        )
    return {k: v for k, v in data.items() if k not in ("format", "version")}


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _payload(kind: str, obj: Any) -> dict:
    """The header plus the dataclass as plain data; None values are left out (every
    optional key defaults to None, so reading gives the same object back)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {"format": kind, "version": FORMAT_VERSION, **strip(dataclasses.asdict(obj))}


def write_format(path: Path, kind: str, obj: Any) -> Path:
    """Write a format atomically: JSON for .json files, YAML otherwise."""
    payload = _payload(kind, obj)
    if path.suffix == ".json":
        text = json.dumps(payload, indent=1, allow_nan=False) + "\n"
    else:
        text = yaml.safe_dump(payload, sort_keys=False, width=100)
    _atomic_write(path, text)
    return path


def read_format(cls: Any, path: Path, kind: str, prepare: Callable[[dict], dict] | None = None) -> Any:
    """Read a format, checking keys, types and (where the class has one) its `check`;
    `prepare` rewrites the parsed data first (a shorthand the file may use)."""
    data = _load(path, kind)
    obj = _build(cls, prepare(data) if prepare else data, path.name)
    if hasattr(obj, "check"):
        obj.check(str(path))
    return obj


# ------------------------------------------------------------- ingestion results


@dataclass
class LeakageExample:
    """A sample whose gold answer text appears in its own prompt."""

    sample: int  # the document's index in its task
    answer: str
    excerpt: str
    task: str | None = None  # the (sub)task, for groups


@dataclass
class Validation:
    """What ingestion's plan stage found about the task, before any model ran."""

    max_prompt_tokens: int | None = None  # counted with the checkpoints' tokenizer
    longest_prompt_sample: int | None = None
    tokens_per_rule_token: float = 1.0  # the manifest's: what the prompt-length rule divides the count by
    context_tokens: int | None = None  # the checkpoints' context length
    truncated_requests: int = 0  # requests whose prompt exceeds it: cut from the left, never in silence
    max_truncated_tokens: int = 0  # tokens cut from the worst one
    leakage_count: int = 0
    leakage_examples: list[LeakageExample] = field(default_factory=list)

    @property
    def rule_prompt_tokens(self) -> int | None:
        """The longest prompt in the prompt-length rule's tokens (those of the real models)."""
        return None if self.max_prompt_tokens is None else math.ceil(self.max_prompt_tokens / self.tokens_per_rule_token)

    def how_counted(self) -> str:
        """How the rule's count was made, where it is not the checkpoints' own count."""
        if self.tokens_per_rule_token == 1 or self.max_prompt_tokens is None:
            return ""
        return (f" (counted as {self.max_prompt_tokens:,} tokens of the checkpoints' tokenizer / "
                f"{self.tokens_per_rule_token:g}: the embedded set's small tokenizer makes up to that many tokens "
                "of a real model's on English)")


@dataclass
class CheckpointResult:
    """One evaluated checkpoint: `id` is '<model id>/<checkpoint name>'."""

    id: str
    metrics: dict[str, float]
    seconds: float
    error: str | None = None


@dataclass
class IngestionResults:
    task_name: str
    task_metric: str
    higher_is_better: bool
    n_samples: int
    validation: Validation = field(default_factory=Validation)
    checkpoints: list[CheckpointResult] = field(default_factory=list)
    complete: bool = False  # set when every checkpoint of the manifest is done
    plan_digest: str | None = None  # identifies the task's requests: a rerun resumes only the same task
    sandbox: str | None = None  # the isolation level the submission's code ran at (sandbox.LEVELS)
    chance_level: float | None = None  # the metric of uniform guessing (multiple-choice accuracies; samples.py)
    alignment_samples: list[AlignmentSample] = field(default_factory=list)  # drawn for the judge, in order

    def done_ids(self) -> set[str]:
        """Checkpoints already evaluated without error (a rerun skips them)."""
        return {c.id for c in self.checkpoints if c.error is None}


RESULTS_KIND = "e2lmc.ingestion_results"


def write_results(results: IngestionResults, directory: str | Path) -> Path:
    """Write (or rewrite, after each checkpoint) `ingestion_results.json` atomically."""
    return write_format(Path(directory) / RESULTS_FILE, RESULTS_KIND, results)


def read_results(directory: str | Path) -> IngestionResults:
    return read_format(IngestionResults, Path(directory) / RESULTS_FILE, RESULTS_KIND)


# ---------------------------------------------------------------- reference data


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


def read_alignment(path: Path) -> AlignmentSettings:
    """A YAML file holding the reference data's `alignment` block (`e2lmc bundle --alignment`)."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    settings = _build(AlignmentSettings, data, path.name)
    settings.check(path.name, key="")
    return settings


@dataclass
class ReferenceData:
    phase: str
    models: list[Model]
    scores: ScoreSelections
    weights: dict[str, float] = field(
        default_factory=lambda: {"signal_quality": 0.5, "ranking_consistency": 0.1, "scientific_compliance": 0.4}
    )
    validation: ValidationRules = field(default_factory=ValidationRules)
    show_hidden_values: bool = False  # may the report show values of hidden checkpoints?
    description: str = ""
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)

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


REFERENCE_KIND = "e2lmc.reference"


def write_reference(reference: ReferenceData, directory: str | Path) -> Path:
    return write_format(Path(directory) / REFERENCE_FILE, REFERENCE_KIND, reference)


def read_reference(directory: str | Path) -> ReferenceData:
    return read_format(ReferenceData, Path(directory) / REFERENCE_FILE, REFERENCE_KIND)


# ----------------------------------------------------------- checkpoint manifest

MANIFEST_FILE = "manifest.yaml"
MANIFEST_KIND = "e2lmc.manifest"


@dataclass
class ManifestEntry:
    """Where one checkpoint lives: a local directory (`path`, relative to the manifest
    or absolute) or a hub repo (`repo`, `subfolder`, `revision`) resolved through the
    Hugging Face cache."""

    id: str  # '<model id>/<checkpoint name>', as in the reference data
    path: str | None = None
    repo: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    role: Role | None = None  # as in the reference data; unknown counts as hidden (errors withheld)


@dataclass
class CheckpointManifest:
    checkpoints: list[ManifestEntry]
    description: str = ""
    # How many tokens of these checkpoints' tokenizer count as one token of the 2,048-token
    # prompt rule: 1 for the real series, counted with its own tokenizer; more for the
    # embedded set, whose small tokenizer cuts English into more pieces (docs/zoo.md).
    tokens_per_rule_token: float = 1.0

    def check(self, where: str) -> None:
        ids = [e.id for e in self.checkpoints]
        if not self.tokens_per_rule_token > 0:
            raise UserError(f"{where}: tokens_per_rule_token must be a positive number")
        if len(set(ids)) != len(ids):
            raise UserError(f"{where}: checkpoint ids must be unique")
        for i, entry in enumerate(self.checkpoints):
            if (entry.path is None) == (entry.repo is None):
                raise UserError(f"{where}: checkpoints[{i}] ({entry.id}) needs exactly one of 'path' or 'repo'")


def write_manifest(manifest: CheckpointManifest, directory: str | Path, name: str = MANIFEST_FILE) -> Path:
    """`name` lets one input-data folder hold a manifest per competition phase."""
    return write_format(Path(directory) / name, MANIFEST_KIND, manifest)


def read_manifest(directory: str | Path, name: str = MANIFEST_FILE) -> CheckpointManifest:
    return read_format(CheckpointManifest, Path(directory) / name, MANIFEST_KIND)
