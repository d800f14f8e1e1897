"""Where a manifest's checkpoints live on disk.

A manifest entry is either a local model directory (`path`, relative to the manifest or
absolute, such as Codabench's read-only `/app/data/…`) or a Hugging Face hub repo with
a `subfolder` (the real competition's `iter_XXXXXXX`) and an optional `revision`,
resolved through the standard Hugging Face cache: offline when it is cached there,
downloaded (only that subfolder) when the worker is online.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError, first_line
from ..formats.manifest import ManifestEntry


def resolve(entry: ManifestEntry, manifest_dir: Path, cache_dir: Path | None = None) -> Path:
    """The local model directory of one checkpoint."""
    if entry.path is not None:
        path = Path(entry.path) if Path(entry.path).is_absolute() else Path(manifest_dir) / entry.path
    else:
        path = _from_hub(entry, cache_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"checkpoint {entry.id}: {path} is not a model directory (it has no config.json)")
    return path


def _from_hub(entry: ManifestEntry, cache_dir: Path | None) -> Path:
    """The cache first (no network call per checkpoint when it is there), then the hub."""
    from huggingface_hub import snapshot_download

    assert entry.repo is not None
    patterns = [f"{entry.subfolder}/*"] if entry.subfolder else None
    where = f"{entry.repo}" + (f"/{entry.subfolder}" if entry.subfolder else "") + f"@{entry.revision or 'main'}"
    problem = ""
    for local_only in (True, False):
        try:
            snapshot = snapshot_download(entry.repo, revision=entry.revision, allow_patterns=patterns,
                                         cache_dir=cache_dir, local_files_only=local_only)
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, no access: one sentence below
            problem = first_line(exc, 200) or type(exc).__name__
            continue
        path = Path(snapshot) / (entry.subfolder or "")
        if (path / "config.json").is_file():
            return path
        problem = "the snapshot has no config.json there"
    raise UserError(
        f"checkpoint {entry.id}: {where} is not in the Hugging Face cache and could not be downloaded ({problem})"
    )
