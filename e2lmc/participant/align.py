"""`e2lmc align`: the alignment judge on the samples the pipeline would draw, before uploading.

The submission is planned as ingestion plans it, samples are drawn (seeded by the task's
plan: the competition's draw mixes in a secret of the phase, so it judges others) and
formatted as question-answer pairs, and the judge — any
OpenAI-compatible endpoint, through `scoring.judge` — says of each whether it is about
science. Verdicts are cached, so a second run asks only about what changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..formats.alignment import AlignmentSettings
from ..ingestion.derived import alignment_samples
from ..ingestion.preflight import preflight
from ..limits import Limits
from ..sandboxed.sandbox import private_workdir
from ..scoring.judge import draw, judge_samples, read_prompt


def align(submission: Path, settings: AlignmentSettings, limits: Limits, prompt_file: Path | None = None,
          cache: Path | None = None) -> int:
    """Print the acceptance rate and the rejected samples: 0, 1 below the threshold, 2 when
    the judge could not be asked (the reason on stderr). `prompt_file`: the judge's
    instructions (default: the organizers', data/judge_prompt.yaml); `cache`: None keeps nothing."""
    settings.check("e2lmc align", key="")
    prompt = read_prompt(prompt_file) if prompt_file else read_prompt()
    with private_workdir("align") as tmp:
        plan = preflight(submission, Path(tmp), limits).plan
    print("the samples judged here are drawn without the phase's secret: the competition judges others, drawn "
          "from the same task", file=sys.stderr)
    result = judge_samples(draw(alignment_samples(plan), plan.digest(), settings.secret), settings, prompt,
                           cache=cache, progress=True)
    if result.rate is None:
        print(result.problem, file=sys.stderr)
        return 2
    votes = f"{settings.votes} vote{'s' if settings.votes > 1 else ''} each"
    cached = (result.judged + result.malformed) * settings.votes - result.requests
    asked = (f"{result.requests} requests, no cache" if cache is None else
             f"{result.requests} requests, {cached} verdicts from the cache" if cached else
             f"{result.requests} requests, none answered from the cache")
    print(f"alignment: {result.accepted} of {result.judged} samples accepted as scientific = {result.rate:.0%} "
          f"({settings.model}, {votes}; {asked})"
          + (f"; {result.malformed} unusable answers left out" if result.malformed else ""))
    for sample in result.rejected:
        lines = sample.text.splitlines() or [""]
        question = next((line for line in reversed(lines) if line.startswith("Question:")), lines[0])  # the last
        print(f"  rejected: task '{sample.task}' sample {sample.doc_id}: {question[:150]}")
    below = settings.threshold is not None and result.rate < settings.threshold
    if below:
        print(f"below --threshold {settings.threshold:.0%} (exit code 1): a phase whose alignment rule asks for "
              f"{settings.threshold:.0%} would count the submission invalid")
    return 1 if below else 0
