"""The `e2lmc` command: one subcommand per job. Exit codes: 0 ok, 1 the submission is
invalid, 2 bad input or refused (one sentence each), 3 an internal error (a traceback,
and a line asking to report it)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import InvalidSubmission, UserError
from ..cli.options import add_limits, add_run_options, add_sandbox_options, limits
from ..cli.organizer import add_organizer_commands, embedded_set
from ..cli.participant import add_participant_commands

CODABENCH_SUBMISSION = Path("/app/ingested_program")
CODABENCH_INPUT_DATA = Path("/app/input_data")
CODABENCH_RES = Path("/app/input/res")
CODABENCH_REF = Path("/app/input/ref")
CODABENCH_OUTPUT = Path("/app/output")

EXAMPLES = {  # command -> the examples its --help ends with
    "": """e2lmc demo                                  # the science sample on the embedded set
  e2lmc validate my_task/                     # check a submission without any model
  e2lmc run my_task/                          # ingestion + scoring + report, locally
  e2lmc diagnose my_task/                     # which samples carry signal (released checkpoints)
  e2lmc COMMAND --help                        # a command's options and examples""",
    "score": "e2lmc score --res run_output/my_task/res --ref zoo/default/reference --output /tmp/scores",
    "score-curves": """e2lmc score-curves starting_kit/data/e2lm_published_curves.json --metric mmluvar
  e2lmc score-curves my_curves.csv --every 0
  e2lmc score-curves run_output/my_task/res/ingestion_results.json --reference zoo/default/reference""",
    "run": """e2lmc run starting_kit/sample_submissions/e2lmc_science_cloze
  e2lmc run my_task.zip --output /tmp/my_run
  e2lmc run my_task/ --preset tiny            # seconds: a smoke test on the tiny set
  e2lmc run my_task/ --checkpoints e2lm-released   # the real released checkpoints (GB of downloads; a GPU helps)""",
    "demo": "e2lmc demo\n  e2lmc demo --preset tiny",
    "align": """e2lmc align my_task/                        # OpenAI's gpt-4o as the organizers (OPENAI_API_KEY set)
  e2lmc align my_task/ --endpoint http://gpu-worker:8000/v1 --model Qwen/Qwen2.5-72B-Instruct --votes 5""",
    "diagnose": """e2lmc diagnose my_task/
  e2lmc diagnose starting_kit/sample_submissions/e2lmc_science_cloze --output /tmp/diagnosis""",
    "ingest": """e2lmc ingest --submission my_task/ --input-data zoo/default --output /tmp/res
  e2lmc ingest                                # Codabench's paths (/app/ingested_program, /app/input_data, …)""",
    "validate": """e2lmc validate my_task/
  e2lmc validate my_task.zip --tokenizer zoo/default/tokenizer
  e2lmc validate my_task/ --checkpoint /data/dense-500m-arch1/iter_0002000  # a real checkpoint's""",
    "bundle": """e2lmc bundle --checkpoints zoo --out bundle.zip
  e2lmc bundle --checkpoints e2lm --data /srv/e2lm-data --queue VHOST --docker-image REGISTRY/e2lmc-worker:TAG""",
    "worker": """e2lmc worker my_task/ --bundle bundle.zip --phase development --no-container
  e2lmc worker my_task/ --bundle bundle.zip --phase final --data /srv/e2lm-data --gpus""",
    "estimate": "e2lmc estimate my_task/\n  e2lmc estimate my_task/ --data /srv/e2lm-data --device h200",
    "checkpoints fetch": """e2lmc checkpoints fetch --to /srv/e2lm-data
  e2lmc checkpoints fetch --to /srv/e2lm-data --offline""",
    "checkpoints verify": "e2lmc checkpoints verify /srv/e2lm-data",
    "zoo build": "e2lmc zoo build\n  e2lmc zoo build --preset tiny --out /tmp/tiny",
}


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual; keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _with_examples(parser: argparse.ArgumentParser, command: str = "") -> None:
    """Every parser and subparser: our formatter, and its examples as the help's epilog."""
    parser.formatter_class = _HelpFormatter
    if command in EXAMPLES:
        parser.epilog = "examples:\n  " + EXAMPLES[command]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _with_examples(child, f"{command} {name}".strip())


DEMO_OUTPUT = Path("demo_output")
WEB_PLACEHOLDER = "e2lm-organizers/web-only-model-not-public"
DEFAULT_ZOO = Path("zoo/default")


def _score(args: argparse.Namespace) -> int:
    from ..scoring.report import write_report  # matplotlib is only needed here
    from ..scoring.program import REPORT_FILE, SCORES_FILE, format_row, run_scoring

    evaluation = run_scoring(args.res, args.ref, args.output, allow_partial=args.allow_partial)
    write_report(evaluation, args.output / REPORT_FILE)
    print(format_row(evaluation.leaderboard, evaluation.reference.sq_only))
    if evaluation.reference.sq_only:
        print("signal quality only: ranking consistency, scientific compliance and the global score need the "
              "hidden checkpoints, which only the competition's scoring sees")
    for problem in evaluation.verdict.problems:
        print(f"invalid submission: {problem}.")
    print(f"wrote {args.output / SCORES_FILE} and {args.output / REPORT_FILE}")
    return 0


def _released_set(args: argparse.Namespace) -> tuple[Path, float]:
    """The real series' released checkpoints that SQ uses, placed from the Hugging Face
    cache (downloaded when online and missing) under --zoo, with their reference data."""
    from ..formats.files import write_reference
    from ..organizer.placement import describe, fetch
    from ..formats.series import E2LM_SERIES, read_series, released_reference

    series_file = args.series or E2LM_SERIES
    series = read_series(series_file, web_repo=WEB_PLACEHOLDER)  # the web-only model has no released checkpoint
    reference = released_reference(series)
    wanted = {m.checkpoint_id(c) for m in reference.models for c in m.checkpoints}
    folder = args.zoo or Path("zoo") / "e2lm-released"
    print(f"Placing the {len(wanted)} released checkpoints signal quality uses in {folder} (from the Hugging Face "
          "cache; downloaded where missing and online) …")
    start = time.perf_counter()
    sizes = fetch(series, Path(series_file).parent, folder, offline=True if args.offline else None,
                  cache_dir=args.cache_dir, keep=wanted.__contains__)
    write_reference(reference, folder / "reference")
    print(f"placed {describe(sizes)}")
    return folder, time.perf_counter() - start


def _run(args: argparse.Namespace) -> int:
    """Ingestion then scoring on the embedded checkpoint set (built on first use) or on
    the real series' released checkpoints."""
    from ..ingestion.program import ingest

    if args.checkpoints == "e2lm-released":
        zoo, place_seconds = _released_set(args)
        timings = [("place the released checkpoints", place_seconds)]
    else:
        zoo, build_seconds = embedded_set(args)
        timings = [] if build_seconds is None else [("build the checkpoint set", build_seconds)]
    output = args.output or Path("run_output") / (args.submission.stem
                                                  + ("-e2lm-released" if args.checkpoints == "e2lm-released" else ""))
    print(f"Ingestion: running {args.submission} on every checkpoint in {zoo} …")
    start = time.perf_counter()
    ingest(args.submission, zoo, output / "res", limits(args))
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
    from ..embedded.world import SCIENCE_TASK

    args.zoo = args.zoo or Path("zoo") / args.preset
    args.submission = args.zoo / "tasks" / SCIENCE_TASK  # written by the build, like starting_kit's copy
    print(f"Demo: the sample submission {SCIENCE_TASK} through ingestion and scoring.")
    return _run(args)


def _ingest(args: argparse.Namespace) -> int:
    from ..ingestion.program import ingest

    start = time.perf_counter()
    results = ingest(args.submission, args.input_data, args.output, limits(args), manifest_name=args.manifest,
                     checkpoint_root=args.checkpoint_root)
    print(f"evaluated task '{results.task_name}' ({results.task_metric}) on {len(results.checkpoints)} checkpoints "
          f"in {time.perf_counter() - start:.0f} s; wrote {args.output / 'ingestion_results.json'}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ..ingestion.program import check_prompts, plan_submission, truncation_warning
    from ..sandboxed.sandbox import private_workdir
    from ..scoring.formulas import ValidationRules

    checkpoint = args.checkpoint or _default_checkpoint()
    if args.checkpoint and not (args.checkpoint / "tokenizer_config.json").is_file() \
            and not (args.checkpoint / "tokenizer.json").is_file():
        raise UserError(f"--checkpoint {args.checkpoint} is not a checkpoint or tokenizer folder (no tokenizer files "
                        f"there{'' if args.checkpoint.is_dir() else ': it does not exist'}; relative paths start in "
                        f"{Path.cwd()})")
    with private_workdir("validate") as tmp:
        _, plan = plan_submission(args.submission, Path(tmp), limits(args))
    kinds = sorted({r.kind for r in plan.requests})
    print(f"task '{plan.task_name}', metric {plan.task_metric} ({'higher' if plan.higher_is_better else 'lower'} "
          f"is better): {plan.n_samples:,} samples, {len(plan.requests):,} distinct requests ({', '.join(kinds)})")
    truncated = False
    if checkpoint is None:
        print("prompt lengths not checked: pass --checkpoint DIR (or build the default checkpoint set first)")
    else:
        validation, _ = check_prompts(plan, checkpoint, _tokens_per_rule_token(checkpoint))
        print(f"longest prompt: {validation.rule_prompt_tokens:,} tokens (sample {validation.longest_prompt_sample}, "
              f"tokenizer of {checkpoint}){validation.how_counted()}")
        if validation.context_tokens is None:
            print(f"truncation not checked: {checkpoint} is a tokenizer, not a model folder with a context length")
        else:
            warning = truncation_warning(validation, len(plan.requests))
            truncated = warning is not None and not args.allow_truncation
            print(warning + ("" if args.allow_truncation else " (--allow-truncation accepts it)") if warning else
                  f"every request fits the checkpoints' context of {validation.context_tokens:,} tokens")
    fraction = len(plan.leakage) / plan.n_samples
    limit = ValidationRules().max_leakage_fraction
    print(f"leakage: {len(plan.leakage)} samples ({fraction:.1%}) show their gold answer in their own prompt"
          + (f" — above the {limit:.0%} allowed: the submission would be invalid" if fraction > limit else ""))
    for leak in plan.leakage[:5]:
        print(f"  task '{leak.task}' sample {leak.sample}: '{leak.answer}' in …{leak.excerpt}…")
    valid = fraction <= limit and not truncated
    print(("valid" + ("" if checkpoint else " (prompt lengths not checked)")) if valid
          else "invalid" if fraction > limit else "truncated: not what the task was designed to be")
    return 0 if valid else 1


def _tokens_per_rule_token(checkpoint: Path) -> float:
    """The prompt rule's scale of the set the checkpoint belongs to (its manifest two
    folders up, as in the embedded set, or one up for the set's `tokenizer/`); 1 elsewhere:
    a real checkpoint's own tokenizer."""
    from ..formats.files import MANIFEST_FILE, read_manifest

    for folder in checkpoint.resolve().parents[:2]:
        if (folder / MANIFEST_FILE).is_file():
            return read_manifest(folder).tokens_per_rule_token
    return 1.0


def _default_checkpoint() -> Path | None:
    """The embedded default set's first checkpoint (its tokenizer and context), when built."""
    from ..formats.files import MANIFEST_FILE, read_manifest

    if not (DEFAULT_ZOO / MANIFEST_FILE).is_file():
        return None
    first = read_manifest(DEFAULT_ZOO).checkpoints[0]
    return DEFAULT_ZOO / first.path if first.path else None


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
        "run",
        help="run a submission locally on the embedded checkpoint set (or the real released checkpoints): "
        "ingestion, scoring, the report",
        description="The participants' one command: build the embedded checkpoint set on first use, run the "
        "submission on every checkpoint, score it, print the leaderboard row and write the HTML report. With "
        "--checkpoints e2lm-released: the real series' released checkpoints instead, signal quality only.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    add_run_options(p, default_output="run_output/SUBMISSION")
    p.add_argument("--checkpoints", choices=["embedded", "e2lm-released"], default="embedded",
                   help="embedded: the embedded set of --preset; e2lm-released: the real series' released "
                        "checkpoints (tiiuae/dense-*, the ones SQ uses) through the Hugging Face cache, on a GPU "
                        "when there is one; SQ only (default: %(default)s)")
    p.add_argument("--series", type=Path,
                   help="with e2lm-released: the series file (default: the real competition's)")
    p.add_argument("--cache-dir", type=Path, help="with e2lm-released: the Hugging Face cache (default: HF_HOME's)")
    p.add_argument("--offline", action="store_true",
                   help="with e2lm-released: read the Hugging Face cache only, download nothing")
    p.set_defaults(func=_run)

    p = sub.add_parser(
        "demo",
        help="the main job on the embedded default: the science sample submission through ingestion and scoring",
        description="Build the embedded checkpoint set if missing, run the science sample submission through "
        "ingestion and scoring, print the leaderboard row and write the HTML report.",
    )
    add_run_options(p, default_output=str(DEMO_OUTPUT))
    p.set_defaults(func=_demo, output=DEMO_OUTPUT, checkpoints="embedded")

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
    add_limits(p)
    p.set_defaults(func=_ingest)

    p = sub.add_parser(
        "validate",
        help="check a submission without any model: format, keys, data, sample count, prompt lengths, leakage",
        description="What participants run before uploading: builds the task as ingestion would and applies "
        "the competition's rules. Exit code 0 when valid.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--checkpoint", "--tokenizer", dest="checkpoint", type=Path,
                   help="a checkpoint folder: its tokenizer counts prompt lengths, its context decides which requests "
                        "would be truncated (a tokenizer folder counts lengths only) (default: the first checkpoint "
                        f"of {DEFAULT_ZOO} when built)")
    p.add_argument("--allow-truncation", action="store_true",
                   help="accept a task some of whose requests exceed the checkpoints' context (cut from the left)")
    add_sandbox_options(p)
    p.set_defaults(func=_validate)

    add_participant_commands(sub)
    add_organizer_commands(sub)
    _with_examples(parser)
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
