"""The ingestion program end to end on the tiny checkpoint set: plan in a child process,
evaluate, score in a child process; resuming, failures, security and the rules."""

import contextlib
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import e2lmc.engine.runner as engine
from e2lmc.cli.main import main
from e2lmc.embedded.world import SCIENCE_TASK
from e2lmc.engine.checkpoints import resolve
from e2lmc.errors import InvalidSubmission, UserError
from e2lmc.formats.manifest import CheckpointManifest, ManifestEntry, read_manifest, write_manifest
from e2lmc.formats.reference import read_reference
from e2lmc.formats.results import IngestionResults, read_results, write_results
from e2lmc.ingestion.derived import option_labels
from e2lmc.ingestion.preflight import check_prompts, preflight
from e2lmc.ingestion.program import _resumed, ingest
from e2lmc.limits import Limits
from e2lmc.sandboxed.isolation import HIDDEN_FAILURE

from .conftest import REPO, engine_responses
from .test_engine import few_shot_task

CHECKPOINTS = ["dense-small-arch1/iter_0000012", "dense-small-arch1-web/iter_0000060", "dense-large-arch2/iter_0000060"]
QUICK = Limits(plan_seconds=120, score_seconds=60)


@pytest.fixture
def input_data(tiny_zoo, tmp_path) -> Path:
    """A manifest of three tiny checkpoints, with paths relative to it."""
    zoo, _ = tiny_zoo
    folder = tmp_path / "input_data"
    for cid in CHECKPOINTS:
        shutil.copytree(zoo / cid, folder / cid)
    write_manifest(CheckpointManifest([ManifestEntry(cid, path=cid) for cid in CHECKPOINTS]), folder)
    return folder


def test_lettered_multiple_choice_is_told_from_a_cloze(tmp_path):
    lettered_task = make_task(tmp_path / "lettered", 120, yaml_extra=(
        "doc_to_text: \"Question: {{question}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}\\n"
        "Answer:\"\ndoc_to_choice: ['A', 'B', 'C']\n"))
    assert option_labels(preflight(lettered_task, tmp_path / "w1", QUICK).plan) == ["A", "B", "C"]
    assert option_labels(preflight(make_task(tmp_path / "cloze", 120), tmp_path / "w2", QUICK).plan) is None


def test_a_metric_name_lm_eval_does_not_know_is_kept(input_data, tmp_path):
    """A task's own process_results may name its metrics as it likes: ingestion scores the
    submitted one and keeps the others, without asking lm-eval's registry to know them."""
    folder = make_task(tmp_path / "s", 120, yaml_extra="process_results: !function helpers.score\nmetric_list:\n"
                       "  - metric: my_acc\n    aggregation: mean\n    higher_is_better: true\n"
                       "  - metric: my_len\n    aggregation: mean\n    higher_is_better: false\n",
                       files={"helpers.py": "def score(doc, results):\n    best = max(range(len(results)), key="
                                            "lambda i: results[i][0])\n    return {'my_acc': float(best == 0), "
                                            "'my_len': float(len(doc['question']))}\n"})
    (folder / "metadata.yaml").write_text("task_name: numbers\ntask_metric: my_acc,none\n")
    results = ingest(folder, input_data, tmp_path / "output", QUICK)
    assert results.complete and all(set(c.metrics) == {"my_acc,none", "my_len,none"} for c in results.checkpoints)
    assert results.lower_is_better == []  # unknown to lm-eval's registry: upward, and no failure


def science(tiny_zoo) -> Path:
    return tiny_zoo[0] / "tasks" / SCIENCE_TASK


def make_task(folder: Path, n: int, *, question=lambda i: f"Which number follows {i}?", yaml_extra: str = "",
              files: dict[str, str] | None = None) -> Path:
    """A small multiple-choice submission with `n` samples."""
    folder.mkdir(parents=True)
    docs = [{"question": question(i), "choices": [str(i + 1), str(i + 2), str(i + 3)], "label": 0} for i in range(n)]
    (folder / "numbers.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "numbers.yaml").write_text(
        "task: numbers\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: numbers.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: 'Question: {{question}}\\nAnswer:'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n" + yaml_extra
    )
    (folder / "metadata.yaml").write_text("task_name: numbers\ntask_metric: acc,none\n")
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    return folder


def lm_eval_direct(submission_dir: Path, checkpoint: Path) -> tuple[float, dict]:
    """lm-eval's own HF backend on one checkpoint: the metric and every log-likelihood."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    from e2lmc.sandboxed.submission import open_submission
    from e2lmc.sandboxed.tasks import load_task

    submission = open_submission(submission_dir, checkpoint.parent.parent / "direct")
    lm = HFLM(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=64)
    with contextlib.chdir(submission.root):
        out = evaluate(lm, load_task(submission), bootstrap_iters=0, log_samples=True, verbosity="ERROR")
    lls = {}
    for sample in out["samples"].get(submission.task_name, []):
        for arguments, response in zip(sample["arguments"], sample["resps"]):
            if isinstance(response[0], (list, tuple)):  # loglikelihood: (log-likelihood, is greedy)
                lls[tuple(arguments)] = response[0][0]
    return out["results"][submission.task_name][submission.task_metric], lls


def test_ingest_equals_lm_eval_hf_backend_and_resumes(tiny_zoo, input_data, tmp_path, monkeypatch):
    output = tmp_path / "output"
    results = ingest(science(tiny_zoo), input_data, output, QUICK)
    assert results.complete and read_results(output) == results
    assert sorted(c.id for c in results.checkpoints) == sorted(CHECKPOINTS)
    assert results.n_samples >= 200 and results.validation.max_prompt_tokens > 5

    # the metric equals lm-eval's own backend; so do the log-likelihoods behind it
    checkpoint = input_data / CHECKPOINTS[2]
    direct_metric, direct_lls = lm_eval_direct(science(tiny_zoo), checkpoint)
    by_id = {c.id: c.metrics["acc,none"] for c in results.checkpoints}
    assert by_id[CHECKPOINTS[2]] == direct_metric
    with contextlib.chdir(tmp_path):
        plan = preflight(science(tiny_zoo), tmp_path / "plan", QUICK).plan
    ours = engine_responses(checkpoint, [(r.kind, r.arguments) for r in plan.requests])
    mine = {tuple(json.loads(r.arguments)): ll for r, (ll, _) in zip(plan.requests, ours)}
    assert mine.keys() == direct_lls.keys()
    assert max(abs(mine[k] - direct_lls[k]) for k in mine) <= 1e-4

    # a rerun evaluates only what is missing
    data = json.loads((output / "ingestion_results.json").read_text())
    data["checkpoints"] = [c for c in data["checkpoints"] if c["id"] != CHECKPOINTS[1]]
    data["complete"] = False
    (output / "ingestion_results.json").write_text(json.dumps(data))
    evaluated = []
    real = engine.read_checkpoint
    monkeypatch.setattr(engine, "read_checkpoint", lambda path: evaluated.append(path) or real(path))
    again = ingest(science(tiny_zoo), input_data, output, QUICK)
    assert evaluated == [input_data / CHECKPOINTS[1]]
    assert {c.id: c.metrics for c in again.checkpoints} == {c.id: c.metrics for c in results.checkpoints}


def test_a_rerun_resumes_only_the_same_task_on_the_same_build(tmp_path, capsys):
    """Earlier results of another task, or of the same task on another build of the set (the
    same checkpoint ids, other weights: a rebuilt embedded set), are not resumed."""
    results = IngestionResults("t", "acc,none", True, 10, plan_digest="task", weights_digest="build-1")
    write_results(results, tmp_path)
    assert _resumed(tmp_path, "task", "build-1") == results
    assert _resumed(tmp_path, "another-task", "build-1") is None
    assert _resumed(tmp_path, "task", "build-2") is None
    assert "other checkpoints (another build of the set): starting over" in capsys.readouterr().err


def write_group_submission(folder: Path) -> Path:
    """A group of two subtasks in subfolders: csv data with few-shot examples and a
    description template, parquet data with a !function filter and a custom aggregation,
    a shared base config reached by include, and a weighted group aggregate."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {
        "metadata.yaml": "task_name: numbers_group\ntask_metric: acc,none\n",
        "group.yaml": "group: numbers_group\ntask: [numbers_csv, numbers_parquet]\naggregate_metric_list:\n"
                      "  - metric: acc\n    aggregation: mean\n    weight_by_size: true\n",
        "base.yaml": "output_type: multiple_choice\ntest_split: test\ndoc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
                     "doc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n    aggregation: mean\n",
        "csv/numbers_csv.yaml": "include: ../base.yaml\ntask: numbers_csv\ndataset_path: csv\ndataset_kwargs:\n"
                                "  data_files: {test: numbers.csv, train: shots.csv}\nfewshot_split: train\n"
                                "num_fewshot: 2\nfewshot_config: {sampler: first_n}\n"
                                "doc_to_choice: '{{[a|string, b|string, c|string]}}'\n"
                                "description: \"Answer questions about {{topic}}.\\n\\n\"\n",
        "parquet/numbers_parquet.yaml": "include: ../base.yaml\ntask: numbers_parquet\ndataset_path: parquet\n"
                                        "dataset_kwargs:\n  data_files: {test: numbers.parquet}\n"
                                        "process_docs: !function utils.drop_none\ndoc_to_choice: '{{choices}}'\n"
                                        "metric_list:\n  - metric: acc\n    aggregation: !function utils.mean\n",
        "parquet/utils.py": "def drop_none(dataset):\n    return dataset.filter(lambda d: d['question'] is not None)\n\n"
                            "def mean(items):\n    return sum(items) / len(items)\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    rows = ["topic,question,a,b,c,label"] + [f"counting,Which number follows {i}?,{i + 1},{i + 5},{i * 3 + 2},0"
                                            for i in range(60)]
    (folder / "csv" / "numbers.csv").write_text("\n".join(rows) + "\n")
    (folder / "csv" / "shots.csv").write_text("\n".join(rows[:1] + rows[-3:]) + "\n")
    table = pa.table({"question": [f"What is {i} plus {i}?" for i in range(62)],
                      "choices": [[str(2 * i + 1), str(2 * i), str(i)] for i in range(62)], "label": [1] * 62})
    pq.write_table(table, folder / "parquet" / "numbers.parquet")
    return folder


def test_few_shot_examples_drawn_per_sample_are_lm_evals_draws(tiny_zoo, input_data, tmp_path):
    """lm-eval's default sampler draws each sample's examples from a generator its
    evaluator leaves unseeded: the plan and score children, and lm-eval's own command,
    must draw the same (seeded as `simple_evaluate` seeds it), or scoring cannot find the
    responses of the prompts it builds."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    task = few_shot_task(tmp_path / "task", n=100, sampler="default")
    results = ingest(task, input_data, tmp_path / "output", QUICK)
    assert results.complete and len(results.checkpoints) == len(CHECKPOINTS)
    with contextlib.chdir(task):
        out = simple_evaluate(model="hf", model_args=f"pretrained={input_data / CHECKPOINTS[2]},dtype=float32",
                              tasks=["numbers"], task_manager=TaskManager(include_path=str(task),
                                                                          include_defaults=False),
                              batch_size=64, device="cpu", bootstrap_iters=0, verbosity="ERROR")
    by_id = {c.id: c.metrics["acc,none"] for c in results.checkpoints}
    assert by_id[CHECKPOINTS[2]] == out["results"]["numbers"]["acc,none"]


def test_a_group_with_fewshot_helpers_and_every_data_format_equals_lm_eval(tiny_zoo, input_data, tmp_path):
    folder = write_group_submission(tmp_path / "group")
    plan = preflight(folder, tmp_path / "plan", QUICK).plan
    contexts = [json.loads(r.arguments)[0] for r in plan.requests if r.task == "numbers_csv"]
    assert all(c.startswith("Answer questions about counting.\n\n") and c.count("Question:") == 3 for c in contexts)
    only_one = tmp_path / "one"
    write_manifest(CheckpointManifest([ManifestEntry("m/ckpt", path=str(input_data / CHECKPOINTS[2]))]), only_one)
    results = ingest(folder, only_one, tmp_path / "output", QUICK)
    assert results.n_samples == 122
    direct, _ = lm_eval_direct(folder, input_data / CHECKPOINTS[2])
    assert results.checkpoints[0].metrics == {"acc,none": direct}
    assert 0 < direct < 1


GENERATIVE = {
    "generate_until": ("output_type: generate_until\ndoc_to_choice: null\ndoc_to_target: '{{choices[0]}}'\n"
                       "generation_kwargs: {until: ['\\n'], max_gen_toks: 4, do_sample: false}\n"
                       "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n",
                       "exact_match,none", True),
    "loglikelihood_rolling": ("output_type: loglikelihood_rolling\ndoc_to_target: '{{question}}'\n"
                              "metric_list:\n  - metric: word_perplexity\n", "word_perplexity,none", False),
}


@pytest.mark.parametrize("kind", sorted(GENERATIVE))
def test_generation_and_rolling_loglikelihood_equal_lm_eval(tiny_zoo, input_data, tmp_path, kind):
    extra, metric, higher_is_better = GENERATIVE[kind]
    folder = make_task(tmp_path / "s", 100, yaml_extra=extra)
    (folder / "metadata.yaml").write_text(f"task_name: numbers\ntask_metric: {metric}\n")
    only_one = tmp_path / "one"
    write_manifest(CheckpointManifest([ManifestEntry("m/ckpt", path=str(input_data / CHECKPOINTS[2]))]), only_one)
    results = ingest(folder, only_one, tmp_path / "output", QUICK)
    assert results.higher_is_better is higher_is_better
    direct, _ = lm_eval_direct(folder, input_data / CHECKPOINTS[2])
    if kind == "generate_until":  # greedy text: identical
        assert results.checkpoints[0].metrics == {metric: direct}
    else:  # a perplexity: the exponential of a mean log-likelihood per word, summed in another order
        assert math.log(results.checkpoints[0].metrics[metric]) == pytest.approx(math.log(direct), abs=1e-5)


def test_a_broken_checkpoint_is_retried_once_then_named(tiny_zoo, input_data, tmp_path, monkeypatch):
    broken = input_data / CHECKPOINTS[1]
    (broken / "model.safetensors").write_bytes(b"not a tensor file")
    attempts = []
    real = engine.read_checkpoint
    monkeypatch.setattr(engine, "read_checkpoint", lambda path: attempts.append(path) or real(path))
    with pytest.raises(UserError, match=rf"checkpoint {CHECKPOINTS[1]} failed to load twice .*kept in"):
        ingest(science(tiny_zoo), input_data, tmp_path / "output", QUICK)
    assert attempts.count(broken) == 2
    kept = read_results(tmp_path / "output")
    assert not kept.complete and CHECKPOINTS[1] not in kept.done_ids()
    # the checkpoints evaluated before the broken one are kept (the next one was already being read)
    assert len(kept.checkpoints) == list(dict.fromkeys(attempts)).index(broken)


def test_hub_checkpoints_resolve_through_the_hf_cache_offline(tiny_zoo, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    zoo, _ = tiny_zoo
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiiuae--dense-tiny-arch1"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(zoo / CHECKPOINTS[0], repo / "snapshots" / commit / "iter_0000012")
    entry = ManifestEntry("dense-tiny-arch1/iter_0000012", repo="tiiuae/dense-tiny-arch1", subfolder="iter_0000012")
    path = resolve(entry, tmp_path, cache_dir=tmp_path / "hub")
    assert path == repo / "snapshots" / commit / "iter_0000012"

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(path).config.model_type == "llama"
    missing = ManifestEntry("x/iter_1", repo="tiiuae/dense-tiny-arch1", subfolder="iter_0000999", revision=commit)
    with pytest.raises(UserError, match=r"checkpoint x/iter_1: tiiuae/dense-tiny-arch1/iter_0000999@0123.* not in the"):
        resolve(missing, tmp_path, cache_dir=tmp_path / "hub")


def test_codabench_entry_point_ingests_and_prints_no_checkpoint_values(tiny_zoo, input_data, tmp_path):
    """ingestion_program/ingest.py, the file Codabench's metadata.yaml runs."""
    command = yaml.safe_load((REPO / "ingestion_program" / "metadata.yaml").read_text())["command"]
    assert command.split()[1] == "/app/program/ingest.py"
    proc = subprocess.run(
        [sys.executable, str(REPO / "ingestion_program" / "ingest.py"), "--submission", str(science(tiny_zoo)),
         "--input-data", str(input_data), "--output", str(tmp_path / "out"), "--plan-timeout", "120"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "on 3 checkpoints" in proc.stdout
    results = read_results(tmp_path / "out")  # what the scoring step's report and judge read
    assert results.chance_level == 0.25  # four choices, one right
    drawn = results.alignment_samples  # every sample: the scoring step draws with the phase's secret
    assert len(drawn) == results.n_samples and len({(s.task, s.doc_id) for s in drawn}) == results.n_samples
    assert all(s.text.startswith("Question: ") and "\nA) " in s.text and "\nAnswer: " in s.text for s in drawn)
    for result in read_results(tmp_path / "out").checkpoints:
        value = result.metrics["acc,none"]
        for text in (repr(value), f"{value:.4f}", f"{value:.3f}"):
            assert text not in proc.stdout + proc.stderr


def test_validate_reports_samples_prompts_and_leakage(tiny_zoo, tmp_path, capsys, monkeypatch):
    tokenizer = str(tiny_zoo[0] / "tokenizer")
    assert main(["validate", str(science(tiny_zoo)), "--tokenizer", tokenizer]) == 0
    out = capsys.readouterr().out
    assert f"task '{SCIENCE_TASK}'" in out and "longest prompt:" in out and out.strip().endswith("valid")
    # the set's tokenizer folder: counted on the rule's scale (its manifest), the tokenizer named apart
    assert re.search(r"longest prompt: \d+ tokens \(sample \d+\) \(counted as [\d,]+ tokens of the checkpoints' "
                     r"tokenizer / [\d.]+: .*\); counted with the tokenizer of .*tokenizer$", out, re.MULTILINE)
    # a group: the longest prompt's subtask is named (the CSV subtask's two examples and description)
    main(["validate", str(write_group_submission(tmp_path / "group")), "--tokenizer", tokenizer])
    assert re.search(r"longest prompt: \d+ tokens \(subtask numbers_csv sample \d+\)", capsys.readouterr().out)

    # a built set named with --zoo, as run and diagnose take it: its first checkpoint counts the prompts
    assert main(["validate", str(science(tiny_zoo)), "--zoo", str(tiny_zoo[0])]) == 0
    out = capsys.readouterr().out
    assert "longest prompt:" in out and "(counted as" in out and out.strip().endswith("valid")

    # no tokenizer: "not checked" is the verdict, not "valid"; a tokenizer path or a set that is not one: refused
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(science(tiny_zoo))]) == 1
    out = capsys.readouterr().out
    assert "prompt lengths not checked: no tokenizer" in out
    assert out.strip().splitlines()[-1] == ("not checked: every other rule passes, but the prompt-length rule needs a "
                                            "tokenizer (above)")
    assert main(["validate", str(science(tiny_zoo)), "--zoo", "nowhere"]) == 2
    assert capsys.readouterr().err == ("error: --zoo nowhere holds no built checkpoint set (no manifest.yaml there); "
                                       "build one with 'e2lmc zoo build --out nowhere', or give --checkpoint\n")
    assert main(["validate", str(science(tiny_zoo)), "--tokenizer", "zoo/default/tokenizer"]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == (
        "error: --checkpoint zoo/default/tokenizer is not a checkpoint or tokenizer folder (no tokenizer files there: "
        f"it does not exist; relative paths start in {tmp_path})\n")

    leaky = make_task(tmp_path / "leaky", 120, question=lambda i: f"The number after {i} is {i + 1}. Which is it?")
    assert main(["validate", str(leaky), "--tokenizer", tokenizer]) == 1
    out = capsys.readouterr().out
    assert "leakage: 120 samples (100.0%)" in out and "task 'numbers' sample 0: '1'" in out


@pytest.mark.parametrize(("choices", "question"), [
    ("['true', 'false']", lambda i: f"{i} is even: true or false?"),  # the prompt names every choice
    ("['(A)', '(B)', '(C)']", lambda i: f"Which number follows {i}?\n(A) {i + 1}\n(B) {i + 2}\n(C) {i + 3}"),
    ("['A', 'B', 'C']", lambda i: f"Which number follows {i}? Options: A) {i + 1} B) {i + 2} C) {i + 3}"),
])
def test_a_prompt_that_lists_every_choice_leaks_nothing_by_that(tmp_path, choices, question):
    task = make_task(tmp_path / "task", 120, question=question, yaml_extra=f"doc_to_choice: {choices}\n")
    assert preflight(task, tmp_path / "work", QUICK).plan.leakage == []


def test_lettered_choices_leak_only_when_the_gold_options_text_shows_elsewhere(tmp_path):
    """MMLU's layout: options "A. …" in the prompt, choices the letters. The letter is in the
    prompt by design; the gold option's text elsewhere in it is a leak."""
    def options(i: int) -> str:
        return f"Which number follows {i}?\nA. {i + 1}\nB. {i + 2}\nC. {i + 3}"

    lettered = make_task(tmp_path / "lettered", 120, question=options, yaml_extra="doc_to_choice: ['A', 'B', 'C']\n")
    planned = preflight(lettered, tmp_path / "work", QUICK).plan
    assert planned.leakage == [] and all(sample.gold == [0] for sample in planned.samples)
    told = make_task(tmp_path / "told", 120, question=lambda i: f"{options(i)}\n(It is {i + 1}.)",
                     yaml_extra="doc_to_choice: ['A', 'B', 'C']\n")
    leaks = preflight(told, tmp_path / "work2", QUICK).plan.leakage
    assert len(leaks) == 120 and leaks[5].answer == "6" and "(It is 6.)" in leaks[5].excerpt

    def shown_an_example(i: int) -> str:  # an example answered A before the asked question: no leak
        return f"{options(i + 50)}\nAnswer: A\n\n{options(i)}"

    def told_before(i: int) -> str:  # a leak ahead of a blank line is a leak too
        return f"The answer to the next question is {i + 1}.\n\n{options(i)}"

    def same_question(i: int) -> str:  # every sample's prompt starts alike: its options still count as options
        return f"Which comes next?\nA. {i + 1}\nB. {i + 2}\nC. {i + 3}"

    for name, question, leaking in (("example", shown_an_example, 0), ("before", told_before, 120),
                                    ("same", same_question, 0)):
        task = make_task(tmp_path / name, 120, question=question, yaml_extra="doc_to_choice: ['A', 'B', 'C']\n")
        assert len(preflight(task, tmp_path / f"work-{name}", QUICK).plan.leakage) == leaking, name


def _rows_with_a_broken_line(n: int, broken: int) -> str:
    """`n` JSON Lines rows of make_task's kind, line `broken` cut short."""
    rows = [json.dumps({"question": f"Which number follows {i}?", "choices": [str(i + 1), str(i + 2)], "label": 0})
            for i in range(n)]
    rows[broken - 1] = rows[broken - 1][:-3]
    return "\n".join(rows) + "\n"


def _rows_changed(n: int, index: int, **fields) -> str:
    """make_task's JSON Lines with `fields` set on the row at `index`."""
    rows = [{"question": f"Which number follows {i}?", "choices": [str(i + 1), str(i + 2), str(i + 3)], "label": 0}
            for i in range(n)]
    rows[index].update(fields)
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n", "extra", "message"),
    [
        (99, {}, r"task 'numbers' has 99 samples; the rules allow 100 to 15,000"),
        (15_001, {}, r"task 'numbers': data file 'numbers.jsonl' has more than 15,000 rows \(split 'test'\); the "
                     r"rules allow at most 15,000 samples, so reading stopped there"),
        (120, {"yaml_extra": "dataset_kwargs:\n  data_files:\n    test: nowhere.jsonl\n"},
         r"task 'numbers': data file 'nowhere.jsonl' is not in the submission"),
        (120, {"yaml_extra": "doc_to_txt: '{{question}}'\n"},
         r"numbers.yaml: unknown key 'doc_to_txt' \(did you mean 'doc_to_text'\?\)"),
        (120, {"yaml_extra": "metric_list:\n- metric: bleurt\n"},
         r"metric 'bleurt' is not one of lm-eval's built-in metrics"),
        (120, {"yaml_extra": "metric_list:\n- metric: acc_nrom\n"},
         r"metric 'acc_nrom' is not one of lm-eval's built-in metrics \(did you mean 'acc_norm'\?\); use"),
        (120, {"yaml_extra": "process_docs: !function helpers.broken\n",
               "files": {"helpers.py": "def broken(dataset):\n    return dataset.map(lambda d: 1 / 0)\n"}},
         r"the submission's code raised ZeroDivisionError in helpers.py, line 2: division by zero"),
        (120, {"yaml_extra": "doc_to_text: '{{ cycler.__init__.__globals__.os.system(\"true\") }}'\n"},
         r"a prompt template of the submission tried to reach Python internals"),
        (120, {"yaml_extra": "doc_to_text: 'Q: {{questoin}}'\n"},
         r"task 'numbers': its doc_to_text template failed: 'questoin' is undefined \(did you mean 'question'\?\); "
         r"the data's fields are: question, choices, label$"),
        (120, {"yaml_extra": "doc_to_target: \"{{ 'ABC'[label] }}\"\n"},
         r"task 'numbers' sample 0: its gold answer is the text 'A', which is neither one of its 3 choices \('1', "
         r"'2', '3'\) nor an index 0–2 of them, so no model could answer it right \(120 of 120 samples are so\): a "
         r"letter needs choices that are letters too, or a doc_to_target that gives the choice's index"),
        (120, {"yaml_extra": "doc_to_target: '{{ label + 3 }}'\n"},
         r"task 'numbers': the gold answer of its first document is index 3, past its 3 choices \(lm-eval checks the "
         r"first document when it builds the task\): make doc_to_target give the right choice's index from 0, or its "
         r"text$"),
        (120, {"yaml_extra": "doc_to_target: '{{ label if question != \"Which number follows 5?\" else 9 }}'\n"},
         r"task 'numbers' sample 5: its gold answer is 9, which is neither one of its 3 choices \('6', '7', '8'\) nor "
         r"an index 0–2 of them, so no model could answer it right \(1 of 120 samples are so\): make doc_to_target "
         r"give the right choice's text, exactly, or its index from 0 as a number$"),
        (120, {"yaml_extra": "doc_to_target: '{{ [label, 7] }}'\n", "valid": True}, ""),  # one gold in range: scored
        (120, {"yaml_extra": "doc_to_target: \"{{ 'ABC'[label] }}\"\nprocess_results: !function helpers.score\n",
               "files": {"helpers.py": "def score(doc, results):\n    return {'acc': 1.0}\n"}, "valid": True},
         ""),  # a metric of the submission's own reads the target its own way
        (120, {"yaml_extra": "doc_to_target: '{{ label == 0 }}'\n"},  # a template renders text: 'True' is no choice
         r"its gold answer is the text 'True', which is neither one of its 3 choices"),
        (120, {"yaml_extra": "doc_to_target: label\n", "valid": True,  # a JSON true is index 1 to lm-eval
               "files": {"numbers.jsonl": "".join(json.dumps({"question": f"Is {i} even?", "choices": ["no", "yes"],
                                                              "label": i % 2 == 0}) + "\n" for i in range(120))}},
         ""),
        (120, {"yaml_extra": "test_split: train\n"},
         r"task 'numbers': its test_split 'train' is not a split of its data, whose splits are: test \(with "
         r"data_files, its keys name the splits\)$"),
        (120, {"yaml_extra": "fewshot_split: dev\nnum_fewshot: 1\n"},
         r"task 'numbers': its fewshot_split 'dev' is not a split of its data, whose splits are: test"),
        (120, {"files": {"numbers.jsonl": _rows_with_a_broken_line(120, 8)}},
         r"task 'numbers': data file 'numbers.jsonl' line 8 is not valid JSON \(Expecting value at column \d+\); "
         r"each line of a JSON Lines file must be one JSON object$"),
        (120, {"files": {"numbers.jsonl": _rows_with_a_broken_line(120, 8).replace("\n", "\n[1, 2]\n", 1)}},
         r"task 'numbers': data file 'numbers.jsonl' line 2 is a JSON list, not an object"),
        (120, {"yaml_extra": "doc_to_target: '{{label}'\n"},
         r"task 'numbers': its doc_to_target template failed: unexpected '}'; the data's fields are: question, "
         r"choices, label$"),
        (120, {"yaml_extra": "custom_dataset: !function helpers.load\n",  # a chain of causes made circular
               "files": {"helpers.py": "def load(**kwargs):\n    error = ValueError('my loader failed')\n"
                                       "    raise error from error\n"}},
         r"task 'numbers': its data files \(numbers.jsonl\) could not be read \(my loader failed\)$"),
        (120, {"files": {"numbers.jsonl": _rows_changed(120, 40, choices="a, b, c")}},
         r"task 'numbers' document 40 of its evaluated split: its doc_to_choice '\{\{choices\}\}' gave 'a, b, c', "
         r"which is not a list of choices: give each document its choices as a list in the data"),
        (120, {"files": {"numbers.jsonl": _rows_changed(120, 5, choices=[])}},
         r"task 'numbers' document 5 of its evaluated split: its doc_to_choice '\{\{choices\}\}' gave no choices"),
        (120, {"yaml_extra": "doc_to_choice: '{{question}}'\n"},
         r"task 'numbers' document 0 of its evaluated split: its doc_to_choice '\{\{question\}\}' gave 'Which "
         r"number follows 0\?', which is not a list of choices"),
        (120, {"yaml_extra": "dataset_path: csv\ndataset_kwargs:\n  data_files:\n    test: numbers.csv\n"
                             "doc_to_choice: '{{[a, b, c]}}'\n",
               "files": {"numbers.csv": "question,a,b,c,label\n" + "".join(
                   f"Which number follows {i}?,{i + 1},{i + 2},{i + 3},0{',x,y' if i == 19 else ''}\n"
                   for i in range(120))}},
         r"task 'numbers': its data files \(numbers.csv\) could not be read \(Error tokenizing data. C error: "
         r"Expected 5 fields in line 21, saw 7\); a field that holds a comma must be in double quotes"),
        (120, {"yaml_extra": "dataset_path: csv\ndataset_kwargs:\n  data_files:\n    test: numbers.csv\n"
                             "doc_to_choice: '{{[a, b, c]}}'\n",
               "files": {"numbers.csv": "question,a,b,c,label\n" + "".join(
                   f"Which number follows {i}?,{i + 1},{i + 2},{i + 3},0\n" for i in range(120))}},
         r"task 'numbers': the choices of its first document are not all texts \(1, 2, 3\): numbers, as a CSV's "
         r"numeric columns are read; make doc_to_choice give texts, e.g. '\{\{\[a\|string, b\|string\]\}\}'$"),
        (120, {"files": {"numbers.jsonl": "".join(json.dumps({"question": f"Which number follows {i}?", "choices": [
            str(i + 1), str(i + 2), str(i + 3)], "label": 0.0}) + "\n" for i in range(120))}},  # a decimal index
         r"its gold answer is the text '0.0', .*: an index written as the decimal 0.0 \(a JSON number 0.0, or a CSV "
         r"column read as decimals because one of its cells is empty\): make it a whole number$"),
    ],
)
def test_bad_tasks_are_refused_before_any_model(tmp_path, n, extra, message):
    valid = extra.pop("valid", False)  # a near miss the rules accept
    folder = make_task(tmp_path / "s", n, **extra)
    if valid:
        assert preflight(folder, tmp_path / "work", QUICK).plan.n_samples == n
        return
    with pytest.raises(UserError, match=message):
        preflight(folder, tmp_path / "work", QUICK)


def hub_dataset_task(folder: Path) -> Path:
    """The numbers task reading the hub dataset 'someone/numbers' instead of its file."""
    make_task(folder, 120)
    text = (folder / "numbers.yaml").read_text().replace("dataset_path: json", "dataset_path: someone/numbers")
    (folder / "numbers.yaml").write_text(text.replace("dataset_kwargs:\n  data_files:\n    test: numbers.jsonl\n", ""))
    return folder


@pytest.mark.slow
def test_hub_datasets_load_from_the_local_cache_offline(tmp_path, monkeypatch):
    import datasets

    folder = hub_dataset_task(tmp_path / "s")
    # Fill the datasets cache the way an earlier online load would have (datasets' own
    # layout: <namespace>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow).
    prepared = tmp_path / "prepared"
    datasets.load_dataset("json", data_files={"test": str(folder / "numbers.jsonl")}, cache_dir=str(prepared))
    (source,) = (p for p in (prepared / "json").glob("*/*/*") if p.is_dir())
    target = tmp_path / "datasets" / "someone___numbers" / "default" / "0.0.0" / source.name
    shutil.copytree(source, target)
    for arrow in target.glob("json-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("json-", "numbers-")))
    for name, value in (("HF_DATASETS_CACHE", str(tmp_path / "datasets")), ("HF_HUB_OFFLINE", "1"),
                        ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    plan = preflight(folder, tmp_path / "work", QUICK).plan
    assert plan.n_samples == 120

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"dataset 'someone/numbers' could not be loaded .* ship the data files"):
        preflight(folder, tmp_path / "work2", QUICK)


def test_prompt_over_2048_tokens_names_the_sample(tiny_zoo, tmp_path):
    words = " ".join(f"w{i}x" for i in range(2100))
    folder = make_task(tmp_path / "s", 120, question=lambda i: words if i == 37 else f"Which number follows {i}?")
    plan = preflight(folder, tmp_path / "work", QUICK).plan
    with pytest.raises(UserError, match=r"task 'numbers' sample 37: its prompt has [\d,]+ tokens; the limit is 2,048"):
        check_prompts(plan, tiny_zoo[0] / "tokenizer")


def test_on_the_embedded_set_the_prompt_rule_counts_real_models_tokens(tiny_zoo, tmp_path):
    """A prompt over 2,048 tokens of the embedded set's small tokenizer but within 2,048 of a
    real model's passes there (the manifest's scale), and says how it was counted."""
    from e2lmc.embedded.zoo import PRESETS

    words = " ".join(f"w{i}x" for i in range(700))
    folder = make_task(tmp_path / "s", 120, question=lambda i: words if i == 37 else f"Which number follows {i}?")
    plan = preflight(folder, tmp_path / "work", QUICK).plan
    with pytest.raises(UserError, match=r"sample 37: its prompt has [\d,]+ tokens; the limit is 2,048$"):
        check_prompts(plan, tiny_zoo[0] / "tokenizer")  # a real series' tokenizer counts for itself
    scale = read_manifest(tiny_zoo[0]).tokens_per_rule_token
    assert scale == PRESETS["tiny"].tokens_per_rule_token > 3
    validation, _ = check_prompts(plan, tiny_zoo[0] / "tokenizer", scale)
    assert validation.max_prompt_tokens > 2048 >= validation.rule_prompt_tokens
    assert validation.rule_prompt_tokens == math.ceil(validation.max_prompt_tokens / scale)
    assert f"tokens of the checkpoints' tokenizer / {scale:g}" in validation.how_counted()


@pytest.mark.slow
def test_what_helpers_print_neither_breaks_nor_floods_the_plan(tmp_path):
    helper = ("import sys\ndef noisy(dataset):\n    print('{\"error\": \"forged\"}')\n"
              "    sys.stdout.write('x' * 5_000_000)\n    sys.stderr.write('y' * 5_000_000)\n    return dataset\n")
    folder = make_task(tmp_path / "s", 120, yaml_extra="process_docs: !function helpers.noisy\n",
                       files={"helpers.py": helper})
    plan = preflight(folder, tmp_path / "work", QUICK).plan
    assert plan.n_samples == 120 and len(plan.requests) == 360


def test_function_resolution_is_confined_at_run_time_too(tmp_path):
    from e2lmc.sandboxed.guards import _submission_function

    (tmp_path / "helpers.py").write_text("def f(x):\n    return x\n")
    assert _submission_function(tmp_path, "helpers.f", tmp_path)(3) == 3
    with pytest.raises(UserError, match="!function os.system does not name a function in a .py file"):
        _submission_function(tmp_path, "os.system", tmp_path)
    with pytest.raises(UserError, match="helpers.py has no function 'g'"):
        _submission_function(tmp_path, "helpers.g", tmp_path)


@pytest.mark.slow
def test_a_helper_that_never_returns_is_stopped(tmp_path):
    folder = make_task(tmp_path / "s", 120, yaml_extra="process_docs: !function helpers.forever\n",
                       files={"helpers.py": "def forever(dataset):\n    while True:\n        pass\n"})
    with pytest.raises(UserError, match=r"did not finish within 20 s, so it was stopped"):
        preflight(folder, tmp_path / "work", Limits(plan_seconds=20))


@pytest.mark.parametrize("role", ["released", "hidden"])
def test_errors_show_in_full_on_released_checkpoints_only(tiny_zoo, input_data, tmp_path, role):
    helper = (
        "def process(doc, results):\n"
        "    lls = [ll for ll, _ in results]\n"
        "    if any(ll != 0.0 for ll in lls):  # only real responses, never the plan's placeholders\n"
        "        raise ValueError(f'secret {lls}')\n"
        "    return {'acc': 1.0}\n"
    )
    folder = make_task(tmp_path / "s", 120, yaml_extra="process_results: !function helpers.process\n"
                       "metric_list:\n- metric: acc\n  aggregation: mean\n", files={"helpers.py": helper})
    manifest = read_manifest(input_data)
    write_manifest(CheckpointManifest([replace(e, role=role) for e in manifest.checkpoints]), input_data)
    with pytest.raises(InvalidSubmission) as caught:
        ingest(folder, input_data, tmp_path / "output", QUICK)
    message = str(caught.value)
    if role == "released":  # released values are public: the error helps
        assert "raised ValueError in helpers.py, line 4: secret [-" in message
    else:
        assert message.startswith(HIDDEN_FAILURE) and "secret" not in message and "ValueError" not in message
    assert yaml.safe_load((tmp_path / "output" / "ingestion_results.json").read_text())["checkpoints"] == []


def test_a_run_killed_with_sigkill_resumes_to_byte_identical_scores(tiny_zoo, tmp_path):
    """The secret evaluation order changes from run to run; the results and scores do not."""
    import signal
    import time

    from e2lmc.scoring.program import run_scoring

    zoo, _ = tiny_zoo
    manifest = read_manifest(zoo)
    picked = [replace(e, path=str(zoo / e.path)) for e in manifest.checkpoints if e.id.startswith("dense-small-arch1/")]
    write_manifest(CheckpointManifest(picked), tmp_path / "input")
    reference = tmp_path / "reference"
    shutil.copytree(zoo / "reference", reference)
    argv = [sys.executable, "-m", "e2lmc.cli", "ingest", "--submission", str(science(tiny_zoo)),
            "--input-data", str(tmp_path / "input")]
    scores = []
    for name, kill in (("whole", False), ("killed", True)):
        output = tmp_path / name
        if kill:
            run = subprocess.Popen([*argv, "--output", str(output)], stderr=subprocess.DEVNULL)
            while not (output / "ingestion_results.json").is_file() or \
                    len(read_results(output).checkpoints) < 3:
                time.sleep(0.1)
            run.send_signal(signal.SIGKILL)
            run.wait()
            assert not read_results(output).complete
        assert subprocess.run([*argv, "--output", str(output)], capture_output=True).returncode == 0
        evaluation = run_scoring(output, reference, tmp_path / f"scores-{name}", allow_partial=True)
        assert evaluation.n_missing == read_reference(reference).n_checkpoints - len(picked)
        scores.append((tmp_path / f"scores-{name}" / "scores.json").read_bytes())
        results = json.loads((output / "ingestion_results.json").read_text())
        assert [c["id"] for c in results["checkpoints"]] == [e.id for e in picked]  # manifest order
    assert scores[0] == scores[1]


def test_requests_beyond_the_context_are_counted_as_lm_eval_truncates_them(tiny_zoo, input_data, tmp_path, capfd):
    """The five-shot template exceeds the tiny set's 64-token context: the count equals
    lm-eval's HF backend's own (context + continuation longer than max_length + 1), and it
    is said in the log, the results, the report and by validate."""
    from lm_eval.models.huggingface import HFLM

    template = REPO / "starting_kit" / "sample_submissions" / "e2lmc_mmluvar_template"
    results = ingest(template, input_data, tmp_path / "out", QUICK)
    v = results.validation
    checkpoint = input_data / CHECKPOINTS[0]
    lm = HFLM(pretrained=str(checkpoint), device="cpu", dtype="float32")
    plan = preflight(template, tmp_path / "plan", QUICK).plan
    excess = [len(c) + len(t) - (lm.max_length + 1)
              for c, t in (lm._encode_pair(*json.loads(r.arguments)) for r in plan.requests)]
    assert v.context_tokens == lm.max_length == 64
    assert v.truncated_requests == sum(e > 0 for e in excess) > 0 and v.max_truncated_tokens == max(excess)
    assert f"{v.truncated_requests:,} of {len(plan.requests):,} requests exceed the checkpoints' context of 64 " \
           "tokens" in capfd.readouterr().err

    assert main(["score", "--res", str(tmp_path / "out"), "--ref", str(tiny_zoo[0] / "reference"),
                 "--output", str(tmp_path / "scores"), "--allow-partial"]) == 0
    html = (tmp_path / "scores" / "detailed_results.html").read_text()
    assert f">{v.truncated_requests} (cut by up to {v.max_truncated_tokens} tokens)</td>" in html

    assert main(["validate", str(template), "--checkpoint", str(checkpoint)]) == 1
    out = capfd.readouterr().out
    assert "exceed the checkpoints' context of 64 tokens" in out and out.strip().endswith("was designed to be")
    assert main(["validate", str(template), "--checkpoint", str(checkpoint), "--allow-truncation"]) == 0
    assert main(["validate", str(template), "--tokenizer", str(tiny_zoo[0] / "tokenizer")]) == 0
    assert "truncation not checked" in capfd.readouterr().out


def test_overflow_follows_hflms_rules_for_likelihoods_and_generations():
    from e2lmc.engine.packing import Tokenized, overflow

    tokenized = Tokenized(pairs={0: ([1] * 10, [2] * 3), 1: ([1] * 4, [2])}, rolling={5: [1] * 500},
                          contexts={2: [1] * 10, 3: [1] * 40}, gen_kwargs={2: {"until": ["\n"]},
                                                                          3: {"until": ["\n"], "max_gen_toks": 8}})
    assert overflow(tokenized, 300) == overflow(tokenized, 266)  # 10 + 256 default new tokens fit in 266
    assert overflow(tokenized, 300).requests == 0
    assert overflow(tokenized, 265) == type(overflow(tokenized, 265))(1, 1)  # the default-length generation
    assert overflow(tokenized, 12).requests == 2  # 10 + 3 = 12 + 1 fits; 10 + 256 and 40 + 8 do not
    assert overflow(tokenized, 11).max_excess == 10 + 256 - 11
