"""Opening submissions: folders, zips, the real competition's evaluation.patch, bad input."""

import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from e2lmc.cli.main import main
from e2lmc.errors import InvalidSubmission, UserError
from e2lmc.formats.plan import read_plan
from e2lmc.sandboxed.submission import FunctionRef, load_task_yaml, open_submission

from .conftest import REPO
from .test_ingestion import make_task

SAMPLE = REPO / "starting_kit" / "sample_submissions" / "e2lmc_science_cloze"


def zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


METADATA = "task_name: demo\ntask_metric: acc,none\n"
TASK = "task: demo\ndataset_path: json\noutput_type: multiple_choice\n"


def test_a_folder_opens_as_a_private_copy(tmp_path):
    sub = open_submission(SAMPLE, tmp_path)
    assert (sub.task_name, sub.task_metric) == ("e2lmc_science_cloze", "acc,none")
    assert [p.name for p in sub.task_files] == ["e2lmc_science_cloze.yaml"]
    assert sub.root != SAMPLE and (sub.root / "e2lmc_science_cloze.jsonl").is_file()


@pytest.mark.parametrize("prefix", ["", "my_task/", "outer/inner/"])
def test_a_zip_with_or_without_wrapping_folders_opens(tmp_path, prefix):
    archive = zip_folder(SAMPLE, tmp_path / "sub.zip", prefix)
    sub = open_submission(archive, tmp_path / "work")
    assert sub.task_name == "e2lmc_science_cloze" and (sub.root / "metadata.yaml").is_file()


def test_an_empty_zip_is_refused(tmp_path):
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    with pytest.raises(UserError, match="empty.zip is an empty zip file"):
        open_submission(tmp_path / "empty.zip", tmp_path / "work")


def test_a_zip_member_escaping_the_folder_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("metadata.yaml", METADATA)
        archive.writestr("../../outside.yaml", TASK)
    with pytest.raises(UserError, match="'../../outside.yaml' points outside the submission"):
        open_submission(tmp_path / "evil.zip", tmp_path / "work")
    assert not (tmp_path / "outside.yaml").exists()


def test_missing_paths_and_other_files_are_named(tmp_path):
    with pytest.raises(UserError, match="nope.zip: no such file or folder"):
        open_submission(tmp_path / "nope.zip", tmp_path / "work")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="notes.txt is neither a folder nor a zip file"):
        open_submission(tmp_path / "notes.txt", tmp_path / "work")


def test_malformed_yaml_names_file_and_line(tmp_path):
    folder = write(tmp_path / "s", {"metadata.yaml": METADATA, "demo.yaml": "task: demo\ndoc_to_text: [unclosed\n"})
    with pytest.raises(UserError, match=r"demo.yaml is not valid YAML at line 3, column 1"):
        open_submission(folder, tmp_path / "work")


def test_function_tags_parse_without_running(tmp_path):
    path = write(tmp_path, {"t.yaml": "task: t\nprocess_docs: !function utils.process\n"}) / "t.yaml"
    assert load_task_yaml(path)["process_docs"] == FunctionRef("utils.process", 2)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"demo.yaml": TASK + "process_docs: !function os.system\n"},
         r"demo.yaml line \d+: !function os.system does not name a function in a .py file of the submission"),
        ({"sub/demo.yaml": TASK + "process_docs: !function ..utils.f\n", "utils.py": "def f(d): return d\n"},
         r"sub/demo.yaml line \d+: !function ..utils.f does not name"),
        ({"demo.yaml": "include: /etc/hostname\n" + TASK}, r"demo.yaml: include '/etc/hostname' is not a file of"),
    ],
)
def test_references_outside_the_submission_are_refused(tmp_path, files, message):
    folder = write(tmp_path / "s", {"metadata.yaml": METADATA, **files})
    with pytest.raises(UserError, match=message):
        open_submission(folder, tmp_path / "work")


def test_helpers_next_to_the_yaml_are_accepted(tmp_path):
    files = {"metadata.yaml": METADATA, "t/demo.yaml": TASK + "process_docs: !function utils.f\n",
             "t/utils.py": "def f(d): return d\n", "t/base.yaml": "output_type: multiple_choice\n"}
    files["t/demo.yaml"] = "include: base.yaml\n" + files["t/demo.yaml"]
    assert open_submission(write(tmp_path / "s", files), tmp_path / "work").task_name == "demo"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("task_nam: demo\ntask_metric: acc,none\n", r"needs task_name as text \(keys found: task_nam, task_metric\)"),
        ("task_name: demo\n", r"needs task_metric as text"),
        ("task_name: demo\ntask_metric: acc\n", r"task_metric 'acc' is not an lm-eval result key.*'acc,none'"),
        ("- just a list\n", "must be a mapping"),
        ("task_name: [\n", "metadata.yaml is not valid YAML"),
        # Codabench would run a command next to the ingestion program, with the input data mounted
        (METADATA + "command: python3 leak.py\n", "metadata.yaml has a 'command': a submission is task files only"),
    ],
)
def test_metadata_problems_are_one_sentence(tmp_path, metadata, message):
    folder = write(tmp_path / "s", {"metadata.yaml": metadata, "demo.yaml": TASK})
    with pytest.raises(UserError, match=message):
        open_submission(folder, tmp_path / "work")


def test_missing_metadata_and_missing_task_files(tmp_path):
    with pytest.raises(UserError, match="has no metadata.yaml"):
        open_submission(write(tmp_path / "a", {"demo.yaml": TASK}), tmp_path / "work")
    with pytest.raises(UserError, match="no task YAML file"):
        open_submission(write(tmp_path / "b", {"metadata.yaml": METADATA}), tmp_path / "work")
    two = {f"{name}/{file}": text for name in ("one", "two") for file, text in (("metadata.yaml", METADATA),
                                                                                  ("demo.yaml", TASK))}
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        for name, text in two.items():
            archive.writestr(name, text)
    with pytest.raises(UserError, match=r"has no metadata.yaml \(it names task_name and task_metric\): it holds 2 "
                                        r"folders that each have one \(one, two\); a submission is one task"):
        open_submission(tmp_path / "two.zip", tmp_path / "work")


def git_new_file(path: str, text: str) -> str:
    body = "".join(f"+{line}\n" for line in text.splitlines())
    return (
        f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
        f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(text.splitlines())} @@\n{body}"
    )


def test_an_evaluation_patch_adding_a_task_folder_is_applied(tmp_path):
    patch = git_new_file("lm_eval/tasks/demo/demo.yaml", TASK) + git_new_file(
        "lm_eval/tasks/demo/utils.py", "def process(docs):\n    return docs"
    ) + "\\ No newline at end of file\n"
    folder = write(tmp_path / "s", {"metadata.yaml": METADATA, "evaluation.patch": patch})
    sub = open_submission(folder, tmp_path / "work")
    assert [p.relative_to(sub.root).as_posix() for p in sub.task_files] == ["demo/demo.yaml"]
    assert (sub.root / "demo" / "utils.py").read_text() == "def process(docs):\n    return docs"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            "diff --git a/lm_eval/api/metrics.py b/lm_eval/api/metrics.py\nindex 1..2 100644\n"
            "--- a/lm_eval/api/metrics.py\n+++ b/lm_eval/api/metrics.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n",
            "changes the existing file lm_eval/api/metrics.py",
        ),
        (git_new_file("lm_eval/api/evil.py", "import os"), "adds lm_eval/api/evil.py, outside lm_eval/tasks/"),
        (
            "diff --git a/lm_eval/tasks/a.yaml b/lm_eval/tasks/b.yaml\nsimilarity index 100%\n"
            "rename from lm_eval/tasks/a.yaml\nrename to lm_eval/tasks/b.yaml\n",
            "changes the existing file lm_eval/tasks/a.yaml",
        ),
        ("just some text\n", "adds no file under lm_eval/tasks/"),
    ],
)
def test_a_patch_touching_lm_eval_itself_is_refused(tmp_path, patch, message):
    folder = write(tmp_path / "s", {"metadata.yaml": METADATA, "evaluation.patch": patch})
    with pytest.raises(UserError, match=message):
        open_submission(folder, tmp_path / "work")


# ------------------------------------------------ bounded before anything is parsed


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    folder = make_task(tmp_path / "s", 120)
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9))
    (folder / "numbers.yaml").write_text((folder / "numbers.yaml").read_text() + bomb)
    start = time.perf_counter()
    with pytest.raises(InvalidSubmission, match=r"numbers.yaml is not valid YAML at line \d+, column \d+: aliases"):
        open_submission(folder, tmp_path / "work")
    assert time.perf_counter() - start < 1.0


def test_a_damaged_zip_is_one_sentence(tmp_path):
    folder = make_task(tmp_path / "s", 120)
    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in folder.iterdir():
            z.write(path, path.name)
    data = bytearray(archive.read_bytes())
    offset = data.index(b"numbers.jsonl") + 40  # inside the first member's compressed bytes
    data[offset: offset + 200] = bytes(200)
    archive.write_bytes(bytes(data))
    with pytest.raises(InvalidSubmission, match=r"s.zip is a damaged zip file \(.+\); zip the folder again"):
        open_submission(archive, tmp_path / "work")


# ------------------------------------------------ links, and every bad input in one sentence

SECRET = "checkpoints:\n- id: dense-500m-arch1/iter_0001234\n  role: hidden\n"


@pytest.mark.parametrize("link", ["numbers.yaml", "deeper/folder/notes.txt", "data"])
def test_a_link_in_a_submission_folder_is_refused_without_quoting_its_target(tmp_path, capsys, link):
    outside = tmp_path / "organizer"
    outside.mkdir()
    (outside / "manifest.yaml").write_text(SECRET)
    folder = make_task(tmp_path / "s", 120)
    (folder / link).unlink(missing_ok=True)
    (folder / link).parent.mkdir(parents=True, exist_ok=True)
    (folder / link).symlink_to(outside if link == "data" else outside / "manifest.yaml")
    with pytest.raises(InvalidSubmission, match=rf"^{re.escape(link)} in the submission is a symbolic link;"):
        open_submission(folder, tmp_path / "work")
    code, err = validate(folder, capsys)
    assert code == 1 and err.startswith(f"invalid submission: {link} in the submission is a symbolic link")
    assert "iter_0001234" not in err and "hidden" not in err


def validate(path: Path, capsys) -> tuple[int, str]:
    """`e2lmc validate PATH`'s exit status and standard error, which must be one sentence."""
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
    return code, err.strip()


def zip_of(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {"metadata.yaml": METADATA, "demo.yaml": TASK, **members}.items():
            archive.writestr(name, text)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"x": "a file", "x/y": "then a file inside it"}, r"member 'x/y' cannot be unpacked \(File exists\)"),
        ({"x/y": "a file", "x": "then a file in its folder's place"},
         r"member 'x' cannot be unpacked \(Is a directory\)"),
        ({"n" * 300 + ".yaml": TASK}, r"member 'n{120}' cannot be unpacked \(File name too long\)"),
    ],
)
def test_a_zip_that_cannot_be_unpacked_is_one_sentence(tmp_path, capsys, members, message):
    archive = zip_of(tmp_path / "s.zip", members)
    code, err = validate(archive, capsys)
    assert code == 1 and re.search(rf"^invalid submission: s.zip: {message}; zip the folder again$", err), err


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"demo.yaml": TASK + "num_fewshot: " + "9" * 5000 + "\n"},
         r"demo.yaml is not valid YAML: Exceeds the limit \(4300 digits\)"),
        ({"metadata.yaml": METADATA + "version: " + "9" * 5000 + "\n"},
         r"metadata.yaml is not valid YAML: Exceeds the limit \(4300 digits\)"),
        ({"demo.yaml": TASK + "when: !!timestamp not-a-date\n"}, r"demo.yaml is not valid YAML: 'NoneType' object"),
        ({"demo.yaml": TASK + "when: 2024-99-99\n"}, r"demo.yaml is not valid YAML: month must be in 1..12"),
        ({"demo.yaml": "include: " + "i" * 300 + ".yaml\n" + TASK}, r"demo.yaml: include 'i{200}' is not a file of"),
        ({"demo.yaml": 'include: "base\\0.yaml"\n' + TASK}, r"demo.yaml: include 'base\x00.yaml' is not a file of"),
        ({"demo.yaml": TASK + "process_docs: !function " + "m" * 300 + ".f\n"},
         r"demo.yaml line \d+: !function m{300}.f does not name a function"),
        ({"demo.yaml": TASK.replace("dataset_path: json", "dataset_path: " + "d" * 300)}, "valid"),
        ({"evaluation.patch": git_new_file("lm_eval/tasks/demo/x", "a file")
          + git_new_file("lm_eval/tasks/demo/x/demo.yaml", TASK)},
         r"evaluation.patch adds lm_eval/tasks/demo/x/demo.yaml, which cannot be written \(File exists\)"),
    ],
)
def test_bad_input_ends_in_one_sentence_never_a_traceback(tmp_path, capsys, files, message):
    folder = write(tmp_path / "s", {"metadata.yaml": METADATA, "demo.yaml": TASK, **files})
    if message == "valid":  # a hub name too long for a file name: opened (the plan child says it cannot load it)
        assert open_submission(folder, tmp_path / "work").hub_datasets == {"d" * 300}
        return
    with pytest.raises(InvalidSubmission, match=message):
        open_submission(folder, tmp_path / "work")
    code, err = validate(folder, capsys)
    assert code == 1 and re.search(message, err), err


def test_a_named_pipe_in_a_submission_folder_is_one_sentence(tmp_path, capsys):
    folder = write(tmp_path / "s", {"metadata.yaml": METADATA, "demo.yaml": TASK})
    os.mkfifo(folder / "pipe.jsonl")
    code, err = validate(folder, capsys)
    assert code == 1 and re.search(r"^invalid submission: s cannot be copied: .*pipe.jsonl. is a named pipe$", err)


def test_json_nested_too_deeply_is_one_sentence(tmp_path):
    (tmp_path / "plan.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match=r"plan.json is not valid JSON: it is nested too deeply$"):
        read_plan(tmp_path)
    (tmp_path / "plan.json").write_text('{"format": "e2lmc.plan", "version": ' + "1" * 5000 + "}")
    with pytest.raises(UserError, match=r"plan.json is not valid JSON: Exceeds the limit \(4300 digits\)"):
        read_plan(tmp_path)
