"""The engine on the real checkpoints' shapes, against lm-eval's HF backend, in one run.

    python benchmarks/real_shapes.py [--shape 1b] [--device cuda] [--checkpoints 2] [--samples 1000]
                                     [--prompt-tokens 2040] [--lm-eval-samples 200] [--json FILE]

The real `tiiuae/dense-1b-arch1` shape (its published config: 32 layers, hidden 1280, MLP 6144, keys
and values 256 wide, vocabulary 65,536, untied embeddings, 2,048 tokens of context:
1,048,659,200 parameters), shapes of about the 500m and 3b sizes, and `cpu`, a scaled-down
shape whose matrix products are large enough to be compute-bound on a CPU; random
weights, saved as safetensors checkpoints like the real ones. The workload is a five-shot
multiple-choice task as lm-eval builds one (each sample draws its own five examples from a
pool of 50; four answers; contexts of about --prompt-tokens tokens).

Prints where the engine's time went (planning, loading, forward passes), tokens per
second, memory, the model FLOP utilisation (MFU: linear layers, output layer at scored
positions and causal attention, against the device's measured bf16/fp32 matmul peak) of
the passes alone and of each checkpoint end to end; then lm-eval's HF backend
(`HFLM.loglikelihood`, the same requests of the first --lm-eval-samples samples, the same
checkpoints) against the engine on that subset: time ratio and log-likelihood agreement.
vLLM is compared when it is installed. Needs a tokenizer folder (default: the embedded
set's, zoo/default/tokenizer, built by `e2lmc demo`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from measure import attention_flops, matmul_flops, matmul_peak  # benchmarks/measure.py
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from e2lmc.engine.engine import Engine
from e2lmc.limits import EngineSettings

REPO = Path(__file__).resolve().parents[1]
COMMON = dict(vocab_size=65536, tie_word_embeddings=False, hidden_act="silu", max_position_embeddings=2048,
              eos_token_id=11, pad_token_id=11)
SHAPES = {  # 1b: the real dense-1b-arch1; 500m and 3b: about the real sizes (their configs are not public)
    "500m": dict(hidden_size=1024, num_hidden_layers=24, intermediate_size=4096, num_attention_heads=16,
                 num_key_value_heads=4, **COMMON),
    "1b": dict(hidden_size=1280, num_hidden_layers=32, intermediate_size=6144, num_attention_heads=20,
               num_key_value_heads=4, **COMMON),
    "3b": dict(hidden_size=2560, num_hidden_layers=32, intermediate_size=10240, num_attention_heads=20,
               num_key_value_heads=4, **COMMON),
    "cpu": dict(hidden_size=768, num_hidden_layers=4, intermediate_size=3072, num_attention_heads=12,
                num_key_value_heads=4, **COMMON),
}
WORDS = ["atom", "cell", "energy", "force", "gene", "heat", "ion", "light", "mass", "orbit", "plant", "proton",
         "rock", "star", "water", "wave", "the", "of", "is", "a", "which", "what", "answer"]


def make_checkpoints(root: Path, tokenizer: Path, n: int, shape: str, dtype: torch.dtype) -> tuple[list, int]:
    config = LlamaConfig(**SHAPES[shape])
    model = LlamaForCausalLM(config).to(dtype)
    parameters = sum(p.numel() for p in model.parameters())
    assert shape != "1b" or parameters == 1_048_659_200, parameters  # the real 1B arch1 model's count
    tok = PreTrainedTokenizerFast.from_pretrained(tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    paths = []
    for i in range(n):  # the same weights in every folder: a copy is faster than saving again
        path = root / f"iter_{(i + 1) * 4000:07d}"
        if paths:
            shutil.copytree(paths[0][1], path)
        else:
            model.save_pretrained(path)
            tok.save_pretrained(path)
        paths.append((path.name, path))
    return paths, parameters


def drop_page_cache() -> bool:
    """Whether the kernel's page cache could be emptied (root, a kernel that allows it)."""
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def five_shot_pairs(tokenizer: PreTrainedTokenizerFast, samples: int, prompt_tokens: int,
                    seed: int = 0) -> list[tuple[str, str]]:
    """(context, answer) of each request: per sample five examples drawn from a pool of 50
    (as lm-eval's default few-shot sampler does per document), a question, four answers."""
    rng = random.Random(seed)

    def text(tokens: int) -> str:
        words: list[str] = []
        while len(tokenizer(" ".join(words))["input_ids"]) < tokens:
            words += [rng.choice(WORDS) for _ in range(max(1, (tokens - len(words)) // 8))]
        while len(tokenizer(" ".join(words))["input_ids"]) > tokens:
            words.pop()
        return " ".join(words)

    pool = [text((prompt_tokens - 40) // 5) for _ in range(50)]
    pairs = []
    for s in range(samples):
        context = "\n\n".join(rng.sample(pool, 5)) + f"\nQuestion {s}: {text(20)}\nAnswer:"
        assert len(tokenizer(context)["input_ids"]) <= prompt_tokens, "prompt longer than --prompt-tokens"
        pairs += [(context, " " + " ".join(rng.choice(WORDS) for _ in range(2))) for _ in range(4)]
    return pairs


def run_engine(pairs: list, paths: list, device: str, token_budget: int | None) -> dict:
    requests = [("loglikelihood", json.dumps(list(p), sort_keys=True, ensure_ascii=False)) for p in pairs]
    engine = Engine(requests, EngineSettings(token_budget=token_budget, devices=(device,)))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    responses = [r for _, r in engine.run(paths)]
    seconds = time.perf_counter() - start
    assert engine.runner is not None
    work = next(iter(engine.runner.works.values()))
    return {"seconds": seconds, "stages": dict(engine.runner.seconds), "work": work, "responses": responses,
            "memory": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None}


def run_hflm(pairs: list, paths: list, device: str, batch_size: int, softmax_dtype: str | None = None
             ) -> tuple[float, list]:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    start, out = time.perf_counter(), []
    for _, path in paths:
        lm = HFLM(pretrained=str(path), dtype=dtype, batch_size=batch_size, device=device, softmax_dtype=softmax_dtype)
        out.append(lm.loglikelihood(instances, disable_tqdm=True))
        del lm
    return time.perf_counter() - start, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=list(SHAPES), default="1b")
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--prompt-tokens", type=int, default=2040, help="context tokens of each request")
    parser.add_argument("--token-budget", type=int, help="the engine's tokens per forward pass (default: its own)")
    parser.add_argument("--lm-eval-samples", type=int, default=200, help="0: skip lm-eval's HF backend")
    parser.add_argument("--lm-eval-batch-size", type=int, default=16)
    parser.add_argument("--profile", type=Path, help="also profile the engine on one checkpoint (torch profiler): "
                                                    "the operations that took the time, written to this file")
    parser.add_argument("--tokenizer", type=Path, default=REPO / "zoo" / "default" / "tokenizer")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    device = "cuda:0" if args.device == "cuda" else args.device
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    pairs = five_shot_pairs(tokenizer, args.samples, args.prompt_tokens)
    figures: dict = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                     "torch_threads": torch.get_num_threads(), "shape": args.shape, "samples": args.samples,
                     "requests": len(pairs), "checkpoints": args.checkpoints}
    with tempfile.TemporaryDirectory(prefix="e2lmc-shapes-") as tmp:
        paths, figures["parameters"] = make_checkpoints(Path(tmp), args.tokenizer, args.checkpoints, args.shape, dtype)
        size = sum(f.stat().st_size for f in paths[0][1].glob("*.safetensors"))
        figures["read_from_disk"] = drop_page_cache()
        start = time.perf_counter()
        for file in paths[-1][1].glob("*.safetensors"):
            file.read_bytes()
        figures.update(checkpoint_bytes=size, read_bytes_per_second=size / (time.perf_counter() - start))

        ours = run_engine(pairs, paths, device, args.token_budget)
        work, stages, peak = ours["work"], ours["stages"], matmul_peak(device)
        flops = matmul_flops(paths, work) + attention_flops(paths, work)
        figures.update({
            "longest_sequence_tokens": max(int(b.positions.max()) + 1 for b in work.batches),
            "tokens_needed": work.tokens_needed, "tokens_computed": work.tokens_computed,
            "tokens_ratio": round(work.tokens_computed / work.tokens_needed, 3),
            "engine_seconds": round(ours["seconds"], 2), "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
            "seconds_per_checkpoint": round((ours["seconds"] - stages["plan"]) / len(paths), 2),
            "tokens_per_second_passes": round(work.tokens_computed * len(paths) / stages["passes"]),
            "peak_flops": peak, "mfu_passes": round(flops / stages["passes"] / peak, 3),
            "mfu_per_checkpoint": round(flops / (ours["seconds"] - stages["plan"]) / peak, 3),
            "peak_memory_bytes": ours["memory"],
        })
        print(json.dumps(figures, indent=1), flush=True)
        if args.profile:
            args.profile.write_text(profile_engine(pairs, paths[:1], device, args.token_budget))
        if args.lm_eval_samples:
            figures.update(compare_lm_eval(pairs[:4 * args.lm_eval_samples], paths, device, args))
        figures["vllm"] = "installed, not compared yet" if importlib.util.find_spec("vllm") else "not installed"
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def profile_engine(pairs: list, paths: list, device: str, token_budget: int | None) -> str:
    """The engine's operations on one checkpoint (after a warm-up run), by time on the device."""
    from torch.profiler import ProfilerActivity, profile

    run_engine(pairs, paths, device, token_budget)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        run_engine(pairs, paths, device, token_budget)
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=30)


def compare_lm_eval(pairs: list, paths: list, device: str, args: argparse.Namespace) -> dict:
    """lm-eval's HF backend and the engine on the same requests and checkpoints."""
    ours = run_engine(pairs, paths, device, args.token_budget)
    theirs_seconds, theirs = run_hflm(pairs, paths, device, args.lm_eval_batch_size)
    # lm-eval's default log-softmax runs in the model's dtype (bf16: steps of 1/16 at -11); with
    # float32, as the engine computes it, the remaining differences are the passes' own
    _, precise = run_hflm(pairs[:80], paths[:1], device, args.lm_eval_batch_size, softmax_dtype="float32")
    pairs_compared = [(a, b) for ckpt_a, ckpt_b in zip(ours["responses"], theirs, strict=True)
                      for a, b in zip(ckpt_a, ckpt_b, strict=True)]
    return {"lm_eval_requests": len(pairs), "lm_eval_seconds": round(theirs_seconds, 2),
            "engine_seconds_same_requests": round(ours["seconds"], 2),
            "ratio_vs_lm_eval": round(theirs_seconds / ours["seconds"], 2),
            "max_loglikelihood_diff": max(abs(a[0] - b[0]) for a, b in pairs_compared),
            "max_loglikelihood_diff_float32_softmax": max(abs(a[0] - b[0]) for a, b in zip(
                ours["responses"][0][:80], precise[0], strict=True)),
            "greedy_agreement": sum(a[1] == b[1] for a, b in pairs_compared) / len(pairs_compared)}


if __name__ == "__main__":
    sys.exit(main())
