"""The engine on the real checkpoints' shapes, for the bundle's time-limit estimate.

    python benchmarks/real_shapes.py [--shape 1b] [--device cuda] [--checkpoints 3] [--samples 2000] [--json FILE]

The real `tiiuae/dense-1b-arch1` shape (DESIGN §3: 32 layers, hidden 1280, MLP 6144, keys
and values 256 wide, vocabulary 65,536, untied embeddings: 1,048,659,200 parameters), or
shapes of about the 500m and 3b sizes, with random weights, saved as bf16 safetensors
checkpoints like the real ones; a synthetic five-shot multiple-choice task (4 choices, contexts of about --context-tokens tokens) through
the engine, as the ingestion would run it. Prints, for `e2lmc/estimate.py`'s defaults:
seconds to read a checkpoint from disk (from the page cache, which holds what was just
written, where it cannot be emptied: then an upper bound on the rate), engine seconds per checkpoint, tokens computed per
second, achieved FLOP/s and its share of the measured matrix-multiply peak (MFU).
Needs a tokenizer folder (default: the embedded set's, zoo/default/tokenizer).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from e2lmc.engine import Engine, Settings
from measure import matmul_flops, matmul_peak  # benchmarks/measure.py

REPO = Path(__file__).resolve().parents[1]
COMMON = dict(vocab_size=65536, tie_word_embeddings=False, hidden_act="silu", max_position_embeddings=4096,
              eos_token_id=11, pad_token_id=11)
SHAPES = {  # 1b: the real dense-1b-arch1; 500m and 3b: shapes of about the real sizes (their configs are not public)
    "500m": dict(hidden_size=1024, num_hidden_layers=24, intermediate_size=4096, num_attention_heads=16,
                 num_key_value_heads=4, **COMMON),
    "1b": dict(hidden_size=1280, num_hidden_layers=32, intermediate_size=6144, num_attention_heads=20,
               num_key_value_heads=4, **COMMON),
    "3b": dict(hidden_size=2560, num_hidden_layers=32, intermediate_size=10240, num_attention_heads=20,
               num_key_value_heads=4, **COMMON),
}


def make_checkpoints(root: Path, tokenizer: Path, n: int, shape: str) -> tuple[list[tuple[str, Path]], int]:
    config = LlamaConfig(**SHAPES[shape], torch_dtype="bfloat16")
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    assert shape != "1b" or parameters == 1_048_659_200, parameters  # DESIGN §3's count
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
    """Whether the kernel's page cache could be emptied (root, a kernel that allows it), so
    that the read below comes from the disk."""
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def five_shot_requests(samples: int, context_words: int, seed: int = 0) -> list[tuple[str, str]]:
    """A multiple-choice task's requests: per sample a five-shot context (its own draw of
    five examples from a pool of 50, as lm-eval samples few-shot examples per document)
    and four answers."""
    rng = random.Random(seed)
    words = ["atom", "cell", "energy", "force", "gene", "heat", "ion", "light", "mass", "orbit", "plant",
             "proton", "rock", "star", "water", "wave", "the", "of", "is", "a", "which", "what", "answer"]
    pool = [" ".join(rng.choice(words) for _ in range(context_words // 5)) for _ in range(50)]
    requests = []
    for s in range(samples):
        question = " ".join(rng.choice(words) for _ in range(20))
        shots = "\n\n".join(rng.sample(pool, 5))
        context = f"{shots}\nQuestion {s}: {question}\nAnswer:"
        for _ in range(4):
            answer = " " + " ".join(rng.choice(words) for _ in range(3))
            requests.append(("loglikelihood", json.dumps([context, answer], sort_keys=True, ensure_ascii=False)))
    return requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=list(SHAPES), default="1b")
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--context-words", type=int, default=400, help="words of the shared five-shot context")
    parser.add_argument("--tokenizer", type=Path, default=REPO / "zoo" / "default" / "tokenizer")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    device = "cuda:0" if args.device == "cuda" else args.device
    with tempfile.TemporaryDirectory(prefix="e2lmc-shapes-") as tmp:
        start = time.perf_counter()
        paths, parameters = make_checkpoints(Path(tmp), args.tokenizer, args.checkpoints, args.shape)
        print(f"wrote {len(paths)} checkpoints in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        size = sum(f.stat().st_size for f in paths[0][1].glob("*.safetensors"))
        cold = drop_page_cache()
        start = time.perf_counter()
        for file in paths[-1][1].glob("*.safetensors"):
            file.read_bytes()
        read_seconds = time.perf_counter() - start
        requests = five_shot_requests(args.samples, args.context_words)
        engine = Engine(requests, Settings(devices=(device,)))
        start = time.perf_counter()
        for _ in engine.run(paths):
            pass
        engine_seconds = time.perf_counter() - start
        assert engine.runner is not None
        work = next(iter(engine.runner.works.values()))
        flops = matmul_flops(paths, work)
    peak = matmul_peak(device)
    figures = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "shape": args.shape, "parameters": parameters, "checkpoint_bytes": size,
        "read_seconds": round(read_seconds, 3), "read_from_disk": cold, "read_bytes_per_second": size / read_seconds,
        "samples": args.samples, "requests": len(requests), "checkpoints": len(paths),
        "tokens_needed": work.tokens_needed, "tokens_computed": work.tokens_computed,
        "engine_seconds": round(engine_seconds, 2), "seconds_per_checkpoint": round(engine_seconds / len(paths), 2),
        "tokens_per_second": work.tokens_computed * len(paths) / engine_seconds,
        "achieved_flops": flops / engine_seconds, "peak_flops": peak, "mfu": flops / engine_seconds / peak,
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
