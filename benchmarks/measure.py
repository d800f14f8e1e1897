"""Figures the benchmarks share: matrix-multiply FLOPs of a task's work and the device's peak."""

from __future__ import annotations

import time

import torch


def matmul_flops(paths, work) -> float:
    """Matrix-multiply FLOPs of the tokens that had to be computed, on every checkpoint:
    2 x (weights of every linear layer but the output layer) per token, plus the output
    layer at each scored position (attention scores left out: a lower bound)."""
    from transformers import AutoConfig

    total = 0.0
    scored = sum(len(b.targets) for b in work.batches)
    for _, path in paths:
        c = AutoConfig.from_pretrained(path)
        heads_dim = c.hidden_size // c.num_attention_heads
        attention = c.hidden_size * heads_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
        mlp = 3 * c.hidden_size * c.intermediate_size
        total += 2 * c.num_hidden_layers * (attention + mlp) * work.tokens_needed
        total += 2 * c.hidden_size * c.vocab_size * scored
    return total


def attention_flops(paths, work) -> float:
    """FLOPs of attention's two products over the keys each computed token may see (its
    prefix and its ancestors: causal, as model FLOPs count them; padding left out)."""
    import numpy as np
    from transformers import AutoConfig

    pairs = sum(len(p) * (len(p) + 1) // 2 for p in work.prefixes)
    for batch in work.batches:
        prefix = len(work.prefixes[batch.family]) if batch.family >= 0 else 0
        real = (batch.tokens != 0) | (batch.positions != prefix)
        length = real.shape[1] - np.argmax(real[:, ::-1], axis=1)  # up to the last real slot of each row
        within = np.arange(real.shape[1])[None, :] < length[:, None]
        pairs += int(((batch.positions + 1) * within).sum())
    total = 0.0
    for _, path in paths:
        c = AutoConfig.from_pretrained(path)
        total += 4 * c.num_hidden_layers * c.num_attention_heads * (c.hidden_size // c.num_attention_heads) * pairs
    return total


def matmul_peak(device: str, n: int | None = None, repeats: int = 10) -> float:
    """The best FLOP/s of an n x n matrix multiply in the engine's dtype (n: 8192 on a
    GPU, whose peak small products do not reach; 2048 on the CPU)."""
    n = n or (8192 if device.startswith("cuda") else 2048)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
