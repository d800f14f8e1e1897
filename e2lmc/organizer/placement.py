"""Placing a checkpoint series on the workers: download, verify, manifest.

A final-phase submission of the real competition reads about half a terabyte of bf16
weights, so the checkpoints are placed once on each GPU worker's `$HOST_DIRECTORY/data`
(seen read-only at /app/data in the containers) and never downloaded per submission.
`fetch` downloads exactly the series' `iter_XXXXXXX` subfolders with huggingface_hub
(`HF_TOKEN` from the environment, resumable, files in parallel; offline it reads the
Hugging Face cache alone), places each as `<model id>/iter_XXXXXXX` under the data folder
(hard links into the cache where the filesystem allows, copies elsewhere), verifies it
(config, safetensors headers against file sizes, tokenizer) and writes the manifest with
paths relative to that folder. `verify` re-checks a placed folder, on any worker.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, first_line
from ..formats.manifest import MANIFEST_FILE, read_manifest, write_manifest
from ..formats.series import (
    SERIES_FILE,
    Series,
    SeriesModel,
    checkpoint_name,
    placed_manifest,
    placed_path,
    write_series,
)
from ..progress import progress_bar

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt")
MAX_HEADER_BYTES = 100_000_000  # a safetensors header larger than this is a damaged file


@dataclass(frozen=True)
class CheckpointSize:
    bytes: int  # of weights on disk
    parameters: int


# --------------------------------------------------------------------- verifying


def _safetensors_parameters(file: Path) -> int:
    """Parameters of one safetensors file, after checking that its header describes
    exactly the bytes the file holds (a truncated download fails here)."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise UserError(f"{file} is not a safetensors file (shorter than its header)")
        (n,) = struct.unpack("<Q", prefix)
        if n > min(MAX_HEADER_BYTES, size - 8):
            raise UserError(f"{file} is damaged or truncated (its header claims {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise UserError(f"{file} is damaged: its safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise UserError(f"{file} is damaged: its safetensors header is not a mapping")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
        parameters = sum(_product(v["shape"]) for v in tensors.values())
    except (TypeError, KeyError, IndexError):
        raise UserError(f"{file} is damaged: a tensor of its header lacks shape or offsets") from None
    if 8 + n + end != size:
        raise UserError(f"{file} is truncated or damaged: its header describes {8 + n + end:,} bytes, "
                        f"the file holds {size:,} (download it again)")
    return parameters


def _product(shape: list[int]) -> int:
    result = 1
    for dim in shape:
        result *= int(dim)
    return result


def verify_checkpoint(path: Path) -> CheckpointSize:
    """One placed checkpoint: a model config, complete safetensors weights (every shard an
    index names) and a tokenizer; its size. One sentence naming the file when not."""
    if not path.is_dir():
        raise UserError(f"{path} is missing")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"{path / 'config.json'} is missing or not JSON") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UserError(f"{path / 'config.json'} is not a model config (it has no model_type)")
    files = sorted(path.glob("*.safetensors"))
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{index} is damaged (no weight_map)") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise UserError(f"{path} lacks the shard {missing[0]} its index names ({len(missing)} missing)")
    if not files:
        raise UserError(f"{path} has no safetensors weights")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise UserError(f"{path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
    return CheckpointSize(sum(f.stat().st_size for f in files), sum(_safetensors_parameters(f) for f in files))


@dataclass(frozen=True)
class Survey:
    """What a data folder holds: its complete checkpoints by id, the first fault found (None:
    none), and the ids of the series' checkpoints it lacks (empty when asked without a series)."""

    sizes: dict[str, CheckpointSize]
    problem: str | None
    missing: list[str]


def survey_placed(data: Path, series: Series | None = None, progress: bool = True) -> Survey:
    """Every checkpoint the data folder's manifest lists, checked, and the series' among them."""
    wanted = [e.id for e in placed_manifest(series).checkpoints] if series is not None else []
    if not data.is_dir():
        return Survey({}, f"{data} does not exist or is not a folder", wanted)
    if not (data / MANIFEST_FILE).is_file():
        return Survey({}, f"{data} has no {MANIFEST_FILE}: place the checkpoints with `e2lmc checkpoints fetch`",
                      wanted)
    try:
        manifest = read_manifest(data)
    except UserError as exc:
        return Survey({}, str(exc), wanted)
    sizes, problems = {}, []
    for entry in progress_bar(manifest.checkpoints, desc="verifying", unit="checkpoint", leave=False,
                              disable=not progress):
        if entry.path is None or Path(entry.path).is_absolute() or ".." in Path(entry.path).parts:
            problems.append(f"{data / MANIFEST_FILE}: {entry.id} must have a path relative to the folder")
            continue
        try:
            sizes[entry.id] = verify_checkpoint(data / entry.path)
        except UserError as exc:
            problems.append(str(exc))
    missing = [i for i in wanted if i not in sizes]
    return Survey(sizes, problems[0] if problems else None, missing)


def verify_placed(data: Path) -> dict[str, CheckpointSize]:
    """Every checkpoint the data folder's manifest lists, checked; their sizes by id."""
    survey = survey_placed(data)
    if survey.problem:
        raise UserError(survey.problem)
    return survey.sizes


def placed_sizes(series: Series, data: Path) -> dict[str, CheckpointSize]:
    """`verify_placed`, and every checkpoint of the series among them."""
    survey = survey_placed(data, series)
    if survey.problem:
        raise UserError(survey.problem)
    if survey.missing:
        raise UserError(f"{data} lacks {len(survey.missing)} checkpoints of the series (first: {survey.missing[0]}): "
                        "place them with `e2lmc checkpoints fetch --series FILE --to DATA`")
    return survey.sizes


def link_leaving(data: Path) -> tuple[Path, Path] | None:
    """A symbolic link under `data` that points outside it, and its target (None: none). A
    container sees only the folder: such a checkpoint is complete here and empty there."""
    root = data.resolve()
    for folder, dirs, files in os.walk(data):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                return path, path.resolve()
    return None


# ---------------------------------------------------------------------- fetching


def _snapshot(model: SeriesModel, subfolders: list[str], offline: bool, cache_dir: Path | None,
              workers: int) -> Path:
    """The model's repo snapshot holding the subfolders (and root tokenizer files)."""
    from huggingface_hub import snapshot_download

    assert model.repo is not None
    where = f"{model.repo}@{model.revision or 'main'}"
    try:
        return Path(snapshot_download(
            model.repo, revision=model.revision, cache_dir=cache_dir, max_workers=workers,
            allow_patterns=[f"{s}/*" for s in subfolders] + list(TOKENIZER_FILES), local_files_only=offline,
        ))
    except Exception as exc:  # noqa: BLE001 - no access, unknown repo, offline cache miss: one sentence
        how = "is not in the Hugging Face cache (offline)" if offline else "could not be downloaded"
        raise UserError(f"model {model.id}: {where} {how}: {first_line(exc, 200) or type(exc).__name__} "
                        "(for a private repo, set HF_TOKEN)") from None


def _link_or_copy(source: Path, dest: Path) -> None:
    source = source.resolve()  # a cache snapshot's files are links into its blobs
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _place(source: Path, fallback_tokenizer: Path | None, dest: Path) -> CheckpointSize:
    """Copy one checkpoint folder in, complete or not at all (a half-placed one is redone)."""
    if not (source / "config.json").is_file():
        raise UserError(f"{source} is not a model folder (no config.json): is the iteration in the series right?")
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file():
            _link_or_copy(file, part / file.name)
    if fallback_tokenizer is not None and not any((part / n).exists() for n in TOKENIZER_FILES):
        for name in TOKENIZER_FILES:  # the repo keeps one tokenizer at its root
            if (fallback_tokenizer / name).is_file():
                _link_or_copy(fallback_tokenizer / name, part / name)
    size = verify_checkpoint(part)
    part.rename(dest)
    return size


def fetch(series: Series, series_dir: Path, to: Path, offline: bool | None = None, cache_dir: Path | None = None,
          workers: int = 8, keep: Callable[[str], bool] | None = None) -> dict[str, CheckpointSize]:
    """Place every checkpoint of the series under `to` (or those whose id `keep` accepts);
    the ones already placed and sound are kept (a rerun resumes). Writes `to/manifest.yaml`
    and `to/series.yaml` last."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    to.mkdir(parents=True, exist_ok=True)
    wanted = {m.id: [i for i, _ in series.steps if keep is None or keep(placed_path(m.id, i))] for m in series.models}
    sizes: dict[str, CheckpointSize] = {}
    with progress_bar(total=sum(map(len, wanted.values())), desc="placing", unit="checkpoint") as bar:
        for model in series.models:
            subfolders = [checkpoint_name(i) for i in wanted[model.id]]
            if not subfolders:
                continue
            if model.repo is not None:
                root = _snapshot(model, subfolders, offline, cache_dir, workers)
            else:
                assert model.path is not None
                root = Path(model.path) if Path(model.path).is_absolute() else series_dir / model.path
            for iteration, sub in zip(wanted[model.id], subfolders):
                cid = placed_path(model.id, iteration)  # the checkpoint's id, and its folder under `to`
                dest = to / cid
                try:
                    sizes[cid] = verify_checkpoint(dest)
                except UserError:
                    shutil.rmtree(dest, ignore_errors=True)
                    sizes[cid] = _place(root / sub, root if model.repo is not None else None, dest)
                bar.update()
    manifest = placed_manifest(series)
    manifest.checkpoints = [e for e in manifest.checkpoints if e.id in sizes]
    write_manifest(manifest, to)
    write_series(series, to / SERIES_FILE)
    return sizes


def describe(sizes: dict[str, CheckpointSize]) -> str:
    total = sum(s.bytes for s in sizes.values())
    return f"{len(sizes)} checkpoints, {total / 1e9:.1f} GB of weights"
