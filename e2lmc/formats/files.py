"""The one reader and the one writer of every file passed between stages.

Each format is a small dataclass (its module in this package names the file), written as
JSON or YAML with a header — `format: e2lmc.<kind>` and `version: 1` — and read back
checking every key and type, so that a broken or foreign file ends in one sentence naming
the file and the key. docs/formats.md documents every format with examples.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import UserError, first_line

FORMAT_VERSION = 1
# What parsing hostile text raises besides a syntax error: PyYAML's constructors let Python's own
# errors through (an integer of 5,000 digits, a `!!timestamp` that is no date), json a RecursionError
# on 100,000 nested brackets. A parse is a pure function of the text: each of them means a bad file.
PARSE_ERRORS = (ValueError, TypeError, AttributeError, OverflowError, RecursionError, yaml.YAMLError)


def from_data(cls: Any, data: Any, where: str) -> Any:
    """Build `cls` (a dataclass, list, dict, Literal, optional or scalar type) from
    parsed JSON/YAML, naming the exact key in the error when something is off."""
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise UserError(f"{where} should be a mapping, not {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise UserError(f"{where} has unknown key '{unknown[0]}' (expected one of: {', '.join(fields)})")
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = from_data(hints[name], data[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{where} is missing the key '{name}'")
        return cls(**kwargs)
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return from_data(inner, data, where)
    if origin is Literal:
        if data not in args:
            raise UserError(f"{where} is {data!r}; expected one of: {', '.join(map(str, args))}")
        return data
    if origin is list:
        if not isinstance(data, list):
            raise UserError(f"{where} should be a list, not {type(data).__name__}")
        return [from_data(args[0], item, f"{where}[{i}]") for i, item in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise UserError(f"{where} should be a mapping, not {type(data).__name__}")
        return {str(k): from_data(args[1], v, f"{where}.{k}") for k, v in data.items()}
    if cls is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise UserError(f"{where} should be a number, not {data!r}")
        return float(data)
    if cls is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise UserError(f"{where} should be an integer, not {data!r}")
        return data
    if cls in (str, bool) and not isinstance(data, cls):
        raise UserError(f"{where} should be a {cls.__name__}, not {data!r}")
    return data


class _TooManyObjects(ValueError):
    pass


def _counted(limit: int | None) -> Callable[[dict], dict] | None:
    """A JSON object hook that stops the parse after `limit` objects (bounded memory)."""
    if limit is None:
        return None
    count = [0]

    def hook(obj: dict) -> dict:
        count[0] += 1
        if count[0] > limit:
            raise _TooManyObjects(f"it holds more than {limit:,} objects")
        return obj

    return hook


def _load(path: Path, kind: str, max_objects: int | None = None) -> dict:
    """Parse a JSON or YAML file into a dict, checking its format name and version."""
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text, object_hook=_counted(max_objects)) if path.suffix == ".json" else yaml.safe_load(text)
    except PARSE_ERRORS as exc:
        problem = "it is nested too deeply" if isinstance(exc, RecursionError) else first_line(exc, 200)
        raise UserError(f"{path} is not valid {path.suffix[1:].upper()}: {problem or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} should hold a mapping at the top level")
    if data.get("format") != kind:
        raise UserError(f"{path} is not a {kind} file (its 'format' key is {data.get('format')!r})")
    if data.get("version") != FORMAT_VERSION:
        raise UserError(
            f"{path} has format version {data.get('version')!r}; this e2lmc reads version {FORMAT_VERSION}"
        )
    return {k: v for k, v in data.items() if k not in ("format", "version")}


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _payload(kind: str, obj: Any) -> dict:
    """The header plus the dataclass as plain data; None values are left out (every
    optional key defaults to None, so reading gives the same object back)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {"format": kind, "version": FORMAT_VERSION, **strip(dataclasses.asdict(obj))}


def write_format(path: Path, kind: str, obj: Any) -> Path:
    """Write a format atomically: JSON for .json files, YAML otherwise."""
    payload = _payload(kind, obj)
    if path.suffix == ".json":
        text = json.dumps(payload, indent=1, allow_nan=False) + "\n"
    else:
        text = yaml.safe_dump(payload, sort_keys=False, width=100)
    _atomic_write(path, text)
    return path


def read_format(cls: Any, path: Path, kind: str, prepare: Callable[[dict], dict] | None = None,
                max_objects: int | None = None) -> Any:
    """Read a format, checking keys, types and (where the class has one) its `check`;
    `prepare` rewrites the parsed data first (a shorthand the file may use); a JSON file of
    more than `max_objects` objects is refused as it is parsed (bounded memory)."""
    data = _load(path, kind, max_objects)
    obj = from_data(cls, prepare(data) if prepare else data, path.name)
    if hasattr(obj, "check"):
        obj.check(str(path))
    return obj
