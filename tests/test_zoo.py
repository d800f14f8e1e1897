"""The embedded checkpoint set: the tiny preset built for real, then checked like a user would."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from e2lmc.embedded import kernels, sets
from e2lmc.embedded.kernels import weights_digest
from e2lmc.embedded.world import EVERYDAY_TASK, SCIENCE_TASK, load_world, write_sample_tasks
from e2lmc.embedded.zoo import PRESETS, build, schedule
from e2lmc.errors import UserError
from e2lmc.formats.manifest import CheckpointManifest, ManifestEntry, read_manifest, write_manifest
from e2lmc.formats.reference import read_reference

from .conftest import REPO

TINY = PRESETS["tiny"]
CHECKPOINT_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def test_the_command_line_knows_every_preset_without_loading_torch():
    """`embedded.sets` names the presets for the parsers (they must not import torch)."""
    assert sets.PRESETS == tuple(PRESETS) and sets.DEFAULT_PRESET in PRESETS


def test_tiny_builds_within_a_minute(tiny_zoo):
    _, seconds = tiny_zoo
    assert seconds < 60


def test_layout_matches_the_real_repos(tiny_zoo):
    out, _ = tiny_zoo
    expected = {f"iter_{step:07d}" for step, _ in schedule(TINY)}
    assert len(expected) == TINY.n_released + TINY.n_hidden + 1 >= 12
    for spec in TINY.models:
        model_dir = out / spec.id
        assert {p.name for p in model_dir.iterdir() if p.is_dir()} == expected
        for ckpt in model_dir.iterdir():
            if ckpt.is_dir():
                assert {p.name for p in ckpt.iterdir()} == CHECKPOINT_FILES
    assert len({s.id for s in TINY.models}) == 7


def test_checkpoints_load_offline_as_float32(tiny_zoo, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, _ = tiny_zoo
    for spec in TINY.models:
        path = out / spec.id / f"iter_{TINY.steps:07d}"
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.dtype == torch.float32 and model.config.model_type == "llama"
        ids = tokenizer("Question: What is the chemical symbol of iron?\nAnswer: Fe", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits
        assert logits.shape[-1] == len(tokenizer) and torch.isfinite(logits).all()


def test_architectures_and_training(tiny_zoo):
    out, _ = tiny_zoo
    done = {s.id: json.loads((out / s.id / "done.json").read_text()) for s in TINY.models}
    for size in ("small", "medium", "large"):
        deep, wide = (next(s for s in TINY.models if (s.size, s.architecture, s.mixture) == (size, a, "science"))
                      for a in ("arch1", "arch2"))
        assert deep.layers > wide.layers and deep.hidden < wide.hidden
        assert 0.6 < done[deep.id]["parameters"] / done[wide.id]["parameters"] < 1.4  # about the same size
    params = [done[f"dense-{size}-arch1"]["parameters"] for size in ("small", "medium", "large")]
    assert params == sorted(params)
    vocab_loss = torch.log(torch.tensor(float(TINY.vocab_size))).item()
    assert all(d["final_loss"] < vocab_loss for d in done.values())  # every model learned something


def test_manifest_and_reference_describe_the_set(tiny_zoo):
    out, _ = tiny_zoo
    manifest, reference = read_manifest(out), read_reference(out / "reference")
    ref_ids = [m.checkpoint_id(c) for m in reference.models for c in m.checkpoints]
    assert [e.id for e in manifest.checkpoints] == ref_ids
    assert all((out / e.path / "model.safetensors").is_file() for e in manifest.checkpoints)
    for model in reference.models:
        roles = [c.role for c in model.checkpoints]
        assert roles[-1] == "final" and roles.count("final") == 1
        if model.mixture == "science":
            # >= 8 released points give SQ one autocorrelation lag; >= 3 hidden let a phase hold some out
            assert roles.count("released") == TINY.n_released >= 8 and roles.count("hidden") == TINY.n_hidden >= 3
            released_tokens = max(c.tokens for c in model.checkpoints if c.role == "released")
            assert released_tokens == pytest.approx(0.2 * model.checkpoints[-1].tokens, rel=0.05)
        else:
            assert "released" not in roles  # the web-only model is hidden from participants
    selections = reference.scores
    assert {m.mixture for m in reference.models if m.id in selections.signal_quality.models} == {"science"}
    science, web = reference.model(selections.scientific_compliance.science_model), reference.model(
        selections.scientific_compliance.web_model)
    assert (science.size, science.architecture, science.mixture, web.mixture) == (web.size, web.architecture,
                                                                                  "science", "web")


def test_rerun_skips_finished_models(tiny_zoo):
    out, _ = tiny_zoo
    weights = out / "dense-large-arch2" / f"iter_{TINY.steps:07d}" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    build("tiny", out, seed=0)
    assert time.perf_counter() - start < 10
    assert weights.stat().st_mtime_ns == before


def test_build_is_deterministic(tiny_zoo, tmp_path):
    out, _ = tiny_zoo
    build("tiny", tmp_path / "again", seed=0)
    for spec in TINY.models:
        for step, _ in schedule(TINY)[::6]:
            name = f"{spec.id}/iter_{step:07d}/model.safetensors"
            assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


RESTRICTED = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "AUTO",
              "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"}  # a lesser processor, one core


@pytest.mark.slow
def test_the_same_weights_whatever_instruction_sets_the_processor_offers(tiny_zoo, tmp_path, monkeypatch):
    """The build pins its kernels: a processor that offers less (here: told to use less) trains
    the same weights, bit for bit, and they are the organizers' tiny set. Unpinned, the same
    restriction trains other weights: the pinning is what makes them equal."""
    out, _ = tiny_zoo
    ours = read_manifest(out).weights_digest
    assert ours == weights_digest(out) == sets.ORGANIZERS_DIGESTS[("tiny", 0)]
    assert json.loads((out / "zoo.json").read_text())["kernels"] == {"machine": "x86_64", "aten": "avx2",
                                                                     "mkl": "COMPATIBLE", "threads": "2"}
    for variable, value in RESTRICTED.items():
        monkeypatch.setenv(variable, value)
    build("tiny", tmp_path / "restricted", seed=0)
    assert read_manifest(tmp_path / "restricted").weights_digest == ours

    unpinned = {**os.environ, kernels.MARKER: "1"}  # the child believes its kernels pinned: they are not
    code = "import sys, pathlib; from e2lmc.embedded.zoo import build; build('tiny', pathlib.Path(sys.argv[1]), 0)"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "unpinned")], env=unpinned, check=True,
                   capture_output=True)
    assert weights_digest(tmp_path / "unpinned") != ours


# Run in a child per MKL code branch: which elementwise ops change with the branch (ATen hands
# them to MKL's vector maths), which ops a training step calls, and the optimizer's result.
BRANCH_PROBE = """
import hashlib, json, sys, numpy as np, torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM
from e2lmc.embedded import zoo

def digest(*tensors):
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in tensors)).hexdigest()

def rand(*shape, seed, low=0.01, high=0.99):
    return torch.from_numpy(np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32))

def optimized(make):
    params = [rand(72, 192, seed=1).requires_grad_(), rand(1024, 72, seed=2).requires_grad_()]
    optimizer = make(params)
    for step in range(3):
        for k, p in enumerate(params):
            p.grad = rand(*p.shape, seed=10 * step + k) - 0.5
        optimizer.step()
    return digest(*params)

class Calls(TorchDispatchMode):
    names = set()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

x = torch.cat([rand(4096, seed=0), rand(4096, seed=1, low=-10, high=10), rand(4096, seed=2, low=0, high=2048)])
unary = {name: digest(getattr(torch, name)(x)) for name in UNARY}
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
optimizer = zoo.adamw(model.parameters(), 1e-3)
with Calls():
    zoo.training_step(model, optimizer, torch.randint(0, 64, (2, 16)))
with open(sys.argv[1], "w") as out:
    json.dump({"unary": unary, "calls": sorted(Calls.names), "adamw": optimized(lambda p: zoo.adamw(p, 2e-2)),
               "plain": optimized(lambda p: torch.optim.AdamW(p, lr=2e-2, betas=(0.9, 0.95), weight_decay=0.1))}, out)
"""
UNARY = ("acos asin atan cos cosh erf erfc erfinv exp expm1 log log10 log1p log2 sigmoid sin sinh sqrt rsqrt tan "
         "tanh reciprocal").split()
# ATen's ops that it hands to MKL's vector maths (torch 2.13: their result changed with MKL_CBWR on an Intel Xeon)
MKL_VECTOR_MATHS = {"acos", "asin", "atan", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sqrt", "tan",
                    "tanh"}


@pytest.mark.skipif(not kernels.has_avx2() or not torch.backends.mkl.is_available(),
                    reason="the pinned kernels are AVX2's and MKL's; this processor or torch build has not both")
def test_training_uses_no_op_whose_result_depends_on_mkls_code_branch(tmp_path):
    """MKL's branch depends on the processor (its vendor even under MKL_CBWR=COMPATIBLE: plain
    AdamW trained differently on an AMD EPYC and an Intel Xeon), so a training step may call
    no op that MKL's vector maths computes. One machine cannot show two vendors: the test
    compares MKL's COMPATIBLE branch with the processor's own as a stand-in, and checks the
    ops a step calls against those known to go to MKL's vector maths. Plain AdamW's
    torch.sqrt is one; the build's fused AdamW computes its own square root."""
    results = []
    for branch in ("COMPATIBLE", "AUTO"):  # AUTO: the processor's own
        env = {**kernels.pinned_environment(dict(os.environ)), "MKL_CBWR": branch}
        path = tmp_path / f"{branch}.json"
        done = subprocess.run([sys.executable, "-c", f"UNARY = {UNARY!r}" + BRANCH_PROBE, str(path)], env=env,
                              cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads(path.read_text()))
    compatible, auto = results
    calls = set(compatible["calls"])
    by_branch = {name for name in UNARY if compatible["unary"][name] != auto["unary"][name]}
    assert compatible["calls"] == auto["calls"] and "_fused_adamw_" in calls
    assert not (by_branch | MKL_VECTOR_MATHS) & calls, f"a training step calls {(by_branch | MKL_VECTOR_MATHS) & calls}"
    assert compatible["adamw"] == auto["adamw"]
    if "sqrt" in by_branch:  # this processor shows what the fused kernel avoids
        assert compatible["plain"] != auto["plain"]


def test_a_run_says_whether_its_set_is_the_organizers(tmp_path, monkeypatch):
    folder = tmp_path / "tiny"
    folder.mkdir()
    record = {"preset": {"name": "tiny"}, "seed": 0, "optimizer": kernels.OPTIMIZER}
    (folder / "zoo.json").write_text(json.dumps(record))
    theirs = sets.ORGANIZERS_DIGESTS[("tiny", 0)]

    def manifest(digest: str) -> None:
        write_manifest(CheckpointManifest([ManifestEntry("m/iter_0000001", path="m")], weights_digest=digest), folder)

    manifest(theirs)
    assert sets.provenance(folder) == (True, f"the embedded set's weights are the organizers' (digest {theirs[:12]}): "
                                             "the bundle's, bit for bit")
    manifest("0" * 64)
    monkeypatch.setattr(sets, "has_avx2", lambda: False)
    same, said = sets.provenance(folder)
    assert not same and said.startswith(f"the embedded set's weights differ from the organizers' (digest 000000000000, "
                                        f"theirs {theirs[:12]}) (this ") and "processor has no AVX2" in said
    older = (False, f"the embedded set in {folder} was built by an older e2lmc (other kernels or another optimizer): "
                    "it is not the organizers' set; delete the folder to build theirs")
    manifest("")  # before the pinned kernels: no digest
    assert sets.provenance(folder) == older
    manifest("0" * 64)
    (folder / "zoo.json").write_text(json.dumps({**record, "optimizer": None}))  # before the fused optimizer
    assert sets.provenance(folder) == older
    (folder / "zoo.json").write_text(json.dumps(record))
    (folder / "zoo.json").write_text(json.dumps({"preset": {"name": "tiny"}, "seed": 7}))
    assert sets.provenance(folder) is None  # a seed the organizers publish no set of


def test_the_pinned_environment_overrides_what_it_is_given():
    env = kernels.pinned_environment({"PATH": "/bin", **RESTRICTED})
    assert env["PATH"] == "/bin" and env[kernels.MARKER] == "1"
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"]) == (str(kernels.THREADS),) * 2
    assert "MKL_ENABLE_INSTRUCTIONS" not in env
    if kernels.has_avx2():
        assert (env["ATEN_CPU_CAPABILITY"], env["MKL_CBWR"], env["ONEDNN_MAX_CPU_ISA"]) == ("avx2", "COMPATIBLE",
                                                                                           "AVX2")


def test_other_settings_in_the_same_folder_are_refused(tiny_zoo):
    out, _ = tiny_zoo
    with pytest.raises(UserError, match="built with other settings"):
        build("tiny", out, seed=1)
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        build("huge", out)


def test_sample_tasks_are_valid_lm_eval_tasks(tiny_zoo, monkeypatch):
    from lm_eval.tasks import TaskManager

    out, _ = tiny_zoo
    for task, minimum_choices in ((SCIENCE_TASK, 3), (EVERYDAY_TASK, 4)):
        folder = out / "tasks" / task
        monkeypatch.chdir(folder)  # lm-eval resolves data_files against the working directory
        loaded = TaskManager(include_path=str(folder), include_defaults=False).load([task])
        docs = list(loaded["tasks"][task].eval_docs)
        assert len(docs) >= 200
        assert all(len(d["choices" if task == SCIENCE_TASK else "endings"]) >= minimum_choices for d in docs)


def test_starting_kit_samples_match_the_generator(tmp_path):
    written = write_sample_tasks(tmp_path, load_world(), seed=0)
    for task, folder in written.items():
        committed = REPO / "starting_kit" / "sample_submissions" / task
        for path in folder.iterdir():
            assert (committed / path.name).read_text() == path.read_text(), path.name


def test_science_answer_and_distractors_are_never_prefixes_of_each_other():
    # acc sums log-probabilities: a choice that extends the answer ("1" / "10") would
    # lose or win on length, whatever the model knows.
    from e2lmc.embedded.world import science_samples

    samples = science_samples(load_world(), seed=0)
    assert len(samples) >= 200
    for sample in samples:
        choices = sample["choices"]
        assert len(choices) == 4 and len(set(choices)) == 4
        answer = choices[sample["label"]]
        assert not any(c != answer and (c.startswith(answer) or answer.startswith(c)) for c in choices), sample


def test_every_fact_is_written_in_every_surface_form():
    """Statements, quiz lines, fill-in-the-blank, lettered choices and tables: a model of
    this world meets each fact in many phrasings, not one template."""
    import random

    from e2lmc.embedded.world import fact_sentence, table_document

    world = load_world()
    rng = random.Random(0)
    fact = next(f for f in world.facts if f.entity == "frequency")
    sentences = {fact_sentence(rng, world, fact) for _ in range(400)}
    assert len(sentences) >= 30 and all("hertz" in s.lower() for s in sentences)
    assert any(s.startswith("Fill in the blank:") and "____" in s for s in sentences)
    assert any("\nA. " in s and "\nD. " in s and "\nAnswer: " in s for s in sentences)
    assert any(s.startswith("Q: ") for s in sentences) and any(s in fact.statements for s in sentences)
    weights = [1.0] * len(world.facts)
    table = table_document(random.Random(1), world, weights)
    heading, *rows = table.splitlines()
    assert 3 <= len(rows) <= 8
    assert all(any(r.endswith(f.value) and f.entity in r.lower() for f in world.facts) for r in rows)
    for fact in world.facts:
        assert len(fact.statements) >= 6 and len(fact.questions) >= 3 and fact.blanks()
        assert all(blank.count("____") == 1 for blank in fact.blanks())


def test_held_out_phrasings_never_occur_in_the_world():
    """The held-out tasks measure what carries over to a participant's own wording: none
    of their prompts may appear in the world's text."""
    import random
    import sys

    from e2lmc.embedded.world import documents, fact_sentence

    sys.path.insert(0, str(REPO / "scripts"))
    from heldout_tasks import heldout_samples

    world = load_world()
    tasks = heldout_samples(world, seed=0)
    assert len(tasks) >= 4 and all(len(samples) == len(world.facts) for samples in tasks.values())
    stream = documents(world, "science", seed=0)
    rng = random.Random(0)
    corpus = "\n".join([next(stream) for _ in range(3000)]
                       + [fact_sentence(rng, world, f) for f in world.facts for _ in range(20)]
                       + [s for f in world.facts for s in (*f.statements, *f.questions)])
    for task, samples in tasks.items():
        for sample in samples:
            opening = sample["prompt"].removeprefix("Quiz: ").split("\n")[0]
            assert opening not in corpus, (task, opening)


def test_build_shows_one_overall_bar_with_the_time_left(tmp_path, monkeypatch, capsys):
    """The first build takes minutes: one bar over every model, weighted by each one's cost."""
    import e2lmc.embedded.zoo as zoo

    def train(spec, preset, stream, tokenizer, model_dir, seed, position=1, on_step=lambda: None, device="cpu"):
        model_dir.mkdir(parents=True)
        for _ in range(preset.steps):
            on_step()
        return 1.0, 10

    monkeypatch.setattr(zoo, "train_model", train)
    monkeypatch.setenv(kernels.MARKER, "1")  # train here, where the stand-in is
    zoo.build("tiny", tmp_path / "z")
    err = capsys.readouterr().err
    assert "zoo 'tiny': 7 of 7 models to train: 100%" in err and "left" in err
    costs = {spec.size: zoo.step_cost(spec, zoo.PRESETS["default"]) for spec in zoo.PRESETS["default"].models
             if spec.architecture == "arch1"}
    assert costs["small"] < costs["medium"] < costs["large"]


def test_a_build_on_native_kernels_says_so_and_is_never_resumed_as_the_pinned_one(tmp_path):
    """scripts/zoo_sweep.py --native-kernels: faster weights for studies of the recipe, which the
    build record tells apart from the organizers' set: a pinned build never resumes them."""
    out = tmp_path / "tiny"
    build("tiny", out, seed=0, native_kernels=True)
    record = json.loads((out / "zoo.json").read_text())
    assert record["kernels"]["aten"] == record["kernels"]["mkl"] == "native"
    with pytest.raises(UserError, match="other settings"):
        build("tiny", out, seed=0)
