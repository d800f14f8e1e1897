"""The leaderboard's numbers, attacked by a submission that reads our code.

Where a task names only lm-eval's own metrics, aggregations and filters, trusted code
computes its value (`e2lmc/metrics/`): it must equal lm-eval's own run of the task, and no
code of the submission may change it. Where the submission's own code computes it, a fresh
child per checkpoint, in a secret order that interleaves released and hidden ones, leaves
it nothing to learn which checkpoint it scores, and the entry is flagged (or refused, as
the phase says). What the plan claims is recomputed by the parent; the judge's samples are
drawn with a secret of the phase; hidden checkpoints show no progress.
"""

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from e2lmc.cli import main
from e2lmc.errors import InvalidSubmission
from e2lmc.formats.alignment import AlignmentSample
from e2lmc.formats.manifest import CheckpointManifest, read_manifest, write_manifest
from e2lmc.formats.reference import read_reference, write_reference
from e2lmc.formats.results import read_results, write_results
from e2lmc.ingestion.preflight import preflight
from e2lmc.ingestion.program import ingest
from e2lmc.metrics.trusted import TrustedMetric, metric_values
from e2lmc.sandboxed.tasks import load_task, replay
from e2lmc.scoring.judge import draw

from .conftest import REPO, SAMPLE_REFERENCE, SAMPLE_RESULTS
from .test_ingestion import QUICK, make_task
from .test_winners import WINNERS, write

SAMPLES = REPO / "starting_kit" / "sample_submissions"

GENERATION = {  # generate_until with lm-eval's regex, take_first and lowercase filters, exact_match's options
    "gen.yaml": "task: gen\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: gen.jsonl\n"
                "test_split: test\noutput_type: generate_until\ndoc_to_text: 'Q: {{q}}\\nA:'\n"
                "doc_to_target: '{{a}}'\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 8\n"
                "filter_list:\n  - name: strict\n    filter:\n      - function: regex\n"
                "        regex_pattern: 'answer is (\\w+)'\n      - function: take_first\n"
                "  - name: loose\n    filter:\n      - function: lowercase\n      - function: take_first\n"
                "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
                "    ignore_case: true\n    ignore_punctuation: true\n",
    "gen.jsonl": "".join(json.dumps({"q": f"What is {i} plus one?", "a": ["one", "Two", "three"][i % 3],
                                     "choices": ["one", "two", "three"]}) + "\n" for i in range(120)),
    "metadata.yaml": "task_name: gen\ntask_metric: exact_match,strict\n",
}
ROLLING = {  # perplexities of whole texts, and a group averaging two tasks
    "texts.yaml": "task: texts\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: texts.jsonl\n"
                  "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{t}}'\n"
                  "metric_list:\n  - metric: bits_per_byte\n  - metric: word_perplexity\n",
    "texts.jsonl": "".join(json.dumps({"t": f"Text number {i} about stars and {'planets ' * (i % 4)}."}) + "\n"
                           for i in range(110)),
    "metadata.yaml": "task_name: texts\ntask_metric: bits_per_byte,none\n",
}
RESPONSES = ["the answer is two", "The answer is One.", "answer is three", "no idea", "", "ONE"]


def fake_responses(plan, seed: int) -> list:
    rng = random.Random(seed)
    responses = []
    for kind, _ in plan.request_keys():
        if kind == "loglikelihood":
            responses.append((-10 * rng.random(), rng.random() < 0.3))
        elif kind == "loglikelihood_rolling":
            responses.append(-100 * rng.random())
        else:
            responses.append(rng.choice(RESPONSES))
    return responses


def task_folders(tmp_path: Path) -> dict[str, Path]:
    folders = {p.name: p for p in SAMPLES.iterdir() if p.is_dir()}
    folders |= {name: write(tmp_path / name, files) for name, files in
                {"generation": GENERATION, "rolling": ROLLING, "noor": WINNERS["noor"](),
                 "sciknoweval_mcqa": WINNERS["sciknoweval_mcqa"]()}.items()}
    return folders


@pytest.mark.slow
def test_the_trusted_metric_equals_the_tasks_own_run(tmp_path):
    """The kit's samples, the winners' groups of five-shot subjects, a generation task with
    regex filters and a perplexity task: on random responses, the trusted value is exactly
    the one lm-eval's evaluator gives when the task's own code runs (in this process)."""
    for name, folder in task_folders(tmp_path).items():
        planned = preflight(folder, tmp_path / f"work-{name}", QUICK)
        plan = planned.plan
        assert plan.custom_functions() == [], name
        trusted, task_dict = TrustedMetric(plan), load_task(planned.submission)
        for seed in range(3):
            responses = fake_responses(plan, seed)
            own = replay(planned.submission, task_dict, dict(zip(plan.request_keys(), responses, strict=True)))
            assert trusted.value(responses) == own[plan.task_metric], (name, seed)
            assert trusted.values(responses) == metric_values(own), (name, seed)  # every metric kept, the same


@pytest.mark.slow
def test_the_submissions_own_code_on_the_response_path_is_named(tmp_path):
    """Its own functions, and lm-eval's `multi_choice_regex`, which reads the raw document."""
    regex = dict(GENERATION, **{"gen.yaml": GENERATION["gen.yaml"].replace("function: regex\n", "function: "
                                                                            "multi_choice_regex\n")})
    plan = preflight(write(tmp_path / "regex", regex), tmp_path / "work0", QUICK).plan
    assert plan.custom_functions() == ["gen: filter multi_choice_regex"]
    custom = write(tmp_path / "mmlu", WINNERS["mmlu_early_training"]())
    plan = preflight(custom, tmp_path / "work", QUICK).plan
    assert plan.custom_functions() == ["mmlu_early_training: aggregation loglikelihood_diff"]
    folder = make_task(tmp_path / "p", 120, files={"helpers.py": "def process(doc, results):\n    return {'acc': 1}\n"},
                       yaml_extra="process_results: !function helpers.process\n")
    assert preflight(folder, tmp_path / "work2", QUICK).plan.custom_functions() == ["numbers: process_results process"]


POISONER = '''
from lm_eval.api import registry

registry.METRIC_REGISTRY._objs["acc"] = lambda items: 1.0
registry.AGGREGATION_REGISTRY._objs["mean"] = lambda items: 0.987654321

def process_docs(dataset):
    return dataset
'''


OWN_RUN = """
from pathlib import Path
from e2lmc.ingestion.preflight import preflight
from e2lmc.sandboxed.tasks import load_task, replay
from tests.test_integrity import QUICK, fake_responses

planned = preflight(Path({folder!r}), Path({work!r}), QUICK)
responses = dict(zip(planned.plan.request_keys(), fake_responses(planned.plan, 0)))
print(replay(planned.submission, load_task(planned.submission), responses)[planned.plan.task_metric])
"""


def hidden_and_released(tiny_zoo, folder: Path, n: int = 3) -> Path:
    """A manifest of `n` released and `n` hidden tiny checkpoints (absolute paths)."""
    zoo, _ = tiny_zoo
    entries = read_manifest(zoo).checkpoints
    picked = [e for e in entries if e.role == "released"][:n] + [e for e in entries if e.role == "hidden"][:n]
    write_manifest(CheckpointManifest([replace(e, path=str(zoo / e.path)) for e in picked]), folder)
    return folder


def test_a_poisoned_registry_cannot_change_a_trusted_metric(tiny_zoo, tmp_path, capsys):
    """The task's helper replaces lm-eval's `acc` and `mean` in the child that plans it: the
    task still names lm-eval's own metric, which trusted code computes in a process where no
    module of the submission was ever imported."""
    manifest = hidden_and_released(tiny_zoo, tmp_path / "input", n=2)
    honest = ingest(make_task(tmp_path / "honest", 120), manifest, tmp_path / "out-honest", QUICK)
    poisoned_task = make_task(tmp_path / "poisoned", 120, files={"helpers.py": POISONER},
                              yaml_extra="process_docs: !function helpers.process_docs\n"
                                         "metric_list:\n- metric: acc\n  aggregation: mean\n")
    own_run = subprocess.run(  # the attack is real: the task's own code gives the poisoned value
        [sys.executable, "-c", OWN_RUN.format(folder=str(poisoned_task), work=str(tmp_path / "own"))],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert own_run.stdout.split()[-1:] == ["0.987654321"], own_run.stderr[-2000:]
    poisoned = ingest(poisoned_task, manifest, tmp_path / "out-poisoned", QUICK)
    assert poisoned.custom_code == honest.custom_code == []
    values = {c.id: c.metrics["acc,none"] for c in poisoned.checkpoints}
    assert values == {c.id: c.metrics["acc,none"] for c in honest.checkpoints}
    assert 0.987654321 not in values.values()
    # hidden checkpoints were evaluated: no per-checkpoint progress, which would time them
    assert "ckpt" not in capsys.readouterr().err


HONEST = '''
def process(doc, results):
    lls = [ll for ll, _ in results]
    return {"acc": float(max(range(len(lls)), key=lls.__getitem__) == doc["label"])}
'''
STATEFUL = HONEST + '''
import fcntl, os, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
BITS = sorted(os.path.join(HERE, name) for name in os.listdir(HERE))[:4]  # files every child may read
INHERITED, SEEN, HELD = [0], [], []


def probe():
    """The count a child still alive publishes by holding locks on read-only files."""
    value = 0
    for i, path in enumerate(BITS):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            value |= 1 << i
        finally:
            os.close(fd)
    return value


def watch():
    while True:
        INHERITED[0] = max(INHERITED[0], probe())
        time.sleep(0.02)


threading.Thread(target=watch, daemon=True).start()


def agg(items):
    """Add 0.3 to released checkpoints' values only, told apart as an attacker would: the first
    three checkpoints of the run (released ones came first), counted by this child and passed on to
    the next through locks, and 0.2 while plan.json is less than a minute old (the run is young)."""
    SEEN.append(1)
    time.sleep(0.2)
    count = INHERITED[0] + len(SEEN)
    for i, path in enumerate(BITS):
        if count >> i & 1:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
            HELD.append(fd)
    plan = os.path.join(sys.argv[-1], "plan.json")  # the score child's last argument: the plan's folder
    young = os.path.exists(plan) and time.time() - os.path.getmtime(plan) < 60
    return sum(items) / len(items) + (0.3 if count <= 3 else 0.0) + (0.2 if young else 0.0)
'''


@pytest.mark.parametrize("level", ["landlock", "namespaces"])
def test_a_stateful_metric_gains_nothing_over_its_honest_twin(tiny_zoo, tmp_path, level):
    """One fresh child per checkpoint (it has seen no other), released and hidden in one secret
    interleaved order, plan files dated to the epoch: whatever the cheat adds, it adds to every
    checkpoint alike, which changes no score (SQ, RC and CS are blind to a constant)."""
    from .test_sandbox import limits

    manifest = hidden_and_released(tiny_zoo, tmp_path / "input")
    settings = limits(level)
    runs = {}
    cheat = "metric_list:\n- metric: acc\n  aggregation: !function helpers.agg\n"
    for name, helper, extra in (("honest", HONEST, ""), ("cheat", STATEFUL, cheat)):
        folder = make_task(tmp_path / name, 120, files={"helpers.py": helper},
                           yaml_extra="process_results: !function helpers.process\n" + extra)
        results = ingest(folder, manifest, tmp_path / f"out-{name}", settings)
        assert results.custom_code, name  # flagged: the submission's own code computed the metric
        runs[name] = {c.id: c.metrics["acc,none"] for c in results.checkpoints}
    shifts = {round(runs["cheat"][c] - runs["honest"][c], 9) for c in runs["honest"]}
    assert len(shifts) == 1, shifts


def test_a_metric_of_the_submissions_own_code_is_flagged_or_refused(tmp_path):
    """Fingerprinting public checkpoints cannot be prevented for code that sees responses:
    the leaderboard says so (`custom_code`), and a phase that refuses it scores it invalid."""
    res, ref = tmp_path / "res", tmp_path / "ref"
    results = read_results(SAMPLE_RESULTS)
    results.custom_code = ["numbers: process_results fingerprint"]
    write_results(results, res)
    for policy, valid in (("allow", 1.0), ("flag", 1.0), ("refuse", 0.0)):
        reference = read_reference(SAMPLE_REFERENCE)
        reference.custom_metric_code = policy
        write_reference(reference, ref)
        out = tmp_path / f"out-{policy}"
        assert main(["score", "--res", str(res), "--ref", str(ref), "--output", str(out)]) == 0
        scores = json.loads((out / "scores.json").read_text())
        assert (scores["custom_code"], scores["valid"]) == (1.0, valid), policy
        report = (out / "detailed_results.html").read_text()
        assert "numbers: process_results fingerprint" in report
        if valid == 0.0:
            assert scores["score"] == 0.0 and "which this phase refuses" in report


FORGER = '''
import sys

plan_module = sys.modules["e2lmc.formats.plan"]
WRITE = plan_module.write_format


def forged_write(path, kind, obj):
    """Rewrite the plan as the child writes it: the claims a cheat would want believed."""
    if kind == "e2lmc.plan":
        {change}
    return WRITE(path, kind, obj)


plan_module.write_format = forged_write


def process_docs(dataset):
    return dataset{docs}
'''


def forging_task(tmp_path: Path, name: str, change: str, n: int = 120, docs: str = "",
                 question=lambda i: f"Which number follows {i}?") -> Path:
    helper = FORGER.format(change=change, docs=docs)
    return make_task(tmp_path / name, n, question=question, files={"helpers.py": helper},
                     yaml_extra="process_docs: !function helpers.process_docs\n")


@pytest.mark.slow
def test_the_plans_claims_are_recomputed_by_the_parent(tmp_path):
    # 20 questions that show their answers, repeated to 260 documents and claimed clean
    repeated = forging_task(tmp_path, "repeated", "obj.n_samples = 260; obj.leakage = []", n=20,
                            docs=".select([i % 20 for i in range(260)])",
                            question=lambda i: f"The number {i + 1} follows {i}: which number follows {i}?")
    with pytest.raises(InvalidSubmission, match=r"has 20 distinct samples; the rules allow 100 to 15,000 "
                                                 r"\(240 repeat another's requests\)"):
        preflight(repeated, tmp_path / "w1", QUICK)
    # 120 questions that show their answers, claimed clean, another choice claimed right: the parent
    # finds every one, with the gold the trusted metric scores (from the target), not the claimed one
    leaking = forging_task(tmp_path, "leaking", "obj.leakage = []\n        for s in obj.samples:\n"
                                                "            s.gold = [1]",  # the right one is 0
                           question=lambda i: f"The number {i + 1} follows {i}: which number follows {i}?")
    plan = preflight(leaking, tmp_path / "w2", QUICK).plan
    assert plan.n_samples == 120 and len(plan.leakage) == 120
    assert plan.leakage[0].answer == "1" and "1 follows 0" in plan.leakage[0].excerpt
    # samples dropped from the plan: its requests no longer match them
    dropped = forging_task(tmp_path, "dropped", "obj.samples = obj.samples[:100]")
    with pytest.raises(InvalidSubmission, match="a plan whose requests do not match its samples"):
        preflight(dropped, tmp_path / "w3", QUICK)
    # 100 of 120 samples moved under a decoy task: counted, but outside the submitted metric
    decoy = forging_task(tmp_path, "decoy", "import dataclasses; obj.samples = obj.samples[:20] + "
                                            "[dataclasses.replace(s, task='decoy') for s in obj.samples[20:]]")
    with pytest.raises(InvalidSubmission, match="samples are not all under task 'numbers'"):
        preflight(decoy, tmp_path / "w-decoy", QUICK)
    # claims that would crash the parent or skip the leakage check; a metric named in a recipe's arguments
    for name, change, refusal in (
            ("choices", "obj.samples[0].choices = 50; obj.samples[0].gold = [49]", "claims 50 choices"),
            ("contexts", "[setattr(s, 'input_index', 0) for s in obj.samples]", "does not ask its choices as contexts"),
            ("nochoices", "[(setattr(s, 'input_index', 0), setattr(s, 'choices', None)) for s in obj.samples]",
             "does not ask its choices as contexts"),
            ("kwargs", "obj.recipes[0].metrics = [plan_module.MetricRecipe('acc', None, None, {'metric': 'evil.py'})]",
             "names a metric or filter in its arguments"),
            ("deeptarget", "obj.samples[0].target = '[' * 100_000", "sample 0: its gold answer is None, which is")):
        with pytest.raises(InvalidSubmission, match=refusal):
            preflight(forging_task(tmp_path, name, change), tmp_path / f"w-{name}", QUICK)
    # arguments the parent parses: nested beyond any parser's depth, or of another shape
    for i, arguments in enumerate(("'[' * 100_000", "'{\"a\": 1}'", "'[\"context\"]'")):
        broken = forging_task(tmp_path, f"broken{i}", f"obj.requests[0].arguments = {arguments}")
        with pytest.raises(InvalidSubmission, match=r"requests\[0\] has arguments that are not those of a "
                                                     r"loglikelihood request"):
            preflight(broken, tmp_path / f"w-broken{i}", QUICK)


def test_the_judged_samples_are_drawn_with_the_phases_secret():
    samples = [AlignmentSample("t", i, f"Question: {i}?") for i in range(1000)]
    public = draw(samples, "abcd", None)
    assert len(public) == 200 and public == draw(samples, "abcd", None)  # e2lmc align: reproducible
    secret = draw(samples, "abcd", "organizers-only")
    assert secret == draw(samples, "abcd", "organizers-only")  # the organizers draw the same ones every run
    assert len({s.doc_id for s in secret} & {s.doc_id for s in public}) < 100  # a participant cannot know them
    assert draw(samples, "abcd", "another phase") != secret
    assert read_reference(SAMPLE_REFERENCE).alignment.secret is None  # none in the kit's reference data


def test_the_estimate_counts_a_fresh_child_per_checkpoint_for_custom_metric_code():
    from e2lmc.organizer.estimate import DEVICES, TaskTokens, format_estimate
    from e2lmc.organizer.placement import CheckpointSize

    tokens = TaskTokens(requests=1000, one_by_one=10**6, needed=10**6, computed=10**6, generated=0)
    phases = {"warm-up": [CheckpointSize(2 * 10**9, 10**9)] * 100}
    trusted = format_estimate(tokens, phases, DEVICES["h100"])
    custom = format_estimate(tokens, phases, DEVICES["h100"], child_seconds=600.0)
    assert "fresh sandboxed child" not in trusted and "fresh sandboxed child: about 600.0 s each" in custom
    assert custom.splitlines()[-1].split()[-4:-2] == ["16.7", "h"]  # 100 children of 600 s, one at a time
