"""Where the embedded checkpoint sets live, and building one on first use.

Every command that evaluates on the embedded set (`e2lmc run`, `demo`, `diagnose`,
`bundle --checkpoints zoo`) finds it in `zoo/<preset>` under the working directory unless
`--zoo` names another folder, and builds it there first if it is missing (`zoo.build`,
resumable). `validate` and `estimate` borrow the default set's first checkpoint, when it
is built, to count prompt tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..formats.manifest import MANIFEST_FILE, read_manifest
from ..formats.series import SERIES_FILE

ROOT = Path("zoo")  # the sets' folder, relative to the working directory
PRESETS = ("tiny", "default")  # zoo.PRESETS' names, without loading torch to list them
DEFAULT_PRESET = "default"


def set_folder(preset: str = DEFAULT_PRESET, zoo: Path | None = None) -> Path:
    """The folder of a preset's set: `zoo` when given, else `zoo/<preset>`."""
    return zoo or ROOT / preset


def ensure_built(preset: str, zoo: Path | None = None) -> tuple[Path, float | None]:
    """The set's folder, built first if missing, and the seconds that took (None: it was there)."""
    folder = set_folder(preset, zoo)
    if (folder / SERIES_FILE).is_file():
        return folder, None
    from .zoo import build  # torch and transformers: only to train

    print(f"Building the embedded '{preset}' checkpoint set in {folder} (first use only; resumable) …")
    start = time.perf_counter()
    build(preset, folder)
    return folder, time.perf_counter() - start


def first_checkpoint(folder: Path | None = None) -> tuple[Path, float] | None:
    """A built set's first checkpoint folder (its tokenizer and context) and the set's
    prompt-rule scale (`tokens_per_rule_token`); None when the set is not built. Default:
    the default preset's set."""
    folder = folder or set_folder()
    if not (folder / MANIFEST_FILE).is_file():
        return None
    manifest = read_manifest(folder)
    first = manifest.checkpoints[0]
    return (folder / first.path, manifest.tokens_per_rule_token) if first.path else None
