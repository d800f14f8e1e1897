"""The ingestion engine against lm-eval's own Hugging Face backend, in one run.

    python benchmarks/engine_vs_lm_eval.py [--zoo zoo/default] [--checkpoints 10] [--device cpu]
                                           [--task FOLDER | --five-shot 1000]

Same task (default: the five-shot multiple-choice cloze sample; --five-shot N: N questions
on the world's facts, five examples drawn per question as lm-eval's default sampler does),
same checkpoints (spread over every model of the embedded default set, built first if missing):
(a) this project's ingestion, end to end: plan, evaluate, score every checkpoint;
(b) lm-eval's `simple_evaluate` with its HF backend, once per checkpoint, fixed batch size.
It prints the time ratio b/a, the largest log-likelihood difference between the engine and
lm-eval, whether every checkpoint's metric is identical, the tokens the engine computed per
token that had to be computed (distinct prefixes), and its achieved FLOP/s against the
measured matrix-multiply peak of the device. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from measure import matmul_flops, matmul_peak  # benchmarks/measure.py

from e2lmc.embedded.zoo import build
from e2lmc.engine.engine import Engine
from e2lmc.formats.manifest import CheckpointManifest, ManifestEntry, read_manifest, write_manifest
from e2lmc.ingestion.preflight import preflight
from e2lmc.ingestion.program import ingest
from e2lmc.limits import EngineSettings, Limits

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "starting_kit" / "sample_submissions" / "e2lmc_mmluvar_template"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", type=Path, default=REPO / "zoo" / "default", help="the embedded default set")
    parser.add_argument("--task", type=lambda p: Path(p).resolve(), default=TASK,
                        help="a submission folder (default: five-shot sample)")
    parser.add_argument("--five-shot", type=int, metavar="N", help="a generated five-shot task of N samples instead")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="lm-eval's fixed batch size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (float32 on CPU, bfloat16 on GPU)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    if not (args.zoo / "manifest.yaml").is_file():
        print(f"building the embedded default set in {args.zoo} (first use only) …", file=sys.stderr)
        build("default", args.zoo)
    entries = read_manifest(args.zoo).checkpoints
    step = max(1, len(entries) // args.checkpoints)
    chosen = entries[::step][:args.checkpoints]
    paths = [(e.id, (args.zoo / e.path).resolve()) for e in chosen]

    with tempfile.TemporaryDirectory(prefix="e2lmc-bench-") as tmp:
        if args.five_shot:
            args.task = five_shot_task(Path(tmp) / "e2lmc_five_shot", args.five_shot)
        input_data = Path(tmp) / "input_data"
        write_manifest(CheckpointManifest([ManifestEntry(cid, path=str(p)) for cid, p in paths]), input_data)
        limits = Limits(engine=EngineSettings(devices=(args.device,)))

        start = time.perf_counter()
        ours = ingest(args.task, input_data, Path(tmp) / "res", limits)
        ingestion_seconds = time.perf_counter() - start

        plan = preflight(args.task, Path(tmp) / "plan", limits).plan
        requests = [(r.kind, r.arguments) for r in plan.requests]
        engine = Engine(requests, limits.engine)
        start = time.perf_counter()
        responses = dict(engine.run(paths))
        engine_seconds = time.perf_counter() - start

        start = time.perf_counter()
        theirs = [lm_eval_run(args.task, plan.task_name, path, args.batch_size, args.device) for _, path in paths]
        lm_eval_seconds = time.perf_counter() - start

    figures = compare(ours, theirs, paths, requests, responses, plan.task_metric)
    assert engine.runner is not None
    work = next(iter(engine.runner.works.values()))
    flops = matmul_flops(paths, work)
    peak = matmul_peak(args.device)
    figures.update({
        "task": plan.task_name, "samples": plan.n_samples, "requests": len(requests), "checkpoints": len(paths),
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "lm_eval_seconds": round(lm_eval_seconds, 2), "ingestion_seconds": round(ingestion_seconds, 2),
        "ratio": round(lm_eval_seconds / ingestion_seconds, 2),
        "engine_seconds": round(engine_seconds, 2), "engine_ratio": round(lm_eval_seconds / engine_seconds, 2),
        "tokens_needed": work.tokens_needed, "tokens_computed": work.tokens_computed,
        "tokens_ratio": round(work.tokens_computed / work.tokens_needed, 3),
        "one_by_one_tokens": work.tokens_one_by_one, "achieved_flops": flops / engine_seconds, "peak_flops": peak,
    })
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def five_shot_task(folder: Path, n: int) -> Path:
    """N cloze questions on the world's facts (each fact's question with several draws of
    distractors), five examples per question drawn from a separate pool by lm-eval's
    default sampler: contexts that differ from question to question, as in real tasks."""
    from e2lmc.embedded.world import load_world, science_samples

    world = load_world()
    pool = science_samples(world, 0)[-40:]  # the examples' facts are not asked: no answer in its own prompt
    asked = {r["question"] for r in pool}
    rows = [s for seed in range(1, 2 + n // len(world.facts) + 1) for s in science_samples(world, seed)
            if s["question"] not in asked]
    folder.mkdir(parents=True)
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
    (folder / f"{folder.name}.yaml").write_text(
        f"task: {folder.name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    dev: dev.jsonl\n"
        "    test: test.jsonl\ntest_split: test\nfewshot_split: dev\nnum_fewshot: 5\noutput_type: multiple_choice\n"
        "doc_to_text: 'Question: {{question}}\\nAnswer:'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc_norm\n")
    (folder / "metadata.yaml").write_text(f"task_name: {folder.name}\ntask_metric: acc_norm,none\n")
    return folder


def lm_eval_run(task: Path, task_name: str, checkpoint: Path, batch_size: int, device: str) -> dict:
    """lm-eval's simple_evaluate on one checkpoint: its metrics and each request's log-likelihood."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    with contextlib.chdir(task):
        out = simple_evaluate(model="hf", model_args=f"pretrained={checkpoint},dtype={dtype}", tasks=[task_name],
                              task_manager=TaskManager(include_path=str(task), include_defaults=False),
                              batch_size=batch_size, device=device, log_samples=True, bootstrap_iters=0,
                              verbosity="ERROR")
    lls = {}
    for sample in out["samples"][task_name]:
        for arguments, response in zip(sample["arguments"], sample["resps"], strict=True):
            lls[json.dumps(list(arguments), sort_keys=True, ensure_ascii=False, default=str)] = response[0][0]
    return {"metrics": out["results"][task_name], "lls": lls}


def compare(ours, theirs, paths, requests, responses, metric) -> dict:
    by_id = {c.id: c.metrics[metric] for c in ours.checkpoints}
    identical = all(by_id[cid] == run["metrics"][metric] for (cid, _), run in zip(paths, theirs, strict=True))
    max_diff = 0.0
    for position, run in enumerate(theirs):
        for (kind, arguments), response in zip(requests, responses[position], strict=True):
            if kind == "loglikelihood":
                max_diff = max(max_diff, abs(response[0] - run["lls"][arguments]))
    return {"metric": metric, "metrics_identical": identical, "max_loglikelihood_diff": max_diff}


def report(f: dict) -> None:
    print(f"\n{f['task']}: {f['samples']:,} samples, {f['requests']:,} requests, {f['checkpoints']} checkpoints, "
          f"{f['device']} ({f['torch_threads']} threads)")
    print(f"(b) lm-eval simple_evaluate, HF backend, per checkpoint: {f['lm_eval_seconds']:8.2f} s")
    print(f"(a) e2lmc ingestion (plan + evaluate + score):           {f['ingestion_seconds']:8.2f} s")
    print(f"    ratio b/a: {f['ratio']:.2f}   (engine's evaluate stage alone: {f['engine_seconds']:.2f} s, "
          f"ratio {f['engine_ratio']:.2f})")
    print(f"max |log-likelihood difference|: {f['max_loglikelihood_diff']:.2e}   "
          f"metric {f['metric']} identical on every checkpoint: {f['metrics_identical']}")
    print(f"tokens computed / needed: {f['tokens_computed']:,} / {f['tokens_needed']:,} = {f['tokens_ratio']:.3f}   "
          f"(request by request: {f['one_by_one_tokens']:,})")
    print(f"achieved {f['achieved_flops'] / 1e9:.2f} GFLOP/s against a measured matmul peak of "
          f"{f['peak_flops'] / 1e9:.1f} GFLOP/s ({100 * f['achieved_flops'] / f['peak_flops']:.1f}%)")


if __name__ == "__main__":
    sys.exit(main())
