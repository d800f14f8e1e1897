"""From recorded requests to token work, built once per tokenizer and context length.

Model-free and reused for every checkpoint (docs/engine.md):
- tokenization exactly as lm-eval's Hugging Face backend does it (`Encoder`);
- every log-likelihood request becomes *sequences*: the tokens HFLM would feed the
  model and the continuation tokens its last positions score (a rolling request gives
  one per window); identical sequences are computed once;
- sequences sorted by tokens form *families* sharing a leading *prefix* (the few-shot
  context of `first_n` samples, a task description), which the engine computes once per
  checkpoint and whose keys and values its rows reuse;
- the rest of a family is packed into *rows*: a trie of consecutive sequences in
  depth-first order (the answer choices of one sample share their question), each token
  attending to the prefix and to its own ancestors only (`Batch.ends`);
- rows sorted by length form batches of at most `token_budget` tokens, prefix included;
- generation requests are grouped by their arguments and batched by length alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError
from ..formats.requests import GENERATE, LOGLIKELIHOOD, ROLLING, RequestKey, unknown_kind

ROW_MIN = 128  # rows shorter than this take further sequences (short samples share a row)
MIN_PREFIX_SAVING = 64  # tokens a family must save to be worth a forward pass of its own


class Encoder:
    """Tokenization as lm-eval's HFLM does it: `tok_encode` (special tokens unless the text
    already starts with BOS), `_encode_pair` (trailing spaces of the context move to the
    continuation), the empty-context rule of `TemplateLM.loglikelihood`, the rolling
    windows of `loglikelihood_rolling` and the batch encoding of `generate_until` —
    batched, and done once per tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        from lm_eval.models.utils import configure_pad_token

        self.tokenizer = configure_pad_token(tokenizer)
        self.prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self._bos_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """HFLM.tok_encode: the tokenizer's special tokens, unless a text starts with BOS."""
        from lm_eval.models.utils import has_bos_prefix

        return self._encode(texts, [False if has_bos_prefix(t, self._bos_text) else None for t in texts])

    def encode_contexts(self, texts: list[str]) -> list[list[int]]:
        """HFLM.tok_batch_encode's rule for generation contexts (decided per text here,
        per batch there: they differ only for a batch mixing texts with and without BOS)."""
        from lm_eval.models.utils import has_bos_prefix

        bos = getattr(self.tokenizer, "bos_token", None)
        return self._encode(texts, [False if has_bos_prefix(t, bos) else None for t in texts])

    def _encode(self, texts: list[str], special: list[bool | None]) -> list[list[int]]:
        """Batched tokenization; `special` per text: add special tokens or not (None: the tokenizer's default)."""
        out: list[list[int]] = [[] for _ in texts]
        for flag in set(special):
            where = [i for i, f in enumerate(special) if f == flag]
            kwargs = {} if flag is None else {"add_special_tokens": flag}
            for i, ids in zip(where, self.tokenizer([texts[i] for i in where], **kwargs)["input_ids"], strict=True):
                out[i] = list(ids)
        return out

    def pairs(self, requests: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context tokens, continuation tokens) of each (context, continuation)."""
        moved = []
        for context, continuation in requests:
            n_spaces = len(context) - len(context.rstrip())
            moved.append((context[:-n_spaces], context[-n_spaces:] + continuation) if n_spaces
                         else (context, continuation))
        full = [i for i, (c, _) in enumerate(moved) if c]
        wholes = self.encode([moved[i][0] + moved[i][1] for i in full])
        contexts = self.encode([moved[i][0] for i in full])
        out: list[tuple[list[int], list[int]]] = [([], [])] * len(requests)
        for i, whole, context in zip(full, wholes, contexts, strict=True):
            out[i] = (context, whole[len(context):])
        empty = [i for i, (c, _) in enumerate(moved) if not c]
        for i, continuation in zip(empty, self._encode([moved[i][1] for i in empty], [False] * len(empty)),
                                   strict=True):
            out[i] = (([self.prefix_token_id], continuation) if self.prefix_token_id != continuation[0]
                      else (continuation[:1], continuation[1:]))
        return out

    def rolling_windows(self, tokens: list[int], max_length: int) -> list[tuple[list[int], list[int]]]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        return [tuple(map(list, make_disjoint_window(w))) for w in get_rolling_token_windows(
            token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=max_length, context_len=1)]


@dataclass(frozen=True)
class Tokenized:
    """A task's requests tokenized once per tokenizer."""

    pairs: dict[int, tuple[list[int], list[int]]]  # loglikelihood request index -> (context, continuation)
    rolling: dict[int, list[int]]  # loglikelihood_rolling request index -> its tokens
    contexts: dict[int, list[int]]  # generate_until request index -> its context tokens
    gen_kwargs: dict[int, dict]


def tokenize(requests: list[RequestKey], encoder: Encoder) -> Tokenized:
    by_kind: dict[str, list[tuple[int, list]]] = {LOGLIKELIHOOD: [], ROLLING: [], GENERATE: []}
    for i, (kind, arguments) in enumerate(requests):
        if kind not in by_kind:
            raise unknown_kind(kind)
        by_kind[kind].append((i, json.loads(arguments)))

    def encoded(kind: str, encode: Any, text: Any) -> dict:
        """Request index -> `encode` of the texts `text` picks from each request of `kind`, in one batch."""
        items = by_kind[kind]
        return dict(zip([i for i, _ in items], encode([text(a) for _, a in items]), strict=True))

    return Tokenized(
        pairs=encoded(LOGLIKELIHOOD, encoder.pairs, lambda a: (a[0], a[1])),
        rolling=encoded(ROLLING, encoder.encode, lambda a: a[0]),
        contexts=encoded(GENERATE, encoder.encode_contexts, lambda a: a[0]),
        gen_kwargs={i: a[1] for i, a in by_kind[GENERATE]},
    )


@dataclass(frozen=True)
class Overflow:
    """Requests whose prompt does not fit the model's context: lm-eval's HF backend (and
    so the engine) cuts them from the left, so what is scored is not the whole prompt."""

    requests: int = 0
    max_excess: int = 0  # tokens cut from the worst one


def overflow(tokenized: Tokenized, max_length: int) -> Overflow:
    """What a model of context `max_length` truncates: a log-likelihood request keeps its
    last max_length + 1 tokens (HFLM), a generation keeps max_length - max_gen_toks of its
    context; rolling log-likelihoods are split into windows, never cut."""
    from lm_eval.models.utils import normalize_gen_kwargs

    excess = [len(context) + len(continuation) - (max_length + 1)
              for context, continuation in tokenized.pairs.values()]
    for i, context in tokenized.contexts.items():
        max_gen_toks = normalize_gen_kwargs(dict(tokenized.gen_kwargs[i]), 256)["max_gen_toks"]
        excess.append(len(context) + max_gen_toks - max_length)
    cut = [e for e in excess if e > 0]
    return Overflow(len(cut), max(cut, default=0))


@dataclass
class Batch:
    """Rows computed in one forward pass after their family's prefix (if any)."""

    family: int  # index into Work.prefixes; -1: no shared prefix
    tokens: np.ndarray  # [rows, length] (0 where padding)
    positions: np.ndarray  # [rows, length] position ids: prefix length + depth in the row's trie
    ends: np.ndarray  # [rows, length] one past the last row position of each token's subtree
    rows: np.ndarray  # [n] row of each scored position
    cols: np.ndarray  # [n] its column
    targets: np.ndarray  # [n] the token it scores
    sequences: np.ndarray  # [n] the sequence it belongs to


@dataclass
class GenerationBatch:
    requests: list[int]  # generate_until request indices, longest context first
    contexts: list[list[int]]  # left-truncated context tokens
    until: list[str]
    max_gen_toks: int
    kwargs: dict  # the remaining generation arguments


@dataclass
class Work:
    """Everything to compute on a checkpoint, and how the responses are assembled."""

    sequences_of: dict[int, list[int]]  # (rolling) log-likelihood request index -> its sequences
    n_sequences: int
    prefixes: list[np.ndarray] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    generation: list[GenerationBatch] = field(default_factory=list)
    tokens_needed: int = 0  # distinct prefixes of all sequences: what any engine must compute
    tokens_computed: int = 0  # prefix and row tokens this plan computes (padding excluded)
    tokens_padded: int = 0  # row slots including padding
    tokens_one_by_one: int = 0  # what a backend computing each request on its own feeds the model


def build_work(tokenized: Tokenized, encoder: Encoder, max_length: int, token_budget: int) -> Work:
    """The work for a model of context `max_length`, in batches of at most `token_budget` tokens."""
    sequences: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    sequences_of: dict[int, list[int]] = {}
    one_by_one = 0

    def sequence(context: list[int], continuation: list[int]) -> int:
        if len(continuation) > max_length:
            raise UserError(f"a continuation of {len(continuation)} tokens is longer than the model's context "
                            f"({max_length} tokens)")
        key = (tuple((context + continuation)[-(max_length + 1):][:-1]), tuple(continuation))
        nonlocal one_by_one
        one_by_one += len(key[0])
        return sequences.setdefault(key, len(sequences))

    for i, (context, continuation) in tokenized.pairs.items():
        sequences_of[i] = [sequence(context, continuation)]
    for i, tokens in tokenized.rolling.items():
        sequences_of[i] = [sequence(c, t) for c, t in encoder.rolling_windows(tokens, max_length)]
    work = Work(sequences_of, len(sequences), tokens_one_by_one=one_by_one)
    _pack(list(sequences), work, token_budget)
    work.generation = _generation_batches(tokenized, encoder, max_length, token_budget)
    return work


def _lcp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


def _pack(keys: list[tuple[tuple[int, ...], tuple[int, ...]]], work: Work, token_budget: int) -> None:
    order = sorted(range(len(keys)), key=lambda s: keys[s][0])
    lcps = [0] + [_lcp(keys[a][0], keys[b][0]) for a, b in zip(order, order[1:])]
    work.tokens_needed = sum(len(keys[s][0]) - lcp for s, lcp in zip(order, lcps))
    pool: list[int] = []  # positions in `order` of sequences without a family
    for start, stop, prefix in _families(order, lcps, keys):
        if prefix == 0:
            pool.extend(range(start, stop))
            continue
        work.prefixes.append(np.asarray(keys[order[start]][0][:prefix], dtype=np.int64))
        work.tokens_computed += prefix
        _batch_rows(_rows(range(start, stop), order, lcps, keys, prefix), len(work.prefixes) - 1, prefix,
                    token_budget, work)
    _batch_rows(_rows(pool, order, lcps, keys, 0), -1, 0, token_budget, work)


def _families(order: list[int], lcps: list[int], keys: list) -> list[tuple[int, int, int]]:
    """Runs [start, stop) of sorted sequences and the prefix length they share (0: none).

    Counted in distinct contexts (a sample's answer choices share theirs, and a row's trie
    shares it anyway): a new context joins the current family unless shrinking the
    family's prefix would cost its contexts more than the newcomer saves. A prefix never
    reaches a scored token."""
    def cap(pos: int) -> int:
        tokens, targets = keys[order[pos]]
        return len(tokens) - len(targets)

    families: list[tuple[int, int, int]] = []
    start, prefix, contexts = 0, cap(0) if order else 0, 1
    for pos in range(1, len(order) + 1):
        if pos < len(order):
            if lcps[pos] >= cap(pos) == cap(pos - 1):  # the same context again
                continue
            shared = min(lcps[pos], cap(pos), prefix)
            if shared > 0 and (prefix - shared) * contexts < shared:
                prefix, contexts = shared, contexts + 1
                continue
        worth = contexts > 1 and prefix * (contexts - 1) >= MIN_PREFIX_SAVING
        families.append((start, pos, prefix if worth else 0))
        if pos < len(order):
            start, prefix, contexts = pos, cap(pos), 1
    return families


@dataclass
class _Row:
    tokens: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    scored: list[tuple[int, int, int]] = field(default_factory=list)  # (column, target, sequence)
    path: list[int] = field(default_factory=list)  # columns of the last sequence added


def _rows(positions: Any, order: list[int], lcps: list[int], keys: list, prefix: int) -> list[_Row]:
    """Consecutive sorted sequences (after the prefix) packed as tries in depth-first order:
    sorted insertion keeps every subtree contiguous."""
    rows: list[_Row] = []
    row, cap, previous = _Row(), 0, -2
    for pos in positions:
        tokens, targets = keys[order[pos]]
        rest = tokens[prefix:]
        shared = min(lcps[pos] - prefix, len(row.path)) if previous == pos - 1 and row.tokens else 0
        if row.tokens and len(row.tokens) + len(rest) - shared > cap:
            rows.append(row)
            row, shared = _Row(), 0
        if not row.tokens:
            cap = max(ROW_MIN, 2 * len(rest))
        new = range(len(row.tokens), len(row.tokens) + len(rest) - shared)
        row.tokens.extend(rest[shared:])
        row.depths.extend(range(prefix + shared, prefix + len(rest)))
        row.path = row.path[:shared] + list(new)
        first_scored = len(rest) - len(targets)
        row.scored.extend((row.path[first_scored + j], target, order[pos]) for j, target in enumerate(targets))
        previous = pos
    if row.tokens:
        rows.append(row)
    return rows


def _subtree_ends(depths: list[int]) -> list[int]:
    """In depth-first order, a token's subtree ends at the next token no deeper than it."""
    ends, open_ = [len(depths)] * len(depths), []
    for i, depth in enumerate(depths):
        while open_ and depths[open_[-1]] >= depth:
            ends[open_.pop()] = i
        open_.append(i)
    return ends


def _batch_rows(rows: list[_Row], family: int, prefix: int, token_budget: int, work: Work) -> None:
    """Rows sorted by length, grouped while rows x (prefix + longest row) <= token_budget."""
    rows = sorted(rows, key=lambda r: -len(r.tokens))
    start = 0
    while start < len(rows):
        length = len(rows[start].tokens)
        count = max(1, min(len(rows) - start, token_budget // (prefix + length)))
        tokens = np.zeros((count, length), dtype=np.int64)
        positions = np.full((count, length), prefix, dtype=np.int64)
        ends = np.tile(np.arange(1, length + 1, dtype=np.int64), (count, 1))  # padding sees itself only
        scored = []
        for r, row in enumerate(rows[start:start + count]):
            n = len(row.tokens)
            tokens[r, :n], positions[r, :n], ends[r, :n] = row.tokens, row.depths, _subtree_ends(row.depths)
            scored.extend((r, *s) for s in row.scored)
            work.tokens_computed += n
        work.tokens_padded += count * length
        where, cols, targets, sequences = (np.asarray(c, dtype=np.int64) for c in zip(*scored, strict=True))
        work.batches.append(Batch(family, tokens, positions, ends, where, cols, targets, sequences))
        start += count


def generation_room(max_gen_toks: int, max_length: int) -> int:
    """New tokens a generation may take: what it asks for, or half the context where it asks
    for the whole context or more (lm-eval's HF backend stops there on an assertion, and its
    default of 256 exceeds a short context); `overflow` counts such a request as truncated."""
    return max_gen_toks if max_gen_toks < max_length else max(1, max_length // 2)


def _generation_batches(tokenized: Tokenized, encoder: Encoder, max_length: int,
                        token_budget: int) -> list[GenerationBatch]:
    """generate_until requests grouped by their arguments, longest first, each batch at most
    `token_budget` tokens of context and generation (HFLM's truncation and stop rules)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    groups: dict[str, list[int]] = {}
    for i, kwargs in tokenized.gen_kwargs.items():
        groups.setdefault(json.dumps(kwargs, sort_keys=True, default=str), []).append(i)
    eos = encoder.tokenizer.decode(encoder.tokenizer.eos_token_id, skip_special_tokens=False)
    batches = []
    for members in groups.values():
        kwargs = normalize_gen_kwargs(dict(tokenized.gen_kwargs[members[0]]), 256)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen_toks = generation_room(kwargs.pop("max_gen_toks"), max_length)
        max_context = max_length - max_gen_toks
        members = sorted(members, key=lambda i: -len(tokenized.contexts[i]))
        start = 0
        while start < len(members):
            length = min(len(tokenized.contexts[members[start]]), max_context) + max_gen_toks
            count = max(1, min(len(members) - start, token_budget // length))
            chosen = members[start:start + count]
            batches.append(GenerationBatch(chosen, [tokenized.contexts[i][-max_context:] for i in chosen],
                                           until, max_gen_toks, kwargs))
            start += count
    return batches
