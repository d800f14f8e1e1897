"""`e2lmc validate`: what a participant runs before uploading — the preflight without any model.

The submission is opened and planned as the ingestion program would (same sandbox, same
rules), then its prompts are counted with a checkpoint's tokenizer — `--checkpoint`, or
the embedded default set's first checkpoint when it is built — in the rule's tokens, and
the requests that exceed its context are counted too. One line per finding, then the
verdict; exit status 0 only when the task is valid and nothing would be truncated.
"""

from __future__ import annotations

from pathlib import Path

from ..embedded.sets import first_checkpoint, set_folder
from ..errors import UserError
from ..formats.manifest import MANIFEST_FILE
from ..formats.rules import SubmissionRules
from ..ingestion.preflight import Preflight, preflight, rule_scale
from ..limits import Limits
from ..sandboxed.sandbox import private_workdir


def validate(submission: Path, limits: Limits, checkpoint: Path | None = None,
             allow_truncation: bool = False, zoo: Path | None = None) -> int:
    """Print what the preflight finds; 0 when valid, 1 when not, or when the prompt lengths
    could not be counted (no tokenizer: `checkpoint`, the set in `zoo`, or the default set)."""
    scale = 1.0
    if checkpoint is not None:
        _check_tokenizer_folder(checkpoint)
        scale = rule_scale(checkpoint)
    elif found := first_checkpoint(zoo):
        checkpoint, scale = found
    elif zoo is not None:
        raise UserError(f"--zoo {zoo} holds no built checkpoint set (no {MANIFEST_FILE} there); build one with "
                        f"'e2lmc zoo build --out {zoo}', or give --checkpoint")
    with private_workdir("validate") as tmp:
        planned = preflight(submission, Path(tmp), limits)
    plan = planned.plan
    kinds = sorted({r.kind for r in plan.requests})
    print(f"task '{plan.task_name}', metric {plan.task_metric} ({'higher' if plan.higher_is_better else 'lower'} "
          f"is better): {plan.n_samples:,} samples, {len(plan.requests):,} distinct requests ({', '.join(kinds)})")
    truncated = checkpoint is not None and _prompts(planned, checkpoint, scale, allow_truncation)
    if checkpoint is None:
        print(f"prompt lengths not checked: no tokenizer (pass --checkpoint DIR or --zoo DIR, or build the default "
              f"checkpoint set in {set_folder()} first)")
    fraction = len(plan.leakage) / plan.n_samples
    limit = SubmissionRules().max_leakage_fraction
    print(f"leakage: {len(plan.leakage)} samples ({fraction:.1%}) show their gold answer in their own prompt"
          + (f" — above the {limit:.0%} allowed: the submission would be invalid" if fraction > limit else ""))
    for leak in plan.leakage[:5]:
        print(f"  task '{leak.task}' sample {leak.sample}: '{leak.answer}' in …{leak.excerpt}…")
    valid = fraction <= limit and not truncated
    if valid and checkpoint is None:
        print("not checked: every other rule passes, but the prompt-length rule needs a tokenizer (above)")
        return 1
    print("valid" if valid else "invalid" if fraction > limit else "truncated: not what the task was designed to be")
    return 0 if valid else 1


def _check_tokenizer_folder(checkpoint: Path) -> None:
    """Refused before planning: a --checkpoint that holds no tokenizer."""
    if not (checkpoint / "tokenizer_config.json").is_file() and not (checkpoint / "tokenizer.json").is_file():
        raise UserError(f"--checkpoint {checkpoint} is not a checkpoint or tokenizer folder (no tokenizer files "
                        f"there{'' if checkpoint.is_dir() else ': it does not exist'}; relative paths start in "
                        f"{Path.cwd()})")


def _prompts(planned: Preflight, checkpoint: Path, scale: float, allow_truncation: bool) -> bool:
    """The prompt lengths and the truncation, printed; whether truncation makes the task invalid."""
    findings = planned.check_prompts(checkpoint, scale, warn=False)
    print(f"longest prompt: {findings.rule_prompt_tokens:,} tokens ({findings.longest_prompt_where()})"
          f"{findings.how_counted()}; counted with the tokenizer of {checkpoint}")
    if findings.context_tokens is None:
        print(f"truncation not checked: {checkpoint} is a tokenizer, not a model folder with a context length")
        return False
    warning = planned.truncation_warning()
    print(warning + ("" if allow_truncation else " (--allow-truncation accepts it)") if warning else
          f"every request fits the checkpoints' context of {findings.context_tokens:,} tokens")
    return warning is not None and not allow_truncation
