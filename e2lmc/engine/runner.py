"""One device of the evaluation engine: checkpoints loaded one after another, the token work computed on each.

It sees request texts and model weights, never submission code, and gives the responses
lm-eval's own Hugging Face backend would (log-likelihoods within 1e-4 in float32), only
faster (docs/engine.md; measured by benchmarks/engine_vs_lm_eval.py):
- the token work (`packing`) is built once per tokenizer and context length: shared
  prefixes computed once and reused as keys and values, answer choices packed as tries,
  identical requests computed once, batches by length under a token budget;
- only the scored positions go through the output layer;
- a checkpoint with the architecture of the previous one is loaded into the same module,
  its weights read from disk in a background thread while the previous one runs;
- float32 on CPU; bfloat16 and PyTorch's fused attention on GPU (`engine.py` runs one
  `Runner` per GPU).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError, first_line
from ..formats.requests import LOGLIKELIHOOD, ROLLING, RequestKey, unknown_kind
from ..progress import progress_bar
from .packing import Encoder, Tokenized, Work, build_work, tokenize

LOGITS_CHUNK = 2048  # scored positions per pass through the output layer (bounds its memory)
TRUNK_MIN = 128  # a batch's common trunk shorter than this runs with the branches, under the tree mask
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "vocab*", "merges.txt", "*.model", "*.tiktoken")


class CheckpointError(Exception):
    """A checkpoint failed to load (or run) twice."""

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(problem)
        self.position, self.problem = position, problem


@dataclass
class Loaded:
    """What the background thread reads from a checkpoint folder."""

    config: dict
    weights: dict[str, torch.Tensor] | None  # None: not in safetensors files
    tokenizer_key: str


def read_checkpoint(path: Path) -> Loaded:
    config = json.loads((path / "config.json").read_text())
    files = sorted(path.glob("*.safetensors"))
    weights: dict[str, torch.Tensor] = {}
    if files:
        from safetensors.torch import load_file

        for file in files:
            weights.update(load_file(str(file)))
    return Loaded(config, weights or None, tokenizer_key(path))


def cache_argument(module: torch.nn.Module) -> str:
    """The keyword a model's forward takes its key/value cache by: `cache` since
    transformers 5.24, `past_key_values` before (removed in 5.40)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    """The key/value cache a forward returned, under either name."""
    return output.cache if "cache" in output else output.past_key_values


def tokenizer_key(path: Path) -> str:
    """A hash of a checkpoint's tokenizer files: checkpoints with the same one share their tokenization."""
    digest = hashlib.sha256()
    for file in sorted({f for pattern in TOKENIZER_FILES for f in path.glob(pattern) if f.is_file()}):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


class Runner:
    """One device: loads checkpoints one after another and computes the work on each."""

    def __init__(self, requests: list[RequestKey], device: str, token_budget: int, dtype: str,
                 tokenized: dict[str, tuple[Encoder, Tokenized]] | None = None) -> None:
        self.requests, self.device, self.token_budget = requests, torch.device(device), token_budget
        self.dtype = getattr(torch, dtype)
        self.model: Any = None
        self.config: dict | None = None
        self.cache_argument = "cache"  # the base model's keyword for its key/value cache
        self.tokenized = dict(tokenized or {})  # tokenizer key -> the requests tokenized with it
        self.works: dict[tuple[str, int], Work] = {}
        self.seconds: Counter[str] = Counter()  # where the time went: load, plan, passes, generate (benchmarks)

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds[stage] += time.perf_counter() - start

    def run(self, checkpoints: list[tuple[str, Path]]) -> Iterator[tuple[int, list[Any]]]:
        """(position, responses) of each checkpoint in turn; the next one is read from disk
        meanwhile. A checkpoint that fails is retried once, from scratch."""
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(read_checkpoint, checkpoints[0][1]) if checkpoints else None
            for position, (label, path) in enumerate(checkpoints):
                current = reading
                reading = pool.submit(read_checkpoint, checkpoints[position + 1][1]) \
                    if position + 1 < len(checkpoints) else None
                for attempt in (1, 2):
                    try:
                        assert current is not None
                        with self._timed("load"):
                            loaded = current.result() if attempt == 1 else read_checkpoint(path)
                            self._install(path, loaded)
                        responses = self._responses(loaded.tokenizer_key, path)
                        break
                    except UserError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a broken checkpoint is the organizers' to fix
                        problem = f"{type(exc).__name__}: {first_line(exc, 300)}"
                        self.model = None
                        if attempt == 2:
                            raise CheckpointError(position, problem) from None
                        print(f"checkpoint {label} failed to load ({problem}); retrying once", file=sys.stderr)
                yield position, responses

    def _install(self, path: Path, loaded: Loaded) -> None:
        """Copy the weights into the current module when the architecture is the same,
        else build the model from the folder."""
        if self.model is not None and loaded.weights is not None and loaded.config == self.config:
            missing, unexpected = self.model.load_state_dict(loaded.weights, strict=False)
            parameters = dict(self.model.named_parameters(remove_duplicate=False))
            loaded_storage = {parameters[k].data_ptr() for k in loaded.weights if k in parameters}
            if not unexpected and all(k in parameters and parameters[k].data_ptr() in loaded_storage for k in missing):
                return
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # one "Loading weights" bar per model: ours is per checkpoint
        self.model = None
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype, attn_implementation="sdpa")
        for attribute in ("final_logit_softcapping", "logit_scale"):
            if getattr(model.config, attribute, None):
                raise UserError(f"checkpoint {path}: its {attribute} is not supported by the engine")
        self.model, self.config = model.to(self.device).eval(), loaded.config
        self.cache_argument = cache_argument(model.base_model)

    def work(self, tokenizer_key: str, path: Path) -> tuple[Encoder, Work]:
        """The work for this checkpoint's tokenizer and context length (planned once)."""
        from lm_eval.models.utils import DEFAULT_MAX_LENGTH, resolve_max_length
        from transformers import AutoTokenizer

        if tokenizer_key not in self.tokenized:
            encoder = Encoder(AutoTokenizer.from_pretrained(str(path), use_fast=True))
            self.tokenized[tokenizer_key] = encoder, tokenize(self.requests, encoder)
        encoder, tokenized = self.tokenized[tokenizer_key]
        max_length = resolve_max_length(self.model.config, encoder.tokenizer, default=DEFAULT_MAX_LENGTH)
        if (tokenizer_key, max_length) not in self.works:
            self.works[tokenizer_key, max_length] = build_work(tokenized, encoder, max_length, self.token_budget)
        return encoder, self.works[tokenizer_key, max_length]

    @torch.inference_mode()
    def _responses(self, tokenizer_key: str, path: Path) -> list[Any]:
        with self._timed("plan"):
            encoder, work = self.work(tokenizer_key, path)
        with self._timed("passes"):
            sums, greedy = self._loglikelihoods(work)
        responses: list[Any] = [None] * len(self.requests)
        for i, sequences in work.sequences_of.items():
            responses[i] = scored_response(self.requests[i][0], sequences, sums, greedy)
        with self._timed("generate"):
            for i, text in self._generate(work, encoder).items():
                responses[i] = text
        return responses

    def _loglikelihoods(self, work: Work) -> tuple[np.ndarray, np.ndarray]:
        """Each sequence's summed log-probability of its targets, and whether every target
        is the argmax (lm-eval's is_greedy)."""
        family, prefix_cache = -1, None
        head = self.model.get_output_embeddings()
        logprobs, hits, owners = [], [], []  # kept on the device: one transfer at the end, no sync per batch
        for batch in progress_bar(work.batches, desc="batches", unit="batch", leave=False, delay=10):
            if batch.family >= 0 and batch.family != family:
                prefix = torch.from_numpy(work.prefixes[batch.family]).to(self.device)[None]
                prefix_cache = _cache_of(self.model.base_model(input_ids=prefix, use_cache=True))
                family = batch.family
            hidden = self._forward(batch, prefix_cache if batch.family >= 0 else None)
            scored = hidden[torch.from_numpy(batch.rows).to(self.device), torch.from_numpy(batch.cols).to(self.device)]
            targets = torch.from_numpy(batch.targets).to(self.device)
            for start in range(0, len(targets), LOGITS_CHUNK):
                logits = head(scored[start:start + LOGITS_CHUNK]).float()
                target = targets[start:start + LOGITS_CHUNK]
                logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0])
                hits.append(logits.argmax(dim=-1) == target)
            owners.append(batch.sequences)
        sums, greedy = np.zeros(work.n_sequences), np.ones(work.n_sequences, dtype=bool)
        if owners:
            sequences = np.concatenate(owners)
            np.add.at(sums, sequences, torch.cat(logprobs).double().cpu().numpy())
            np.logical_and.at(greedy, sequences, torch.cat(hits).cpu().numpy())
        return sums, greedy

    def _forward(self, batch: Any, prefix_cache: Any) -> torch.Tensor:
        """Hidden states of a batch of trie rows: each token sees the prefix and its ancestors.

        The rows' common trunk (the leading columns where every row is still one chain: a
        long context before its answers branch) runs first with plain causal attention,
        which PyTorch's fused kernels compute without a mask; the branches then run with
        the tree mask over the trunk's keys and values."""
        from transformers import DynamicCache

        tokens = torch.from_numpy(batch.tokens).to(self.device)
        positions = torch.from_numpy(batch.positions).to(self.device)
        rows, length = tokens.shape
        cache = None
        if prefix_cache is not None:
            cache = DynamicCache(config=self.model.config)
            for index, layer in enumerate(prefix_cache.layers):
                cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), index)
        prefix = cache.get_seq_length() if cache is not None else 0
        trunk = trunk_length(batch.positions, prefix)
        if trunk < TRUNK_MIN:
            trunk = 0
        hidden = []
        if trunk:
            cache = cache if cache is not None else DynamicCache(config=self.model.config)
            hidden.append(self.model.base_model(input_ids=tokens[:, :trunk], position_ids=positions[:, :trunk],
                                                **{self.cache_argument: cache}, use_cache=True).last_hidden_state)
        if trunk < length:
            ends = torch.from_numpy(batch.ends).to(self.device)
            column = torch.arange(length, device=self.device)
            query = column[trunk:, None]
            # key k is visible to query j iff k <= j < end(k): k is j or one of its ancestors
            tree = (column[None, None, :] <= query[None]) & (query[None] < ends[:, None, :])
            if prefix:
                tree = torch.cat([torch.ones(rows, length - trunk, prefix, dtype=torch.bool, device=self.device),
                                  tree], dim=2)
            hidden.append(self.model.base_model(
                input_ids=tokens[:, trunk:], position_ids=positions[:, trunk:], attention_mask=tree[:, None],
                **{self.cache_argument: cache}, use_cache=cache is not None).last_hidden_state)
        return torch.cat(hidden, dim=1) if len(hidden) > 1 else hidden[0]

    def _generate(self, work: Work, encoder: Encoder) -> dict[int, str]:
        """Greedy (or seeded) generation as HFLM.generate_until does it, batch by batch."""
        from lm_eval.models.utils import postprocess_generated_text
        from lm_eval.models.utils_hf import stop_sequences_criteria

        tokenizer, texts = encoder.tokenizer, {}
        for batch in work.generation:
            length = max(len(c) for c in batch.contexts)
            ids = torch.full((len(batch.contexts), length), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, context in enumerate(batch.contexts):
                ids[r, length - len(context):] = torch.tensor(context)
                mask[r, length - len(context):] = 1
            kwargs = dict(batch.kwargs)
            if kwargs.get("temperature", 0.0) == 0.0 and kwargs.get("do_sample") is None:
                kwargs["do_sample"] = False
            if kwargs.get("do_sample") is False and kwargs.get("temperature", 0.0) == 0.0:
                kwargs.pop("temperature", None)
            torch.manual_seed(1234)  # lm-eval's seed: sampling, if asked for, is reproducible
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                max_length=length + batch.max_gen_toks,
                stopping_criteria=stop_sequences_criteria(tokenizer, batch.until, length, len(batch.contexts)),
                pad_token_id=tokenizer.pad_token_id, use_cache=True, **kwargs,
            )
            for i, row in zip(batch.requests, out.tolist(), strict=True):
                texts[i] = postprocess_generated_text(tokenizer.decode(row[length:], skip_special_tokens=True),
                                                      batch.until, None)
        return texts


def scored_response(kind: str, sequences: list[int], sums: np.ndarray, greedy: np.ndarray) -> Any:
    """lm-eval's response to a log-likelihood request from its sequences' sums: (log-likelihood,
    is greedy) for `loglikelihood`, the sum over its windows for `loglikelihood_rolling`."""
    if kind == LOGLIKELIHOOD:
        return float(sums[sequences[0]]), bool(greedy[sequences[0]])
    if kind == ROLLING:
        return float(sum(sums[s] for s in sequences))
    raise unknown_kind(kind)


def trunk_length(positions: np.ndarray, prefix: int) -> int:
    """Leading columns where every row is one chain (position = prefix + column): each
    of those tokens sees exactly the tokens before it, so causal attention computes them."""
    chain = (positions == prefix + np.arange(positions.shape[1])[None, :]).all(axis=0)
    return int(chain.argmin()) if not chain.all() else positions.shape[1]
