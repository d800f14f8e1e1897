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

Inside the container the image's own e2lmc answers (`e2lmc doctor --probe FILE`, writing a
`Probe`); a check that cannot run says why in its line. The verdict is "ready" when no
check failed (warnings are things to decide, not faults).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..formats.series import Series, placed_manifest
from ..sandboxed.sandbox import (
    container_engine,
    filters_problem,
    landlock_refusal,
    namespaces_problem,
    rank,
    strongest_level,
)
from .bundle import LOCAL_IMAGES
from .container import CDI_FIX, Mount, StepSpec, docker_client, run_container
from .estimate import nominal_sizes
from .placement import placed_sizes

PROBE_FILE = "probe.json"
PROBE_VERSION = 1
PROBE_SECONDS = 300  # a container's start, torch's import, the GPUs' discovery
NETWORK_VARIABLE = "COMPETITION_CONTAINER_NETWORK_DISABLED"  # the compute worker's .env setting


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
    data_checkpoints: int | None  # checkpoints of /app/data's manifest that are there (None: no manifest)
    data_writable: bool


def kernel_landlock() -> tuple[int, int]:
    """The kernel's Landlock ABI, and the error number where there is none (by the system call)."""
    import ctypes

    from ..sandboxed.confine import landlock_abi

    return landlock_abi(ctypes.CDLL(None, use_errno=True))


def probe(data: Path = Path("/app/data")) -> Probe:
    """This process's view (in a container of the worker image, as a step's)."""
    from ..formats.manifest import MANIFEST_FILE, read_manifest

    abi, _ = kernel_landlock()
    gpus = []
    try:
        import torch
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup is a finding, not a crash
        gpus = [f"none usable ({type(exc).__name__}: {str(exc)[:200]})"] if os.path.exists("/dev/nvidiactl") else []
    net = Path("/sys/class/net")
    interfaces = sorted(i.name for i in net.iterdir() if i.name != "lo") if net.is_dir() else []
    checkpoints = None
    if (data / MANIFEST_FILE).is_file():
        try:
            checkpoints = sum(1 for e in read_manifest(data).checkpoints if e.path and (data / e.path).is_dir())
        except UserError:  # a damaged manifest: the data folder's check on the host names it
            checkpoints = 0
    return Probe(PROBE_VERSION, __version__, abi, strongest_level(),
                 [p for p in (filters_problem(), namespaces_problem()) if p], gpus, interfaces, checkpoints,
                 data.is_dir() and os.access(data, os.W_OK))


def write_probe(path: Path) -> None:
    path.write_text(json.dumps(asdict(probe())))


def read_probe(path: Path) -> Probe:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("version") != PROBE_VERSION:
        raise UserError(f"{path}: the image's e2lmc wrote another probe format (version {data.get('version')}, "
                        f"this one reads {PROBE_VERSION}): rebuild the image from this version (docker/build.sh)")
    return Probe(**{k: data.get(k) for k in Probe.__dataclass_fields__})


# ------------------------------------------------------------------------ host


def host_checks(options: DoctorOptions) -> list[Check]:
    abi, error = kernel_landlock()
    kernel = Check("kernel Landlock", "ok", f"ABI {abi} (Linux {os.uname().release})") if abi else \
        Check("kernel Landlock", "fail", landlock_refusal(error))
    level = strongest_level()
    where = "in this container" if container_engine() else "on this host (a step run with --no-container)"
    problems = "; ".join(p for p in (filters_problem(), namespaces_problem()) if p)
    detail = f"'{level}' {where}" + (f" — {problems}" if problems and level != "namespaces" else "")
    verdict = "ok" if rank(level) >= rank(options.required) else "fail"
    return [kernel, Check("sandbox level here", verdict, detail)]


def data_checks(options: DoctorOptions, seen: Probe | None) -> list[Check]:
    """The data folder against the series (and as a container sees it), and the disk it lies on."""
    if options.data is None:
        why = "not asked (--data: the worker's $HOST_DIRECTORY/data, for the real checkpoints)"
        return [Check("data folder", "skip", why), Check("free disk", "skip", why)]
    placed, checks = {}, []
    if options.series is None:
        checks.append(Check("data folder", "skip", "no series to check it against (--series)"))
    else:
        try:
            placed = placed_sizes(options.series, options.data)
            inside = "" if seen is None else (f"; a step's container sees {seen.data_checkpoints or 0} of them at "
                                              f"/app/data, {'WRITABLE' if seen.data_writable else 'read-only'}")
            verdict = "ok" if seen is None or (seen.data_checkpoints == len(placed) and not seen.data_writable) \
                else "fail"
            checks.append(Check("data folder", verdict, f"{len(placed)} checkpoints, {_gb(_total(placed))}, "
                                                        f"all complete and all of the series{inside}"))
        except UserError as exc:
            checks.append(Check("data folder", "fail", str(exc)))
    folder = options.data
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free, needed = shutil.disk_usage(folder).free, 0
    to_place = {e.id for e in placed_manifest(options.series).checkpoints} - set(placed) if options.series else set()
    if to_place:
        try:
            needed = _total({k: v for k, v in nominal_sizes(options.series).items() if k in to_place})
        except UserError:  # size labels such as "small"
            return [*checks, Check("free disk", "skip", f"{_gb(free)} free on {folder}; the {len(to_place)} "
                                                        "checkpoints still to place cannot be sized from the series' "
                                                        "size labels")]
    detail = f"{_gb(free)} free on {folder}" + (f", {_gb(needed)} of the series still to place" if needed else "")
    return [*checks, Check("free disk", "ok" if free > needed * 1.05 else "fail", detail)]


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
        if container_engine():
            why = (f"this is itself a {container_engine()} container: run the doctor on the worker host for the "
                   f"engine's checks")
            return [Check(name, "skip", why) for name in names], None
        return [Check(names[0], "fail", str(exc)), *(Check(n, "skip", "needs the engine") for n in names[1:])], None
    version = client.version()
    engine = next((c["Name"] for c in version.get("Components") or [] if "Engine" in c.get("Name", "")), "Engine")
    security = ", ".join(o.removeprefix("name=") for o in client.info().get("SecurityOptions") or []) or "none"
    checks = [Check(names[0], "ok", f"{'Docker' if engine == 'Engine' else engine} {version.get('Version')} "
                                    f"(API {version.get('ApiVersion')}; security: {security})")]
    try:
        size = client.inspect_image(image)["Size"]
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound, or an unreadable name
        return [*checks, Check(names[1], "fail", f"{image} is not on this host: build it (docker/build.sh) or pull "
                                                 f"it (docker pull {image}); Codabench pulls it at the first "
                                                 f"submission"),
                *(Check(n, "skip", "needs the image") for n in names[2:])], None
    checks.append(Check(names[1], "ok", f"{image}, {_gb(size)}"))
    seen, gpu_failure = _probe_container(options, image, options.gpus)
    if seen is None and options.gpus and gpu_failure:  # the GPU request failed: the rest still answers without it
        seen, _ = _probe_container(options, image, False)
    if seen is None:
        return [*checks, Check(names[2], "fail", gpu_failure or "the probe container failed"),
                *(Check(n, "skip", "needs the probe container") for n in names[3:])], None
    return [*checks, _sandbox_check(seen, options), _gpu_check(seen, options, gpu_failure),
            _network_check(seen, options)], seen


def _probe_container(options: DoctorOptions, image: str, gpus: bool) -> tuple[Probe | None, str | None]:
    """A container of `image` started with Codabench's options, running the probe; its view
    or why it failed."""
    with tempfile.TemporaryDirectory(prefix="e2lmc-doctor-") as tmp:
        program, output = Path(tmp, "program"), Path(tmp, "output")
        program.mkdir()
        output.mkdir()
        os.chmod(output, 0o777)  # the container's root has no DAC_OVERRIDE (Codabench drops it)
        data = options.data if options.data is not None and options.data.is_dir() else Path(tmp, "data")
        data.mkdir(exist_ok=True)
        spec = StepSpec(image, f"e2lmc doctor --probe /app/output/{PROBE_FILE}",
                        (Mount(program, "/app/program", "z"), Mount(output, "/app/output", "z"),
                         Mount(data, "/app/data", "ro")), gpus=gpus, network_disabled=options.network_disabled)
        try:
            code = run_container(spec, PROBE_SECONDS)
        except UserError as exc:  # the engine's refusal (a GPU request without CDI, say)
            return None, str(exc)
        if code != 0 or not (output / PROBE_FILE).is_file():
            return None, (f"the probe exited with {code} in {image} (its output is above): is the image built from "
                          f"this version's docker/Dockerfile?")
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
    return checks + data_checks(options, seen)


def report(checks: list[Check]) -> tuple[str, int]:
    """The lines to print and the exit code: 0 ready, 1 not."""
    width = max(len(c.name) for c in checks)
    lines = [f"{c.verdict:<5} {c.name:<{width}}  {c.detail}" for c in checks]
    failed = [c.name for c in checks if c.verdict == "fail"]
    warned = sum(c.verdict == "warn" for c in checks)
    if failed:
        lines.append(f"verdict: not ready — {len(failed)} check{'s' * (len(failed) > 1)} failed ({', '.join(failed)})")
    else:
        lines.append("verdict: ready" + (f" ({warned} warning{'s' * (warned > 1)} to decide)" if warned else ""))
    return "\n".join(lines), 1 if failed else 0


def network_disabled_setting(env_file: Path | None) -> bool:
    """COMPETITION_CONTAINER_NETWORK_DISABLED as the compute worker reads it: from its .env
    file when given, else from this environment."""
    value = os.environ.get(NETWORK_VARIABLE, "")
    if env_file is not None:
        try:
            lines = env_file.read_text().splitlines()
        except OSError as exc:
            raise UserError(f"{env_file}: cannot read it ({exc.strerror})") from None
        for line in lines:
            key, _, setting = line.partition("=")
            if key.strip() == NETWORK_VARIABLE:
                value = setting.strip().strip("'\"")
    return value.lower() == "true"


def doctor(options: DoctorOptions) -> int:
    print(f"e2lmc doctor {__version__}: is this worker ready to run the competition's steps?", flush=True)
    text, code = report(run_checks(options))
    print(text)
    return code

