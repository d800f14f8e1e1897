"""`e2lmc doctor`: is this worker host ready to run the competition's steps?

An organizer attaches compute workers to a queue before opening a competition; a worker
that cannot confine submissions, sees no GPU, or lacks the checkpoints fails every
submission later, in front of the participants. The doctor checks each of those once,
before, and says in one line per check what is wrong and how to fix it:

- on this host: the kernel's Landlock (by the system call, not securityfs, which a
  container or a minimal host may not mount) and the sandbox level a process gets here;
- through the container engine, with a container of the worker image created exactly as
  Codabench's compute worker creates a step's (`container.StepSpec`): the sandbox level
  inside (the engine's seccomp profile may refuse Landlock), the GPUs it sees through CDI,
  its network, and the data folder at /app/data;
- the data folder against the series, and the free disk against what is not yet placed.

The worker's own settings (its `.env`: USE_GPU, GPU_DEVICE, HOST_DIRECTORY, the network)
decide what is checked when given (`worker_env`).

Inside the container the image's own e2lmc answers (`e2lmc doctor --probe FILE`, writing a
`Probe`); a check that cannot run says why in its line. The verdict is "ready" when no
check failed (warnings are things to decide, not faults).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..formats.series import Series
from ..sandboxed.sandbox import (
    container_engine,
    filters_problem,
    landlock_refusal,
    namespaces_problem,
    rank,
    strongest_level,
)
from .bundle import LOCAL_IMAGES
from .container import (
    CDI_FIX,
    GPU_DEVICE,
    ImageUnusable,
    Mount,
    StepSpec,
    docker_client,
    pull_if_missing,
    run_container,
)
from .estimate import nominal_sizes
from .placement import Survey, link_leaving, survey_placed
from .worker_env import NETWORK_VARIABLE

PROBE_FILE = "probe.json"
PROBE_VERSION = 2  # 2: data_checkpoints counts complete checkpoints, not folders
PROBE_SECONDS = 300  # a container's start, torch's import, the GPUs' discovery
CDI_DOCKER = 25  # the first Docker release whose API takes CDI device requests


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str  # "ok", "warn" (to decide), "fail", "skip" (not asked, or cannot be checked here)
    detail: str


@dataclass(frozen=True)
class DoctorOptions:
    image: str | None = None  # default: docker/build.sh's local tag (the GPU one with gpus)
    container: bool = True  # check the engine and a container of the image
    gpus: bool = False  # request GPUs as Codabench's USE_GPU=true does, and expect at least one
    gpu_device: str = GPU_DEVICE  # the CDI device that request names (the worker's GPU_DEVICE)
    data: Path | None = None  # the worker's $HOST_DIRECTORY/data
    series: Series | None = None  # what the data folder must hold
    network_disabled: bool = False  # the worker's COMPETITION_CONTAINER_NETWORK_DISABLED
    required: str = "landlock"  # the weakest sandbox level the bundle's phases accept


@dataclass(frozen=True)
class Probe:
    """What a process sees where it runs: written inside the container, read by the doctor."""

    version: int
    e2lmc: str
    landlock_abi: int
    level: str  # the strongest sandbox level a step gets there
    problems: list[str]  # why a stronger level is out of reach
    gpus: list[str]  # the GPUs torch sees
    interfaces: list[str]  # network interfaces besides loopback
    data_checkpoints: int | None  # complete checkpoints of /app/data's manifest (None: no manifest)
    data_writable: bool


def kernel_landlock() -> tuple[int, int]:
    """The kernel's Landlock ABI, and the error number where there is none (by the system call)."""
    import ctypes

    from ..sandboxed.confine import landlock_abi

    return landlock_abi(ctypes.CDLL(None, use_errno=True))


def probe(data: Path = Path("/app/data")) -> Probe:
    """This process's view (in a container of the worker image, as a step's)."""
    from ..formats.manifest import MANIFEST_FILE

    abi, _ = kernel_landlock()
    gpus = []
    try:
        import torch
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup is a finding, not a crash
        gpus = [f"none usable ({type(exc).__name__}: {str(exc)[:200]})"] if os.path.exists("/dev/nvidiactl") else []
    net = Path("/sys/class/net")
    interfaces = sorted(i.name for i in net.iterdir() if i.name != "lo") if net.is_dir() else []
    checkpoints = len(survey_placed(data, progress=False).sizes) if (data / MANIFEST_FILE).is_file() else None
    return Probe(PROBE_VERSION, __version__, abi, strongest_level(),
                 [p for p in (filters_problem(), namespaces_problem()) if p], gpus, interfaces, checkpoints,
                 data.is_dir() and os.access(data, os.W_OK))


def write_probe(path: Path) -> None:
    path.write_text(json.dumps(asdict(probe())))


def read_probe(path: Path) -> Probe:
    data = json.loads(path.read_text())
    version = data.get("version") if isinstance(data, dict) else None
    if version != PROBE_VERSION:
        raise ImageUnusable(f"{path.name}: the image's e2lmc wrote another probe format (version {version}, this one "
                            f"reads {PROBE_VERSION}): rebuild the image from this version (docker/build.sh)")
    return Probe(**{k: data.get(k) for k in Probe.__dataclass_fields__})


# ------------------------------------------------------------------------ host


def host_checks(options: DoctorOptions) -> list[Check]:
    abi, error = kernel_landlock()
    name = f"Landlock in this {container_engine()} container" if container_engine() else "kernel Landlock"
    kernel = Check(name, "ok", f"ABI {abi} (Linux {os.uname().release})") if abi else \
        Check(name, "fail", landlock_refusal(error))
    level = strongest_level()
    where = "in this container" if container_engine() else "on this host (a step run with --no-container)"
    problems = "; ".join(p for p in (filters_problem(), namespaces_problem()) if p)
    detail = f"'{level}' {where}" + (f" — {problems}" if problems and level != "namespaces" else "")
    verdict = "ok" if rank(level) >= rank(options.required) else "fail"
    return [kernel, Check("sandbox level here", verdict, detail)]


def data_checks(options: DoctorOptions, seen: Probe | None) -> list[Check]:
    """The data folder against the series (and as a container sees it), and the disk it lies on."""
    if options.data is None:
        why = "not asked (--data, or HOST_DIRECTORY in --worker-env: where the real checkpoints are placed)"
        return [Check("data folder", "skip", why), Check("free disk", "skip", why)]
    survey = survey_placed(options.data, options.series, progress=False)
    return [_data_check(options, survey, seen), _disk_check(options, survey)]


def _data_check(options: DoctorOptions, survey: Survey, seen: Probe | None) -> Check:
    name, found = "data folder", len(survey.sizes)
    against = (f"{found} of the series' {found + len(survey.missing)} checkpoints" if options.series else
               f"{found} checkpoints of its manifest (no series to check it against: --series)")
    detail = f"{against} complete, {_gb(_total(survey.sizes))}"
    if survey.problem or survey.missing:
        fault = survey.problem or (f"it lacks {survey.missing[0]}: place the series with `e2lmc checkpoints fetch "
                                   f"--series FILE --to {options.data}`")
        return Check(name, "fail", f"{detail}; {fault}")
    if seen is None:
        return Check(name, "ok", detail)
    inside = f"; a step's container sees {seen.data_checkpoints or 0} of them complete at /app/data"
    if seen.data_writable:
        return Check(name, "fail", f"{detail}{inside}, WRITABLE: the data folder must be mounted read-only")
    if (seen.data_checkpoints or 0) < found:
        leaving = link_leaving(options.data)
        why = (f": {leaving[0]} is a link to {leaving[1]}, outside the folder the container sees; place copies or "
               "hard links (`e2lmc checkpoints fetch` does)" if leaving else ": can the container's root read them?")
        return Check(name, "fail", f"{detail}{inside}{why}")
    return Check(name, "ok", f"{detail}{inside}, read-only")


def _disk_check(options: DoctorOptions, survey: Survey) -> Check:
    folder = options.data
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    detail = f"{_gb(free)} free on {folder}"
    if not survey.missing:
        return Check("free disk", "ok", detail)
    try:
        needed = _total({k: v for k, v in nominal_sizes(options.series).items() if k in set(survey.missing)})
    except UserError:  # size labels such as "small"
        return Check("free disk", "skip", f"{detail}; the {_checkpoints(len(survey.missing))} still to place cannot "
                                          "be sized from the series' size labels")
    detail += f", {_gb(needed)} for the {_checkpoints(len(survey.missing))} still to place"
    return Check("free disk", "ok" if free > needed * 1.05 else "fail", detail)


def _checkpoints(count: int) -> str:
    return f"{count} checkpoint{'s' * (count != 1)}"


def _total(sizes: dict) -> int:
    return sum(s.bytes for s in sizes.values())


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ------------------------------------------------------------------- container


def container_checks(options: DoctorOptions, image: str) -> tuple[list[Check], Probe | None]:
    """The engine's checks, and what a container of the image saw (None: none ran)."""
    names = ("container engine", "worker image", "sandbox in a container", "GPUs in a container",
             "network in a container")
    try:
        client = docker_client()
    except UserError as exc:
        why = (f"no engine answers in this {container_engine()} container: run the doctor on the worker host, or "
               f"pass --no-container for this container's own checks" if container_engine() else str(exc))
        return [Check(names[0], "fail", why), *(Check(n, "skip", "needs the engine") for n in names[1:])], None
    checks = [_engine_check(client, options)]
    try:
        size = pull_if_missing(client, image)["Size"]
        seen, gpu_failure = _probe_container(options, image, options.gpus)
        if seen is None and options.gpus:  # the GPU request failed: the rest still answers without it
            seen, _ = _probe_container(options, image, False)
    except ImageUnusable as exc:
        return [*checks, Check(names[1], "fail", str(exc)),
                *(Check(n, "skip", "needs a usable image") for n in names[2:])], None
    if seen is None:
        return [*checks, Check(names[1], "ok", f"{image}, {_gb(size)}"),
                Check(names[2], "fail", gpu_failure or "the probe container failed"),
                *(Check(n, "skip", "needs the probe container") for n in names[3:])], None
    if seen.e2lmc != __version__:
        image_check = Check(names[1], "warn", f"{image}, {_gb(size)}, holds e2lmc {seen.e2lmc}, not this "
                                              f"{__version__}: the bundle's programs run the image's (rebuild it: "
                                              "docker/build.sh)")
    else:
        image_check = Check(names[1], "ok", f"{image}, {_gb(size)}, e2lmc {seen.e2lmc}")
    return [*checks, image_check, _sandbox_check(seen, options), _gpu_check(seen, options, gpu_failure),
            _network_check(seen, options)], seen


def _engine_check(client, options: DoctorOptions) -> Check:  # noqa: ANN001 - docker.APIClient
    version = client.version()
    engine = next((c["Name"] for c in version.get("Components") or [] if "Engine" in c.get("Name", "")), "Engine")
    engine = "Docker" if engine == "Engine" else engine
    security = ", ".join(o.removeprefix("name=") for o in client.info().get("SecurityOptions") or []) or "none"
    detail = f"{engine} {version.get('Version')} (API {version.get('ApiVersion')}; security: {security})"
    major = int(re.match(r"\d*", str(version.get("Version")))[0] or 0)
    if options.gpus and engine == "Docker" and major < CDI_DOCKER:
        return Check("container engine", "fail", f"{detail}: too old for the GPU request; {CDI_FIX}")
    return Check("container engine", "ok", detail)


def _probe_container(options: DoctorOptions, image: str, gpus: bool) -> tuple[Probe | None, str | None]:
    """A container of `image` started with Codabench's options, running the probe; its view
    or why it failed (ImageUnusable: the image cannot run the probe)."""
    with tempfile.TemporaryDirectory(prefix="e2lmc-doctor-") as tmp:
        program, output = Path(tmp, "program"), Path(tmp, "output")
        program.mkdir()
        output.mkdir()
        os.chmod(output, 0o777)  # the container's root has no DAC_OVERRIDE (Codabench drops it)
        data = options.data if options.data is not None and options.data.is_dir() else Path(tmp, "data")
        data.mkdir(exist_ok=True)
        spec = StepSpec(image, f"e2lmc doctor --probe /app/output/{PROBE_FILE}",
                        (Mount(program, "/app/program", "z"), Mount(output, "/app/output", "z"),
                         Mount(data, "/app/data", "ro")), gpus=gpus, network_disabled=options.network_disabled,
                        gpu_device=options.gpu_device)
        try:
            code = run_container(spec, PROBE_SECONDS)
        except ImageUnusable:
            raise
        except UserError as exc:  # the engine's refusal (a GPU request without CDI, say)
            return None, str(exc)
        if code != 0 or not (output / PROBE_FILE).is_file():
            raise ImageUnusable(f"{image}: its `e2lmc doctor --probe` exited with {code} (its output is above): "
                                "is the image built from this version's docker/Dockerfile (docker/build.sh)?")
        return read_probe(output / PROBE_FILE), None


def _sandbox_check(seen: Probe, options: DoctorOptions) -> Check:
    name = "sandbox in a container"
    detail = f"'{seen.level}' (Landlock ABI {seen.landlock_abi}), the level a step gets"
    if rank(seen.level) >= rank(options.required):
        return Check(name, "ok", detail)
    return Check(name, "fail", f"{detail}, below the bundle's '{options.required}': {seen.problems[0]}")


def _gpu_check(seen: Probe, options: DoctorOptions, failure: str | None) -> Check:
    name = "GPUs in a container"
    if not options.gpus:
        return Check(name, "skip", f"not asked (--gpus: for the GPU queue); {len(seen.gpus)} seen without a request")
    if failure:
        return Check(name, "fail", failure)
    if not seen.gpus or seen.gpus[0].startswith("none usable"):
        return Check(name, "fail", f"the container sees no GPU{f' ({seen.gpus[0]})' if seen.gpus else ''}; "
                                   f"{CDI_FIX}; a CPU image (…-cpu) sees none either")
    return Check(name, "ok", f"{len(seen.gpus)}: {', '.join(sorted(set(seen.gpus)))}")


def _network_check(seen: Probe, options: DoctorOptions) -> Check:
    name = "network in a container"
    if options.network_disabled:
        if seen.interfaces:
            return Check(name, "fail", f"{NETWORK_VARIABLE}=true, yet the container has {', '.join(seen.interfaces)}")
        return Check(name, "ok", f"off ({NETWORK_VARIABLE}=true): loopback only")
    return Check(name, "warn", f"on ({', '.join(seen.interfaces) or 'no interface'}): set {NETWORK_VARIABLE}=true in "
                               "the compute worker's .env, unless a phase asks the alignment judge (its scoring step "
                               "needs the network; the sandboxed code has none either way)")


# ---------------------------------------------------------------------- report


def run_checks(options: DoctorOptions) -> list[Check]:
    image = options.image or LOCAL_IMAGES["e2lm" if options.gpus else "zoo"]
    checks, seen = host_checks(options), None
    if options.container:
        engine_checks, seen = container_checks(options, image)
        checks += engine_checks
    else:
        checks.append(Check("container engine", "skip", "not asked (--no-container): a step in a container of the "
                                                        "worker image may get another sandbox level, GPUs and network "
                                                        "than this process"))
    return checks + data_checks(options, seen)


def report(checks: list[Check], scope: str = "") -> tuple[str, int]:
    """The lines to print and the exit code: 0 ready, 1 not; `scope` qualifies a "ready"."""
    width = max(len(c.name) for c in checks)
    lines = [f"{c.verdict:<5} {c.name:<{width}}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.verdict == "fail"]
    warned = sum(c.verdict == "warn" for c in checks)
    if failed:
        lines.append(f"verdict: not ready — {len(failed)} check{'s' * (len(failed) > 1)} failed ({', '.join(failed)})")
    else:
        notes = [scope] * bool(scope) + [f"{warned} warning{'s' * (warned > 1)} to decide"] * bool(warned)
        lines.append("verdict: ready" + (f" ({'; '.join(notes)})" if notes else ""))
    return "\n".join(lines), 1 if failed else 0


def doctor(options: DoctorOptions) -> int:
    print(f"e2lmc doctor {__version__}: is this worker ready to run the competition's steps?", flush=True)
    text, code = report(run_checks(options), "" if options.container else "this host's checks only: --no-container")
    print(text)
    return code

