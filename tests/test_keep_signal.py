"""`e2lmc diagnose --keep-signal`: the submission rewritten without some samples, proved by planning it again."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from e2lmc.cli.main import main
from e2lmc.errors import UserError
from e2lmc.formats.rules import SubmissionRules
from e2lmc.ingestion.preflight import preflight
from e2lmc.participant.keep_signal import write_kept

from .test_ingestion import QUICK, make_task, write_group_submission

QUICK_RULES = SubmissionRules(min_samples=1)


def _asked(plan, samples):
    return [(s.task, [plan.requests[r].arguments for r in s.requests]) for s in samples]


def test_a_group_of_csv_and_parquet_subtasks_keeps_exactly_the_marked_samples(tmp_path):
    """CSV rows with few-shot examples from another file, parquet rows behind a process_docs
    that drops nothing: each subtask's file loses its dropped rows, and nothing else moves."""
    source = write_group_submission(tmp_path / "group")
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    plan = preflight(source, tmp_path / "plan", QUICK).plan
    keep = np.arange(len(plan.samples)) % 3 != 1
    written = write_kept(source, plan, keep, tmp_path / "kept", QUICK)
    assert sorted(p.relative_to(tmp_path / "kept").as_posix() for p in written) == [
        "csv/numbers.csv", "parquet/numbers.parquet"]
    again = preflight(tmp_path / "kept", tmp_path / "again", QUICK, rules=QUICK_RULES).plan
    assert _asked(again, again.samples) == _asked(plan, [s for s, k in zip(plan.samples, keep) if k])
    assert len((tmp_path / "kept" / "csv" / "numbers.csv").read_text().splitlines()) == 1 + 40  # header + rows
    assert pq.read_table(tmp_path / "kept" / "parquet" / "numbers.parquet").num_rows == 41
    assert (tmp_path / "kept" / "csv" / "shots.csv").read_bytes() == before[source / "csv" / "shots.csv"]
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before  # the participant's files


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_lines_and_a_json_list_are_rewritten(tmp_path, suffix):
    source = make_task(tmp_path / "task", 120)
    if suffix == ".json":
        rows = [json.loads(line) for line in (source / "numbers.jsonl").read_text().splitlines()]
        (source / "numbers.jsonl").unlink()
        (source / "numbers.json").write_text(json.dumps(rows))
        (source / "numbers.yaml").write_text((source / "numbers.yaml").read_text().replace("numbers.jsonl",
                                                                                           "numbers.json"))
    plan = preflight(source, tmp_path / "plan", QUICK).plan
    keep = np.arange(120) >= 30  # 90 left: below the rules' minimum, written all the same
    write_kept(source, plan, keep, tmp_path / "kept", QUICK)
    again = preflight(tmp_path / "kept", tmp_path / "again", QUICK, rules=QUICK_RULES).plan
    assert _asked(again, again.samples) == _asked(plan, plan.samples[30:])


def test_few_shot_examples_from_the_dropped_rows_refuse_and_write_nothing(tmp_path):
    source = make_task(tmp_path / "task", 120, yaml_extra="fewshot_split: test\nnum_fewshot: 1\n"
                                                          "fewshot_config: {sampler: first_n}\n")
    plan = preflight(source, tmp_path / "plan", QUICK).plan
    keep = np.arange(120) != 0  # the first row is every prompt's example
    with pytest.raises(UserError, match=r"does not ask the kept questions as before \(its few-shot examples"):
        write_kept(source, plan, keep, tmp_path / "kept", QUICK)
    assert not (tmp_path / "kept").exists()


def test_a_folder_made_beforehand_is_left_empty_after_a_refusal(tmp_path):
    source = make_task(tmp_path / "task", 120, yaml_extra="fewshot_split: test\nnum_fewshot: 1\n"
                                                          "fewshot_config: {sampler: first_n}\n")
    plan = preflight(source, tmp_path / "plan", QUICK).plan
    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError, match="does not ask the kept questions"):
        write_kept(source, plan, np.arange(120) != 0, tmp_path / "kept", QUICK)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_a_file_in_place_of_the_folder_is_refused_before_the_diagnosis(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    assert main(["diagnose", str(tmp_path / "task"), "--zoo", str(tmp_path / "no-set"), "--keep-signal",
                 str(tmp_path / "afile")]) == 2
    printed = capsys.readouterr()
    assert "afile: a file is there, not a folder; give a new folder" in printed.err and "Diagnosis" not in printed.out
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "no-set").exists()


def test_two_files_that_could_be_the_tasks_data_refuse(tmp_path):
    source = make_task(tmp_path / "task", 120)
    (source / "spare.jsonl").write_text((source / "numbers.jsonl").read_text())
    plan = preflight(source, tmp_path / "plan", QUICK).plan
    with pytest.raises(UserError, match=r"task numbers has 120 documents, and the submission's data files with that "
                                        r"many rows are: numbers.jsonl, spare.jsonl; .* by hand"):
        write_kept(source, plan, np.arange(120) > 5, tmp_path / "kept", QUICK)
    assert not (tmp_path / "kept").exists()


def test_a_folder_that_is_not_empty_is_refused(tmp_path):
    source = make_task(tmp_path / "task", 120)
    plan = preflight(source, tmp_path / "plan", QUICK).plan
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="--keep-signal .*kept: the folder is not empty"):
        write_kept(source, plan, np.arange(120) > 5, tmp_path / "kept", QUICK)
    assert (tmp_path / "kept" / "mine.txt").read_text() == "keep me"
