"""The trusted evaluation engine: a task's recorded requests computed on a list of checkpoints.

One `Runner` (runner.py) when there is one device; else one process per device, the
checkpoints dealt out among them, results yielded as they come. The ingestion program and
`e2lmc diagnose` consume `Engine.run`; docs/engine.md has the design and its measurements.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError, first_line
from ..formats.requests import RequestKey
from ..limits import EngineSettings, cpu_threads
from .packing import Encoder, Tokenized
from .runner import CheckpointError, Runner


class Engine:
    """A task's requests on a list of checkpoints, on every device of `settings`."""

    def __init__(self, requests: list[RequestKey], settings: EngineSettings = EngineSettings(),
                 tokenized: dict[str, tuple[Encoder, Tokenized]] | None = None) -> None:
        """`tokenized`: the requests already tokenized (by the prompt checks), by tokenizer key."""
        self.requests, self.settings = requests, settings
        self.devices = settings.device_list()
        if self.devices == ["cpu"]:
            torch.set_num_threads(settings.threads or cpu_threads())
        first = self.devices[0]
        self.runner = Runner(requests, first, settings.budget(first), settings.precision(first), tokenized) \
            if len(self.devices) == 1 else None

    def run(self, checkpoints: list[tuple[str, Path]]) -> Iterator[tuple[int, list[Any]]]:
        """(position in `checkpoints`, responses) as each checkpoint finishes."""
        if self.runner is not None:
            yield from self.runner.run(checkpoints)
            return
        yield from self._run_sharded(checkpoints)

    def _run_sharded(self, checkpoints: list[tuple[str, Path]]) -> Iterator[tuple[int, list[Any]]]:
        """One process per device, checkpoints dealt out in turn; results as they come."""
        context = multiprocessing.get_context("spawn")
        results = context.Queue(maxsize=2 * len(self.devices))  # bounded: memory stays bounded
        workers = []
        for d, device in enumerate(self.devices):
            shard = [(p, label, str(path)) for p, (label, path) in enumerate(checkpoints)][d::len(self.devices)]
            worker = context.Process(target=_serve, daemon=True, args=(
                self.requests, device, self.settings.budget(device), self.settings.precision(device),
                self.settings.threads or cpu_threads(), len(self.devices), shard, results))
            worker.start()
            workers.append(worker)
        try:
            running = len(workers)
            while running:
                try:
                    kind, position, payload = results.get(timeout=5)
                except queue.Empty:
                    if not any(w.is_alive() for w in workers):
                        raise UserError("the evaluation processes stopped without a result") from None
                    continue
                if kind == "done":
                    yield position, payload
                elif kind == "end":
                    running -= 1
                elif kind == "failed":
                    raise CheckpointError(position, payload)
                else:
                    raise UserError(payload)
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
                worker.join()


def _serve(requests: list[RequestKey], device: str, token_budget: int, dtype: str, threads: int, n_workers: int,
           shard: list[tuple[int, str, str]], results: Any) -> None:
    """A device's process: its share of the checkpoints, each result onto `results`."""
    if device == "cpu":
        torch.set_num_threads(max(1, threads // n_workers))
    else:
        torch.cuda.set_device(device)
    try:
        runner = Runner(requests, device, token_budget, dtype)
        for position, responses in runner.run([(label, Path(path)) for _, label, path in shard]):
            results.put(("done", shard[position][0], responses))
    except CheckpointError as exc:
        results.put(("failed", shard[exc.position][0], exc.problem))
    except Exception as exc:  # noqa: BLE001 - reported to the main process as one sentence
        results.put(("error", None, f"evaluation on {device} failed: {type(exc).__name__}: {first_line(exc, 300)}"))
    results.put(("end", None, None))
