"""The released window's curves across seeds, in minutes: where the embedded set's SQ noise comes from.

SQ is computed on the released checkpoints only, the first 20% of training. This trains
science models of a preset (the real `zoo` training code, the learning-rate schedule of the
whole build) only that far, saving the released checkpoints, and probes each with the
science sample: the summed log-likelihood of " <choice>" after "Question: …\\nAnswer:", the
highest one right (the sample task's `acc`, computed here in one batch instead of through
ingestion). It prints each curve with its SQ (the leaderboard's formula) and the mean and
spread (sample standard deviations) over curves and over the seeds' means; one change of
the preset at a time with --set.
docs/zoo.md's *Where the noise comes from* was measured with it. It runs on the processor's
own kernels: a study of the recipe, not of the organizers' bits.

    python scripts/released_window.py --seeds 1 2 3 4 5 --set lr=0.014 --json lr014.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
from zoo_sweep import preset_changes  # scripts/, this script's folder

from e2lmc.embedded import world as world_module
from e2lmc.embedded import zoo
from e2lmc.formats.series import checkpoint_name
from e2lmc.scoring.formulas import signal_quality

PROBED = ("dense-small-arch1", "dense-medium-arch1", "dense-large-arch2")  # the smallest, the least steady, the widest


class _WindowEnd(Exception):
    """Raised at the step after the last released one (saved by then): the rest of training is not needed."""


def probe(tokenizer: PreTrainedTokenizerFast, samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (question, choice) as one padded batch, and the mask of the choices' tokens."""
    pairs = [(tokenizer(f"Question: {s['question']}\nAnswer:")["input_ids"], tokenizer(f" {c}")["input_ids"])
             for s in samples for c in s["choices"]]
    ids = torch.full((len(pairs), max(len(a) + len(b) for a, b in pairs)), tokenizer.eos_token_id)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for row, (context, choice) in enumerate(pairs):
        ids[row, : len(context) + len(choice)] = torch.tensor(context + choice)
        mask[row, len(context) : len(context) + len(choice)] = True
    return ids, mask


@torch.no_grad()
def choice_loglikelihoods(checkpoint: Path, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each (question, choice) pair's summed log-likelihood of the choice's tokens."""
    model = LlamaForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    logprobs = torch.log_softmax(model(input_ids=ids).logits[:, :-1], -1)
    return (logprobs.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]).sum(-1)


def accuracy(checkpoint: Path, ids: torch.Tensor, mask: torch.Tensor, samples: list[dict]) -> float:
    scores = choice_loglikelihoods(checkpoint, ids, mask).split([len(s["choices"]) for s in samples])
    return sum(int(score.argmax()) == s["label"] for score, s in zip(scores, samples)) / len(samples)


def released_steps(preset: zoo.Preset) -> list[int]:
    return [step for step, role in zoo.schedule(preset) if role == "released"]


def released_curve(spec: zoo.ModelSpec, preset: zoo.Preset, stream: torch.Tensor, tokenizer: PreTrainedTokenizerFast,
                   seed: int, samples: list[dict]) -> list[float]:
    released = released_steps(preset)
    steps = iter(range(1, released[-1] + 2))

    def stop_after_window() -> None:
        if next(steps) > released[-1]:
            raise _WindowEnd

    with tempfile.TemporaryDirectory() as folder:
        try:
            zoo.train_model(spec, preset, stream, tokenizer, Path(folder), seed, on_step=stop_after_window)
        except _WindowEnd:
            pass
        ids, mask = probe(tokenizer, samples)
        return [accuracy(Path(folder) / checkpoint_name(step), ids, mask, samples) for step in released]


def _spread(values: list[float]) -> float:
    """The sample standard deviation (as scripts/noise_table.py's); 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", choices=list(zoo.PRESETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--models", nargs="+", default=list(PROBED))
    parser.add_argument("--set", nargs="*", default=[], help="preset fields, e.g. warmup_steps=48 lr=0.014")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = zoo.PRESETS[args.preset]
    changes = preset_changes(preset, args.set)
    preset = dataclasses.replace(preset, **changes)
    science = [spec for spec in preset.models if spec.mixture == "science"]
    specs = [spec for spec in science if spec.id in args.models]
    if len(specs) != len(set(args.models)):
        parser.error(f"--models: choose among the science models {', '.join(spec.id for spec in science)}")
    world = world_module.load_world()
    report: dict = {"changes": changes, "curves": {}}
    for seed in args.seeds:
        tokenizer = zoo.train_tokenizer(world_module.tokenizer_texts(world, seed, preset.tokenizer_documents),
                                        preset.vocab_size)
        end = released_steps(preset)[-1] + 1  # the step that stops the training
        stream = zoo.token_stream(tokenizer, "science", end * preset.tokens_per_step, seed)
        samples = world_module.science_samples(world, seed)
        for spec in specs:
            start = time.perf_counter()
            curve = released_curve(spec, preset, stream, tokenizer, seed, samples)
            report["curves"][f"{seed}/{spec.id}"] = curve
            print(f"seed {seed} {spec.id:<20} SQ {signal_quality(curve).score:.3f}  "
                  f"{' '.join(f'{a:.2f}' for a in curve)}  ({time.perf_counter() - start:.0f} s)", flush=True)
    values = {key: signal_quality(curve).score for key, curve in report["curves"].items()}
    per_seed = [statistics.mean(v for key, v in values.items() if key.startswith(f"{seed}/")) for seed in args.seeds]
    report["sq_mean"], report["sq_stdev_curves"] = statistics.mean(values.values()), _spread(list(values.values()))
    report["sq_stdev_seeds"] = _spread(per_seed)  # of the models' mean SQ
    print(f"{changes or 'the preset as it is'}: SQ {report['sq_mean']:.3f}, ± {report['sq_stdev_curves']:.3f} "
          f"across {len(values)} curves, ± {report['sq_stdev_seeds']:.3f} across the seeds' means")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
