"""The embedded checkpoint set: small Llama models really trained on the synthetic world.

`e2lmc zoo build --preset tiny|default` mirrors the real competition's roles: three
sizes x two architectures (arch1 deeper and narrower, arch2 shallower and wider, about
the same parameter count) trained on the science mixture, plus the smallest arch1 on
web-only text. Checkpoints are ordinary Hugging Face model directories in the real
repos' layout, `<model>/iter_XXXXXXX/`; the first ~20% of training is *released*, the
rest *hidden*, the last step *final*. The build also writes the set's series file (it is
described as the real competition's is, `formats/series.py`), the checkpoint manifest, the
reference data and the two sample tasks.

The training loop is deliberately plain (nanoGPT-style): AdamW (fused), linear warm-up then
cosine decay, fixed seeds, each model reading the same token stream once in order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ..errors import UserError
from ..formats.manifest import write_manifest
from ..formats.reference import write_reference
from ..formats.series import (
    EMBEDDED_PHASE,
    SERIES_FILE,
    Iterations,
    Series,
    SeriesModel,
    Tokens,
    checkpoint_name,
    embedded_description,
    placed_manifest,
    series_reference,
    write_series,
)
from ..progress import progress_bar
from .kernels import OPTIMIZER, describe_kernels, kernels_pinned, run_pinned, weights_digest
from .world import Mixture, documents, load_world, tokenizer_texts, write_sample_tasks

RELEASED_SHARE = 0.2  # the first 20% of training is released, like 200B of 1T tokens
# Tiny models initialised at HF's default std 0.02 learn facts only after a long
# plateau, later than the released window; std 0.1 makes the science signal rise
# from the first released checkpoints (measured: docs/zoo.md).
INIT_STD = 0.1
# Adam's best learning rate falls as models get wider (the muP rule: lr ~ 1/width);
# at one rate for all, the large models learned no better than the medium ones.
LR_REFERENCE_WIDTH = 48
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class ModelSpec:
    size: str  # small, medium, large
    architecture: str  # arch1 (deep, narrow) or arch2 (shallow, wide)
    mixture: Mixture
    hidden: int
    layers: int
    intermediate: int
    heads: int

    @property
    def lr_scale(self) -> float:
        """The preset's peak learning rate is for width <= 48; wider models get less
        (by the square root of the width ratio: the full ratio left the widest model
        under-trained, measured in docs/zoo.md)."""
        return min(1.0, (LR_REFERENCE_WIDTH / self.hidden) ** 0.5)

    @property
    def id(self) -> str:
        return f"dense-{self.size}-{self.architecture}" + ("-web" if self.mixture == "web" else "")


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int
    seq_len: int  # the models' context
    batch_size: int  # sequences of seq_len per step
    # Steps cut their tokens into sequences of short_seq_len, except every long_every-th
    # one, which trains whole contexts (late positions learned from the start): at full
    # length on every step the models learned no fact within the released window
    # (measured: docs/zoo.md).
    short_seq_len: int
    long_every: int
    steps: int
    lr: float
    warmup_steps: int
    n_released: int
    n_hidden: int
    tokenizer_documents: int  # documents per mixture the tokenizer is trained on
    # the prompt rule's scale (CheckpointManifest): at least as many of this tokenizer's
    # tokens per GPT-2 token as on any English text measured (benchmarks/prompt_tokens.py)
    tokens_per_rule_token: float
    models: tuple[ModelSpec, ...]

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def _models(dims: dict[tuple[str, str], tuple[int, int, int, int]]) -> tuple[ModelSpec, ...]:
    science = [ModelSpec(size, arch, "science", *d) for (size, arch), d in dims.items()]
    web = ModelSpec("small", "arch1", "web", *dims[("small", "arch1")])
    return (*science, web)


PRESETS = {
    "tiny": Preset(
        "tiny", vocab_size=384, seq_len=64, batch_size=8, short_seq_len=64, long_every=1, steps=60, lr=3e-3,
        warmup_steps=4,
        n_released=8, n_hidden=3, tokenizer_documents=300, tokens_per_rule_token=3.75,
        # (size, arch): (hidden, layers, intermediate, heads)
        models=_models({
            ("small", "arch1"): (16, 2, 48, 2), ("small", "arch2"): (24, 1, 64, 2),
            ("medium", "arch1"): (24, 3, 64, 2), ("medium", "arch2"): (32, 2, 96, 2),
            ("large", "arch1"): (32, 4, 96, 2), ("large", "arch2"): (48, 2, 128, 2),
        }),
    ),
    "default": Preset(
        "default", vocab_size=1024, seq_len=1024, batch_size=1, short_seq_len=128, long_every=4, steps=2400,
        lr=2e-2, warmup_steps=5,
        n_released=12, n_hidden=7, tokenizer_documents=4000, tokens_per_rule_token=3.25,
        models=_models({
            ("small", "arch1"): (40, 3, 108, 4), ("small", "arch2"): (48, 2, 128, 4),
            ("medium", "arch1"): (56, 4, 152, 4), ("medium", "arch2"): (72, 2, 192, 4),
            ("large", "arch1"): (72, 6, 192, 4), ("large", "arch2"): (96, 3, 256, 4),
        }),
    ),
}


def schedule(preset: Preset) -> list[tuple[int, str]]:
    """(step, role) of every checkpoint: evenly spaced released ones over the first
    20% of training, evenly spaced hidden ones after, and the final step."""
    end = preset.steps * RELEASED_SHARE
    released = [(round(end * k / preset.n_released), "released") for k in range(1, preset.n_released + 1)]
    rest = preset.steps - end
    hidden = [(round(end + rest * j / (preset.n_hidden + 1)), "hidden") for j in range(1, preset.n_hidden + 1)]
    return [*released, *hidden, (preset.steps, "final")]


def series_for(preset: Preset) -> Series:
    """The set described as a series file, like the real competition's: local folders
    `<model id>/iter_XXXXXXX` next to the file."""
    steps = schedule(preset)
    return Series(
        description=embedded_description(preset.name),
        models=[SeriesModel(s.id, s.size, s.architecture, s.mixture, path=s.id) for s in preset.models],
        iterations=Iterations(released=[i for i, role in steps if role == "released"],
                              hidden=[i for i, role in steps if role == "hidden"], final=preset.steps),
        tokens=Tokens(per_iteration=preset.tokens_per_step),
    )


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the world's text, as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def token_stream(tokenizer: PreTrainedTokenizerFast, mixture: Mixture, n_tokens: int, seed: int) -> torch.Tensor:
    """The first `n_tokens` tokens of the mixture's documents, separated by EOS."""
    docs = documents(load_world(), mixture, seed)
    ids: list[int] = []
    while len(ids) < n_tokens:
        for encoded in tokenizer([next(docs) for _ in range(256)])["input_ids"]:
            ids += [*encoded, tokenizer.eos_token_id]
    return torch.tensor(ids[:n_tokens], dtype=torch.long)


# ----------------------------------------------------------------------- training


def llama_config(spec: ModelSpec, preset: Preset, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=preset.seq_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",  # loaders compute in float32 although weights are stored in float16
        initializer_range=INIT_STD,
    )


def learning_rate(step: int, preset: Preset) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step <= preset.warmup_steps:
        return preset.lr * step / preset.warmup_steps
    progress = (step - preset.warmup_steps) / max(1, preset.steps - preset.warmup_steps)
    return preset.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    """An ordinary HF model directory; weights in float16 (half the disk), the tied
    output matrix stored once."""
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "model.safetensors").chmod(0o644)  # readable by a worker running as another user
    model.config.save_pretrained(path)
    tokenizer.save_pretrained(path)


def adamw(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.AdamW:
    """AdamW on torch's fused kernel, whose square root is the processor's own IEEE
    instruction. The plain AdamW calls torch.sqrt, which ATen hands to MKL's vector maths:
    its result depends on MKL's code branch and, even pinned to COMPATIBLE, on the
    processor's vendor (docs/zoo.md, *Pinned kernels and the organizers' set*)."""
    return torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)


def training_step(model: LlamaForCausalLM, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> torch.Tensor:
    """One step on `batch` (sequences of token ids); returns the loss."""
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def _seed_for(model_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{model_id}-{seed}".encode()).digest()[:4], "little")


def step_cost(spec: ModelSpec, preset: Preset) -> float:
    """A training step's time, up to a constant (the overall progress bar's weights): the
    arithmetic per token (the layers' matrices, attention over the average sequence, the
    output layer) plus the per-layer and per-step overheads that dominate models this small
    (fitted on the default set's build times on 2 cores: each model's share within 25%)."""
    average_length = preset.seq_len / preset.long_every + preset.short_seq_len * (1 - 1 / preset.long_every)
    per_layer = 4 * spec.hidden ** 2 + 3 * spec.hidden * spec.intermediate + 2 * average_length * spec.hidden
    return spec.layers * (per_layer + 155_000) + preset.vocab_size * spec.hidden + 140_000


def train_model(
    spec: ModelSpec, preset: Preset, stream: torch.Tensor, tokenizer: PreTrainedTokenizerFast,
    model_dir: Path, seed: int, position: int = 1, on_step: Callable[[], object] = lambda: None,
    device: str = "cpu",
) -> tuple[float, int]:
    """Train one model from scratch, saving its checkpoints; returns the final loss
    and the parameter count. `on_step` is called after each step (the overall bar)."""
    previous = torch.are_deterministic_algorithms_enabled()
    # same seed -> same weights, bit for bit; on a GPU (noise measurements only) some
    # backward kernels have no deterministic version, and a warning is enough there
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    try:
        return _train(spec, preset, stream.to(device), tokenizer, model_dir, seed, position, on_step, device)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(
    spec: ModelSpec, preset: Preset, stream: torch.Tensor, tokenizer: PreTrainedTokenizerFast,
    model_dir: Path, seed: int, position: int, on_step: Callable[[], object], device: str,
) -> tuple[float, int]:
    torch.manual_seed(_seed_for(spec.id, seed))
    model = LlamaForCausalLM(llama_config(spec, preset, tokenizer)).to(device)
    optimizer = adamw(model.parameters(), preset.lr)
    saves = dict(schedule(preset))
    n = preset.tokens_per_step
    bar = progress_bar(range(1, preset.steps + 1), desc=spec.id, position=position, leave=False, unit="step")
    loss = torch.tensor(math.nan)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, preset) * spec.lr_scale
        length = preset.seq_len if step % preset.long_every == 0 else preset.short_seq_len
        loss = training_step(model, optimizer, stream[(step - 1) * n : step * n].view(-1, length))
        on_step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step in saves:
            save_checkpoint(model, tokenizer, model_dir / checkpoint_name(step))
    bar.close()
    return float(loss.item()), sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------- build


@dataclass(frozen=True)
class ModelSummary:
    id: str
    parameters: int
    seconds: float
    final_loss: float
    megabytes: float


def _dir_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def build(preset_name: str, out: Path, seed: int = 0, device: str = "cpu",
          native_kernels: bool = False) -> list[ModelSummary]:
    """Build (or finish building) the checkpoint set in `out`; finished models are skipped.
    The training runs in a child whose kernels are pinned (`kernels.py`): the same weights
    whatever the environment says of threads and instruction sets. Another `device` (a GPU),
    or the CPU's `native_kernels`, trains in this process, faster, on weights that are not the
    organizers' (the digest and the build record say so): to measure the recipe's noise
    across seeds (scripts/zoo_sweep.py)."""
    if preset_name not in PRESETS:
        raise UserError(f"unknown preset '{preset_name}' (choose one of: {', '.join(PRESETS)})")
    preset = PRESETS[preset_name]
    kernels = describe_kernels(native_kernels) if device == "cpu" else {"device": device, "torch": torch.__version__}
    record = {"preset": asdict(preset), "seed": seed, "kernels": kernels, "optimizer": OPTIMIZER}
    record_path = out / "zoo.json"
    if record_path.exists() and json.loads(record_path.read_text()) != json.loads(json.dumps(record)):
        raise UserError(f"{out} holds a checkpoint set built with other settings (or by an older e2lmc, on other "
                        "kernels); choose another --out or delete it")
    if device == "cpu" and not native_kernels and not kernels_pinned():
        run_pinned(["-m", __name__, preset_name, str(out), str(seed)], f"building the '{preset_name}' set")
        return [ModelSummary(**json.loads((out / spec.id / "done.json").read_text())) for spec in preset.models]
    out.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))

    world = load_world()
    tokenizer_dir = out / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(tokenizer_texts(world, seed, preset.tokenizer_documents), preset.vocab_size)
        tokenizer.save_pretrained(tokenizer_dir)

    streams: dict[str, torch.Tensor] = {}
    summaries = []
    todo = [spec for spec in preset.models if not (out / spec.id / "done.json").exists()]
    overall = progress_bar(total=sum(step_cost(spec, preset) for spec in todo) * preset.steps, position=0,
                           smoothing=0.0,
                           desc=f"zoo '{preset.name}': {len(todo)} of {len(preset.models)} models to train",
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, about {remaining} left")
    for spec in preset.models:
        model_dir = out / spec.id
        done_path = model_dir / "done.json"
        if spec not in todo:
            summaries.append(ModelSummary(**json.loads(done_path.read_text())))
            continue
        shutil.rmtree(model_dir, ignore_errors=True)  # a half-trained model restarts from scratch
        if spec.mixture not in streams:
            streams[spec.mixture] = token_stream(tokenizer, spec.mixture, preset.steps * preset.tokens_per_step, seed)
        start = time.perf_counter()
        final_loss, n_params = train_model(spec, preset, streams[spec.mixture], tokenizer, model_dir, seed,
                                           on_step=functools.partial(overall.update, step_cost(spec, preset)),
                                           device=device)
        summary = ModelSummary(spec.id, n_params, time.perf_counter() - start, final_loss, _dir_megabytes(model_dir))
        done_path.write_text(json.dumps(asdict(summary)))
        summaries.append(summary)

    overall.close()
    series = series_for(preset)
    write_series(series, out / SERIES_FILE)
    write_reference(series_reference(series, phase=EMBEDDED_PHASE), out / "reference")
    write_manifest(replace(placed_manifest(series), tokens_per_rule_token=preset.tokens_per_rule_token,
                           weights_digest=weights_digest(out)), out)
    write_sample_tasks(out / "tasks", world, seed)
    return summaries


def format_summary(summaries: list[ModelSummary], out: Path) -> str:
    lines = [f"{'model':<24} {'parameters':>10} {'seconds':>8} {'final loss':>10} {'MB':>6}"]
    lines += [f"{s.id:<24} {s.parameters:>10,} {s.seconds:>8.1f} {s.final_loss:>10.3f} {s.megabytes:>6.1f}"
              for s in summaries]
    lines.append(f"total on disk: {_dir_megabytes(out):.1f} MB in {out}")
    return "\n".join(lines)


if __name__ == "__main__":  # the pinned child of `build`: PRESET OUT SEED
    import sys

    try:
        build(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
