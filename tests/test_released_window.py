"""scripts/released_window.py, the study of the released window's noise (docs/zoo.md): its probe
is the science sample's `acc` as lm-eval computes it, and it trains no further than the window."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from e2lmc.embedded import world as world_module
from e2lmc.embedded import zoo
from e2lmc.embedded.world import SCIENCE_TASK
from e2lmc.formats.series import checkpoint_name

from .conftest import REPO
from .test_ingestion import lm_eval_direct

sys.path.insert(0, str(REPO / "scripts"))
from released_window import accuracy, choice_loglikelihoods, probe, released_curve  # noqa: E402

TINY = zoo.PRESETS["tiny"]


@pytest.mark.parametrize("step", [zoo.schedule(TINY)[3][0], TINY.steps])
def test_the_probe_is_the_science_samples_acc_as_lm_eval_computes_it(tiny_zoo, tmp_path, step):
    zoo_dir = tiny_zoo[0]
    checkpoint = Path(shutil.copytree(zoo_dir / "dense-large-arch2" / checkpoint_name(step),
                                      tmp_path / "set" / "model" / checkpoint_name(step)))
    tokenizer = zoo.PreTrainedTokenizerFast.from_pretrained(zoo_dir / "tokenizer")
    samples = world_module.science_samples(world_module.load_world(), 0)
    ids, mask = probe(tokenizer, samples)
    expected, loglikelihoods = lm_eval_direct(zoo_dir / "tasks" / SCIENCE_TASK, checkpoint)
    assert accuracy(checkpoint, ids, mask, samples) == pytest.approx(expected, abs=1e-12)
    pairs = [(f"Question: {s['question']}\nAnswer:", f" {c}") for s in samples for c in s["choices"]]
    assert choice_loglikelihoods(checkpoint, ids, mask).tolist() == pytest.approx(
        [loglikelihoods[pair] for pair in pairs], abs=1e-4)


def test_training_stops_after_the_released_window(tiny_zoo, monkeypatch):
    saved = []
    save = zoo.save_checkpoint
    monkeypatch.setattr(zoo, "save_checkpoint", lambda model, tokenizer, path: (saved.append(path.name),
                                                                                save(model, tokenizer, path)))
    tokenizer = zoo.PreTrainedTokenizerFast.from_pretrained(tiny_zoo[0] / "tokenizer")
    released = [step for step, role in zoo.schedule(TINY) if role == "released"]
    stream = zoo.token_stream(tokenizer, "science", (released[-1] + 1) * TINY.tokens_per_step, 0)
    samples = world_module.science_samples(world_module.load_world(), 0)[:20]
    curve = released_curve(TINY.models[0], TINY, stream, tokenizer, 0, samples)
    assert saved == [checkpoint_name(step) for step in released]
    assert len(curve) == len(released) and all(0 <= a <= 1 for a in curve)
