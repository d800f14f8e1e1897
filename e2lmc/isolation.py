"""Running the submission's code in a separate, time-limited process.

The plan and score stages execute the submission's templates and helpers. They run in
a child process (`python -m e2lmc.isolation`) that never holds a model, never reads the
checkpoint manifest, and receives responses without knowing which checkpoint they came
from. The parent bounds the child's time and keeps only the tail of its output.

The two sides talk in JSON lines: the parent writes to the child's stdin; the child
answers on its original stdout, while everything the submission's code prints goes to
stderr, which the parent drains into a bounded buffer and never forwards.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from .errors import UserError, first_line
from .formats import Plan, PlannedRequest, read_plan, write_plan
from .scoring import ValidationRules
from .submission import Submission, find_task_files

STDERR_TAIL_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 1 << 20
PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # so the child imports this very package


class TaskProcess:
    """One child process running the submission's task in `mode` ("plan" or "score")."""

    def __init__(self, mode: str, submission: Submission, workdir: Path) -> None:
        self.mode = mode
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]),
               "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "e2lmc.isolation", mode, str(submission.root), submission.task_name,
             submission.task_metric, str(workdir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=submission.root, env=env, start_new_session=True,
        )
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
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def receive(self, timeout: float, doing: str) -> dict:
        """The child's next message; a child that overruns `timeout` is stopped."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.close()
                    raise UserError(
                        f"{doing} did not finish within {timeout:.0f} s, so it was stopped: a template or helper of "
                        f"the submission probably never returns"
                    )
                chunk = self.process.stdout.read1(65536)
                if not chunk:
                    self.close()
                    raise UserError(f"{doing} failed: the task's process ended unexpectedly{self._exit_detail()}")
                self._buffer += chunk
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    self.close()
                    raise UserError(f"{doing} failed: the task's process sent an oversized message")
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if "error" in message:
            self.close()
            raise UserError(message["error"])
        return message

    def _exit_detail(self) -> str:
        code = self.process.wait()
        if self.mode == "score":  # its output may carry values computed on hidden checkpoints
            return f" (exit code {code})"
        lines = b"".join(self.stderr_tail).decode(errors="replace").strip().splitlines()
        return f" (exit code {code}; last output: {lines[-1][:300]})" if lines else f" (exit code {code})"

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> TaskProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_task(submission: Submission, workdir: Path, timeout: float) -> Plan:
    """Build the task in a child process and record its requests (no model involved)."""
    with TaskProcess("plan", submission, workdir) as child:
        child.receive(timeout, "Building the task and recording its requests")
    return read_plan(workdir)


class Scorer:
    """A child process that turns one checkpoint's responses into the task's metric."""

    def __init__(self, submission: Submission, workdir: Path, timeout: float) -> None:
        self.child = TaskProcess("score", submission, workdir)
        self.workdir, self.timeout, self.pending = workdir, timeout, ""
        self.child.receive(timeout, "Building the task for scoring")

    def submit(self, responses: list[Any]) -> None:
        """Start scoring one checkpoint's responses (in plan order); the child sees an
        anonymous file, not the checkpoint. The caller computes the next one meanwhile."""
        with tempfile.NamedTemporaryFile("w", dir=self.workdir, suffix=".json", delete=False) as f:
            json.dump(responses, f)
        self.pending = f.name
        self.child.send({"responses": f.name})

    def result(self) -> float:
        """The submitted metric on the checkpoint last submitted."""
        try:
            return float(self.child.receive(self.timeout, "Scoring a checkpoint")["value"])
        finally:
            os.unlink(self.pending)

    def close(self) -> None:
        self.child.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ the child side


def describe_error(exc: BaseException, root: Path, withhold: bool) -> str:
    """One sentence for an exception raised while running the submission's task; with
    `withhold`, without its message (it may hold values from hidden checkpoints)."""
    from jinja2.exceptions import SecurityError

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"a prompt template of the submission tried to reach Python internals, which is not allowed ({exc})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve().is_relative_to(root)]
    message = f": {first_line(exc, 300)}" if first_line(exc) and not withhold else ""
    if frames:
        where = f"{Path(frames[-1].filename).resolve().relative_to(root)}, line {frames[-1].lineno}"
        hidden = " (message withheld: it may contain values from hidden checkpoints)" if withhold else ""
        return f"the submission's code raised {type(exc).__name__} in {where}{message}{hidden}"
    return f"lm-eval could not run the task: {type(exc).__name__}{message}"


def _child_main(mode: str, root: str, task_name: str, task_metric: str, workdir: str) -> int:
    from .tasks import higher_is_better, keep_built_requests, leaked_samples, load_task, record_requests, replay

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the submission's prints go to stderr

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    submission = Submission(Path(root), task_name, task_metric, find_task_files(Path(root)))
    try:
        task_dict = load_task(submission)
        if mode == "plan":
            n_samples = sum(len(task.eval_docs) for task in task_dict["tasks"].values())
            if problem := ValidationRules().sample_count_problem(n_samples):
                raise UserError(f"task '{task_name}' {problem}")
            leaks = leaked_samples(task_dict)
            requests, _ = record_requests(submission, task_dict)
            planned = [PlannedRequest(kind, args, task, doc) for (kind, args), (task, doc) in requests.items()]
            write_plan(Plan(task_name, task_metric, higher_is_better(task_dict, task_metric), n_samples, planned,
                            leaks), workdir)
            send({"done": True})
            return 0
        keys = [(r.kind, r.arguments) for r in read_plan(workdir).requests]
        send({"ready": True})
        for n, line in enumerate(sys.stdin):
            values = json.loads(Path(json.loads(line)["responses"]).read_text())
            responses = {key: tuple(v) if isinstance(v, list) else v for key, v in zip(keys, values, strict=True)}
            send({"value": replay(submission, task_dict, responses)})
            if n == 0:  # the requests are built: later checkpoints only reset their responses
                keep_built_requests(task_dict)
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes one sentence for the parent
        send({"error": describe_error(exc, Path(root).resolve(), withhold=mode == "score")})
        return 3


if __name__ == "__main__":
    sys.exit(_child_main(*sys.argv[1:]))
