"""A Hugging Face hub cache made from the embedded checkpoints, laid out as huggingface_hub
lays out real downloads (`models--owner--name/{blobs,refs,snapshots}`, snapshot files as
relative links into the blobs), so that the real offline code path reads it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROOT_TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


def _add(repo_dir: Path, source: Path, relative: str) -> None:
    data = source.read_bytes()
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    if not blob.exists():
        blob.write_bytes(data)
    link = repo_dir / "snapshots" / COMMIT / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


def lay_out(cache: Path, repo: str, model_folder: Path) -> None:
    """`model_folder`'s iter_XXXXXXX checkpoints as the repo's subfolders; the tokenizer
    kept once at the repo's root, as a repo may (fetch must copy it into each checkpoint)."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    checkpoints = sorted(p for p in model_folder.iterdir() if p.name.startswith("iter_"))
    for checkpoint in checkpoints:
        for file in sorted(checkpoint.iterdir()):
            if file.name not in ROOT_TOKENIZER:
                _add(repo_dir, file, f"{checkpoint.name}/{file.name}")
    for name in ROOT_TOKENIZER:
        _add(repo_dir, checkpoints[0] / name, name)
