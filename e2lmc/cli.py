"""The `e2lmc` command: one subcommand per job; every user error is one sentence, exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import UserError

CODABENCH_RES = Path("/app/input/res")
CODABENCH_REF = Path("/app/input/ref")
CODABENCH_OUTPUT = Path("/app/output")

DEMO_RESULTS = Path("starting_kit/sample_results")
DEMO_REFERENCE = Path("reference_data/sample")
DEMO_OUTPUT = Path("demo_output")


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


def _demo(args: argparse.Namespace) -> int:
    for path in (args.results, args.ref):
        if not path.exists():
            raise UserError(f"{path} does not exist: run the demo from the repository root")
    print(f"Scoring the sample ingestion results in {args.results} against {args.ref} …")
    args.res, args.allow_partial = args.results, False
    _score(args)
    print(f"Open {(args.output / 'detailed_results.html').resolve()} in a browser for the detailed report.")
    return 0


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
        "demo",
        help="run the main job on the embedded default: score the sample results and write the report",
        description="Score the sample ingestion results shipped in the repository, print the leaderboard "
        "row and write the HTML report. Run it from the repository root.",
    )
    p.add_argument("--results", type=Path, default=DEMO_RESULTS, help="sample results (default: %(default)s)")
    p.add_argument("--ref", type=Path, default=DEMO_REFERENCE, help="reference data (default: %(default)s)")
    p.add_argument("--output", type=Path, default=DEMO_OUTPUT, help="where to write (default: %(default)s)")
    p.set_defaults(func=_demo)

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
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
