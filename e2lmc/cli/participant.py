"""The participant's commands after a run: curves they measured, per-sample signal, and
the scientific-alignment judge (`e2lmc score-curves`, `e2lmc diagnose`, `e2lmc align`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli.options import add_run_options, add_sandbox_options, limits
from ..errors import UserError
from ..cli.organizer import embedded_set


def _score_curves(args: argparse.Namespace) -> int:
    import json

    from ..scoring.curves import format_table, is_results_file, read_curves, score_curves
    from ..formats.files import read_reference

    results_file = is_results_file(args.file)
    if args.reference and not results_file:
        raise UserError(f"--reference applies to an ingestion_results.json, and {args.file} is not one")
    reference = read_reference(args.reference) if args.reference else None
    every, max_tokens = args.every, args.max_tokens
    if reference is not None or (results_file and every is None):
        every, max_tokens = 0, 0  # the reference's own selection, or every checkpoint of the results
        print(f"checkpoints: {'the SQ selection of ' + str(args.reference) if reference else 'all evaluated ones'} "
              "(values oriented higher-is-better)", file=sys.stderr)
    scores = score_curves(
        read_curves(args.file, reference),
        benchmarks=args.metric,
        every_iterations=4000 if every is None else every or None,
        max_tokens=None if max_tokens <= 0 else max_tokens,
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


def _diagnose(args: argparse.Namespace) -> int:
    """Per-sample signal of a submission on the released checkpoints of the embedded set."""
    from ..participant.diagnose import diagnose_submission, summary, write_outputs

    zoo, _ = embedded_set(args)
    output = args.output or Path("run_output") / args.submission.stem / "diagnosis"
    print(f"Diagnosis: {args.submission} on the released checkpoints in {zoo} …")
    plan, diagnosis, n_checkpoints = diagnose_submission(args.submission, zoo, limits(args))
    print(summary(diagnosis, plan.task_metric, n_checkpoints))
    written = write_outputs(diagnosis, plan, n_checkpoints, output)
    print("wrote " + " and ".join(str(p) for p in written))
    return 0


def _align(args: argparse.Namespace) -> int:
    """The judge on the samples the pipeline would draw: their acceptance rate, the rejected ones."""
    from ..ingestion.program import plan_submission
    from ..scoring.judge import AlignmentSettings, judge_samples, read_prompt
    from ..sandboxed.samples import alignment_samples
    from ..sandboxed.sandbox import private_workdir

    settings = AlignmentSettings(enabled=True, endpoint=args.endpoint, model=args.model, samples=args.samples,
                                 votes=args.votes, threshold=args.threshold, timeout_seconds=args.timeout,
                                 max_retries=args.retries, requests_per_second=args.rate)
    settings.check("e2lmc align", key="")
    prompt = read_prompt(args.prompt) if args.prompt else read_prompt()
    with private_workdir("align") as tmp:
        _, plan = plan_submission(args.submission, Path(tmp), limits(args))
    result = judge_samples(alignment_samples(plan), settings, prompt, cache=None if args.no_cache else args.cache,
                           progress=True)
    if result.rate is None:
        print(result.problem, file=sys.stderr)
        return 2
    print(f"alignment: {result.accepted} of {result.judged} samples accepted as scientific = {result.rate:.0%} "
          f"({args.model}, {args.votes} vote{'s' if args.votes > 1 else ''} each; {result.requests} requests, the "
          "rest from the cache)" + (f"; {result.malformed} unusable answers left out" if result.malformed else ""))
    for sample in result.rejected:
        lines = sample.text.splitlines() or [""]
        question = next((line for line in reversed(lines) if line.startswith("Question:")), lines[0])  # the last
        print(f"  rejected: task '{sample.task}' sample {sample.doc_id}: {question[:150]}")
    below = args.threshold is not None and result.rate < args.threshold
    if below:
        print(f"below the threshold of {args.threshold:.0%}: the submission would be invalid")
    return 1 if below else 0


def _cache_file() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "e2lmc" / "judge_verdicts.json"


def add_participant_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score-curves",
        help="signal quality of benchmark curves you measured yourself",
        description="Compute the organizers' signal quality (SQ) per model and its mean for each benchmark "
        "in a curves file (the published JSON layout, a JSON list of records, or a CSV with columns "
        "model, iteration and/or tokens, and one column per benchmark).",
    )
    p.add_argument("file", type=Path, help="curves file (.json or .csv) or an ingestion_results.json")
    p.add_argument("--metric", action="append", help="benchmark column to score (repeatable; default: all)")
    p.add_argument(
        "--every", type=int, default=None,
        help="keep iterations that are multiples of this; 0 keeps all (default: 4000; every checkpoint of an "
        "ingestion_results.json)",
    )
    p.add_argument(
        "--max-tokens", type=float, default=206e9,
        help="keep checkpoints with at most this many training tokens; 0 for no limit (default: %(default)g)",
    )
    p.add_argument("--reference", type=Path,
                   help="with an ingestion_results.json: the reference data folder of the set it was evaluated on "
                        "(e.g. zoo/default/reference); its SQ selection picks the checkpoints, as the scorer does")
    p.add_argument("--lower-is-better", action="store_true", help="the benchmarks are lower-is-better (negated)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_score_curves)

    p = sub.add_parser(
        "diagnose",
        help="which samples of a submission carry signal, on the released checkpoints of the embedded set",
        description="Evaluate the submission on the released checkpoints only and, per sample, the slope of its "
        "confidence margin (log p(right answer) - best log p(wrong answer)) on each model: how many models "
        "learn it, which samples add noise, and the SQ the task would get without them. Multiple-choice and "
        "log-likelihood tasks; writes samples.csv and diagnosis.html.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    add_run_options(p, default_output="run_output/SUBMISSION/diagnosis")
    p.set_defaults(func=_diagnose)

    p = sub.add_parser(
        "align",
        help="ask an LLM judge whether a submission's questions are scientific (any OpenAI-compatible server)",
        description="Draw the samples the pipeline would judge (seeded by the task), format them as question-answer "
        "pairs and ask the judge, through the openai client, whether each is about science; print the "
        "acceptance rate and the rejected samples. The key comes from OPENAI_API_KEY (a local server needs "
        "none); verdicts are cached. Exit code 0, 1 below --threshold, 2 when the judge could not be asked.",
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--endpoint", help="an OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                      "(default: OPENAI_BASE_URL, else OpenAI's)")
    p.add_argument("--model", default="gpt-4o-2024-08-06", help="the judge model (default: %(default)s)")
    p.add_argument("--samples", type=int, default=50, help="samples judged (default: %(default)s)")
    p.add_argument("--votes", type=int, default=1,
                   help="asks per sample; accepted when every one accepts (default: %(default)s)")
    p.add_argument("--threshold", type=float, help="exit 1 when the acceptance rate is below this")
    p.add_argument("--prompt", type=Path, help="the judge's instructions (default: e2lmc/data/judge_prompt.yaml)")
    p.add_argument("--cache", type=Path, default=_cache_file(), help="verdicts already given (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="ask again, and keep nothing")
    p.add_argument("--rate", type=float, default=5.0, help="requests per second at most (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    p.add_argument("--retries", type=int, default=4,
                   help="retries of a request on connection errors, 429 and 5xx (default: %(default)s)")
    add_sandbox_options(p)
    p.set_defaults(func=_align)
