"""`e2lmc diagnose --keep-signal DIR`: the submission again, without its noisy samples.

A sample is the document at index `doc_id` of its task's test split, so dropping samples
means dropping rows of the data file that split is read from. Which file that is, only
the task's YAML and lm-eval know; rather than guess from the YAML, the file is found by
its number of rows (one data file of the submission with exactly as many rows as the task
has documents) and the guess is then proved: the written submission is planned again, as
ingestion plans it, and must ask exactly the kept samples' requests in the same order.
Where it does not (the few-shot examples come from the same rows, a `process_docs`
reorders them, the documents come from the hub), nothing is written and the sentence
says to drop the doc ids listed in samples.csv by hand.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, output_folder
from ..formats.plan import Plan, PlannedSample
from ..formats.rules import SubmissionRules
from ..ingestion.preflight import preflight
from ..limits import Limits
from ..sandboxed.sandbox import private_workdir
from ..sandboxed.submission import PATCH, open_submission

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
BY_HAND = "drop the doc ids marked noisy in samples.csv by hand"


def _rows(path: Path) -> list[Any] | None:
    """A data file's rows as they will be written back (lines, records, CSV rows with the
    header first, or a parquet table); None when it is not a table of rows."""
    try:
        if path.suffix == ".jsonl":
            return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else None
        if path.suffix == ".csv":
            return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return [table] * table.num_rows  # counted; written by index below
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _count(path: Path, rows: list[Any]) -> int:
    return len(rows) - 1 if path.suffix == ".csv" else len(rows)


def _write(path: Path, rows: list[Any], kept: list[int]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(rows[i] if rows[i].endswith("\n") else rows[i] + "\n" for i in kept),
                        encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps([rows[i] for i in kept], ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    elif path.suffix == ".csv":
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([rows[0]] + [rows[i + 1] for i in kept])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        import pyarrow.parquet as pq

        pq.write_table(rows[0].take(kept), path)


def _asked(plan: Plan, samples: list[PlannedSample]) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.task, tuple(plan.requests[r].arguments for r in s.requests)) for s in samples]


def _files_for(plan: Plan, keep: np.ndarray, folder: Path) -> dict[Path, tuple[list[Any], list[int]]]:
    """Each data file to rewrite, its rows and the row indices to keep."""
    tables = {p: rows for p in sorted(folder.rglob("*")) if p.suffix in DATA_SUFFIXES and p.is_file()
              if (rows := _rows(p)) is not None}
    by_task: dict[str, list[tuple[int, bool]]] = {}
    for sample, kept in zip(plan.samples, keep, strict=True):
        by_task.setdefault(sample.task, []).append((sample.doc_id, bool(kept)))
    chosen: dict[Path, tuple[list[Any], list[int]]] = {}
    for task, docs in by_task.items():
        if all(kept for _, kept in docs):
            continue
        candidates = [p for p, rows in tables.items() if _count(p, rows) == len(docs)]
        if len(candidates) != 1:
            found = "none" if not candidates else ", ".join(str(p.relative_to(folder)) for p in candidates)
            raise UserError(f"--keep-signal: task {task} has {len(docs)} documents, and the submission's data files "
                            f"with that many rows are: {found}; diagnose cannot tell which rows to drop: {BY_HAND}")
        kept_rows = sorted(doc for doc, kept in docs if kept)
        path = candidates[0]
        if path in chosen and chosen[path][1] != kept_rows:
            raise UserError(f"--keep-signal: {path.relative_to(folder)} is read by several tasks that keep different "
                            f"rows: {BY_HAND}")
        chosen[path] = (tables[path], kept_rows)
    return chosen


def check_new_folder(folder: Path) -> None:
    """Refused before any work: a `folder` that is a file, or a folder with files in it."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--keep-signal {folder}: a file is there, not a folder; give a new folder")
    if folder.exists() and any(folder.iterdir()):
        raise UserError(f"--keep-signal {folder}: the folder is not empty; give a new one")


def write_kept(source: Path, plan: Plan, keep: np.ndarray, folder: Path, limits: Limits) -> list[Path]:
    """Write the submission at `source` into `folder` without the samples `keep` leaves out,
    and prove it asks exactly the kept samples' requests; the data files rewritten. On a
    failure `folder` is left as it was found: absent, or empty."""
    check_new_folder(folder)
    existed = folder.exists()
    with private_workdir("keep") as tmp:
        submission = open_submission(source, Path(tmp))
        shutil.copytree(submission.root, output_folder(folder, "--keep-signal"), dirs_exist_ok=True)
    (folder / PATCH).unlink(missing_ok=True)  # applied already: the files are the patched ones
    try:
        files = _files_for(plan, keep, folder)
        for path, (rows, kept_rows) in files.items():
            _write(path, rows, kept_rows)
        with private_workdir("keep") as tmp:
            # fewer samples than the rules' minimum is written all the same: diagnose has said so
            rewritten = preflight(folder, Path(tmp), limits, warn=False, rules=SubmissionRules(min_samples=1)).plan
        expected = _asked(plan, [s for s, k in zip(plan.samples, keep, strict=True) if k])
        if _asked(rewritten, rewritten.samples) != expected:
            names = ", ".join(str(p.relative_to(folder)) for p in files)
            raise UserError(f"--keep-signal: without the noisy rows of {names} the task does not ask the kept "
                            "questions as before (its few-shot examples or its process_docs read the dropped rows): "
                            f"nothing was written; {BY_HAND}")
    except BaseException:
        for written in list(folder.iterdir()) if existed else [folder]:
            if written.is_dir():
                shutil.rmtree(written)
            else:
                written.unlink()
        raise
    return sorted(files)
