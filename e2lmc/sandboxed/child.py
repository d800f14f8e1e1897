"""The child process that runs the submission's task (plan or score mode).

Started by `isolation.TaskProcess` as `python -m e2lmc.sandboxed.confine CONFINEMENT
e2lmc.sandboxed.child MODE …`, so it is confined before this module runs. In `plan` mode
it builds the task with lm-eval, applies the sample-count rule, records every request and
what each sample asks (`samples.py`) and writes plan.json; in `score` mode it builds the
task, then answers each line of bare responses on its stdin with the metric the task's
own code computes from them. It talks to the parent in JSON lines on its original
stdout; everything the submission's code prints goes to stderr. Every failure becomes one
sentence (`describe_error`), which the parent withholds where it could carry hidden values.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from pathlib import Path

from ..errors import UserError, first_line
from ..formats.plan import Plan, PlannedRequest, read_plan, write_plan
from ..formats.rules import SubmissionRules
from ..limits import size_text
from . import confine
from .submission import Submission, find_task_files


def describe_error(exc: BaseException, root: Path) -> str:
    """One sentence for an exception raised while running the submission's task."""
    from jinja2.exceptions import SecurityError

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"a prompt template of the submission tried to reach Python internals, which is not allowed ({exc})"
    limits = confine.ACTIVE
    if isinstance(exc, MemoryError) and limits:
        return (f"the submission's task ran out of memory: a sandboxed process may use "
                f"{size_text(limits.memory_bytes)} of address space (--memory-limit)")
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG and limits:
        return f"the submission's code wrote a file larger than the {size_text(limits.file_bytes)} limit"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE and limits:
        return f"the submission's code opened more than {limits.open_files} files at once (the open-files limit)"
    if said := _first_document_check(exc):
        return said
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve().is_relative_to(root)]
    message = f": {first_line(exc, 300)}" if first_line(exc) else ""
    hint = f" ({confine.FORBIDDEN})" if isinstance(exc, PermissionError) else ""
    if frames:
        where = f"{Path(frames[-1].filename).resolve().relative_to(root)}, line {frames[-1].lineno}"
        return f"the submission's code raised {type(exc).__name__} in {where}{message}{hint}"
    return f"lm-eval could not run the task: {type(exc).__name__}{message}{hint}"


def _first_document_check(exc: BaseException) -> str | None:
    """lm-eval checks a task's first document when it builds the task: an index past its
    choices fails there as a bare IndexError, a choice that is a number (a CSV's numeric
    column) as a bare TypeError; both said with the task, what was found and the fix."""
    innermost = exc.__traceback__
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    found = innermost.tb_frame.f_locals if innermost is not None else {}
    if not {"test_target", "test_choice", "self"} <= found.keys():
        return None
    name = getattr(getattr(found["self"], "config", None), "task", "?")
    if isinstance(exc, TypeError) and isinstance(found["test_choice"], list) and \
            not all(isinstance(c, str) for c in found["test_choice"]):
        shown = ", ".join(repr(c)[:20] for c in found["test_choice"][:4])
        return (f"task '{name}': the choices of its first document are not all texts ({shown}): numbers, as a CSV's "
                "numeric columns are read; make doc_to_choice give texts, e.g. '{{[a|string, b|string]}}'")
    if not isinstance(exc, IndexError):
        return None
    index, choices = found["test_target"], found["test_choice"]
    if not isinstance(index, int) or not isinstance(choices, list) or -len(choices) <= index < len(choices):
        return None  # another IndexError of the same check (an empty choice): said as lm-eval's
    return (f"task '{name}': the gold answer of its first document is index {index}, past its "
            f"{len(choices)} choices (lm-eval checks the first document when it builds the task): "
            "make doc_to_target give the right choice's index from 0, or its text")


def main(mode: str, root: str, task_name: str, task_metric: str, plan_dir: str) -> int:
    """Build the task; then, in `plan` mode, record its requests into plan.json, or, in
    `score` mode, turn each line of responses on stdin into the metric's value."""
    from .recipe import recipes
    from .samples import planned_samples
    from .tasks import higher_is_better, keep_built_requests, load_task, record_requests, replay

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the submission's prints go to stderr

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    submission = Submission(Path(root), task_name, task_metric, find_task_files(Path(root)))
    try:
        task_dict = load_task(submission)
        if mode == "plan":
            n_samples = sum(len(task.eval_docs) for task in task_dict["tasks"].values())
            rules = SubmissionRules()  # too many is refused before any request is built; too few by the parent
            if n_samples > rules.max_samples and (problem := rules.sample_count_problem(n_samples)):
                raise UserError(f"task '{task_name}' {problem}")
            lm, _ = record_requests(submission, task_dict)
            planned = [PlannedRequest(kind, args, task, doc) for (kind, args), (task, doc) in lm.requests.items()]
            samples = planned_samples(task_dict, lm, {key: i for i, key in enumerate(lm.requests)})
            task_recipes, group_recipes = recipes(task_dict)
            write_plan(Plan(task_name, task_metric, higher_is_better(task_dict, task_metric), n_samples, planned,
                            [], samples, task_recipes, group_recipes), plan_dir)
            send({"done": True})
            return 0
        keys = read_plan(plan_dir).request_keys()
        send({"ready": True})
        for n, line in enumerate(sys.stdin):
            values = json.loads(line)["responses"]
            responses = {key: tuple(v) if isinstance(v, list) else v for key, v in zip(keys, values, strict=True)}
            values = replay(submission, task_dict, responses)
            send({"value": values[task_metric], "metrics": values})
            if n == 0:  # the requests are built: later checkpoints only reset their responses
                keep_built_requests(task_dict)
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence for the parent
        send({"error": describe_error(exc, Path(root).resolve())})
        return 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
