"""A burst of requests served three ways: transformers' continuous-batching engine, a static batch, one at a time.

    continuous   `model.init_continuous_batching(...)` -> ContinuousBatchingManager, transformers' own serving
                 engine: a paged KV cache (blocks of `page_size` tokens handed to each request as it grows),
                 a scheduler that fills each forward pass with decode tokens first, then prefill tokens of
                 waiting requests up to `max_batch_tokens` (splitting a long prompt over several passes), and
                 requests that leave the batch the step they finish
    static       the whole burst as one left-padded batch, decoded until its longest request is done: every
                 request waits for the longest, and the KV cache holds every row at the batch's full width
    sequential   one request after another, each alone

All three decode greedily on the same prompts with the same token budgets and stop at EOS, so they produce the
same texts (checked: `identical`). Times are wall clock (`time.perf_counter`) and process CPU time, measured in
this run; throughput is generated tokens / wall time from the burst's arrival to its last answer.

The engine runs on an sdpa twin of the session's model (`model.twin`: the same weight tensors, no copy) and
always with an explicit `ContinuousBatchingConfig(num_blocks=..., max_batch_tokens=...)` (its default sizes the
cache from most of the free memory). What its scheduler does is observed from outside: its `schedule_batch`
and the processor's `update_batch` are wrapped on this run's instances to record, per step, which requests wait,
which are prefilled (and how many tokens), which decode, and how many KV blocks are in use.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from .errors import InputError
from .generation import prompt_ids
from .limits import (
    MAX_BURST_NEW_TOKENS,
    MAX_BURST_PROMPT_TOKENS,
    MAX_BURST_REQUESTS,
    MAX_SERVING_BATCH_TOKENS,
    MAX_SERVING_BLOCKS,
    SERVING_PAGE_TOKENS,
)
from .model import batch_cache
from .model.kv import kv_shape
from .model.run import last_logits_only, new_cache
from .model.twin import sdpa_twin
from .model.vocab import eos_ids, pad_id

MODES = ("continuous", "static", "sequential")


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass
class RequestTiming:
    """One request of the burst as one mode served it. Times in seconds from the burst's arrival."""

    index: int
    prompt_tokens: int
    max_new_tokens: int
    token_ids: list[int]
    text: str
    start_s: float  # its first pass began (before: waiting)
    first_token_s: float  # its first new token was out (prefill done)
    end_s: float  # its last token was out
    returned_s: float  # its answer was handed back (static: when the whole batch ended)

    @property
    def ttft_s(self) -> float:
        return self.first_token_s

    @property
    def tpot_s(self) -> float | None:
        n = len(self.token_ids)
        return (self.end_s - self.first_token_s) / (n - 1) if n > 1 else None

    @property
    def latency_s(self) -> float:
        return self.returned_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "latency_s": self.latency_s}


@dataclass
class EngineStep:
    """One forward pass of a mode: what it carried and when."""

    index: int
    start_s: float
    end_s: float
    prefill: list[tuple[int, int]]  # (request, prompt tokens in this pass)
    decode: list[int]  # requests that fed one token
    waiting: list[int]  # requests that had arrived and were not in this pass
    finished: list[int]  # requests already done (static: rows still carried by the batch)
    kv_bytes: int  # KV cache in use after the pass: blocks in use x block bytes (paged), or the tensors' bytes
    blocks_used: int = 0  # paged only

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.prefill) + len(self.decode)

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens": self.tokens}


@dataclass
class ServedBurst:
    """The burst as one mode served it."""

    mode: str
    requests: list[RequestTiming]
    steps: list[EngineStep]
    wall_s: float
    cpu_s: float
    kv_peak_bytes: int  # the most KV-cache bytes held at once
    kv_reserved_bytes: int  # what the mode set aside for the KV cache (paged: the whole block pool)

    @property
    def new_tokens(self) -> int:
        return sum(len(r.token_ids) for r in self.requests)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s else 0.0

    def percentile(self, what: str, q: float) -> float:
        values = [getattr(r, what) for r in self.requests if getattr(r, what) is not None]
        return float(np.percentile(values, q)) if values else 0.0

    def mean(self, what: str) -> float:
        values = [getattr(r, what) for r in self.requests if getattr(r, what) is not None]
        return float(np.mean(values)) if values else 0.0

    def to_dict(self) -> dict:
        return {"mode": self.mode, "requests": [r.to_dict() for r in self.requests],
                "steps": [s.to_dict() for s in self.steps], "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "new_tokens": self.new_tokens, "tokens_per_s": self.tokens_per_s,
                "ttft_mean_s": self.mean("ttft_s"), "latency_mean_s": self.mean("latency_s"),
                "latency_p95_s": self.percentile("latency_s", 95),
                "kv_peak_bytes": self.kv_peak_bytes, "kv_reserved_bytes": self.kv_reserved_bytes}


@dataclass
class BurstComparison:
    model: str
    prompts: list[str]
    prompt_tokens: list[int]
    max_new_tokens: list[int]
    num_blocks: int  # KV blocks the engine could hand out
    page_tokens: int  # tokens per block
    block_bytes: int  # bytes of one block (every layer's keys and values for page_tokens tokens)
    max_batch_tokens: int
    runs: dict[str, ServedBurst] = field(default_factory=dict)

    @property
    def continuous(self) -> ServedBurst:
        return self.runs["continuous"]

    def texts(self, mode: str) -> list[str]:
        return [r.text for r in self.runs[mode].requests]

    def identical(self, mode: str) -> bool:
        """The mode's answers are the engine's, token for token."""
        return [r.token_ids for r in self.runs[mode].requests] == [r.token_ids for r in self.continuous.requests]

    def speedup(self, mode: str) -> float:
        """The engine's throughput / this mode's."""
        return self.continuous.tokens_per_s / self.runs[mode].tokens_per_s

    def to_dict(self) -> dict:
        return {"model": self.model, "prompts": self.prompts, "prompt_tokens": self.prompt_tokens,
                "max_new_tokens": self.max_new_tokens, "num_blocks": self.num_blocks, "page_tokens": self.page_tokens,
                "block_bytes": self.block_bytes, "max_batch_tokens": self.max_batch_tokens,
                "runs": {m: r.to_dict() for m, r in self.runs.items()},
                "identical": {m: self.identical(m) for m in self.runs if m != "continuous"},
                "speedup": {m: self.speedup(m) for m in self.runs if m != "continuous"}}


# ---------------------------------------------------------------------------------------------------
# Checking the burst


def _whole(n) -> bool:
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) or (isinstance(n, float) and n.is_integer())


def check_burst(session, prompts: Sequence[str], max_new_tokens: Sequence[int], chat: bool,
                num_blocks: int, max_batch_tokens: int) -> list[list[int]]:
    """The prompts' token ids, after checking the burst against the caps (one clear sentence otherwise)."""
    if not prompts:
        raise InputError("continuous.no_prompt", "Give at least one prompt (one per line).")
    if len(prompts) > MAX_BURST_REQUESTS:
        raise InputError("continuous.too_many_requests", "At most {limit} requests in one burst; got {count}.",
                         limit=MAX_BURST_REQUESTS, count=len(prompts))
    if len(max_new_tokens) != len(prompts):
        raise InputError("continuous.one_budget_per_prompt", "Give one token budget per prompt.")
    for n in max_new_tokens:
        if not _whole(n) or not 1 <= n <= MAX_BURST_NEW_TOKENS:
            raise InputError("continuous.new_tokens_range",
                             "Each request's new tokens must be a whole number from 1 to {limit}.",
                             limit=MAX_BURST_NEW_TOKENS)
    if not _whole(num_blocks) or not 1 <= num_blocks <= MAX_SERVING_BLOCKS:
        raise InputError("continuous.blocks_range", "KV blocks must be a whole number from 1 to {limit}; got {value}.",
                         limit=MAX_SERVING_BLOCKS, value=num_blocks)
    if not _whole(max_batch_tokens) or not 16 <= max_batch_tokens <= MAX_SERVING_BATCH_TOKENS:
        raise InputError("continuous.pass_tokens_range",
                         "Tokens per pass must be a whole number from 16 to {limit}; got {value}.",
                         limit=MAX_SERVING_BATCH_TOKENS, value=max_batch_tokens)
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise InputError("continuous.empty_prompt", "Every request needs a prompt (text).")
    rows = [prompt_ids(session, p, chat) for p in prompts]
    for i, r in enumerate(rows):
        if len(r) > MAX_BURST_PROMPT_TOKENS:
            raise InputError("continuous.prompt_too_long",
                             "Prompt {n} is {tokens:,} tokens; the Serving view takes prompts of up to {limit} tokens.",
                             n=i + 1, tokens=len(r), limit=MAX_BURST_PROMPT_TOKENS)
    blocks_needed = max(-(-(len(r) + n) // SERVING_PAGE_TOKENS) for r, n in zip(rows, max_new_tokens))
    if blocks_needed > int(num_blocks):
        raise InputError("continuous.too_few_blocks",
                         "The longest request needs {needed} KV blocks of {page} tokens; give the engine at least that "
                         "many (got {blocks}).", needed=blocks_needed, page=SERVING_PAGE_TOKENS, blocks=num_blocks)
    return rows


# ---------------------------------------------------------------------------------------------------
# The engine: transformers' continuous batching, observed


class _Observer:
    """Records each step of a ContinuousBatchingManager by wrapping its scheduler's `schedule_batch` and its
    processor's `update_batch` on this run's instances (their code runs unchanged)."""

    def __init__(self, processor, index_of: dict[str, int], t0: float):
        self.steps: list[EngineStep] = []
        self.index_of, self.t0 = index_of, t0
        self.block_bytes = 0
        self._processor, self._scheduler = processor, processor.scheduler
        self._allocators = list(processor.cache.cache_allocators.values())
        schedule, update = self._scheduler.schedule_batch, processor.update_batch
        self._pending: EngineStep | None = None
        self._done: set[int] = set()

        def schedule_batch(*args, **kwargs):
            started = time.perf_counter()
            before = {rid: state.generated_len() for rid, state in self._scheduler.active_requests.items()}
            result = schedule(*args, **kwargs)
            scheduled = result[0] or []
            prefill, decode = [], []
            for future in scheduled:
                i = self.index_of[future.state.request_id]
                if before.get(future.state.request_id, 0) > 0:
                    decode.append(i)
                else:
                    prefill.append((i, int(future.query_length)))
            in_pass = {i for i, _ in prefill} | set(decode)
            waiting = [i for rid, i in self.index_of.items() if i not in in_pass and i not in self._done]
            self._pending = EngineStep(len(self.steps), started - self.t0, 0.0, prefill, decode, waiting,
                                       sorted(self._done), 0)
            return result

        def update_batch(*args, **kwargs):
            out = update(*args, **kwargs)
            step, self._pending = self._pending, None
            if step is not None:
                step.end_s = time.perf_counter() - self.t0
                step.blocks_used = self.blocks_used()
                step.kv_bytes = step.blocks_used * self.block_bytes
                self.steps.append(step)
                for rid, i in self.index_of.items():
                    if rid not in self._scheduler.active_requests and rid not in self._scheduler.waiting_requests \
                            and i not in step.waiting:
                        self._done.add(i)
            return out

        self._scheduler.schedule_batch = schedule_batch
        processor.update_batch = update_batch

    def blocks_used(self) -> int:
        """KV blocks held by requests now (a block shared by two requests' equal prefixes counts once)."""
        return sum(len({b for table in a.block_table.values() for b in table}) for a in self._allocators)


def _engine_config(num_blocks: int, max_batch_tokens: int):
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    # No prefix sharing: each request's blocks are its own, so blocks in use track the tokens held. No CUDA graphs.
    return ContinuousBatchingConfig(num_blocks=int(num_blocks), max_batch_tokens=int(max_batch_tokens),
                                    page_size=SERVING_PAGE_TOKENS, allow_block_sharing=False, use_cuda_graph=False,
                                    use_async_batching=False)


def _generation_config(session, max_new_tokens: int):
    from transformers import GenerationConfig

    eos = eos_ids(session)
    return GenerationConfig(do_sample=False, max_new_tokens=int(max_new_tokens), eos_token_id=eos or None,
                            pad_token_id=pad_id(session))


def serve_continuous(session, rows: Sequence[Sequence[int]], max_new_tokens: Sequence[int], num_blocks: int,
                     max_batch_tokens: int, timeout_s: float = 120.0) -> tuple[ServedBurst, dict]:
    """The burst through transformers' ContinuousBatchingManager (all requests added at once), observed step by
    step. Returns the run and the engine's sizes (blocks, block bytes)."""
    twin = sdpa_twin(session)
    manager = twin.init_continuous_batching(generation_config=_generation_config(session, max(max_new_tokens)),
                                            continuous_batching_config=_engine_config(num_blocks, max_batch_tokens))
    manager.warmup()  # makes the batch processor now (no CUDA graphs on CPU), so it can be observed before start
    processor = manager.batch_processor
    ids = [f"request {i}" for i in range(len(rows))]
    t0, c0 = time.perf_counter(), time.process_time()
    observer = _Observer(processor, {rid: i for i, rid in enumerate(ids)}, t0)
    allocator = next(iter(processor.cache.cache_allocators.values()))
    observer.block_bytes = allocator.bytes_per_block
    sizes = {"num_blocks": int(allocator.num_blocks), "block_bytes": int(allocator.bytes_per_block),
             "reserved_bytes": int(processor.cache.cache_tensor.numel() * processor.cache.cache_tensor.element_size()),
             "max_batch_tokens": int(processor.cache.max_batch_tokens)}
    results = {}
    manager.start()
    try:
        for rid, row, n in zip(ids, rows, max_new_tokens):
            manager.add_request(list(row), request_id=rid, max_new_tokens=int(n), record_timestamps=True)
        deadline = time.perf_counter() + timeout_s
        while len(results) < len(ids):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the engine did not finish the burst within {timeout_s:.0f} s")
            out = manager.get_result(timeout=1)
            if out is not None and out.is_finished():
                if out.error:
                    raise RuntimeError(f"the engine failed a request: {out.error}")
                results[out.request_id] = out
            elif out is None and not manager.is_running():
                raise RuntimeError("the engine stopped before finishing the burst")
    finally:
        manager.stop(block=True, timeout=10)
        manager.destroy()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    requests = []
    for i, (rid, row, n) in enumerate(zip(ids, rows, max_new_tokens)):
        out = results[rid]
        stamps = [t - t0 for t in (out.timestamps or [])]
        start = out.lifespan[0] - t0
        first = stamps[0] if stamps else out.lifespan[1] - t0
        end = stamps[-1] if stamps else out.lifespan[1] - t0
        tokens = list(out.generated_tokens)
        requests.append(RequestTiming(i, len(row), int(n), tokens, session.tokenizer.decode(tokens, skip_special_tokens=True),
                                      start, first, end, out.lifespan[1] - t0))
    peak = max((s.kv_bytes for s in observer.steps), default=0)
    return ServedBurst("continuous", requests, observer.steps, wall, cpu, peak, sizes["reserved_bytes"]), sizes


# ---------------------------------------------------------------------------------------------------
# The baselines: a static batch, and one request at a time (the same loop with one row)


def _static(session, twin, rows: Sequence[Sequence[int]], budgets: Sequence[int], t0: float, indices: Sequence[int],
            step_offset: int = 0) -> tuple[list[RequestTiming], list[EngineStep], int]:
    """`rows` as one left-padded batch on the twin, greedy, until every row has stopped (EOS or its budget); rows
    that stopped are carried along (their tokens ignored) until the longest is done. Times from t0."""
    eos = set(eos_ids(session))
    width = max(len(r) for r in rows)
    pad = pad_id(session)
    device = session.device
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)  # [B, n]
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)  # [B, n]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = new_cache(session)
    out_tokens: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    first, end = [0.0] * len(rows), [0.0] * len(rows)
    steps: list[EngineStep] = []
    start = time.perf_counter() - t0
    peak = 0
    with torch.inference_mode():
        step_start = time.perf_counter()
        logits = twin(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                      **last_logits_only(twin)).logits[:, -1]  # [B, V]
        while True:
            now = time.perf_counter() - t0
            token = logits.float().argmax(-1)  # [B]
            active = [i for i in range(len(rows)) if not done[i]]
            for i in active:
                out_tokens[i].append(int(token[i]))
                if len(out_tokens[i]) == 1:
                    first[i] = now
                end[i] = now
                done[i] = out_tokens[i][-1] in eos or len(out_tokens[i]) >= budgets[i]
            peak = max(peak, batch_cache.total_bytes(cache))
            prefilling = not steps  # the first pass is the prefill of every row; later ones decode one token each
            steps.append(EngineStep(
                step_offset + len(steps), step_start - t0, now,
                prefill=[(indices[i], len(rows[i])) for i in range(len(rows))] if prefilling else [],
                decode=[] if prefilling else [indices[i] for i in active],
                waiting=[], finished=[indices[i] for i in range(len(rows)) if i not in active],
                kv_bytes=batch_cache.total_bytes(cache)))
            if all(done):
                break
            step_start = time.perf_counter()
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)  # [B, n + t]
            positions = positions[:, -1:] + 1  # [B, 1]
            logits = twin(input_ids=token[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache,
                          use_cache=True).logits[:, -1]
    finished = time.perf_counter() - t0
    tokenizer = session.tokenizer
    requests = [RequestTiming(indices[i], len(rows[i]), int(budgets[i]), out_tokens[i],
                              tokenizer.decode(out_tokens[i], skip_special_tokens=True), start, first[i], end[i],
                              finished) for i in range(len(rows))]
    return requests, steps, peak


def serve_static(session, rows, max_new_tokens) -> ServedBurst:
    """The whole burst as one static batch: every answer is handed back when the longest is done."""
    twin = sdpa_twin(session)
    t0, c0 = time.perf_counter(), time.process_time()
    requests, steps, peak = _static(session, twin, rows, max_new_tokens, t0, list(range(len(rows))))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for s in steps:  # the requests were all there from the start: none waited for a place in the batch
        s.waiting = []
    reserved = len(rows) * (max(len(r) for r in rows) + max(max_new_tokens)) * kv_shape(session).bytes_per_token
    return ServedBurst("static", requests, steps, wall, cpu, peak, reserved)


def serve_sequential(session, rows, max_new_tokens) -> ServedBurst:
    """One request after another, each alone (a batch of one): the others wait their turn."""
    twin = sdpa_twin(session)
    t0, c0 = time.perf_counter(), time.process_time()
    requests, steps, peak = [], [], 0
    for i, (row, n) in enumerate(zip(rows, max_new_tokens)):
        done, own_steps, own_peak = _static(session, twin, [row], [n], t0, [i], step_offset=len(steps))
        for s in own_steps:
            s.waiting = list(range(i + 1, len(rows)))
            s.finished = list(range(i))
        requests += done
        steps += own_steps
        peak = max(peak, own_peak)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reserved = max(len(r) + n for r, n in zip(rows, max_new_tokens)) * kv_shape(session).bytes_per_token
    return ServedBurst("sequential", requests, steps, wall, cpu, peak, reserved)


def serve_burst(session, prompts: Sequence[str], max_new_tokens: Sequence[int], chat: bool = True,
                num_blocks: int = 64, max_batch_tokens: int = 256) -> BurstComparison:
    """The same burst served by the continuous-batching engine, as a static batch and one at a time, in this order,
    holding the session's lock (so no other model call shares the CPU meanwhile)."""
    rows = check_burst(session, prompts, list(max_new_tokens), chat, num_blocks, max_batch_tokens)
    max_new_tokens, num_blocks, max_batch_tokens = [int(n) for n in max_new_tokens], int(num_blocks), int(max_batch_tokens)
    with session.lock:
        continuous, sizes = serve_continuous(session, rows, max_new_tokens, num_blocks, max_batch_tokens)
        static = serve_static(session, rows, max_new_tokens)
        sequential = serve_sequential(session, rows, max_new_tokens)
    return BurstComparison(
        model=session.model_id, prompts=list(prompts), prompt_tokens=[len(r) for r in rows],
        max_new_tokens=[int(n) for n in max_new_tokens], num_blocks=sizes["num_blocks"],
        page_tokens=SERVING_PAGE_TOKENS, block_bytes=sizes["block_bytes"], max_batch_tokens=sizes["max_batch_tokens"],
        runs={"continuous": continuous, "static": static, "sequential": sequential},
    )


__all__ = ["BurstComparison", "EngineStep", "MODES", "RequestTiming", "ServedBurst", "check_burst", "serve_burst",
           "serve_continuous", "serve_sequential", "serve_static"]
