"""What prefill and decode cost, measured on the very passes `generation.Generation` runs.

    timeline        one generation, step by step: wall time of every pass, tokens it processed, the token
                    it produced, the KV cache's bytes after it (read from the DynamicCache tensors) and the
                    headline numbers TTFT, TPOT (mean, p50, p90), tokens/s, total, peak memory
    compare_cache   the same generation with use_cache=False: same seed, identical tokens, every step
                    re-running the whole sequence
    context_sweep   prompts of growing length: prefill time (split into attention scores, projections, MLP
                    by forward hooks), decode time per token, KV bytes, peak memory, fitted growth
    batch_throughput  a few prompts decoded together (left padding + attention mask) vs one at a time

Times are wall-clock `time.perf_counter()` (CUDA synchronized). Memory is the process's resident set
(RSS, sampled by a thread every few milliseconds) on CPU and `torch.cuda.max_memory_allocated` on a GPU.
Everything returned is a dataclass with `to_dict()`: plain JSON data, which the figures and the API share.
"""

from __future__ import annotations

import inspect
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .deadline import Deadline
from .errors import InputError
from .generation import Generation, new_cache, pick_seed, prompt_ids
from .limits import (
    MAX_BATCH_NEW_TOKENS,
    MAX_BATCH_PROMPT_TOKENS,
    MAX_BATCH_PROMPTS,
    MAX_RECOMPUTE_TOKENS,
    MAX_SWEEP_POINTS,
    MAX_SWEEP_TOKENS,
    MAX_SWEEP_WORKING_BYTES,
    SWEEP_DECODE_STEPS,
    SWEEP_LENGTHS,
)
from .sampling import SamplingParams

# Plain English, repeated to build prompts of an exact length for the sweep (content does not change the
# cost of a pass: every token goes through the same matrices).
FILLER = (
    "The river runs past the old mill and under the stone bridge, where children stop to watch the boats. "
    "In spring the water is high and fast; by late summer it is slow and clear enough to see the fish. "
    "Farmers along the valley have used it for centuries to water their fields and to turn their wheels, "
    "and the town grew up around the place where the road crosses it. "
)


def _sync(device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


# ---------------------------------------------------------------------------------------------------
# Memory


def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc only; elsewhere nothing happens)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak resident memory (VmHWM; Linux >= 4.0). False where
    that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    """The kernel's peak resident memory of this process since the last reset (VmHWM), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory while the block runs.

    GPU: `torch.cuda.max_memory_allocated` (tensors only), after resetting the peak. CPU: the process's peak
    resident set (RSS: weights, Python, every tensor), read from the kernel's high-water mark (VmHWM) after
    resetting it, so nothing polls while the model runs. Where the kernel offers no reset, a thread samples
    the RSS every `interval` seconds instead (a shorter spike can be missed: a lower bound).
    trim=True first hands memory freed by earlier passes back to the system (glibc `malloc_trim`): otherwise a
    pass reuses it and its increase reads as almost nothing. The sweep trims; a timeline does not, as the
    pages handed back must be faulted in again by the next pass, which would slow what it times.
    """

    def __init__(self, device, interval: float = 0.003, trim: bool = False):
        self.device = torch.device(device)
        self.interval = interval
        self.trim = trim
        self.kind = "cuda_allocated" if self.device.type == "cuda" else "rss"
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_peak = False

    @staticmethod
    def rss() -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self.rss())

    def __enter__(self) -> "PeakMemory":
        if self.kind == "cuda_allocated":
            _sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = self.peak_bytes = torch.cuda.memory_allocated(self.device)
            return self
        if self.trim:
            _malloc_trim()
        self._kernel_peak = _reset_peak_rss() and _peak_rss() is not None
        self.baseline_bytes = self.peak_bytes = self.rss()
        if not self._kernel_peak:
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda_allocated":
            _sync(self.device)
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        kernel = _peak_rss() if self._kernel_peak else None
        self.peak_bytes = max(self.peak_bytes, self.rss(), kernel or 0)

    @property
    def method(self) -> str:
        if self.kind == "cuda_allocated":
            return "torch.cuda.max_memory_allocated"
        return "kernel peak RSS (VmHWM)" if self._kernel_peak else f"RSS sampled every {self.interval * 1e3:g} ms"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "method": self.method, "baseline_bytes": self.baseline_bytes,
                "peak_bytes": self.peak_bytes, "increase_bytes": max(0, self.peak_bytes - self.baseline_bytes),
                "trimmed": self.trim}


def weights_bytes(session) -> int:
    """Bytes of the model's parameters (tied embeddings counted once)."""
    def compute() -> int:
        seen, total = set(), 0
        for p in session.model.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
        return total

    return session.analysis("prefill_weights_bytes", (), compute)


# ---------------------------------------------------------------------------------------------------
# The KV cache: what the formula predicts, what the tensors hold


def _text_config(config):
    return getattr(config, "text_config", None) or config


@dataclass
class KVShape:
    """The numbers of the formula 2 x layers x KV heads x head dim x bytes per element x tokens.

    Layers with sliding-window attention (Gemma 3: 5 of every 6) keep only their last `window - 1` tokens
    (transformers' DynamicSlidingWindowLayer), so their share stops growing there.
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    bytes_per_element: int
    dtype: str
    layer_windows: list[int | None]  # None: the layer keeps every token

    @property
    def bytes_per_token_layer(self) -> int:  # K and V of one token in one layer
        return 2 * self.num_kv_heads * self.head_dim * self.bytes_per_element

    @property
    def bytes_per_token(self) -> int:  # every layer, while no sliding window is full
        return self.num_layers * self.bytes_per_token_layer

    @property
    def mha_bytes_per_token(self) -> int:  # the same model with one KV head per query head
        return 2 * self.num_layers * self.num_heads * self.head_dim * self.bytes_per_element

    def layer_tokens(self, tokens: int) -> list[int]:
        return [tokens if w is None else min(tokens, w - 1) for w in self.layer_windows]

    def layer_bytes(self, tokens: int) -> list[int]:
        return [t * self.bytes_per_token_layer for t in self.layer_tokens(tokens)]

    def bytes_for(self, tokens: int) -> int:
        return sum(self.layer_bytes(tokens))

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_per_token": self.bytes_per_token, "bytes_per_token_layer": self.bytes_per_token_layer,
                "mha_bytes_per_token": self.mha_bytes_per_token,
                "gqa_factor": self.num_heads / self.num_kv_heads}


def kv_shape(session) -> KVShape:
    """The formula's numbers, from the model's config and the dtype it runs in."""
    facts = session.facts
    config = _text_config(session.model.config)
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or ["full_attention"] * facts.num_layers
    windows = [window if (t == "sliding_attention" and window) else None for t in types][: facts.num_layers]
    element = torch.empty((), dtype=session.dtype).element_size()
    return KVShape(facts.num_layers, facts.num_heads, facts.num_kv_heads, facts.head_dim, element,
                   str(session.dtype).removeprefix("torch."), windows)


def cache_layer_bytes(cache) -> list[int]:
    """Bytes held by each layer's key and value tensors in a DynamicCache, read from the tensors."""
    if cache is None:
        return []
    sizes = []
    for layer in getattr(cache, "layers", []):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or not getattr(layer, "is_initialized", True):
            sizes.append(0)
            continue
        sizes.append(keys.numel() * keys.element_size() + values.numel() * values.element_size())
    return sizes


# ---------------------------------------------------------------------------------------------------
# One generation, measured


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
    memory: dict
    weights_bytes: int

    @property
    def kv_tokens(self) -> int:
        return self.steps[-1].cache_len if self.steps else 0

    def kv_matches(self) -> bool:
        """Every step's measured bytes equal the formula for the tokens then in the cache."""
        return all(s.cache_bytes == self.kv.bytes_for(s.cache_len) for s in self.steps)

    def to_dict(self) -> dict:
        tokens = self.kv_tokens
        return {
            "model": self.model, "device": self.device, "prompt": self.prompt, "chat": self.chat,
            "use_cache": self.use_cache, "seed": self.seed, "text": self.text, "token_ids": self.token_ids,
            "stop_reason": self.stop_reason,
            "steps": [asdict(s) for s in self.steps],
            "metrics": asdict(self.metrics),
            "kv": {**self.kv.to_dict(), "tokens": tokens, "bytes": sum(self.layer_bytes),
                   "formula_bytes": self.kv.bytes_for(tokens) if self.use_cache else 0,
                   "layer_bytes": self.layer_bytes,
                   "layer_formula_bytes": self.kv.layer_bytes(tokens) if self.use_cache else [],
                   "mha_bytes": self.kv.bytes_for(tokens) * self.kv.num_heads // self.kv.num_kv_heads
                   if self.use_cache else 0,
                   "matches": self.kv_matches()},
            "memory": {**self.memory, "weights_bytes": self.weights_bytes},
        }


def check_recompute(prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse a cache-off run whose passes would process more tokens in all than the cap."""
    total = max_new_tokens * prompt_tokens + max_new_tokens * (max_new_tokens - 1) // 2
    if total > MAX_RECOMPUTE_TOKENS:
        raise InputError(
            f"Without the KV cache every step re-runs the whole sequence: {prompt_tokens:,} prompt tokens and "
            f"{max_new_tokens} new tokens make {total:,} tokens in all; the limit is {MAX_RECOMPUTE_TOKENS:,}. "
            "Use fewer new tokens or a shorter prompt."
        )


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


# ---------------------------------------------------------------------------------------------------
# Where a prefill's time goes: forward hooks on the layers


class PassProfiler:
    """Wall time inside each decoder layer's attention and MLP modules, with forward hooks on this model.

    attention core = the attention module minus its Linear projections: QKᵀ, mask, softmax, x V (plus
    RoPE and reshapes). It is the part whose work grows with n² in a prefill. Only passes on the thread that
    opened the profiler are counted; the hooks are removed on exit.
    """

    def __init__(self, model, device):
        self.model = model
        self.device = device
        self.thread = threading.get_ident()
        self.totals = {"attention": 0.0, "projections": 0.0, "mlp": 0.0}
        self._starts: dict[int, float] = {}
        self._handles = []

    def _watch(self, module, bucket: str) -> None:
        def before(mod, args):
            if threading.get_ident() == self.thread:
                _sync(self.device)
                self._starts[id(mod)] = time.perf_counter()

        def after(mod, args, output):
            start = self._starts.pop(id(mod), None)
            if start is not None:
                _sync(self.device)
                self.totals[bucket] += time.perf_counter() - start

        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def layers(self):
        return [m for m in self.model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]

    def __enter__(self) -> "PassProfiler":
        for layer in self.layers():
            self._watch(layer.self_attn, "attention")
            self._watch(layer.mlp, "mlp")
            for child in layer.self_attn.children():
                if isinstance(child, torch.nn.Linear):
                    self._watch(child, "projections")
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self, pass_s: float) -> dict:
        """This pass's split (then reset): attention core, projections, MLP, and the rest (embeddings,
        norms, the LM head, the mask)."""
        t = self.totals
        split = {"attention_core_s": max(0.0, t["attention"] - t["projections"]), "projections_s": t["projections"],
                 "mlp_s": t["mlp"]}
        split["other_s"] = max(0.0, pass_s - sum(split.values()))
        self.totals = dict.fromkeys(t, 0.0)
        return split


def linear_flops_per_token(session) -> tuple[int, int]:
    """(FLOPs per token in the decoder layers' Linear modules, FLOPs of the LM head for one position):
    2 x in x out per Linear, read from the weights."""
    def compute() -> tuple[int, int]:
        layer_macs = 0
        for layer in PassProfiler(session.model, session.device).layers():
            layer_macs += sum(m.in_features * m.out_features for m in layer.modules() if isinstance(m, torch.nn.Linear))
        head = session.model.get_output_embeddings()
        head_macs = head.in_features * head.out_features if isinstance(head, torch.nn.Linear) else 0
        return 2 * layer_macs, 2 * head_macs

    return session.analysis("prefill_linear_flops", (), compute)


def prefill_flops(session, n: int) -> dict:
    """FLOPs of a prefill of n tokens. Linear work grows with n; the attention scores QKᵀ and the weighted
    sum x V are 2 x heads x head_dim x n² each per layer: eager attention computes the whole n x n square
    and masks the upper half (only the last position goes through the LM head)."""
    f = session.facts
    per_token, head = linear_flops_per_token(session)
    attention = 4 * f.num_layers * f.num_heads * f.head_dim * n * n
    return {"linear": per_token * n + head, "attention": attention}


# ---------------------------------------------------------------------------------------------------
# Context-length sweep


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
            raise InputError("The longest sweep length must be a whole number of tokens.") from None
        lengths = [n for n in SWEEP_LENGTHS if n <= max_tokens] or [max_tokens]
        if max_tokens not in lengths:
            lengths.append(max_tokens)
    try:
        lengths = sorted({int(n) for n in lengths})
    except (TypeError, ValueError):
        raise InputError("Sweep lengths must be whole numbers of tokens.") from None
    if not lengths:
        raise InputError("Give at least one prompt length for the sweep.")
    if len(lengths) > MAX_SWEEP_POINTS:
        raise InputError(f"A sweep measures at most {MAX_SWEEP_POINTS} lengths; got {len(lengths)}.")
    special = len(session.tokenizer("", add_special_tokens=True).input_ids)
    low = max(8, special + 2)
    if lengths[0] < low:
        raise InputError(f"Sweep lengths must be at least {low} tokens; got {lengths[0]}.")
    longest = lengths[-1]
    context = session.facts.context_length or 0
    if context and longest + decode_steps + 1 > context:
        raise InputError(f"A {longest:,}-token prompt plus {decode_steps + 1} new tokens is beyond this model's "
                         f"context length of {context:,} tokens; choose a shorter longest length.")
    if longest > MAX_SWEEP_TOKENS:
        raise InputError(f"The sweep goes up to {MAX_SWEEP_TOKENS:,} tokens on this server; {longest:,} is beyond "
                         "that cap.")
    need = working_bytes(session, longest)
    if need > MAX_SWEEP_WORKING_BYTES:
        raise InputError(f"A {longest:,}-token prefill would need about {need / 1e9:.1f} GB of working memory with "
                         f"this model; the memory cap is {MAX_SWEEP_WORKING_BYTES / 1e9:.1f} GB. Choose a shorter "
                         "longest length.")
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
        with session.lock, PeakMemory(session.device, trim=True) as memory, PassProfiler(session.model, session.device) as prof:
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
        raise InputError("decode_steps must be between 1 and 32.")
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
# Throughput: a batch of prompts together vs one at a time


@dataclass
class BatchRun:
    """Greedy decoding of some prompts in one batch: a pass per step for all rows."""

    batch_size: int
    new_tokens: int
    prefill_s: float
    decode_s: list[float]  # each decode pass
    total_s: float
    token_ids: list[list[int]]  # per prompt, generated tokens only

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size * self.new_tokens / self.total_s


@dataclass
class BatchComparison:
    prompts: list[str]
    prompt_tokens: list[int]
    new_tokens: int
    batched: BatchRun
    single: list[BatchRun]  # one per prompt
    identical: bool  # each row of the batch equals that prompt run alone

    @property
    def single_total_s(self) -> float:
        return sum(r.total_s for r in self.single)

    def to_dict(self) -> dict:
        tokens = len(self.prompts) * self.new_tokens
        return {
            "prompts": self.prompts, "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
            "batched": {**asdict(self.batched), "tokens_per_s": self.batched.tokens_per_s},
            "single": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in self.single],
            "single_total_s": self.single_total_s, "single_tokens_per_s": tokens / self.single_total_s,
            "speedup": self.single_total_s / self.batched.total_s, "identical": self.identical,
        }


def pad_id(session) -> int:
    tokenizer = session.tokenizer
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _last_only(model) -> dict:
    """Ask for the last position's logits only, where the model supports it (a [B, n, V] tensor is large)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def batched_greedy(session, rows: Sequence[Sequence[int]], new_tokens: int) -> BatchRun:
    """Greedy decoding of every row at once: left-padded prefill with an attention mask (so padding is never
    attended to and every row's last position is its real last token), then one pass per step for all rows.
    EOS is blocked so every row generates exactly new_tokens (as transformers' min_new_tokens does)."""
    model, device = session.model, session.device
    width = max(len(r) for r in rows)
    pad = pad_id(session)
    eos = [e for e in (session.model.generation_config.eos_token_id, session.tokenizer.eos_token_id) if e is not None]
    eos = sorted({int(x) for e in eos for x in (e if isinstance(e, (list, tuple)) else [e])})
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)  # [B, n]
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)  # [B, n]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, n]: each row counts from its first real token
    cache = new_cache(session)
    out_tokens, decode_s = [], []

    def next_tokens(logits):  # [B, V] -> [B]
        logits = logits.float()
        if eos:
            logits[:, eos] = -math.inf
        return logits.argmax(-1)

    with session.lock, torch.inference_mode():
        started = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, **_last_only(model)).logits[:, -1]  # [B, V]
        token = next_tokens(logits)  # [B]
        _sync(device)
        prefill_s = time.perf_counter() - started
        out_tokens.append(token)
        for _ in range(new_tokens - 1):
            step = time.perf_counter()
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)  # [B, n + t]
            positions = positions[:, -1:] + 1  # [B, 1]
            logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=True).logits[:, -1]  # [B, V]
            token = next_tokens(logits)
            _sync(device)
            decode_s.append(time.perf_counter() - step)
            out_tokens.append(token)
        total = time.perf_counter() - started
    generated = torch.stack(out_tokens, dim=1).tolist()  # [B, new_tokens]
    return BatchRun(len(rows), new_tokens, prefill_s, decode_s, total, generated)


def batch_throughput(session, prompts: Sequence[str], new_tokens: int = 16, chat: bool = True) -> BatchComparison:
    """The same greedy decoding of `prompts`, once as one batch and once one prompt at a time."""
    prompts = [p for p in (prompts or []) if p and p.strip()]
    if not prompts:
        raise InputError("Give at least one prompt (one per line).")
    if len(prompts) > MAX_BATCH_PROMPTS:
        raise InputError(f"At most {MAX_BATCH_PROMPTS} prompts run in one batch; got {len(prompts)}.")
    try:
        new_tokens = int(new_tokens)
    except (TypeError, ValueError):
        raise InputError("new tokens must be a whole number.") from None
    if not 1 <= new_tokens <= MAX_BATCH_NEW_TOKENS:
        raise InputError(f"new tokens must be between 1 and {MAX_BATCH_NEW_TOKENS}; got {new_tokens}.")
    rows = [prompt_ids(session, p, chat) for p in prompts]
    for i, r in enumerate(rows):
        if len(r) > MAX_BATCH_PROMPT_TOKENS:
            raise InputError(f"Prompt {i + 1} is {len(r):,} tokens; batch prompts may have at most "
                             f"{MAX_BATCH_PROMPT_TOKENS} tokens each.")
    single = [batched_greedy(session, [r], new_tokens) for r in rows]
    batched = batched_greedy(session, rows, new_tokens)
    identical = all(b == s.token_ids[0] for b, s in zip(batched.token_ids, single))
    return BatchComparison(list(prompts), [len(r) for r in rows], new_tokens, batched, single, identical)


__all__ = [
    "BatchComparison", "CacheComparison", "KVShape", "PassProfiler", "PeakMemory", "Sweep", "SweepPoint", "Timeline",
    "batch_throughput", "batched_greedy", "cache_layer_bytes", "compare_cache", "context_sweep", "kv_shape",
    "prefill_flops", "sweep_lengths", "timeline",
]
