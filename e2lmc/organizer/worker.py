"""Run a submission the way Codabench's compute worker does, on this machine.

Two steps, each under the phase's `execution_time_limit`:
1. prediction — the phase's ingestion program at /app/program, the submission at
   /app/ingested_program, the task's input data at /app/input_data, output at /app/output;
2. scoring — the scoring program at /app/program, the reference data at /app/input/ref,
   the prediction output at /app/input/res, output at /app/output.
Each program's `metadata.yaml` `command` is split like a shell would (never run by a
shell) and started in /app/program; afterwards the worker writes its own `metadata`
file (exit codes, elapsed times) into the step's output, as Codabench does.

The organizers' data folder (the host's `$HOST_DIRECTORY/data`, where the real
checkpoints are placed) is seen read-only at /app/data in both steps.

Each step is one `container.StepSpec`: with Docker it runs in the worker image exactly as
Codabench's compute worker creates the container; with `container=False` the same
description runs as a plain process, every `/app/…` path moved to its mount's folder
under a work folder (`<workdir>/<step>/app/…`). Both give the same scores
(tests/test_container.py runs every phase both ways where an engine answers).
"""

from __future__ import annotations

import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UserError, output_folder
from .codabench import FREE_QUEUE_SECONDS, read_competition
from .container import GPU_DEVICE, Mount, StepSpec, run_container, run_process

WORKER_METADATA = "metadata"  # the worker's own file; a program must never write it


@dataclass(frozen=True)
class WorkerOptions:
    container: bool = True
    image: str | None = None  # default: the bundle's docker_image
    gpus: bool = False  # a CDI request of the GPUs (Codabench's USE_GPU=true)
    gpu_device: str = GPU_DEVICE  # the CDI device it names (Codabench's GPU_DEVICE)
    data: Path | None = None  # organizer data pre-placed on the host, seen read-only at /app/data
    network: bool = False  # organizers' workers set COMPETITION_CONTAINER_NETWORK_DISABLED=true


@dataclass(frozen=True)
class StepResult:
    output: Path
    exit_code: int
    seconds: float


def unpack_bundle(bundle: Path, dest: Path) -> Path:
    """An unpacked bundle folder: the zip extracted into `dest`, or `bundle` itself if a folder."""
    if bundle.is_dir():
        return bundle
    if not zipfile.is_zipfile(bundle):
        raise UserError(f"{bundle} is neither a competition bundle zip nor its unpacked folder")
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(dest)
    return dest


def find_task(competition: dict, phase: str) -> tuple[dict, dict]:
    """The phase entry and its (single) task entry, the phase named case-insensitively."""
    phases = competition.get("phases") or []
    match = [p for p in phases if str(p.get("name", "")).lower() == phase.lower()]
    if not match:
        names = ", ".join(str(p.get("name")) for p in phases)
        raise UserError(f"the bundle has no phase '{phase}' (its phases: {names})")
    tasks = {t.get("index"): t for t in competition.get("tasks") or []}
    index = (match[0].get("tasks") or [None])[0]
    if index not in tasks:
        raise UserError(f"phase '{phase}' names task {index}, which the bundle does not define")
    return match[0], tasks[index]


def _place(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest)
    else:
        with zipfile.ZipFile(source) as archive:  # Codabench unzips submissions
            archive.extractall(dest)


def _metadata_command(program: Path) -> str | None:
    """The `command` of a folder's `metadata.yaml`; None without one (Codabench, too,
    treats unreadable YAML as no command)."""
    try:
        data = yaml.safe_load((program / "metadata.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    command = data.get("command") if isinstance(data, dict) else None
    return command if isinstance(command, str) and command.strip() else None


def read_command(program: Path) -> str:
    """The program's `metadata.yaml` command; a program Codabench cannot run is refused here, as there."""
    if not (program / "metadata.yaml").is_file():
        raise UserError(f"{program} has no metadata.yaml: Codabench cannot run it")
    command = _metadata_command(program)
    if command is None:
        raise UserError(f"{program / 'metadata.yaml'} has no command")
    return command


def _run(app: Path, mounts: list[Mount], time_limit: int, options: WorkerOptions, image: str) -> tuple[int, float]:
    """Run /app/program's command with `mounts`: its exit code and elapsed seconds."""
    spec = StepSpec(image, read_command(app / "program"), tuple(mounts), gpus=options.gpus,
                    network_disabled=not options.network, gpu_device=options.gpu_device)
    start = time.perf_counter()
    code = (run_container if options.container else run_process)(spec, time_limit)
    return code, time.perf_counter() - start


def _data_mount(root: Path, options: WorkerOptions) -> Mount:
    """Codabench binds the host's data folder in every step, read-only (an empty one here if none)."""
    if options.data is None:
        (root / "data").mkdir(parents=True, exist_ok=True)
    return Mount(options.data or root / "data", "/app/data", "ro")


def _write_metadata(output: Path, status: dict) -> None:
    path = output / WORKER_METADATA
    if path.exists():
        raise UserError(f"the program wrote {path}: that file is the worker's own (exit codes); never write it")
    path.write_text(yaml.safe_dump(status, default_flow_style=False))


def prediction_step(root: Path, bundle: Path, task: dict, submission: Path, time_limit: int,
                    options: WorkerOptions, image: str) -> StepResult:
    app = root / "app"
    _place(bundle / task["ingestion_program"], app / "program")
    _place(submission, app / "ingested_program")
    (app / "output").mkdir(parents=True)
    mounts = [Mount(app / "program", "/app/program", "z"), Mount(app / "output", "/app/output", "z"),
              _data_mount(root, options), Mount(app / "ingested_program", "/app/ingested_program")]
    if "input_data" in task:
        mounts.append(Mount(bundle / task["input_data"], "/app/input_data"))
    if _metadata_command(app / "ingested_program"):
        print("worker: the submission's metadata.yaml has a command; Codabench would run it as a program next to "
              "the ingestion program (the ingestion refuses such submissions)", file=sys.stderr)
    code, seconds = _run(app, mounts, time_limit, options, image)
    _write_metadata(app / "output", {"exitCode": None, "elapsedTime": seconds, "ingestionExitCode": code,
                                     "ingestionElapsedTime": seconds})
    return StepResult(app / "output", code, seconds)


def scoring_step(root: Path, bundle: Path, task: dict, predictions: Path, time_limit: int,
                 options: WorkerOptions, image: str) -> StepResult:
    app = root / "app"
    _place(bundle / task["scoring_program"], app / "program")
    if "reference_data" in task:
        _place(bundle / task["reference_data"], app / "input" / "ref")
    shutil.copytree(predictions, app / "input" / "res")
    (app / "output").mkdir(parents=True)
    (app / "shared").mkdir()
    mounts = [Mount(app / "program", "/app/program", "z"), Mount(app / "output", "/app/output", "z"),
              _data_mount(root, options), Mount(app / "shared", "/app/shared"), Mount(app / "input", "/app/input")]
    code, seconds = _run(app, mounts, time_limit, options, image)
    _write_metadata(app / "output", {"exitCode": code, "elapsedTime": seconds})
    return StepResult(app / "output", code, seconds)


def run_submission(submission: Path, bundle: Path, phase: str, workdir: Path,
                   options: WorkerOptions = WorkerOptions()) -> tuple[StepResult, StepResult]:
    """Both steps of one submission on one phase; `workdir` must be empty or absent."""
    if not submission.exists():
        raise UserError(f"{submission}: no such file or folder")
    if options.data is not None and not options.data.is_dir():
        raise UserError(f"--data {options.data}: no such folder (the engine would create it empty, and every step "
                        "would find no checkpoint)")
    if any(output_folder(workdir, "--workdir").iterdir()):
        raise UserError(f"{workdir} is not empty: give the worker a fresh work folder")
    bundle_dir = unpack_bundle(bundle, workdir / "bundle")
    competition = read_competition(bundle_dir)
    phase_entry, task = find_task(competition, phase)
    time_limit = int(phase_entry.get("execution_time_limit", FREE_QUEUE_SECONDS))
    image = options.image or competition.get("docker_image", "")
    where = f"in {image}" if options.container else "as plain processes (--no-container)"
    print(f"worker: phase '{phase_entry['name']}', time limit {time_limit} s per step, {where} — prediction step",
          file=sys.stderr)
    prediction = prediction_step(workdir / "prediction", bundle_dir, task, submission, time_limit, options, image)
    # Codabench does not check the prediction step's exit code: the scoring program reads it
    # from /app/input/res/metadata and fails with a message of its own.
    print(f"worker: prediction step exited with {prediction.exit_code} after {prediction.seconds:.0f} s — "
          "scoring step", file=sys.stderr)
    scoring = scoring_step(workdir / "scoring", bundle_dir, task, prediction.output, time_limit, options, image)
    print(f"worker: scoring step exited with {scoring.exit_code} after {scoring.seconds:.0f} s", file=sys.stderr)
    return prediction, scoring
