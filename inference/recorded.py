"""The one recorded prefill of a text: a single model run that both the Forward pass and the Attention tabs read.

The run goes through named hook points (`inference.model.hooks`) whose observers reduce each activation where
it is produced, so no [n, d] tensor outlives its layer (except the final norm's output, which the surprisal
needs) and no [heads, n, n] map is held in fp32:

    hook_embed                     [E, d]        the first FORWARD_EMBED_TOKENS embedding vectors
    blocks.0.hook_resid_pre        [n], [P, d]   |stream| per token; the stream at the lens positions
    blocks.{l}.hook_attn_out       [n]           |what attention adds| per token
    blocks.{l}.hook_mlp_out        [n]           |what the MLP adds| per token
    blocks.{l}.hook_resid_post     [n], [P, d]   |stream| and |stream - resid_pre| per token; the lens rows
    blocks.{l}.attn.hook_pattern   packed        fp16 lower triangle as it is produced, 4 numbers per head
    ln_final.hook_normalized       [n, d]        kept: the LM head runs on it a chunk of positions at a time

and `trace_calls` records the shapes of the top-level parts and of every module of layer 0 (the diagram).

The model is asked for the logits of the lens positions only (`logits_to_keep`): all n positions would be
[n, vocab], 537 MB for 512 tokens of Gemma's 262k vocabulary. The surprisal of every token comes from the model's
own LM head on the captured final-norm output, a chunk of positions at a time; `head_check` says how far our
head's logits at the last position are from the model's.

For a text within the Attention tab's cap (MAX_ATTENTION_TOKENS) the prefill also fills a KV cache and one decode
step follows (the next greedy token's single query row per layer), and the logit lens covers the last
LENS_MAX_POSITIONS positions; longer texts (up to MAX_FORWARD_TOKENS) get a forward-only pass whose lens covers
the last position. `shared_prefill` caches the recording per (model, text, chat); the tabs' analyses
(`forward.ForwardPass`, `attention.AttentionMaps`) are views of it, built once each (`RecordedPrefill.view`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .errors import InputError
from .lens import LogitLens, logit_lens
from .limits import (ATTENTION_MEMORY_BUDGET, FORWARD_EMBED_TOKENS, FORWARD_LOGIT_CHUNK, LENS_MAX_POSITIONS,
                     MAX_ATTENTION_TOKENS, MAX_FORWARD_TOKENS)
from .model.anatomy import Anatomy, anatomy
from .model.hooks import ModuleCall, hooks, trace_calls
from .model.run import last_logits_only, logits_from_normed, new_cache
from .model.vocab import pieces
from .patterns import SUMMARIES, DecodeStep, head_summaries, pack_tensor, packed_bytes
from .tokens import TokenView, clean_text, tokenize

LOG2E = 1.0 / math.log(2.0)


# ---------------------------------------------------------------------------------------------------
# Plain data


@dataclass(eq=False)
class RecordedAttention:
    """Every layer's attention from the prefill, kept small, and the decode step after it. `packed` holds as many
    layers as the budget allows; the Attention tab's analysis drops and recaptures layers in it."""

    num_heads: int
    packed: OrderedDict  # layer -> [heads, n(n+1)/2] float16, least recently viewed first
    budget_bytes: int  # most bytes of packed layers held at once
    summaries: dict[str, np.ndarray]  # SUMMARIES name -> [L, heads] float32
    decode: DecodeStep
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # guards `packed`
    recaptures: int = 0  # model passes run to bring back a dropped layer

    def held_bytes(self) -> int:
        with self.lock:
            return sum(p.nbytes for p in self.packed.values())

    def fixed_bytes(self) -> int:
        """Bytes of what never changes: the decode rows and the summaries."""
        return self.decode.rows.nbytes + sum(a.nbytes for a in self.summaries.values())


@dataclass(eq=False)
class RecordedPrefill:
    """What one recorded prefill of a text gives both tabs."""

    tokens: TokenView
    num_layers: int
    hidden_norms: np.ndarray  # [L+1, n] float32: |resid_pre| of each layer, last row |resid_post| of layer L-1
    attn_update_norms: np.ndarray | None  # [L, n] float32: |hook_attn_out|; None for parallel blocks
    mlp_update_norms: np.ndarray | None  # [L, n] float32: |hook_mlp_out|
    layer_update_norms: np.ndarray  # [L, n] float32: |resid_post - resid_pre|
    embeddings: np.ndarray  # [min(n, FORWARD_EMBED_TOKENS), d] float32: the embedding lookup's output
    surprisal_bits: np.ndarray  # [n-1] float32: -log2 p(token i | tokens < i) for i = 1..n-1
    expected_ids: np.ndarray  # [n-1] int64: the model's top guess at each of those positions
    expected_probs: np.ndarray  # [n-1] float32: its probability
    entropy_bits: np.ndarray  # [n-1] float32: entropy of each of those distributions
    next_logprobs: np.ndarray = field(repr=False)  # [vocab] float32: log p of the token after the text
    lens: LogitLens = field(repr=False)  # at the last LENS_MAX_POSITIONS positions (forward-only: the last one)
    calls: list[ModuleCall] = field(default_factory=list, repr=False)  # top-level parts and layer 0's modules
    head_check: float = 0.0  # max |model logits - lm_head(final_norm(last layer output))| at the last position
    forward_seconds: float = 0.0  # the prefill model call and the forward analysis of it (norms, surprisal, lens)
    seconds: float = 0.0  # the whole recording: with the decode step and the packed attention when there is one
    attention: RecordedAttention | None = None  # None: a forward-only pass (text over MAX_ATTENTION_TOKENS)
    _views: dict = field(default_factory=dict, repr=False)
    _views_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n(self) -> int:
        return len(self.tokens.ids)

    def forward_bytes(self) -> int:
        """Bytes of the forward analysis' arrays (norms, embeddings, surprisal, next-token logprobs, lens)."""
        arrays = [self.hidden_norms, self.attn_update_norms, self.mlp_update_norms, self.layer_update_norms,
                  self.embeddings, self.surprisal_bits, self.expected_ids, self.expected_probs, self.entropy_bits,
                  self.next_logprobs]
        return sum(a.nbytes for a in arrays if a is not None) + self.lens.nbytes()

    def retained_bytes(self) -> int:
        """Bytes of array data this recording keeps alive (the session cache weighs entries by it)."""
        total = self.forward_bytes()
        if self.attention is not None:
            total += self.attention.held_bytes() + self.attention.fixed_bytes()
        return total

    def view(self, name: str, build: Callable[["RecordedPrefill"], Any]) -> Any:
        """One analysis object per name, built once from this recording (each tab's view of the same run)."""
        with self._views_lock:
            if name not in self._views:
                self._views[name] = build(self)
            return self._views[name]


# ---------------------------------------------------------------------------------------------------
# Observers: each reduces a live activation to what the views need


class _Stream:
    """Norms of the residual stream and of each block's update, the lens rows, the first embeddings and the final
    norm's output. Every tensor [1, n, d] arrives live; only reductions (and the lens rows) are kept. A prefill
    calls each layer once, in order, so the k-th call at a point is layer k."""

    def __init__(self, parts: Anatomy, lens_rows: int, embed_rows: int):
        self.num_layers = parts.num_layers
        self.lens_rows = lens_rows
        self.embed_rows = embed_rows
        # Sequential blocks (a norm reads the stream after the attention add): the two updates can be told apart.
        self.split = all(lp.pre_mlp_norm and lp.mlp_out for lp in parts.layer_parts)
        self.pre: list[torch.Tensor] = []  # the running layer's input [n, d], until the layer ends
        self.hidden: list[torch.Tensor] = []  # L+1 x [n]
        self.attn: list[torch.Tensor] = []  # L x [n]
        self.mlp: list[torch.Tensor] = []
        self.layer: list[torch.Tensor] = []
        self.rows: list[torch.Tensor] = []  # L x [P, d]: entering layer 0, then leaving layers 0..L-2
        self.embeddings: torch.Tensor | None = None  # [E, d]
        self.normed: torch.Tensor | None = None  # [n, d]

    def observers(self) -> dict[str, Callable[[torch.Tensor], None]]:
        out = {"hook_embed": self.embed, "ln_final.hook_normalized": self.final,
               "blocks.*.hook_resid_pre": self.resid_pre, "blocks.*.hook_resid_post": self.resid_post}
        if self.split:
            out.update({"blocks.*.hook_attn_out": self.attn_out, "blocks.*.hook_mlp_out": self.mlp_out})
        return out

    def embed(self, t: torch.Tensor) -> None:
        self.embeddings = t[0, : self.embed_rows].float().clone()

    def resid_pre(self, t: torch.Tensor) -> None:
        self.pre.append(t[0])  # the layer adds to it without changing it in place
        if not self.hidden:  # layer 0: the stream as the embeddings (and positions) made it
            self.hidden.append(t[0].float().norm(dim=-1))
            self.rows.append(t[0, -self.lens_rows:].clone())

    def attn_out(self, t: torch.Tensor) -> None:
        self.attn.append(t[0].float().norm(dim=-1))

    def mlp_out(self, t: torch.Tensor) -> None:
        self.mlp.append(t[0].float().norm(dim=-1))

    def resid_post(self, t: torch.Tensor) -> None:
        out = t[0].float()  # [n, d]
        self.layer.append((out - self.pre.pop().float()).norm(dim=-1))
        self.hidden.append(out.norm(dim=-1))
        if len(self.layer) < self.num_layers:  # the last layer's output reaches the lens through the model's logits
            self.rows.append(t[0, -self.lens_rows:].clone())

    def final(self, t: torch.Tensor) -> None:
        self.normed = t[0]


class _Patterns:
    """Each layer's attention weights [1, heads, n, n] as they are produced (layer k is the k-th call): the four
    per-head summaries, and the packed lower triangle while the layers held stay within `budget` bytes (always
    at least one layer)."""

    def __init__(self, budget: int):
        self.budget = budget
        self.packed: OrderedDict = OrderedDict()
        self.held = 0
        self.summaries: dict[str, list[torch.Tensor]] = {name: [] for name in SUMMARIES}

    def observers(self) -> dict[str, Callable[[torch.Tensor], None]]:
        return {"blocks.*.attn.hook_pattern": self.layer}

    def layer(self, weights: torch.Tensor) -> None:
        layer = len(self.summaries["first"])
        w = weights[0]  # [heads, n, n]
        for name, values in head_summaries(w.float()).items():
            self.summaries[name].append(values)
        size = packed_bytes(w.shape[0], w.shape[-1])
        if self.held + size <= self.budget or not self.packed:  # layers beyond are recaptured when viewed
            self.packed[layer] = pack_tensor(w)
            self.held += size


# ---------------------------------------------------------------------------------------------------
# The recording


def _token_stats(session, normed: torch.Tensor, ids: torch.Tensor, vocab: int) -> tuple[np.ndarray, ...]:
    """Surprisal (bits), top guess and entropy at positions 0..n-2 for the tokens 1..n-1, from the model's LM head
    applied to the final-norm output normed [n-1, d] a chunk of positions at a time (all logits at once would be
    [n, vocab]). Returns surprisal [n-1], expected ids [n-1], expected probs [n-1], entropy [n-1]."""
    chunk = max(1, FORWARD_LOGIT_CHUNK // vocab)
    targets = ids[1:]  # [n-1]: each position predicts the next token
    out = [[], [], [], []]
    for start in range(0, len(targets), chunk):
        logits = logits_from_normed(session, normed[start:start + chunk]).float()  # [c, V]
        logprobs = torch.log_softmax(logits, -1)  # [c, V]
        target = targets[start:start + chunk]
        out[0].append(-logprobs.gather(-1, target[:, None])[:, 0] * LOG2E)  # [c] bits
        best, best_id = logprobs.max(-1)  # [c]
        out[1].append(best_id)
        out[2].append(best.exp())
        out[3].append(-(logprobs.exp() * logprobs).sum(-1) * LOG2E)  # [c] bits
    arrays = [torch.cat(o).cpu().numpy() if o else np.zeros(0) for o in out]
    return (arrays[0].astype(np.float32), arrays[1].astype(np.int64), arrays[2].astype(np.float32),
            arrays[3].astype(np.float32))


def _call_paths(session, parts: Anatomy) -> list[str]:
    """Modules whose calls the diagram shows: the top-level parts and every module of layer 0."""
    top = [p for p in (parts.embed, parts.position_embed, parts.rotary, parts.final_norm, parts.lm_head) if p]
    block = parts.layer(0).block
    inside = [f"{block}.{name}" if name else block for name, _ in session.model.get_submodule(block).named_modules()]
    return top + inside


def _stack(rows: list[torch.Tensor]) -> np.ndarray:
    return torch.stack(rows).cpu().numpy().astype(np.float32)


def record_prefill(session, view: TokenView, attention: bool = True,
                   budget: int = ATTENTION_MEMORY_BUDGET) -> RecordedPrefill:
    """One prefill of `view.ids`, recorded (not cached; `shared_prefill` is). attention=True also packs every
    layer's attention within `budget` bytes for everything this recording keeps, runs one decode step on the KV
    cache, and covers the last LENS_MAX_POSITIONS positions with the lens."""
    parts = anatomy(session)
    if parts.final_norm is None:
        raise InputError("recorded.no_final_norm", "This model has no final norm this app can find.")
    model = session.model
    n, num_layers = len(view.ids), parts.num_layers
    ids = torch.tensor([view.ids], device=session.device)  # [1, n]
    positions = list(range(max(0, n - LENS_MAX_POSITIONS), n)) if attention else [n - 1]
    stream = _Stream(parts, len(positions), min(n, FORWARD_EMBED_TOKENS))
    patterns = _Patterns(budget) if attention else None
    observe = {**stream.observers(), **(patterns.observers() if patterns else {})}
    started = time.perf_counter()
    with session.lock, torch.no_grad():
        cache = new_cache(session) if attention else None
        with hooks(session, observe=observe), trace_calls(session, _call_paths(session, parts)) as calls:
            out = model(input_ids=ids, past_key_values=cache, use_cache=attention,
                        **last_logits_only(model, len(positions)))
        kept = out.logits[0, -len(positions):]  # [P, V]: the lens positions' logits, never all [n, V]
        normed = stream.normed  # [n, d]
        surprisal, expected_ids, expected_probs, entropy = _token_stats(session, normed[:-1], ids[0], kept.shape[-1])
        check = float((logits_from_normed(session, normed[-1]).float() - kept[-1].float()).abs().max())
        lens = logit_lens(session, torch.stack(stream.rows), kept, positions)
        stream.normed = normed = None  # the only [n, d] activation held: done with it
        split = stream.split and len(stream.attn) == num_layers and len(stream.mlp) == num_layers
        recording = RecordedPrefill(
            tokens=view,
            num_layers=num_layers,
            hidden_norms=_stack(stream.hidden),
            attn_update_norms=_stack(stream.attn) if split else None,
            mlp_update_norms=_stack(stream.mlp) if split else None,
            layer_update_norms=_stack(stream.layer),
            embeddings=stream.embeddings.cpu().numpy().astype(np.float32),
            surprisal_bits=surprisal,
            expected_ids=expected_ids,
            expected_probs=expected_probs,
            entropy_bits=entropy,
            next_logprobs=torch.log_softmax(kept[-1].float(), -1).cpu().numpy().astype(np.float32),
            lens=lens,
            calls=list(calls),
            head_check=check,
        )
        recording.forward_seconds = time.perf_counter() - started
        if patterns is not None:
            recording.attention = _decode_step(session, recording, patterns, cache, kept[-1], budget)
    recording.seconds = time.perf_counter() - started
    return recording


def _decode_step(session, recording: RecordedPrefill, patterns: _Patterns, cache, last_logits: torch.Tensor,
                 budget: int) -> RecordedAttention:
    """One decode step on the KV cache (the next greedy token's query row over the n cached keys and its own),
    then the packed layers trimmed to what the budget leaves after everything else this recording keeps."""
    n = recording.n
    next_id = int(last_logits.argmax())  # greedy: the token the decode step feeds back
    rows: list[torch.Tensor] = []  # layer k's row is the k-th call's

    def keep_row(weights: torch.Tensor) -> None:  # [1, heads, 1, n+1]
        rows.append(weights[0, :, -1])

    with hooks(session, observe={"blocks.*.attn.hook_pattern": keep_row}):
        session.model(input_ids=torch.tensor([[next_id]], device=session.device), past_key_values=cache,
                      use_cache=True, **last_logits_only(session.model, 1))
    decode_rows = torch.stack(rows).float().cpu().numpy()  # [L, heads, n+1]
    probs = torch.softmax(last_logits.float(), -1)
    record = RecordedAttention(
        num_heads=decode_rows.shape[1],
        packed=patterns.packed,
        budget_bytes=0,
        summaries={name: torch.stack(v).cpu().numpy().astype(np.float32) for name, v in patterns.summaries.items()},
        decode=DecodeStep(token_id=next_id, piece=pieces(session, [next_id])[0], prob=float(probs[next_id]),
                          cached_keys=n, rows=decode_rows.astype(np.float16)),
    )
    # The layers get what the budget leaves after everything else; those that do not fit are recaptured when
    # viewed. At least one layer is always held.
    room = budget - recording.forward_bytes() - record.fixed_bytes()
    while len(record.packed) > 1 and sum(p.nbytes for p in record.packed.values()) > room:
        record.packed.popitem(last=True)  # the highest layers go: the first ones stay, as they came
    record.budget_bytes = max(room, sum(p.nbytes for p in record.packed.values()))
    return record


def shared_prefill(session, text: str, chat: bool = False) -> RecordedPrefill:
    """The recorded prefill of `text` (in the chat template when chat=True), cached per (model, text, chat):
    with attention within MAX_ATTENTION_TOKENS, forward-only up to MAX_FORWARD_TOKENS. Whichever tab asks first
    runs it; the other finds it here."""
    text = clean_text(text)
    chat = bool(chat)

    def compute() -> RecordedPrefill:
        view = tokenize(session, text, chat)
        n = len(view.ids)
        if n > MAX_FORWARD_TOKENS:
            raise InputError("recorded.too_many_tokens",
                             "The text is {tokens:,} tokens; the Forward pass tab takes at most {limit:,} tokens. "
                             "Shorten it and try again.", tokens=n, limit=MAX_FORWARD_TOKENS)
        return record_prefill(session, view, attention=n <= MAX_ATTENTION_TOKENS)

    return session.analysis("prefill", (text, chat), compute)
