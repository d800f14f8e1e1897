"""The compute worker's settings, read from its `.env` as Codabench's worker reads them.

An organizer's compute worker is configured by one `.env` file (docker compose's
`env_file`): whether steps get GPUs (`USE_GPU`) and which (`GPU_DEVICE`, a CDI device name),
where the host keeps its folders (`HOST_DIRECTORY`, whose `data` is seen at /app/data) and
whether a step's container has a network (`COMPETITION_CONTAINER_NETWORK_DISABLED`). The
doctor checks the worker these settings describe, not a guess of it; each default is the
compute worker's own (compute_worker/compute_worker.py at codalab/codabench c7dbc756).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .container import GPU_DEVICE

NETWORK_VARIABLE = "COMPETITION_CONTAINER_NETWORK_DISABLED"
VARIABLES = ("USE_GPU", "GPU_DEVICE", "HOST_DIRECTORY", NETWORK_VARIABLE)


@dataclass(frozen=True)
class WorkerEnv:
    use_gpu: bool = False
    gpu_device: str = GPU_DEVICE
    host_directory: Path = Path("/tmp/codabench/")
    network_disabled: bool = False

    @property
    def data(self) -> Path:
        """The host folder a step sees read-only at /app/data."""
        return self.host_directory / "data"


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines as docker compose reads an env file: `#` comments (a whole line, or
    after a blank in an unquoted value), an optional `export `, quotes around a value."""
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[0] in value[1:]:
            value = value[1:value.index(value[0], 1)]
        else:
            value = value.split(" #", 1)[0].split("\t#", 1)[0].strip()
        settings[key.strip()] = value
    return settings


def read_worker_env(env_file: Path | None) -> WorkerEnv:
    """The worker's settings from its .env file when given, else from this environment."""
    settings = {k: os.environ[k] for k in VARIABLES if k in os.environ}
    if env_file is not None:
        try:
            settings = parse_env_file(env_file.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{env_file}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    return WorkerEnv(use_gpu=settings.get("USE_GPU", "false").lower() == "true",
                     gpu_device=settings.get("GPU_DEVICE") or GPU_DEVICE,
                     host_directory=Path(settings.get("HOST_DIRECTORY") or WorkerEnv.host_directory),
                     network_disabled=settings.get(NETWORK_VARIABLE, "").lower() == "true")
