"""Where every head of every layer looks: the model's own eager attention weights, captured in one pass.

One prefill pass over the prompt (`output_attentions=True, output_hidden_states=True` on the eager model)
gives, for every layer l (names as TransformerLens would use them):

    blocks.{l}.attn.pattern   [heads, n, n]  softmax(q·k / sqrt(head_dim) + causal mask), rows = queries
    blocks.{l}.resid_post     [n, hidden]    the residual stream after layer l (not kept: we keep a logit
                                             lens of it, top-5 per position, at the last positions)

and one decode step on the KV cache (`DynamicCache`) gives the next greedy token's single query row over
the n cached keys plus itself: the KV cache at work.

The same prefill is the Forward pass tab's pass: its hooks (`forward.record_forward`) record it too, so one
model run per text gives both analyses (`AttentionMaps.forward`, which `forward.forward_pass` hands out for
texts within this tab's cap). The model is asked for the lens positions' logits only (`logits_to_keep`):
all n positions would be [n, vocab], 537 MB for 512 tokens of Gemma's 262k vocabulary.

Memory: all layers in fp32 would be 30 x 9 x n x n x 4 bytes (283 MB at 512 tokens for SmolLM2). We keep
fp16 and only the lower triangle (the upper one is the causal mask, always 0), and at most
ATTENTION_MEMORY_BUDGET bytes per prompt: for prompts too long for that, the least recently viewed layers are
dropped and recaptured on demand (a model pass that stops at that layer).

`AttentionMaps` is the cached analysis of one text (`session.analysis("attention", (text, chat))`).
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .errors import InputError
from .forward import ForwardPass, finish_forward, head_logits, last_logits_only, record_forward
from .limits import ATTENTION_MEMORY_BUDGET, LENS_MAX_POSITIONS, LENS_TOP_K, MAX_ATTENTION_TOKENS
from .tokens import TokenView, clean_text, readable_piece, token_to_bytes, tokenize

# Per-head summaries shown in the layer x head overview: name -> (label, unit). Each is a mean over the
# query positions 1..n-1 (query 0 can only look at itself, which says nothing about the head).
SUMMARIES = {
    "first": ("attention to the first token (the 'sink')", "weight"),
    "previous": ("attention to the previous token", "weight"),
    "entropy": ("entropy: how spread out each row is", "bits"),
    "distance": ("mean distance looked back", "tokens"),
}


# ---------------------------------------------------------------------------------------------------
# Plain data


@dataclass(frozen=True)
class LogitLens:
    """The final norm and LM head applied to each layer's hidden state: what the model would predict if
    it stopped after that layer. Row 0 is the token embeddings, row l+1 the output of layer l; the last
    row is the model's real next-token distribution (its own logits)."""

    layer_names: list[str]  # L+1 names: "embeddings", "layer 0", ..., "layer L-1"
    positions: list[int]  # prompt positions covered: the last LENS_MAX_POSITIONS
    top_ids: np.ndarray  # [L+1, P, k] int64, best first
    top_probs: np.ndarray  # [L+1, P, k] float32
    top_pieces: list[list[list[str]]]  # [L+1][P][k] readable pieces of top_ids
    answer_ids: np.ndarray  # [P] the model's own top next token at each covered position
    answer_pieces: list[str]  # [P]
    answer_probs: np.ndarray  # [L+1, P] float32: probability each layer's lens gives to that answer

    def column(self, position: int) -> int:
        """Index into `positions` of a prompt position; InputError when the lens does not cover it."""
        if position not in self.positions:
            raise InputError(
                f"The logit lens covers the last {len(self.positions)} positions "
                f"({self.positions[0]}–{self.positions[-1]}); position {position} is not one of them."
            )
        return self.positions.index(position)


@dataclass(frozen=True)
class DecodeStep:
    """One decode step after the prefill: the next greedy token queries the n cached keys and itself."""

    token_id: int
    piece: str
    prob: float  # its probability under the model's distribution at the last prompt position
    cached_keys: int  # keys per layer in the KV cache after prefill (= prompt length n)
    rows: np.ndarray = field(repr=False)  # [L, heads, n+1] float16: the new query's attention row per layer

    def row(self, layer: int, head: int | None = None) -> np.ndarray:
        """float32 [n+1]: one head's decode row, or the mean over heads (head=None)."""
        rows = self.rows[layer].astype(np.float32)  # [heads, n+1]
        return rows.mean(0) if head is None else rows[head]


@functools.lru_cache(maxsize=8)
def _tril(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the lower triangle (diagonal included) of an n x n map."""
    return np.tril_indices(n)


def pack(weights: np.ndarray) -> np.ndarray:
    """[heads, n, n] -> [heads, n(n+1)/2] float16: the causal mask makes the upper triangle always 0."""
    rows, cols = _tril(weights.shape[-1])
    return weights[:, rows, cols].astype(np.float16)


def unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """[heads, n(n+1)/2] float16 -> [heads, n, n] float32 with zeros above the diagonal."""
    rows, cols = _tril(n)
    out = np.zeros((packed.shape[0], n, n), dtype=np.float32)
    out[:, rows, cols] = packed
    return out


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
    forward: ForwardPass = field(repr=False)  # the Forward pass tab's analysis, recorded in the same prefill
    capture_seconds: float  # the whole capture: the shared prefill, the decode step and both analyses
    budget_bytes: int  # most bytes of packed layers held at once
    _packed: OrderedDict = field(repr=False)  # layer -> [heads, n(n+1)/2] float16, least recently used first
    _recapture: Callable[[int], np.ndarray] = field(repr=False)  # layer -> packed, by a new model pass
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    recaptures: int = 0  # model passes run to bring back a dropped layer

    @property
    def n(self) -> int:
        return len(self.tokens.ids)

    @property
    def hidden_norms(self) -> np.ndarray:
        """[layers+1, n] float32: L2 norm of the residual stream (row 0: embeddings), from the same pass."""
        return self.forward.hidden_norms

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
            raise InputError(
                f"Layer {layer!r} does not exist: this model has {self.num_layers} layers, numbered 0 to {self.num_layers - 1}."
            )
        return int(layer)

    def check_head(self, head) -> int:
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < self.num_heads:
            raise InputError(
                f"Head {head!r} does not exist: each layer has {self.num_heads} heads, numbered 0 to {self.num_heads - 1}."
            )
        return int(head)

    def _packed_layer(self, layer: int) -> np.ndarray:
        """[heads, n(n+1)/2] float16 of one layer, recaptured by a model pass if it was dropped."""
        layer = self.check_layer(layer)
        with self._lock:
            packed = self._packed.get(layer)
            if packed is not None:
                self._packed.move_to_end(layer)
        if packed is None:  # dropped to stay within the memory budget: one model pass brings it back
            packed = self._recapture(layer)
            self._keep(layer, packed)
        return packed

    def layer(self, layer: int) -> np.ndarray:
        """float32 [heads, n, n]: the attention weights of every head of one layer."""
        return unpack(self._packed_layer(layer), self.n)

    def pattern(self, layer: int, head: int | None = None) -> np.ndarray:
        """float32 [n, n]: one head's map, or the mean over the layer's heads (head=None)."""
        packed = self._packed_layer(layer)  # only the rows asked for are unpacked: cheap on long prompts
        if head is None:
            selected = packed.astype(np.float32).mean(0, keepdims=True)  # [1, n(n+1)/2]
        else:
            selected = packed[self.check_head(head)][None]
        return unpack(selected, self.n)[0]

    def query_row(self, layer: int, query: int, head: int | None = None) -> np.ndarray:
        """float32 [query+1]: what one query token attends to (one head, or the mean over heads). Row i
        of the packed lower triangle is contiguous, so this reads i+1 numbers and unpacks nothing."""
        if isinstance(query, bool) or not isinstance(query, (int, np.integer)) or not 0 <= query < self.n:
            raise InputError(f"Token {query!r} does not exist: the prompt has {self.n} tokens, numbered 0 to {self.n - 1}.")
        start = query * (query + 1) // 2
        rows = self._packed_layer(layer)[:, start:start + query + 1].astype(np.float32)  # [heads, query+1]
        return rows.mean(0) if head is None else rows[self.check_head(head)]

    def resident_layers(self) -> list[int]:
        with self._lock:
            return sorted(self._packed)

    def _keep(self, layer: int, packed: np.ndarray) -> None:
        """Hold a layer, dropping the least recently viewed others while over the budget."""
        with self._lock:
            self.recaptures += 1
            self._packed[layer] = packed
            self._packed.move_to_end(layer)
            while len(self._packed) > 1 and sum(p.nbytes for p in self._packed.values()) > self.budget_bytes:
                self._packed.popitem(last=False)

    def retained_bytes(self) -> int:
        """Bytes of array data this analysis keeps alive (attention layers, decode rows, lens, forward pass)."""
        with self._lock:
            total = sum(p.nbytes for p in self._packed.values())
        total += self.decode.rows.nbytes + self.forward.retained_bytes()
        total += sum(a.nbytes for a in self.summaries.values())
        total += self.lens.top_ids.nbytes + self.lens.top_probs.nbytes + self.lens.answer_probs.nbytes
        return total


# ---------------------------------------------------------------------------------------------------
# Capture


def _decoder(model):
    """The decoder stack (holds .layers) of a *ForCausalLM model."""
    inner = getattr(model, "model", None)
    return inner if inner is not None and hasattr(inner, "layers") else model.get_decoder()


def head_summaries(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """weights [heads, n, n] -> {SUMMARIES name: [heads]}, each a mean over queries 1..n-1."""
    n = weights.shape[-1]
    queries = slice(1, None) if n > 1 else slice(None)
    rows = weights[:, queries]  # [heads, q, n]
    positions = torch.arange(n, dtype=weights.dtype, device=weights.device)
    back = (positions[:, None] - positions[None, :]).clamp_min(0)[queries]  # [q, n]: how far back key j is
    entropy = -(rows * torch.log2(rows.clamp_min(1e-30))).sum(-1)  # [heads, q]
    previous = weights.diagonal(offset=-1, dim1=1, dim2=2) if n > 1 else torch.zeros_like(weights[:, :, 0])
    return {
        "first": rows[..., 0].mean(-1),
        "previous": previous.mean(-1),
        "entropy": entropy.mean(-1),
        "distance": (rows * back).sum(-1).mean(-1),
    }


def _pieces(tokenizer, ids) -> list[str]:
    """Readable pieces (spaces as '·') of token ids, as the Tokenizer tab shows them."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i, token in zip(ids, tokenizer.convert_ids_to_tokens(list(ids))):
        raw = token_to_bytes(tokenizer, token, i in special)
        out.append(readable_piece(raw, i in special)[0])
    return out


def _logit_lens(session, hidden_states, logits: torch.Tensor, positions: list[int]) -> LogitLens:
    """Top-k of every layer's lens at `positions` (the model's own logits there: [P, V]), and each layer's
    probability of the final answer."""
    k = LENS_TOP_K
    index = torch.tensor(positions, device=logits.device)
    final = logits.float()  # [P, V]: the model's own logits
    answer = final.argmax(-1)  # [P]
    # One layer's [P, V] at a time: the final norm and LM head on each layer's output (forward.head_logits).
    # transformers hands back hidden_states[-1] after the final norm; the last row is the model's logits.
    per_layer = itertools.chain((head_logits(session, h[0, index]) for h in hidden_states[:-1]), [final])
    top_ids, top_probs, answer_probs = [], [], []
    for layer_logits in per_layer:
        logprobs = torch.log_softmax(layer_logits.float(), -1)  # [P, V]
        values, ids = logprobs.topk(k, -1)  # [P, k]
        top_ids.append(ids)
        top_probs.append(values.exp())
        answer_probs.append(logprobs.gather(-1, answer[:, None])[:, 0].exp())  # [P]
    top_ids = torch.stack(top_ids).cpu().numpy()  # [L+1, P, k]
    tokenizer = session.tokenizer
    pieces = [[_pieces(tokenizer, row) for row in layer] for layer in top_ids]
    num_layers = len(hidden_states) - 1
    return LogitLens(
        layer_names=["embeddings"] + [f"layer {i}" for i in range(num_layers)],
        positions=list(positions),
        top_ids=top_ids,
        top_probs=torch.stack(top_probs).cpu().numpy().astype(np.float32),
        top_pieces=pieces,
        answer_ids=answer.cpu().numpy(),
        answer_pieces=_pieces(tokenizer, answer.tolist()),
        answer_probs=torch.stack(answer_probs).cpu().numpy().astype(np.float32),
    )


class _StopForward(Exception):
    """Raised by a hook once the layer we came for has run: the rest of the pass is not needed."""


def capture_layer(session, ids: torch.Tensor, layer: int) -> np.ndarray:
    """One layer's attention by a new pass that stops right after that layer: packed [heads, n(n+1)/2]."""
    caught = {}

    def grab(module, args, output):  # eager attention returns (attn_output, attn_weights)
        caught["weights"] = output[1][0].float().cpu().numpy()  # [heads, n, n]
        raise _StopForward

    handle = _decoder(session.model).layers[layer].self_attn.register_forward_hook(grab)
    try:
        with session.lock, torch.no_grad():
            session.model(input_ids=ids, use_cache=False, output_attentions=True)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return pack(caught["weights"])


def _capture(session, view: TokenView, budget: int = ATTENTION_MEMORY_BUDGET) -> AttentionMaps:
    """The one prefill of the text (attentions, hidden states, and the Forward pass tab's recording), one
    decode step on the KV cache, then the forward analysis, the summaries, the lens and the packed layers."""
    from transformers import DynamicCache

    n = len(view.ids)
    if n > MAX_ATTENTION_TOKENS:
        raise InputError(
            f"The prompt is {n:,} tokens; the Attention tab shows at most {MAX_ATTENTION_TOKENS:,} tokens "
            "(every layer and head of a longer prompt would not fit in memory). Shorten it and try again."
        )
    model = session.model
    ids = torch.tensor([view.ids], device=session.device)  # [1, n]
    positions = list(range(max(0, n - LENS_MAX_POSITIONS), n))  # the last P positions: the lens covers them
    started = time.perf_counter()
    with session.lock, torch.no_grad():
        cache = DynamicCache(config=model.config)
        with record_forward(session, view) as rec:  # the Forward pass tab's hooks read this same prefill
            prefill = model(input_ids=ids, past_key_values=cache, use_cache=True, output_attentions=True,
                            output_hidden_states=True, **last_logits_only(model, len(positions)))
        logits = prefill.logits[0, -len(positions):]  # [P, V]: the lens positions' logits, never all [n, V]
        forward = finish_forward(session, view, rec, logits[-1], 0.0)
        forward.seconds = time.perf_counter() - started  # this prefill and the forward analysis of it
        forward.shared_pass = True
        next_id = int(logits[-1].argmax())  # greedy: the token the decode step feeds back
        # Decode: one new query over the n cached keys (and its own key, appended to the cache).
        step = model(input_ids=torch.tensor([[next_id]], device=session.device), past_key_values=cache,
                     use_cache=True, output_attentions=True)
        lens = _logit_lens(session, prefill.hidden_states, logits, positions)

    summaries = {name: [] for name in SUMMARIES}
    for weights in prefill.attentions:  # each [1, heads, n, n]
        for name, values in head_summaries(weights[0].float()).items():
            summaries[name].append(values.cpu().numpy())
    decode_rows = torch.stack([a[0, :, 0] for a in step.attentions]).float().cpu().numpy()  # [L, heads, n+1]
    probs = torch.softmax(logits[-1].float(), -1)
    maps = AttentionMaps(
        tokens=view,
        num_layers=len(prefill.attentions),
        num_heads=prefill.attentions[0].shape[1],
        num_kv_heads=session.facts.num_kv_heads,
        summaries={name: np.stack(v).astype(np.float32) for name, v in summaries.items()},  # [L, heads]
        lens=lens,
        decode=DecodeStep(
            token_id=next_id, piece=_pieces(session.tokenizer, [next_id])[0], prob=float(probs[next_id]),
            cached_keys=n, rows=decode_rows.astype(np.float16),
        ),
        forward=forward,
        capture_seconds=0.0,
        budget_bytes=0,
        _packed=OrderedDict(),
        _recapture=lambda layer: capture_layer(session, ids, layer),
    )
    # The layers get what the budget leaves after everything else; those that do not fit are recaptured
    # when viewed. At least one layer is always held.
    maps.budget_bytes = budget - maps.retained_bytes()
    held = 0
    for layer, weights in enumerate(prefill.attentions):
        packed = pack(weights[0].float().cpu().numpy())  # [heads, n(n+1)/2] float16
        if held + packed.nbytes > maps.budget_bytes and maps._packed:
            break
        maps._packed[layer] = packed
        held += packed.nbytes
    maps.budget_bytes = max(maps.budget_bytes, held)
    maps.capture_seconds = time.perf_counter() - started
    return maps


def capture_attention(session, text: str, chat: bool = False) -> AttentionMaps:
    """Every layer's and head's attention for `text` (in the chat template when chat=True), with the decode
    step, the logit lens and the forward analysis (`.forward`) of the same pass. Cached per (model, text,
    chat): views, and `forward.forward_pass` for the same text, re-use it."""
    text = clean_text(text)
    chat = bool(chat)
    return session.analysis("attention", (text, chat), lambda: _capture(session, tokenize(session, text, chat)))
