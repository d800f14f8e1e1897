"""Codabench's rules for a competition bundle, as checks (docs/bundle.md, read from Codabench's
own code): what its upload refuses, and what it accepts but then runs into the ground
(a program without a command, overlapping phases, leaderboard columns scores.json does
not hold). `bundle_problems` gives one sentence per broken rule; the builder writes no
bundle that breaks one, and the local worker reads bundles with `read_competition`.
"""

from __future__ import annotations

import shlex
import zipfile
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import yaml

from ..errors import UserError
from ..scoring.evaluation import Leaderboard

COMPETITION_FILE = "competition.yaml"
PROGRAM_ENTRY = "e2lmc/cli/main.py"  # what ingest.py and score.py import from the package copied beside them
FREE_QUEUE_SECONDS = 600  # Codabench's default queue stops a step after this
SUBMISSION_RULES = ("Add", "Add_And_Delete", "Add_And_Delete_Multiple", "Force_Last", "Force_Latest_Multiple",
                    "Force_Best")


def bundle_problems(bundle: Path) -> list[str]:
    """Every Codabench rule (docs/bundle.md) the zip breaks, one sentence each; [] when valid."""
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        if COMPETITION_FILE not in names:
            return [f"{COMPETITION_FILE} must be at the zip's root"]
        raw = archive.read(COMPETITION_FILE).decode("utf-8")
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            return [f"{COMPETITION_FILE} is not valid YAML ({str(exc).splitlines()[0]})"]
        if not isinstance(data, dict):
            return [f"{COMPETITION_FILE} must be a mapping"]
        return _rules(data, names, archive)


def _folder_exists(names: set[str], folder: str) -> bool:
    prefix = folder.rstrip("/") + "/"
    return any(n.startswith(prefix) for n in names)


def _rules(data: dict, names: set[str], archive: zipfile.ZipFile) -> list[str]:
    problems = []
    if data.get("version") != 2:
        problems.append("competition.yaml needs version: 2")
    for key in ("title", "image", "terms", "pages", "tasks", "phases", "leaderboards"):
        if key not in data:
            problems.append(f"competition.yaml needs the key '{key}'")
    if problems:
        return problems
    image = data["image"]
    if image not in names or not archive.read(image).startswith(b"\x89PNG\r\n\x1a\n"):
        problems.append(f"image '{image}' must be a PNG file in the bundle")
    for key, file in [("terms", data["terms"])] + [(f"page '{p.get('title')}'", p.get("file"))
                                                   for p in data["pages"] or []]:
        if file not in names or not archive.read(file).strip():
            problems.append(f"{key}: '{file}' must be a non-empty file in the bundle")
    problems += _task_rules(data["tasks"], names, archive)
    problems += _phase_rules(data["phases"], {t.get("index") for t in data["tasks"] or []})
    problems += _leaderboard_rules(data["leaderboards"])
    return problems


def _task_rules(tasks: list, names: set[str], archive: zipfile.ZipFile) -> list[str]:
    problems, seen = [], set()
    for task in tasks or []:
        label = f"task {task.get('name') or task.get('index')}"
        if task.get("index") in seen or "index" not in task:
            problems.append(f"{label} needs a unique index")
        seen.add(task.get("index"))
        if "scoring_program" not in task:
            problems.append(f"{label} has no scoring program")
        for kind in ("ingestion_program", "input_data", "scoring_program", "reference_data"):
            if kind in task and not _folder_exists(names, task[kind]):
                problems.append(f"{label}: {kind} '{task[kind]}' is not a folder of the bundle")
        for kind in ("ingestion_program", "scoring_program"):
            if kind in task and _folder_exists(names, task[kind]):
                problems += _program_rules(f"{label} {kind}", task[kind].rstrip("/"), names, archive)
    return problems


def _program_rules(label: str, folder: str, names: set[str], archive: zipfile.ZipFile) -> list[str]:
    """A program runs from its own folder in the worker image: metadata.yaml with a
    command whose /app/program files exist, and the package copied in."""
    metadata = f"{folder}/metadata.yaml"
    if metadata not in names:
        return [f"{label}: {metadata} is missing"]
    command = (yaml.safe_load(archive.read(metadata)) or {}).get("command")
    if not isinstance(command, str) or not command.strip():
        return [f"{label}: {metadata} has no command"]
    problems = []
    for word in shlex.split(command):
        if word.startswith("/app/program/") and f"{folder}/{word.removeprefix('/app/program/')}" not in names:
            problems.append(f"{label}: its command runs {word}, which is not in the program folder")
    if not {f"{folder}/e2lmc/__init__.py", f"{folder}/{PROGRAM_ENTRY}"} <= names:
        problems.append(f"{label}: the e2lmc package is not copied into the program folder")
    if f"{folder}/metadata" in names:
        problems.append(f"{label}: a file named 'metadata' is the worker's own")
    return problems


def _phase_rules(phases: list, task_indexes: set) -> list[str]:
    problems = []
    parsed = []
    for i, phase in enumerate(phases or []):
        label = f"phase {phase.get('name') or i}"
        for key in ("name", "start", "tasks"):
            if key not in phase:
                problems.append(f"{label} needs '{key}'")
        if i < len(phases) - 1 and "end" not in phase:
            problems.append(f"{label} needs an end, since a phase follows it")
        for key in ("start", "end"):
            if key in phase and not isinstance(phase[key], str):
                problems.append(f"{label}: {key} must be a quoted date and time (unquoted, it loses its time of day)")
        try:
            parsed.append((label, datetime.fromisoformat(str(phase.get("start"))),
                           datetime.fromisoformat(str(phase["end"])) if "end" in phase else None))
        except ValueError:
            problems.append(f"{label}: start and end must read as dates such as '2025-07-07 12:00'")
        for index in phase.get("tasks") or []:
            if index not in task_indexes:
                problems.append(f"{label} names task {index}, which is not under tasks")
        limit = phase.get("execution_time_limit", FREE_QUEUE_SECONDS)
        if not isinstance(limit, int) or limit <= 0:
            problems.append(f"{label}: execution_time_limit must be a positive number of seconds")
    for (label1, start1, end1), (label2, start2, _) in zip(parsed, parsed[1:]):
        if end1 is not None and start2 <= end1:
            problems.append(f"{label2} must start after {label1} ends (phases may neither overlap nor touch)")
        if end1 is not None and end1 <= start1:
            problems.append(f"{label1} ends before it starts")
    return problems


def _leaderboard_rules(leaderboards: list) -> list[str]:
    if not isinstance(leaderboards, list) or not leaderboards:
        return ["leaderboards must be a non-empty list"]
    if len(leaderboards) > 1:
        return ["Codabench uses only the first leaderboard: declare one"]
    board = leaderboards[0]
    problems = []
    if len(str(board.get("title", ""))) > 64:
        problems.append("the leaderboard title must be at most 64 characters")
    if board.get("submission_rule", "Force_Last") not in SUBMISSION_RULES:
        problems.append(f"submission_rule must be one of {', '.join(SUBMISSION_RULES)}")
    keys = []
    for column in board.get("columns") or []:
        for key in ("key", "title"):
            if not column.get(key) or len(str(column[key])) > 36:
                problems.append(f"leaderboard column {column.get('key')}: '{key}' must be 1 to 36 characters")
        if "computation_indexes" in column and not isinstance(column["computation_indexes"], list):
            problems.append(f"leaderboard column {column.get('key')}: computation_indexes must be a YAML list")
        if column.get("sorting", "desc") not in ("asc", "desc"):
            problems.append(f"leaderboard column {column.get('key')}: sorting is asc or desc")
        keys.append(column.get("key"))
    if len(set(keys)) != len(keys):
        problems.append("leaderboard column keys must be unique")
    written = [f.name for f in fields(Leaderboard)]
    if set(keys) != set(written):
        problems.append(f"the leaderboard columns must be the keys scores.json holds ({', '.join(written)})")
    return problems


def read_competition(bundle_dir: Path) -> dict:
    """competition.yaml of an unpacked bundle (for the local worker)."""
    path = bundle_dir / COMPETITION_FILE
    if not path.is_file():
        raise UserError(f"{bundle_dir} holds no {COMPETITION_FILE}: is it an unpacked competition bundle?")
    return yaml.safe_load(path.read_text(encoding="utf-8"))

