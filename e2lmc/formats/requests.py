"""The three kinds of request an lm-eval task makes to a model, named once.

lm-eval asks a model for `loglikelihood` (the log-probability of a continuation after a
context, and whether it is the greedy one), `loglikelihood_rolling` (a whole text's
log-likelihood, window by window) or `generate_until` (text generated after a context
until a stop sequence). The plan stage records each distinct request as its kind and its
arguments in canonical JSON (a `RequestKey`), the engine computes it, and the score stage
replays the response. Every place that treats the kinds differently names them from here
and raises `unknown_kind` on any other, so that a kind added here cannot be mishandled in
silence elsewhere.
"""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

RequestKind = Literal["loglikelihood", "loglikelihood_rolling", "generate_until"]
LOGLIKELIHOOD: RequestKind = "loglikelihood"
ROLLING: RequestKind = "loglikelihood_rolling"
GENERATE: RequestKind = "generate_until"
KINDS: tuple[RequestKind, ...] = typing.get_args(RequestKind)

RequestKey = tuple[str, str]  # (kind, arguments as canonical JSON): the identity of one request


def request_key(kind: str, arguments: tuple) -> RequestKey:
    return kind, json.dumps(list(arguments), sort_keys=True, ensure_ascii=False, default=str)


def unknown_kind(kind: object) -> ValueError:
    """What a place that handles request kinds raises on one it does not know."""
    return ValueError(f"unknown request kind {kind!r} (the kinds are: {', '.join(KINDS)})")


def arguments_fit(kind: str, arguments: Any) -> bool:
    """Whether parsed arguments have the shape lm-eval gives a request of `kind`: a context
    and a continuation, a text, or a context and the generation's settings."""
    if kind == LOGLIKELIHOOD:
        return isinstance(arguments, list) and len(arguments) == 2 and all(isinstance(a, str) for a in arguments)
    if kind == ROLLING:
        return isinstance(arguments, list) and len(arguments) == 1 and isinstance(arguments[0], str)
    if kind == GENERATE:
        return isinstance(arguments, list) and len(arguments) == 2 and isinstance(arguments[0], str) \
            and isinstance(arguments[1], dict)
    raise unknown_kind(kind)


def prompt_of(kind: str, arguments: list[Any]) -> str:
    """The text a request puts before the model, as the prompt-length rule counts it: a
    log-likelihood request's context and continuation, the others' context (or text)."""
    if kind == LOGLIKELIHOOD:
        return "".join(a for a in arguments if isinstance(a, str))
    if kind in (ROLLING, GENERATE):
        return str(arguments[0])
    raise unknown_kind(kind)
