"""Where the embedded checkpoint sets live, and building one on first use.

Every command that evaluates on the embedded set (`e2lmc run`, `demo`, `diagnose`,
`bundle --checkpoints zoo`) finds it in `zoo/<preset>` under the working directory unless
`--zoo` names another folder, and builds it there first if it is missing (`zoo.build`,
resumable). `validate` and `estimate` borrow the default set's first checkpoint, when it
is built, to count prompt tokens.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from ..errors import UserError
from ..formats.manifest import MANIFEST_FILE, read_manifest
from ..formats.series import SERIES_FILE
from .kernels import OPTIMIZER, has_avx2

ROOT = Path("zoo")  # the sets' folder, relative to the working directory
# The weights' digest (embedded/kernels.py) of the sets the organizers' bundles carry, by
# (preset, seed): built with pinned kernels on an Intel Xeon (docs/zoo.md says where else they hold).
ORGANIZERS_DIGESTS = {
    ("tiny", 0): "70a89229120888f5f862dd4273e9addd400c5f3cd560cd377990343ce5377e63",
    ("default", 0): "7e1bf5ba5bdc02c63127e56d9d6b6831594e962e9a2c380f04811ee02ac3eb10",
}
PRESETS = ("tiny", "default")  # zoo.PRESETS' names, without loading torch to list them
DEFAULT_PRESET = "default"


def reference_of_results(results_file: Path) -> Path | None:
    """The reference data of the built set an `ingestion_results.json` was computed on, found
    among the sets in zoo/ by its weights digest; None where no built set matches."""
    try:
        digest = json.loads(results_file.read_text(encoding="utf-8")).get("weights_digest")
    except (OSError, ValueError, AttributeError):
        return None
    for manifest in sorted(ROOT.glob(f"*/{MANIFEST_FILE}")) if digest else []:
        try:
            if read_manifest(manifest.parent).weights_digest == digest:
                return manifest.parent / "reference"
        except UserError:
            continue
    return None


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


def provenance(folder: Path) -> tuple[bool, str] | None:
    """Whether a built set is the organizers' (the one their embedded-set bundle carries),
    and one sentence saying so; None for a preset or seed they publish no set of."""
    try:
        record = json.loads((folder / "zoo.json").read_text())
        key = (record["preset"]["name"], record["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    theirs = ORGANIZERS_DIGESTS.get(key)
    if theirs is None:
        return None
    ours = read_manifest(folder).weights_digest
    if ours == theirs:
        return True, f"the embedded set's weights are the organizers' (digest {ours[:12]}): the bundle's, bit for bit"
    if not ours or record.get("optimizer") != OPTIMIZER:
        return False, (f"the embedded set in {folder} was built by an older e2lmc (other kernels or another "
                       "optimizer): it is not the organizers' set; delete the folder to build theirs")
    where = "" if has_avx2() else f" (this {platform.machine()} processor has no AVX2: its kernels round otherwise)"
    return False, (f"the embedded set's weights differ from the organizers' (digest {ours[:12]}, theirs {theirs[:12]})"
            f"{where}: scores here can differ from the bundle's by the spread across builds (docs/zoo.md)")
