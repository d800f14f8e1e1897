"""The `e2lmc` command: one subcommand per job. Exit codes: 0 ok, 1 the submission is
invalid, 2 bad input or refused (one sentence each), 3 an internal error (a traceback,
and a line asking to report it)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .errors import InvalidSubmission, UserError
from .sandbox import CHOICES

CODABENCH_SUBMISSION = Path("/app/ingested_program")
CODABENCH_INPUT_DATA = Path("/app/input_data")
CODABENCH_RES = Path("/app/input/res")
CODABENCH_REF = Path("/app/input/ref")
CODABENCH_OUTPUT = Path("/app/output")

DEMO_OUTPUT = Path("demo_output")
DEFAULT_TOKENIZER = Path("zoo/default/tokenizer")


def _score(args: argparse.Namespace) -> int:
    from .scorer import REPORT_FILE, SCORES_FILE, format_row, run_scoring

    evaluation = run_scoring(args.res, args.ref, args.output, allow_partial=args.allow_partial)
    print(format_row(evaluation.leaderboard))
    for problem in evaluation.verdict.problems:
        print(f"invalid submission: {problem}.")
    print(f"wrote {args.output / SCORES_FILE} and {args.output / REPORT_FILE}")
    return 0


def _score_curves(args: argparse.Namespace) -> int:
    import json

    from .curves import format_table, read_curves, score_curves

    scores = score_curves(
        read_curves(args.file),
        benchmarks=args.metric,
        every_iterations=args.every or None,
        max_tokens=None if args.max_tokens <= 0 else args.max_tokens,
        lower_is_better=args.lower_is_better,
    )
    if args.json:
        rows = [
            {"benchmark": s.benchmark, "model": s.model, "points": s.sq.n_points, "monotonicity": s.sq.monotonicity,
             "autocorrelation": s.sq.autocorrelation, "signal_quality": s.sq.score, "notes": list(s.sq.reasons)}
            for s in scores
        ]
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(scores))
    return 0


def _embedded_set(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The embedded checkpoint set of `--zoo`/`--preset`, built first if missing (and
    the seconds that took)."""
    from .series import SERIES_FILE
    from .zoo import build

    zoo = args.zoo or Path("zoo") / args.preset
    if (zoo / SERIES_FILE).is_file():
        return zoo, None
    print(f"Building the embedded '{args.preset}' checkpoint set in {zoo} (first use only; resumable) …")
    start = time.perf_counter()
    build(args.preset, zoo)
    return zoo, time.perf_counter() - start


def _run(args: argparse.Namespace) -> int:
    """Ingestion then scoring on the embedded checkpoint set, built on first use."""
    from .ingestion import ingest

    zoo, build_seconds = _embedded_set(args)
    timings = [] if build_seconds is None else [("build the checkpoint set", build_seconds)]
    output = args.output or Path("run_output") / args.submission.stem
    print(f"Ingestion: running {args.submission} on every checkpoint in {zoo} …")
    start = time.perf_counter()
    ingest(args.submission, zoo, output / "res", _limits(args))
    timings.append(("ingestion", time.perf_counter() - start))
    print("Scoring:")
    start = time.perf_counter()
    _score(argparse.Namespace(res=output / "res", ref=zoo / "reference", output=output, allow_partial=False))
    timings.append(("scoring", time.perf_counter() - start))
    print("time: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings))
    print(f"Open {(output / 'detailed_results.html').resolve()} in a browser for the detailed report.")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """`e2lmc run` on the science sample submission, generated with the checkpoint set."""
    from .world import SCIENCE_TASK

    args.zoo = args.zoo or Path("zoo") / args.preset
    args.submission = args.zoo / "tasks" / SCIENCE_TASK  # written by the build, like starting_kit's copy
    print(f"Demo: the sample submission {SCIENCE_TASK} through ingestion and scoring.")
    return _run(args)


def _limits(args: argparse.Namespace):
    from .engine import Settings
    from .ingestion import Limits
    from .sandbox import GiB, SandboxSettings

    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else None
    sandbox = SandboxSettings(level=args.sandbox, required=args.require_sandbox,
                              memory_bytes=int(args.memory_limit * GiB))
    return Limits(plan_seconds=args.plan_timeout, score_seconds=args.score_timeout,
                  engine=Settings(token_budget=args.token_budget, devices=devices), sandbox=sandbox)


def _ingest(args: argparse.Namespace) -> int:
    from .ingestion import ingest

    start = time.perf_counter()
    results = ingest(args.submission, args.input_data, args.output, _limits(args), manifest_name=args.manifest,
                     checkpoint_root=args.checkpoint_root)
    print(f"evaluated task '{results.task_name}' ({results.task_metric}) on {len(results.checkpoints)} checkpoints "
          f"in {time.perf_counter() - start:.0f} s; wrote {args.output / 'ingestion_results.json'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .ingestion import check_prompts, plan_submission
    from .sandbox import private_workdir
    from .scoring import ValidationRules

    with private_workdir("validate") as tmp:
        _, plan = plan_submission(args.submission, Path(tmp), _limits(args))
    kinds = sorted({r.kind for r in plan.requests})
    print(f"task '{plan.task_name}', metric {plan.task_metric} ({'higher' if plan.higher_is_better else 'lower'} "
          f"is better): {plan.n_samples:,} samples, {len(plan.requests):,} distinct requests ({', '.join(kinds)})")
    tokenizer = args.tokenizer or (DEFAULT_TOKENIZER if DEFAULT_TOKENIZER.is_dir() else None)
    if tokenizer is None:
        print("prompt lengths not checked: pass --tokenizer DIR (or build the default checkpoint set first)")
    else:
        validation = check_prompts(plan, tokenizer)
        print(f"longest prompt: {validation.max_prompt_tokens:,} tokens (sample {validation.longest_prompt_sample}, "
              f"tokenizer {tokenizer})")
    fraction = len(plan.leakage) / plan.n_samples
    limit = ValidationRules().max_leakage_fraction
    print(f"leakage: {len(plan.leakage)} samples ({fraction:.1%}) show their gold answer in their own prompt"
          + (f" — above the {limit:.0%} allowed: the submission would be invalid" if fraction > limit else ""))
    for leak in plan.leakage[:5]:
        print(f"  task '{leak.task}' sample {leak.sample}: '{leak.answer}' in …{leak.excerpt}…")
    print("valid" if fraction <= limit else "invalid")
    return 0 if fraction <= limit else 1


def _bundle(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .bundle import BundleOptions, real_bundle, zoo_bundle
    from .series import E2LM_SERIES, read_series

    try:
        start = datetime.fromisoformat(args.start) if args.start else None
    except ValueError:
        raise UserError(f"--start {args.start}: write a date such as 2026-03-02 or '2026-03-02 12:00'") from None
    out = args.out or Path("dist") / f"e2lmc-bundle-{args.checkpoints}.zip"
    options = BundleOptions(start=start, queue=args.queue, time_limit=args.time_limit,
                            require_sandbox=args.require_sandbox, allow_local_image=args.allow_local_image,
                            hide_output=args.checkpoints == "e2lm" if args.hide_output is None else args.hide_output,
                            **({"docker_image": args.docker_image} if args.docker_image else {}))
    started = time.perf_counter()
    if args.checkpoints == "zoo":
        warnings = zoo_bundle(_embedded_set(args)[0], out, options)
    else:
        series = read_series(args.series or E2LM_SERIES, args.web_model)
        warnings = real_bundle(series, out, options, args.data)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s; "
          "it passes every Codabench bundle rule the builder checks")
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from .placement import describe, fetch, verify_placed
    from .series import E2LM_SERIES, read_series

    if args.checkpoints_command == "verify":
        print(f"{args.data}: {describe(verify_placed(args.data))}, all complete")
        return 0
    series_file = args.series or E2LM_SERIES
    series = read_series(series_file, args.web_model)
    sizes = fetch(series, Path(series_file).parent, args.to, offline=True if args.offline else None,
                  cache_dir=args.cache_dir, workers=args.workers)
    print(f"placed {describe(sizes)} in {args.to}, with its manifest.yaml; copy the folder to "
          "$HOST_DIRECTORY/data on every GPU worker (docs/organizers.md)")
    return 0


def _worker(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from .worker import WorkerOptions, run_submission

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="e2lmc-worker-"))
    options = WorkerOptions(container=not args.no_container, image=args.image, gpus=args.gpus, data=args.data,
                            network=args.network)
    _, scoring = run_submission(args.submission, args.bundle, args.phase, workdir, options)
    scores = scoring.output / "scores.json"
    if scoring.exit_code != 0 or not scores.is_file():
        print(f"the scoring step failed (exit code {scoring.exit_code}): the submission would be marked Failed; "
              f"its output is in {scoring.output}")
        return 1
    print(json.dumps(json.loads(scores.read_text()), indent=1))
    print(f"scores: {scores}\ndetailed results: {scoring.output / 'detailed_results.html'}")
    return 0


def _add_run_options(p: argparse.ArgumentParser, default_output: str) -> None:
    p.add_argument("--preset", choices=["tiny", "default"], default="default",
                   help="which embedded checkpoint set (default: %(default)s)")
    p.add_argument("--zoo", type=Path, help="where the checkpoint set is or goes (default: zoo/PRESET)")
    p.add_argument("--output", type=Path, help=f"where to write (default: {default_output})")
    _add_limits(p)


def _add_limits(p: argparse.ArgumentParser) -> None:
    from .ingestion import Limits

    p.add_argument("--plan-timeout", type=float, default=Limits.plan_seconds,
                   help="seconds allowed to build the task and record its requests (default: %(default)s)")
    p.add_argument("--score-timeout", type=float, default=Limits.score_seconds,
                   help="seconds allowed to score one checkpoint's responses (default: %(default)s)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="tokens per forward pass (default: 4096 on CPU, 32768 on a GPU)")
    p.add_argument("--devices", default=None,
                   help="comma-separated torch devices, one process each, e.g. cuda:0,cuda:1 "
                        "(default: every visible GPU, else the CPU)")
    p.add_argument("--sandbox", choices=["auto", *CHOICES], default="auto",
                   help="isolation of the submission's code: namespaces (bubblewrap), landlock (kernel filters, "
                        "where namespaces are refused), none; auto picks the strongest this host allows "
                        "(default: %(default)s; 'uid' is another name for landlock, see docs/security.md)")
    p.add_argument("--require-sandbox", choices=CHOICES, default="none",
                   help="refuse to run below this isolation level (default: %(default)s)")
    p.add_argument("--memory-limit", type=float, default=8.0,
                   help="GiB of address space each process running submission code may use (default: %(default)s)")


def _zoo_build(args: argparse.Namespace) -> int:
    from .zoo import build, format_summary

    out = args.out or Path("zoo") / args.preset
    summaries = build(args.preset, out, seed=args.seed)
    print(format_summary(summaries, out))
    print(f"manifest: {out / 'manifest.yaml'}  reference data: {out / 'reference'}  sample tasks: {out / 'tasks'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2lmc",
        description="The E2LM competition bundle: evaluate submitted tasks on model checkpoints and score them.",
    )
    parser.add_argument("--version", action="version", version=f"e2lmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "score",
        help="score ingestion results against a phase's reference data (the Codabench scoring step)",
        description="Compute the leaderboard scores of one submission and write scores.json and "
        "detailed_results.html. Defaults are Codabench's scoring-step paths.",
    )
    p.add_argument("--res", type=Path, default=CODABENCH_RES, help="ingestion output (default: %(default)s)")
    p.add_argument("--ref", type=Path, default=CODABENCH_REF, help="the phase's reference data (default: %(default)s)")
    p.add_argument("--output", type=Path, default=CODABENCH_OUTPUT, help="where to write (default: %(default)s)")
    p.add_argument(
        "--allow-partial", action="store_true",
        help="score whatever checkpoints were evaluated instead of failing on incomplete results",
    )
    p.set_defaults(func=_score)

    p = sub.add_parser(
        "score-curves",
        help="signal quality of benchmark curves you measured yourself",
        description="Compute the organizers' signal quality (SQ) per model and its mean for each benchmark "
        "in a curves file (the published JSON layout, a JSON list of records, or a CSV with columns "
        "model, iteration and/or tokens, and one column per benchmark).",
    )
    p.add_argument("file", type=Path, help="curves file (.json or .csv)")
    p.add_argument("--metric", action="append", help="benchmark column to score (repeatable; default: all)")
    p.add_argument(
        "--every", type=int, default=4000,
        help="keep iterations that are multiples of this; 0 keeps all (default: %(default)s)",
    )
    p.add_argument(
        "--max-tokens", type=float, default=206e9,
        help="keep checkpoints with at most this many training tokens; 0 for no limit (default: %(default)g)",
    )
    p.add_argument("--lower-is-better", action="store_true", help="the benchmarks are lower-is-better (negated)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_score_curves)

    p = sub.add_parser(
        "run",
        help="run a submission locally on the embedded checkpoint set: ingestion, scoring, the report",
        description="The participants' one command: build the embedded checkpoint set on first use, run the "
        "submission on every checkpoint, score it, print the leaderboard row and write the HTML report.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    _add_run_options(p, default_output="run_output/SUBMISSION")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "demo",
        help="the main job on the embedded default: the science sample submission through ingestion and scoring",
        description="Build the embedded checkpoint set if missing, run the science sample submission through "
        "ingestion and scoring, print the leaderboard row and write the HTML report.",
    )
    _add_run_options(p, default_output=str(DEMO_OUTPUT))
    p.set_defaults(func=_demo, output=DEMO_OUTPUT)

    p = sub.add_parser(
        "ingest",
        help="run a submitted task on every checkpoint of a manifest (the Codabench prediction step)",
        description="Plan the submitted lm-eval task in a separate process, evaluate its requests on every "
        "checkpoint of the manifest, score them with the task's own code and write ingestion_results.json. "
        "A rerun resumes. Defaults are Codabench's prediction-step paths.",
    )
    p.add_argument("--submission", type=Path, default=CODABENCH_SUBMISSION,
                   help="the submission, a folder or zip (default: %(default)s)")
    p.add_argument("--input-data", type=Path, default=CODABENCH_INPUT_DATA,
                   help="folder holding the checkpoint manifest (default: %(default)s)")
    p.add_argument("--manifest", default="manifest.yaml",
                   help="the manifest's file name in that folder; a bundle has one per phase (default: %(default)s)")
    p.add_argument("--checkpoint-root", type=Path,
                   help="the folder the manifest's relative paths lie under, e.g. /app/data where the organizers "
                        "placed the checkpoints (default: the --input-data folder)")
    p.add_argument("--output", type=Path, default=CODABENCH_OUTPUT, help="where to write (default: %(default)s)")
    _add_limits(p)
    p.set_defaults(func=_ingest)

    p = sub.add_parser(
        "validate",
        help="check a submission without any model: format, keys, data, sample count, prompt lengths, leakage",
        description="What participants run before uploading: builds the task as ingestion would and applies "
        "the competition's rules. Exit code 0 when valid.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--tokenizer", type=Path,
                   help=f"tokenizer folder for prompt lengths (default: {DEFAULT_TOKENIZER} when built)")
    _add_limits(p)
    p.set_defaults(func=_validate)

    p = sub.add_parser(
        "bundle",
        help="build the Codabench competition bundle zip (checked against Codabench's rules)",
        description="Lay out competition.yaml, pages, the three phases' programs, manifests and reference data "
        "and the starting kit, zip them and check the zip against every Codabench bundle rule; an invalid "
        "bundle is not written.",
    )
    p.add_argument("--checkpoints", choices=["zoo", "e2lm"], default="zoo",
                   help="zoo: ship the embedded checkpoint set inside (self-contained, CPU queue); e2lm: manifests "
                   "naming the real tiiuae/dense-* repos (GPU queue) (default: %(default)s)")
    p.add_argument("--out", type=Path, help="the zip to write (default: dist/e2lmc-bundle-CHECKPOINTS.zip)")
    p.add_argument("--preset", choices=["tiny", "default"], default="default",
                   help="zoo: which embedded set (default: %(default)s)")
    p.add_argument("--zoo", type=Path, help="zoo: where the set is or is built (default: zoo/PRESET)")
    p.add_argument("--start", help="move the schedule so that the warm-up phase opens at this date (UTC)")
    p.add_argument("--time-limit", type=int,
                   help="seconds per step (default: 600 for zoo, the free queue's cap; for e2lm, estimated per phase "
                        "from the checkpoints in --data)")
    p.add_argument("--queue", help="e2lm: the vhost (a UUID) of your Codabench queue of GPU workers "
                                   "(Resources -> Queues)")
    p.add_argument("--docker-image", help="the worker image, pushed where the workers can pull it "
                                          "(default: the local tag e2lmc/worker:VERSION, see docker/)")
    p.add_argument("--allow-local-image", action="store_true",
                   help="e2lm: accept the local default image (a rehearsal on a worker that has it)")
    p.add_argument("--require-sandbox", choices=CHOICES, default="landlock",
                   help="the weakest isolation of submission code the ingestion programs accept; a worker that "
                        "cannot provide it fails the submission with one sentence (default: %(default)s; see "
                        "docs/security.md)")
    p.add_argument("--hide-output", action=argparse.BooleanOptionalAction, default=None,
                   help="hide the steps' logs from participants (default: on for e2lm, whose hidden checkpoints a "
                        "submission's own program could read and print; off for zoo; see docs/security.md)")
    p.add_argument("--series", type=Path, help="e2lm: the checkpoint series file (default: the real competition's, "
                                               "e2lmc/data/series/e2lm.yaml)")
    p.add_argument("--web-model", help="e2lm: hub repo of the hidden web-only model, if the series file leaves it out")
    p.add_argument("--data", type=Path,
                   help="e2lm: the folder `e2lmc checkpoints fetch` placed, checked against the series and used to "
                        "size each phase's time limit")
    p.set_defaults(func=_bundle)

    p = sub.add_parser(
        "worker",
        help="run a submission on one phase of a bundle exactly as Codabench's compute worker would",
        description="Prediction step (the phase's ingestion program) then scoring step, with Codabench's "
        "mounts, metadata.yaml command handling, time limit and metadata file; in the bundle's Docker image, "
        "the container created as Codabench's compute worker creates it (docker SDK), or with --no-container "
        "as plain processes over the same layout.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--bundle", type=Path, required=True, help="the competition bundle zip (or its unpacked folder)")
    p.add_argument("--phase", required=True, help="warm-up, development or final")
    p.add_argument("--no-container", action="store_true", help="run the steps as plain processes (no Docker)")
    p.add_argument("--image", help="the Docker image (default: the bundle's docker_image)")
    p.add_argument("--gpus", action="store_true",
                   help="request every GPU through CDI (nvidia.com/gpu=all), as Codabench's USE_GPU=true does")
    p.add_argument("--network", action="store_true",
                   help="leave the containers' network on (Codabench's default unless the worker sets "
                        "COMPETITION_CONTAINER_NETWORK_DISABLED=true; off here by default)")
    p.add_argument("--data", type=Path, help="a host folder seen read-only at /app/data")
    p.add_argument("--workdir", type=Path, help="an empty folder for the steps' layout (default: a new temp folder)")
    p.set_defaults(func=_worker)

    checkpoints = sub.add_parser(
        "checkpoints", help="place a checkpoint series on the workers (fetch) and check a placed folder (verify)",
        description="Download a series' checkpoints and lay them out as the bundle's ingestion reads them.",
    )
    checkpoints_sub = checkpoints.add_subparsers(dest="checkpoints_command", required=True, metavar="COMMAND")
    p = checkpoints_sub.add_parser(
        "fetch", help="download exactly the series' iter_XXXXXXX subfolders and place them under a data folder",
        description="Download the series' checkpoints with huggingface_hub (HF_TOKEN from the environment; "
        "resumable; offline, or with HF_HUB_OFFLINE=1, from the Hugging Face cache alone), place each as "
        "DIR/<model id>/iter_XXXXXXX, verify it and write DIR/manifest.yaml. Copy DIR to $HOST_DIRECTORY/data "
        "on every GPU worker.",
    )
    p.add_argument("--series", type=Path, help="the series file (default: the real competition's)")
    p.add_argument("--web-model", help="hub repo of the hidden web-only model, if the series file leaves it out")
    p.add_argument("--to", type=Path, required=True, help="the data folder to place the checkpoints in")
    p.add_argument("--offline", action="store_true", help="read the Hugging Face cache only, download nothing")
    p.add_argument("--cache-dir", type=Path, help="the Hugging Face cache (default: HF_HOME's)")
    p.add_argument("--workers", type=int, default=8, help="files downloaded in parallel (default: %(default)s)")
    p.set_defaults(func=_checkpoints)
    p = checkpoints_sub.add_parser("verify", help="re-check every checkpoint of a placed data folder",
                                   description="Config, complete safetensors weights and tokenizer of every "
                                   "checkpoint the folder's manifest.yaml lists.")
    p.add_argument("data", type=Path, help="the data folder (e.g. $HOST_DIRECTORY/data)")
    p.set_defaults(func=_checkpoints)

    zoo = sub.add_parser(
        "zoo", help="the embedded checkpoint set (small models trained on a synthetic science world)",
        description="Build the embedded checkpoint set.",
    )
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="COMMAND")
    p = zoo_sub.add_parser(
        "build", help="train the checkpoint set (resumable: finished models are skipped)",
        description="Train seven small Llama models (3 sizes x 2 architectures on the science mixture, the "
        "smallest arch1 on web-only text) and write their checkpoints, the checkpoint manifest, the reference "
        "data and the two sample tasks. 'tiny' takes seconds (tests); 'default' a few minutes.",
    )
    p.add_argument("--preset", choices=["tiny", "default"], default="default", help="(default: %(default)s)")
    p.add_argument("--out", type=Path, help="output directory (default: zoo/PRESET)")
    p.add_argument("--seed", type=int, default=0, help="world, data and initialisation seed (default: %(default)s)")
    p.set_defaults(func=_zoo_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidSubmission as exc:
        print(f"invalid submission: {exc}", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a bug of e2lmc's, not the user's
        import traceback

        traceback.print_exc()
        print(f"internal error in e2lmc {__version__}: this is a bug, please report it with the traceback above",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
