"""The worker image run for real, and `e2lmc doctor`.

Where a container engine answers and the CPU image is built from this tree (.ci/run does
both: .ci/worker-image), the steps run in containers created as Codabench's compute worker
creates them: every phase of the tiny bundle gives the no-container twin's scores, a
container made by Codabench's own literal calls is the one `container.StepSpec` makes and
gets level `landlock`, and an engine profile that refuses Landlock fails a submission with
a sentence that names the engine. Elsewhere those tests are skipped with one line saying
why (and fail where E2LMC_REQUIRE_ENGINE=1, as in CI). The doctor's failure sentences are
tested on constructed states, engine or not.
"""

import dataclasses
import errno
import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest

import e2lmc
import e2lmc.organizer.container as container
import e2lmc.organizer.doctor as doctor
from e2lmc.cli.main import main
from e2lmc.errors import UserError
from e2lmc.formats.results import read_results
from e2lmc.organizer.bundle import LOCAL_IMAGES
from e2lmc.organizer.container import Mount, StepSpec, docker_client
from e2lmc.organizer.doctor import Check, DoctorOptions, Probe
from e2lmc.organizer.phases import PHASE_NAMES
from e2lmc.organizer.worker_env import VARIABLES, WorkerEnv, read_worker_env

from .conftest import REPO

IMAGE = LOCAL_IMAGES["zoo"]
REFUSE_LANDLOCK = json.dumps({  # what the default profile of Docker before 20.10.18 does to Landlock's calls
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"],
                  "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]})
PACKAGE_DIGEST = ("import hashlib, pathlib, e2lmc; root = pathlib.Path(e2lmc.__file__).parent; "
                  "print(hashlib.sha256(b''.join(p.read_bytes() for p in sorted(root.rglob('*.py')))).hexdigest())")


def _digest_here() -> str:
    root = REPO / "e2lmc"
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.py")))).hexdigest()


@pytest.fixture(scope="module")
def engine():
    """The engine's client, once the CPU image holds this tree's package; else one line why not."""
    try:
        client = docker_client()
        client.inspect_image(IMAGE)
        box = client.create_container(IMAGE, command=["python3", "-c", PACKAGE_DIGEST], network_disabled=True)
        try:
            client.start(box)
            client.wait(box, timeout=120)
            same = client.logs(box, stderr=False).decode().strip() == _digest_here()
        finally:
            client.remove_container(box, force=True)
        reason = None if same else f"the image {IMAGE} holds another version of e2lmc: rebuild it (.ci/worker-image)"
    except UserError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - docker.errors.ImageNotFound
        reason = f"the worker image {IMAGE} is not built here ({type(exc).__name__}): .ci/worker-image builds it"
    if reason is None:
        return client
    if os.environ.get("E2LMC_REQUIRE_ENGINE") == "1":
        pytest.fail(f"E2LMC_REQUIRE_ENGINE=1, but {reason}")
    pytest.skip(f"no container test runs here: {reason}")


def _doctor_lines(out: str) -> dict[str, tuple[str, str]]:
    """The doctor's printed checks: name -> (verdict, detail)."""
    return {m[2]: (m[1], m[3]) for m in re.finditer(r"^(ok|warn|fail|skip) +(\S+(?: \S+)*?)  +(.*)$", out, re.M)}


def _worker(submission: Path, bundle: Path, phase: str, workdir: Path, *more: str) -> int:
    return main(["worker", str(submission), "--bundle", str(bundle), "--phase", phase, "--workdir", str(workdir),
                 *more])


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASE_NAMES)
def test_every_phase_in_containers_gives_the_no_container_scores(engine, zoo_bundle, short_science, phase, tmp_path):
    started = time.perf_counter()
    assert _worker(short_science, zoo_bundle, phase, tmp_path / "container") == 0
    seconds = time.perf_counter() - started
    assert _worker(short_science, zoo_bundle, phase, tmp_path / "process", "--no-container") == 0
    outputs = {mode: tmp_path / mode / "scoring" / "app" / "output" for mode in ("container", "process")}
    scores = {mode: json.loads((out / "scores.json").read_text()) for mode, out in outputs.items()}
    assert scores["container"] == scores["process"] and all(math.isfinite(v) for v in scores["container"].values())
    results = {mode: read_results(tmp_path / mode / "prediction" / "app" / "output") for mode in outputs}
    assert results["container"].sandbox == "landlock"  # namespaces are impossible in Codabench's container
    assert [c.metrics for c in results["container"].checkpoints] == [c.metrics for c in results["process"].checkpoints]
    print(f"{phase}: both steps in containers in {seconds:.0f} s")


# Codabench's compute worker (compute_worker/compute_worker.py, `_run_program_directory`, at
# codalab/codabench c7dbc756), its calls written out as it makes them for a scoring step
# without GPU, COMPETITION_CONTAINER_NETWORK_DISABLED=true.
def codabench_container(client, image: str, program: str, output: str, data: str, shared: str, input_dir: str,
                        command: str):
    volumes_host = [program, output, data, shared, input_dir]
    volumes_config = {program: {"bind": "/app/program", "mode": "z"}, output: {"bind": "/app/output", "mode": "z"},
                      data: {"bind": "/app/data", "mode": "ro"}, shared: {"bind": "/app/shared"},
                      input_dir: {"bind": "/app/input"}}
    cap_drop_list = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                     "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
    host_config = client.create_host_config(auto_remove=False, cap_drop=cap_drop_list, binds=volumes_config,
                                            userns_mode="host", security_opt=["no-new-privileges"])
    return client.create_container(image, host_config=host_config, detach=False, volumes=volumes_host,
                                   command=command, working_dir="/app/program",
                                   environment=["PYTHONUNBUFFERED=1", "http_proxy=", "https_proxy="],
                                   network_disabled="true".lower() == "true")


COMPARED = ("Config.Image", "Config.Cmd", "Config.WorkingDir", "Config.User", "Config.Env", "Config.Volumes",
            "Config.NetworkDisabled", "HostConfig.Binds", "HostConfig.CapDrop", "HostConfig.CapAdd",
            "HostConfig.SecurityOpt", "HostConfig.UsernsMode", "HostConfig.AutoRemove", "HostConfig.Privileged",
            "HostConfig.DeviceRequests", "HostConfig.NetworkMode")


def _field(inspected: dict, path: str):
    section, key = path.split(".")
    return inspected[section][key]


@pytest.mark.slow
def test_codabenchs_literal_calls_make_the_container_stepspec_makes_and_a_step_in_it_gets_landlock(engine, tmp_path):
    folders = {name: tmp_path / name for name in ("program", "output", "data", "shared", "input")}
    for folder in folders.values():
        folder.mkdir()
    os.chmod(folders["output"], 0o777)  # the container's root has no DAC_OVERRIDE
    command = f"e2lmc doctor --probe /app/output/{doctor.PROBE_FILE}"
    literal = codabench_container(engine, IMAGE, *(str(f) for f in folders.values()), command)
    spec = StepSpec(IMAGE, command, (Mount(folders["program"], "/app/program", "z"),
                                     Mount(folders["output"], "/app/output", "z"),
                                     Mount(folders["data"], "/app/data", "ro"), Mount(folders["shared"], "/app/shared"),
                                     Mount(folders["input"], "/app/input")))
    ours = engine.create_container(host_config=engine.create_host_config(**spec.host_config()),
                                   **spec.create_container())
    try:
        a, b = engine.inspect_container(literal), engine.inspect_container(ours)
        assert {f: _field(a, f) for f in COMPARED} == {f: _field(b, f) for f in COMPARED}
        engine.start(literal)
        assert engine.wait(literal, timeout=300)["StatusCode"] == 0
    finally:
        for box in (literal, ours):
            engine.remove_container(box, force=True)
    seen = doctor.read_probe(folders["output"] / doctor.PROBE_FILE)
    assert seen.level == "landlock" and seen.landlock_abi >= 1 and seen.interfaces == []
    assert seen.data_checkpoints is None and not seen.data_writable
    assert any("bubblewrap cannot create namespaces" in p for p in seen.problems)


@pytest.mark.slow
def test_an_engine_profile_that_refuses_landlock_fails_a_submission_naming_the_engine(engine, zoo_bundle,
                                                                                     short_science, tmp_path,
                                                                                     monkeypatch, capfd):
    monkeypatch.setattr(container, "SECURITY_OPT", ("no-new-privileges", f"seccomp={REFUSE_LANDLOCK}"))
    assert _worker(short_science, zoo_bundle, "warm-up", tmp_path / "w") == 1
    printed = capfd.readouterr()
    assert "Landlock's system calls are refused (ENOSYS)" in printed.err
    assert "the container engine's seccomp profile does not allow them (this is a Docker container)" in printed.err
    assert "from 20.10.18 on (23.0 and later included)" in printed.err
    metadata = (tmp_path / "w" / "prediction" / "app" / "output" / "metadata").read_text()
    assert "ingestionExitCode: 2" in metadata  # refused before any work: no model loaded

    assert main(["doctor"]) == 1
    out = capfd.readouterr().out
    verdict, detail = _doctor_lines(out)["sandbox in a container"]
    assert verdict == "fail" and "'none'" in detail and "seccomp profile does not allow them" in detail
    lines = out.splitlines()
    assert lines[-1].startswith("verdict: not ready — 1 check failed (sandbox in a container)")


@pytest.mark.slow
def test_the_doctor_on_this_engine(engine, tiny_zoo, tmp_path, capfd):
    zoo, _ = tiny_zoo
    env = tmp_path / ".env"  # the worker's .env: its data folder is HOST_DIRECTORY/data
    (tmp_path / "data").symlink_to(zoo)
    env.write_text(f"HOST_DIRECTORY={tmp_path}  # the worker's folders\n#USE_GPU=True\n")
    assert main(["doctor", "--worker-env", str(env)]) == 0  # the series: the one placed with the checkpoints
    out = capfd.readouterr().out
    checks = _doctor_lines(out)
    assert checks["container engine"][0] == "ok" and "seccomp" in checks["container engine"][1]
    assert checks["worker image"][0] == "ok" and checks["worker image"][1].startswith(f"{IMAGE}, ")
    assert checks["worker image"][1].endswith(f", e2lmc {e2lmc.__version__}")
    here = next(v for k, v in checks.items() if "Landlock" in k)  # on a host, or in a container (as CI's may be)
    abi = here[1].split()[1]
    assert checks["sandbox in a container"] == ("ok", f"'landlock' (Landlock ABI {abi}), the level a step gets")
    assert checks["data folder"][0] == "ok" and "84 of the series' 84 checkpoints complete" in checks["data folder"][1]
    assert checks["data folder"][1].endswith("sees 84 of them complete at /app/data, read-only")
    assert checks["network in a container"][0] == "warn"
    assert out.splitlines()[-1].startswith("verdict: ready") and "verifying" not in out
    assert main(["doctor", "--image", "e2lmc/no-such-image:0", "--no-container"]) == 0  # host checks only
    assert "verdict: ready (this host's checks only: --no-container)" in capfd.readouterr().out
    assert main(["doctor", "--image", "e2lmc/no-such-image:0"]) == 1
    printed = capfd.readouterr()
    assert "e2lmc/no-such-image:0 is not on this host: pulling it" in printed.err
    verdict, detail = _doctor_lines(printed.out)["worker image"]
    assert verdict == "fail" and detail.startswith("the image e2lmc/no-such-image:0 is not on this host and cannot be "
                                                   "pulled")


@pytest.mark.slow
def test_a_link_out_of_the_data_folder_an_image_without_e2lmc_and_a_missing_data_folder(engine, tiny_zoo, tmp_path,
                                                                                          zoo_bundle, short_science,
                                                                                          capfd):
    """Complete on the host, empty in a container: the doctor names the link; an image that is
    not the worker's fails its own line; the worker refuses a data folder that does not exist."""
    zoo, _ = tiny_zoo
    data = Path(shutil.copytree(zoo, tmp_path / "data"))
    moved = data / "dense-large-arch2" / "iter_0000060"
    shutil.move(moved, tmp_path / "elsewhere")
    moved.symlink_to(tmp_path / "elsewhere")
    assert main(["doctor", "--data", str(data)]) == 1
    verdict, detail = _doctor_lines(capfd.readouterr().out)["data folder"]
    assert verdict == "fail" and "84 of the series' 84 checkpoints complete" in detail
    assert f"sees 83 of them complete at /app/data: {moved} is a link to {tmp_path / 'elsewhere'}, outside" in detail

    base = next(t for i in engine.images() for t in i.get("RepoTags") or [] if t.startswith("local/bookworm-python"))
    assert main(["doctor", "--image", base]) == 1
    out = capfd.readouterr().out
    verdict, detail = _doctor_lines(out)["worker image"]
    assert verdict == "fail" and detail.startswith(f"the image {base} has no e2lmc to run (the engine says: ")
    assert "verdict: not ready — 1 check failed (worker image)" in out

    assert _worker(short_science, zoo_bundle, "warm-up", tmp_path / "w", "--data", str(tmp_path / "nowhere")) == 2
    assert f"error: --data {tmp_path / 'nowhere'}: no such folder" in capfd.readouterr().err
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------- the doctor's sentences, constructed


def _probe(**changes) -> Probe:
    return Probe(**{**dict(version=doctor.PROBE_VERSION, e2lmc="0", landlock_abi=6, level="landlock", problems=[], gpus=[],
                           interfaces=[], data_checkpoints=None, data_writable=False), **changes})


def test_a_probe_of_another_format_asks_for_a_rebuilt_image(tmp_path):
    older = tmp_path / doctor.PROBE_FILE
    older.write_text(json.dumps({**dataclasses.asdict(_probe()), "version": doctor.PROBE_VERSION - 1}))
    with pytest.raises(container.ImageUnusable, match=r"another probe format \(version 1, this one reads 2\): "
                                                      r"rebuild the image"):
        doctor.read_probe(older)
    older.write_text(json.dumps(dataclasses.asdict(_probe())))
    assert doctor.read_probe(older) == _probe()


def test_a_kernel_without_landlock_fails_the_first_check_and_the_verdict(monkeypatch):
    import e2lmc.sandboxed.confine as confine
    import e2lmc.sandboxed.sandbox as sandbox

    monkeypatch.setattr(confine, "landlock_abi", lambda libc: (0, errno.ENOSYS))
    monkeypatch.setattr(sandbox, "seccomp_filtered", lambda: False)
    monkeypatch.setattr(doctor, "strongest_level", lambda: "none")
    monkeypatch.setattr(doctor, "container_engine", lambda: None)
    kernel, level = doctor.host_checks(DoctorOptions(container=False))
    assert kernel.verdict == "fail" and "has no Landlock: it needs Linux 5.13 or later" in kernel.detail
    assert level.verdict == "fail" and level.detail.startswith("'none'")
    text, code = doctor.report([kernel, level])
    assert code == 1 and text.endswith("verdict: not ready — 2 checks failed (kernel Landlock, sandbox level here)")
    warned = Check("network in a container", "warn", "on")
    assert doctor.report([warned], "for steps run without a container") == (
        "warn  network in a container  on\nverdict: ready (for steps run without a container; 1 warning to decide)", 0)


def test_no_engine_fails_on_a_host_and_inside_a_container(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setattr(doctor, "container_engine", lambda: None)
    checks, seen = doctor.container_checks(DoctorOptions(), IMAGE)
    assert seen is None and checks[0].verdict == "fail" and "no Docker engine answers here" in checks[0].detail
    assert {c.verdict for c in checks[1:]} == {"skip"}
    monkeypatch.setattr(doctor, "container_engine", lambda: "Docker")
    checks, _ = doctor.container_checks(DoctorOptions(), IMAGE)
    assert checks[0].verdict == "fail" and "no engine answers in this Docker container" in checks[0].detail
    text, code = doctor.report(checks)
    assert code == 1 and "verdict: not ready — 1 check failed (container engine)" in text


class _OldEngine:
    """A client of Docker 24, which has no CDI device requests."""

    def version(self) -> dict:
        return {"Version": "24.0.7", "ApiVersion": "1.43", "Components": [{"Name": "Engine"}]}

    def info(self) -> dict:
        return {"SecurityOptions": ["name=seccomp,profile=builtin"]}


def test_a_gpu_request_to_docker_before_25_fails_the_engine_line():
    check = doctor._engine_check(_OldEngine(), DoctorOptions(gpus=True))
    assert check.verdict == "fail" and check.detail.startswith("Docker 24.0.7 (API 1.43; security: seccomp,profile")
    assert "too old for the GPU request; " + container.CDI_FIX in check.detail
    assert doctor._engine_check(_OldEngine(), DoctorOptions()).verdict == "ok"


@pytest.mark.parametrize("gpus, seen, failure, verdict, said", [
    (False, [], None, "skip", "not asked (--gpus"),
    (True, ["NVIDIA H200", "NVIDIA H200"], None, "ok", "2: NVIDIA H200"),
    (True, [], None, "fail", "the container sees no GPU; Codabench asks for GPUs through CDI"),
    (True, [], "the engine refused the container: unknown device", "fail", "refused the container"),
])
def test_the_gpu_check(gpus, seen, failure, verdict, said):
    check = doctor._gpu_check(_probe(gpus=seen), DoctorOptions(gpus=gpus), failure)
    assert check.verdict == verdict and said in check.detail


@pytest.mark.parametrize("disabled, interfaces, verdict, said", [
    (True, [], "ok", "off (COMPETITION_CONTAINER_NETWORK_DISABLED=true): loopback only"),
    (True, ["eth0"], "fail", "yet the container has eth0"),
    (False, ["eth0"], "warn", "set COMPETITION_CONTAINER_NETWORK_DISABLED=true in the compute worker's .env"),
])
def test_the_network_check(disabled, interfaces, verdict, said):
    check = doctor._network_check(_probe(interfaces=interfaces), DoctorOptions(network_disabled=disabled))
    assert check.verdict == verdict and said in check.detail


def test_a_level_below_the_bundles_names_what_is_missing():
    refusal = "Landlock's system calls are refused (ENOSYS) by the seccomp filter this process runs under"
    check = doctor._sandbox_check(_probe(level="none", landlock_abi=0, problems=[refusal]), DoctorOptions())
    assert check.verdict == "fail" and check.detail.endswith(f"below the bundle's 'landlock': {refusal}")


def test_the_workers_env_file_is_read_as_docker_compose_reads_it(tmp_path, monkeypatch):
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    env = tmp_path / ".env"
    env.write_text("BROKER_URL=pyamqp://login:pass@www.codabench.org:5672/\n"
                   "HOST_DIRECTORY=/srv/codabench   # the worker's folders\n"
                   "#USE_GPU=False\nexport USE_GPU=True\n"
                   "GPU_DEVICE='nvidia.com/gpu=1' # the second one\n"
                   "COMPETITION_CONTAINER_NETWORK_DISABLED=\"True\"\n")
    settings = read_worker_env(env)
    assert settings == WorkerEnv(use_gpu=True, gpu_device="nvidia.com/gpu=1", host_directory=Path("/srv/codabench"),
                                 network_disabled=True)
    assert settings.data == Path("/srv/codabench/data")
    assert read_worker_env(None) == WorkerEnv()  # the compute worker's defaults
    monkeypatch.setenv("COMPETITION_CONTAINER_NETWORK_DISABLED", "true")
    assert read_worker_env(None).network_disabled
    with pytest.raises(UserError, match=r"\.env-missing: cannot read it"):
        read_worker_env(tmp_path / ".env-missing")


def test_the_data_folder_and_the_disk_against_the_series(tiny_zoo, tmp_path, monkeypatch):
    from e2lmc.formats.series import E2LM_SERIES, placed_manifest, read_series

    zoo, _ = tiny_zoo
    data = Path(shutil.copytree(zoo, tmp_path / "data"))
    series = read_series(data / "series.yaml")
    shutil.rmtree(data / "dense-large-arch2" / "iter_0000060")
    folder, disk = doctor.data_checks(DoctorOptions(data=data, series=series), None)
    assert folder.verdict == "fail" and folder.detail.startswith("83 of the series' 84 checkpoints complete, ")
    assert folder.detail.endswith(f"; {data / 'dense-large-arch2' / 'iter_0000060'} is missing")
    assert disk.verdict == "skip" and disk.detail.endswith("the 1 checkpoint still to place cannot be sized from "
                                                           "the series' size labels")  # only what is not placed
    folder, _ = doctor.data_checks(DoctorOptions(data=zoo, series=series), _probe(data_checkpoints=84,
                                                                                  data_writable=True))
    assert folder.verdict == "fail" and folder.detail.endswith("WRITABLE: the data folder must be mounted read-only")

    real = read_series(E2LM_SERIES, "org/web")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 5e9, 5e9))
    folder, disk = doctor.data_checks(DoctorOptions(data=tmp_path / "empty", series=real), None)
    assert folder.verdict == "fail" and f"{tmp_path / 'empty'} does not exist or is not a folder" in folder.detail
    assert disk.verdict == "fail" and disk.detail.startswith(f"5.0 GB free on {tmp_path}, ")
    assert f"for the {len(placed_manifest(real).checkpoints)} checkpoints still to place" in disk.detail
    assert [c.verdict for c in doctor.data_checks(DoctorOptions(), None)] == ["skip", "skip"]


@pytest.mark.slow
def test_a_gpu_request_the_engine_cannot_serve_ends_in_one_sentence(engine, zoo_bundle, short_science, tmp_path,
                                                                    capfd):
    """Docker before 25 has no CDI: the worker's --gpus and the doctor's both name the fix."""
    if int(engine.version()["Version"].split(".")[0]) >= 25:
        pytest.skip("this engine may serve CDI requests: the refusal needs one that cannot")
    assert _worker(short_science, zoo_bundle, "warm-up", tmp_path / "w", "--gpus") == 2
    err = capfd.readouterr().err
    assert "error: the container engine refused the step's container in e2lmc/worker:" in err
    assert container.CDI_FIX in err and "Traceback" not in err
    assert main(["doctor", "--gpus", "--image", IMAGE]) == 1
    out = capfd.readouterr().out
    checks = _doctor_lines(out)
    assert checks["GPUs in a container"][0] == "fail" and container.CDI_FIX in checks["GPUs in a container"][1]
    assert checks["container engine"][0] == "fail"  # Docker 20.10 takes no CDI request
    assert checks["sandbox in a container"][0] == "ok"  # asked again without GPUs, the rest still answers


@pytest.mark.slow
def test_a_missing_image_is_pulled_and_one_that_cannot_be_is_named(engine, zoo_bundle, short_science, tmp_path,
                                                                   capfd):
    assert _worker(short_science, zoo_bundle, "warm-up", tmp_path / "w", "--image", "e2lmc/no-such-image:0") == 2
    err = capfd.readouterr().err
    assert "e2lmc/no-such-image:0 is not on this host: pulling it, as Codabench's worker does" in err
    assert "error: the image e2lmc/no-such-image:0 is not on this host and cannot be pulled (" in err
    assert "Traceback" not in err
