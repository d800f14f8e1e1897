"""Which kernel makes two processors train different embedded sets: a fingerprint per operation.

With the kernels pinned as `zoo build` pins them (e2lmc/embedded/kernels.py), this script runs
every kind of operation the training uses on fixed inputs (matrix products of the default
models' shapes, attention forward and backward, the norms and activations, the loss, the
embedding's gradient, AdamW plain and fused, gradient clipping, then whole training steps of
a small model as the build takes them) and prints the SHA-256 of each result. Run it on two
machines and compare: the first operation whose digest differs is where the processors part.
It found why an Intel Xeon and an AMD EPYC trained two sets: plain AdamW's square root, which
ATen hands to MKL's vector maths (docs/zoo.md, *Pinned kernels and the organizers' set*).
`--branches` runs it under MKL's code branches COMPATIBLE and AUTO (the processor's own) on
one machine and names the operations whose result depends on MKL's branch: of the build's,
only the matrix products (attention and whole training steps through them) may, and they
are pinned; `exp`, `sqrt` and plain AdamW do, which the build does not call.

    python scripts/kernel_fingerprint.py --json here.json
    python scripts/kernel_fingerprint.py --compare here.json there.json
    python scripts/kernel_fingerprint.py --branches
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from e2lmc.embedded.kernels import cpu_flags, kernels_pinned, pinned_environment


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def operations() -> dict[str, Callable[[], str]]:
    """name -> a function computing the operation on fixed inputs and returning its digest."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from e2lmc.embedded import zoo

    def rand(*shape: int, seed: int = 0) -> torch.Tensor:
        """Inputs from numpy's generator: torch's own normal sampler is vector code too."""
        return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape, dtype=np.float32))

    def ids(*shape: int) -> torch.Tensor:
        return torch.from_numpy(np.random.default_rng(1).integers(0, 1024, shape))

    def mm(m: int, k: int, n: int) -> Callable[[], str]:
        return lambda: digest(rand(m, k) @ rand(k, n, seed=1), rand(m, k).t().contiguous().t() @ rand(k, n, seed=1))

    def attention(length: int) -> Callable[[], str]:
        def run() -> str:
            q, k, v = (rand(1, 4, length, 18, seed=s).requires_grad_() for s in range(3))
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(rand(*out.shape, seed=3))
            return digest(out, q.grad, k.grad, v.grad)
        return run

    def loss() -> str:
        logits = rand(1024, 1024).requires_grad_()
        value = F.cross_entropy(logits, ids(1024))
        value.backward()
        return digest(value, logits.grad)

    def embedding() -> str:
        weight = rand(1024, 72).requires_grad_()
        F.embedding(ids(1024), weight).backward(rand(1024, 72, seed=2))
        return digest(weight.grad)

    def adamw(make: Callable[[list[torch.Tensor]], torch.optim.Optimizer]) -> Callable[[], str]:
        def run() -> str:
            params = [rand(72, 192).requires_grad_(), rand(1024, 72, seed=1).requires_grad_()]
            for p, s in zip(params, (2, 3)):
                p.grad = rand(*p.shape, seed=s)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer = make(params)
            for _ in range(3):
                optimizer.step()
            return digest(*params)
        return run

    def model():
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(vocab_size=1024, hidden_size=72, intermediate_size=192, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                                            tie_word_embeddings=True, initializer_range=0.1))

    def training(steps: int) -> Callable[[], str]:
        def run() -> str:
            llama = model()
            with torch.no_grad():  # weights from numpy's generator: the training alone is fingerprinted
                for i, p in enumerate(llama.parameters()):
                    p.copy_(0.1 * rand(*p.shape, seed=100 + i))
            optimizer = zoo.adamw(llama.parameters(), 2e-2)
            for batch in ids(steps, 8, 128):
                zoo.training_step(llama, optimizer, batch)
            return digest(*llama.parameters())
        return run

    x = rand(1024, 72)
    return {
        "inputs (numpy's generator)": lambda: digest(x),
        "torch.randn (torch's normal sampler)": lambda: digest(torch.randn(1024, 72, generator=torch.Generator())),
        "a model's initial weights (torch.manual_seed)": lambda: digest(*model().parameters()),
        "mm 128x40 @ 40x108": mm(128, 40, 108),
        "mm 1024x72 @ 72x192": mm(1024, 72, 192),
        "mm 1024x192 @ 192x72": mm(1024, 192, 72),
        "mm 1024x96 @ 96x1024 (output layer)": mm(1024, 96, 1024),
        "attention 128 causal, forward and backward": attention(128),
        "attention 1024 causal, forward and backward": attention(1024),
        "softmax, log_softmax": lambda: digest(torch.softmax(x, -1), torch.log_softmax(x, -1)),
        "exp, rsqrt, silu": lambda: digest(torch.exp(x), torch.rsqrt(x.abs() + 1), F.silu(x)),
        "rms norm": lambda: digest(x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)),
        "sum, norm (reductions)": lambda: digest(x.sum(), torch.linalg.vector_norm(x), x.sum(0)),
        "cross entropy, forward and backward": loss,
        "embedding gradient": embedding,
        "sqrt (ATen hands it to MKL's vector maths)": lambda: digest(torch.sqrt(x.abs())),
        "gradient clipping, 3 AdamW steps": adamw(
            lambda params: torch.optim.AdamW(params, lr=2e-2, betas=(0.9, 0.95), weight_decay=0.1)),
        "gradient clipping, 3 fused AdamW steps (the build's)": adamw(lambda params: zoo.adamw(params, 2e-2)),
        "1 training step (2 x 72 Llama, the build's)": training(1),
        "10 training steps (2 x 72 Llama, the build's)": training(10),
    }


def fingerprint() -> dict:
    import torch

    flags = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in cpu_flags())
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    processor = next((x.partition(":")[2].strip() for x in cpuinfo if x.startswith("model name")), platform.machine())
    return {"machine": {"processor": processor, "flags": flags, "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "python": platform.python_version()},
            "digests": {name: op() for name, op in operations().items()}}


def compare(a: dict, b: dict) -> list[str]:
    """A line per operation of either: the same in both, different, or only in one."""
    names = [*a, *(name for name in b if name not in a)]

    def status(name: str) -> str:
        return "only B" if name not in a else "only A" if name not in b else "same" if a[name] == b[name] else "DIFFERS"
    return [f"{status(name):>7}  {name}" for name in names]


def by_branch() -> None:
    """The fingerprint under MKL's COMPATIBLE branch (the build's) and the processor's own."""
    prints = {}
    with tempfile.TemporaryDirectory() as tmp:
        for branch in ("COMPATIBLE", "AUTO"):
            path = Path(tmp) / f"{branch}.json"
            subprocess.run([sys.executable, __file__, "--json", str(path)], check=True, stdout=subprocess.DEVNULL,
                           env={**pinned_environment(dict(os.environ)), "MKL_CBWR": branch})
            prints[branch] = json.loads(path.read_text())
    print(f"MKL_CBWR=COMPATIBLE (the build's) against AUTO on {prints['AUTO']['machine']}:")
    print("\n".join(compare(prints["COMPATIBLE"]["digests"], prints["AUTO"]["digests"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the fingerprint here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="compare two fingerprints")
    parser.add_argument("--branches", action="store_true", help="which operations depend on MKL's code branch")
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(path.read_text()) for path in args.compare)
        print(f"A: {a['machine']}\nB: {b['machine']}")
        print("\n".join(compare(a["digests"], b["digests"])))
        return
    if args.branches:
        return by_branch()
    if not kernels_pinned():  # before torch starts: its kernels are chosen at the first use
        os.execve(sys.executable, [sys.executable, *sys.argv], pinned_environment(dict(os.environ)))
    result = fingerprint()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
