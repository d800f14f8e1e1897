"""Progress bars that suit where they are read.

On a terminal a bar redraws in place as often as tqdm likes. In a log (Codabench's
worker logs, CI, output redirected to a file) every redraw is kept as a line of its own,
so a few hundred checkpoints would flood it: there a bar redraws at most every
`LOG_INTERVAL_S` seconds, which still shows a long step moving.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, **options: Any) -> tqdm:
    """tqdm, writing to stderr unless told otherwise, redrawn sparingly where not a terminal."""
    options.setdefault("file", sys.stderr)
    if not is_terminal(options["file"]):
        options.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(iterable, **options)
