"""The exceptions a user can cause: the CLI prints each as a single sentence.

Exit codes (`e2lmc.cli.main`): 0 ok, 1 the submission is invalid (`InvalidSubmission`), 2 bad
input or refused (`UserError`), 3 an internal error (a traceback, and a line asking to
report it), 130 interrupted.
"""

from pathlib import Path


class UserError(Exception):
    """Bad input or a failed step, explained in one sentence naming the file, key or sample."""


class InvalidSubmission(UserError):
    """The submission breaks a rule or its own code fails: the participant must change it."""


def output_folder(path: Path, option: str) -> Path:
    """`path` as a folder to write into (created if missing), or one sentence saying why not."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {path} cannot be created: {exc.strerror}") from None
    return path


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (empty when it has none), to quote it
    inside a one-sentence error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""
