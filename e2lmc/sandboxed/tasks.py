"""lm-eval on a submission, without a model: record its requests, replay responses.

The plan stage runs the submission's task through lm-eval's own evaluator with a
`RecordingLM` that answers every request with a placeholder and remembers it; the
score stage runs it again with the responses the trusted engine computed, so the
task's own `process_results`, filters and aggregations produce the metric exactly as
lm-eval would with a real model. Both stages execute submission code (templates,
`!function` helpers), so they run in a separate process that never sees a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import glob
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from ..errors import UserError, first_line
from ..scoring.formulas import ValidationRules
from ..sandboxed.submission import HUB_NAME, LOCAL_LOADERS, Submission, function_file, load_task_yaml

# (request type, arguments as canonical JSON): the identity of one request.
RequestKey = tuple[str, str]
TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice")  # a task's Jinja templates, rendered per sample
PLACEHOLDERS: dict[str, Any] = {"loglikelihood": (0.0, False), "loglikelihood_rolling": 0.0, "generate_until": ""}


def request_key(kind: str, arguments: tuple) -> RequestKey:
    return kind, json.dumps(list(arguments), sort_keys=True, ensure_ascii=False, default=str)


class RecordingLM(LM):
    """An lm-eval model that records distinct requests and answers from `responses`
    (or with placeholders while planning)."""

    def __init__(self, responses: dict[RequestKey, Any] | None = None) -> None:
        super().__init__()
        self.responses = responses
        # insertion-ordered, distinct; the value names the first sample that asked: (task, doc id)
        self.requests: dict[RequestKey, tuple[str, int]] = {}
        # while planning, every sample's requests: (task, doc id) -> [(lm-eval's idx, request)]
        self.asked: dict[tuple[str, int], list[tuple[int, RequestKey]]] = {}

    def _answer(self, kind: str, requests: list) -> list:
        answers = []
        for request in requests:
            key = request_key(kind, request.args)
            self.requests.setdefault(key, (request.task_name, request.doc_id))
            if self.responses is None:
                self.asked.setdefault((request.task_name, request.doc_id), []).append((request.idx, key))
            answers.append(PLACEHOLDERS[kind] if self.responses is None else self.responses[key])
        return answers

    def loglikelihood(self, requests: list) -> list:
        return self._answer("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list) -> list:
        return self._answer("loglikelihood_rolling", requests)

    def generate_until(self, requests: list) -> list:
        return self._answer("generate_until", requests)


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
        *[(task_module.ConfigurableTask, key, _named_template(getattr(task_module.ConfigurableTask, key), key))
          for key in TEMPLATE_KEYS],
        (sys.modules, "evaluate", None),  # `import evaluate` fails meanwhile
    ]
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
    from lm_eval.api.registry import metric_registry

    import lm_eval.api.metrics  # noqa: F401  (fills the registry)

    if hf_evaluate_metric or name not in metric_registry:
        raise UserError(
            f"metric '{name}' is not one of lm-eval's built-in metrics; use a built-in one or a "
            f"!function from the submission (Hugging Face evaluate metrics are not loaded)"
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
    for key, value in (("dataset_path", config.get("dataset_path")), ("dataset_kwargs.data_dir", kwargs.get("data_dir"))):
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
    most = ValidationRules().max_samples if split == evaluated else OTHER_SPLIT_MAX_ROWS
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
                        f"at most {ValidationRules().max_samples:,} samples, so reading stopped there")



def _named_template(render: Any, key: str) -> Any:
    """lm-eval's `doc_to_*` with a template error that names the task, the YAML key and
    the fields the sample has (Jinja says only "'questoin' is undefined")."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError

    @functools.wraps(render)
    def named(self: Any, doc: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return render(self, doc, *args, **kwargs)
        except SecurityError:
            raise  # said as an attempt to escape, not as a mistake (isolation.describe_error)
        except TemplateError as exc:
            fields = [str(f) for f in doc] if isinstance(doc, dict) else []
            unknown = re.match(r"'(\w+)' is undefined", str(exc))
            close = difflib.get_close_matches(unknown.group(1), fields, 1) if unknown else []
            raise UserError(
                f"task '{self.config.task}': its {key} template failed: {first_line(exc, 200)}"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + (f"; the data's fields are: {', '.join(fields)}" if fields else "")) from None

    return named


def _named_download(download: Any, task: Any, args: tuple, kwargs: dict) -> None:
    """A dataset that cannot be loaded, named with what to do about it."""
    try:
        download(task, *args, **kwargs)
    except UserError:
        raise
    except Exception as exc:
        path, name = str(task.config.dataset_path), task.config.task
        problem = first_line(exc) or type(exc).__name__
        if path in LOCAL_LOADERS or Path(path).exists():
            raise UserError(f"task '{name}': its data files could not be read ({problem})") from None
        raise UserError(
            f"task '{name}': dataset '{path}' could not be loaded from the local Hugging Face cache or the hub "
            f"({problem}); ship the data files in the submission (dataset_path: json with data_files)"
        ) from None


def check_keys(submission: Submission) -> None:
    """Every key of every task YAML is an lm-eval task or group key (lm-eval would fail
    with a bare TypeError that names neither the file nor a fix)."""
    from lm_eval.config.group import GroupConfig
    from lm_eval.config.task import TaskConfig

    allowed = {f.name for f in dataclasses.fields(TaskConfig)} | {f.name for f in dataclasses.fields(GroupConfig)}
    allowed |= {"include", "class"}
    for path in submission.task_files:
        unknown = sorted(set(load_task_yaml(path)) - allowed)
        if unknown:
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "it is not an lm-eval task or group key"
            raise UserError(f"{path.relative_to(submission.root)}: unknown key '{unknown[0]}' ({hint})")


def load_task(submission: Submission) -> dict:
    """The submission's task (or group) as lm-eval builds it, from its files only."""
    from lm_eval.tasks import TaskManager

    check_keys(submission)
    sandbox_templates()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # lm-eval resolves relative data_files against the working directory.
    with contextlib.chdir(submission.root), confined(submission):
        manager = TaskManager(include_path=str(submission.root), include_defaults=False)
        if submission.task_name not in manager.all_tasks:
            found = ", ".join(sorted(manager.all_tasks)) or "none"
            raise UserError(f"metadata.yaml names task '{submission.task_name}', not defined in the submission "
                            f"(tasks found: {found})")
        task_dict = manager.load([submission.task_name])
    _seed(task_dict)
    return task_dict


def _seed(task_dict: dict) -> None:
    """The seeds lm-eval's `simple_evaluate` sets (its evaluator does not): the few-shot
    examples drawn for each sample, and anything a task draws from Python's, NumPy's or
    torch's generators, are the same in every child that builds the task (the plan, the
    score children) and the same as `lm_eval --tasks ...` gives a participant."""
    import random

    import numpy as np
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(DEFAULT_OTHER_SEED)
    for task in task_dict["tasks"].values():
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)


def run_task(submission: Submission, task_dict: dict, lm: LM) -> dict[str, float]:
    """Run lm-eval's evaluator on `lm`; the numeric results of the submitted task."""
    from lm_eval.evaluator import evaluate

    with contextlib.chdir(submission.root):
        out = evaluate(lm, task_dict, bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    results = out["results"].get(submission.task_name, {})
    return {k: float(v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def record_requests(submission: Submission, task_dict: dict) -> tuple[RecordingLM, dict[str, float]]:
    """The recording of every request the task makes (`.requests`: distinct, with the
    sample that first asked; `.asked`: each sample's), and the result keys it produces."""
    lm = RecordingLM()
    keys = run_task(submission, task_dict, lm)
    if submission.task_metric not in keys:
        produced = ", ".join(sorted(k for k in keys if "," in k and "_stderr" not in k)) or "none"
        raise UserError(f"metadata.yaml: task_metric '{submission.task_metric}' is not produced by task "
                        f"'{submission.task_name}' (it produces: {produced})")
    return lm, keys


def replay(submission: Submission, task_dict: dict, responses: dict[RequestKey, Any]) -> float:
    """The submitted metric computed by the task itself from recorded responses."""
    return run_task(submission, task_dict, RecordingLM(responses))[submission.task_metric]


def keep_built_requests(task_dict: dict) -> None:
    """Make later runs of lm-eval's evaluator on `task_dict` reuse the requests the last
    run built, with their responses emptied: rendering every (few-shot) prompt again for
    each checkpoint cost far more than computing them (3 s a checkpoint for the
    five-shot sample). The prompts cannot differ between runs: the plan is their digest."""
    for task in task_dict["tasks"].values():
        instances = list(task.instances)

        def rebuilt(*_args: Any, _instances: list = instances, **_kwargs: Any) -> None:
            for instance in _instances:
                instance.resps.clear()
                instance.filtered_resps.clear()

        task.build_all_requests = rebuilt


def higher_is_better(task_dict: dict, metric_key: str) -> bool:
    """Whether the submitted metric improves upward (lm-eval's own flag; True if unknown)."""
    metric = metric_key.split(",")[0]
    for task in task_dict["tasks"].values():
        flag = task.higher_is_better().get(metric)
        if flag is not None:
            return bool(flag)
    return True
