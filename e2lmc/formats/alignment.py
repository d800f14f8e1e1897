"""What the alignment judge reads and how a phase sets it up.

Ingestion writes every sample of the task, formatted as a question-answer pair
(`AlignmentSample`), into its results; the phase's reference data says whether and how
the scoring step asks a judge about them (`AlignmentSettings`, its `alignment` block),
and holds the secret with which the judged samples are drawn. The judge itself is the
scoring stage's (`scoring.judge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UserError
from .files import from_data

ALIGNMENT_DRAWN = 200  # the most samples a phase may judge (`samples`)


@dataclass
class AlignmentSample:
    """One question-answer pair as the alignment judge reads it: the participant's own data,
    formatted by ingestion (`ingestion.derived.alignment_samples`)."""

    task: str
    doc_id: int
    text: str


@dataclass
class AlignmentSettings:
    """Whether and how the scoring step asks an LLM judge if the task's questions are
    scientific (docs/organizers.md). The reference data is private to the
    organizers, so it may hold the key; `api_key_env` names an environment variable instead."""

    enabled: bool = False
    endpoint: str | None = None  # an OpenAI-compatible base URL (…/v1); None: OPENAI_BASE_URL, else OpenAI's
    model: str = "gpt-4o-2024-08-06"
    samples: int = 50  # the first this many of the drawn samples are judged
    votes: int = 1  # a sample is accepted when every vote accepts it
    threshold: float | None = None  # an acceptance rate below this makes the submission invalid
    api_key_env: str = "OPENAI_API_KEY"
    api_key: str | None = None
    timeout_seconds: float = 60.0
    max_retries: int = 4  # the client's own, with back-off, on connection errors, 429 and 5xx
    requests_per_second: float = 5.0
    secret: str | None = None  # mixed into the draw of the judged samples: never in the kit (e2lmc bundle sets one)

    def check(self, where: str, key: str = "alignment.") -> None:
        if not 1 <= self.samples <= ALIGNMENT_DRAWN:
            raise UserError(f"{where}: {key}samples must lie in 1 … {ALIGNMENT_DRAWN}")
        if self.votes < 1 or self.max_retries < 0 or self.timeout_seconds <= 0 or self.requests_per_second <= 0:
            raise UserError(f"{where}: {key}votes must be at least 1, {key}max_retries at least 0, "
                            f"{key}timeout_seconds and {key}requests_per_second above 0")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise UserError(f"{where}: {key}threshold must lie in [0, 1]")


def read_alignment(path: Path) -> AlignmentSettings:
    """A YAML file holding the reference data's `alignment` block (`e2lmc bundle --alignment`)."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    settings = from_data(AlignmentSettings, data, path.name)
    settings.check(path.name, key="")
    return settings
