"""Bounded KV caches: what evicting tokens saves, and what it costs in the model's own predictions.

A policy keeps at most `budget` tokens in every layer's cache; each new token's query attends over those alone.
The text is run through the real model with a cache layer of ours (`EvictingLayer`, modelled on transformers'
DynamicSlidingWindowLayer; transformers 5 removed SinkCache and kvpress does not install beside it): the first
`budget` tokens in one pass (nothing is evicted yet), then one decode pass per token, every prediction scored.

    full           keep every token: the reference (one pass over the whole text)
    window         the last `budget` tokens (a sliding window of W = budget: position i sees i-W+1 .. i)
    sinks          StreamingLLM: the first `sinks` tokens (the attention sinks) plus the last budget - sinks
    heavy_hitters  H2O: the last `recent` tokens plus the budget - recent earlier tokens that have received the most
                   attention so far (summed over every query and head of the layer, so each layer keeps its own set)

Keys are cached after RoPE rotated them by their own position, so an evicted neighbour does not change a kept key;
but the model numbers new tokens from the cache's length unless it is told otherwise, and a cache that evicted
tokens is shorter than the text: every pass therefore gets its text positions explicitly (`scoring.run_tokens`).

`evaluate_policy` returns the perplexity of the text under a policy, the positions each layer kept at the end and the
bytes the cache tensors hold. The classic result: a window alone degrades badly once the first token is evicted,
because most layers park most of their attention on the first token (the "attention sink"; `first_token_attention`
measures it on the full run); keeping a few sinks restores most of the quality.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicLayer

from .deadline import Deadline
from .errors import InputError
from .limits import (LAYER_KIND_CHUNK, MAX_KV_EVAL_TOKENS, MAX_LAYER_KIND_TOKENS, MAX_POLICY_BUDGET, MAX_SINKS,
                     MIN_POLICY_BUDGET, POLICY_SWEEP_BUDGETS)
from .model.anatomy import layer_windows
from .model.kv import cache_layer_bytes, kv_shape
from .model.run import forward_last, new_cache
from .scoring import chunk_nll, logprob_chunks, perplexity, run_tokens, step_logprobs, text_ids
from .tokens import clean_text

POLICIES = ("full", "window", "sinks", "heavy_hitters")
Progress = Callable[[int, int, str], None]  # (runs done, runs in all, what runs next)
POLICY_NAMES = {"full": "full cache", "window": "sliding window", "sinks": "sinks + window (StreamingLLM)",
                "heavy_hitters": "heavy hitters + recent (H2O)"}


class EvictingLayer(DynamicLayer):
    """One layer's KV cache that holds at most `budget` tokens, modelled on DynamicSlidingWindowLayer.

    Before new tokens are appended, the policy picks which held tokens stay (room for the new ones); the attention
    then runs over what is held. `positions` [held] are the text positions of the held tokens and `scores` [held] the
    attention each has received while held (heavy hitters rank by it). Once the cache is full, passes must bring one
    token each: with a non-contiguous set of kept positions the model's causal mask (built from lengths and offsets)
    could not order several new tokens among them."""

    is_sliding = False

    def __init__(self, policy: str, budget: int, sinks: int = 0, recent: int = 0):
        super().__init__()
        self.policy, self.budget, self.sinks, self.recent = policy, budget, sinks, recent
        self.positions = torch.zeros(0, dtype=torch.long)  # [held]
        self.scores = torch.zeros(0, dtype=torch.float64)  # [held]
        self.seen = 0  # tokens this layer has been given so far: the next one's text position

    def _kept_count(self, incoming: int) -> int:
        held = len(self.positions)
        if held + incoming <= self.budget:
            return held
        if incoming > 1:
            raise ValueError("a full evicting cache takes one token per pass")
        return self.budget - incoming

    def _keep(self, count: int, incoming: int) -> torch.Tensor:
        """Indices (ascending) of the held tokens that stay, `count` of them."""
        held = len(self.positions)
        everything = torch.arange(held)
        if self.policy == "window":
            return everything[held - count:]
        if self.policy == "sinks":
            first = min(self.sinks, count)  # the sinks are the first held tokens: they are never evicted
            return torch.cat([everything[:first], everything[held - (count - first):]])
        # heavy hitters: the most recent held tokens, then the most attended among the others
        recent = max(0, min(count, self.recent - incoming))
        older = held - recent
        heavy = torch.topk(self.scores[:older], count - recent).indices if count > recent else everything[:0]
        return torch.cat([heavy.sort().values, everything[older:]])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Evict to make room, append the new tokens; return what the attention sees: [b, kv_heads, held, head_dim]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        incoming = key_states.shape[-2]
        count = self._kept_count(incoming)
        if count < len(self.positions):
            keep = self._keep(count, incoming)
            self.keys, self.values = self.keys[:, :, keep.to(self.keys.device)], self.values[:, :, keep.to(self.keys.device)]
            self.positions, self.scores = self.positions[keep], self.scores[keep]
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        self.positions = torch.cat([self.positions, torch.arange(self.seen, self.seen + incoming)])
        self.scores = torch.cat([self.scores, torch.zeros(incoming, dtype=torch.float64)])
        self.seen += incoming
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The keys the coming pass attends over: what stays after eviction plus the new tokens (no offset)."""
        return self._kept_count(query_length) + query_length, 0

    def add_attention(self, pattern: torch.Tensor) -> None:
        """The attention weights of a pass [b, heads, q, held]: add what each held token received."""
        self.scores += pattern.sum(dim=(0, 1, 2)).double().cpu()


def evicting_cache(session, policy: str, budget: int, sinks: int, recent: int) -> Cache:
    return Cache(layers=[EvictingLayer(policy, budget, sinks, recent) for _ in range(session.facts.num_layers)])


# ---------------------------------------------------------------------------------------------------
# Runs


@dataclass
class PolicyRun:
    """One policy at one budget on one text."""

    policy: str
    budget: int  # tokens each layer keeps (the full cache: the text's length)
    sinks: int
    recent: int
    text_tokens: int
    nll: np.ndarray = field(repr=False)  # [predicted] -log p(token i+1 | what the cache kept), natural log
    top_ids: np.ndarray = field(repr=False)  # [predicted] the model's top guess at each position
    kept_by_layer: list[list[int]]  # text positions each layer holds at the end
    cache_bytes: int  # the cache tensors' bytes at the end (keys and values, every layer)
    bytes_per_token: int  # the formula: 2 x layers x KV heads x head dim x bytes per element
    first_evicted_at: int | None  # the text position whose pass first ran without position 0 (None: never)
    first_token_attention: np.ndarray | None = field(default=None, repr=False)  # [layers, heads] (full run only)
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll)

    @property
    def kept_positions(self) -> list[int]:
        """Text positions at least one layer holds at the end (window and sinks: every layer holds exactly these)."""
        return sorted(set().union(*self.kept_by_layer)) if self.kept_by_layer else []

    @property
    def kept_tokens(self) -> int:
        return max((len(k) for k in self.kept_by_layer), default=0)

    @property
    def formula_bytes(self) -> int:
        return sum(len(k) for k in self.kept_by_layer) * self.bytes_per_token // max(1, len(self.kept_by_layer))

    @property
    def label(self) -> str:
        if self.policy == "full":
            return POLICY_NAMES["full"]
        extra = {"sinks": f", {self.sinks} sinks", "heavy_hitters": f", {self.recent} recent"}.get(self.policy, "")
        return f"{POLICY_NAMES[self.policy]} ({self.budget} tokens{extra})"

    def agreement_with(self, full: "PolicyRun") -> float:
        """Share of positions where this run's top guess equals the full cache's."""
        n = min(len(self.top_ids), len(full.top_ids))
        return float((self.top_ids[:n] == full.top_ids[:n]).mean()) if n else float("nan")

    def retained_bytes(self) -> int:
        extra = self.first_token_attention.nbytes if self.first_token_attention is not None else 0
        return self.nll.nbytes + self.top_ids.nbytes + 8 * sum(len(k) for k in self.kept_by_layer) + extra

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("nll", "top_ids", "first_token_attention")}
        out.update(perplexity=self.perplexity, kept_positions=self.kept_positions, formula_bytes=self.formula_bytes,
                   label=self.label, nll=[round(float(v), 5) for v in self.nll])
        if self.first_token_attention is not None:
            out["first_token_attention"] = np.round(self.first_token_attention, 5).tolist()
        return out


def _check(session, policy: str, budget: int, sinks: int, recent: int | None) -> tuple[int, int, int]:
    if policy not in POLICIES:
        raise InputError("kv_policies.unknown_policy", "'{policy}' is not a policy; choose from {choices}.",
                         policy=str(policy)[:30], choices=", ".join(POLICIES))
    budget, sinks = int(budget), int(sinks)
    if not MIN_POLICY_BUDGET <= budget <= MAX_POLICY_BUDGET:
        raise InputError("kv_policies.budget_range", "The budget must be {low} to {high} tokens.",
                         low=MIN_POLICY_BUDGET, high=MAX_POLICY_BUDGET)
    if policy == "sinks" and not 0 <= sinks <= min(MAX_SINKS, budget - 1):
        raise InputError("kv_policies.sinks_range", "Sinks must be 0 to {high} (fewer than the budget of {budget}).",
                         high=min(MAX_SINKS, budget - 1), budget=budget)
    recent = budget // 2 if recent is None else int(recent)
    if policy == "heavy_hitters" and not 1 <= recent <= budget:
        raise InputError("kv_policies.recent_range", "The recent window must be 1 to {budget} tokens (the budget).",
                         budget=budget)
    return budget, sinks if policy == "sinks" else 0, recent if policy == "heavy_hitters" else 0


def _attention_observers(session, reduce: Callable[[int, torch.Tensor], None]) -> dict:
    """hook_pattern of every layer, each sent to reduce(layer, weights [b, heads, q, k])."""
    return {f"blocks.{layer}.attn.hook_pattern": (lambda w, layer=layer: reduce(layer, w))
            for layer in range(session.facts.num_layers)}


def _full_run(session, ids: list[int]) -> PolicyRun:
    """The whole text in one pass through the model's own cache; also the attention each head puts on the first
    token (mean over queries 1..n-1, as the Attention tab's layer x head overview measures it)."""
    started = time.perf_counter()
    layers, heads = session.facts.num_layers, session.facts.num_heads
    first = np.zeros((layers, heads), np.float32)

    def on_first(layer: int, weights: torch.Tensor) -> None:  # weights [1, heads, n, n]
        first[layer] = weights[0, :, 1:, 0].float().mean(-1).cpu().numpy() if weights.shape[-2] > 1 else 0.0

    cache = new_cache(session)
    normed = run_tokens(session, ids, 0, cache, observe=_attention_observers(session, on_first))
    nll, top = _score(session, normed, ids, 0)
    kept = [list(range(len(ids))) for _ in range(layers)]
    return PolicyRun("full", len(ids), 0, 0, len(ids), nll, top, kept, sum(cache_layer_bytes(cache)),
                     kv_shape(session).bytes_per_token_layer * layers, None, first, time.perf_counter() - started)


def _score(session, normed: torch.Tensor, ids: list[int], start: int) -> tuple[np.ndarray, np.ndarray]:
    """NLL of each next token and the top guess, for positions start .. start+q-1 of the text."""
    targets = torch.tensor(ids[start + 1:])
    nll, top = [], []
    for rows, lp in logprob_chunks(session, normed):
        nll.append(chunk_nll(lp, rows, targets))
        top.append(lp.argmax(-1)[: len(nll[-1])].cpu().numpy())
    return np.concatenate(nll), np.concatenate(top).astype(np.int64)


def _evicting_run(session, ids: list[int], policy: str, budget: int, sinks: int, recent: int,
                  deadline: Deadline) -> PolicyRun:
    started = time.perf_counter()
    cache = evicting_cache(session, policy, budget, sinks, recent)
    layers = list(cache.layers)
    observe = None
    if policy == "heavy_hitters":
        observe = _attention_observers(session, lambda layer, w: layers[layer].add_attention(w))
    prefill = min(budget, len(ids))  # fits: nothing is evicted during this pass
    nll, top = _score(session, run_tokens(session, ids[:prefill], 0, cache, observe=observe), ids, 0)
    nll, top = [nll], [top]
    first_evicted, timed_out = None, False
    for i in range(prefill, len(ids)):
        if deadline.expired:
            timed_out = True
            break
        logprobs = step_logprobs(session, ids[i], i, cache, observe=observe)  # predicts token i+1
        if first_evicted is None and any(len(layer.positions) == 0 or layer.positions[0] != 0 for layer in layers):
            first_evicted = i  # this pass ran without the first token in some layer
        if i + 1 < len(ids):
            nll.append(chunk_nll(logprobs[None], slice(0, 1), torch.tensor(ids[i + 1:i + 2])))
            top.append(logprobs.argmax()[None].cpu().numpy())
    kept = [layer.positions.tolist() for layer in layers]
    return PolicyRun(policy, budget, sinks, recent, len(ids), np.concatenate(nll), np.concatenate(top).astype(np.int64),
                     kept, sum(cache_layer_bytes(cache)), kv_shape(session).bytes_per_token_layer * len(layers),
                     first_evicted, None, time.perf_counter() - started, timed_out)


def evaluate_policy(session, text: str, policy: str = "window", budget: int = 64, sinks: int = 4,
                    recent: int | None = None, deadline: Deadline | None = None) -> PolicyRun:
    """The text under one cache policy: perplexity, positions kept at the end, cache bytes. `sinks` is used by
    'sinks', `recent` (default budget // 2) by 'heavy_hitters'; 'full' ignores the budget. A budget at least the
    text's length evicts nothing: its one pass equals the full cache's, to the bit. Cached per (model, text,
    settings)."""
    text = clean_text(text)
    ids = text_ids(session, text, MAX_KV_EVAL_TOKENS, "an eviction policy run")
    if policy == "full":
        return session.analysis("kv_policy", (text, "full"), lambda: _full_run(session, ids))
    budget, sinks, recent = _check(session, policy, budget, sinks, recent)
    key = (text, policy, budget, sinks, recent)
    return session.analysis("kv_policy", key, lambda: _evicting_run(session, ids, policy, budget, sinks, recent,
                                                                    deadline or Deadline()))


@dataclass
class PolicyComparison:
    """The full cache and each policy at one budget, on one text."""

    model_id: str
    text_tokens: int
    budget: int
    sinks: int
    full: PolicyRun
    runs: list[PolicyRun]  # in the order asked for
    pieces: list[str]  # the text's tokens, readable

    @property
    def timed_out(self) -> bool:
        return any(r.timed_out for r in self.runs)

    def to_dict(self) -> dict:
        return {"model": self.model_id, "text_tokens": self.text_tokens, "budget": self.budget, "sinks": self.sinks,
                "pieces": self.pieces, "full": self.full.to_dict(),
                "runs": [{**r.to_dict(), "top1_agreement_with_full": r.agreement_with(self.full)} for r in self.runs]}


def compare_policies(session, text: str, budget: int = 64, sinks: int = 4,
                     policies: Sequence[str] = ("window", "sinks", "heavy_hitters"),
                     deadline: Deadline | None = None, progress: Progress | None = None) -> PolicyComparison:
    """The full cache and each policy at `budget` (each run cached on its own). `progress(done, total, what)` is
    called before each run."""
    from .model.vocab import pieces

    deadline = deadline or Deadline()
    names = [p for p in policies if p != "full"]
    for policy in names:
        _check(session, policy, budget, sinks, None)  # a clear message before anything runs
    full = evaluate_policy(session, text, "full")
    runs = []
    for i, policy in enumerate(names):
        if progress:
            progress(i, len(names), POLICY_NAMES.get(policy, policy))
        runs.append(evaluate_policy(session, text, policy, budget, sinks, deadline=deadline))
    ids = text_ids(session, clean_text(text), MAX_KV_EVAL_TOKENS, "an eviction policy run")
    return PolicyComparison(session.model_id, len(ids), int(budget), int(sinks), full, runs, pieces(session, ids))


@dataclass
class BudgetSweep:
    """Perplexity of each policy at several budgets, and the full cache's."""

    model_id: str
    text_tokens: int
    sinks: int
    budgets: list[int]
    full: PolicyRun
    runs: dict[str, list[PolicyRun]]  # policy -> one run per budget done (fewer when the time limit hit)
    timed_out: bool = False

    def to_dict(self) -> dict:
        return {"model": self.model_id, "text_tokens": self.text_tokens, "sinks": self.sinks, "budgets": self.budgets,
                "full_perplexity": self.full.perplexity, "timed_out": self.timed_out,
                "perplexity": {p: [r.perplexity for r in runs] for p, runs in self.runs.items()},
                "cache_bytes": {p: [r.cache_bytes for r in runs] for p, runs in self.runs.items()}}


def sweep_budgets(session, text: str, sinks: int = 4, budgets: Sequence[int] = POLICY_SWEEP_BUDGETS,
                  policies: Sequence[str] = ("window", "sinks", "heavy_hitters"),
                  deadline: Deadline | None = None, progress: Progress | None = None) -> BudgetSweep:
    """Each policy at each budget below the text's length (runs cached one by one; a sweep cut short by the time
    limit keeps what it measured, and running it again goes on from there)."""
    deadline = deadline or Deadline()
    for policy in policies:
        if policy not in POLICIES:
            raise InputError("kv_policies.unknown_policy", "'{policy}' is not a policy; choose from {choices}.",
                             policy=str(policy)[:30], choices=", ".join(POLICIES))
    full = evaluate_policy(session, text, "full")
    budgets = sorted({int(b) for b in budgets if MIN_POLICY_BUDGET <= int(b) < full.text_tokens})
    runs: dict[str, list[PolicyRun]] = {p: [] for p in policies if p != "full"}
    timed_out = False
    total = len(budgets) * len(runs)
    for b, budget in enumerate(budgets):
        for p, policy in enumerate(runs):
            if deadline.expired:
                timed_out = True
                break
            if progress:
                progress(b * len(runs) + p, total, f"{POLICY_NAMES[policy]}, {budget} tokens")
            run = evaluate_policy(session, text, policy, budget, min(sinks, budget - 1), deadline=deadline)
            timed_out |= run.timed_out
            runs[policy].append(run)
    return BudgetSweep(session.model_id, full.text_tokens, int(sinks), budgets, full, runs, timed_out)


# ---------------------------------------------------------------------------------------------------
# Sliding-window layers: the bytes each kind of layer holds at long context (Gemma 3)


@dataclass
class LayerKindMemory:
    """Bytes of the KV cache held by sliding-window (local) layers and by global layers as the context grows,
    read from the cache tensors after each chunk of a prefill, next to the formula."""

    model_id: str
    window: int | None
    local_layers: list[int]
    global_layers: list[int]
    lengths: list[int]  # tokens cached after each chunk
    local_bytes: list[int]  # measured, all local layers together
    global_bytes: list[int]
    local_formula: list[int]  # per local layer min(tokens, window - 1) x bytes per token and layer
    global_formula: list[int]
    bytes_per_token_layer: int
    timed_out: bool = False

    @property
    def matches_formula(self) -> bool:
        return self.local_bytes == self.local_formula and self.global_bytes == self.global_formula

    def to_dict(self) -> dict:
        return {**asdict(self), "matches_formula": self.matches_formula}


def layer_kind_memory(session, text: str, max_tokens: int = MAX_LAYER_KIND_TOKENS,
                      deadline: Deadline | None = None) -> LayerKindMemory:
    """Prefill the text's tokens, repeated up to `max_tokens`, in chunks of LAYER_KIND_CHUNK through the model's own
    cache, reading each layer's bytes after every chunk. Only for a model with sliding-window layers."""
    windows = layer_windows(session)
    if all(w is None for w in windows):
        raise InputError("kv_policies.no_sliding_window",
                         "{model} has no sliding-window layers: every layer keeps every token, so there is only one "
                         "kind of layer to measure. Gemma 3 interleaves local layers (window 512) with global ones: "
                         "load it to see the difference.", model=session.label)
    max_tokens = int(max_tokens)
    if not LAYER_KIND_CHUNK <= max_tokens <= MAX_LAYER_KIND_TOKENS:
        raise InputError("kv_policies.context_range", "The longest context must be {low} to {high:,} tokens.",
                         low=LAYER_KIND_CHUNK, high=MAX_LAYER_KIND_TOKENS)
    text = clean_text(text)
    ids = text_ids(session, text, MAX_KV_EVAL_TOKENS, "this measurement")
    ids = (ids * (max_tokens // len(ids) + 1))[:max_tokens]

    def compute() -> LayerKindMemory:
        local = [i for i, w in enumerate(windows) if w is not None]
        glob = [i for i, w in enumerate(windows) if w is None]
        shape = kv_shape(session)
        cache = new_cache(session)
        lengths, local_bytes, global_bytes, timed_out = [], [], [], False
        limit = deadline or Deadline()
        for start in range(0, len(ids), LAYER_KIND_CHUNK):
            if limit.expired:
                timed_out = True
                break
            forward_last(session, ids[start:start + LAYER_KIND_CHUNK], cache)
            sizes = cache_layer_bytes(cache)
            lengths.append(min(start + LAYER_KIND_CHUNK, len(ids)))
            local_bytes.append(sum(sizes[i] for i in local))
            global_bytes.append(sum(sizes[i] for i in glob))
        formula = [shape.layer_bytes(n) for n in lengths]
        return LayerKindMemory(session.model_id, next(w for w in windows if w is not None), local, glob, lengths,
                               local_bytes, global_bytes, [sum(f[i] for i in local) for f in formula],
                               [sum(f[i] for i in glob) for f in formula], shape.bytes_per_token_layer, timed_out)

    return session.analysis("layer_kind_memory", (text, max_tokens), compute)
