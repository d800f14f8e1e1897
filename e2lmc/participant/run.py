"""`e2lmc run` and `e2lmc demo`: a submission through ingestion and scoring on this machine.

The participant's one command, doing what Codabench's two steps do: the ingestion
program on every checkpoint of a set, then the scoring program, the leaderboard row and
the report. The set is the embedded one of a preset (built on first use), or the real
series' released checkpoints, placed from the Hugging Face cache, for signal quality
alone (ranking consistency and compliance need the hidden checkpoints).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..embedded.sets import ensure_built, provenance, set_folder
from ..errors import UserError, output_folder
from ..formats.manifest import MANIFEST_FILE, read_manifest, write_manifest
from ..formats.reference import ReferenceData, read_reference, write_reference
from ..formats.results import RESULTS_FILE, read_results, write_results
from ..formats.series import E2LM_SERIES, read_series, released_reference
from ..limits import Limits
from ..organizer.phases import PHASE_NAMES, phase_manifest, phase_reference

EMBEDDED, RELEASED = "embedded", "e2lm-released"  # what --checkpoints names
CHECKPOINT_SETS = (EMBEDDED, RELEASED)
RUN_OUTPUT = Path("run_output")
DEMO_OUTPUT = Path("demo_output")
WEB_PLACEHOLDER = "e2lm-organizers/web-only-model-not-public"  # the web-only model has no released checkpoint


def run(submission: Path, limits: Limits, checkpoints: str = EMBEDDED, preset: str = "default",
        zoo: Path | None = None, output: Path | None = None, series: Path | None = None, offline: bool = False,
        cache_dir: Path | None = None, phase: str | None = None) -> int:
    """Ingestion then scoring of `submission` on the embedded set of `preset` (in `zoo`),
    or on the checkpoints one competition `phase` takes from it, or on the released
    checkpoints (`checkpoints=RELEASED`, placed in `zoo`); `output` defaults to
    run_output/<submission's name>[-<phase>]."""
    if phase is not None and checkpoints == RELEASED:
        raise UserError("--phase cuts the embedded set as a competition phase does; the released checkpoints have "
                        "no phases (leave out one of --phase and --checkpoints e2lm-released)")
    # lm-eval, numpy: not for the command line's --help, which reads this module's names
    from ..ingestion.program import ingest
    from ..scoring.program import REPORT_FILE, SCORES_FILE, run_scoring, summary
    from ..scoring.uncertainty import previous_run

    if checkpoints == RELEASED:
        start = time.perf_counter()
        zoo = place_released(series or E2LM_SERIES, zoo or set_folder(RELEASED), offline, cache_dir)
        timings = [("place the released checkpoints", time.perf_counter() - start)]
    else:
        zoo, build_seconds = ensure_built(preset, zoo)
        timings = [] if build_seconds is None else [("build the checkpoint set", build_seconds)]
        _, said = provenance(zoo) or (None, "")
        if said:
            print(said[0].upper() + said[1:] + ".")
    suffix = "-" + RELEASED if checkpoints == RELEASED else "" if phase is None else "-" + phase
    output = output or RUN_OUTPUT / (submission.stem + suffix)
    previous = previous_run(output, SCORES_FILE)  # compared with this run in the advice
    input_data, reference = (zoo, zoo / "reference") if phase is None else cut_phase(zoo, phase, output / "phase")
    if phase is not None:
        reuse_whole_run(RUN_OUTPUT / submission.stem / "res", input_data, output / "res")
    print(f"Ingestion: running {submission} on every checkpoint of {input_data / MANIFEST_FILE} …")
    start = time.perf_counter()
    # the participant's own machine: nothing hidden
    ingest(submission, input_data, output / "res", limits, checkpoint_root=zoo, local=True)
    timings.append(("ingestion", time.perf_counter() - start))
    print("Scoring:")
    start = time.perf_counter()
    print("\n".join(summary(run_scoring(output / "res", reference, output, previous=previous), output, previous)))
    if checkpoints == EMBEDDED:
        print(phases_line(phase, read_reference(zoo / "reference")))
    timings.append(("scoring", time.perf_counter() - start))
    print("time: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings))
    print(f"Open {(output / REPORT_FILE).resolve()} in a browser for the detailed report.")
    return 0


def cut_phase(zoo: Path, phase: str, folder: Path) -> tuple[Path, Path]:
    """The manifest (in `folder`) and reference data (in `folder`/reference) of one
    competition phase, cut from the set in `zoo` as the bundle cuts them for the workers
    (an unknown phase is refused there)."""
    reference = phase_reference(read_reference(zoo / "reference"), phase)
    write_manifest(phase_manifest(read_manifest(zoo), reference), folder)
    write_reference(reference, folder / "reference")
    return folder, folder / "reference"


def reuse_whole_run(whole: Path, phase_input: Path, res: Path) -> None:
    """Start a phase's run from the checkpoints the whole set's run already evaluated
    (ingestion keeps them only if that run was of the same task on the same set)."""
    if (res / RESULTS_FILE).exists() or not (whole / RESULTS_FILE).is_file():
        return
    try:
        results = read_results(whole)
    except UserError:
        return  # unreadable: the phase starts from nothing, as without it
    wanted = {e.id for e in read_manifest(phase_input).checkpoints}
    results.checkpoints = [c for c in results.checkpoints if c.id in wanted]
    results.complete = False
    write_results(results, output_folder(res, "--output"))
    print(f"reusing the {len(results.checkpoints)} checkpoints of this phase that {whole.parent} evaluated on the "
          "whole set (kept if the task and the set are the same)")


def phases_line(phase: str | None, full: ReferenceData) -> str:
    """Which checkpoints of the set `full` the row was computed on: those of `phase`, or
    all of them, and then how each competition phase's checkpoints differ."""

    def ids(reference: ReferenceData) -> set[str]:
        return {m.checkpoint_id(c) for m in reference.models for c in m.checkpoints}

    def counted(reference: ReferenceData) -> str:
        return f"{reference.n_checkpoints} checkpoints of {len(reference.models)} models"

    if phase is not None:
        return f"checkpoints: {counted(phase_reference(full, phase))}, the ones phase {phase} evaluates on Codabench"
    cuts = {name: phase_reference(full, name) for name in PHASE_NAMES}
    differ = ", ".join(f"{name} {'the same' if ids(cut) == ids(full) else counted(cut)}" for name, cut in cuts.items())
    return f"checkpoints: all {counted(full)} of the set; the phases use: {differ} (--phase NAME scores as one)"


def demo(limits: Limits, preset: str = "default", zoo: Path | None = None, output: Path = DEMO_OUTPUT) -> int:
    """`run` on the science sample submission, which the set's build writes beside its checkpoints."""
    from ..embedded.world import SCIENCE_TASK

    zoo = set_folder(preset, zoo)
    print(f"Demo: the sample submission {SCIENCE_TASK} through ingestion and scoring.")
    return run(zoo / "tasks" / SCIENCE_TASK, limits, preset=preset, zoo=zoo, output=output)


def place_released(series_file: Path, folder: Path, offline: bool, cache_dir: Path | None) -> Path:
    """The real series' released checkpoints that SQ uses, placed from the Hugging Face
    cache (downloaded when online and missing) in `folder`, with their reference data."""
    from ..organizer.placement import describe, fetch

    series = read_series(series_file, web_repo=WEB_PLACEHOLDER)
    reference = released_reference(series)
    wanted = {m.checkpoint_id(c) for m in reference.models for c in m.checkpoints}
    print(f"Placing the {len(wanted)} released checkpoints signal quality uses in {folder} (from the Hugging Face "
          "cache; downloaded where missing and online) …")
    sizes = fetch(series, Path(series_file).parent, folder, offline=True if offline else None,
                  cache_dir=cache_dir, keep=wanted.__contains__)
    write_reference(reference, folder / "reference")
    print(f"placed {describe(sizes)}")
    return folder
