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
    plan.n_samples = distinct_samples(plan)
    if problem := rules.sample_count_problem(plan.n_samples):
        duplicates = len(plan.samples) - plan.n_samples
        if duplicates:
            problem = problem.replace("samples", "distinct samples", 1) + f" ({duplicates:,} repeat another's requests)"
        raise InvalidSubmission(f"task '{plan.task_name}' {problem}")
    plan.leakage = leaked_samples(plan)
    return plan


def distinct_samples(plan: Plan) -> int:
    """The samples that differ in their requests: what the sample-count rule counts."""
    return len({tuple(plan.requests[r].arguments for r in sample.requests) for sample in plan.samples})


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


def _target(sample: PlannedSample) -> Any:
    """`doc_to_target` as the child recorded it; None where it is not plain data (a child
    that runs the submission's code may write anything there, nested 100,000 deep)."""
    try:
        return json.loads(sample.target) if sample.target else None
    except (ValueError, RecursionError):
        return None


def _targets(sample: PlannedSample) -> list[Any]:
    target = _target(sample)
    return target if isinstance(target, list) else [target]


def _choice_index(sample: PlannedSample, target: Any) -> int | None:
    """Which choice `target` names as lm-eval reads it (a choice's text, or its index); None
    where it names none: lm-eval then scores the sample 0 for every model."""
    assert sample.choices is not None and sample.choice_texts is not None
    if isinstance(target, str) and target in sample.choice_texts:
        target = sample.choice_texts.index(target)
    if isinstance(target, int) and 0 <= target < sample.choices:  # a bool too: lm-eval reads True as 1
        return int(target)
    return None


def _check_gold_answers(plan: Plan) -> None:
    """Every multiple-choice sample scored by lm-eval's own metric must name a gold answer
    among its choices: a label "A" beside choices written out, or an index past the last
    choice, is a sample no model can get right, which lm-eval only warns about. (A metric of
    the submission's own reads the target its own way.)"""
    if plan.custom_functions():
        return
    wrong = [s for s in plan.samples if s.choices is not None and s.input_index is None and s.choice_texts is not None
             and not s.gold]
    if not wrong:
        return
    first, target = wrong[0], _targets(wrong[0])[0]
    texts = first.choice_texts or []
    choices = ", ".join(repr(_shorten(c)) for c in texts[:6]) + (", …" if len(texts) > 6 else "")
    named = f"the text {_shorten(target)!r}" if isinstance(target, str) else f"{_shorten(target)!r}"
    letter = isinstance(target, str) and len(target) == 1 and target.upper() in LETTERS
    decimal = isinstance(target, str) and re.fullmatch(r"\d+\.0", target)
    hint = (": a letter needs choices that are letters too, or a doc_to_target that gives the choice's index "
            "(for example {{ 'ABCD'.index(answer) }})" if letter else
            f": an index written as the decimal {target} (a JSON number {target}, or a CSV column read as decimals "
            "because one of its cells is empty): make it a whole number" if decimal else
            ": make doc_to_target give the right choice's text, exactly, or its index from 0 as a number")
    raise InvalidSubmission(
        f"task '{first.task}' sample {first.doc_id}: its gold answer is {named}, which is neither one of its "
        f"{first.choices} choices ({choices}) nor an index 0–{first.choices - 1} of them, so no model could answer "
        f"it right ({len(wrong):,} of {len(plan.samples):,} samples are so){hint}")


def _shorten(value: Any, characters: int = 40) -> Any:
    text = str(value)
    return value if len(text) <= characters else text[:characters - 1] + "…"


def leaked_samples(plan: Plan) -> list[LeakageExample]:
    """Samples whose prompt shows their gold answer more than it shows any other choice: the
    gold as a whole word (ignoring case, but a one-character answer's case counts) in the
    context of their first request, less the start every sample of the task shares (a
    description, fixed few-shot examples). A prompt that lists the choices ("true or false?",
    "Options: A) … B) …") shows every one of them, and leaks nothing by that. Lettered
    multiple choice (every choice a label listed on its own option line, "B. …", "(B) …")
    compares the options' texts outside the option lines instead."""
    contexts = [_context(plan, sample) for sample in plan.samples]
    by_task: dict[str, list[str]] = {}
    for sample, context in zip(plan.samples, contexts, strict=True):
        by_task.setdefault(sample.task, []).append(context)
    shared = {task: len(os.path.commonprefix(texts)) if len(texts) > 1 else 0 for task, texts in by_task.items()}
    leaks = []
    for sample, context in zip(plan.samples, contexts, strict=True):
        gold, others, text = _shown_answers(plan, sample, context, shared[sample.task])
        if not gold:
            continue
        found = list(_word(gold).finditer(text))
        if found and len(found) > max((len(_word(other).findall(text)) for other in others), default=0):
            match = found[0]
            excerpt = text[max(0, match.start() - EXCERPT_CHARACTERS): match.end() + EXCERPT_CHARACTERS]
            leaks.append(LeakageExample(sample.doc_id, gold, excerpt, sample.task))
    return leaks


def _word(answer: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)", 0 if len(answer) == 1 else re.IGNORECASE)


def _shown_answers(plan: Plan, sample: PlannedSample, context: str, shared: int) -> tuple[str, list[str], str]:
    """The gold answer, the other choices (distinct from it) and the text to look for them in."""
    gold = _gold_text(plan, sample)
    if not gold or not sample.gold or not sample.choices:
        return gold, [], context[shared:]
    choices = _choice_texts(plan, sample)
    others = [c for i, c in enumerate(choices) if i not in sample.gold and c and c.lower() != gold.lower()]
    lines = _option_lines(choices, context)
    if lines is None:
        return gold, others, context[shared:]
    contents = [lines[label][-1].group("content").strip() for label in choices]  # the asked question's options
    content = contents[sample.gold[0]]
    if not content:
        return gold, others, context[shared:]
    others = [c for i, c in enumerate(contents) if i not in sample.gold and c and c.lower() != content.lower()]
    cut = sorted({(0, shared)} | {m.span() for found in lines.values() for m in found})
    kept, at = [], 0
    for start, end in cut:
        kept.append(context[at:max(at, start)])
        at = max(at, end)
    return content, others, "".join(kept) + context[at:]


def _choice_texts(plan: Plan, sample: PlannedSample) -> list[str]:
    return [str(json.loads(plan.requests[r].arguments)[1]).strip() for r in sample.requests[:sample.choices or 0]]


def _option_lines(choices: list[str], context: str) -> dict[str, list[re.Match[str]]] | None:
    """Where the prompt lists each choice as a labelled option ("B. text"), when every
    choice is a label ("B") with such a line; None otherwise."""
    if not choices or not all(LABEL.fullmatch(label) for label in choices):
        return None
    lines = {label: list(re.finditer(OPTION_LINE.format(re.escape(label)), context)) for label in choices}
    return lines if all(lines.values()) else None


def option_labels(plan: Plan) -> list[str] | None:
    """The labels of a lettered multiple-choice task ("A", "B", …: the most any sample
    has), where every sample's choices are labels its prompt lists as options, so a model
    answers by the label ("Answer: B"), a format small models learn late; None otherwise."""
    labels: list[str] = []
    for sample in plan.samples:
        choices = _choice_texts(plan, sample)
        if _option_lines(choices, _context(plan, sample)) is None:
            return None
        labels = max(labels, choices, key=len)
    return labels or None


def lettered(plan: Plan) -> bool:
    return option_labels(plan) is not None


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
    target = _target(sample)
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
