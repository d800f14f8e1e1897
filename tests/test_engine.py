"""The evaluation engine: lm-eval's responses, computed once per distinct token.

The packing is checked without a model (every scored position sees exactly its own
sequence, every batch keeps to the budget, at the scale of a 15,000-sample task); the
engine against lm-eval's own HF backend on few-shot prompts with a shared prefix, on a
checkpoint loaded into the previous one's module, and over two worker processes."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import e2lmc.engine.runner as engine_module
from e2lmc.engine.engine import Engine
from e2lmc.engine.packing import Work, _pack
from e2lmc.engine.runner import trunk_length
from e2lmc.ingestion.preflight import preflight
from e2lmc.limits import EngineSettings, Limits, cpu_threads

from .conftest import engine_responses, hflm_responses

SAME_MODEL = ["dense-large-arch2/iter_0000024", "dense-large-arch2/iter_0000060"]


def few_shot_task(folder: Path, n: int = 120, sampler: str = "first_n") -> Path:
    """Three-shot questions after a description: with `first_n`, the same examples for
    every sample (a long prefix shared by every prompt); with `default`, each sample's own
    draw (lm-eval's default sampler: contexts that differ after the description)."""
    folder.mkdir(parents=True)
    rows = [{"question": f"Which number follows {i}?", "choices": [str(i + 1), str(i + 2), str(i + 7)], "label": 0}
            for i in range(n + 3)]
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3 if sampler == "first_n" else 12]))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    (folder / "numbers.yaml").write_text(
        "task: numbers\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    dev: dev.jsonl\n    test: test.jsonl\n"
        f"test_split: test\nfewshot_split: dev\nnum_fewshot: 3\nfewshot_config:\n  sampler: {sampler}\n"
        "description: \"Count on.\\n\\n\"\noutput_type: multiple_choice\n"
        "doc_to_text: 'Question: {{question}}\\nAnswer:'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n")
    (folder / "metadata.yaml").write_text("task_name: numbers\ntask_metric: acc,none\n")
    return folder


def test_shared_prefix_engine_equals_lm_eval_and_computes_each_token_about_once(tiny_zoo, tmp_path):
    zoo, _ = tiny_zoo
    plan = preflight(few_shot_task(tmp_path / "task"), tmp_path / "plan", Limits()).plan
    requests = [(r.kind, r.arguments) for r in plan.requests]
    engine = Engine(requests, EngineSettings(token_budget=512))
    checkpoints = [*SAME_MODEL, "dense-small-arch1/iter_0000060"]
    ours, modules = {}, []
    for position, responses in engine.run([(cid, zoo / cid) for cid in checkpoints]):
        ours[position] = responses
        modules.append(engine.runner.model)
    assert modules[1] is modules[0] and modules[2] is not modules[1]  # same architecture: weights copied in
    assert len(engine.runner.tokenized) == len(engine.runner.works) == 1  # one tokenizer: tokenized once
    work = next(iter(engine.runner.works.values()))
    assert work.prefixes and min(len(p) for p in work.prefixes) >= 20  # description and examples computed once
    assert work.tokens_computed <= 1.2 * work.tokens_needed < 0.25 * work.tokens_one_by_one
    assert all(b.tokens.shape[0] * (b.tokens.shape[1] + (len(work.prefixes[b.family]) if b.family >= 0 else 0))
               <= 512 for b in work.batches)
    # the second checkpoint went into the first one's module, the third is another model: lm-eval's numbers
    for position, cid in enumerate(checkpoints):
        theirs = hflm_responses(zoo / cid, requests)
        assert max(abs(a[0] - b[0]) for a, b in zip(ours[position], theirs, strict=True)) <= 1e-4
        assert [a[1] for a in ours[position]] == [b[1] for b in theirs]
    assert ours[0] != ours[1]


@pytest.mark.parametrize("sampler", ["first_n", "default"])
def test_causal_trunks_then_tree_masked_branches_give_lm_evals_numbers(tiny_zoo, tmp_path, monkeypatch, sampler):
    """Long contexts run causally (fused attention, no mask) before their answers branch:
    here every batch's trunk, after a shared prefix or none, on a 64-token model."""
    monkeypatch.setattr(engine_module, "TRUNK_MIN", 2)
    checkpoint = tiny_zoo[0] / SAME_MODEL[1]
    plan = preflight(few_shot_task(tmp_path / "task", n=100, sampler=sampler), tmp_path / "plan", Limits()).plan
    requests = [(r.kind, r.arguments) for r in plan.requests]
    engine = Engine(requests, EngineSettings(token_budget=256))
    [(_, ours)] = engine.run([("c", checkpoint)])
    work = next(iter(engine.runner.works.values()))
    trunks = [trunk_length(b.positions, len(work.prefixes[b.family]) if b.family >= 0 else 0) for b in work.batches]
    assert sum(t >= 2 for t in trunks) >= len(trunks) // 2 and any(t < b.tokens.shape[1] for t, b in
                                                                      zip(trunks, work.batches, strict=True))
    theirs = hflm_responses(checkpoint, requests)
    assert max(abs(a[0] - b[0]) for a, b in zip(ours, theirs, strict=True)) <= 1e-4
    assert [a[1] for a in ours] == [b[1] for b in theirs]


def test_the_trunk_is_where_every_row_is_still_one_chain():
    positions = np.array([[5, 6, 7, 8, 8, 9], [5, 6, 7, 8, 9, 10]])  # after a 5-token prefix; row 0 branches at 4
    assert trunk_length(positions, 5) == 4
    assert trunk_length(positions[1:], 5) == 6 and trunk_length(positions, 4) == 0


def test_two_worker_processes_give_the_single_process_responses(tiny_zoo, tmp_path):
    zoo, _ = tiny_zoo
    plan = preflight(few_shot_task(tmp_path / "task", n=100), tmp_path / "plan", Limits()).plan
    requests = [(r.kind, r.arguments) for r in plan.requests]
    checkpoints = [(cid, zoo / cid) for cid in (*SAME_MODEL, "dense-small-arch1/iter_0000060")]
    alone = dict(Engine(requests, EngineSettings(devices=("cpu",))).run(checkpoints))
    results = list(Engine(requests, EngineSettings(devices=("cpu", "cpu"))).run(checkpoints))
    assert sorted(p for p, _ in results) == [0, 1, 2]
    for position, responses in results:
        assert max(abs(a[0] - b[0]) for a, b in zip(responses, alone[position], strict=True)) <= 1e-5
    # the precision reaches every worker: bfloat16 passes round otherwise than float32
    halved = dict(Engine(requests, EngineSettings(devices=("cpu", "cpu"), dtype="bfloat16")).run(checkpoints))
    assert 1e-4 < max(abs(a[0] - b[0]) for a, b in zip(halved[0], alone[0], strict=True)) < 1.0


def test_passes_are_bfloat16_on_a_gpu_and_float32_elsewhere_unless_asked():
    assert EngineSettings().precision("cuda:0") == "bfloat16" and EngineSettings().precision("cpu") == "float32"
    assert EngineSettings(dtype="float32").precision("cuda:1") == "float32"



def test_a_generation_at_lm_evals_default_length_is_clamped_on_a_short_context(tiny_zoo):
    """lm-eval's default of 256 new tokens does not fit the tiny models' 64-token context
    (its HF backend stops on an assertion): the engine generates half the context instead,
    exactly what that backend generates when asked for 32 tokens."""
    checkpoint = tiny_zoo[0] / "dense-medium-arch1/iter_0000060"
    contexts = ["The chemical symbol of", "Question: What is the SI unit of force?\nAnswer:", "Neon"]
    default = [("generate_until", json.dumps([c, {"until": ["\n\n"]}])) for c in contexts]
    asked = [("generate_until", json.dumps([c, {"until": ["\n\n"], "max_gen_toks": 32}])) for c in contexts]
    ours = engine_responses(checkpoint, default)
    assert ours == hflm_responses(checkpoint, asked)
    assert max(len(text) for text in ours) > 20  # long generations: the room really is 32 tokens
    with pytest.raises(AssertionError, match="must be less than"):
        hflm_responses(checkpoint, default)

# ------------------------------------------------------------------- the packing


def replay_packing(keys: list, budget: int) -> Work:
    """Plan `keys` ((tokens, targets) pairs) and check, position by position, that what
    each scored token attends to is exactly its own sequence at the right positions."""
    work = Work({}, len(keys))
    _pack(keys, work, budget)
    seen: dict[int, list[int]] = {s: [] for s in range(len(keys))}
    for batch in work.batches:
        prefix = work.prefixes[batch.family].tolist() if batch.family >= 0 else []
        rows, length = batch.tokens.shape
        assert rows == 1 or rows * (len(prefix) + length) <= budget
        for row, col, target, s in zip(batch.rows, batch.cols, batch.targets, batch.sequences, strict=True):
            ends = batch.ends[row]
            visible = [k for k in range(col + 1) if k <= col < ends[k]]  # the engine's attention mask
            tokens, targets = keys[s]
            assert prefix + batch.tokens[row, visible].tolist() == list(tokens[:len(prefix) + len(visible)])
            assert batch.positions[row, visible].tolist() == list(range(len(prefix), len(prefix) + len(visible)))
            offset = len(prefix) + len(visible) - (len(tokens) - len(targets)) - 1
            assert targets[offset] == target
            seen[s].append(offset)
    assert all(sorted(offsets) == list(range(len(keys[s][1]))) for s, offsets in seen.items())
    assert work.tokens_needed <= work.tokens_computed <= work.tokens_padded + sum(len(p) for p in work.prefixes)
    return work


@settings(max_examples=60, deadline=None)
@given(
    prefixes=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=30), min_size=1, max_size=3),
    samples=st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(1, 5), min_size=0, max_size=12),
                               st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=3), min_size=1, max_size=4)),
                     min_size=1, max_size=30),
    budget=st.sampled_from([16, 64, 512]),
)
def test_packing_gives_each_scored_token_exactly_its_own_context(prefixes, samples, budget):
    keys = {}
    for which, question, choices in samples:
        context = prefixes[which % len(prefixes)] + question
        for choice in choices:
            whole = [0] + context + choice  # lm-eval's input: context and continuation but the last token
            keys[(tuple(whole[:-1]), tuple(choice))] = None
    replay_packing(list(keys), budget)


@pytest.mark.slow
def test_a_15000_sample_five_shot_task_packs_within_the_budget_and_shares_its_prefix():
    rng = np.random.default_rng(0)
    shots = rng.integers(1, 1000, size=400).tolist()
    keys = []
    for _ in range(15_000):
        context = shots + rng.integers(1, 1000, size=int(rng.integers(20, 60))).tolist()
        for _ in range(4):
            choice = rng.integers(1, 1000, size=int(rng.integers(1, 4))).tolist()
            keys.append((tuple(context + choice[:-1]), tuple(choice)))
    work = Work({}, len(keys))
    _pack(keys, work, 8192)
    assert len(work.prefixes) == 1 and len(work.prefixes[0]) == 400
    assert work.tokens_computed <= 1.05 * work.tokens_needed
    prefix = len(work.prefixes[0])
    assert all(b.tokens.shape[0] * (prefix + b.tokens.shape[1]) <= 8192 for b in work.batches)
    assert sum(b.tokens.size for b in work.batches) <= 1.2 * work.tokens_needed  # no row holds more than it computes
    sequences = np.concatenate([b.sequences for b in work.batches])
    assert len(sequences) == sum(len(t) for _, t in keys) and len(np.unique(sequences)) == len(keys)


@pytest.mark.parametrize("token_budget", [64, 4096])
def test_the_budget_changes_batches_not_responses(tiny_zoo, tmp_path, token_budget):
    zoo, _ = tiny_zoo
    plan = preflight(few_shot_task(tmp_path / "task", n=100), tmp_path / "plan", Limits()).plan
    requests = [(r.kind, r.arguments) for r in plan.requests]
    [(_, small)] = Engine(requests, EngineSettings(token_budget=token_budget)).run([("c", zoo / SAME_MODEL[1])])
    [(_, default)] = Engine(requests).run([("c", zoo / SAME_MODEL[1])])
    assert max(abs(a[0] - b[0]) for a, b in zip(small, default, strict=True)) <= 1e-5


@pytest.mark.parametrize("quota, running, threads", [("max", "1/300", 2), ("max", "2/300", 1), ("max", "9/300", 1),
                                                     ("100000 100000", "1/300", 1), ("max", "?", 2)])
def test_cpu_threads_leave_the_cores_other_processes_use(tmp_path, monkeypatch, quota, running, threads):
    """A competing process on a 2-core machine: one thread, not two that stall each other."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    (tmp_path / "cpu.max").write_text(quota + "\n")
    (tmp_path / "loadavg").write_text(f"0.50 0.40 0.30 {running} 4242\n")
    assert cpu_threads(tmp_path / "cpu.max", tmp_path / "loadavg") == threads


def test_cpu_threads_without_linux_affinity_or_proc(tmp_path, monkeypatch):
    """macOS has neither sched_getaffinity nor /proc/loadavg: every core, no crash."""
    monkeypatch.delattr("os.sched_getaffinity")
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert cpu_threads(tmp_path / "none", tmp_path / "none") == 4


def test_the_cache_keyword_follows_the_installed_transformers():
    """transformers 5.24 renamed the forward's `past_key_values` to `cache` (the old name
    goes in 5.40): the engine passes whichever the model takes, so no deprecation warning."""
    import torch

    from e2lmc.engine.runner import cache_argument

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return input_ids

    assert (cache_argument(Old()), cache_argument(New())) == ("past_key_values", "cache")
