"""Running the submission's code in separate, sandboxed, time-limited processes.

The plan and score stages execute the submission's templates and helpers. Each runs in
a child process (`child.py`, started confined by `sandbox.py` and `confine.py`)
that never holds a model, never sees the checkpoint manifest, and receives responses
without knowing which checkpoint they came from. The parent bounds the child's time,
keeps only the tail of its output and trusts nothing it sends: every message is checked,
and a scoring child that has seen hidden checkpoints is answered for with one fixed
sentence whatever it says or does (its message, its exit code, the limit it hit).

This is the trusted parent's side. The two talk in JSON lines: the parent writes to the
child's stdin; the child answers on its original stdout, while everything the submission's
code prints goes to stderr, which the parent drains into a bounded buffer and never forwards.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import selectors
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidSubmission, UserError
from ..formats.plan import MAX_PLAN_BYTES, PLAN_FILE, Plan, read_plan
from ..limits import size_text
from .confine import FORBIDDEN
from .quota import ScratchQuota
from .sandbox import Sandbox, undated
from .submission import Submission

STDERR_TAIL_BYTES = 64 * 1024
MAX_OTHER_METRICS = 16  # a task's metrics besides the submitted one, kept per checkpoint for comparison
METRIC_KEY = re.compile(r"[\w.\-]{1,64},[\w.\-]{1,64}")  # lm-eval's result key: 'metric,filter'
MAX_MESSAGE_BYTES = 1 << 20
HIDDEN_FAILURE = (
    "the submission's code failed while scoring a checkpoint whose values are hidden; no detail is shown, since "
    "any detail (message, error type, exit code) could carry those values — run the submission on the released "
    "checkpoints (e2lmc run) to see the error"
)


class ChildFailed(Exception):
    """A child process failed; the message is the detail, shown only where it is safe."""


class TaskProcess:
    """One sandboxed child process running `module` (the submission's task, or the trusted
    metric) that may read `read` and write `scratch`."""

    def __init__(self, sandbox: Sandbox, scratch: Path, module: str, args: list[str], read: list[Path]) -> None:
        self.sandbox, self.scratch = sandbox, scratch
        self.process = sandbox.start(module, args, read=read, scratch=scratch)
        self.quota = ScratchQuota(self.process, scratch, sandbox.settings.scratch_bytes)
        self.stderr_tail: collections.deque[bytes] = collections.deque()
        self._tail_bytes = 0
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._buffer = b""

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for chunk in iter(lambda: self.process.stderr.read1(4096), b""):
            self.stderr_tail.append(chunk)
            self._tail_bytes += len(chunk)
            while self._tail_bytes > STDERR_TAIL_BYTES:
                self._tail_bytes -= len(self.stderr_tail.popleft())

    def send(self, message: dict) -> None:
        """Write a message in the background: a child that stops reading its stdin must not
        stall this process (receive()'s time limit then stops the child)."""
        data = (json.dumps(message) + "\n").encode()

        def write() -> None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):  # the child is gone: receive() says why
                self.process.stdin.write(data)
                self.process.stdin.flush()

        threading.Thread(target=write, daemon=True).start()

    def receive(self, timeout: float, doing: str) -> dict:
        """The child's next message, a JSON object; anything else ends in ChildFailed."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.close()
                    raise ChildFailed(f"{doing} did not finish within {timeout:.0f} s, so it was stopped: a template "
                                      f"or helper of the submission probably never returns")
                chunk = self.process.stdout.read1(65536)
                if not chunk:
                    self.close()
                    raise ChildFailed(f"{doing} failed: the task's process ended unexpectedly ({self._exit_detail()})")
                self._buffer += chunk
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    self.close()
                    raise ChildFailed(f"{doing} failed: the task's process sent an oversized message")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, a number of thousands of digits, a deep nesting
            message = None
        if not isinstance(message, dict):
            self.close()
            raise ChildFailed(f"{doing} failed: the task's process sent something that is not a message")
        if "error" in message:
            self.close()
            error = message["error"]
            raise ChildFailed(error[:1000] if isinstance(error, str) else f"{doing} failed")
        return message

    def _exit_detail(self) -> str:
        code = self.process.wait()
        if self.quota.exceeded:  # it was killed for it
            return self.quota.exceeded
        confinement = self.sandbox.settings
        number = -code if code < 0 else code - 128 if code > 128 else 0  # bubblewrap exits with 128 + signal
        if number:
            name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"
            return {
                "SIGXCPU": f"it used more than its {confinement.cpu_seconds} s of CPU time",
                "SIGXFSZ": f"it wrote a file larger than the {size_text(confinement.file_bytes)} limit",
                "SIGSYS": f"it made a system call the sandbox forbids ({FORBIDDEN})",
                "SIGKILL": f"it was killed, most likely for memory (a child may use "
                           f"{size_text(confinement.memory_bytes)})",
            }.get(name, f"it crashed with {name}; native code that runs out of the "
                        f"{size_text(confinement.memory_bytes)} memory limit ends so")
        lines = b"".join(self.stderr_tail).decode(errors="replace").strip().splitlines()
        return f"exit code {code}; last output: {lines[-1][:300]}" if lines else f"exit code {code}"

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> TaskProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task_process(mode: str, submission: Submission, sandbox: Sandbox, scratch: Path, plan_dir: Path) -> TaskProcess:
    """A child running the submission's task in `mode` ("plan" or "score"); `plan_dir` is
    where the plan child writes plan.json and the score child reads it."""
    _copy_cached_datasets(submission.hub_datasets, scratch / "datasets")
    read = [submission.root] + ([plan_dir] if mode == "score" else [])
    return TaskProcess(sandbox, scratch, "e2lmc.sandboxed.child",
                       [mode, str(submission.root), submission.task_name, submission.task_metric, str(plan_dir)], read)


def _copy_cached_datasets(names: frozenset[str], private_cache: Path) -> None:
    """The hub datasets a task names, copied from this machine's datasets cache into the
    child's own: it reads them offline (and may write its locks) without seeing the rest."""
    cache = Path(os.environ.get("HF_DATASETS_CACHE")
                 or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "datasets")
    for name in names:
        folder = (cache / name.replace("/", "___")).resolve()
        if folder.is_dir() and folder.is_relative_to(cache.resolve()):
            shutil.copytree(folder, private_cache / folder.name, symlinks=True)


def planned_dir(workdir: Path) -> Path:
    """The folder the score and metric children read plan.json from: it holds nothing else
    (the plan child's own folder may hold whatever its code wrote there)."""
    return workdir / "planned"


def plan_task(submission: Submission, sandbox: Sandbox, workdir: Path, timeout: float) -> Plan:
    """Build the task in a child process and record its requests (no model involved)."""
    plan_dir = workdir / "plan"
    undated(submission.root)
    try:
        with task_process("plan", submission, sandbox, plan_dir, plan_dir) as child:
            child.receive(timeout, "Building the task and recording its requests")
    except ChildFailed as exc:
        raise InvalidSubmission(str(exc)) from None
    size = (plan_dir / PLAN_FILE).stat().st_size if (plan_dir / PLAN_FILE).is_file() else 0
    if size > MAX_PLAN_BYTES:  # read by this process: bounded before it is read
        raise InvalidSubmission(f"the task's requests take {size_text(size)}, more than the "
                                f"{size_text(MAX_PLAN_BYTES)} any task within the rules needs")
    try:
        plan = read_plan(plan_dir)
    except UserError as exc:
        raise InvalidSubmission(f"the task's process left an unreadable plan ({exc})") from None
    planned = planned_dir(workdir)
    planned.mkdir()
    shutil.copyfile(plan_dir / PLAN_FILE, planned / PLAN_FILE)
    undated(planned)
    return plan


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and \
        not (isinstance(value, int) and abs(value) > 2 ** 53) and math.isfinite(value)


class ScoreChild:
    """A child process that turns checkpoints' responses into the task's metric: either the
    trusted metric (`trusted`: lm-eval's own code on the plan, no code of the submission;
    one child serves every checkpoint) or the submission's own code (`custom`: one fresh
    child per checkpoint, so that a metric cannot keep state across them). Both read the
    plan from a folder that holds plan.json alone (`planned_dir`). A failure is told in full
    only where the caller allows it (no hidden checkpoint's responses given to any child
    yet); otherwise it is the fixed HIDDEN_FAILURE sentence."""

    def __init__(self, child: TaskProcess, timeout: float, metric: str, build_timeout: float) -> None:
        self.child, self.timeout, self.metric, self.build_timeout = child, timeout, metric, build_timeout
        self.built = False  # the child builds the task while the caller goes on (the first result waits)

    @classmethod
    def custom(cls, submission: Submission, sandbox: Sandbox, workdir: Path, timeout: float,
               build_timeout: float) -> ScoreChild:
        """A child running the submission's own code on the responses; `timeout` bounds the
        scoring of one checkpoint, `build_timeout` the building of the task before it."""
        scratch = Path(tempfile.mkdtemp(prefix="score-", dir=workdir))  # a fresh one: nothing of earlier children
        return cls(task_process("score", submission, sandbox, scratch, planned_dir(workdir)), timeout,
                   submission.task_metric, build_timeout)

    @classmethod
    def trusted(cls, sandbox: Sandbox, workdir: Path, timeout: float, metric: str,
                build_timeout: float) -> ScoreChild:
        """A child computing lm-eval's own metric from the plan: it never sees the submission."""
        scratch = Path(tempfile.mkdtemp(prefix="metric-", dir=workdir))
        plan = planned_dir(workdir)
        return cls(TaskProcess(sandbox, scratch, "e2lmc.metrics.child", [str(plan)], [plan]), timeout, metric,
                   build_timeout)

    def submit(self, responses: list[Any]) -> None:
        """Start scoring one checkpoint's responses (in plan order); the child sees the
        responses alone. The message is written in the background: the caller computes the
        next checkpoint meanwhile, while the child builds the task (once) and scores."""
        self.child.send({"responses": responses})

    def result(self, detail: bool) -> dict[str, float]:
        """The metrics of the checkpoint last submitted: the submitted one first, then up to
        MAX_OTHER_METRICS others the task computes (kept for comparison, never scored; any
        that is not a metric key with a finite number is left out); a failure in full with
        `detail`."""
        try:
            if not self.built:
                self.child.receive(self.build_timeout, "Building the task for scoring")
                self.built = True
            message = self.child.receive(self.timeout, "Scoring a checkpoint")
            value = message.get("value")
            if not _finite(value):
                raise ChildFailed(f"the task's metric {self.metric} is {str(value)[:40]} on a checkpoint, not a "
                                  f"finite number")
            others = message.get("metrics") if isinstance(message.get("metrics"), dict) else {}
            kept = [(k, float(v)) for k, v in others.items() if k != self.metric and isinstance(k, str)
                    and METRIC_KEY.fullmatch(k) and _finite(v)]
            return {self.metric: float(value), **dict(kept[:MAX_OTHER_METRICS])}
        except ChildFailed as exc:
            self.child.close()
            raise InvalidSubmission(str(exc) if detail else HIDDEN_FAILURE) from None

    def close(self) -> None:
        """Stop the child; its scratch folder, its own, goes with it (a custom child's: one per checkpoint)."""
        self.child.close()
        shutil.rmtree(self.child.scratch, ignore_errors=True)

    def __enter__(self) -> ScoreChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
