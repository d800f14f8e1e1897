"""What the trusted parent derives from plan.json alone, without running the task's code again.

The plan is written by the child that ran the submission's code, so what it claims is
recomputed here from its requests and gold answers (`check_claims`): the sample count
(distinct samples: the same requests twice count once) and the samples whose gold answer
shows in their own prompt (leakage). Also the task's chance level (the report's reference
line, the advice's "at chance"), and the samples the alignment judge may read, formatted
as the organizers' judge read them, from the very requests the models are asked.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from ..errors import InvalidSubmission
from ..formats.alignment import AlignmentSample
from ..formats.plan import LeakageExample, Plan, PlannedSample
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, unknown_kind
from ..formats.rules import SubmissionRules

ACCURACY_METRICS = ("acc", "acc_norm", "acc_mutual_info")  # lm-eval's multiple-choice accuracies
PROMPT_CHARACTERS = 1500  # of a prompt shown to the alignment judge: its end, where the question is
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
EXCERPT_CHARACTERS = 40  # around a leaked answer, each side
LABEL = re.compile(r"[A-Za-z]|[0-9]{1,2}")  # a lettered or numbered choice's label
OPTION_LINE = r"(?m)^[ \t]*[(\[]?{}[.):\]][ \t]*(?P<content>.*)$"  # "B. text", "(B) text", "2) text" …
# a label stated as the answer: "the answer is B", "Correct: (B)"
STATED_LABEL = r"(?i:answer|correct|solution)\W{{1,12}}(?:(?i:is)\W{{1,3}})?{}(?!\w)"


def check_claims(plan: Plan, rules: SubmissionRules = SubmissionRules()) -> Plan:
    """The plan with its sample count and leakage computed here, not taken from the child;
    a plan whose samples and requests do not match, or whose distinct samples break the
    sample-count rule, is refused."""
    plan.check("plan.json")
    used = {r for sample in plan.samples for r in sample.requests}
    if len(used) != len(plan.requests) or any(not sample.requests for sample in plan.samples):
        raise InvalidSubmission("the task's process wrote a plan whose requests do not match its samples")
    scored, recipes = plan.scored_tasks(), {r.task for r in plan.recipes}
    if plan.recipes and not ({s.task for s in plan.samples} <= scored <= recipes):
        raise InvalidSubmission(f"the task's process wrote a plan whose samples are not all under task "
                                f"'{plan.task_name}' (counted samples must be scored)")
    for sample in plan.samples:
        if sample.input_index is not None:
            _check_multiple_input(plan, sample)
        if sample.choices is not None:
            sample.gold = _scored_gold(sample)
    _check_gold_answers(plan)
    plan.n_samples = len({tuple(plan.requests[r].arguments for r in sample.requests) for sample in plan.samples})
    if problem := rules.sample_count_problem(plan.n_samples):
        duplicates = len(plan.samples) - plan.n_samples
        raise InvalidSubmission(f"task '{plan.task_name}' {problem.replace('samples', 'distinct samples', 1)}"
                                + (f" ({duplicates:,} repeat another's requests)" if duplicates else ""))
    plan.leakage = leaked_samples(plan)
    return plan


def _check_multiple_input(plan: Plan, sample: PlannedSample) -> None:
    """A sample claimed multiple-input (its gold an index of `doc_to_text`; no leakage
    check) must ask its choices as contexts of one shared continuation."""
    arguments = [json.loads(plan.requests[r].arguments) for r in sample.requests]
    if len({a[1] for a in arguments}) != 1 or len({a[0] for a in arguments}) != len(arguments):
        raise InvalidSubmission("the task's process wrote a plan whose multiple-input sample "
                                f"{sample.doc_id} does not ask its choices as contexts")


def _scored_gold(sample: PlannedSample) -> list[int]:
    """The right choices as lm-eval's multiple-choice scoring reads them from the fields the
    trusted metric uses (`target`, `choice_texts`, `input_index`), not as the child claims:
    the gold the leakage check, the chance level and the judge see is the gold scored."""
    assert sample.choices is not None
    if sample.input_index is not None:
        return [sample.input_index] if 0 <= sample.input_index < sample.choices else []
    if sample.choice_texts is None:  # not recorded: the submission's own metric reads the document
        return []
    return [i for i in (_choice_index(sample, t) for t in _targets(sample)) if i is not None]


def _targets(sample: PlannedSample) -> list[Any]:
    target = json.loads(sample.target) if sample.target else None
    return target if isinstance(target, list) else [target]


def _choice_index(sample: PlannedSample, target: Any) -> int | None:
    """Which choice `target` names as lm-eval reads it (a choice's text, or its index); None
    where it names none: lm-eval then scores the sample 0 for every model."""
    assert sample.choices is not None and sample.choice_texts is not None
    if isinstance(target, str) and target in sample.choice_texts:
        target = sample.choice_texts.index(target)
    if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < sample.choices:
        return target
    return None


def _check_gold_answers(plan: Plan) -> None:
    """Every multiple-choice sample scored by lm-eval's own metric must name its gold among
    its choices: a label "A" beside choices written out, or an index past the last choice,
    is a sample no model can get right, which lm-eval only warns about."""
    wrong = [s for s in plan.samples if s.choices is not None and s.input_index is None and s.choice_texts is not None
             and any(_choice_index(s, t) is None for t in _targets(s))]
    if not wrong:
        return
    first, targets = wrong[0], [t for t in _targets(wrong[0]) if _choice_index(wrong[0], t) is None]
    texts = first.choice_texts or []
    choices = ", ".join(repr(_shorten(c)) for c in texts[:6]) + (", …" if len(texts) > 6 else "")
    letters = all(isinstance(t, str) and len(t) == 1 and t.upper() in LETTERS for t in targets)
    hint = (": a letter needs choices that are letters too, or a doc_to_target that gives the choice's index "
            "(for example {{ 'ABCD'.index(answer) }})" if letters else
            ": make doc_to_target give the right choice's text, exactly, or its index from 0")
    raise InvalidSubmission(
        f"task '{first.task}' sample {first.doc_id}: its gold answer {_shorten(targets[0])!r} is not one of its "
        f"{first.choices} choices ({choices}) nor an index 0–{first.choices - 1} of them, so no model could answer "
        f"it right ({len(wrong):,} of {len(plan.samples):,} samples are so){hint}")


def _shorten(value: Any, characters: int = 40) -> Any:
    text = str(value)
    return value if len(text) <= characters else text[:characters - 1] + "…"


def leaked_samples(plan: Plan) -> list[LeakageExample]:
    """Samples whose gold answer appears, as a whole word ignoring case, in their own
    prompt: the context of their first request, less the start every sample of the task
    shares (a description, fixed few-shot examples)."""
    prompts = [_context(plan, sample) for sample in plan.samples]
    by_task: dict[str, list[str]] = {}
    for sample, prompt in zip(plan.samples, prompts, strict=True):
        by_task.setdefault(sample.task, []).append(prompt)
    shared = {task: len(os.path.commonprefix(texts)) if len(texts) > 1 else 0 for task, texts in by_task.items()}
    leaks = []
    for sample, context in zip(plan.samples, prompts, strict=True):
        answer, prompt, patterns = _leak_patterns(plan, sample, context[shared[sample.task]:])
        match = next((m for m in (p.search(prompt) for p in patterns) if m), None)
        if match:
            excerpt = prompt[max(0, match.start() - EXCERPT_CHARACTERS): match.end() + EXCERPT_CHARACTERS]
            leaks.append(LeakageExample(sample.doc_id, answer, excerpt, sample.task))
    return leaks


def _leak_patterns(plan: Plan, sample: PlannedSample, prompt: str) -> tuple[str, str, list[re.Pattern[str]]]:
    """The gold answer as reported, the text to search and what to search for. Lettered
    multiple choice (MMLU's own layout: every choice a label such as "B" or "2", listed as an
    option line "B. …" of the prompt) answers with a label that the prompt shows by design:
    there a leak is the gold option's text, or the label stated as the answer ("the answer
    is B"), anywhere but in the asked question's option lines and in the line that follows an
    earlier example's last option (its own answer). Otherwise it is the gold answer itself, as
    a whole word ignoring case, anywhere in the prompt."""
    answer = _gold_text(plan, sample)
    plain = (answer, prompt, [re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)", re.IGNORECASE)] if answer else [])
    if not answer or not sample.gold or not sample.choices:
        return plain
    labels = [str(json.loads(plan.requests[r].arguments)[1]).strip() for r in sample.requests[:sample.choices]]
    if not all(LABEL.fullmatch(label) for label in labels):
        return plain
    options = {label: list(re.finditer(OPTION_LINE.format(re.escape(label)), prompt)) for label in labels}
    if not all(options.values()) or answer not in options:
        return plain
    examples_answers = [re.compile(r"(?m)^.*$").search(prompt, m.end() + 1) for m in options[labels[-1]][:-1]]
    cut = sorted({found[-1].span() for found in options.values()}
                 | {m.span() for m in examples_answers if m is not None}, reverse=True)
    rest = prompt
    for start, end in cut:
        rest = rest[:start] + rest[end:]
    content = options[answer][-1].group("content").strip()
    patterns = [re.compile(STATED_LABEL.format(re.escape(answer)))]
    if content:
        patterns.insert(0, re.compile(rf"(?<!\w){re.escape(content)}(?!\w)", re.IGNORECASE))
    return content or answer, rest, patterns


def _context(plan: Plan, sample: PlannedSample) -> str:
    arguments = json.loads(plan.requests[sample.requests[0]].arguments)
    return str(arguments[0]) if arguments else ""


def _gold_text(plan: Plan, sample: PlannedSample) -> str:
    """The gold answer as the models are asked it: a gold choice's continuation, a
    log-likelihood request's continuation, a generation's target; empty when there is none."""
    request = plan.requests[sample.requests[0]]
    if sample.input_index is not None or request.kind == ROLLING:
        return ""
    if sample.gold:
        return str(json.loads(plan.requests[sample.requests[sample.gold[0]]].arguments)[1]).strip()
    if request.kind == LOGLIKELIHOOD:
        return str(json.loads(request.arguments)[1]).strip()
    target = json.loads(sample.target) if sample.target else None
    target = target[0] if isinstance(target, list) and target else target
    if isinstance(target, int) and not isinstance(target, bool) and sample.choice_texts:
        target = sample.choice_texts[target] if 0 <= target < len(sample.choice_texts) else ""
    return str(target).strip() if isinstance(target, (str, int)) else ""


def _guess_chances(plan: Plan) -> list[float] | None:
    """Each sample's chance that a uniform guess is right (gold answers / choices), for an
    accuracy of a multiple-choice task; None otherwise (generation, log-likelihoods, a
    sample without a gold)."""
    if plan.task_metric.split(",")[0] not in ACCURACY_METRICS or not plan.samples:
        return None
    if any(s.choices is None or not s.gold for s in plan.samples):
        return None
    return [len(set(s.gold)) / s.choices for s in plan.samples]


def chance_level(plan: Plan) -> float | None:
    """The metric a model guessing uniformly would get: the mean over samples of
    (gold answers / choices), for an accuracy of a multiple-choice task; None otherwise
    (lower-is-better metrics, generation, log-likelihoods, a sample without a gold)."""
    chances = _guess_chances(plan)
    return sum(chances) / len(chances) if chances else None


def guessing_spread(plan: Plan) -> float | None:
    """The standard deviation of that metric for a model guessing uniformly: √(Σ pᵢ(1 − pᵢ)) / n
    over the samples' chances pᵢ (a sample it cannot get wrong adds no noise). None where
    the metric is not the plain mean of the samples' accuracies (a group of subtasks, whose
    aggregation may weigh them otherwise), or lower is better; what tells the scoring when
    two models are both still guessing (`scoring/formulas.scientific_compliance`)."""
    chances = _guess_chances(plan)
    if not chances or plan.groups or not plan.higher_is_better:
        return None
    return math.sqrt(sum(p * (1 - p) for p in chances)) / len(chances)


def alignment_samples(plan: Plan) -> list[AlignmentSample]:
    """Every sample, in plan order, formatted as the organizers' judge read them:
    `Question: …`, the choices as `A) …`, `Answer: X`. The text comes from the requests the
    engine evaluates, so the judge sees what the models are asked. The scoring step draws
    the judged ones with a secret of the phase (`scoring.judge.draw`)."""
    return [AlignmentSample(sample.task, sample.doc_id, qa_text(plan, sample)) for sample in plan.samples]


def qa_text(plan: Plan, sample: PlannedSample) -> str:
    """One sample as a question-answer pair (the end of a long prompt: its last question)."""
    requests = [plan.requests[r] for r in sample.requests]
    arguments = [json.loads(r.arguments) for r in requests]
    context = str(arguments[0][0]) if arguments and arguments[0] else ""
    question = re.sub(r"\s*Answer\s*:\s*$", "", context.strip())[-PROMPT_CHARACTERS:]
    if not question.lower().startswith("question"):
        question = f"Question: {question}"
    kind = requests[0].kind if requests else GENERATE
    if sample.choices and sample.gold and sample.choices <= len(LETTERS):
        choices = [str(a[1])[1:] if str(a[1]).startswith(" ") else str(a[1]) for a in arguments[:sample.choices]]
        lines = [question] + [f"{LETTERS[i]}) {c}" for i, c in enumerate(choices)]
        return "\n".join(lines + [f"Answer: {', '.join(LETTERS[g] for g in sorted(set(sample.gold)))}"])
    if kind == LOGLIKELIHOOD:
        return f"{question}\nAnswer: {str(arguments[0][1]).strip()}"
    if kind == ROLLING:
        return f"Text: {context.strip()[-PROMPT_CHARACTERS:]}"
    if kind == GENERATE:
        return question
    raise unknown_kind(kind)
