"""One generation, timed pass by pass; and the same generation with the KV cache on and off.

    timeline        the passes `generation.Generation` runs (the Sampling tab's run): wall time of every pass,
                    the tokens it processed, the token it produced, the KV cache's bytes after it (read from the
                    cache tensors), and the headline numbers TTFT, TPOT (mean, p50, p90), tokens/s, total, peak
                    memory
    compare_cache   the same generation with use_cache=False: same seed, identical tokens, every step re-running
                    the whole sequence

Times are wall-clock `time.perf_counter()` (CUDA synchronized by `Generation`). Everything returned is a
dataclass; `to_dict()` gives the plain JSON data the API returns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

from .deadline import Deadline
from .errors import InputError
from .generation import Generation, pick_seed, prompt_ids
from .limits import MAX_RECOMPUTE_TOKENS
from .memory import PeakMemory, weights_bytes
from .model.kv import KVShape, cache_layer_bytes, kv_shape
from .sampling import SamplingParams


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


@dataclass
class StepTiming:
    """One forward pass of a generation and the token it produced."""

    index: int
    phase: str  # "prefill" | "decode" | "recompute"
    tokens_in_pass: int
    cache_len: int  # tokens in the KV cache after the pass (0 without a cache)
    start_s: float  # since the run started
    forward_s: float
    sampling_s: float
    step_s: float
    token_id: int
    piece: str
    cache_bytes: int  # measured from the cache tensors after the pass


@dataclass
class Metrics:
    """The headline numbers. TTFT covers prefill + the first draw; TPOT is the mean of the later steps, so
    ttft_s + tpot_mean_s x (new_tokens - 1) = total_s."""

    new_tokens: int
    prompt_tokens: int
    ttft_s: float
    prefill_s: float
    first_draw_s: float
    tpot_mean_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    total_s: float
    tokens_per_s: float  # new tokens / total
    decode_tokens_per_s: float | None  # 1 / TPOT: the speed once the first token is out


@dataclass
class Timeline:
    model: str
    device: str
    prompt: str
    chat: bool
    use_cache: bool
    seed: int
    text: str
    token_ids: list[int]
    stop_reason: str | None
    steps: list[StepTiming]
    metrics: Metrics
    kv: KVShape
    layer_bytes: list[int]  # per layer after the last step, measured
    memory: dict  # PeakMemory.to_dict() of the run
    weights_bytes: int

    @property
    def kv_tokens(self) -> int:
        return self.steps[-1].cache_len if self.steps else 0

    @property
    def kv_bytes(self) -> int:
        """Bytes the cache tensors held after the last pass (0 without a cache)."""
        return sum(self.layer_bytes)

    @property
    def kv_formula_bytes(self) -> int:
        return self.kv.bytes_for(self.kv_tokens) if self.use_cache else 0

    @property
    def layer_formula_bytes(self) -> list[int]:
        return self.kv.layer_bytes(self.kv_tokens) if self.use_cache else []

    @property
    def mha_bytes(self) -> int:
        """What the cache would hold with one KV head per query head (no grouped-query attention)."""
        return self.kv_formula_bytes * self.kv.num_heads // self.kv.num_kv_heads

    def kv_matches(self) -> bool:
        """Every step's measured bytes equal the formula for the tokens then in the cache."""
        return all(s.cache_bytes == self.kv.bytes_for(s.cache_len) for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "device": self.device, "prompt": self.prompt, "chat": self.chat,
            "use_cache": self.use_cache, "seed": self.seed, "text": self.text, "token_ids": self.token_ids,
            "stop_reason": self.stop_reason,
            "steps": [asdict(s) for s in self.steps],
            "metrics": asdict(self.metrics),
            "kv": {**self.kv.to_dict(), "tokens": self.kv_tokens, "bytes": self.kv_bytes,
                   "formula_bytes": self.kv_formula_bytes, "layer_bytes": self.layer_bytes,
                   "layer_formula_bytes": self.layer_formula_bytes, "mha_bytes": self.mha_bytes,
                   "matches": self.kv_matches()},
            "memory": {**self.memory, "weights_bytes": self.weights_bytes},
        }


def check_recompute(prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse a cache-off run whose passes would process more tokens in all than the cap."""
    total = max_new_tokens * prompt_tokens + max_new_tokens * (max_new_tokens - 1) // 2
    if total > MAX_RECOMPUTE_TOKENS:
        raise InputError("timing.recompute_too_many",
                         "Without the KV cache every step re-runs the whole sequence: {prompt:,} prompt tokens and "
                         "{new} new tokens make {total:,} tokens in all; the limit is {limit:,}. Use fewer new "
                         "tokens or a shorter prompt.", prompt=prompt_tokens, new=max_new_tokens, total=total,
                         limit=MAX_RECOMPUTE_TOKENS)


def metrics_of(trace) -> Metrics:
    """Headline numbers of a GenerationTrace, from its own step records."""
    steps = trace.steps
    first = steps[0]
    later = [s.step_s for s in steps[1:]]
    tpot = trace.tpot_s if later else None
    return Metrics(
        new_tokens=len(steps), prompt_tokens=len(trace.prompt_ids), ttft_s=trace.ttft_s, prefill_s=first.forward_s,
        first_draw_s=first.sampling_s, tpot_mean_s=tpot,
        tpot_p50_s=_percentile(later, 50) if later else None, tpot_p90_s=_percentile(later, 90) if later else None,
        total_s=trace.total_s, tokens_per_s=len(steps) / trace.total_s if trace.total_s else 0.0,
        decode_tokens_per_s=1.0 / tpot if tpot else None,
    )


def timeline(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True, stop=(),
             use_cache: bool = True, *, min_new_tokens: int = 0, deadline: Deadline | None = None) -> Timeline:
    """Run one generation (`generation.Generation`, the Sampling tab's run) and time every pass.

    Between steps the run's DynamicCache is read (`Generation.cache`): the bytes its key/value tensors hold,
    per layer. The session lock is held for the whole run so no other request's pass lands between two of
    ours and disturbs the timings.
    """
    run = Generation(session, prompt, params, max_new_tokens, chat, stop, use_cache, min_new_tokens=min_new_tokens,
                     deadline=deadline)
    if not use_cache:
        check_recompute(len(run.prompt_ids), run.trace.max_new_tokens)
    steps: list[StepTiming] = []
    layers: list[int] = []
    with session.lock, PeakMemory(session.device) as memory:
        for record in run:
            layers = cache_layer_bytes(run.cache) if use_cache else []
            end = run.trace.total_s
            steps.append(StepTiming(
                index=record.index, phase=record.phase, tokens_in_pass=record.tokens_in_pass,
                cache_len=record.cache_len, start_s=end - record.step_s, forward_s=record.forward_s,
                sampling_s=record.sampling_s, step_s=record.step_s, token_id=record.token_id, piece=record.piece,
                cache_bytes=sum(layers),
            ))
    trace = run.trace
    return Timeline(
        model=session.model_id, device=str(session.device), prompt=prompt, chat=bool(chat), use_cache=bool(use_cache),
        seed=trace.seed, text=trace.text, token_ids=list(trace.token_ids), stop_reason=trace.stop_reason, steps=steps,
        metrics=metrics_of(trace), kv=kv_shape(session), layer_bytes=layers, memory=memory.to_dict(),
        weights_bytes=weights_bytes(session),
    )


# ---------------------------------------------------------------------------------------------------
# Cache on vs off


@dataclass
class CacheComparison:
    on: Timeline
    off: Timeline
    identical: bool  # the same tokens with and without the cache
    first_difference: int | None  # step where they part, if they do
    speedup_total: float  # off.total / on.total
    speedup_last_step: float  # the last step's pass without / with the cache

    def to_dict(self) -> dict:
        return {"on": self.on.to_dict(), "off": self.off.to_dict(), "identical": self.identical,
                "first_difference": self.first_difference, "speedup_total": self.speedup_total,
                "speedup_last_step": self.speedup_last_step}


def compare_cache(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True,
                  stop=(), *, min_new_tokens: int = 0) -> CacheComparison:
    """The same generation twice, with and without the KV cache, with the same seed (so the same uniform
    numbers). The cached logits equal the recomputed ones within float error, so the tokens agree. Both runs
    share one time limit; a run it cut short is compared on the tokens both produced."""
    run_ids = prompt_ids(session, prompt, chat)
    check_recompute(len(run_ids), int(max_new_tokens))
    params = replace(params, seed=pick_seed(params))
    deadline = Deadline()
    on = timeline(session, prompt, params, max_new_tokens, chat, stop, True, min_new_tokens=min_new_tokens,
                  deadline=deadline)
    off = timeline(session, prompt, params, max_new_tokens, chat, stop, False, min_new_tokens=min_new_tokens,
                   deadline=deadline)
    first = next((i for i, (a, b) in enumerate(zip(on.token_ids, off.token_ids)) if a != b), None)
    cut = "time_limit" in (on.stop_reason, off.stop_reason)
    if first is None and len(on.token_ids) != len(off.token_ids) and not cut:
        first = min(len(on.token_ids), len(off.token_ids))
    last = min(len(on.steps), len(off.steps)) - 1
    return CacheComparison(
        on=on, off=off, identical=first is None, first_difference=first,
        speedup_total=off.metrics.total_s / on.metrics.total_s,
        speedup_last_step=off.steps[last].forward_s / on.steps[last].forward_s,
    )


__all__ = ["CacheComparison", "Metrics", "StepTiming", "Timeline", "check_recompute", "compare_cache", "metrics_of",
           "timeline"]
