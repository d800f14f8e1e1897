"""The Codabench competition bundle: what organizers upload.

`build_bundle` lays the bundle out in a folder, writes `competition.yaml`, zips it, and
checks the zip against every Codabench rule of DESIGN §2 (`bundle_problems`); an
invalid bundle is never written. Layout of the zip:

    competition.yaml  logo.png  terms.md  pages/*.md
    scoring_program/                  score.py, metadata.yaml, a copy of e2lmc
    <phase>/ingestion_program/        ingest.py, metadata.yaml (--manifest manifest-<phase>.yaml), e2lmc
    <phase>/reference_data/           reference.yaml of the phase
    input_data/                       manifest-<phase>.yaml for every phase (+ the checkpoints
                                      and tokenizer of the embedded set with --checkpoints zoo)
    starting_kit/                     README, sample submissions, the installable e2lmc package

Every phase's task shares `input_data/`, so the checkpoints are in the zip once; each
phase's ingestion program names its own manifest, since a Codabench program cannot
otherwise tell which phase it runs in.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

import yaml

from . import __version__
from .errors import UserError
from .formats import MANIFEST_FILE, CheckpointManifest, ReferenceData, read_manifest, write_manifest, \
    write_reference
from .phases import PHASES, PhaseSpec, phase_manifest, phase_reference, shifted
from .scorer import Leaderboard

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent
COMPETITION_FILE = "competition.yaml"
FREE_QUEUE_SECONDS = 600  # Codabench's default queue stops a step after this
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
PAGES = (  # (title, file under competition/pages), in the order participants see them
    ("Overview", "overview.md"),
    ("Tasks and data", "tasks_and_data.md"),
    ("Evaluation", "evaluation.md"),
    ("Submission format and rules", "submission.md"),
    ("Timeline", "timeline.md"),
    ("Prizes", "prizes.md"),
    ("Organizers", "organizers.md"),
)
COLUMNS = {  # leaderboard key -> (title, sorting, precision); the keys are the scoring program's
    "score": ("Score", "desc", 4),
    "signal_quality": ("Signal quality (SQ)", "desc", 4),
    "ranking_consistency": ("Ranking consistency (RC)", "desc", 4),
    "scientific_compliance": ("Scientific compliance (CS)", "desc", 4),
    "monotonicity": ("SQ: monotonicity", "desc", 4),
    "autocorrelation": ("SQ: autocorrelation", "desc", 4),
    "valid": ("Valid (1) / invalid (0)", "desc", 0),
    "leakage": ("Leakage (fraction of samples)", "asc", 3),
    "n_samples": ("Samples", "desc", 0),
}
SUBMISSION_RULES = ("Add", "Add_And_Delete", "Add_And_Delete_Multiple", "Force_Last", "Force_Latest_Multiple",
                    "Force_Best")
STARTING_KIT_FILES = ("README.md", "sample_submissions", "data")


@dataclass(frozen=True)
class BundleOptions:
    docker_image: str = f"e2lmc/worker:{__version__}"
    time_limit: int = FREE_QUEUE_SECONDS  # seconds per step (prediction, scoring)
    start: datetime | None = None  # move the whole schedule so that warm-up starts here
    queue: str | None = None  # a Codabench queue (GPU workers) to run submissions on
    require_sandbox: str = "landlock"  # the weakest isolation of submission code the phases accept (sandbox.py)
    hide_output: bool = False  # hide the steps' logs from participants (docs/security.md: a submission's own program)


# ------------------------------------------------------------------------- layout


def _copy_package(dest: Path) -> None:
    shutil.copytree(PACKAGE, dest / "e2lmc", ignore=shutil.ignore_patterns("__pycache__"))


def _copy_program(source: Path, dest: Path, command: str | None = None) -> None:
    """A program folder plus its own copy of the package, so it runs from its zip alone."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "README.md"))
    _copy_package(dest)
    if command is not None:
        (dest / "metadata.yaml").write_text(
            "# Codabench runs this (split like a shell would, not through a shell) in /app/program.\n"
            + yaml.safe_dump({"command": command}, width=200)
        )


def _starting_kit(dest: Path) -> None:
    """The participants' download: the README, the samples and the installable package."""
    kit = REPO / "starting_kit"
    dest.mkdir(parents=True)
    for name in STARTING_KIT_FILES:
        source = kit / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, dest / name)
    _copy_package(dest)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")  # readme = README.md: the kit's own


def _pages(dest: Path, phases: tuple[PhaseSpec, ...]) -> list[dict]:
    pages_dir = dest / "pages"
    pages_dir.mkdir()
    for _, file in PAGES:
        shutil.copy(REPO / "competition" / "pages" / file, pages_dir / file)
    schedule = "\n".join(f"| {p.name} | {p.start:{DATE_FORMAT}} | {p.end:{DATE_FORMAT}} |" for p in phases)
    with open(pages_dir / "timeline.md", "a") as f:
        f.write(f"\n## Phase schedule of this competition (UTC)\n\n| phase | opens | closes |\n|---|---|---|\n"
                f"{schedule}\n")
    return [{"title": title, "file": f"pages/{file}"} for title, file in PAGES]


def competition_yaml(phases: tuple[PhaseSpec, ...], pages: list[dict], options: BundleOptions) -> dict:
    """The competition.yaml of DESIGN §2 (Codabench v2)."""
    tasks, phase_entries = [], []
    for index, spec in enumerate(phases):
        tasks.append({
            "index": index,
            "name": f"E2LM {spec.name}",
            "description": spec.description,
            "ingestion_program": f"{spec.name}/ingestion_program",
            "input_data": "input_data",
            "scoring_program": "scoring_program",
            "reference_data": f"{spec.name}/reference_data",
        })
        phase = {
            "index": index,
            "name": spec.name.capitalize(),
            "description": spec.description,
            "start": f"{spec.start:{DATE_FORMAT}}",  # a string: unquoted datetimes lose their time of day
            "end": f"{spec.end:{DATE_FORMAT}}",
            "execution_time_limit": options.time_limit,
            "max_submissions_per_day": spec.max_submissions_per_day,
            # Every phase scores hidden checkpoints, whose per-checkpoint values are in the
            # prediction output: participants see the scores and the report only.
            "hide_prediction_output": True,
            "hide_output": options.hide_output,
            "starting_kit": "starting_kit",
            "tasks": [index],
        }
        if spec.max_submissions is not None:
            phase["max_submissions"] = spec.max_submissions
        phase_entries.append(phase)
    data = {
        "version": 2,
        "title": "E2LM: From Noise to Knowledge — benchmarks for the early training of LLMs",
        "description": "Design scientific-knowledge evaluation tasks that give a clean, discriminative signal "
                       "during the early training of small language models (NeurIPS 2025 competition).",
        "image": "logo.png",
        "registration_auto_approve": True,
        "docker_image": options.docker_image,
        "enable_detailed_results": True,
        "terms": "terms.md",
        "pages": pages,
        "tasks": tasks,
        "phases": phase_entries,
        "leaderboards": [{
            "index": 0,
            "title": "E2LM leaderboard",
            "key": "main",
            "submission_rule": "Force_Last",
            "primary_index": 0,
            "columns": [
                {"index": i, "key": key, "title": title, "sorting": sorting, "precision": precision}
                for i, (key, (title, sorting, precision)) in enumerate(COLUMNS.items())
            ],
        }],
    }
    if options.queue:
        data["queue"] = options.queue
    return data


def layout(dest: Path, input_data: Path | None, full_reference: ReferenceData, full_manifest: CheckpointManifest,
           options: BundleOptions) -> None:
    """Write the unzipped bundle into `dest` (empty). `input_data` is the folder whose
    checkpoints the manifests' relative paths point into (None: hub or /app/data)."""
    if not (REPO / "competition").is_dir():
        raise UserError(f"bundles are built from a checkout of the e2lmc repository; {REPO} has no competition/ folder")
    phases = shifted(PHASES, options.start)
    if input_data is not None:
        shutil.copytree(input_data, dest / "input_data",
                        ignore=shutil.ignore_patterns("__pycache__", "tasks", "reference", MANIFEST_FILE, "zoo.json",
                                                      "done.json"))
    (dest / "input_data").mkdir(exist_ok=True)
    for spec in phases:
        reference = phase_reference(full_reference, spec.name)
        manifest_name = f"manifest-{spec.name}.yaml"
        write_manifest(phase_manifest(full_manifest, reference), dest / "input_data", manifest_name)
        write_reference(reference, dest / spec.name / "reference_data")
        _copy_program(REPO / "ingestion_program", dest / spec.name / "ingestion_program",
                      "python3 /app/program/ingest.py --submission /app/ingested_program "
                      f"--input-data /app/input_data --manifest {manifest_name} --output /app/output "
                      f"--require-sandbox {options.require_sandbox}")
    _copy_program(REPO / "scoring_program", dest / "scoring_program")
    _starting_kit(dest / "starting_kit")
    shutil.copy(REPO / "competition" / "logo.png", dest / "logo.png")
    shutil.copy(REPO / "competition" / "terms.md", dest / "terms.md")
    pages = _pages(dest, phases)
    text = yaml.safe_dump(competition_yaml(phases, pages, options), sort_keys=False, allow_unicode=True, width=120)
    (dest / COMPETITION_FILE).write_text(text, encoding="utf-8")


def zip_folder(folder: Path, out: Path) -> None:
    """A deterministic zip: sorted entries, fixed timestamps."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(2025, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f, archive.open(info, "w") as dst:
                shutil.copyfileobj(f, dst, 1 << 20)
    problems = bundle_problems(tmp)
    if problems:
        tmp.unlink()
        raise UserError(f"the bundle breaks a Codabench rule: {problems[0]} (nothing written)")
    tmp.replace(out)


def build_bundle(out: Path, input_data: Path | None, full_reference: ReferenceData, full_manifest: CheckpointManifest,
                 options: BundleOptions = BundleOptions()) -> Path:
    with tempfile.TemporaryDirectory(prefix="e2lmc-bundle-") as tmp:
        layout(Path(tmp), input_data, full_reference, full_manifest, options)
        zip_folder(Path(tmp), out)
    return out


def zoo_bundle(zoo: Path, out: Path, options: BundleOptions = BundleOptions()) -> Path:
    """The self-contained bundle: the embedded checkpoint set inside."""
    from .formats import read_reference

    return build_bundle(out, zoo, read_reference(zoo / "reference"), read_manifest(zoo), options)


# ------------------------------------------------------------------------- checks


def bundle_problems(bundle: Path) -> list[str]:
    """Every Codabench rule (DESIGN §2) the zip breaks, one sentence each; [] when valid."""
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
    if f"{folder}/e2lmc/__init__.py" not in names:
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

