"""The ingestion program: run a submitted lm-eval task on every checkpoint of a manifest.

Three stages (docs/architecture.md):
1. plan — the preflight (`preflight.py`): a time-limited child process builds the task
   from the submission's files and records every request it would make to a model; the
   rules refuse a task that breaks them before any model is loaded;
2. evaluate — this trusted process (or one per GPU) loads each checkpoint once and
   computes every distinct request (the engine);
3. score — where the task names only lm-eval's own metrics, aggregations and filters, a
   trusted child (`metrics/`) computes the metric from the responses and the plan, and no
   code of the submission sees a response; otherwise the submission's own code does, in a
   fresh child per checkpoint (one alive at a time, each building the task while the engine
   runs), with checkpoints in an order drawn from a secret of this run, released and hidden
   interleaved, so that it cannot keep state across checkpoints or tell which one it scores. A checkpoint is
   scored while the engine computes the next.

Every child runs in the sandbox (`sandboxed/sandbox.py`); the level is logged and recorded.

Results are written after every checkpoint and a rerun of the same task resumes.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from pathlib import Path

from ..engine.checkpoints import resolve
from ..errors import InvalidSubmission, UserError, output_folder
from ..formats.manifest import MANIFEST_FILE, ManifestEntry, read_manifest
from ..formats.results import RESULTS_FILE, CheckpointResult, IngestionResults, read_results, write_results
from ..limits import Limits
from ..progress import progress_bar
from ..sandboxed.isolation import ScoreChild
from ..sandboxed.sandbox import Sandbox, choose_level, private_workdir
from .derived import alignment_samples, chance_level, guessing_spread, lettered
from .preflight import preflight


def ingest(source: Path, input_data: Path, output: Path, limits: Limits = Limits(),
           cache_dir: Path | None = None, manifest_name: str = MANIFEST_FILE,
           checkpoint_root: Path | None = None, local: bool = False) -> IngestionResults:
    """Evaluate the submission at `source` on every checkpoint of the manifest
    `input_data/manifest_name` and write `output/ingestion_results.json` after each one.
    The manifest's relative paths lie under `checkpoint_root` (default: `input_data`),
    such as the checkpoints the organizers placed at /app/data. Hidden checkpoints show no
    progress (its gaps would time their scoring) and, once any was scored, a failure is told
    in one fixed sentence; `local` (the participant's own machine, where nothing is hidden
    from them) shows both."""
    manifest = read_manifest(input_data, manifest_name)
    threading.Thread(target=_import_model_libraries, daemon=True).start()  # while the plan child runs
    root = input_data if checkpoint_root is None else checkpoint_root
    if not root.is_dir():
        raise UserError(f"the checkpoint folder {root} does not exist")
    if checkpoint_root is not None and not any(root.iterdir()):
        raise UserError(f"the checkpoint folder {root} is empty: the checkpoints are not placed on this worker "
                        "(e2lmc checkpoints fetch, docs/organizers.md)")
    choose_level(limits.sandbox)  # a host below the required level is refused before any work
    output_folder(output, "--output")
    order = {e.id: i for i, e in enumerate(manifest.checkpoints)}
    with private_workdir("ingest") as tmp:
        workdir = Path(tmp)
        sandbox = Sandbox(workdir, limits.sandbox)
        print(f"the submission's code runs in the sandbox at level '{sandbox.level}'", file=sys.stderr)
        planned = preflight(source, workdir, limits, sandbox=sandbox)
        submission, plan = planned.submission, planned.plan
        from ..engine.engine import Engine  # torch: loaded by the thread above meanwhile
        from ..engine.runner import CheckpointError

        digest = plan.digest()
        results = _resumed(output, digest, manifest.weights_digest)
        done = {c.id for c in results.checkpoints if c.error is None} if results else set()
        todo = _secret_order([e for e in manifest.checkpoints if e.id not in done])
        custom = plan.custom_functions()
        hidden = {e.id for e in todo if e.role != "released" and not local}  # kept from the logs
        with contextlib.ExitStack() as stack:

            def new_child() -> ScoreChild:
                """The submission's code: a fresh child per checkpoint, one alive at a time (children
                alive together could talk: a lock on a file both can read). Else lm-eval's own
                metric from the plan: one trusted child for every checkpoint."""
                if custom:
                    return stack.enter_context(ScoreChild.custom(submission, sandbox, workdir, limits.score_seconds,
                                                                 limits.plan_seconds))
                return stack.enter_context(ScoreChild.trusted(sandbox, workdir, limits.score_seconds,
                                                              plan.task_metric, limits.plan_seconds))

            child = new_child() if todo else None  # it builds while the engine computes the first checkpoint
            findings = planned.check_prompts(resolve(manifest.checkpoints[0], root, cache_dir),
                                             manifest.tokens_per_rule_token)
            results = results or IngestionResults(
                plan.task_name, plan.task_metric, plan.higher_is_better, plan.n_samples, findings, plan_digest=digest,
                weights_digest=manifest.weights_digest,
            )
            results.sandbox, results.chance_level = sandbox.level, chance_level(plan)
            results.guessing_spread, results.lettered = guessing_spread(plan), lettered(plan)
            results.custom_code = custom
            results.alignment_samples = alignment_samples(plan)
            results.checkpoints = [c for c in results.checkpoints if c.error is None]
            print(f"task '{plan.task_name}': {plan.n_samples:,} samples, {len(plan.requests):,} distinct requests; "
                  f"{len(todo)} of {len(manifest.checkpoints)} checkpoints to evaluate"
                  + (f"; the metric is the submission's own code ({custom[0]}{', …' if len(custom) > 1 else ''}), "
                     "run in a fresh sandboxed process per checkpoint" if custom else
                     "; the metric is computed by lm-eval's own code (trusted)")
                  + (f"; no progress is shown while the {len(hidden)} hidden ones run" if hidden else ""),
                  file=sys.stderr)
            _write_sorted(results, output, order)
            checkpoints = [(e.id, _resolved(e, root, cache_dir, results, output)) for e in todo]
            scoring: tuple[ScoreChild, str, float] | None = None  # (child, checkpoint id, seconds computing it)
            hidden_sent = False  # once a hidden checkpoint's responses went to a child, no failure is told

            def record() -> None:
                assert scoring is not None and results is not None
                scorer, checkpoint, seconds = scoring
                try:
                    values = scorer.result(detail=not hidden_sent)
                except InvalidSubmission as exc:
                    raise InvalidSubmission(f"{exc}; {_kept(results, output, count=not hidden_sent)}") from None
                if custom:
                    scorer.close()  # it saw one checkpoint: it sees no other
                results.checkpoints.append(CheckpointResult(checkpoint, values, seconds))
                results.lower_is_better = sorted(set(results.lower_is_better) | lower_is_better(values))
                _write_sorted(results, output, order)

            start = time.perf_counter()
            try:
                # a checkpoint is scored in a child while the engine computes the next one
                engine = Engine(plan.request_keys(), limits.engine, planned.tokenized)
                bar = progress_bar(engine.run(checkpoints), total=len(todo), desc="checkpoints", unit="ckpt",
                                   disable=bool(hidden))
                for position, responses in bar:
                    if scoring:
                        record()
                    child = child or new_child()  # custom: the previous child is closed, this one starts now
                    child.submit(responses)
                    hidden_sent |= todo[position].id in hidden
                    scoring = child, todo[position].id, round(time.perf_counter() - start, 3)
                    child = None if custom else child
                    start = time.perf_counter()
                if scoring:
                    record()
            except CheckpointError as exc:
                if scoring:
                    record()
                raise UserError(f"checkpoint {todo[exc.position].id} failed to load twice ({exc.problem}); "
                                f"{_kept(results, output)}") from None
    results.complete = True
    _write_sorted(results, output, order)
    return results


def lower_is_better(values: dict[str, float]) -> set[str]:
    """The metric keys of `values` that lm-eval's registry says improve downward (a
    perplexity); unknown names count as upward."""
    import lm_eval.api.metrics  # noqa: F401 - fills the registry as it is imported
    from lm_eval.api.registry import HIGHER_IS_BETTER_REGISTRY

    return {key for key in values if HIGHER_IS_BETTER_REGISTRY.get(key.split(",")[0], None) is False}


def _import_model_libraries() -> None:
    """torch and the parts of transformers the prompt checks and the engine load on
    first use (seconds of imports), loaded while the plan child builds the task on another core."""
    try:
        import transformers
        from lm_eval.models import utils, utils_hf  # noqa: F401

        from ..engine import runner  # noqa: F401 - torch

        for name in ("AutoConfig", "AutoTokenizer", "AutoModelForCausalLM", "LlamaForCausalLM", "DynamicCache"):
            getattr(transformers, name)
    except Exception:  # noqa: BLE001 - only a head start: the stage that needs a module imports it and reports
        pass


def _secret_order(entries: list[ManifestEntry]) -> list[ManifestEntry]:
    """Every checkpoint, released and hidden interleaved, in an order drawn from a secret of
    this run that is written nowhere: neither a score child's position in the run nor the
    time it starts tells which checkpoint, or which group, its responses come from (an
    order seeded by anything a child can compute, such as the plan's digest, or released
    checkpoints first, would tell it)."""
    order = list(entries)
    random.SystemRandom().shuffle(order)
    return order


def _write_sorted(results: IngestionResults, output: Path, order: dict[str, int]) -> None:
    """Results in manifest order, whatever order they were evaluated in (same files every run)."""
    results.checkpoints.sort(key=lambda c: order.get(c.id, len(order)))
    try:
        write_results(results, output)
    except OSError as exc:
        raise UserError(f"cannot write {output / RESULTS_FILE}: {exc.strerror}") from None


def _resumed(output: Path, digest: str, weights_digest: str) -> IngestionResults | None:
    """Earlier results of the same task (same plan digest) on the same checkpoints (same
    weights digest) in `output`, if any."""
    try:
        results = read_results(output)
    except UserError:
        return None
    if results.plan_digest != digest:
        print("earlier results in the output folder are for another task: starting over", file=sys.stderr)
        return None
    if results.weights_digest != weights_digest:
        print("earlier results in the output folder are for other checkpoints (another build of the set): "
              "starting over", file=sys.stderr)
        return None
    return results


def _resolved(entry: ManifestEntry, root: Path, cache_dir: Path | None, results: IngestionResults,
              output: Path) -> Path:
    try:
        return resolve(entry, root, cache_dir)
    except UserError as exc:
        raise UserError(f"{exc}; {_kept(results, output)}") from None


def _kept(results: IngestionResults, output: Path, count: bool = True) -> str:
    """Where the results so far are; with `count`, how many (not where hidden checkpoints
    were scored: it would tell the failing one's position in the secret order)."""
    done = f"stopped after {len(results.checkpoints)} checkpoints, whose" if count else "stopped; the"
    return f"{done} results are kept in {output / RESULTS_FILE} (a rerun resumes from there)"
