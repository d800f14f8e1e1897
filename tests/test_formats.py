"""Stage formats: round trips, and one clear sentence for every kind of bad file."""

import json

import pytest
import yaml

from e2lmc.errors import UserError
from e2lmc.formats.reference import REFERENCE_FILE, read_reference, write_reference
from e2lmc.formats.results import RESULTS_FILE, CheckpointResult, IngestionResults, read_results, write_results

from .conftest import SAMPLE_REFERENCE, SAMPLE_RESULTS


def test_results_round_trip_and_incremental_writes(tmp_path):
    results = IngestionResults("t", "acc,none", True, 150)
    write_results(results, tmp_path)
    for i in range(3):  # ingestion rewrites the file after every checkpoint
        results.checkpoints.append(CheckpointResult(f"m/iter_{i}", {"acc,none": 0.1 * i}, 1.5))
        write_results(results, tmp_path)
        assert len(read_results(tmp_path).checkpoints) == i + 1
    results.checkpoints.append(CheckpointResult("m/iter_9", {}, 0.2, error="failed to load"))
    write_results(results, tmp_path)
    back = read_results(tmp_path)
    assert back == results
    assert back.done_ids() == {"m/iter_0", "m/iter_1", "m/iter_2"}
    assert [p.name for p in tmp_path.iterdir()] == [RESULTS_FILE]  # no temporary left behind


def test_sample_files_round_trip(tmp_path):
    reference, results = read_reference(SAMPLE_REFERENCE), read_results(SAMPLE_RESULTS)
    write_reference(reference, tmp_path)
    write_results(results, tmp_path)
    assert read_reference(tmp_path) == reference and read_results(tmp_path) == results


RESULTS, REFERENCE = SAMPLE_RESULTS / RESULTS_FILE, SAMPLE_REFERENCE / REFERENCE_FILE


@pytest.mark.parametrize(
    "source, edit, message",
    [
        (RESULTS, lambda d: d.pop("task_metric"), "missing the key 'task_metric'"),
        (RESULTS, lambda d: d.update(surprise=1), "unknown key 'surprise'"),
        (RESULTS, lambda d: d.update(n_samples="many"), "n_samples should be an integer"),
        (RESULTS, lambda d: d["checkpoints"][3].update(metrics={"acc,none": "high"}), "checkpoints[3].metrics.acc,none"),
        (RESULTS, lambda d: d.update(version=7), "format version 7"),
        (RESULTS, lambda d: d.update(format="something"), "is not a e2lmc.ingestion_results file"),
        (REFERENCE, lambda d: d["models"][0]["checkpoints"][0].update(role="secret"),
         "models[0].checkpoints[0].role is 'secret'"),
        (REFERENCE, lambda d: d["scores"]["signal_quality"].update(models=["nobody"]), "model 'nobody'"),
        (REFERENCE, lambda d: d["weights"].update(signal_quality=0.9), "sum to 1"),
        (REFERENCE, lambda d: d["validation"].update(max_samples=None), "validation.max_samples should be an integer"),
        (REFERENCE, lambda d: d["models"].append(d["models"][0]), "unique"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path, source, edit, message):
    is_json = source.suffix == ".json"
    data = json.loads(source.read_text()) if is_json else yaml.safe_load(source.read_text())
    edit(data)
    (tmp_path / source.name).write_text(json.dumps(data) if is_json else yaml.safe_dump(data))
    with pytest.raises(UserError) as err:
        (read_results if is_json else read_reference)(tmp_path)
    assert message in str(err.value) and source.name in str(err.value)


def test_malformed_and_missing_files(tmp_path):
    (tmp_path / REFERENCE_FILE).write_text("models: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        read_reference(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        read_results(tmp_path)


@pytest.mark.parametrize(("tokens", "text"), [(206e9, "206B"), (2.46e6, "2.46M"), (491_520, "492k"), (320, "320"),
                                              (1e12, "1T")])
def test_token_counts_read_as_people_write_them(tokens, text):
    """The organizers' pages and the report: the tiny set's 491,520 tokens are not "0.000492B"."""
    from e2lmc.formats.series import tokens_text

    assert tokens_text(tokens) == text
