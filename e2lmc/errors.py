"""The one exception type a user can cause: the CLI prints it as a single sentence."""


class UserError(Exception):
    """Bad input or a failed step, explained in one sentence naming the file, key or sample."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (empty when it has none), to quote it
    inside a one-sentence error."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""
