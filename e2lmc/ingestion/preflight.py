"""The preflight: a submission opened, planned in the sandbox and held to the rules before any model runs.

Every command that needs a submission's requests starts here — the ingestion program,
`e2lmc validate`, `diagnose`, `align` and `estimate` — so all of them refuse the same
tasks with the same sentences:
1. open: the submission copied or unzipped, its YAML parsed without running anything
   (`sandboxed.submission`);
2. plan: a sandboxed child builds the task and records every request
   (`sandboxed.isolation.plan_task`); this process recounts its samples and leakage from
   the requests and applies the sample-count rule (`derived.check_claims`);
3. prompts (given a checkpoint or tokenizer folder): the prompt-length rule, counted with
   that tokenizer in the rule's tokens (`tokens_per_rule_token`: the manifest's scale), and,
   for a model folder, the requests that exceed its context (`check_prompts`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidSubmission, UserError, first_line
from ..formats.manifest import MANIFEST_FILE, read_manifest
from ..formats.plan import Plan
from ..formats.requests import prompt_of
from ..formats.results import PreflightFindings
from ..formats.rules import SubmissionRules
from ..limits import Limits
from ..sandboxed.isolation import plan_task
from ..sandboxed.sandbox import Sandbox
from ..sandboxed.submission import Submission, open_submission
from .derived import check_claims

if TYPE_CHECKING:  # the engine's modules load transformers and lm-eval: only where prompts are counted
    from ..engine.packing import Encoder, Tokenized

LEAKAGE_EXAMPLES_KEPT = 10


@dataclass
class Preflight:
    """A planned submission, and what its prompts were found to be where they were counted."""

    submission: Submission
    plan: Plan
    findings: PreflightFindings | None = None  # None: no tokenizer was given to count prompts with
    tokenized: dict[str, tuple[Encoder, Tokenized]] = field(default_factory=dict)  # by tokenizer key: the engine's

    def check_prompts(self, checkpoint: Path, tokens_per_rule_token: float = 1.0,
                      warn: bool = True) -> PreflightFindings:
        """Step 3 (`check_prompts`) with `checkpoint`'s tokenizer; with `warn`, a truncation
        warning goes to stderr."""
        self.findings, self.tokenized = check_prompts(self.plan, checkpoint, tokens_per_rule_token)
        if warn and (warning := self.truncation_warning()):
            print(f"warning: {warning}", file=sys.stderr)
        return self.findings

    def truncation_warning(self) -> str | None:
        """One sentence when some requests do not fit the checkpoints' context."""
        findings = self.findings
        if findings is None or not findings.truncated_requests:
            return None
        return (f"{findings.truncated_requests:,} of {len(self.plan.requests):,} requests exceed the checkpoints' "
                f"context of {findings.context_tokens:,} tokens, by up to {findings.max_truncated_tokens:,} tokens: "
                "their prompts are cut from the left (as lm-eval's Hugging Face backend does), so what is scored is "
                "not the whole prompt")


def preflight(source: Path, workdir: Path, limits: Limits, checkpoint: Path | None = None,
              tokens_per_rule_token: float = 1.0, sandbox: Sandbox | None = None,
              warn: bool = True, rules: SubmissionRules = SubmissionRules()) -> Preflight:
    """Open, plan and (given `checkpoint`, a model or tokenizer folder) check the prompts of
    the submission at `source`; with `warn`, a truncation warning goes to stderr. `rules`:
    the sample-count rule the plan is refused by."""
    sandbox = sandbox or Sandbox(workdir, limits.sandbox)
    submission = open_submission(source, workdir)
    planned = Preflight(submission, check_claims(plan_task(submission, sandbox, workdir, limits.plan_seconds), rules))
    if checkpoint is not None:
        planned.check_prompts(checkpoint, tokens_per_rule_token, warn)
    return planned


def check_prompts(plan: Plan, checkpoint: Path,
                  tokens_per_rule_token: float = 1.0) -> tuple[PreflightFindings, dict[str, tuple[Encoder, Tokenized]]]:
    """The prompt-length rule (naming the longest sample), the requests that exceed the
    checkpoint's context (when `checkpoint` is a model folder, not only a tokenizer) and
    the leakage statistics. Prompts are counted with the checkpoint's tokenizer; the rule
    sees that count divided by `tokens_per_rule_token` (the manifest's). Also returns the
    requests tokenized for the context check, by tokenizer key, for the engine to reuse."""
    from lm_eval.models.utils import DEFAULT_MAX_LENGTH, resolve_max_length
    from transformers import AutoConfig, AutoTokenizer

    from ..engine.packing import Encoder, overflow, tokenize
    from ..engine.runner import tokenizer_key

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), use_fast=True)
    except (OSError, ValueError) as exc:  # HFValidationError is a ValueError: a path that is no folder
        raise UserError(f"cannot load the tokenizer of {checkpoint}: {first_line(exc, 200)}") from None
    texts = [prompt_of(request.kind, json.loads(request.arguments)) for request in plan.requests]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else [0]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    request = plan.requests[longest] if plan.requests else None
    findings = PreflightFindings(
        max_prompt_tokens=lengths[longest],
        longest_prompt_sample=request.doc_id if request else None,
        longest_prompt_task=request.task if request and request.task != plan.task_name else None,
        tokens_per_rule_token=tokens_per_rule_token,
        leakage_count=len(plan.leakage),
        leakage_examples=plan.leakage[:LEAKAGE_EXAMPLES_KEPT],
    )
    problem = SubmissionRules().prompt_length_problem(findings.rule_prompt_tokens)
    if problem and request is not None:
        raise InvalidSubmission(f"task '{request.task}' sample {request.doc_id}: its prompt {problem}"
                                + findings.how_counted())
    tokenized = {}
    if (checkpoint / "config.json").is_file():
        context = resolve_max_length(AutoConfig.from_pretrained(str(checkpoint)), tokenizer,
                                     default=DEFAULT_MAX_LENGTH)
        encoder = Encoder(tokenizer)
        tokens = tokenize(plan.request_keys(), encoder)
        cut = overflow(tokens, context)
        findings.context_tokens = context
        findings.truncated_requests, findings.max_truncated_tokens = cut.requests, cut.max_excess
        tokenized[tokenizer_key(checkpoint)] = encoder, tokens
    return findings, tokenized


def rule_scale(checkpoint: Path) -> float:
    """The prompt rule's scale (`tokens_per_rule_token`) of the set a checkpoint folder
    belongs to: its manifest two folders up, as in the embedded set, or one up for the
    set's `tokenizer/`; 1 elsewhere (a real checkpoint, counted with its own tokenizer)."""
    for folder in checkpoint.resolve().parents[:2]:
        if (folder / MANIFEST_FILE).is_file():
            return read_manifest(folder).tokens_per_rule_token
    return 1.0
