"""The three E2LM winners' task shapes, rebuilt from lm-evaluation-harness's
`lm_eval/tasks/e2lmc/` with local data: a nested group reaching its subtasks by tag through
an extension-less template include (noor), a tag group of five-shot subjects
(sciknoweval_mcqa) and a custom aggregation over the choices' log-likelihoods shipped as
an `evaluation.patch` (mmlu_early_training). Each one equals lm-eval's own HF backend, and
its five-shot prompts fit the default embedded set's context: nothing is truncated."""

import json
from pathlib import Path

import pytest
from transformers import LlamaConfig

from e2lmc.embedded.world import git_new_file, load_world, science_samples, tokenizer_texts
from e2lmc.embedded.zoo import PRESETS, train_tokenizer
from e2lmc.formats.manifest import CheckpointManifest, ManifestEntry, write_manifest
from e2lmc.ingestion.preflight import check_prompts, preflight
from e2lmc.ingestion.program import ingest

from .test_ingestion import QUICK, lm_eval_direct

SUBJECTS = {"element": "chemistry", "compound": "chemistry", "quantity": "physics", "planet": "astronomy",
            "moon": "astronomy", "animal": "biology"}


def mmlu_rows(subject: str) -> list[dict]:
    """MMLU-layout questions about the world's facts of one subject, a few sentences long."""
    world = load_world()
    rows = []
    for fact, sample in zip(world.facts, science_samples(world, seed=0)):
        if SUBJECTS[fact.kind] == subject:
            question = (f"In a {subject} class, the teacher reviews what the students learned about "
                        f"{fact.labels['kind']}s this term and then asks: {fact.question}")
            rows.append({"question": question, "subject": subject, "choices": sample["choices"],
                         "answer": sample["label"]})
    return rows


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def subject_files(prefix: str, template: str, tag: str) -> dict[str, str]:
    files = {}
    for subject in ("chemistry", "physics", "biology"):
        rows = mmlu_rows(subject)
        files |= {f"data/{subject}_dev.jsonl": jsonl(rows[:5]), f"data/{subject}_test.jsonl": jsonl(rows[5:])}
        files[f"{prefix}_{subject}.yaml"] = (
            f'"dataset_kwargs": {{"data_files": {{"dev": "data/{subject}_dev.jsonl", '
            f'"test": "data/{subject}_test.jsonl"}}}}\n'
            f'"description": "The following are multiple choice questions (with answers) about {subject}.\\n\\n"\n'
            f'"include": "{template}"\n"tag": "{tag}"\n"task": "{prefix}_{subject}"\n"task_alias": "{subject}"\n')
    return files


TEMPLATE = """dataset_path: json
output_type: multiple_choice
test_split: test
fewshot_split: dev
num_fewshot: 5
fewshot_config:
  sampler: first_n
doc_to_text: "Question: {{question.strip()}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def noor() -> dict[str, str]:
    return {
        "metadata.yaml": "task_name: noor\ntask_metric: acc,none\n",
        "_noor.yaml": "group: noor\ngroup_alias: noor\ntask:\n  - group: stem\n    task:\n      - noor_stem\n"
                      "    aggregate_metric_list:\n      - metric: acc\n        weight_by_size: True\n"
                      "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: True\nmetadata:\n  version: 2\n",
        "_noor_stem.yaml": "group: noor_stem\ngroup_alias: stem\ntask:\n  - noor_stem_tasks\n"
                           "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: True\n"
                           "metadata:\n  version: 2\n",
        "_noor_template": TEMPLATE,
        **subject_files("noor", "_noor_template", "noor_stem_tasks"),
    }


def sciknoweval() -> dict[str, str]:
    return {
        "metadata.yaml": "task_name: sciknoweval_mcqa\ntask_metric: acc,none\n",
        "_sciknoweval_mcqa.yaml": "group: sciknoweval_mcqa\ngroup_alias: sciknoweval_mcqa (var5shots)\ntask:\n"
                                  "  - sciknoweval_mcqa_task\naggregate_metric_list:\n  - metric: acc\n"
                                  "    weight_by_size: True\nmetadata:\n  version: 2\n",
        "_var5shots_template_yaml": TEMPLATE,
        **subject_files("sciknoweval_mcqa_var5shots", "_var5shots_template_yaml", "sciknoweval_mcqa_task"),
    }


def mmlu_early_training() -> dict[str, str]:
    rows = mmlu_rows("chemistry") + mmlu_rows("physics")
    task = {
        "mmlu_early_training.yaml": "task: mmlu_early_training\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                    "    dev: dev.jsonl\n    test: test.jsonl\ntest_split: test\nfewshot_split: dev\n"
                                    "num_fewshot: 5\nfewshot_config:\n  sampler: first_n\n"
                                    "output_type: multiple_choice\n\"description\": \"The following are multiple "
                                    "choice questions (with answers) about {{subject}}.\\n\\n\"\n"
                                    "doc_to_text: \"Question: {{question.strip()}}\\nAnswer:\"\n"
                                    "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\nmetric_list:\n"
                                    "  - metric: likelihood\n    aggregation: !function custom_metrics.loglikelihood_diff"
                                    "\n    high_is_better: true\nmetadata:\n  version: 1.0\n",
        "custom_metrics.py": "import numpy as np\n\n\ndef loglikelihood_diff(items):\n    diffs = []\n"
                             "    for item in items:\n        target, lls = item\n        target_ll = lls[target]\n"
                             "        others_ll = [ll for i, ll in enumerate(lls) if i != target]\n"
                             "        diffs.append(target_ll - np.mean(others_ll))\n    return np.mean(diffs)\n",
        "dev.jsonl": jsonl(rows[:5]), "test.jsonl": jsonl(rows[5:]),
    }
    patch = "".join(git_new_file(f"lm_eval/tasks/mmlu_early_training/{name}", text) for name, text in task.items())
    return {"metadata.yaml": "task_name: mmlu_early_training\ntask_metric: likelihood,none\n",
            "evaluation.patch": patch}


WINNERS = {"noor": noor, "sciknoweval_mcqa": sciknoweval, "mmlu_early_training": mmlu_early_training}


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def default_context(tmp_path_factory) -> Path:
    """The default set's tokenizer and context without its models: trained from the same
    world text as `e2lmc zoo build --preset default`, in a model folder's layout."""
    preset = PRESETS["default"]
    folder = tmp_path_factory.mktemp("default-context")
    tokenizer = train_tokenizer(tokenizer_texts(load_world(), 0, preset.tokenizer_documents), preset.vocab_size)
    tokenizer.save_pretrained(folder)
    LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=preset.seq_len).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("winner", sorted(WINNERS))
def test_a_winners_task_fits_the_default_set_and_equals_lm_eval(winner, tiny_zoo, default_context, tmp_path):
    folder = write(tmp_path / winner, WINNERS[winner]())
    plan = preflight(folder, tmp_path / "plan", QUICK).plan
    assert plan.task_name == winner and plan.n_samples >= 100
    validation, _ = check_prompts(plan, default_context, PRESETS["default"].tokens_per_rule_token)
    assert validation.context_tokens == PRESETS["default"].seq_len >= 1024
    assert validation.truncated_requests == 0 and 300 < validation.max_prompt_tokens <= validation.context_tokens
    # on a checkpoint, the engine's metric is lm-eval's own
    checkpoint = tiny_zoo[0] / "dense-large-arch1" / "iter_0000060"
    one = write_manifest(CheckpointManifest([ManifestEntry("m/ckpt", path=str(checkpoint))]), tmp_path / "one")
    results = ingest(folder, one.parent, tmp_path / "output", QUICK)
    direct, _ = lm_eval_direct(folder, checkpoint)
    assert results.checkpoints[0].metrics[results.task_metric] == pytest.approx(direct, abs=1e-6)
