"""The one exception type a user can cause: the CLI prints it as a single sentence."""


class UserError(Exception):
    """Bad input or a failed step, explained in one sentence naming the file, key or sample."""
