"""Serving a class: generations that arrive while the model is busy are decoded together.

A decode pass reads every weight once whatever the number of rows, so thirty students generating at once
need not wait thirty times as long as one. Each model session has one `Batcher`: a worker thread that runs
the passes of every generation request on that model (continuous batching, as vLLM and TGI do it):

    admit    between two steps, waiting requests join (within the caps of `limits`: rows, tokens per prefill
             pass, KV bytes of the batch); their prompts are prefilled together in one pass, left-padded
    decode   one pass per step for every row in the batch: each row's newest token, its own position ids,
             an attention mask that hides the padding on its left
    leave    a row that stopped leaves the batch at once (its cache row is dropped); nobody waits for the
             longest request

Each row is a `generation.Generation`: the worker hands it its row of the shared pass's logits and calls its
own `step()`, so the sampling pipeline, the seed's uniform numbers, min new tokens, stop sequences, the time
limit and the step records are the solo run's code, never a copy. Greedy rows give the solo tokens; a row's
logits may differ from a solo pass's in the last float bits (the matrix products see another batch shape),
which can flip a sampled draw that lands right on a boundary (measured: tests/test_serving.py,
bench/bench_serving.py).

Each run keeps its own timings (TTFT from the moment it was submitted, so waiting counts) and how many rows
each of its passes carried (`ServedTrace.pass_rows`): a user can be told that his run shared its passes.

The worker takes `session.lock` for each pass only, so other tabs' model calls run between two steps.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Iterator, Sequence

import torch

from .deadline import Deadline
from .generation import Generation, GenerationTrace, StepRecord
from .limits import MAX_BATCH_KV_BYTES, MAX_BATCH_ROWS, MAX_PASS_TOKENS, PREFIX_CACHE_BYTES
from .memory import PeakMemory, weights_bytes
from .model import batch_cache
from .model.kv import kv_shape
from .model.run import last_logits_only, new_cache, sync
from .model.vocab import pad_id
from .sampling import SamplingParams
from .timing import StepTiming, Timeline, metrics_of, timeline

_END = object()  # the end of a row's records
MIN_SHARED_PREFIX = 8  # tokens: a shorter common start is not worth an extra pass
# Each row's own step (pipeline, draw, record) runs in one of these threads: the torch work in them releases the
# GIL, so two rows' steps overlap on two cores while the model waits for all of them.
_steppers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="serving-step")


# ---------------------------------------------------------------------------------------------------
# A served run: the trace of a Generation, plus what it shared


@dataclass
class ServedTrace(GenerationTrace):
    """A GenerationTrace whose passes may have carried other requests' rows too."""

    queued_s: float = 0.0  # from submission to the start of its prefill pass
    cached_prefix_tokens: int = 0  # prompt tokens whose keys and values came from another request with the same start
    pass_rows: list[int] = field(default_factory=list)  # rows in the pass that produced each token (1 = alone)
    cache_bytes: list[int] = field(default_factory=list)  # this row's KV bytes after each pass (its own tokens)
    batch_kv_bytes: list[int] = field(default_factory=list)  # the whole batch's KV bytes after each pass (padded)
    layer_bytes: list[int] = field(default_factory=list)  # this row's KV bytes per layer after the last pass

    @classmethod
    def of(cls, trace: GenerationTrace) -> "ServedTrace":
        return cls(**{f.name: getattr(trace, f.name) for f in fields(GenerationTrace)})

    @property
    def shared_with_max(self) -> int:
        """The most other requests one of its passes carried."""
        return max(self.pass_rows, default=1) - 1

    @property
    def shared_with_mean(self) -> float:
        return sum(self.pass_rows) / len(self.pass_rows) - 1 if self.pass_rows else 0.0

    @property
    def shared_passes(self) -> int:
        return sum(1 for n in self.pass_rows if n > 1)

    def serving_dict(self) -> dict:
        return {"shared_with_max": self.shared_with_max, "shared_with_mean": self.shared_with_mean,
                "shared_passes": self.shared_passes, "passes": len(self.pass_rows), "pass_rows": self.pass_rows,
                "queued_s": self.queued_s, "cached_prefix_tokens": self.cached_prefix_tokens, "note": shared_note(self)}

    def to_dict(self, steps: bool = True) -> dict:
        return {**super().to_dict(steps), "serving": self.serving_dict()}


def shared_note(trace) -> str:
    """What the run shared, in words ("" when it ran alone or was not served)."""
    if not isinstance(trace, ServedTrace):
        return ""
    parts = []
    n = trace.shared_with_max
    if n > 0:
        parts.append(f"This run shared {trace.shared_passes} of its {len(trace.pass_rows)} forward passes with other "
                     f"requests: up to {n} other request{'s' if n != 1 else ''} in one pass "
                     f"({trace.shared_with_mean:.1f} on average). Its timings include their rows.")
    if trace.cached_prefix_tokens:
        parts.append(f"Its first {trace.cached_prefix_tokens} prompt tokens were not computed again: an earlier "
                     "request began the same way, and their keys and values were reused (prefix caching).")
    return " ".join(parts)


class ServedGeneration(Generation):
    """A Generation whose forward passes the session's Batcher runs, with other requests' rows.

    Iterate it as a Generation: `for record in run:` submits it and yields each StepRecord as the batch
    produces it; leaving the loop early takes the row out of the batch. `limit`: at most this many new tokens
    (the run then leaves without a stop reason, as `islice(Generation, limit)` would)."""

    def __init__(self, *args, limit: int | None = None, reuse_prefix: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.trace = ServedTrace.of(self.trace)
        self.limit = limit
        # False where the prefill itself is what is measured (the Prefill & decode tab's TTFT): the whole prompt
        # is computed, even when an earlier request began the same way.
        self.reuse_prefix = reuse_prefix
        self._given: tuple | None = None  # the pass's result for this row, set by the batcher before step()
        self._records: queue.Queue = queue.Queue()
        self._left = threading.Event()  # the consumer stopped listening
        self._submitted: float | None = None
        self._row_cache_bytes = 0

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.generated

    @property
    def reserve_tokens(self) -> int:
        """Tokens its cache may reach: what the batch's KV budget reserves for it."""
        return len(self.prompt_ids) + self.trace.max_new_tokens

    @property
    def finished(self) -> bool:
        return self.done or (self.limit is not None and len(self.trace.steps) >= self.limit) or self._left.is_set()

    def _forward(self):
        given, self._given = self._given, None
        if given is None:
            raise RuntimeError("a served generation is stepped by its batcher: iterate it instead")
        return given

    def __iter__(self) -> Iterator[StepRecord]:
        if self.finished:
            return
        batcher_of(self.session).submit(self)
        try:
            while True:
                item = self._records.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._left.set()


# ---------------------------------------------------------------------------------------------------
# Prefix caching: the keys and values of recent prompts


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixStore:
    """The KV caches of recent prompts (one row each), least recently used first, within `max_bytes`.

    A new prompt takes the longest start it has in common with one of them, minus its last token (whose logits
    the prefill pass must produce): a class's chat prompts share the template's system prompt, and often the
    question itself. vLLM calls this automatic prefix caching."""

    def __init__(self, max_bytes: int = PREFIX_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, ...], tuple[object, int]] = OrderedDict()  # tokens -> (cache, bytes)
        self.hits = 0  # prompt tokens taken from the store

    def longest(self, context: Sequence[int]) -> tuple[object | None, int]:
        """(cache, tokens usable) of the entry sharing the longest start with `context` (at most len - 1)."""
        best, length = None, 0
        for tokens, (cache, _) in self._items.items():
            n = min(common_prefix(tokens, context), len(context) - 1)
            if n > length:
                best, length, key = cache, n, tokens
        if best is not None:
            self._items.move_to_end(key)
        return best, length

    def put(self, tokens: Sequence[int], cache, nbytes: int) -> None:
        tokens = tuple(tokens)
        if nbytes > self.max_bytes or len(tokens) < MIN_SHARED_PREFIX:
            return
        if any(t[:len(tokens)] == tokens for t in self._items):  # an entry already holds these tokens
            return
        for other in [t for t in self._items if t == tokens[:len(t)]]:  # entries this one extends are covered by it
            del self._items[other]
        self._items[tokens] = (cache, nbytes)
        while sum(b for _, b in self._items.values()) > self.max_bytes:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------------------------------------------
# The batcher: one worker per model session


class Batcher:
    """Runs the passes of every served generation on one model session, batching them.

    Worker-only state: `rows` (the runs in the batch, in row order), `cache` (their KV, left-padded),
    `mask` [rows, width] (1 = real token), `positions` [rows] (each row's next position id)."""

    def __init__(self, session):
        self.session = session
        self._cond = threading.Condition()
        self._waiting: deque[ServedGeneration] = deque()
        self._thread: threading.Thread | None = None
        self.rows: list[ServedGeneration] = []
        self.cache = None
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        # Prefix caching needs holes between a row's reused prefix and the rest of its prompt, which a sliding
        # window would count as distance: only for models whose layers all attend to everything.
        self.prefixes = PrefixStore() if batch_cache.fits_window(session, 10**9) else None
        self.passes = 0  # forward passes run, and rows they carried (for the bench and the tests)
        self.row_passes = 0
        self.max_rows = 0
        self._bytes_per_token = kv_shape(session).bytes_per_token

    # --- the caller's side ---------------------------------------------------------------------------

    def submit(self, run: ServedGeneration) -> None:
        run._submitted = time.perf_counter()
        run._started = run._submitted  # timings (TTFT, total) count from submission: waiting is part of them
        with self._cond:
            self._waiting.append(run)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=f"batcher {self.session.model_id}",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    # --- the worker ----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                self._drop_left_waiting()
                if not self._waiting and not self.rows:
                    self._thread = None  # under the lock: a submit from now on starts a new worker
                    return
                newcomers = self._admit()
            try:
                self._iteration(newcomers)
            except BaseException as exc:  # a failed pass: every run in the batch gets the error, the batch resets
                for run in [*self.rows, *newcomers]:
                    if not run._left.is_set():
                        run._records.put(exc)
                self.rows, self.cache, self.mask, self.positions = [], None, None, None

    def _drop_left_waiting(self) -> None:
        for run in [r for r in self._waiting if r._left.is_set()]:
            self._waiting.remove(run)

    def _admit(self) -> list[ServedGeneration]:
        """Waiting runs that join now, first come first served, within the caps (at least one when the batch
        is empty): rows per pass, prefill tokens per pass (padding included), KV bytes of the padded batch."""
        taken: list[ServedGeneration] = []
        longest_context = 0
        longest_reserve = max((r.reserve_tokens for r in self.rows), default=0)
        while self._waiting and len(self.rows) + len(taken) < MAX_BATCH_ROWS:
            run = self._waiting[0]
            context = max(longest_context, len(run.context))
            reserve = max(longest_reserve, run.reserve_tokens)
            rows = len(self.rows) + len(taken) + 1
            fits = ((len(taken) + 1) * context <= MAX_PASS_TOKENS
                    and rows * reserve * self._bytes_per_token <= MAX_BATCH_KV_BYTES)
            if not fits and (taken or self.rows):
                break
            taken.append(self._waiting.popleft())
            longest_context, longest_reserve = context, reserve
        return taken

    def _iteration(self, newcomers: list[ServedGeneration]) -> None:
        """One step of the batch: a decode pass for the rows in it, a prefill pass for the newcomers, each row's
        own step (pipeline, draw, record, stop rules), then finished rows leave and newcomers join."""
        if self.rows:
            started = time.perf_counter()
            logits, seconds = self._decode()
            self._step_rows(self.rows, logits, "decode", seconds, started, self.cache, len(self.rows))
        joining = None
        if newcomers:
            started = time.perf_counter()
            logits, cache, mask, seconds = self._prefill(newcomers)
            for run in newcomers:
                run.trace.queued_s = started - run._submitted
            self._step_rows(newcomers, logits, "prefill", seconds, started, cache, len(newcomers))
            joining = (newcomers, cache, mask)
        self._leave()
        if joining:
            self._join(*joining)

    def _decode(self) -> tuple[torch.Tensor, float]:
        """One pass for every row: its newest token at its own next position. [rows, V] float32 logits."""
        session, model = self.session, self.session.model
        tokens = torch.tensor([[run.generated[-1]] for run in self.rows], device=session.device)  # [rows, 1]
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=-1)  # [rows, width + 1]
        padded = not bool(self.mask.all())
        with session.lock, torch.inference_mode():
            started = time.perf_counter()
            # Without padding the pass is the solo run's (positions and mask implied): a lone row gets its exact logits.
            extra = dict(attention_mask=mask, position_ids=self.positions[:, None]) if padded else {}
            out = model(input_ids=tokens, past_key_values=self.cache, use_cache=True, **extra)
            logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)  # [rows, V]
            sync(logits.device)
            seconds = time.perf_counter() - started
        self.mask, self.positions = mask, self.positions + 1
        self._count(len(self.rows))
        return logits, seconds

    def _prefill(self, runs: Sequence[ServedGeneration]):
        """The newcomers' prompts in one pass: logits [n, V], their cache and mask [n, width].

        Each row starts from the longest prefix of its context that the prefix store holds (or that all newcomers
        share: computed once, in a pass of its own); the rest of every context is left-padded to the longest rest.
        A row's cache is then [padding | its reused prefix | padding | the rest of its context], the mask hiding
        the padding and the position ids counting only its own tokens."""
        session, model = self.session, self.session.model
        contexts = [run.context for run in runs]
        reuse = self.prefixes is not None and all(run.reuse_prefix for run in runs)
        pieces = [self.prefixes.longest(c) if reuse else (None, 0) for c in contexts]
        group = min(len(c) for c in contexts) - 1
        for c in contexts[1:]:
            group = min(group, common_prefix(contexts[0], c))
        started = time.perf_counter()
        if reuse and len(runs) > 1 and group >= MIN_SHARED_PREFIX and \
                group > max(n for _, n in pieces):
            _, shared = self._pass([contexts[0][:group]], [[1] * group], None, [list(range(group))])
            self.prefixes.put(contexts[0][:group], shared, batch_cache.total_bytes(shared))
            pieces = [(shared, group)] * len(runs)
        width = max(n for _, n in pieces)
        cache = batch_cache.from_rows(session, pieces, width)
        rests = [c[n:] for c, (_, n) in zip(contexts, pieces)]
        longest = max(len(r) for r in rests)
        pad = pad_id(session)
        ids = [[pad] * (longest - len(r)) + r for r in rests]
        mask = [[0] * (width - n) + [1] * n + [0] * (longest - len(r)) + [1] * len(r) for r, (_, n) in zip(rests, pieces)]
        positions = [[n + max(0, i - (longest - len(r))) for i in range(longest)] for r, (_, n) in zip(rests, pieces)]
        logits, cache = self._pass(ids, mask, cache, positions)
        seconds = time.perf_counter() - started
        mask = torch.tensor(mask, device=session.device)
        for run, (_, n) in zip(runs, pieces):
            run.trace.cached_prefix_tokens = n
        if self.prefixes is not None:  # every newcomer's prompt, for later requests that begin the same way
            for i, c in enumerate(contexts):
                row = batch_cache.row_cache(session, cache, i, mask[i].nonzero().squeeze(-1))
                self.prefixes.put(c, row, batch_cache.total_bytes(row))
        self._count(len(runs))
        return logits, cache, mask, seconds

    def _pass(self, ids, mask, cache, positions):
        """One prefill pass of rows `ids` [n, L] on `cache` (None: a new one), with the 2-D mask [n, width + L] and
        position ids [n, L] (both left out when nothing is padded: then the pass is exactly a solo prefill)."""
        session, model = self.session, self.session.model
        cache = cache if cache is not None else new_cache(session)
        device = session.device
        ids = torch.tensor(ids, device=device)  # [n, L]
        mask = torch.tensor(mask, device=device)  # [n, width + L]
        padded = not bool(mask.all())
        extra = dict(attention_mask=mask, position_ids=torch.tensor(positions, device=device)) if padded else {}
        with session.lock, torch.inference_mode():
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, **extra, **last_logits_only(model))
            logits = out.logits[:, -1].to(dtype=torch.float32, copy=True)  # [n, V]
            sync(logits.device)
        return logits, cache

    def _count(self, rows: int) -> None:
        self.passes += 1
        self.row_passes += rows
        self.max_rows = max(self.max_rows, rows)

    def _step_rows(self, runs, logits, phase, seconds, started, cache, rows) -> None:
        """Each run's own step on its row of the pass's logits (two rows at a time); records go to the consumers."""
        batch_bytes = batch_cache.total_bytes(cache)

        def step(i: int) -> None:
            run = runs[i]
            if run._left.is_set():
                return
            tokens = len(run.context)
            in_pass = tokens - run.trace.cached_prefix_tokens if phase == "prefill" else 1
            run._given = (logits[i].clone(), phase, in_pass, tokens, seconds)
            try:
                record = run.step()
            except Exception as exc:  # this run's own failure (its pipeline): it leaves, the others go on
                run._records.put(exc)
                run._left.set()
                return
            record.step_s = time.perf_counter() - started  # the shared pass, then the rows stepped before it
            trace = run.trace
            trace.pass_rows.append(rows)
            trace.layer_bytes = batch_cache.row_layer_bytes(cache, tokens)
            trace.cache_bytes.append(sum(trace.layer_bytes))
            trace.batch_kv_bytes.append(batch_bytes)
            run._records.put(record)

        list(_steppers.map(step, range(len(runs))))

    def _leave(self) -> None:
        """Finished runs leave the batch: their rows are dropped and padding nobody needs is cut off."""
        finished = [run.finished for run in self.rows]  # read once: a consumer may leave meanwhile
        if not any(finished):
            return
        for run, done in zip(self.rows, finished):
            if done:
                self._close(run)
        keep = [i for i, done in enumerate(finished) if not done]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache, self.mask, self.positions = None, None, None
            return
        batch_cache.keep_rows(self.cache, keep)
        self.mask, self.positions = self.mask[keep], self.positions[keep]
        unused = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns that are padding in every row
        batch_cache.cut_left(self.cache, unused)
        self.mask = self.mask[:, unused:]

    def _join(self, runs, cache, mask) -> None:
        """Newcomers still running join the batch: both sides padded on the left to the same width."""
        finished = [run.finished for run in runs]
        for run, done in zip(runs, finished):
            if done:
                self._close(run)
        keep = [i for i, done in enumerate(finished) if not done]
        if not keep:
            return
        runs = [runs[i] for i in keep]
        if len(keep) < mask.shape[0]:
            batch_cache.keep_rows(cache, keep)
            mask = mask[keep]
            unused = int((mask.sum(0) == 0).long().cumprod(0).sum())
            batch_cache.cut_left(cache, unused)
            mask = mask[:, unused:]
        positions = mask.sum(-1)  # [n]: the next position of each newcomer = its context length
        if not self.rows:
            self.rows, self.cache, self.mask, self.positions = list(runs), cache, mask, positions
            return
        width = max(self.mask.shape[1], mask.shape[1])
        batch_cache.pad_left(self.cache, width - self.mask.shape[1])
        batch_cache.pad_left(cache, width - mask.shape[1])
        batch_cache.append_rows(self.cache, cache)
        pad = lambda m: torch.cat([m.new_zeros(m.shape[0], width - m.shape[1]), m], dim=-1)  # noqa: E731
        self.mask = torch.cat([pad(self.mask), pad(mask)], dim=0)
        self.positions = torch.cat([self.positions, positions])
        self.rows += runs

    @staticmethod
    def _close(run: ServedGeneration) -> None:
        run._records.put(_END)


_batchers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def batcher_of(session) -> Batcher:
    """The session's batcher (made on first use; it goes with the session)."""
    with _batchers_lock:
        batcher = _batchers.get(session)
        if batcher is None:
            batcher = _batchers[session] = Batcher(session)
        return batcher


# ---------------------------------------------------------------------------------------------------
# Entry points: the same signatures as the solo ones


def batchable(session, run: Generation) -> bool:
    """Whether a run can share a padded batch: it uses the KV cache, has no ablation, and its whole context fits
    every sliding window of the model (Gemma 3: 512 tokens)."""
    ablation = run.trace.ablation  # hooks on the shared model would reach every row of the batch: served alone
    return (run.trace.use_cache and (ablation is None or ablation.empty)
            and batch_cache.fits_window(session, len(run.prompt_ids) + run.trace.max_new_tokens))


def served_generation(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True,
                      stop=(), use_cache: bool = True, *, limit: int | None = None, reuse_prefix: bool = True,
                      **kwargs) -> Generation:
    """A run to iterate like a Generation: served with other requests when it can be, else a solo Generation."""
    run = ServedGeneration(session, prompt, params, max_new_tokens, chat, stop, use_cache, limit=limit,
                           reuse_prefix=reuse_prefix, **kwargs)
    if batchable(session, run):
        return run
    solo = Generation(session, prompt, params, max_new_tokens, chat, stop, use_cache, **kwargs)
    return _Limited(solo, limit) if limit is not None else solo


class _Limited:
    """A solo Generation cut after `limit` steps, iterable like a served one."""

    def __init__(self, run: Generation, limit: int):
        self.run, self.limit, self.trace = run, limit, run.trace

    def __iter__(self):
        return islice(self.run, self.limit)

    @property
    def cache(self):
        return self.run.cache


def serve(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True, stop=(),
          use_cache: bool = True, **kwargs) -> GenerationTrace:
    """`generation.generate`, served: the same arguments and the same trace (a ServedTrace when batched), with
    the passes shared with whatever other generations run on this model meanwhile."""
    run = served_generation(session, prompt, params, max_new_tokens, chat, stop, use_cache, **kwargs)
    for _ in run:
        pass
    return run.trace


def run_on(sampling_run, session, settings, limit: int | None = None):
    """`SamplingRun.run_on`, served: go on from the run's tokens (at most `limit` more), each new token added to
    the run as it is yielded; returns (steps, trace)."""
    from .sampling_run import ChosenToken

    generation = served_generation(session, sampling_run.prompt, sampling_run.params(settings),
                                   settings.max_new_tokens, sampling_run.chat, settings.stop,
                                   min_new_tokens=settings.min_new_tokens, prefix_ids=sampling_run.token_ids,
                                   keep_logits=True, constraint=sampling_run.constraint,
                                   ablation=sampling_run.ablation, limit=limit)

    def steps() -> Iterator[StepRecord]:
        for record in generation:
            sampling_run.tokens.append(ChosenToken.of(record))
            yield record
        sampling_run.stop_reason = generation.trace.stop_reason
        sampling_run.stop_sequence = generation.trace.stop_sequence

    return steps(), generation.trace


def batcher_stats(session) -> dict:
    """What this model's batcher has done so far: passes, requests per pass on average, the most in one pass."""
    b = batcher_of(session)
    return {"passes": b.passes, "mean_rows": b.row_passes / b.passes if b.passes else 0.0, "max_rows": b.max_rows,
            "waiting": b.waiting(), "rows": len(b.rows)}


# ---------------------------------------------------------------------------------------------------
# The Prefill & decode timeline, served


def served_timeline(session, prompt: str, params: SamplingParams, max_new_tokens: int, chat: bool = True, stop=(),
                    use_cache: bool = True, *, min_new_tokens: int = 0,
                    deadline: Deadline | None = None) -> tuple[Timeline, dict | None]:
    """`timing.timeline`, served: the same Timeline (every pass timed, the row's KV bytes after each pass read from
    the batch's tensors) when the run can share a batch; a run without the KV cache is timed alone, as before.
    Returns (timeline, serving dict or None)."""
    run = served_generation(session, prompt, params, max_new_tokens, chat, stop, use_cache,
                            min_new_tokens=min_new_tokens, deadline=deadline, reuse_prefix=False)
    if not isinstance(run, ServedGeneration):
        return timeline(session, prompt, params, max_new_tokens, chat, stop, use_cache, min_new_tokens=min_new_tokens,
                        deadline=deadline), None
    steps = []
    with PeakMemory(session.device) as memory:
        for record in run:
            end = run.trace.total_s
            steps.append(StepTiming(
                index=record.index, phase=record.phase, tokens_in_pass=record.tokens_in_pass,
                cache_len=record.cache_len, start_s=end - record.step_s, forward_s=record.forward_s,
                sampling_s=record.sampling_s, step_s=record.step_s, token_id=record.token_id, piece=record.piece,
                cache_bytes=run.trace.cache_bytes[len(steps)],
            ))
    trace = run.trace
    tl = Timeline(
        model=session.model_id, device=str(session.device), prompt=prompt, chat=bool(chat), use_cache=True,
        seed=trace.seed, text=trace.text, token_ids=list(trace.token_ids), stop_reason=trace.stop_reason, steps=steps,
        metrics=metrics_of(trace), kv=kv_shape(session), layer_bytes=list(trace.layer_bytes), memory=memory.to_dict(),
        weights_bytes=weights_bytes(session),
    )
    return tl, trace.serving_dict()
