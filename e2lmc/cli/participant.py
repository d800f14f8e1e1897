"""The participant's commands: demo, run, validate, diagnose, align, score-curves.

Each handler turns its options into a call of the participant's package (`participant/`,
`scoring.curves`) and prints what comes back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..formats.alignment import AlignmentSettings
from ..organizer.phases import PHASE_NAMES
from ..participant.run import CHECKPOINT_SETS, DEMO_OUTPUT, EMBEDDED, RUN_OUTPUT
from ..scoring.judge import default_cache
from .options import add_command, add_run_options, add_sandbox_options, run_limits, sandbox_limits


def _demo(args: argparse.Namespace) -> int:
    from ..participant.run import demo

    return demo(run_limits(args), args.preset, args.zoo, args.output or DEMO_OUTPUT)


def _run(args: argparse.Namespace) -> int:
    from ..participant.run import run

    return run(args.submission, run_limits(args), args.checkpoints, args.preset, args.zoo, args.output, args.series,
               args.offline, args.cache_dir, args.phase)


def _validate(args: argparse.Namespace) -> int:
    from ..participant.validate import validate

    return validate(args.submission, sandbox_limits(args), args.checkpoint, args.allow_truncation, args.zoo)


def _diagnose(args: argparse.Namespace) -> int:
    """Per-sample signal of a submission on the released checkpoints of the embedded set."""
    from ..embedded.sets import ensure_built
    from ..participant.diagnose import diagnose_submission
    from ..participant.diagnosis_page import summary, write_outputs

    if args.keep_signal is not None:
        from ..participant.keep_signal import check_new_folder

        check_new_folder(args.keep_signal)  # before minutes of work, not after
    zoo, _ = ensure_built(args.preset, args.zoo)
    output = args.output or RUN_OUTPUT / args.submission.stem / "diagnosis"
    print(f"Diagnosis: {args.submission} on the checkpoints in {zoo} …")
    diagnosis = diagnose_submission(args.submission, zoo, run_limits(args))
    print(summary(diagnosis))
    written = write_outputs(diagnosis, output)
    print("wrote " + " and ".join(str(p) for p in written))
    if args.keep_signal is not None:
        from ..participant.keep_signal import write_kept

        kept = int((~diagnosis.signal.noisy).sum())
        files = write_kept(args.submission, diagnosis.plan, ~diagnosis.signal.noisy, args.keep_signal, run_limits(args))
        print(f"wrote the task without its noisy samples to {args.keep_signal} ({', '.join(p.name for p in files)} "
              f"rewritten; planned again, it asks exactly the {kept:,} kept samples): e2lmc run {args.keep_signal}")
    return 0


def _align(args: argparse.Namespace) -> int:
    from ..participant.align import align

    settings = AlignmentSettings(enabled=True, endpoint=args.endpoint, model=args.model, samples=args.samples,
                                 votes=args.votes, threshold=args.threshold, timeout_seconds=args.timeout,
                                 max_retries=args.retries, requests_per_second=args.rate)
    return align(args.submission, settings, sandbox_limits(args), args.prompt, None if args.no_cache else args.cache)


def _score_curves(args: argparse.Namespace) -> int:
    from ..embedded.sets import reference_of_results
    from ..scoring.curves import format_table, is_results_file, score_file, scores_json

    reference = args.reference
    if reference is None and args.every is None and is_results_file(args.file):
        reference = reference_of_results(args.file)
        if reference is not None:
            print(f"reference: {reference} (the built set these results were computed on, by its weights digest)",
                  file=sys.stderr)
    scores = score_file(args.file, args.metric, args.every, args.max_tokens, reference, args.lower_is_better)
    print(scores_json(scores) if args.json else format_table(scores))
    return 0


def add_participant_commands(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "demo",
        help="the main job on the embedded default: the science sample submission through ingestion and scoring",
        description="Build the embedded checkpoint set if missing, run the science sample submission through "
        "ingestion and scoring, print the leaderboard row and write the HTML report.",
        examples=["e2lmc demo", "e2lmc demo --preset tiny"],
    )
    add_run_options(p, default_output=str(DEMO_OUTPUT))
    p.set_defaults(func=_demo)

    p = add_command(
        sub, "run",
        help="run a submission locally on the embedded checkpoint set (or the real released checkpoints): "
        "ingestion, scoring, the report",
        description="The participants' one command: build the embedded checkpoint set on first use, run the "
        "submission on every checkpoint, score it, print the leaderboard row and write the HTML report. With "
        "--checkpoints e2lm-released: the real series' released checkpoints instead, signal quality only.",
        examples=["e2lmc run starting_kit/sample_submissions/e2lmc_science_cloze",
                  "e2lmc run my_task.zip --output /tmp/my_run",
                  "e2lmc run my_task/ --preset tiny            # seconds: a smoke test on the tiny set",
                  "e2lmc run my_task/ --phase warm-up          # the checkpoints and scores of the warm-up phase",
                  "e2lmc run my_task/ --checkpoints e2lm-released   # the real released checkpoints (GB of "
                  "downloads; a GPU helps)"],
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    add_run_options(p, default_output=f"{RUN_OUTPUT}/SUBMISSION")
    p.add_argument("--checkpoints", choices=CHECKPOINT_SETS, default=EMBEDDED,
                   help="embedded: the embedded set of --preset; e2lm-released: the real series' released "
                        "checkpoints (tiiuae/dense-*, the ones SQ uses) through the Hugging Face cache, on a GPU "
                        "when there is one; SQ only (default: %(default)s)")
    p.add_argument("--phase", choices=PHASE_NAMES,
                   help="score on the checkpoints this competition phase takes from the embedded set, as the "
                        "organizers' embedded-set bundle does (default: every checkpoint of the set)")
    p.add_argument("--series", type=Path,
                   help="with e2lm-released: the series file (default: the real competition's)")
    p.add_argument("--cache-dir", type=Path, help="with e2lm-released: the Hugging Face cache (default: HF_HOME's)")
    p.add_argument("--offline", action="store_true",
                   help="with e2lm-released: read the Hugging Face cache only, download nothing")
    p.set_defaults(func=_run)

    p = add_command(
        sub, "validate",
        help="check a submission without any model: format, keys, data, sample count, prompt lengths, leakage",
        description="What participants run before uploading: builds the task as ingestion would and applies "
        "the competition's rules. Exit code 0 when valid; 1 when invalid, or when no tokenizer was at hand to "
        "count the prompts (not checked).",
        examples=["e2lmc validate my_task/",
                  "e2lmc validate my_task.zip --tokenizer zoo/default/tokenizer",
                  "e2lmc validate my_task/ --checkpoint /data/dense-500m-arch1/iter_0002000  # a real checkpoint's"],
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--checkpoint", "--tokenizer", dest="checkpoint", type=Path,
                   help="a checkpoint folder: its tokenizer counts prompt lengths, its context decides which requests "
                        "would be truncated (a tokenizer folder counts lengths only) (default: the first checkpoint "
                        "of the embedded default set, when built)")
    p.add_argument("--zoo", type=Path,
                   help="a built embedded checkpoint set whose first checkpoint counts the prompts, as run and "
                        "diagnose use it (default: zoo/default, when built; validate never builds one)")
    p.add_argument("--allow-truncation", action="store_true",
                   help="accept a task some of whose requests exceed the checkpoints' context (cut from the left)")
    add_sandbox_options(p)
    p.set_defaults(func=_validate)

    p = add_command(
        sub, "diagnose",
        help="which samples of a submission carry signal, and what it would score without the others",
        description="Evaluate the submission on the embedded set and, per sample, the slope of its confidence margin "
        "(log p(right answer) - best log p(wrong answer)) on each model's released checkpoints: how many models "
        "learn it, which samples add noise; then the score, SQ, RC, CS and validity with and without them on every "
        "checkpoint, and whether the answers' lengths decide the web-only model's margins. Multiple-choice and "
        "log-likelihood tasks; writes samples.csv and diagnosis.html, and with --keep-signal the task without "
        "its noisy samples.",
        examples=["e2lmc diagnose my_task/",
                  "e2lmc diagnose my_task/ --keep-signal my_task_kept/   # then: e2lmc run my_task_kept/",
                  "e2lmc diagnose starting_kit/sample_submissions/e2lmc_science_cloze --output /tmp/diagnosis"],
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    add_run_options(p, default_output=f"{RUN_OUTPUT}/SUBMISSION/diagnosis")
    p.add_argument("--keep-signal", type=Path, metavar="DIR",
                   help="write the submission without its noisy samples into DIR (a new folder): the rows of its data "
                        "file dropped, then planned again to check it asks exactly the kept samples")
    p.set_defaults(func=_diagnose)

    p = add_command(
        sub, "align",
        help="ask an LLM judge whether a submission's questions are scientific (any OpenAI-compatible server)",
        description="Draw the samples the pipeline would judge (seeded by the task), format them as question-answer "
        "pairs and ask the judge, through the openai client, whether each is about science; print the "
        "acceptance rate and the rejected samples. The key comes from OPENAI_API_KEY (a local server needs "
        "none); verdicts are cached. Exit code 0, 1 below --threshold, 2 when the judge could not be asked.",
        examples=["e2lmc align my_task/                        # OpenAI's gpt-4o as the organizers "
                  "(OPENAI_API_KEY set)",
                  "e2lmc align my_task/ --endpoint http://gpu-worker:8000/v1 --model Qwen/Qwen2.5-72B-Instruct "
                  "--votes 5"],
    )
    p.add_argument("submission", type=Path, help="the submission, a folder or zip")
    p.add_argument("--endpoint", help="an OpenAI-compatible base URL, e.g. http://localhost:8000/v1 "
                                      "(default: OPENAI_BASE_URL, else OpenAI's)")
    p.add_argument("--model", default=AlignmentSettings.model, help="the judge model (default: %(default)s)")
    p.add_argument("--samples", type=int, default=AlignmentSettings.samples,
                   help="samples judged (default: %(default)s)")
    p.add_argument("--votes", type=int, default=AlignmentSettings.votes,
                   help="asks per sample; accepted when every one accepts (default: %(default)s)")
    p.add_argument("--threshold", type=float, help="exit 1 when the acceptance rate is below this")
    p.add_argument("--prompt", type=Path, help="the judge's instructions (default: e2lmc/data/judge_prompt.yaml)")
    p.add_argument("--cache", type=Path, default=default_cache(), help="verdicts already given (default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="ask again, and keep nothing")
    p.add_argument("--rate", type=float, default=AlignmentSettings.requests_per_second,
                   help="requests per second at most (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=AlignmentSettings.timeout_seconds,
                   help="seconds per request (default: %(default)s)")
    p.add_argument("--retries", type=int, default=AlignmentSettings.max_retries,
                   help="retries of a request on connection errors, 429 and 5xx (default: %(default)s)")
    add_sandbox_options(p)
    p.set_defaults(func=_align)

    p = add_command(
        sub, "score-curves",
        help="signal quality of benchmark curves you measured yourself",
        description="Compute the organizers' signal quality (SQ) per model and its mean for each benchmark "
        "in a curves file (the published JSON layout, a JSON list of records, or a CSV with columns "
        "model, iteration and/or tokens, and one column per benchmark).",
        examples=["e2lmc score-curves starting_kit/data/e2lm_published_curves.json --metric mmluvar",
                  "e2lmc score-curves my_curves.csv --every 0",
                  "e2lmc score-curves run_output/my_task/res/ingestion_results.json --reference "
                  "zoo/default/reference"],
    )
    p.add_argument("file", type=Path, help="curves file (.json or .csv) or an ingestion_results.json")
    p.add_argument("--metric", action="append", help="benchmark column to score (repeatable; default: all)")
    p.add_argument("--every", type=int, default=None,
                   help="keep iterations that are multiples of this; 0 keeps all (default: 4000; every checkpoint of "
                        "an ingestion_results.json)")
    p.add_argument("--max-tokens", type=float, default=206e9,
                   help="keep checkpoints with at most this many training tokens; 0 for no limit "
                        "(default: %(default)g)")
    p.add_argument("--reference", type=Path,
                   help="with an ingestion_results.json: the reference data folder of the set it was evaluated on "
                        "(e.g. zoo/default/reference); its SQ selection picks the checkpoints, as the scorer does "
                        "(default: the built set in zoo/ whose weights digest the results carry)")
    p.add_argument("--lower-is-better", action="store_true", help="the benchmarks are lower-is-better (negated)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_score_curves)
