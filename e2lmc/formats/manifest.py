"""`manifest.yaml`: the checkpoints the ingestion program evaluates, and where they live.

Input data of the prediction step: written by the checkpoint-set builder (`e2lmc zoo
build`), by `e2lmc checkpoints fetch` for the placed real series, or by hand for the hub
repos. The bundle carries one per phase (`manifest-<phase>.yaml`), each with the roles the
checkpoints play in that phase (a hidden role withholds the errors of its checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .files import read_format, write_format
from .reference import Role

MANIFEST_FILE = "manifest.yaml"
MANIFEST_KIND = "e2lmc.manifest"


@dataclass
class ManifestEntry:
    """Where one checkpoint lives: a local directory (`path`, relative to the manifest
    or absolute) or a hub repo (`repo`, `subfolder`, `revision`) resolved through the
    Hugging Face cache."""

    id: str  # '<model id>/<checkpoint name>', as in the reference data
    path: str | None = None
    repo: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    role: Role | None = None  # as in the reference data; unknown counts as hidden (errors withheld)


@dataclass
class CheckpointManifest:
    checkpoints: list[ManifestEntry]
    description: str = ""
    # How many tokens of these checkpoints' tokenizer count as one token of the 2,048-token
    # prompt rule: 1 for the real series, counted with its own tokenizer; more for the
    # embedded set, whose small tokenizer cuts English into more pieces (docs/zoo.md).
    tokens_per_rule_token: float = 1.0
    # The embedded set's: SHA-256 of all its weights as built (embedded/kernels.py), so that a
    # run can tell the organizers' set from another build; empty for the real series.
    weights_digest: str = ""

    def check(self, where: str) -> None:
        ids = [e.id for e in self.checkpoints]
        if not self.tokens_per_rule_token > 0:
            raise UserError(f"{where}: tokens_per_rule_token must be a positive number")
        if len(set(ids)) != len(ids):
            raise UserError(f"{where}: checkpoint ids must be unique")
        for i, entry in enumerate(self.checkpoints):
            if (entry.path is None) == (entry.repo is None):
                raise UserError(f"{where}: checkpoints[{i}] ({entry.id}) needs exactly one of 'path' or 'repo'")


def write_manifest(manifest: CheckpointManifest, directory: str | Path, name: str = MANIFEST_FILE) -> Path:
    """`name` lets one input-data folder hold a manifest per competition phase."""
    return write_format(Path(directory) / name, MANIFEST_KIND, manifest)


def read_manifest(directory: str | Path, name: str = MANIFEST_FILE) -> CheckpointManifest:
    return read_format(CheckpointManifest, Path(directory) / name, MANIFEST_KIND)
