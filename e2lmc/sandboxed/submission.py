"""Opening a participant's submission: a zip or a folder of lm-eval task files.

Accepted layouts, after unwrapping any single enclosing folder:
- task YAML files (plus helpers and data files) next to a `metadata.yaml` naming
  `task_name` and `task_metric`;
- the real competition's format: `evaluation.patch`, a git diff that adds a task folder
  under `lm_eval/tasks/`, next to `metadata.yaml`. Its new files are written into the
  submission; a patch that changes or deletes any existing file (lm-eval's own code)
  is refused.

Everything here is static: files are copied, unzipped and parsed, but no submission
code runs, and every parse is bounded (YAML aliases refused, sizes capped) since the
trusted process opens the submission with it (the child reads its task files with it
too). Every problem ends in one `InvalidSubmission` sentence naming the file and key.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import InvalidSubmission, UserError, first_line
from ..formats.files import PARSE_ERRORS

METADATA = "metadata.yaml"
PATCH = "evaluation.patch"
PATCH_PREFIX = PurePosixPath("lm_eval/tasks")
IGNORED = {"__MACOSX", ".DS_Store", "__pycache__", ".git"}
MAX_UNZIPPED_BYTES = 1 << 30  # a zip bomb stops here, far above any real task's data
MAX_FILES = 10_000
LOCAL_LOADERS = {"json", "csv", "parquet", "text", "arrow"}  # datasets' loaders of local files
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # a dataset on the hub, e.g. cais/mmlu


@dataclass(frozen=True)
class FunctionRef:
    """A `!function module.name` tag, kept as text: resolving it is the plan stage's job."""

    target: str
    line: int  # 1-based, for error messages


@dataclass(frozen=True)
class Submission:
    root: Path  # a private copy: the participant's files are never modified
    task_name: str
    task_metric: str  # an lm-eval result key, "metric,filter"
    task_files: tuple[Path, ...]
    hub_datasets: frozenset[str] = frozenset()  # dataset names its YAMLs load from the datasets cache


MAX_YAML_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: an alias bomb (a few KB that expand to billions of nodes)
    would keep the trusted process busy for minutes before any time limit applies."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.MarkedYAMLError(problem="aliases (*name) are not allowed; write the value out",
                                       problem_mark=mark)
        return super().compose_node(parent, index)


class _TaskLoader(_NoAliasLoader):
    """lm-eval's YAML dialect, parsed without running anything."""


_TaskLoader.add_constructor(
    "!function", lambda loader, node: FunctionRef(loader.construct_scalar(node), node.start_mark.line + 1)
)


def function_file(target: str, yaml_dir: Path, root: Path) -> Path | None:
    """The submission file a `!function module.name` tag may resolve to: `module.py`
    next to the YAML, inside the submission. lm-eval would fall back to importing any
    installed module (`!function os.system`); the submission may not."""
    module, _, _ = target.rpartition(".")
    if not module:
        return None
    path = yaml_dir / f"{module.replace('.', '/')}.py"
    return path.resolve() if _is_file_inside(path, root) else None


def _is_file_inside(path: Path, root: Path) -> bool:
    """Whether `path` is a file inside `root`; a name no file system takes (a NUL byte, too
    long) is none, rather than an error the trusted parent would not explain."""
    try:
        return path.resolve().is_file() and path.resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # see _is_file_inside
        return False


def _check_references(path: Path, node: object, root: Path) -> None:
    """Every `!function` names a .py file of the submission; every `include:` a file in it."""
    if isinstance(node, FunctionRef):
        if function_file(node.target, path.parent, root) is None:
            raise InvalidSubmission(
                f"{path.relative_to(root)} line {node.line}: !function {node.target} does not name a function in "
                f"a .py file of the submission (only the submission's own helpers can be used)"
            )
    elif isinstance(node, dict):
        includes = node.get("include")
        for include in includes if isinstance(includes, list) else [includes] if includes else []:
            if not _is_file_inside(path.parent / str(include), root):
                raise InvalidSubmission(f"{path.relative_to(root)}: include '{str(include)[:200]}' is not a file of "
                                        "the submission")
        for value in node.values():
            _check_references(path, value, root)
    elif isinstance(node, list):
        for value in node:
            _check_references(path, value, root)


def parse_yaml(path: Path, loader: type = _NoAliasLoader) -> Any:
    """One YAML file of the submission, parsed within bounds; errors name the file, line
    and column (lm-eval itself skips broken files silently)."""
    if path.stat().st_size > MAX_YAML_BYTES:
        raise InvalidSubmission(f"{path.name} is larger than {MAX_YAML_BYTES >> 20} MiB; a task YAML is a few KB "
                                f"(put data in data files)")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 (safe loader subclass)
    except UnicodeDecodeError:
        raise InvalidSubmission(f"{path.name} is not UTF-8 text") from None
    except RecursionError:
        raise InvalidSubmission(f"{path.name} is nested too deeply to be a task YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc, 200)
        raise InvalidSubmission(f"{path.name} is not valid YAML{where}: {problem}") from None
    except PARSE_ERRORS as exc:  # a value PyYAML's constructors cannot build (e.g. an integer of 5,000 digits)
        raise InvalidSubmission(f"{path.name} is not valid YAML: {first_line(exc, 200) or type(exc).__name__}"
                                ) from None


def load_task_yaml(path: Path) -> dict:
    """Parse one task YAML file (with lm-eval's `!function` tags)."""
    data = parse_yaml(path, _TaskLoader)
    if not isinstance(data, dict):
        raise InvalidSubmission(f"{path.name} must be a mapping of task keys (task:, dataset_path:, …), "
                                f"not {type(data).__name__}")
    return data


def open_submission(source: Path, workdir: Path) -> Submission:
    """Copy or unzip `source` into `workdir/submission`, apply an evaluation.patch,
    read metadata.yaml and check that every task YAML parses and refers only to files of
    the submission."""
    source = Path(source)
    root = Path(workdir) / "submission"
    shutil.rmtree(root, ignore_errors=True)
    if source.is_dir():
        _copy_folder(source, root)
    elif zipfile.is_zipfile(source):
        try:
            _extract(source, root)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
            problem = first_line(exc, 200) or type(exc).__name__
            raise InvalidSubmission(f"{source.name} is a damaged zip file ({problem})"
                                    f"; zip the folder again") from None
    elif source.exists():
        raise InvalidSubmission(f"{source} is neither a folder nor a zip file")
    else:
        raise UserError(f"{source}: no such file or folder")
    root = _unwrap(root)
    if (root / PATCH).is_file():
        apply_patch(root / PATCH, root)
    task_name, task_metric = read_metadata(root / METADATA)
    task_files = find_task_files(root)
    if not task_files:
        raise InvalidSubmission(f"the submission has no task YAML file besides {METADATA}")
    hub_names = set()
    for path in task_files:
        data = load_task_yaml(path)
        _check_references(path, data, root)
        value = data.get("dataset_path")
        if isinstance(value, str) and value not in LOCAL_LOADERS and HUB_NAME.fullmatch(value) \
                and not _exists(path.parent / value) and not _exists(root / value):
            hub_names.add(value)
    return Submission(root, task_name, task_metric, task_files, frozenset(hub_names))


def find_task_files(root: Path) -> tuple[Path, ...]:
    """Every task YAML of a submission folder."""
    return tuple(sorted(p for p in root.rglob("*.yaml") if p.name != METADATA and p.is_file()))


def read_metadata(path: Path) -> tuple[str, str]:
    """`task_name` and `task_metric` from metadata.yaml."""
    if not path.is_file():
        nested = sorted(str(p.parent.relative_to(path.parent)) for p in path.parent.glob(f"*/**/{METADATA}"))
        where = (f": it holds {len(nested)} folders that each have one ({', '.join(nested[:4])}"
                 f"{', …' if len(nested) > 4 else ''}); a submission is one task, so submit one of them on its own"
                 if len(nested) > 1 else "")
        raise InvalidSubmission(f"the submission has no {METADATA} (it names task_name and task_metric){where}")
    data = parse_yaml(path)
    if not isinstance(data, dict):
        raise InvalidSubmission(f"{METADATA} must be a mapping with task_name and task_metric")
    if "command" in data:
        # Codabench would run it as a program of its own, next to the ingestion program.
        raise InvalidSubmission(f"{METADATA} has a 'command': a submission is task files only, not a program; "
                                "remove it")
    missing = [k for k in ("task_name", "task_metric") if not isinstance(data.get(k), str) or not data[k].strip()]
    if missing:
        found = ", ".join(map(str, data)) or "none"
        raise InvalidSubmission(f"{METADATA} needs {' and '.join(missing)} as text (keys found: {found})")
    metric = data["task_metric"].strip()
    if "," not in metric:
        raise InvalidSubmission(
            f"{METADATA}: task_metric '{metric}' is not an lm-eval result key; write it with its filter, "
            f"e.g. '{metric},none'"
        )
    return data["task_name"].strip(), metric


# ------------------------------------------------------------------------ unpacking


def _copy_folder(source: Path, root: Path) -> None:
    """Copy a submission folder, links as links, then refuse any link: followed, a link
    would put a file of this machine into the submission (the checkpoint manifest, whose
    text an error message could then quote), and the copy is what is checked, not the
    folder, which may still change. Special files (a named pipe) end in one sentence too."""
    try:
        shutil.copytree(source, root, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    except OSError as exc:  # shutil.Error lists every file it could not copy
        problem = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args[0] else exc.strerror or exc
        raise InvalidSubmission(f"{source.name} cannot be copied: {str(problem)[:300]}") from None
    for folder, folders, files in os.walk(root):
        for name in sorted(folders + files):
            if os.path.islink(os.path.join(folder, name)):
                link = Path(folder, name).relative_to(root)
                raise InvalidSubmission(f"{link} in the submission is a symbolic link; put the file itself there "
                                        "(a submission holds its files, nothing outside it)")


def _extract(source: Path, root: Path) -> None:
    """Unzip, refusing absolute paths, `..`, links and zip bombs."""
    with zipfile.ZipFile(source) as archive:
        members = [m for m in archive.infolist() if not (set(PurePosixPath(m.filename).parts) & IGNORED)]
        if not any(not m.is_dir() for m in members):
            raise InvalidSubmission(f"{source.name} is an empty zip file")
        if len(members) > MAX_FILES or sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
            raise InvalidSubmission(f"{source.name} unpacks to more than {MAX_FILES} files or "
                                    f"{MAX_UNZIPPED_BYTES >> 30} GiB")
        for member in members:
            name = PurePosixPath(member.filename)
            if name.is_absolute() or ".." in name.parts or stat.S_ISLNK(member.external_attr >> 16):
                raise InvalidSubmission(f"{source.name}: member '{member.filename}' points outside the submission")
            target = root.joinpath(*name.parts)
            try:
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except OSError as exc:  # a file and a folder of the same name, a name too long for this file system
                raise InvalidSubmission(f"{source.name}: member '{member.filename[:120]}' cannot be unpacked "
                                        f"({exc.strerror or type(exc).__name__}); zip the folder again") from None


def _unwrap(root: Path) -> Path:
    """Descend through single enclosing folders (a zip made of a folder)."""
    while not (root / METADATA).exists():
        entries = [p for p in root.iterdir() if p.name not in IGNORED]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        root = entries[0]
    return root


def apply_patch(patch: Path, root: Path) -> list[Path]:
    """Write the files an `evaluation.patch` adds under lm_eval/tasks/ into `root`.

    Only new text files are accepted: the task folder, not changes to lm-eval."""
    written = []
    for path, lines in _new_files(patch.read_text(encoding="utf-8", errors="replace")):
        target = root.joinpath(*path.relative_to(PATCH_PREFIX).parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(lines, encoding="utf-8")
        except (OSError, ValueError) as exc:  # a file and a folder of the same name, a name too long, a NUL byte
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc, 100)
            raise InvalidSubmission(f"{PATCH} adds {str(path)[:200]}, which cannot be written ({problem})") from None
        written.append(target)
    if not written:
        raise InvalidSubmission(f"{PATCH} adds no file under {PATCH_PREFIX}/")
    return written


def _new_files(diff: str) -> list[tuple[PurePosixPath, str]]:
    """(path, text) of every file the git diff creates; anything else is refused."""
    files: list[tuple[PurePosixPath, str]] = []
    for section in diff.split("\ndiff --git "):
        lines = section.splitlines()
        first = lines[0].removeprefix("diff --git ") if lines else ""
        old = next((l[4:].split("\t")[0].strip() for l in lines if l.startswith("--- ")), None)
        new = next((l[4:].split("\t")[0].strip() for l in lines if l.startswith("+++ ")), None)
        if old is None and new is None and "new file mode" not in section:
            if first.startswith("a/"):  # a rename, a deletion or a mode change
                raise InvalidSubmission(f"{PATCH} changes the existing file {first.split()[0][2:]}; "
                                f"only new files under {PATCH_PREFIX}/ are accepted")
            continue  # text before the first file
        if old not in (None, "/dev/null") or new == "/dev/null":
            changed = (old if old not in (None, "/dev/null") else new or first).removeprefix("a/")
            raise InvalidSubmission(
                f"{PATCH} changes the existing file {changed}; only new files under {PATCH_PREFIX}/ are accepted"
            )
        path = PurePosixPath((new or first.split()[-1]).removeprefix("b/"))
        if path.parts[:2] != PATCH_PREFIX.parts or ".." in path.parts or len(path.parts) < 3:
            raise InvalidSubmission(f"{PATCH} adds {path}, outside {PATCH_PREFIX}/; only a task folder there is "
                                    "accepted")
        if any(l.startswith(("GIT binary patch", "Binary files")) for l in lines):
            raise InvalidSubmission(f"{PATCH} adds the binary file {path}; ship it as a file in the zip instead")
        files.append((path, _added_text(lines)))
    return files


def _added_text(lines: list[str]) -> str:
    body, in_hunk = [], False
    for line in lines:
        if line.startswith("@@"):
            in_hunk = True
        elif in_hunk and line.startswith("+"):
            body.append(line[1:] + "\n")
        elif in_hunk and line.startswith("\\") and body:  # "\ No newline at end of file"
            body[-1] = body[-1].removesuffix("\n")
    return "".join(body)
