"""What context costs: prompts of growing length, each prefilled and decoded, measured and judged.

    context_sweep   per prompt length: prefill time (split into attention scores, projections, MLP by the pass
                    profiler), decode time per token, KV bytes, peak memory, FLOPs; linear and quadratic fits
    sweep_findings  what those numbers support (and what they do not): the judgements the tab puts in words

A sweep's points are cached per model and length in the session's analysis cache: a longer sweep reuses the
shorter points.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .deadline import Deadline
from .errors import InputError
from .generation import Generation
from .limits import MAX_SWEEP_POINTS, MAX_SWEEP_TOKENS, MAX_SWEEP_WORKING_BYTES, SWEEP_DECODE_STEPS, SWEEP_LENGTHS
from .memory import PeakMemory
from .model.kv import KVShape, cache_layer_bytes, kv_shape
from .profiler import PassProfiler, prefill_flops
from .sampling import SamplingParams

# Plain English, repeated to build prompts of an exact length for the sweep (content does not change the
# cost of a pass: every token goes through the same matrices).
FILLER = (
    "The river runs past the old mill and under the stone bridge, where children stop to watch the boats. "
    "In spring the water is high and fast; by late summer it is slow and clear enough to see the fish. "
    "Farmers along the valley have used it for centuries to water their fields and to turn their wheels, "
    "and the town grew up around the place where the road crosses it. "
)


@dataclass
class SweepPoint:
    prompt_tokens: int
    prefill_s: float  # the fastest of `runs` prefills
    split: dict  # attention_core_s, projections_s, mlp_s, other_s of that prefill
    decode_s: float  # median decode pass after it
    decode_steps: int
    kv_bytes: int  # after the prefill, measured from the cache tensors
    kv_formula_bytes: int
    memory: dict  # PeakMemory of the whole run
    flops: dict  # linear, attention (prefill)
    runs: int
    working_estimate_bytes: int  # what `working_bytes` predicts for this prefill

    @property
    def attention_share(self) -> float:
        """The attention scores' share of the prefill, measured inside the pass."""
        return self.split["attention_core_s"] / self.prefill_s if self.prefill_s else 0.0

    @property
    def attention_flops_share(self) -> float | None:
        """The attention scores' share of the prefill's FLOPs (None when there are none)."""
        total = self.flops["attention"] + self.flops["linear"]
        return self.flops["attention"] / total if total else None


@dataclass
class Fit:
    """Least-squares fit of prefill seconds against n."""

    degree: int
    coefficients: list[float]  # highest power first (numpy.polyfit)
    r2: float

    def at(self, n: float) -> float:
        return float(np.polyval(self.coefficients, n))


@dataclass
class Sweep:
    model: str
    device: str
    lengths: list[int]
    points: list[SweepPoint]
    kv: KVShape
    linear: Fit | None  # None with fewer than 4 points: a quadratic through 3 points always fits exactly
    quadratic: Fit | None
    seconds: float
    cached: bool = False
    timed_out: bool = False  # the request's time limit ended it before the longest lengths

    @property
    def findings(self) -> "SweepFindings":
        """What these numbers support (read afresh from the points on every access)."""
        return sweep_findings(self)

    def to_dict(self) -> dict:
        return {"model": self.model, "device": self.device, "lengths": self.lengths, "timed_out": self.timed_out,
                "points": [asdict(p) for p in self.points], "kv": self.kv.to_dict(),
                "linear": asdict(self.linear) if self.linear else None,
                "quadratic": asdict(self.quadratic) if self.quadratic else None,
                "seconds": self.seconds, "cached": self.cached, "max_sweep_tokens": MAX_SWEEP_TOKENS}


def fit_growth(ns: Sequence[float], ts: Sequence[float], degree: int) -> Fit:
    x, y = np.asarray(ns, float), np.asarray(ts, float)
    coefficients = np.polyfit(x, y, degree)
    residual = float(((y - np.polyval(coefficients, x)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return Fit(degree, [float(c) for c in coefficients], 1.0 - residual / total if total else 1.0)


# ---------------------------------------------------------------------------------------------------
# Which lengths, and prompts of exactly those lengths


def working_bytes(session, n: int) -> int:
    """Memory a prefill of n tokens needs besides the weights, estimated: ~3 attention score matrices
    [heads, n, n] alive at once in one layer (scores, masked, softmax), the KV cache, the MLP's activations."""
    f = session.facts
    element = torch.empty((), dtype=session.dtype).element_size()
    scores = 3 * f.num_heads * n * n * max(element, 4)  # softmax runs in float32
    mlp = 3 * n * max(f.intermediate_size, f.hidden_size) * element
    return scores + kv_shape(session).bytes_for(n) + mlp


def sweep_lengths(session, max_tokens: int | None = None, lengths: Sequence[int] | None = None,
                  decode_steps: int = SWEEP_DECODE_STEPS) -> list[int]:
    """The prompt lengths to measure: `lengths`, or the standard ones up to max_tokens. Refused with one
    sentence beyond the model's context, the sweep cap or the memory cap."""
    if lengths is None:
        if max_tokens is None:
            max_tokens = min(512, MAX_SWEEP_TOKENS)
        try:
            max_tokens = int(max_tokens)
        except (TypeError, ValueError):
            raise InputError("sweep.longest_not_whole",
                             "The longest sweep length must be a whole number of tokens.") from None
        lengths = [n for n in SWEEP_LENGTHS if n <= max_tokens] or [max_tokens]
        if max_tokens not in lengths:
            lengths.append(max_tokens)
    try:
        lengths = sorted({int(n) for n in lengths})
    except (TypeError, ValueError):
        raise InputError("sweep.lengths_not_whole", "Sweep lengths must be whole numbers of tokens.") from None
    if not lengths:
        raise InputError("sweep.no_lengths", "Give at least one prompt length for the sweep.")
    if len(lengths) > MAX_SWEEP_POINTS:
        raise InputError("sweep.too_many_lengths", "A sweep measures at most {limit} lengths; got {count}.",
                         limit=MAX_SWEEP_POINTS, count=len(lengths))
    special = len(session.tokenizer("", add_special_tokens=True).input_ids)
    low = max(8, special + 2)
    if lengths[0] < low:
        raise InputError("sweep.length_too_short", "Sweep lengths must be at least {low} tokens; got {shortest}.",
                         low=low, shortest=lengths[0])
    longest = lengths[-1]
    context = session.facts.context_length or 0
    if context and longest + decode_steps + 1 > context:
        raise InputError("sweep.beyond_context",
                         "A {longest:,}-token prompt plus {new} new tokens is beyond this model's context length of "
                         "{context:,} tokens; choose a shorter longest length.",
                         longest=longest, new=decode_steps + 1, context=context)
    if longest > MAX_SWEEP_TOKENS:
        raise InputError("sweep.beyond_cap", "The sweep goes up to {limit:,} tokens on this server; {longest:,} is "
                         "beyond that cap.", limit=MAX_SWEEP_TOKENS, longest=longest)
    need = working_bytes(session, longest)
    if need > MAX_SWEEP_WORKING_BYTES:
        raise InputError("sweep.beyond_memory",
                         "A {longest:,}-token prefill would need about {need_gb:.1f} GB of working memory with this "
                         "model; the memory cap is {cap_gb:.1f} GB. Choose a shorter longest length.",
                         longest=longest, need_gb=need / 1e9, cap_gb=MAX_SWEEP_WORKING_BYTES / 1e9)
    return lengths


def prompt_of_length(session, n: int) -> str:
    """Plain text that tokenizes (chat=False, with the model's own special tokens) to n tokens, or as close
    as the tokenizer allows; the sweep records the true length."""
    tokenizer = session.tokenizer
    text = FILLER * (1 + n // 60)
    ids = tokenizer(text, add_special_tokens=True).input_ids
    special = len(tokenizer("", add_special_tokens=True).input_ids)
    best = None
    for k in (n, n - 1, n + 1, n - 2, n + 2):
        candidate = tokenizer.decode(ids[special:k], skip_special_tokens=True)
        length = len(tokenizer(candidate, add_special_tokens=True).input_ids)
        if length == n:
            return candidate
        if best is None or abs(length - n) < best[0]:
            best = (abs(length - n), candidate)
    return best[1]


# ---------------------------------------------------------------------------------------------------
# Measuring


def _runs_for(n: int) -> int:
    """Short prefills are fast and noisy: take the fastest of a few."""
    return 3 if n <= 128 else 2 if n <= 512 else 1


def measure_point(session, n: int, decode_steps: int = SWEEP_DECODE_STEPS) -> SweepPoint:
    """Greedy generations on an n-token prompt (EOS blocked so every decode step runs), with the pass
    profiler on; the fastest prefill is kept with its split, the decode passes give the median."""
    text = prompt_of_length(session, n)
    greedy = SamplingParams(temperature=0.0, seed=0)
    best = None
    decode: list[float] = []
    for _ in range(_runs_for(n)):
        run = Generation(session, text, greedy, decode_steps + 1, chat=False, min_new_tokens=decode_steps + 1,
                         top_n=1)
        with session.lock, PeakMemory(session.device, trim=True) as memory, PassProfiler(session) as prof:
            prefill = run.step()
            split = prof.take(prefill.forward_s)
            kv = sum(cache_layer_bytes(run.cache))
            for record in run:
                decode.append(record.forward_s)
        if best is None or prefill.forward_s < best[0].forward_s:
            best = (prefill, split, kv, memory.to_dict())
    prefill, split, kv, memory = best
    tokens = prefill.tokens_in_pass
    return SweepPoint(
        prompt_tokens=tokens, prefill_s=prefill.forward_s, split=split, decode_s=statistics.median(decode),
        decode_steps=decode_steps, kv_bytes=kv, kv_formula_bytes=kv_shape(session).bytes_for(tokens), memory=memory,
        flops=prefill_flops(session, tokens), runs=_runs_for(n), working_estimate_bytes=working_bytes(session, tokens),
    )


def _point_store(session) -> dict:
    """Measured points of this model, kept in one entry of the shared analysis cache."""
    return session.analysis("prefill_sweep_points", (), dict)


def context_sweep(session, max_tokens: int | None = None, *, lengths: Sequence[int] | None = None,
                  decode_steps: int = SWEEP_DECODE_STEPS, fresh: bool = False,
                  progress: Callable[[int, int, int], None] | None = None, deadline: Deadline | None = None) -> Sweep:
    """Measure each prompt length (cached per model and length: a longer sweep reuses the shorter points;
    fresh=True measures again). progress(i, total, n) is called before each length is measured. When the
    request's time limit is reached the lengths measured so far are returned (timed_out=True); they stay
    cached, so running the sweep again goes on from there."""
    decode_steps = int(decode_steps)
    if not 1 <= decode_steps <= 32:
        raise InputError("sweep.decode_steps", "decode_steps must be between 1 and 32.")
    lengths = sweep_lengths(session, max_tokens, lengths, decode_steps)
    store = _point_store(session)
    started = time.perf_counter()
    points, all_cached, timed_out = [], True, False
    deadline = deadline or Deadline()
    for i, n in enumerate(lengths):
        key = (n, decode_steps)
        if fresh or key not in store:
            if deadline.expired:
                timed_out = True
                break
            all_cached = False
            if progress:
                progress(i, len(lengths), n)
            store[key] = measure_point(session, n, decode_steps)
        points.append(store[key])
    if progress:
        progress(len(lengths), len(lengths), lengths[-1])
    ns = [p.prompt_tokens for p in points]
    ts = [p.prefill_s for p in points]
    enough = len(points) >= 4
    return Sweep(
        model=session.model_id, device=str(session.device), lengths=lengths[: len(points)], points=points,
        kv=kv_shape(session),
        linear=fit_growth(ns, ts, 1) if enough else None, quadratic=fit_growth(ns, ts, 2) if enough else None,
        seconds=time.perf_counter() - started, cached=all_cached, timed_out=timed_out,
    )


# ---------------------------------------------------------------------------------------------------
# What the numbers support


@dataclass(frozen=True)
class SweepFindings:
    """What a sweep's numbers support, and what they do not: each judgement with the numbers behind it.
    "first" and "last" are the shortest and the longest prompt measured."""

    points: int
    first_tokens: int
    last_tokens: int
    # 1. Fits of prefill time against n (None with fewer than 4 lengths: a quadratic passes through any 3).
    linear_r2: float | None
    quadratic_r2: float | None
    fit_n2_share: float | None  # the fitted n² term's share of the fitted time at the longest prompt; None
    #                             where that term is not positive (the totals alone show no quadratic growth)
    fit_overstates: bool  # that share is well above the attention share measured inside the passes: noise
    # 2. The attention scores' share of prefill, measured by the pass profiler and by FLOP count (first, last).
    attention_share: tuple[float, float]
    flops_share: tuple[float | None, float | None]
    attention_trend: str | None  # "grows" (by more than 10 points) | "unclear" | None with one length
    # 3. Prefill time per prompt token (first, last).
    per_token_s: tuple[float, float]
    per_token_trend: str  # "rose" | "fell" | "flat" (within 10%)
    # 4. KV cache and working memory.
    kv_bytes: int  # at the longest prompt, measured
    kv_matches: bool  # measured = formula at every length
    sliding_layers: int  # layers whose sliding window the longest prompt went past (0: none)
    window_keeps: int | None  # tokens each of those layers keeps
    memory_growth: float | None  # k in (peak memory increase) ∝ n^k between the two longest prompts
    memory_tokens: tuple[int, int] | None  # the two longest prompts
    memory_increase: tuple[float, float] | None  # peak memory increase at each of them (bytes)
    working_estimate_bytes: int  # `working_bytes` at the longest prompt
    memory_superlinear: bool  # grows faster than n (k > 1.25): eager attention's n × n score matrices
    # 5. Decode (median pass at the first and last length).
    decode_s: tuple[float, float]
    decode_trend: str  # "noisy" (jumps > 2x without a trend) | "grows" (> 10%) | "flat"


def _growth(na: int, nb: int, va: float, vb: float) -> float | None:
    """Growth exponent k (value ∝ n^k) from (na, va) to (nb, vb): 1 = linear, 2 = quadratic. None when it
    cannot be computed."""
    if va <= 0 or vb <= 0 or nb <= na:
        return None
    return math.log(vb / va) / math.log(nb / na)


def sweep_findings(sweep: Sweep) -> SweepFindings:
    """Judge a sweep's numbers, claiming only what they hold. Growth is read between the two longest prompts,
    where fixed per-pass costs matter least."""
    points = sweep.points
    first, last = points[0], points[-1]
    n1 = last.prompt_tokens
    core0, core1 = first.attention_share, last.attention_share

    fit_share, overstates = None, False
    if sweep.linear and sweep.quadratic:
        coefficients = sweep.quadratic.coefficients
        fitted = sum(c * n1 ** (2 - k) for k, c in enumerate(coefficients))
        if coefficients[0] > 0 and fitted > 0:
            fit_share = coefficients[0] * n1 * n1 / fitted
            overstates = fit_share > 2 * core1 + 0.1

    trend = "grows" if core1 > core0 + 0.1 else "unclear" if len(points) > 1 else None
    per0, per1 = first.prefill_s / first.prompt_tokens, last.prefill_s / n1
    ratio = per1 / per0

    windows = [w for w in sweep.kv.layer_windows if w]
    capped = bool(windows) and n1 >= windows[0]

    growth = memory_tokens = memory_increase = None
    if len(points) >= 2:
        a = points[-2]
        va, vb = a.memory["increase_bytes"], last.memory["increase_bytes"]
        growth = _growth(a.prompt_tokens, n1, va, vb)
        if growth is not None:
            memory_tokens, memory_increase = (a.prompt_tokens, n1), (va, vb)

    decode = [p.decode_s for p in points]
    d0, d1 = decode[0], decode[-1]
    if max(decode) > 2 * min(decode) and not all(b >= a for a, b in zip(decode, decode[1:])):
        decode_trend = "noisy"
    elif d1 > 1.1 * d0:
        decode_trend = "grows"
    else:
        decode_trend = "flat"

    return SweepFindings(
        points=len(points), first_tokens=first.prompt_tokens, last_tokens=n1,
        linear_r2=sweep.linear.r2 if sweep.linear and sweep.quadratic else None,
        quadratic_r2=sweep.quadratic.r2 if sweep.linear and sweep.quadratic else None,
        fit_n2_share=fit_share, fit_overstates=overstates,
        attention_share=(core0, core1),
        flops_share=(first.attention_flops_share, last.attention_flops_share),
        attention_trend=trend,
        per_token_s=(per0, per1), per_token_trend="rose" if ratio > 1.1 else "fell" if ratio < 0.9 else "flat",
        kv_bytes=last.kv_bytes, kv_matches=all(p.kv_bytes == p.kv_formula_bytes for p in points),
        sliding_layers=len(windows) if capped else 0, window_keeps=windows[0] - 1 if capped else None,
        memory_growth=growth, memory_tokens=memory_tokens, memory_increase=memory_increase,
        working_estimate_bytes=last.working_estimate_bytes, memory_superlinear=growth is not None and growth > 1.25,
        decode_s=(d0, d1), decode_trend=decode_trend,
    )


__all__ = ["FILLER", "Fit", "Sweep", "SweepFindings", "SweepPoint", "context_sweep", "fit_growth", "measure_point",
           "prompt_of_length", "sweep_findings", "sweep_lengths", "working_bytes"]
