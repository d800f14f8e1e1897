"""Red team: real attack submissions against the sandbox and the parent (docs/security.md).

Every attack runs at both isolation levels: `namespaces` (bubblewrap) and `landlock`
(the fallback where namespaces are refused). A level this machine cannot provide is
skipped with the reason, never silently; CI installs bubblewrap, so both run there.
Every test here starts real child processes (seconds each): the module is `slow`.
"""

import ctypes
import errno
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from e2lmc.cli.main import main
from e2lmc.errors import InvalidSubmission, UserError
from e2lmc.formats.manifest import CheckpointManifest, read_manifest, write_manifest
from e2lmc.formats.results import read_results
from e2lmc.ingestion.preflight import preflight
from e2lmc.ingestion.program import _secret_order, ingest
from e2lmc.limits import GiB, Limits, SandboxSettings
from e2lmc.sandboxed.isolation import HIDDEN_FAILURE, ScoreChild
from e2lmc.sandboxed.sandbox import Sandbox, filters_problem, namespaces_problem, private_workdir

from .conftest import REPO
from .test_ingestion import make_task

LEVELS = ["namespaces", "landlock"]
pytestmark = pytest.mark.slow


def limits(level: str, **sandbox) -> Limits:
    if level == "namespaces" and namespaces_problem():
        pytest.skip(f"{namespaces_problem()}; the landlock fallback tests still run")
    if filters_problem():
        pytest.skip(f"{filters_problem()}: only level 'none' is possible")
    return Limits(plan_seconds=120, score_seconds=60, sandbox=SandboxSettings(level=level, **sandbox))


def helper_task(folder: Path, helper: str, yaml_extra: str = "process_docs: !function helpers.attack\n") -> Path:
    return make_task(folder, 120, yaml_extra=yaml_extra, files={"helpers.py": helper})


# ------------------------------------------------------------ what the child can reach

PROBES = r'''
import json, os, socket, subprocess, signal

def attempt(name, action):
    try:
        return name, "ALLOWED " + repr(action())[:300]
    except BaseException as exc:
        return name, "blocked " + type(exc).__name__

def connect():
    with socket.create_connection(("127.0.0.1", PORT), timeout=2) as s:
        s.sendall(b"leak")

def attack(dataset):
    ppid = os.getppid()
    outcomes = dict([
        attempt("read the manifest", lambda: open(MANIFEST).read()),
        attempt("list the input data", lambda: os.listdir(INPUT)),
        attempt("read a checkpoint's weights", lambda: open(WEIGHTS, "rb").read(64)),
        attempt("read the results file", lambda: open(RESULTS).read()),
        attempt("write into the output folder", lambda: open(os.path.join(OUTPUT, "forged.json"), "w").write("{}")),
        attempt("write next to the submission", lambda: open(os.path.join(ROOT, "..", "forged"), "w").write("x")),
        attempt("write into the submission", lambda: open(os.path.join(ROOT, "forged"), "w").write("x")),
        attempt("write into the shared /tmp", lambda: open(os.path.join(SHARED_TMP, "forged"), "w").write("x")),
        attempt("fill /tmp (memory in the namespaces)", lambda: open("/tmp/fill", "wb").write(b"x" * (256 << 20))),
        attempt("write into /dev/shm", lambda: open("/dev/shm/fill", "wb").write(b"x")),
        attempt("write into /", lambda: open("/fill", "wb").write(b"x")),
        attempt("read the parent's command line", lambda: open(f"/proc/{ppid}/cmdline").read()),
        attempt("read the parent's environment", lambda: open(f"/proc/{ppid}/environ").read()),
        attempt("read the parent's memory", lambda: open(f"/proc/{ppid}/mem", "rb").read(1)),
        attempt("signal the parent", lambda: os.kill(ppid, signal.SIGCONT)),
        attempt("connect over TCP", connect),
        attempt("start a process", lambda: subprocess.run(["true"])),
        attempt("fork", os.fork),
        attempt("read the parent's secret variable", lambda: os.environ["E2LMC_TEST_SECRET"]),
    ])
    text = "PROBES" + json.dumps(outcomes) + "END"
    return dataset.map(lambda d, i: {**d, "question": text if i == 0 else d["question"]}, with_indices=True)
'''


@pytest.mark.parametrize("level", LEVELS)
def test_the_child_reaches_no_data_network_process_or_parent(tiny_zoo, tmp_path, monkeypatch, level):
    zoo, _ = tiny_zoo
    output = tmp_path / "output"
    output.mkdir()
    (output / "ingestion_results.json").write_text("{}")
    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    checkpoint = next((zoo / "dense-small-arch1").iterdir())
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    constants = {"MANIFEST": str(zoo / "manifest.yaml"), "INPUT": str(zoo), "WEIGHTS": str(checkpoint / "model.safetensors"),
                 "RESULTS": str(output / "ingestion_results.json"), "OUTPUT": str(output),
                 "SHARED_TMP": str(shared_tmp), "PORT": listener.getsockname()[1]}
    helper = "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + PROBES
    helper = helper.replace("def attack(dataset):\n", "def attack(dataset):\n    global ROOT\n"
                            "    ROOT = os.path.dirname(os.path.abspath(__file__))\n")
    monkeypatch.setenv("E2LMC_TEST_SECRET", "hunter2")
    folder = helper_task(tmp_path / "s", helper)
    plan = preflight(folder, tmp_path / "work", limits(level)).plan
    (context,) = [json.loads(r.arguments)[0] for r in plan.requests if "PROBES" in r.arguments][:1]
    outcomes = json.loads(context[context.index("PROBES") + 6: context.index("END")])
    assert len(outcomes) == 19
    for name, outcome in outcomes.items():
        if name.startswith("read the parent's") and outcome.startswith("ALLOWED"):
            # in a PID namespace the parent is bubblewrap's own init, started with the child's arguments
            assert level == "namespaces"
            assert not any(secret in outcome for secret in (str(zoo), "manifest", str(output), "hunter2"))
        elif name == "write next to the submission" and outcome.startswith("ALLOWED"):
            # in the private /tmp of the namespaces, which vanishes with the child
            assert level == "namespaces" and not (tmp_path / "work" / "forged").exists()
        else:
            assert outcome.startswith("blocked"), f"{level}: '{name}' was {outcome}"
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing ever connected
    assert sorted(p.name for p in output.iterdir()) == ["ingestion_results.json"]
    assert not any(shared_tmp.iterdir())


# ------------------------------------------------------------- resource exhaustion

BOMBS = {
    "memory": ("def attack(dataset):\n    hoard = []\n    while True:\n        hoard.append(b'x' * (64 << 20))\n",
               r"the submission's task ran out of memory: a sandboxed process may use 3 GiB of address space"),
    "fork": ("import os\ndef attack(dataset):\n    while True:\n        os.fork()\n",
             r"raised PermissionError in helpers.py, line 4: .*the sandbox allows no new processes"),
    "cpu": ("def attack(dataset):\n    while True:\n        pass\n", r"it used more than its 10 s of CPU time"),
    "file size": ("import os\ndef attack(dataset):\n    open(os.environ['TMPDIR'] + '/big', 'wb').write(b'x' * (2 << 20))\n",
                  r"the submission's code wrote a file larger than the 1 MiB limit"),
    "open files": ("import os\ndef attack(dataset):\n    files = [open(os.environ['TMPDIR'] + f'/{i}', 'w') for i in range(9999)]\n",
                   r"the submission's code opened more than 512 files at once"),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_child_that_exhausts_a_limit_ends_in_one_sentence_naming_it(tmp_path, level, bomb):
    helper, message = BOMBS[bomb]
    folder = helper_task(tmp_path / "s", helper)
    # lowered so that the attacks end quickly; an honest child needs about 2 GiB of address space
    settings = {"memory": {"memory_bytes": 3 * GiB}, "cpu": {"cpu_seconds": 10},
                "file size": {"file_bytes": 1 << 20}}.get(bomb, {})
    with pytest.raises(InvalidSubmission, match=message):
        preflight(folder, tmp_path / "work", limits(level, **settings))


# ---------------------------------------------------------- learning which checkpoint

FORGER = '''
import hashlib, json, random, sys
IDS = {ids!r}
calls = []

def forged(checkpoint_id):
    model, name = checkpoint_id.split("/")
    return int(name.split("_")[1]) / 1000 + len(model) / 100

def agg(items):
    if sys.argv[1:2] != ["score"]:
        return 0.5
    # what defeated the old order: it was seeded by the plan's digest, which plan.json gives
    plan = json.load(open(sys.argv[-1] + "/plan.json"))
    text = json.dumps([plan["task_name"], plan["task_metric"], [(r["kind"], r["arguments"]) for r in plan["requests"]]])
    order = list(IDS)
    random.Random(hashlib.sha256(text.encode()).hexdigest()[:16]).shuffle(order)
    calls.append(1)
    return forged(order[len(calls) - 1])
'''


@pytest.mark.parametrize("level", LEVELS)
def test_a_forging_aggregation_cannot_tell_which_checkpoint_it_scores(tiny_zoo, tmp_path, level):
    zoo, _ = tiny_zoo
    manifest = read_manifest(zoo)
    hidden = [replace(e, path=str(zoo / e.path)) for e in manifest.checkpoints if e.role == "hidden"][:8]
    write_manifest(CheckpointManifest(hidden), tmp_path / "input")
    ids = [e.id for e in hidden]
    folder = helper_task(tmp_path / "s", FORGER.format(ids=ids),
                         "metric_list:\n- metric: acc\n  aggregation: !function helpers.agg\n")
    results = ingest(folder, tmp_path / "input", tmp_path / "output", limits(level))
    namespace: dict = {}
    exec(FORGER.format(ids=ids), namespace)  # noqa: S102 - the attacker's own function
    values = {c.id: c.metrics["acc,none"] for c in results.checkpoints}
    assert sorted(values) == sorted(ids)
    assert results.custom_code == ["numbers: aggregation agg"]
    # each checkpoint has a fresh child, which has seen nothing before: the forgery of the first
    # position everywhere, whatever the order (a secret of the run, written nowhere)
    assert len(set(values.values())) == 1 and values[ids[0]] in {namespace["forged"](i) for i in ids}


def test_the_evaluation_order_is_secret_and_interleaves_released_and_hidden_checkpoints(tiny_zoo):
    entries = read_manifest(tiny_zoo[0]).checkpoints
    orders = [_secret_order(entries) for _ in range(3)]
    for order in orders:
        assert sorted(order, key=entries.index) == entries
        positions = [i for i, e in enumerate(order) if e.role == "released"]
        assert 0 < len(positions) < len(order) and positions != list(range(len(positions)))  # not released first
    assert len({tuple(e.id for e in order) for order in orders}) == 3


# ------------------------------------------------------------ leaking hidden values

LEAKER = '''
import os, sys
from e2lmc.errors import UserError

def process(doc, results):
    return {"acc": results[0][0]}

def agg(items):
    style = -int(items[0])
    values = "_".join(f"{v:.4f}".replace("-", "m").replace(".", "p") for v in items[:4])
    if style == 1:
        raise type(f"LEAK_{values}", (Exception,), {})()
    if style == 2:
        raise UserError(f"LEAK hidden values in scoring order: {values}")
    if style == 3:
        os._exit(77)
    if style == 4:
        for fd in range(3, 64):
            try:
                os.write(fd, f'{{"error": "LEAK {values}"}}\\n'.encode())
            except OSError:
                pass
        return 0.0
    if style == 5:
        return f"LEAK {values}"
    return 0.0
'''


@pytest.mark.parametrize("level", LEVELS)
def test_nothing_of_a_hidden_checkpoint_leaks_through_errors(tmp_path, level):
    folder = make_task(tmp_path / "s", 120, files={"helpers.py": LEAKER},
                       yaml_extra="process_results: !function helpers.process\n"
                                  "metric_list:\n- metric: acc\n  aggregation: !function helpers.agg\n")
    workdir = tmp_path / "work"
    settings = limits(level)
    sandbox = Sandbox(workdir, settings.sandbox)
    planned = preflight(folder, workdir, settings, sandbox=sandbox)
    submission, plan = planned.submission, planned.plan
    for style in range(1, 6):
        responses = [[-style - 0.123456, False]] + [[-0.5 - i / 1000, False] for i in range(len(plan.requests) - 1)]
        for hidden in (True, False):
            with ScoreChild.custom(submission, sandbox, workdir, 60, 60) as scorer:
                scorer.submit(responses)
                with pytest.raises(InvalidSubmission) as caught:
                    scorer.result(detail=not hidden)
            message = str(caught.value)
            if hidden:
                assert message == HIDDEN_FAILURE, (style, message)
            else:  # no hidden checkpoint was scored yet: what happened is said
                shown = {1: "LEAK_", 2: "LEAK hidden", 3: "exit code 77", 4: "LEAK", 5: "KeyError"}[style]
                assert shown in message, (style, message)


class _Answering:
    """A score child that has already answered with `message`."""

    def __init__(self, message: dict) -> None:
        self.message = message

    def receive(self, timeout: float, doing: str) -> dict:
        return self.message

    def close(self) -> None:
        pass


def test_a_childs_other_metrics_are_kept_only_as_bounded_numbers():
    """The other metrics a child reports are kept for comparison, never scored: the
    submitted one cannot be replaced by them, and junk (odd keys, non-numbers, thousands of
    keys) is left out rather than written into the results."""
    junk = {f"m{i},none": 0.5 for i in range(1000)}
    junk.update({"acc,none": 99.0, "x" * 500 + ",none": 0.1, "no comma": 0.2, "nan,none": float("nan"),
                 "text,none": "0.3", "bool,none": True})
    scorer = ScoreChild(_Answering({"value": 0.25, "metrics": {"acc_norm,none": 0.3, **junk}}), 1, "acc,none", 1)
    scorer.built = True
    values = scorer.result(detail=True)
    assert values["acc,none"] == 0.25 and values["acc_norm,none"] == 0.3 and len(values) == 1 + 16
    assert all(key == "acc_norm,none" or re.fullmatch(r"m\d+,none", key) for key in values if key != "acc,none")
    assert ScoreChild(_Answering({"value": 0.25, "metrics": "many"}), 1, "acc,none", 1).result(True) == {
        "acc,none": 0.25}


# ------------------------------------------------------------ the parent's own limits


@pytest.mark.parametrize("level", LEVELS)
def test_ten_million_rows_stop_at_the_rule(tmp_path, level):
    folder = make_task(tmp_path / "s", 120)
    with open(folder / "numbers.jsonl", "a") as f:
        f.write("{}\n" * 10_000_000)
    start = time.perf_counter()
    with pytest.raises(InvalidSubmission, match=r"data file 'numbers.jsonl' has more than 15,000 rows"):
        preflight(folder, tmp_path / "work", limits(level))
    assert time.perf_counter() - start < 30  # stopped at 15,001 rows, not after loading 10 million


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("path", ["/etc", "../outside", "~/data"])
def test_dataset_path_outside_the_submission_is_refused(tmp_path, path, level):
    (tmp_path / "outside").mkdir()
    folder = make_task(tmp_path / "s", 120)
    text = (folder / "numbers.yaml").read_text().replace("dataset_path: json", f"dataset_path: {path}")
    (folder / "numbers.yaml").write_text(text)
    with pytest.raises(InvalidSubmission, match=f"dataset_path '{path}' lies outside the submission"):
        preflight(folder, tmp_path / "work", limits(level))


# ------------------------------------------------------------------ no orphan survives

def command_line(process: psutil.Process) -> str:
    """A process's command line; empty for one that ended meanwhile (short-lived helpers do)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


SLEEPER = ("import signal, time\ndef attack(dataset):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "    while True:\n        time.sleep(0.1)\n")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_no_child_survives_its_parent_and_the_next_run_removes_its_folder(tmp_path, level, kill):
    limits(level)
    folder = helper_task(tmp_path / "s", SLEEPER)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    parent = subprocess.Popen([sys.executable, "-m", "e2lmc.cli", "validate", str(folder), "--sandbox", level],
                              env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while not any("e2lmc.sandboxed.child" in command_line(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
        children = [c for c in psutil.Process(parent.pid).children(recursive=True) if c.is_running()]
    assert children, "the plan child never started"
    time.sleep(3)  # into the submission's code
    parent.send_signal(kill)
    parent.wait(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans: {[command_line(p)[:80] for p in alive]}"
    (stale,) = tmp.glob("e2lmc-validate-*")
    import tempfile

    tempfile.tempdir = str(tmp)
    try:
        with private_workdir("validate") as fresh:
            assert not stale.exists() and Path(fresh).exists()
    finally:
        tempfile.tempdir = None


# ------------------------------------------------------------------ the level itself


def test_the_level_is_recorded_and_a_required_level_is_enforced(tiny_zoo, tmp_path, monkeypatch):
    zoo, _ = tiny_zoo
    manifest = read_manifest(zoo)
    write_manifest(CheckpointManifest([replace(manifest.checkpoints[0], path=str(zoo / manifest.checkpoints[0].path))]),
                   tmp_path / "input")
    folder = make_task(tmp_path / "s", 120)
    results = ingest(folder, tmp_path / "input", tmp_path / "output", limits("landlock"))
    assert results.sandbox == "landlock" and read_results(tmp_path / "output").sandbox == "landlock"

    import e2lmc.sandboxed.sandbox as sandbox

    monkeypatch.setattr(sandbox, "namespaces_problem", lambda: "bubblewrap cannot create namespaces (test)")
    with pytest.raises(UserError, match=r"must run in a sandbox of level 'namespaces' or stronger, but this host "
                                        r"allows only 'landlock': bubblewrap cannot create namespaces"):
        ingest(folder, tmp_path / "input", tmp_path / "output2",
               Limits(sandbox=SandboxSettings(required="namespaces")))
    assert not (tmp_path / "output2").exists()  # refused before any work


POISON = r'''
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
# a failed ctypes call: its errno stays saved, and success never resets it
assert libc.open(b"/no/such/file", 0) == -1 and ctypes.get_errno() == errno.ENOENT
'''


def test_a_failed_ctypes_call_before_the_level_choice_or_the_confinement_changes_nothing(tmp_path):
    """The `landlock` package reads ctypes' saved errno, not the return value: without care a
    stale ENOENT would drop the level to 'none' (every submission refused) or stop the child."""
    if filters_problem():
        pytest.skip(filters_problem())
    level = "from e2lmc.sandboxed import sandbox; print(sandbox.strongest_level())"
    clean = subprocess.run([sys.executable, "-c", level], capture_output=True, text=True, check=True).stdout
    poisoned = subprocess.run([sys.executable, "-c", POISON + level], capture_output=True, text=True, check=True)
    assert poisoned.stdout == clean and clean.strip() in ("landlock", "namespaces")

    from e2lmc.sandboxed.confine import Confinement
    from e2lmc.sandboxed.sandbox import python_roots

    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    confinement = Confinement("landlock", [str(p) for p in python_roots()] + [str(REPO)], [str(tmp_path / "w")],
                              1 << 32, 60, 1 << 20, 64, None)
    (tmp_path / "w").mkdir()
    child = POISON + f'''
from e2lmc.sandboxed.confine import Confinement, confine
confine(Confinement(**json.loads({json.dumps(json.dumps(confinement.__dict__))})))
try:
    open({str(secret)!r}).read()
    print("READ")
except PermissionError:
    print("confined")
'''
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path / "w")
    assert done.stdout.strip() == "confined", done.stderr[-500:]


@pytest.mark.parametrize("error, cause", [
    (errno.ENOSYS, r"the kernel \(.*\) has no Landlock: it needs Linux 5.13"),
    (errno.EOPNOTSUPP, r"has Landlock but it is off: add 'landlock' to the lsm= boot parameter"),
])
def test_a_refused_landlock_is_blamed_on_the_kernel_on_a_host(monkeypatch, error, cause):
    import e2lmc.sandboxed.sandbox as sandbox

    monkeypatch.setattr(sandbox, "seccomp_filtered", lambda: False)
    assert re.search(cause, sandbox.landlock_refusal(error))


@pytest.mark.parametrize("error", [errno.ENOSYS, errno.EPERM])
def test_a_refused_landlock_under_a_seccomp_filter_on_a_new_kernel_is_blamed_on_the_engine(monkeypatch, error):
    import e2lmc.sandboxed.sandbox as sandbox

    monkeypatch.setattr(sandbox, "seccomp_filtered", lambda: True)
    monkeypatch.setattr(sandbox.platform, "release", lambda: "6.1.0-18-amd64")
    sentence = sandbox.landlock_refusal(error)
    assert "the container engine's seccomp profile does not allow them" in sentence
    assert "from 20.10.18 on (23.0 and later included)" in sentence and "e2lmc doctor" in sentence
    monkeypatch.setattr(sandbox.platform, "release", lambda: "5.10.0-28-amd64")  # too old: the kernel's fault
    assert sandbox.landlock_refusal(errno.ENOSYS).startswith("the kernel (5.10.0-28-amd64) has no Landlock")


def test_asking_for_a_level_below_the_required_one_is_refused_as_such():
    from e2lmc.sandboxed.sandbox import choose_level

    if filters_problem():
        pytest.skip(filters_problem())
    with pytest.raises(UserError, match=r"^--sandbox none is below the level 'landlock' the submission must run at, "
                                        r"and this host has '(landlock|namespaces)': leave --sandbox at auto$"):
        choose_level(SandboxSettings(level="none", required="landlock"))


def test_a_missing_library_is_named_with_its_fix(monkeypatch):
    import builtins

    import e2lmc.sandboxed.sandbox as sandbox

    real_import = builtins.__import__

    def without_seccomp(name, *args, **kwargs):
        if name == "pyseccomp":
            raise OSError("libseccomp.so.2: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_seccomp)
    sandbox.filters_problem.cache_clear()
    try:
        assert sandbox.filters_problem().startswith("libseccomp is missing (Debian and Ubuntu: apt-get install "
                                                    "libseccomp2")
        assert sandbox.strongest_level() == "none"
    finally:
        monkeypatch.undo()
        sandbox.filters_problem.cache_clear()


STALLER = '''
import sys, time

class Forever:
    """Replaces the child's stdin: the parent's messages are never read, the pipe stays open."""
    def __iter__(self):
        while True:
            time.sleep(1)

sys.stdin = Forever()
keep = sys.__stdin__

def process(doc, results):
    return {"acc": 0.0}
'''


@pytest.mark.parametrize("level", LEVELS)
def test_a_child_that_stops_reading_cannot_stall_the_parent(tmp_path, level):
    folder = make_task(tmp_path / "s", 3000, files={"helpers.py": STALLER},
                       yaml_extra="process_results: !function helpers.process\n")
    workdir = tmp_path / "work"
    settings = limits(level)
    sandbox = Sandbox(workdir, settings.sandbox)
    planned = preflight(folder, workdir, settings, sandbox=sandbox)
    submission, plan = planned.submission, planned.plan
    responses = [[-0.5, False]] * len(plan.requests)
    assert len(json.dumps(responses)) > 1 << 16  # more than a pipe holds
    with ScoreChild.custom(submission, sandbox, workdir, 5, 60) as scorer:
        start = time.perf_counter()
        scorer.submit(responses)
        assert time.perf_counter() - start < 1
        with pytest.raises(InvalidSubmission, match=re.escape(HIDDEN_FAILURE)):
            scorer.result(detail=False)
    assert time.perf_counter() - start < 30


def test_the_parent_reads_no_oversized_plan(tmp_path, monkeypatch):
    """plan.json is written by the child, beside the submission's code: bounded before it is read."""
    import e2lmc.sandboxed.isolation

    monkeypatch.setattr(e2lmc.sandboxed.isolation, "MAX_PLAN_BYTES", 1 << 10)
    with pytest.raises(InvalidSubmission, match=r"the task's requests take [\d.]+ MiB, more than the [\d.]+ MiB any task within the rules needs"):
        preflight(make_task(tmp_path / "s", 120), tmp_path / "work", limits("landlock"))


# ------------------------------------------------------ sockets by any route, signals

REPORTER = r'''
import ctypes
import errno
import json

def attempt(name, action):
    try:
        return name, "ALLOWED " + repr(action())[:300]
    except BaseException as exc:
        return name, f"blocked {type(exc).__name__} errno {getattr(exc, 'errno', None)}: {str(exc)[:200]}"

def attack(dataset):
    text = "PROBES" + json.dumps(dict(probes())) + "END"
    return dataset.map(lambda d, i: {**d, "question": text if i == 0 else d["question"]}, with_indices=True)
'''


def probe(tmp_path: Path, settings: Limits, constants: dict, code: str) -> dict[str, str]:
    """Run `code`'s `probes()`, a list of `attempt(name, action)`, in a plan child; what each attempt did."""
    helper = "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + code + REPORTER
    plan = preflight(helper_task(tmp_path / "s", helper), tmp_path / "work", settings).plan
    (context,) = [json.loads(r.arguments)[0] for r in plan.requests if "PROBES" in r.arguments][:1]
    return json.loads(context[context.index("PROBES") + 6: context.index("END")])


def received(listener: socket.socket) -> bytes | None:
    """What the first connection to `listener` sent, None when nothing connected."""
    listener.settimeout(0.5)
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        return None
    with connection:
        connection.settimeout(2)
        return connection.recv(16)


# A socket made and connected by io_uring alone (IORING_OP_SOCKET, IORING_OP_CONNECT): no
# socket() or connect() call for seccomp to see. Raw system calls of x86-64.
IO_URING = r'''
import ctypes, mmap, os, socket, struct

def io_uring_connect(port):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)
    ring = libc.syscall(425, 4, params)  # io_uring_setup
    if ring < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup: " + os.strerror(ctypes.get_errno()))
    sq_entries, cq_entries = struct.unpack_from("2I", params, 0)
    _, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("7I", params, 40)
    cq_head, _, cq_mask, _, _, cqes = struct.unpack_from("6I", params, 80)
    size = max(sq_array + 4 * sq_entries, cqes + 16 * cq_entries)
    rings = mmap.mmap(ring, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    sqes = mmap.mmap(ring, 64 * sq_entries, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0x10000000)

    def submit(opcode, fd, off, addr, length):
        tail = struct.unpack_from("I", rings, sq_tail)[0]
        index = tail & struct.unpack_from("I", rings, sq_mask)[0]
        entry = struct.pack("BBHiQQIIQ", opcode, 0, 0, fd, off, addr, length, 0, 1)
        sqes[64 * index: 64 * index + 64] = entry.ljust(64, b"\0")
        struct.pack_into("I", rings, sq_array + 4 * index, index)
        struct.pack_into("I", rings, sq_tail, tail + 1)
        if libc.syscall(426, ring, 1, 1, 1, None, 0) < 0:  # io_uring_enter, waiting for the completion
            raise OSError(ctypes.get_errno(), "io_uring_enter: " + os.strerror(ctypes.get_errno()))
        head = struct.unpack_from("I", rings, cq_head)[0]
        _, result, _ = struct.unpack_from("QiI", rings, cqes + 16 * (head & struct.unpack_from("I", rings, cq_mask)[0]))
        struct.pack_into("I", rings, cq_head, head + 1)
        if result < 0:
            raise OSError(-result, f"io_uring operation {opcode}: " + os.strerror(-result))
        return result

    connection = submit(45, socket.AF_INET, socket.SOCK_STREAM, 0, 0)  # IORING_OP_SOCKET
    address = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton("127.0.0.1"))
    buffer = ctypes.create_string_buffer(address, len(address))
    submit(16, connection, len(address), ctypes.addressof(buffer), 0)  # IORING_OP_CONNECT
    os.write(connection, b"leak")
    return "connected"
'''

# The SIGIO of a pipe set to O_ASYNC goes to the process named by F_SETOWN, with the
# signal F_SETSIG chose: a signal to another process without kill().
SIGIO = r'''
import fcntl, os, signal, time

def sigio(pid):
    r, w = os.pipe()
    fcntl.fcntl(r, fcntl.F_SETOWN, pid)
    fcntl.fcntl(r, 10, signal.SIGTERM)  # F_SETSIG
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
    os.write(w, b"x")
    time.sleep(0.5)
    return "sent"
'''

OUTSIDE = IO_URING + SIGIO + r'''
def probes():
    return [attempt("io_uring", lambda: io_uring_connect(PORT)),
            attempt("kill", lambda: os.kill(VICTIM, signal.SIGTERM)),
            attempt("SIGIO", lambda: sigio(VICTIM))]
'''


def x86_64() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("the io_uring attack is written with x86-64's system call numbers")


@pytest.mark.parametrize("level", LEVELS)
def test_io_uring_and_sigio_reach_nothing_outside_the_child(tmp_path, level):
    settings = limits(level)
    x86_64()
    listener = socket.create_server(("127.0.0.1", 0))
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        outcomes = probe(tmp_path, settings, {"PORT": listener.getsockname()[1], "VICTIM": victim.pid}, OUTSIDE)
        assert outcomes["io_uring"].startswith("blocked PermissionError errno 1: [Errno 1] io_uring_setup"), outcomes
        assert received(listener) is None
        assert outcomes["kill"].startswith("blocked PermissionError"), outcomes
        # the signal is dropped: Landlock's signal scope (a PID namespace refuses F_SETOWN to a process outside it)
        assert outcomes["SIGIO"] == "ALLOWED 'sent'" if level == "landlock" else "blocked" in outcomes["SIGIO"]
        assert victim.poll() is None, f"{level}: the victim was killed ({outcomes})"
    finally:
        victim.kill()
        listener.close()


def test_io_uring_and_sigio_get_through_without_a_sandbox(tmp_path):
    """The attacks above are real: at level `none` the same code connects and kills."""
    x86_64()
    listener = socket.create_server(("127.0.0.1", 0))
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        settings = Limits(plan_seconds=120, sandbox=SandboxSettings(level="none"))
        outcomes = probe(tmp_path, settings, {"PORT": listener.getsockname()[1], "VICTIM": victim.pid}, OUTSIDE)
        assert outcomes["io_uring"] == "ALLOWED 'connected'", outcomes
        assert received(listener) == b"leak"
        assert victim.wait(timeout=10) == -signal.SIGTERM
    finally:
        victim.kill()
        listener.close()


SOCKETS = r'''
import socket

def connect(address):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(address)
        s.sendall(b"leak")
    return "connected"

def probes():
    return [attempt("abstract unix socket", lambda: connect(ABSTRACT)),
            attempt("unix socket in the scratch folder", lambda: connect(PATHNAME)),
            attempt("socketpair", socket.socketpair),
            attempt("IPv6", lambda: socket.socket(socket.AF_INET6)),
            attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))]
'''


@pytest.mark.parametrize("level", LEVELS)
def test_the_child_opens_no_socket_of_any_family(tmp_path, level):
    settings = limits(level)
    abstract = f"\0e2lmc-test-{os.getpid()}-{level}"
    scratch = tmp_path / "work" / "plan"  # the plan child's scratch folder: it may write there
    scratch.mkdir(parents=True)
    pathname = str(scratch / "listener.sock")
    listeners = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for listener, address in zip(listeners, (abstract, pathname)):
            listener.bind(address)
            listener.listen()
        os.chmod(pathname, 0o777)
        outcomes = probe(tmp_path, settings, {"ABSTRACT": abstract, "PATHNAME": pathname}, SOCKETS)
        for name, outcome in outcomes.items():
            assert outcome.startswith("blocked PermissionError errno 1"), f"{level}: '{name}' was {outcome}"
        assert [received(listener) for listener in listeners] == [None, None]
    finally:
        for listener in listeners:
            listener.close()


SCOPES = r'''
import ctypes, json, os, signal, socket, sys
sys.path.insert(0, PACKAGE)
from e2lmc.sandboxed.confine import landlock_scopes
exec(SIGIO)
if sys.argv[1] == "scoped":
    landlock_scopes(ctypes.CDLL(None, use_errno=True))

def attempt(action):
    try:
        return "ALLOWED " + repr(action())
    except OSError as exc:
        return f"blocked errno {exc.errno}"

def connect(family, address):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.connect(address)
    return "connected"

print(json.dumps({"abstract unix socket": attempt(lambda: connect(socket.AF_UNIX, ABSTRACT)),
                  "TCP": attempt(lambda: connect(socket.AF_INET, ("127.0.0.1", PORT))),
                  "kill": attempt(lambda: os.kill(VICTIM, 0)),
                  "SIGIO": attempt(lambda: sigio(VICTIM))}))
'''


def test_landlock_scopes_keep_sockets_and_signals_inside_the_child(tmp_path):
    """The second Landlock layer on its own (no seccomp filter): what it stops, and that the
    same attempts succeed without it."""
    from e2lmc.sandboxed.confine import LANDLOCK_SCOPE_ABI, landlock_abi

    if filters_problem():
        pytest.skip(filters_problem())
    if (abi := landlock_abi(ctypes.CDLL(None, use_errno=True))[0]) < LANDLOCK_SCOPE_ABI:
        pytest.skip(f"this kernel's Landlock ABI is {abi}: scopes need {LANDLOCK_SCOPE_ABI} (Linux >= 6.12)")
    outcomes = {}
    for mode in ("scoped", "plain"):
        abstract = f"\0e2lmc-scope-{os.getpid()}-{mode}"
        unix, tcp = socket.socket(socket.AF_UNIX), socket.create_server(("127.0.0.1", 0))
        unix.bind(abstract)
        unix.listen()
        victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        constants = {"PACKAGE": str(Path(__file__).resolve().parents[1]), "SIGIO": SIGIO, "ABSTRACT": abstract,
                     "PORT": tcp.getsockname()[1], "VICTIM": victim.pid}
        script = "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + SCOPES
        try:
            run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60)
            outcomes[mode] = json.loads(run.stdout), victim.poll() is None
        finally:
            victim.kill()
            unix.close()
            tcp.close()
    assert outcomes["scoped"] == ({"abstract unix socket": "blocked errno 1", "TCP": "blocked errno 13",
                                   "kill": "blocked errno 1", "SIGIO": "ALLOWED 'sent'"}, True)
    assert outcomes["plain"] == ({"abstract unix socket": "ALLOWED 'connected'", "TCP": "ALLOWED 'connected'",
                                  "kill": "ALLOWED None", "SIGIO": "ALLOWED 'sent'"}, False)


# ------------------------------------------------------------------ the disk

FILLERS = {  # each stops by itself at 2 GB: without the quota, the test fails rather than the disk
    "files": "    for i in range(20):\n        with open(f'{HOME}/fill{i}', 'wb') as f:\n"
             "            f.write(b'x' * (100 << 20))\n",
    "deleted files": "    for i in range(20):\n        keep.append(open(f'{HOME}/fill{i}', 'wb'))\n"
                     "        keep[-1].write(b'x' * (100 << 20))\n        keep[-1].flush()\n"
                     "        os.unlink(f'{HOME}/fill{i}')\n",
    "fallocate": "    for i in range(20):\n        keep.append(os.open(f'{HOME}/fill{i}', os.O_CREAT | os.O_WRONLY))\n"
                 "        os.posix_fallocate(keep[-1], 0, 100 << 20)\n",
    "many files": "    for i in range(20_000):\n        open(f'{HOME}/empty{i}', 'w').close()\n",
}
QUOTA = 300 << 20


def disk_peak(folder: Path, stop: threading.Event, peak: list[int]) -> None:
    """The most the file system of `folder` held above its use at the start, sampled every 5 ms."""
    start = shutil.disk_usage(folder).used
    while not stop.wait(0.005):
        peak[0] = max(peak[0], shutil.disk_usage(folder).used - start)


@pytest.mark.parametrize("level", [*LEVELS, "none"])
@pytest.mark.parametrize("filler", sorted(FILLERS))
def test_a_child_that_fills_its_scratch_folder_is_stopped_at_the_quota(tmp_path, level, filler):
    if level == "none" and filler == "fallocate":
        pytest.skip("level none loads no seccomp filter: fallocate's blocks come at once (docs/security.md)")
    settings = (Limits(plan_seconds=120, sandbox=SandboxSettings(level="none", scratch_bytes=QUOTA))
                if level == "none" else limits(level, scratch_bytes=QUOTA))
    helper = ("import os\nHOME, keep = os.environ['HOME'], []  # HOME is the scratch folder\ndef attack(dataset):\n"
              + FILLERS[filler] + "    return dataset\n")
    folder = helper_task(tmp_path / "s", helper)
    message = ("it created more than the 10,000 files its scratch folder may hold" if filler == "many files" else
               "it wrote more into its scratch folder than the 300 MiB quota")
    stop, peak = threading.Event(), [0]
    watcher = threading.Thread(target=disk_peak, args=(tmp_path, stop, peak))
    watcher.start()
    try:
        with pytest.raises(InvalidSubmission, match=rf"the task's process ended unexpectedly \({message}\)$"):
            preflight(folder, tmp_path / "work", settings)
    finally:
        stop.set()
        watcher.join()
    assert peak[0] < QUOTA + (200 << 20), f"{level}, {filler}: the disk held {peak[0] >> 20} MiB more"


# ------------------------------------------------------------------ what the parent reads

DEEP_PLAN = r'''
import e2lmc.formats.files as files

def nested(path, text):
    path.write_text("[" * 100_000 + "]" * 100_000)

def attack(dataset):
    files._atomic_write = nested  # what the plan child writes instead of its plan
    return dataset
'''


@pytest.mark.parametrize("level", LEVELS)
def test_a_plan_nested_too_deeply_ends_in_one_sentence(tmp_path, capsys, level):
    limits(level)
    folder = helper_task(tmp_path / "s", DEEP_PLAN)
    code = main(["validate", str(folder), "--sandbox", level])
    err = capsys.readouterr().err.strip()
    assert code == 1 and re.fullmatch(r"invalid submission: the task's process left an unreadable plan "
                                      r"\(\S+/plan.json is not valid JSON: it is nested too deeply\)", err), err
