"""The doors lm-eval leaves open to a task's files, closed while a submission's task is built.

lm-eval trusts its tasks: a template renders in an unsandboxed Jinja environment (where
`{{ cycler.__init__.__globals__.os… }}` reaches the OS), `!function` imports any module
(`os.system`), an unknown metric name is fetched with `evaluate.load`, relative
`data_files` resolve against the working directory. `sandbox_templates` and `confined`
close each of these for the submission's task, checking its data files before datasets
reads them (`check_data_file`), and name the task, key and sample when a template or a
dataset fails. They run in the sandboxed child (`child.py`), behind the OS sandbox.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import glob
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError, first_line
from ..formats.rules import SubmissionRules
from .submission import HUB_NAME, LOCAL_LOADERS, Submission, function_file

TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice")  # a task's Jinja templates, rendered per sample


def sandbox_templates() -> None:
    """Render prompt templates in Jinja's sandbox: lm-eval's own environment lets a
    template reach Python internals (`cycler.__init__.__globals__.os`). Each template is
    compiled once: lm-eval compiles it again for every document, which made scoring a
    checkpoint cost more than computing it."""
    import lm_eval.utils
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class CompilingOnce(ImmutableSandboxedEnvironment):
        compiled: dict[str, Any] = {}

        def from_string(self, source: Any, globals: Any = None, template_class: Any = None) -> Any:  # noqa: A002
            if globals is not None or template_class is not None or not isinstance(source, str):
                return super().from_string(source, globals, template_class)
            if source not in self.compiled:
                self.compiled[source] = super().from_string(source)
            return self.compiled[source]

    if not isinstance(lm_eval.utils.env, ImmutableSandboxedEnvironment):
        env = CompilingOnce(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
        env.filters["regex_replace"] = lm_eval.utils.regex_replace
        lm_eval.utils.env = env


@contextlib.contextmanager
def confined(submission: Submission) -> Iterator[None]:
    """Close, while building the task, the doors lm-eval leaves open to a task's files:
    `!function` resolves only to the submission's own .py files; metric names only to
    lm-eval's built-ins (never `evaluate.load`); data files resolve next to their YAML
    and must lie inside the submission; a dataset that cannot be loaded is named.
    lm-eval is restored afterwards (tests build other tasks in the same process)."""
    import lm_eval.api.task as task_module
    import lm_eval.tasks._factory as factory
    import lm_eval.tasks._yaml_loader as yaml_loader

    root = submission.root
    load_config, download = factory.TaskFactory._load_full_config, task_module.ConfigurableTask.download
    patches = [
        (yaml_loader, "_import_func_in_yml", functools.partial(_submission_function, root)),
        (task_module, "get_metric", _builtin_metric),
        (factory.TaskFactory, "_load_full_config", lambda self, entry, overrides=None: _with_local_data(
            load_config(self, entry, overrides), entry.yaml_path, root)),
        (task_module.ConfigurableTask, "download",
         lambda self, *args, **kwargs: _named_download(download, self, args, kwargs)),
        (sys.modules, "evaluate", None),  # `import evaluate` fails meanwhile
    ]
    with _patched(patches), named_documents():
        yield


@contextlib.contextmanager
def named_documents() -> Iterator[None]:
    """lm-eval's `doc_to_*` failures said with the task, the key and the document, while
    the task is built and while its requests are (where every document is rendered)."""
    import lm_eval.api.task as task_module

    task = task_module.ConfigurableTask
    with _patched([(task, key, _named_template(getattr(task, key), key)) for key in TEMPLATE_KEYS]):
        yield


@contextlib.contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    """Each (target, name, value) set, and restored afterwards (tests build other tasks in
    the same process)."""
    saved = [(target, name, _get(target, name)) for target, name, _ in patches]
    for target, name, value in patches:
        _set(target, name, value)
    try:
        yield
    finally:
        for target, name, value in reversed(saved):
            _set(target, name, value)


_ABSENT = object()


def _get(target: Any, name: str) -> Any:
    return target.get(name, _ABSENT) if isinstance(target, dict) else getattr(target, name)


def _set(target: Any, name: str, value: Any) -> None:
    if not isinstance(target, dict):
        setattr(target, name, value)
    elif value is _ABSENT:
        target.pop(name, None)
    else:
        target[name] = value


def _submission_function(root: Path, target: str, yaml_dir: Path) -> Any:
    """lm-eval's `!function` resolver, limited to the submission's files."""
    import lm_eval.tasks._yaml_loader as yaml_loader

    path = function_file(target, Path(yaml_dir), root)
    if path is None:
        raise UserError(f"!function {target} does not name a function in a .py file of the submission")
    module = yaml_loader._load_module_with_cache(path)
    name = target.rpartition(".")[2]
    if not callable(getattr(module, name, None)):
        raise UserError(f"!function {target}: {path.relative_to(root.resolve())} has no function '{name}'")
    return getattr(module, name)


def _builtin_metric(name: str, hf_evaluate_metric: bool = False) -> Any:
    """lm-eval's metric lookup without its fallback to `evaluate.load(name)`."""
    import lm_eval.api.metrics  # noqa: F401  (fills the registry)
    from lm_eval.api.registry import metric_registry

    if hf_evaluate_metric or name not in metric_registry:
        close = difflib.get_close_matches(str(name), [str(m) for m in metric_registry], 1)
        raise UserError(
            f"metric '{name}' is not one of lm-eval's built-in metrics"
            + (f" (did you mean '{close[0]}'?)" if close and not hf_evaluate_metric else "")
            + "; use a built-in one or a !function from the submission (Hugging Face evaluate metrics are not loaded)"
        )
    return metric_registry.get(name)


def _with_local_data(config: dict, yaml_path: Any, root: Path) -> dict:
    """Confine the task's data to the submission: `data_files` resolve against the task's
    YAML folder (lm-eval uses the working directory, the submission root, which is tried
    second) and must lie inside it, like a local `dataset_path` or `data_dir` (a hub
    dataset name still resolves through the datasets cache); every data file is checked
    before datasets reads it (UTF-8, not empty, not more rows than the rules allow)."""
    kwargs = config.get("dataset_kwargs") or {}
    where = f"task '{config.get('task', '?')}'"
    yaml_dir = Path(yaml_path).parent if yaml_path else root
    local_paths = (("dataset_path", config.get("dataset_path")), ("dataset_kwargs.data_dir", kwargs.get("data_dir")))
    for key, value in local_paths:
        if isinstance(value, str) and value not in LOCAL_LOADERS:
            _check_local_path(value, key, where, (yaml_dir, root), root)
    files = kwargs.get("data_files")
    if not files:
        return config

    def resolve(name: Any, split: str) -> str:
        for base in (yaml_dir, root):
            candidate = (base / str(name)).resolve()
            if matches := sorted(glob.glob(str(candidate))):
                if not candidate.is_relative_to(root.resolve()):
                    raise UserError(f"{where}: data file '{name}' lies outside the submission")
                for match in matches:
                    check_data_file(Path(match), root, where, split, evaluated)
                return str(candidate)
        raise UserError(f"{where}: data file '{name}' is not in the submission (looked next to "
                        f"{Path(yaml_path).name if yaml_path else 'the task'} and at the submission root)")

    evaluated = config.get("test_split") or config.get("validation_split")
    if isinstance(files, dict):
        resolved: Any = {split: [resolve(f, split) for f in v] if isinstance(v, list) else resolve(v, split)
                         for split, v in files.items()}
    elif isinstance(files, list):
        resolved = [resolve(f, "train") for f in files]
    else:
        resolved = resolve(files, "train")
    return {**config, "dataset_kwargs": {**kwargs, "data_files": resolved}}


TEXT_DATA = {".jsonl", ".json", ".csv", ".tsv", ".txt"}
JSON_DATA = {".jsonl", ".json"}
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")  # lm-eval reads these splits


def _check_json_line(line: bytes, number: int, name: Any, where: str) -> None:
    """One line of a JSON Lines file: one JSON object (datasets says only "An error occurred
    while generating the dataset")."""
    try:
        value = json.loads(line.rstrip(b"\r\n"))
    except ValueError as exc:
        problem = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else first_line(exc, 100)
        raise UserError(f"{where}: data file '{name}' line {number} is not valid JSON ({problem}); each line of a "
                        "JSON Lines file must be one JSON object") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: data file '{name}' line {number} is a JSON {type(value).__name__}, not an object "
                        "with the sample's fields; each line of a JSON Lines file must be one JSON object")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


OTHER_SPLIT_MAX_ROWS = 100_000  # few-shot or training splits may be larger than the evaluated one


def _check_local_path(value: str, key: str, where: str, bases: tuple[Path, ...], root: Path) -> None:
    """A path on disk must lie inside the submission; anything else must be a hub name."""
    local = Path(value).expanduser()
    candidates = [local] if local.is_absolute() else [(base / local) for base in bases]
    for candidate in candidates:
        if candidate.exists() or local.is_absolute() or ".." in local.parts:
            if not candidate.resolve().is_relative_to(root.resolve()):
                raise UserError(f"{where}: {key} '{value}' lies outside the submission; ship the data in it")
            return
    if not HUB_NAME.fullmatch(value):
        raise UserError(f"{where}: {key} '{value}' is neither a folder of the submission nor a dataset name")


def check_data_file(path: Path, root: Path, where: str, split: str, evaluated: str | None) -> None:
    """One sentence naming the file (and line) for data datasets would fail on or choke
    on: not UTF-8, empty, or more rows than the rules allow (reading stops there)."""
    name = path.relative_to(root.resolve()) if path.is_relative_to(root.resolve()) else path.name
    most = SubmissionRules().max_samples if split == evaluated else OTHER_SPLIT_MAX_ROWS
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet

        try:
            rows = pyarrow.parquet.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any parse failure: one sentence
            problem = first_line(exc, 200)
            raise UserError(f"{where}: data file '{name}' is not a readable parquet file ({problem})") from None
    elif path.suffix.lower() in TEXT_DATA:
        rows, one_per_line = 0, True
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UserError(f"{where}: data file '{name}' line {number} is not UTF-8 text (byte "
                                    f"{exc.start + 1} of the line); save the file as UTF-8") from None
                if not line.strip():
                    continue
                if rows == 0 and path.suffix.lower() == ".json":  # JSON Lines, or one document over many lines
                    one_per_line = _is_json(line)
                elif path.suffix.lower() in JSON_DATA and one_per_line:
                    _check_json_line(line, number, name, where)
                rows += 1
                if one_per_line and rows > most + 1:  # + 1: a CSV header
                    break
        if not one_per_line:
            rows = min(rows, 1)  # a document's rows are counted by the sample-count gate once loaded
        rows -= path.suffix.lower() in (".csv", ".tsv") and rows > 0
    else:
        return
    if rows == 0:
        raise UserError(f"{where}: data file '{name}' is empty")
    if rows > most:
        raise UserError(f"{where}: data file '{name}' has more than {most:,} rows (split '{split}'); the rules allow "
                        f"at most {SubmissionRules().max_samples:,} samples, so reading stopped there")


def _named_template(render: Any, key: str) -> Any:
    """lm-eval's `doc_to_*` with a template error that names the task, the YAML key and
    the fields the sample has (Jinja says only "'questoin' is undefined"), and a
    doc_to_choice that gives no list of choices, with the document ("malformed node or
    string", or "not enough values to unpack" later)."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    @functools.wraps(render)
    def named(self: Any, doc: Any, *args: Any, **kwargs: Any) -> Any:
        declared = getattr(self.config, key, None)
        try:
            value = render(self, doc, *args, **kwargs)
        except SecurityError:
            raise  # said as an attempt to escape, not as a mistake (child.describe_error)
        except TemplateError as exc:
            fields = [str(f) for f in doc] if isinstance(doc, dict) else []
            unknown = re.match(r"'(\w+)' is undefined", str(exc))
            close = difflib.get_close_matches(unknown.group(1), fields, 1) if unknown else []
            raise UserError(
                f"task '{self.config.task}': its {key} template failed: {first_line(exc, 200)}"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + (f"; the data's fields are: {', '.join(fields)}" if fields else "")) from None
        except (ValueError, SyntaxError):  # lm-eval reads a doc_to_choice template's text as a Python list
            if key != "doc_to_choice" or not isinstance(declared, str):
                raise  # not lm-eval's reading; a function of the submission is said with its file and line
            raise UserError(_not_a_list(self, doc, declared)) from None
        if key == "doc_to_choice" and isinstance(declared, str) and (isinstance(value, str) or not value):
            raise UserError(_not_a_list(self, doc, declared))
        return value

    return named


def _document(task: Any, doc: Any) -> str:
    """Which document `doc` is: its index in the evaluated split, else a few-shot example."""
    try:
        index = next((i for i, d in enumerate(task.eval_docs) if d == doc), None)
    except Exception:  # noqa: BLE001 - only to say which document: never a failure of its own
        index = None
    return f"document {index} of its evaluated split" if index is not None else "a few-shot example"


def _not_a_list(task: Any, doc: Any, declared: str) -> str:
    from lm_eval.utils import apply_template

    try:
        shown = doc[declared] if declared in (task.features or []) else apply_template(declared, doc)
    except Exception:  # noqa: BLE001 - shown when it can be
        shown = None
    gave = "no choices" if shown in ("", [], "[]") else f"{str(shown)[:60]!r}, which is not a list of choices"
    return (f"task '{task.config.task}' {_document(task, doc)}: its doc_to_choice '{declared}' gave {gave}: give "
            "each document its choices as a list in the data ([\"…\", \"…\"]), or build one in the template "
            "('{{[a, b, c]}}')")


def _innermost(exc: BaseException) -> BaseException:
    """The first error of a chain of causes (a chain the submission's code made circular
    ends where it would repeat)."""
    seen = {id(exc)}
    while (cause := exc.__cause__ or exc.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        exc = cause
    return exc


def _named_download(download: Any, task: Any, args: tuple, kwargs: dict) -> None:
    """A dataset that cannot be loaded, or lacks a split the task names, said with what to
    do about it (lm-eval says only "KeyError: 'train'")."""
    try:
        download(task, *args, **kwargs)
    except UserError:
        raise
    except Exception as exc:
        path, name = str(task.config.dataset_path), task.config.task
        problem = first_line(exc) or type(exc).__name__
        if path in LOCAL_LOADERS or Path(path).exists():
            reader = first_line(_innermost(exc))  # datasets wraps the reader's own error ("line 21")
            files = (task.config.dataset_kwargs or {}).get("data_files")
            names = [Path(str(f)).name for v in files.values() for f in (v if isinstance(v, list) else [v])] \
                if isinstance(files, dict) else []
            named = f" ({', '.join(names)})" if names else ""
            fix = ("; a field that holds a comma must be in double quotes (\"a, b\")"
                   if "Error tokenizing data" in (reader or "") else "")
            raise UserError(f"task '{name}': its data files{named} could not be read ({reader or problem}){fix}") \
                from None
        raise UserError(
            f"task '{name}': dataset '{path}' could not be loaded from the local Hugging Face cache or the hub "
            f"({problem}); ship the data files in the submission (dataset_path: json with data_files)"
        ) from None
    splits = list(getattr(task, "dataset", None) or [])
    for key in SPLIT_KEYS:
        wanted = getattr(task.config, key, None)
        if splits and isinstance(wanted, str) and wanted not in splits:
            raise UserError(f"task '{task.config.task}': its {key} '{wanted}' is not a split of its data, whose "
                            f"splits are: {', '.join(map(str, splits))} (with data_files, its keys name the splits)")
