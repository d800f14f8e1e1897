"""How a step's program is started: Codabench's container, or its no-container twin.

Codabench's compute worker (compute_worker/compute_worker.py, `_run_program_directory`,
read at codalab/codabench c7dbc756) creates each step's container with the low-level
docker API: the step folders bound at /app/… (program and output mode `z`, the host's
data read-only at /app/data), working directory /app/program, the metadata.yaml command
as one string, no `user=` (the image's default user: root), capabilities dropped,
`no-new-privileges`, the host's user namespace, three environment variables, GPUs through
CDI (the .env's GPU_DEVICE, `nvidia.com/gpu=all` unless set, since January 2026) and the
network off when the worker sets COMPETITION_CONTAINER_NETWORK_DISABLED. `StepSpec` is
that description; `run_container` starts it with the docker SDK (the client Codabench
uses), and `run_process` runs the same command as a plain process, every /app/… path of
it moved to the mount's host folder — both read the one description, so the two cannot drift.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

WORKING_DIR = "/app/program"
CAP_DROP = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
            "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
SECURITY_OPT = ("no-new-privileges",)
ENVIRONMENT = ("PYTHONUNBUFFERED=1", "http_proxy=", "https_proxy=")  # the proxies empty unless the worker sets one
GPU_DEVICE = "nvidia.com/gpu=all"  # the compute worker's GPU_DEVICE when its .env leaves it out
CDI_FIX = ("Codabench asks for GPUs through CDI (GPU_DEVICE, default nvidia.com/gpu=all): install the NVIDIA "
           "Container Toolkit, write the CDI spec (nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml) and use "
           "Docker 25 or later with CDI enabled (on by default from 28)")


@dataclass(frozen=True)
class Mount:
    host: Path
    container: str
    mode: str | None = None  # Codabench's: "z" (program, output), "ro" (data), none (the rest: read-write)


@dataclass(frozen=True)
class StepSpec:
    image: str
    command: str  # the program's metadata.yaml command, split like a shell would, never run by one
    mounts: tuple[Mount, ...]
    gpus: bool = False
    network_disabled: bool = True
    gpu_device: str = GPU_DEVICE  # the CDI device a GPU request names (Codabench's GPU_DEVICE)

    def binds(self) -> dict[str, dict]:
        return {str(m.host.resolve()): {"bind": m.container, **({"mode": m.mode} if m.mode else {})}
                for m in self.mounts}

    def host_config(self) -> dict:
        """`APIClient.create_host_config` keywords, as Codabench passes them."""
        config = {"auto_remove": False, "cap_drop": list(CAP_DROP), "binds": self.binds(), "userns_mode": "host",
                  "security_opt": list(SECURITY_OPT)}
        if self.gpus:
            config["device_requests"] = [{"Driver": "cdi", "DeviceIDs": [self.gpu_device]}]
        return config

    def create_container(self) -> dict:
        """`APIClient.create_container` keywords besides host_config and name."""
        return {"image": self.image, "detach": False, "volumes": [str(m.host.resolve()) for m in self.mounts],
                "command": self.command, "working_dir": WORKING_DIR, "environment": list(ENVIRONMENT),
                "network_disabled": self.network_disabled}

    def host_path(self, path: str) -> str:
        """A container path moved to its mount's host folder (the deepest mount that holds it)."""
        for mount in sorted(self.mounts, key=lambda m: -len(m.container)):
            if path == mount.container or path.startswith(mount.container + "/"):
                return str(mount.host.resolve()) + path[len(mount.container):]
        return path

    def local_argv(self) -> list[str]:
        argv = [self.host_path(arg) for arg in shlex.split(self.command)]
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the interpreter this package runs in, as the image's python3
        return argv


def _time_limit_exceeded(limit: int) -> UserError:
    return UserError(f"Execution Time Limit exceeded: the step ran past the phase's limit of {limit} s "
                     "(Codabench marks the submission Failed)")


def run_process(spec: StepSpec, time_limit: int) -> int:
    """The no-container twin: the command as a plain process over the mounts' host folders."""
    env = {**os.environ, **dict(e.split("=", 1) for e in ENVIRONMENT if not e.endswith("="))}
    process = subprocess.Popen(spec.local_argv(), cwd=spec.host_path(WORKING_DIR), env=env, start_new_session=True)
    try:
        return process.wait(timeout=time_limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise _time_limit_exceeded(time_limit) from None


def docker_client():  # noqa: ANN201 - docker.APIClient, imported only where an engine is used
    """The docker SDK's low-level client, the one Codabench's compute worker uses (DOCKER_HOST
    and the like from the environment); one sentence when no engine answers."""
    try:
        import docker
        client = docker.from_env().api
        client.ping()
    except Exception as exc:  # noqa: BLE001 - no SDK, no engine, no permission: one sentence
        raise UserError(f"no Docker engine answers here ({type(exc).__name__}): start it (systemctl start docker), "
                        "or run with --no-container (the same steps as plain processes)") from None
    return client


def run_container(spec: StepSpec, time_limit: int) -> int:
    """The step in a container, created as Codabench creates it; its logs to stderr."""
    import docker

    client = docker_client()
    pull_if_missing(client, spec.image)
    try:
        container = client.create_container(host_config=client.create_host_config(**spec.host_config()),
                                            **spec.create_container())
    except docker.errors.APIError as exc:
        raise refusal(exc, spec) from None
    try:
        try:
            client.start(container)
        except docker.errors.APIError as exc:
            raise refusal(exc, spec) from None
        logs = threading.Thread(target=_copy_logs, args=(client, container), daemon=True)
        logs.start()
        start = time.monotonic()
        try:
            status = client.wait(container, timeout=time_limit)
        except Exception:  # noqa: BLE001 - the SDK raises the HTTP library's own timeout
            if time.monotonic() - start < time_limit:
                raise
            client.kill(container)
            raise _time_limit_exceeded(time_limit) from None
        logs.join(timeout=10)
        return int(status.get("StatusCode", 1))
    finally:
        client.remove_container(container, force=True)


class ImageUnusable(UserError):
    """The worker image is missing and cannot be pulled, or cannot run a step's command."""


def pull_if_missing(client, image: str) -> dict:  # noqa: ANN001 - docker.APIClient
    """The image's description, pulled first when the host lacks it (as Codabench's compute
    worker does before a step)."""
    import docker

    try:
        return client.inspect_image(image)
    except docker.errors.ImageNotFound:
        print(f"{image} is not on this host: pulling it, as Codabench's worker does", file=sys.stderr)
    try:
        client.pull(image)
        return client.inspect_image(image)
    except docker.errors.APIError as exc:
        raise ImageUnusable(f"the image {image} is not on this host and cannot be pulled "
                            f"({str(getattr(exc, 'explanation', None) or exc)[:200]}): build it (docker/build.sh) or "
                            f"name an image this host has or can pull (--image)") from None


def refusal(exc: Exception, spec: StepSpec) -> UserError:
    """The engine's refusal to create or start a step's container, in one sentence (a GPU
    request where CDI is not set up, an image without the step's program)."""
    said = str(getattr(exc, "explanation", None) or exc)
    if "executable file not found" in said or ("exec:" in said and "no such file or directory" in said):
        program = shlex.split(spec.command)[0] if spec.command.strip() else "its command"
        return ImageUnusable(f"the image {spec.image} has no {program} to run (the engine says: {said[:200]}): is "
                             "it built from this project's docker/Dockerfile (docker/build.sh)?")
    fix = f"; {CDI_FIX}" if spec.gpus and "cdi" in said.lower() else ""
    return UserError(f"the container engine refused the step's container in {spec.image}: {said[:300]}{fix}")


def _copy_logs(client, container) -> None:
    for chunk in client.logs(container, stream=True, follow=True):
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()
