"""Where every head of every layer looks: the model's own eager attention weights, from the recorded prefill.

The prefill of the prompt (`recorded.shared_prefill`, the same model run as the Forward pass tab's) packs, for
every layer l (names as TransformerLens uses them):

    blocks.{l}.attn.hook_pattern   [heads, n, n]  softmax(q·k / sqrt(head_dim) + causal mask), rows = queries

as fp16 lower triangles while it runs, with four numbers per head (`patterns.SUMMARIES`); one decode step on the
KV cache (`DynamicCache`) gives the next greedy token's single query row over the n cached keys plus itself: the
KV cache at work. The logit lens (`lens.LogitLens`) is the recording's, computed once for both tabs.

Memory: at most ATTENTION_MEMORY_BUDGET bytes per prompt: for prompts too long for that, the least recently
viewed layers are dropped and recaptured on demand (a model pass that stops at that layer).

`AttentionMaps` is the Attention tab's view of the recording, built once per recording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .errors import InputError
from .lens import LogitLens
from .limits import ATTENTION_MEMORY_BUDGET, MAX_ATTENTION_TOKENS
from .model.anatomy import layer_windows
from .model.hooks import hooks
from .patterns import SUMMARIES, DecodeStep, head_summaries, pack, pack_tensor, unpack
from .recorded import RecordedAttention, RecordedPrefill, record_prefill, shared_prefill
from .tokens import TokenView, clean_text, tokenize

__all__ = ["SUMMARIES", "AttentionMaps", "DecodeStep", "LogitLens", "capture_attention", "capture_layer",
           "head_summaries", "pack", "unpack"]


@dataclass(eq=False)
class AttentionMaps:
    """Every layer's and head's attention pattern for one prompt, plus what the same pass shows besides.

    `.layer(l)` -> float32 [heads, n, n]; rows are queries, columns keys; row i sums to 1 over keys 0..i.
    """

    tokens: TokenView
    num_layers: int
    num_heads: int
    num_kv_heads: int
    summaries: dict[str, np.ndarray]  # SUMMARIES name -> [layers, heads] float32
    lens: LogitLens
    decode: DecodeStep
    hidden_norms: np.ndarray = field(repr=False)  # [layers+1, n] float32: |residual stream|, row 0 the embeddings
    capture_seconds: float = 0.0  # the whole recording: the shared prefill, the decode step and both analyses
    windows: list[int | None] = field(default_factory=list)  # per layer: sliding-window length, None = global
    _record: RecordedAttention = field(default=None, repr=False)  # the packed layers (shared with the recording)
    _other_bytes: int = 0  # bytes of everything else the recording keeps (forward arrays, lens, decode rows)
    _recapture: Callable[[int], np.ndarray] = field(default=None, repr=False)  # layer -> packed, by a model pass

    @property
    def n(self) -> int:
        return len(self.tokens.ids)

    @property
    def budget_bytes(self) -> int:
        """Most bytes of packed layers held at once."""
        return self._record.budget_bytes

    @property
    def recaptures(self) -> int:
        """Model passes run to bring back a dropped layer."""
        return self._record.recaptures

    @property
    def queries_per_kv_head(self) -> int:
        return self.num_heads // self.num_kv_heads

    def kv_head(self, head: int) -> int:
        """The KV head a query head reads (transformers' repeat_kv: query head h uses KV head h // group)."""
        return self.check_head(head) // self.queries_per_kv_head

    def heads_sharing(self, head: int) -> list[int]:
        """The query heads that share `head`'s keys and values (grouped-query attention)."""
        group = self.kv_head(head)
        size = self.queries_per_kv_head
        return list(range(group * size, (group + 1) * size))

    def check_layer(self, layer) -> int:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.num_layers:
            raise InputError("attention.no_such_layer",
                             "Layer {layer!r} does not exist: this model has {layers} layers, numbered 0 to {last}.",
                             layer=layer, layers=self.num_layers, last=self.num_layers - 1)
        return int(layer)

    def check_head(self, head) -> int:
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < self.num_heads:
            raise InputError("attention.no_such_head",
                             "Head {head!r} does not exist: each layer has {heads} heads, numbered 0 to {last}.",
                             head=head, heads=self.num_heads, last=self.num_heads - 1)
        return int(head)

    def packed(self, layer: int) -> np.ndarray:
        """[heads, n(n+1)/2] float16 of one layer (its lower triangle), recaptured by a model pass if it was dropped."""
        layer = self.check_layer(layer)
        record = self._record
        with record.lock:
            packed = record.packed.get(layer)
            if packed is not None:
                record.packed.move_to_end(layer)
        if packed is None:  # dropped to stay within the memory budget: one model pass brings it back
            packed = self._recapture(layer)
            self._keep(layer, packed)
        return packed

    def layer(self, layer: int) -> np.ndarray:
        """float32 [heads, n, n]: the attention weights of every head of one layer."""
        return unpack(self.packed(layer), self.n)

    def pattern(self, layer: int, head: int | None = None) -> np.ndarray:
        """float32 [n, n]: one head's map, or the mean over the layer's heads (head=None)."""
        packed = self.packed(layer)  # only the rows asked for are unpacked: cheap on long prompts
        if head is None:
            selected = packed.astype(np.float32).mean(0, keepdims=True)  # [1, n(n+1)/2]
        else:
            selected = packed[self.check_head(head)][None]
        return unpack(selected, self.n)[0]

    def query_row(self, layer: int, query: int, head: int | None = None) -> np.ndarray:
        """float32 [query+1]: what one query token attends to (one head, or the mean over heads). Row i
        of the packed lower triangle is contiguous, so this reads i+1 numbers and unpacks nothing."""
        if isinstance(query, bool) or not isinstance(query, (int, np.integer)) or not 0 <= query < self.n:
            raise InputError("attention.no_such_token",
                             "Token {token!r} does not exist: the prompt has {tokens} tokens, numbered 0 to {last}.",
                             token=query, tokens=self.n, last=self.n - 1)
        start = query * (query + 1) // 2
        rows = self.packed(layer)[:, start:start + query + 1].astype(np.float32)  # [heads, query+1]
        return rows.mean(0) if head is None else rows[self.check_head(head)]

    def resident_layers(self) -> list[int]:
        """The layers held in memory now (the others are recaptured when viewed)."""
        with self._record.lock:
            return sorted(self._record.packed)

    def layer_bytes(self) -> int:
        """Bytes of one packed layer (every layer has the same size)."""
        return self.num_heads * self.n * (self.n + 1) // 2 * 2

    def held_bytes(self) -> int:
        """Bytes of the packed layers held now."""
        return self._record.held_bytes()

    def _keep(self, layer: int, packed: np.ndarray) -> None:
        """Hold a layer, dropping the least recently viewed others while over the budget."""
        record = self._record
        with record.lock:
            record.recaptures += 1
            record.packed[layer] = packed
            record.packed.move_to_end(layer)
            while len(record.packed) > 1 and sum(p.nbytes for p in record.packed.values()) > record.budget_bytes:
                record.packed.popitem(last=False)

    def retained_bytes(self) -> int:
        """Bytes of array data this analysis keeps alive (attention layers, decode rows, lens, forward pass)."""
        return self.held_bytes() + self._other_bytes


# ---------------------------------------------------------------------------------------------------
# Capture


class _StopForward(Exception):
    """Raised by a hook once the layer we came for has run: the rest of the pass is not needed."""


def capture_layer(session, ids: torch.Tensor, layer: int) -> np.ndarray:
    """One layer's attention by a new pass that stops right after that layer: packed [heads, n(n+1)/2]."""
    caught = {}

    def grab(weights: torch.Tensor) -> None:  # [1, heads, n, n]
        caught["packed"] = pack_tensor(weights[0])
        raise _StopForward

    try:
        with session.lock, torch.no_grad(), hooks(session, observe={f"blocks.{layer}.attn.hook_pattern": grab}):
            session.model(input_ids=ids, use_cache=False)
    except _StopForward:
        pass
    return caught["packed"]


def _maps(session, recording: RecordedPrefill) -> AttentionMaps:
    """The Attention tab's view of a recording made with attention."""
    record = recording.attention
    ids = torch.tensor([recording.tokens.ids], device=session.device)  # [1, n]
    return AttentionMaps(
        tokens=recording.tokens,
        num_layers=recording.num_layers,
        num_heads=record.num_heads,
        num_kv_heads=session.facts.num_kv_heads,
        summaries=record.summaries,
        lens=recording.lens,
        decode=record.decode,
        hidden_norms=recording.hidden_norms,
        capture_seconds=recording.seconds,
        windows=layer_windows(session),
        _record=record,
        _other_bytes=recording.forward_bytes() + record.fixed_bytes(),
        _recapture=lambda layer: capture_layer(session, ids, layer),
    )


def capture_attention(session, text: str, chat: bool = False, budget: int | None = None) -> AttentionMaps:
    """Every layer's and head's attention for `text` (in the chat template when chat=True), with the decode
    step and the logit lens of the same pass. Cached per (model, text, chat): views, and
    `forward.forward_pass` for the same text, re-use the one recorded prefill.

    budget: bytes this analysis may keep (default ATTENTION_MEMORY_BUDGET); a budget of its own runs a
    recording of its own, not cached (to see layers dropped and recaptured)."""
    text = clean_text(text)
    chat = bool(chat)
    view = tokenize(session, text, chat)
    n = len(view.ids)
    if n > MAX_ATTENTION_TOKENS:
        raise InputError("attention.too_many_tokens",
                         "The prompt is {tokens:,} tokens; the Attention tab shows at most {limit:,} tokens (every "
                         "layer and head of a longer prompt would not fit in memory). Shorten it and try again.",
                         tokens=n, limit=MAX_ATTENTION_TOKENS)
    if budget is not None and budget != ATTENTION_MEMORY_BUDGET:
        return _maps(session, record_prefill(session, view, attention=True, budget=budget))
    return shared_prefill(session, text, chat).view("attention", lambda recording: _maps(session, recording))
