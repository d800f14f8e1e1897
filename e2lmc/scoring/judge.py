"""The scientific-alignment check: an LLM judge through any OpenAI-compatible endpoint.

The E2LM organizers checked every submission for alignment with the scientific domain
by asking an LLM judge, for 50 question–answer pairs drawn from the task, whether each
is about science (temperature 0, a JSON verdict). This does the same through the
`openai` client against any OpenAI-compatible server — OpenAI, a vLLM or llama.cpp
server on a GPU worker — with the client's retries on 429/5xx, a bounded request rate,
and a cache of verdicts by sample. The pairs are formatted by ingestion
(`ingestion.derived.alignment_samples`) and drawn here with the phase's secret (`draw`); the judge's
instructions live in `data/judge_prompt.yaml`, which organizers may edit.

A judge that cannot be reached, or answers nothing usable, gives "not checked" with the
reason — never a pass, and never a failed scoring step.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..formats.alignment import ALIGNMENT_DRAWN, AlignmentSample, AlignmentSettings
from ..formats.files import read_format
from ..progress import progress_bar

PROMPT_FILE = Path(__file__).parents[1] / "data" / "judge_prompt.yaml"
PROMPT_KIND = "e2lmc.judge_prompt"
VERDICTS = ("Accept", "Reject")
VERDICT_FORMAT = {  # the response_format of the organizers' notebook
    "type": "json_schema",
    "json_schema": {"name": "verdict", "strict": True, "schema": {
        "type": "object", "properties": {"verdict": {"type": "string", "enum": list(VERDICTS)}},
        "required": ["verdict"], "additionalProperties": False}},
}
TEMPERATURE, MAX_TOKENS = 0.0, 300
NO_KEY = "no-key"  # a self-hosted server usually needs none; the client insists on a string


@dataclass(frozen=True)
class JudgePrompt:
    """`data/judge_prompt.yaml`: the judge's system message, and its user message with {sample}."""

    system: str
    user: str

    def check(self, where: str) -> None:
        if not (self.system.strip() and self.user.strip()):
            raise UserError(f"{where}: 'system' and 'user' must be non-empty texts")
        if "{sample}" not in self.user:
            raise UserError(f"{where}: 'user' must contain {{sample}}, where each question-answer pair goes")

    def messages(self, sample: str) -> list[dict[str, str]]:
        """The sample cannot close the prompt's markers (`<<<`, `>>>`) to speak as the prompt."""
        fenced = sample.replace("<<<", "‹‹‹").replace(">>>", "›››")
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user.replace("{sample}", fenced)}]


def read_prompt(path: Path = PROMPT_FILE) -> JudgePrompt:
    """The judge's instructions, one sentence naming the file when they are unusable."""
    return read_format(JudgePrompt, path, PROMPT_KIND)


@dataclass
class AlignmentResult:
    """What the judge said about a task's drawn samples."""

    status: str  # checked, disabled, not_checked (the judge could not be asked, or said nothing usable: `problem`)
    judged: int = 0
    accepted: int = 0
    rejected: list[AlignmentSample] = field(default_factory=list)
    malformed: int = 0  # samples with an unusable answer: left out of the rate
    problem: str | None = None
    requests: int = 0  # sent to the server (not answered from the cache)

    @property
    def rate(self) -> float | None:
        return self.accepted / self.judged if self.status == "checked" and self.judged else None


class JudgeUnreachable(Exception):
    """The server could not be asked (connection, time-outs, retries spent, refused)."""


class Judge:
    """One endpoint and model; verdicts cached by (model, prompt, sample, vote)."""

    def __init__(self, settings: AlignmentSettings, prompt: JudgePrompt, cache: Path | None = None) -> None:
        from openai import OpenAI

        key = settings.api_key or os.environ.get(settings.api_key_env) or NO_KEY
        self.client = OpenAI(base_url=settings.endpoint, api_key=key, timeout=settings.timeout_seconds,
                             max_retries=settings.max_retries)
        self.settings, self.prompt, self.cache_path = settings, prompt, cache
        self.cache: dict[str, str] = _read_cache(cache)
        self.requests = 0
        self._next_request = 0.0

    def _key(self, sample: str, vote: int) -> str:
        text = json.dumps([self.settings.model, self.prompt.system, self.prompt.user, sample, vote])
        return hashlib.sha256(text.encode()).hexdigest()

    def verdict(self, sample: str, vote: int = 0) -> str | None:
        """Accept, Reject, or None for an answer that is neither."""
        key = self._key(sample, vote)
        if key in self.cache:
            return self.cache[key]
        import openai

        self._pace()
        try:
            response = self.client.chat.completions.create(
                model=self.settings.model, messages=self.prompt.messages(sample), temperature=TEMPERATURE,
                max_tokens=MAX_TOKENS, response_format=VERDICT_FORMAT)
        except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                openai.InternalServerError) as exc:
            raise JudgeUnreachable(f"{type(exc).__name__} after {self.settings.max_retries} retries: "
                                   f"{str(exc).splitlines()[0][:200]}") from None
        except openai.APIStatusError as exc:  # 401, 404 (no such model), 400 …: asking again will not help
            raise JudgeUnreachable(f"the server refused the request (HTTP {exc.status_code}): "
                                   f"{str(exc).splitlines()[0][:200]}") from None
        finally:
            self.requests += 1
        verdict = parse_verdict(response.choices[0].message.content if response.choices else None)
        if verdict is not None:
            self.cache[key] = verdict
            _write_cache(self.cache_path, self.cache)
        return verdict

    def _pace(self) -> None:
        """At most `requests_per_second` requests, evenly spaced."""
        wait = self._next_request - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next_request = time.monotonic() + 1.0 / max(self.settings.requests_per_second, 1e-6)


def parse_verdict(content: str | None) -> str | None:
    """{"verdict": "Accept" | "Reject"} (in a code fence, or with text around it, as some
    servers without JSON-schema support answer), else None."""
    if not content:
        return None
    text = content.strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    value = data.get("verdict") if isinstance(data, dict) else None
    return value if value in VERDICTS else None


def draw(samples: list[AlignmentSample], digest: str | None, secret: str | None,
         n: int = ALIGNMENT_DRAWN) -> list[AlignmentSample]:
    """`n` samples drawn without replacement, seeded by the phase's secret and the task's
    plan digest: the organizers draw the same ones on every run, a participant (who has no
    secret) cannot know which; without a secret (`e2lmc align`) the draw is the digest's."""
    seed = hashlib.sha256(f"{secret or ''}:{digest or ''}".encode()).hexdigest()
    order = list(range(len(samples)))
    random.Random(int(seed, 16)).shuffle(order)
    return [samples[i] for i in order[:n]]


def judge_samples(samples: list[AlignmentSample], settings: AlignmentSettings, prompt: JudgePrompt | None = None,
                  cache: Path | None = None, progress: bool = False) -> AlignmentResult:
    """Ask the judge about the first `settings.samples` samples, `settings.votes` times each:
    a sample is accepted when every vote accepts it. Never raises for the judge's sake."""
    if not settings.enabled:
        return AlignmentResult("disabled", problem="alignment not checked: the judge is disabled in this phase's "
                                                         "reference data (e2lmc align asks one)")
    picked = samples[:settings.samples]
    if not picked:
        return AlignmentResult("not_checked", problem="alignment not checked: the results carry no samples to judge "
                                                      "(ingested by an older e2lmc?)")
    try:
        judge = Judge(settings, prompt or read_prompt(), cache)
    except UserError as exc:
        return AlignmentResult("not_checked", problem=f"alignment not checked: {exc}")
    result = AlignmentResult("checked")
    iterator = picked
    if progress:
        iterator = progress_bar(picked, desc="judging", unit="sample")
    try:
        for sample in iterator:
            verdicts = [judge.verdict(sample.text, vote) for vote in range(settings.votes)]
            if None in verdicts:
                result.malformed += 1
            elif all(v == "Accept" for v in verdicts):
                result.accepted += 1
                result.judged += 1
            else:
                result.judged += 1
                result.rejected.append(sample)
    except JudgeUnreachable as exc:
        where = settings.endpoint or os.environ.get("OPENAI_BASE_URL") or "OpenAI's API"
        return AlignmentResult("not_checked", requests=judge.requests,
                               problem=f"alignment not checked: the judge at {where} ({settings.model}) could not "
                                       f"be asked: {exc}")
    result.requests = judge.requests
    if not result.judged:
        return AlignmentResult("not_checked", malformed=result.malformed, requests=judge.requests,
                               problem=f"alignment not checked: none of the judge's {result.malformed} answers was "
                                       'a {"verdict": "Accept" | "Reject"} object')
    return result


def default_cache() -> Path:
    """Where `e2lmc align` keeps verdicts between runs: the user's cache folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "e2lmc" / "judge_verdicts.json"


def _read_cache(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged cache is only a cache
    return {k: v for k, v in data.items() if v in VERDICTS} if isinstance(data, dict) else {}


def _write_cache(path: Path | None, cache: dict[str, str]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cache, indent=0, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
