"""Generation one token at a time, with a record of every step: the sampling stages, the draw, the timings.

    prefill: the whole prompt in one forward pass fills the KV cache (DynamicCache) and gives the logits
             of the first new token;
    decode:  each later step feeds only the token just chosen; attention reads the cached keys/values.

Every step runs the pipeline of `sampling.py` on the float32 logits of the last position and draws with
the step's uniform number. Step i always uses the i-th number of the stream of a `torch.Generator` seeded
with the run's seed, never global state, so a seed repeats a run exactly, and stepping in the UI, a
what-if branch and a full `generate` agree on the random numbers.

A step record keeps the small things the views need (top candidates per stage, survivors, entropy, the
draw, timings, KV-cache length) and never the whole vocabulary. Only the logits of recent steps are kept,
in a small bounded store shared through `session.analysis`, so that moving a slider re-applies the
pipeline without a model call.

The model itself is reached through `inference.model` only: `run.forward_last` (one pass, last position's
logits), `run.new_cache` (the KV cache), `vocab.eos_ids` and `vocab.token_texts`. `sampling_run.SamplingRun`
drives the same steps one at a time, forwards and back, as a student explores a run.

Two options change what a run is:
    constraint  structured output (`constrained.Constraint`): the grammar's mask is one more stage of every
                step (after the penalties, before temperature), and each record says how many tokens the
                grammar allowed and how much of the model's probability it removed;
    ablation    an `interventions.Ablation` on every forward pass of the run (prefill and decode alike): the
                stages and records are the ablated model's. Mean ablation uses the prompt's means, as
                `interventions.ablated` does.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch

from .constrained import Constraint, GrammarState, matches
from .deadline import Deadline
from .errors import InputError
from .interventions import Ablation, prompt_means, writers
from .limits import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, MAX_SEED, MAX_STOP_CHARS, MAX_STOP_SEQUENCES, REQUEST_SECONDS
from .model.hooks import hooks
from .model.run import forward_last, new_cache
from .model.vocab import eos_ids, token_texts
from .sampling import (
    Draw,
    LogitsTrace,
    SamplingParams,
    StageSummary,
    _whole,
    draw_token,
    process_logits,
    sample_counts,
    summarize,
)
from .tokens import tokenize

TOP_N = 10  # candidates per stage kept in a step record
CDF_TOP = 20  # tokens of the final distribution kept for the CDF view; the rest is one bar
STOP_REASONS = {
    "eos": "the model chose its end-of-sequence token",
    "stop_sequence": "a stop sequence appeared in the text",
    "max_new_tokens": "max new tokens reached",
    "context_length": "the model's context length is full",
    "time_limit": f"the server's time limit of {REQUEST_SECONDS} s per request was reached",
}


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass
class StepRecord:
    """One generated token and how it was chosen. Lists `candidates`, `pieces` and each stage's lists align."""

    index: int  # 0 = first new token
    token_id: int
    piece: str  # readable (· for a space, ↵ for a newline)
    text: str  # the token's real text
    candidates: list[int]
    pieces: list[str]
    stages: list[StageSummary]
    draw: float | None  # the uniform number in [0, 1); None when greedy
    chosen_rank: int  # in the final distribution, 1 = most likely
    chosen_prob: float  # in the final distribution (what it was drawn with)
    raw_prob: float  # the model's own probability (softmax of the raw logits)
    raw_rank: int
    cdf_low: float  # the chosen token's interval [cdf_low, cdf_high) of the CDF
    cdf_high: float
    final_top: list[tuple[int, str, float]]  # (id, piece, prob) most likely first, ties by id: the CDF order
    eos_blocked: bool = False  # EOS was forbidden here (min new tokens not reached)
    eos_blocked_prob: float = 0.0  # the probability EOS had just before it was blocked
    forced: bool = False  # chosen by the user (what-if), not by the draw
    samples: list[tuple[int, str, int, float]] | None = None  # (id, piece, times drawn, p) of n draws, most first
    # timings, read by the Prefill & decode tab
    phase: str = "decode"  # "prefill" | "decode" | "recompute" (use_cache=False: the whole sequence again)
    tokens_in_pass: int = 0  # tokens the forward pass processed
    cache_len: int = 0  # KV-cache length after the pass (0 without a cache)
    forward_s: float = 0.0  # the model's forward pass
    sampling_s: float = 0.0  # pipeline + draw + this record
    step_s: float = 0.0  # whole step
    stop_reason: str | None = None  # set on the step that ended the run
    # with a constraint: tokens the grammar allowed here, and the model's probability on the tokens it removed
    # (1 - the sum of the raw softmax over the allowed tokens): high = the model wanted something else
    allowed_tokens: int | None = None
    removed_mass: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["final_top"] = [{"id": i, "piece": p, "prob": q} for i, p, q in self.final_top]
        if self.samples is not None:
            out["samples"] = [{"id": i, "piece": p, "count": c, "prob": q} for i, p, c, q in self.samples]
        return out


@dataclass
class GenerationTrace:
    """A whole run: the tokens, the text, one StepRecord per token, why it stopped and what it cost."""

    prompt: str
    chat: bool
    prompt_ids: list[int]
    params: SamplingParams
    seed: int  # the seed actually used (picked at random when params.seed was None)
    max_new_tokens: int
    min_new_tokens: int
    stop: tuple[str, ...]
    use_cache: bool
    token_ids: list[int] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    text: str = ""
    stop_reason: str | None = None  # None while the run can still go on
    stop_sequence: str | None = None
    ttft_s: float | None = None  # time to first token: prefill + the first step's sampling
    tpot_s: float | None = None  # mean time per later token
    total_s: float = 0.0
    constraint: Constraint | None = None
    ablation: Ablation | None = None
    valid: bool | None = None  # with a constraint, once the run ended: the text is a complete valid output

    @property
    def prefill_s(self) -> float | None:
        return self.steps[0].forward_s if self.steps else None

    def to_dict(self, steps: bool = True) -> dict:
        out = {
            "prompt": self.prompt,
            "chat": self.chat,
            "prompt_ids": self.prompt_ids,
            "params": {**self.params.to_dict(), "seed": self.seed},
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "stop": list(self.stop),
            "use_cache": self.use_cache,
            "token_ids": self.token_ids,
            "pieces": [s.piece for s in self.steps],
            "text": self.text,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "ttft_s": self.ttft_s,
            "tpot_s": self.tpot_s,
            "total_s": self.total_s,
            "constraint": None if self.constraint is None else {"kind": self.constraint.kind,
                                                                  "spec": self.constraint.text},
            "ablation": None if self.ablation is None else {"heads": [list(h) for h in self.ablation.heads],
                                                              "blocks": [list(b) for b in self.ablation.blocks],
                                                              "mode": self.ablation.mode,
                                                              "label": self.ablation.describe()},
            "valid": self.valid,
        }
        if steps:
            out["steps"] = [s.to_dict() for s in self.steps]
        return out


# ---------------------------------------------------------------------------------------------------
# Inputs


def prompt_ids(session, prompt: str, chat: bool = True) -> list[int]:
    """The prompt's token ids as the model receives them (in the chat template when chat), within the cap."""
    ids = tokenize(session, prompt, chat).ids
    if len(ids) > MAX_PROMPT_TOKENS:
        raise InputError("generation.prompt_too_long",
                         "The prompt is {tokens:,} tokens; the limit is {limit:,}. Shorten it and try again.",
                         tokens=len(ids), limit=MAX_PROMPT_TOKENS)
    return list(ids)


def check_lengths(max_new_tokens, min_new_tokens=0) -> tuple[int, int]:
    """Whole numbers with 1 <= max_new_tokens <= the cap and 0 <= min_new_tokens <= max_new_tokens."""
    max_new = _whole("max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS, hint="limit")
    min_new = _whole("min_new_tokens", min_new_tokens or 0, 0, MAX_NEW_TOKENS)
    if min_new > max_new:
        raise InputError("generation.min_over_max",
                         "min_new_tokens ({min_new}) cannot be larger than max_new_tokens ({max_new}).",
                         min_new=min_new, max_new=max_new)
    return max_new, min_new


def check_stop(stop) -> tuple[str, ...]:
    """Stop sequences: a string or a list of strings; empty ones are dropped; at most the capped number."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise InputError("generation.stop_not_strings", "stop must be a list of strings.")
    stop = tuple(s for s in stop if s)
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InputError("generation.too_many_stops", "At most {limit} stop sequences are allowed; got {count}.",
                         limit=MAX_STOP_SEQUENCES, count=len(stop))
    for s in stop:
        if len(s) > MAX_STOP_CHARS:
            raise InputError("generation.stop_too_long",
                             "A stop sequence may have at most {limit} characters; one has {chars}.",
                             limit=MAX_STOP_CHARS, chars=len(s))
    return stop


def pick_seed(params: SamplingParams) -> int:
    return params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1)


def uniform_stream(seed: int, start: int = 0) -> Iterator[float]:
    """The uniform numbers of a run: step i gets the i-th number of a generator seeded with `seed`.

    torch.rand(n) yields the same numbers as n successive single draws, so skipping to `start` is exact.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    if start:
        torch.rand(start, generator=generator)
    while True:
        yield float(torch.rand((), generator=generator))


def uniform_at(seed: int, step: int) -> float:
    return next(uniform_stream(seed, step))


# ---------------------------------------------------------------------------------------------------
# Stored logits


class LogitsStore:
    """The logits of the most recent steps, keyed by the full context (prompt + generated ids).

    Bounded: a slider re-applies the pipeline to the current step without a model call, and clicking back
    to a recent step is instant; older steps are recomputed by one forward pass when asked for.
    """

    def __init__(self, max_entries: int = 16):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, ...]) -> torch.Tensor | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple[int, ...], logits: torch.Tensor) -> None:
        with self._lock:
            self._items[key] = logits
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def logits_store(session) -> LogitsStore:
    """This model's store, one entry of the shared analysis cache (so it cannot crowd out other tabs)."""
    return session.analysis("sampling_logits_store", (), LogitsStore)


def store_key(prompt: Sequence[int], generated: Sequence[int], ablation: Ablation | None = None) -> tuple:
    """The store's key: the context, and the ablation its logits were computed under (if any)."""
    key = tuple(prompt) + tuple(generated)
    return key if ablation is None or ablation.empty else (ablation, *key)


def step_logits(session, prompt: Sequence[int], generated: Sequence[int],
                ablation: Ablation | None = None) -> tuple[torch.Tensor, bool]:
    """The logits [V] for the token after prompt + generated (with the ablation on, if any), from the store
    or one forward pass. Returns (logits, whether the model ran)."""
    key = store_key(prompt, generated, ablation)
    store = logits_store(session)
    logits = store.get(key)
    if logits is not None:
        return logits, False
    logits, _ = run_forward(session, tuple(prompt) + tuple(generated), ablation_writers(session, ablation, prompt))
    logits = logits.cpu()
    store.put(key, logits)
    return logits, True


# ---------------------------------------------------------------------------------------------------
# A forward pass with an ablation on


def ablation_writers(session, ablation: Ablation | None, prompt: Sequence[int]) -> dict | None:
    """The hook-point writers that put `ablation` on a pass (None: no ablation). Mean ablation replaces a
    component by its mean over the prompt's positions (computed once per prompt and kept)."""
    if ablation is None or ablation.empty:
        return None
    means = {}
    if ablation.mode == "mean":
        def compute():
            ids = torch.tensor([list(prompt)], device=session.device)
            with session.lock, torch.inference_mode():
                return prompt_means(session, ids, ablation)

        means = session.analysis("ablation_means", (tuple(prompt), ablation), compute)
    return writers(ablation, means)


def run_forward(session, ids: Sequence[int], write: dict | None, cache=None) -> tuple[torch.Tensor, float]:
    """`forward_last`, with the ablation's writers on this pass only (the lock is held from putting them on
    to taking them off, so no other request's pass ever runs ablated)."""
    if not write:
        return forward_last(session, ids, cache)
    with session.lock, hooks(session, write=write):
        return forward_last(session, ids, cache)


# ---------------------------------------------------------------------------------------------------
# One step, from logits to a record


def choose(session, logits: torch.Tensor, prompt: Sequence[int], generated: Sequence[int], params: SamplingParams,
           u: float, min_new_tokens: int = 0, *, forced: int | None = None, top_n: int = TOP_N,
           samples: int = 0, sample_seed: int = 0, extra_ids: Sequence[int] = (),
           grammar: GrammarState | None = None) -> tuple[StepRecord, LogitsTrace]:
    """Apply the pipeline to one step's logits, draw with u (or take `forced`), and summarize the step.
    `grammar`: a constraint's state after `generated` (its mask is the "constraint" stage).

    The same function serves `generate`, the UI's single steps and the `next_token` endpoint, so all three
    agree token for token.
    """
    start = time.perf_counter()
    eos = eos_ids(session)
    blocked = eos if len(generated) < min_new_tokens else []
    if grammar is not None and min_new_tokens:
        raise InputError("generation.min_new_with_constraint",
                         "min new tokens cannot be combined with a constraint: the grammar decides where the "
                         "output ends. Set min new tokens to 0.")
    if grammar is not None and forced is not None and not grammar.accepts(forced):
        raise InputError(grammar.refusal(forced))
    trace = process_logits(logits, prompt, generated, params, blocked_ids=blocked,
                           mask=None if grammar is None else grammar.apply)
    draw: Draw = draw_token(trace.probs, None if params.greedy else u)
    token = draw.token_id if forced is None else int(forced)
    ids, stages = summarize(trace, top_n, extra_ids=[token, draw.token_id, *extra_ids])
    probs = trace.probs
    at = ids.index(token)  # the chosen token is always a candidate
    raw, final = stages[0], stages[-1]
    top_p, top_i = torch.topk(probs, min(CDF_TOP, probs.shape[-1]))
    top = sorted(((i, p) for i, p in zip(top_i.tolist(), top_p.tolist()) if p > 0), key=lambda t: (-t[1], t[0]))
    counts = sample_counts(probs, samples, sample_seed) if samples else {}
    counted = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    counted_p = probs[torch.tensor([i for i, _ in counted], dtype=torch.long, device=probs.device)].tolist()
    named = ids + [token] + [i for i, _ in top] + list(counts)
    pieces, texts = token_texts(session, named)
    piece_of, text_of = dict(zip(named, pieces)), dict(zip(named, texts))
    chosen_p = final.probs[at]
    if forced is None or token == draw.token_id:
        rank, low, high = draw.rank, draw.cdf_low, draw.cdf_high
    else:  # a what-if token: its place in the same CDF order
        rank = 1 + int((probs > chosen_p).sum())
        low = float(probs[probs > chosen_p].sum())
        high = low + chosen_p
    eos_blocked_prob = 0.0
    if blocked:
        before = trace.stage_probs()[trace.names.index("min_new_tokens") - 1]
        eos_blocked_prob = float(before[torch.tensor(blocked)].sum())
    record = StepRecord(
        index=len(generated),
        token_id=token,
        piece=piece_of[token],
        text=text_of[token],
        candidates=ids,
        pieces=[piece_of[i] for i in ids],
        stages=stages,
        draw=draw.u,
        chosen_rank=rank,
        chosen_prob=chosen_p,
        raw_prob=raw.probs[at],
        raw_rank=raw.ranks[at] if raw.ranks[at] is not None else 0,  # 0: the raw logit was already -inf
        cdf_low=low,
        cdf_high=high,
        final_top=[(i, piece_of[i], p) for i, p in top],
        eos_blocked=bool(blocked),
        eos_blocked_prob=eos_blocked_prob,
        forced=forced is not None and token != draw.token_id,
        samples=[(i, piece_of[i], c, q) for (i, c), q in zip(counted, counted_p)] if samples else None,
    )
    if grammar is not None:
        allowed = grammar.allowed  # [V] bool
        model_probs = trace.stage_probs()[0]  # [V] the raw softmax: what the model itself wanted
        record.allowed_tokens = int(allowed.sum())
        record.removed_mass = max(0.0, 1.0 - float(model_probs.double()[allowed].sum()))
    record.sampling_s = time.perf_counter() - start
    return record, trace


def inspect_step(session, prompt: str, params: SamplingParams, generated_ids: Sequence[int] = (), *,
                 chat: bool = True, min_new_tokens: int = 0, samples: int = 0, top_n: int = TOP_N,
                 extra_ids: Sequence[int] = (), forced: int | None = None, constraint: Constraint | None = None,
                 ablation: Ablation | None = None) -> tuple[StepRecord, LogitsTrace, int]:
    """The next step after prompt + generated_ids, without generating: the stage table, and where the
    step's uniform number lands (or, with `forced`, a what-if token taken instead). Uses the stored
    logits when the step is recent (no model call). With a constraint, the grammar's state is rebuilt from
    generated_ids; with an ablation, the logits are the ablated model's. Returns (record, trace, seed used)."""
    ids = prompt_ids(session, prompt, chat)
    try:
        generated = [int(i) for i in generated_ids]
    except (TypeError, ValueError):
        raise InputError("generation.generated_ids_not_ids",
                         "generated_ids must be a list of token ids, for example [791, 6149].") from None
    vocab = session.facts.vocab_size
    if any(not 0 <= i < vocab for i in generated) or (forced is not None and not 0 <= forced < vocab):
        raise InputError("generation.token_ids_range", "Token ids must be between 0 and {last:,}.", last=vocab - 1)
    if len(generated) >= MAX_NEW_TOKENS:
        raise InputError("generation.too_many_generated",
                         "At most {limit} new tokens can be generated; got {count} already.",
                         limit=MAX_NEW_TOKENS, count=len(generated))
    seed = pick_seed(params)
    grammar = None if constraint is None else GrammarState(session, constraint, generated)
    start = time.perf_counter()
    logits, ran = step_logits(session, ids, generated, ablation)
    forward_s = time.perf_counter() - start
    u = uniform_at(seed, len(generated))
    record, trace = choose(session, logits, ids, generated, params, u, min_new_tokens, top_n=top_n,
                           samples=samples, sample_seed=seed * 1009 + len(generated), extra_ids=extra_ids,
                           forced=forced, grammar=grammar)
    record.phase = "recompute" if ran else "stored"
    record.tokens_in_pass = len(ids) + len(generated) if ran else 0
    record.forward_s = forward_s if ran else 0.0
    return record, trace, seed


# ---------------------------------------------------------------------------------------------------
# A run


class Generation:
    """A generation run you can iterate: each iteration runs one forward pass and yields its StepRecord.

        run = Generation(session, "Tell me a joke", SamplingParams(temperature=0.7, seed=1), 32)
        for step in run: print(step.piece, step.chosen_prob)
        run.trace  # GenerationTrace

    `prefix_ids`: tokens already generated (a what-if branch or a run continued from the UI); they are
    prefilled together with the prompt and count towards max/min new tokens. `deadline` (default: the
    server's REQUEST_SECONDS from now) ends the run with stop reason "time_limit" between two steps.
    `constraint`: structured output (the grammar's mask in every step); `ablation`: on every forward pass.
    `last_trace` is the LogitsTrace of the latest step (the whole distributions; only the latest is kept).
    """

    def __init__(self, session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True,
                 stop=(), use_cache: bool = True, *, min_new_tokens: int = 0, prefix_ids: Sequence[int] = (),
                 keep_logits: bool = False, top_n: int = TOP_N, deadline: Deadline | None = None,
                 constraint: Constraint | None = None, ablation: Ablation | None = None):
        if not isinstance(params, SamplingParams):
            raise TypeError("params must be a SamplingParams")
        self.session = session
        max_new, min_new = check_lengths(max_new_tokens, min_new_tokens)
        self.prompt_ids = prompt_ids(session, prompt, chat)
        self.generated = [int(i) for i in prefix_ids]
        if any(not 0 <= i < session.facts.vocab_size for i in self.generated):
            raise InputError("generation.prefix_ids_range", "prefix_ids must be token ids between 0 and {last:,}.",
                             last=session.facts.vocab_size - 1)
        context = session.facts.context_length or 0
        if context and len(self.prompt_ids) + max_new > context:
            raise InputError("generation.over_context",
                             "The prompt ({prompt:,} tokens) plus {new} new tokens exceeds the model's context length "
                             "of {context:,} tokens.", prompt=len(self.prompt_ids), new=max_new, context=context)
        self.keep_logits = keep_logits
        self.top_n = top_n
        self.deadline = deadline or Deadline()
        if ablation is not None and not isinstance(ablation, Ablation):
            raise TypeError("ablation must be an interventions.Ablation (see interventions.check_ablation)")
        ablation = None if ablation is None or ablation.empty else ablation
        self.trace = GenerationTrace(
            prompt=prompt, chat=bool(chat), prompt_ids=self.prompt_ids, params=params, seed=pick_seed(params),
            max_new_tokens=max_new, min_new_tokens=min_new, stop=check_stop(stop), use_cache=bool(use_cache),
            constraint=constraint, ablation=ablation,
        )
        self._grammar = None if constraint is None else GrammarState(session, constraint, self.generated)
        self._write = ablation_writers(session, ablation, self.prompt_ids)
        self.last_trace: LogitsTrace | None = None
        self._uniforms = uniform_stream(self.trace.seed, len(self.generated))
        self._cache = None
        self._started: float | None = None
        if len(self.generated) >= max_new:
            self.trace.stop_reason = "max_new_tokens"

    @property
    def cache(self):
        """The run's KV cache (None before prefill or without a cache): read between steps, never written."""
        return self._cache

    @property
    def done(self) -> bool:
        return self.trace.stop_reason is not None

    def __iter__(self) -> Iterator[StepRecord]:
        while not self.done:
            yield self.step()

    def _forward(self) -> tuple[torch.Tensor, str, int, int, float]:
        """The forward pass of this step: prefill, one decode token, or (no cache) the whole sequence."""
        context = self.prompt_ids + self.generated
        if not self.trace.use_cache:
            logits, seconds = run_forward(self.session, context, self._write)
            return logits, "recompute", len(context), 0, seconds
        if self._cache is None:
            self._cache = new_cache(self.session)
            logits, seconds = run_forward(self.session, context, self._write, self._cache)
            return logits, "prefill", len(context), self._cache.get_seq_length(), seconds
        logits, seconds = run_forward(self.session, self.generated[-1:], self._write, self._cache)
        return logits, "decode", 1, self._cache.get_seq_length(), seconds

    def step(self) -> StepRecord:
        if self.done:
            raise RuntimeError(f"the run has stopped ({self.trace.stop_reason})")
        step_start = time.perf_counter()
        if self._started is None:
            self._started = step_start
        trace = self.trace
        u = next(self._uniforms)
        logits, phase, n_tokens, cache_len, forward_s = self._forward()
        if self.keep_logits:
            logits_store(self.session).put(store_key(self.prompt_ids, self.generated, trace.ablation), logits.cpu())
        record, self.last_trace = choose(self.session, logits, self.prompt_ids, self.generated, trace.params, u,
                                         trace.min_new_tokens, top_n=self.top_n, grammar=self._grammar)
        record.phase, record.tokens_in_pass, record.cache_len, record.forward_s = phase, n_tokens, cache_len, forward_s
        if self._grammar is not None:
            self._grammar.accept(record.token_id)
        self.generated.append(record.token_id)
        trace.token_ids.append(record.token_id)
        trace.steps.append(record)
        self._check_stop(record)
        now = time.perf_counter()
        record.step_s = now - step_start
        trace.total_s = now - self._started
        if len(trace.steps) == 1:
            trace.ttft_s = trace.total_s
        else:
            trace.tpot_s = (trace.total_s - trace.ttft_s) / (len(trace.steps) - 1)
        return record

    def _check_stop(self, record: StepRecord) -> None:
        trace = self.trace
        trace.stop_reason, trace.stop_sequence = stop_reason(self.session, self.prompt_ids, self.generated,
                                                             trace.stop, trace.max_new_tokens)
        if trace.stop_reason is None and self.deadline.expired:
            trace.stop_reason = "time_limit"
        record.stop_reason = trace.stop_reason
        trace.text = self.session.tokenizer.decode(self.generated, skip_special_tokens=True)  # ~0.1 ms
        if trace.stop_reason is not None and trace.constraint is not None:
            trace.valid = matches(self.session, trace.constraint, trace.text)


def stop_reason(session, prompt: Sequence[int], generated: Sequence[int], stop: Sequence[str],
                max_new_tokens: int) -> tuple[str | None, str | None]:
    """Why a run ends after its last token (None: it goes on), and the stop sequence that matched.

    Precedence: EOS, a stop sequence, max new tokens, a full context. Stop sequences are matched on the
    generated text with special tokens, as transformers' StopStringCriteria sees the vocabulary; the
    token that completes one is kept, as in transformers.
    """
    if generated and generated[-1] in set(eos_ids(session)):
        return "eos", None
    if stop:
        text = session.tokenizer.decode(list(generated), skip_special_tokens=False)
        hit = next((s for s in stop if s in text), None)
        if hit is not None:
            return "stop_sequence", hit
    if len(generated) >= max_new_tokens:
        return "max_new_tokens", None
    context = session.facts.context_length
    if context and len(prompt) + len(generated) >= context:
        return "context_length", None
    return None, None


def stream_generate(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True,
                    stop=(), use_cache: bool = True, **kwargs) -> Iterator[StepRecord]:
    """The streaming form of `generate`: yields each StepRecord as soon as its token is chosen."""
    yield from Generation(session, prompt, params, max_new_tokens, chat, stop, use_cache, **kwargs)


def generate(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True, stop=(),
             use_cache: bool = True, **kwargs) -> GenerationTrace:
    """Generate up to max_new_tokens after `prompt` with the sampling pipeline; every step recorded.

    Greedy (temperature 0) gives the same tokens as `model.generate(do_sample=False)`; with a constraint,
    the same tokens as `model.generate(do_sample=False, logits_processor=[xgrammar's processor])`. Keyword
    extras: min_new_tokens (EOS is blocked until then), prefix_ids, keep_logits, top_n, deadline,
    constraint (a constrained.Constraint: steps gain .allowed_tokens and .removed_mass), ablation (an
    interventions.Ablation on every forward pass).
    """
    run = Generation(session, prompt, params, max_new_tokens, chat, stop, use_cache, **kwargs)
    for _ in run:
        pass
    return run.trace
