"""Record and replay: a submission's metric computed from recorded responses equals
lm-eval's own Hugging Face backend on the same checkpoint."""

import contextlib
import shutil

import pytest

from e2lmc.embedded.world import EVERYDAY_TASK, SCIENCE_TASK
from e2lmc.errors import UserError
from e2lmc.sandboxed.submission import open_submission
from e2lmc.sandboxed.tasks import load_task, record_requests, replay

from .conftest import engine_responses


@pytest.mark.parametrize("task", [SCIENCE_TASK, EVERYDAY_TASK])
def test_replayed_metric_equals_lm_eval_hf_backend(tiny_zoo, tmp_path, task):
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM

    zoo, _ = tiny_zoo
    submission = open_submission(zoo / "tasks" / task, tmp_path)
    task_dict = load_task(submission)
    lm, keys = record_requests(submission, task_dict)
    requests = lm.requests
    assert submission.task_metric in keys
    n_docs = sum(1 for _ in open(next(submission.root.glob("*.jsonl"))))
    assert n_docs * 3 <= len(requests) <= n_docs * 4  # one loglikelihood request per choice

    checkpoint = zoo / "dense-large-arch2" / "iter_0000060"
    replayed = replay(submission, task_dict, dict(zip(requests, engine_responses(checkpoint, list(requests)))))

    lm = HFLM(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=64)
    with contextlib.chdir(submission.root):
        direct = evaluate(lm, load_task(submission), bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    assert replayed[submission.task_metric] == direct["results"][task][submission.task_metric]


def test_undefined_task_and_unproduced_metric_are_named(tiny_zoo, tmp_path):
    zoo, _ = tiny_zoo
    folder = tmp_path / "s"
    shutil.copytree(zoo / "tasks" / SCIENCE_TASK, folder)
    (folder / "metadata.yaml").write_text("task_name: science\ntask_metric: acc,none\n")
    with pytest.raises(UserError, match=f"names task 'science'.*tasks found: {SCIENCE_TASK}"):
        load_task(open_submission(folder, tmp_path / "w1"))

    (folder / "metadata.yaml").write_text(f"task_name: {SCIENCE_TASK}\ntask_metric: f1,none\n")
    submission = open_submission(folder, tmp_path / "w2")
    with pytest.raises(UserError, match=r"'f1,none' is not produced by task '\w+'; it produces: acc,none, "
                                        r"acc_norm,none$"):
        record_requests(submission, load_task(submission))
    (folder / "metadata.yaml").write_text(f"task_name: {SCIENCE_TASK}\ntask_metric: acc_nrom,none\n")
    submission = open_submission(folder, tmp_path / "w3")
    with pytest.raises(UserError, match=r"'acc_nrom,none' is not produced .* \(did you mean 'acc_norm,none'\?\); "):
        record_requests(submission, load_task(submission))


def test_template_injection_is_blocked(tiny_zoo, tmp_path):
    zoo, _ = tiny_zoo
    folder = tmp_path / "s"
    shutil.copytree(zoo / "tasks" / SCIENCE_TASK, folder)
    yaml_path = folder / f"{SCIENCE_TASK}.yaml"
    evil = "{{ cycler.__init__.__globals__.os.system('touch " + str(tmp_path / "pwned") + "') }}"
    yaml_path.write_text(yaml_path.read_text().replace('"Question: {{question}}\\nAnswer:"', f'"{evil}"'))
    assert evil in yaml_path.read_text()
    submission = open_submission(folder, tmp_path / "w")
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError, match="is unsafe"):
        record_requests(submission, load_task(submission))
    assert not (tmp_path / "pwned").exists()


def test_data_files_are_checked_before_datasets_reads_them(tmp_path):
    """Rows are counted one per line, except in a JSON document spread over many lines
    (a pretty-printed array), whose rows the sample-count gate counts once loaded."""
    import json

    from e2lmc.sandboxed.guards import check_data_file

    rows = [{"question": f"q{i}", "choices": ["a", "b"], "label": 0} for i in range(3000)]
    (tmp_path / "pretty.json").write_text(json.dumps(rows, indent=2))  # 21,000 lines, 3,000 rows
    check_data_file(tmp_path / "pretty.json", tmp_path, "task 't'", "test", "test")
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows * 6))
    with pytest.raises(UserError, match=r"data file 'lines.json' has more than 15,000 rows \(split 'test'\)"):
        check_data_file(tmp_path / "lines.json", tmp_path, "task 't'", "test", "test")
    check_data_file(tmp_path / "lines.json", tmp_path, "task 't'", "train", "test")  # a few-shot split may be larger
    (tmp_path / "header.csv").write_text("question,label\n")
    with pytest.raises(UserError, match=r"data file 'header.csv' is empty"):
        check_data_file(tmp_path / "header.csv", tmp_path, "task 't'", "test", "test")
