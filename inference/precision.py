"""What lower precision saves and what it costs, measured on the loaded model in one run.

Weights: the loaded model is the reference (float32 on a CPU). Each other precision is a copy of it
(`inference.model.variants.precision_copy`: cast to bfloat16 / float16, or int8 / int4 weights by torchao), built,
measured and freed before the next one. For a text, each precision gives:

    weight bytes           the parameter tensors' bytes (a quantized weight: its int data, scales, zero points)
    ms per decode token    median of the decode passes of a greedy run after the text, and prefill tokens/s;
                           runs alternate with the reference's (reference, copy, reference, copy), so a change in the
                           machine's load hits both
    agreement              at every position of the text, the copy's next-token distribution against the
                           reference's: top-1 agreement, mean KL(reference || copy), max |Δp|
    perplexity             exp(mean negative log-likelihood of the text), from the copy's logits
    first divergence       where the copy's greedy continuation first picks another token than the reference's

KV cache: the model (unchanged) runs the text through transformers' QuantizedCache and through the plain cache side
by side, one decode pass per token after a short prefill, so every later prediction reads quantized keys and
values: bytes per token read from the cache tensors, the same agreement measures, and a greedy continuation.

The bundled models are GGUF files (4-bit) de-quantized to float32 when loaded: float32 is then exactly those 4-bit
weights, not the original checkpoint (`source_note` says so in the UI).
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .deadline import Deadline
from .errors import InputError
from .limits import (KV_NEW_TOKENS, KV_PREFILL_TOKENS, MAX_KV_EVAL_TOKENS, MAX_PRECISION_TOKENS, PRECISION_NEW_TOKENS,
                     PRECISION_REPEATS)
from .model.kv import kv_shape
from .model.loading import BUNDLED
from .model.run import forward_last, new_cache
from .model.variants import (DESCRIPTIONS, PRECISIONS, available_precisions, cache_storage_bytes, dtype_name,
                             kv_quantization_backends, parameter_bytes, precision_copy, quantized_cache)
from .scoring import Agreement, chunk_nll, logprob_chunks, perplexity, run_tokens, step_logprobs, text_ids
from .tokens import clean_text


def weight_bytes(session) -> int:
    """Bytes of the loaded model's parameter tensors, each tensor once (cached per model)."""
    return session.analysis("parameter_bytes", (), lambda: parameter_bytes(session.model))


INT4_NOTES = {
    "Q4_1": ("Q4_1 stores each block of 32 weights as 16 evenly spaced levels, exactly what the int4 row's groups of 32 "
             "can hold, so int4 finds the file's values again: what it loses comes from its bfloat16 activations, and "
             "on the original weights int4 would cost more."),
    "other": ("The int4 row quantizes in groups of 32 with its own scales; the file's 4-bit levels (and the tensors "
              "it kept in 6 or 8 bits) are not all on that grid, so int4 rounds them a second time."),
}


def source_note(session) -> str:
    """What the reference weights are: for a bundled GGUF, 4-bit weights de-quantized to float32."""
    bundled = BUNDLED.get(session.model_id)
    if bundled is None or "GGUF" not in session.source:
        return (f"{session.label} was loaded from its checkpoint in {dtype_name(session.dtype)}; that is the reference "
                "every other precision is compared with.")
    quant = re.search(r"\.(Q\d\w*)\.gguf$|-(q\d\w*)\.gguf$", bundled.gguf_name, flags=re.I)
    kind = (quant.group(1) or quant.group(2)).upper() if quant else "quantized"
    return (f"{session.label} ships as a GGUF file quantized to about 4 bits per weight ({kind}); loading de-quantized it "
            f"to {dtype_name(session.dtype)}. So the {dtype_name(session.dtype)} reference holds exactly those 4-bit values "
            "(stored in 32 bits), not the original bfloat16 training checkpoint: the rows below measure what each "
            "precision costs against that reference. " + INT4_NOTES.get(kind, INT4_NOTES["other"]))


# ---------------------------------------------------------------------------------------------------
# Weights


@dataclass
class PrecisionRow:
    """One precision of the weights, measured on one text."""

    name: str
    description: str
    weight_bytes: int  # the parameter tensors' bytes, each tensor once
    bits_per_parameter: float
    ms_per_token: float  # median decode pass of the greedy runs
    prefill_tokens_per_s: float  # text tokens / median prefill time
    reference_ms_per_token: float  # the reference's decode passes, measured alternately with this row's
    reference_prefill_tokens_per_s: float  # the reference's prefills in the same runs
    top1_agreement: float  # at every position of the text, against the reference
    mean_kl: float  # KL(reference || this), nats, mean over positions
    max_abs_dprob: float  # largest change of one token's probability at any position
    perplexity: float
    greedy_ids: list[int]
    greedy_text: str
    first_divergence: int | None  # first greedy token that differs from the reference's (None: all equal)
    is_reference: bool = False
    quantized_layers: int = 0
    skipped_layers: int = 0  # linear layers torchao left as they were (input size not a multiple of its group)
    kl_per_position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    @property
    def speedup(self) -> float:
        """Reference time per token / this one's (above 1: faster than the reference)."""
        return self.reference_ms_per_token / self.ms_per_token if self.ms_per_token else float("nan")

    def retained_bytes(self) -> int:
        return self.kl_per_position.nbytes

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kl_per_position"] = [round(float(v), 6) for v in self.kl_per_position]
        out["speedup"] = self.speedup
        return out


@dataclass
class PrecisionComparison:
    """Every requested precision of the weights on one text; rows[0] is the reference."""

    model_id: str
    label: str
    text_tokens: int
    new_tokens: int
    repeats: int
    reference: str
    num_parameters: int
    rows: list[PrecisionRow]
    source_note: str
    skipped: list[str] = field(default_factory=list)  # asked for but not run (the time limit)
    timed_out: bool = False
    seconds: float = 0.0

    def row(self, name: str) -> PrecisionRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [r.to_dict() for r in self.rows]}


@dataclass(eq=False)
class _ReferenceRun:
    """The reference model's own pass over the text and its greedy continuation (cached per text)."""

    normed: torch.Tensor  # [n, d] the final norm's output, the model's dtype
    nll: np.ndarray  # [n-1]
    greedy_ids: list[int]
    prefill_s: float  # its greedy run's prefill and decode passes, for a comparison with no other row
    step_s: list[float]

    def retained_bytes(self) -> int:
        return self.normed.numel() * self.normed.element_size() + self.nll.nbytes


def _greedy_timed(session, ids: Sequence[int], new_tokens: int) -> tuple[list[int], float, list[float]]:
    """A greedy continuation of `new_tokens` tokens after `ids` on a fresh KV cache: (tokens, prefill seconds,
    seconds of each decode pass). EOS is not a stop: every precision decodes the same number of passes."""
    cache = new_cache(session)
    logits, prefill_s = forward_last(session, ids, cache)
    tokens, steps = [int(logits.argmax())], []
    for _ in range(new_tokens - 1):
        logits, seconds = forward_last(session, [tokens[-1]], cache)
        tokens.append(int(logits.argmax()))
        steps.append(seconds)
    return tokens, prefill_s, steps


def _reference_run(session, text: str, ids: list[int], new_tokens: int) -> _ReferenceRun:
    def compute() -> _ReferenceRun:
        normed = run_tokens(session, ids)
        targets = torch.tensor(ids[1:])
        nll = np.concatenate([chunk_nll(lp, rows, targets) for rows, lp in logprob_chunks(session, normed)])
        greedy, prefill_s, steps = _greedy_timed(session, ids, new_tokens)
        return _ReferenceRun(normed, nll, greedy, prefill_s, steps)

    return session.analysis("precision_reference", (text, new_tokens), compute)


def _first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def _measure(session, variant, info, text: str, ids: list[int], ref: _ReferenceRun, new_tokens: int, repeats: int,
             deadline: Deadline) -> PrecisionRow:
    """One precision copy against the reference: its pass over the text, then greedy runs alternating with the
    reference's (the pass over the text warms the copy up first)."""
    normed = run_tokens(variant, ids)
    agreement, nll = Agreement(), []
    targets = torch.tensor(ids[1:])
    for (rows, lp_ref), (_, lp) in zip(logprob_chunks(session, ref.normed), logprob_chunks(variant, normed)):
        agreement.add(lp_ref, lp)  # every position, the last one (predicting past the text) included
        nll.append(chunk_nll(lp, rows, targets))
    ref_steps, ref_prefills, steps, prefills = [], [], [], []
    greedy = ref.greedy_ids
    for _ in range(repeats):
        if deadline.expired and steps:
            break
        _, prefill_s, own = _greedy_timed(session, ids, new_tokens)
        ref_steps += own
        ref_prefills.append(prefill_s)
        greedy, prefill_s, own = _greedy_timed(variant, ids, new_tokens)
        steps += own
        prefills.append(prefill_s)
    weight_bytes = parameter_bytes(variant.model)
    return PrecisionRow(
        name=info.name, description=info.description, weight_bytes=weight_bytes,
        bits_per_parameter=8 * weight_bytes / session.facts.num_parameters,
        ms_per_token=1e3 * statistics.median(steps) if steps else float("nan"),
        prefill_tokens_per_s=len(ids) / statistics.median(prefills),
        reference_ms_per_token=1e3 * statistics.median(ref_steps) if ref_steps else float("nan"),
        reference_prefill_tokens_per_s=len(ids) / statistics.median(ref_prefills),
        top1_agreement=agreement.top1_agreement, mean_kl=agreement.mean_kl, max_abs_dprob=agreement.max_abs_dprob,
        perplexity=perplexity(np.concatenate(nll)), greedy_ids=greedy,
        greedy_text=session.tokenizer.decode(greedy), first_divergence=_first_divergence(greedy, ref.greedy_ids),
        quantized_layers=info.quantized_layers, skipped_layers=info.skipped_layers,
        kl_per_position=agreement.kl_per_position(),
    )


def _reference_row(session, ids: list[int], ref: _ReferenceRun, rows: list[PrecisionRow], new_tokens: int) -> PrecisionRow:
    """The reference itself: the session's own model, compared with itself (agreement 1, KL 0 by definition), timed
    alongside every other row (its alternating runs pooled; run on its own when it is the only row)."""
    if rows:
        ms = statistics.median(r.reference_ms_per_token for r in rows)
        prefill_rate = statistics.median(r.reference_prefill_tokens_per_s for r in rows)
    else:
        ms = 1e3 * statistics.median(ref.step_s) if ref.step_s else float("nan")
        prefill_rate = len(ids) / ref.prefill_s
    weight_bytes = parameter_bytes(session.model)
    name = dtype_name(session.dtype)
    return PrecisionRow(
        name=name, description=DESCRIPTIONS.get(name, name), weight_bytes=weight_bytes,
        bits_per_parameter=8 * weight_bytes / session.facts.num_parameters, ms_per_token=ms,
        prefill_tokens_per_s=prefill_rate, reference_ms_per_token=ms, reference_prefill_tokens_per_s=prefill_rate,
        top1_agreement=1.0, mean_kl=0.0,
        max_abs_dprob=0.0, perplexity=perplexity(ref.nll), greedy_ids=ref.greedy_ids,
        greedy_text=session.tokenizer.decode(ref.greedy_ids), first_divergence=None, is_reference=True,
        kl_per_position=np.zeros(len(ids), np.float32),
    )


def check_precisions(session, dtypes: Sequence[str] | str) -> list[str]:
    """The requested precisions, known and available here, reference first, each once."""
    if isinstance(dtypes, str):
        dtypes = [d.strip() for d in dtypes.split(",")]
    names = [str(d).strip().lower() for d in dtypes if str(d).strip()]
    unknown = [d for d in names if d not in PRECISIONS]
    if unknown:
        raise InputError("precision.unknown_precision", "'{name}' is not a precision; choose from {choices}.",
                         name=unknown[0][:40], choices=", ".join(PRECISIONS))
    here = available_precisions(session)
    missing = [d for d in names if d not in here]
    if missing:
        raise InputError("precision.unavailable", "{name} weights cannot run here (they need torch's int4 CPU kernel "
                         "and a model on the CPU); choose from {choices}.", name=missing[0], choices=", ".join(here))
    reference = dtype_name(session.dtype)
    return [reference, *dict.fromkeys(d for d in names if d != reference)]


def compare_precisions(session, text: str, dtypes: Sequence[str] | str = ("float32", "bfloat16", "int8"),
                       new_tokens: int = PRECISION_NEW_TOKENS, repeats: int = PRECISION_REPEATS,
                       deadline: Deadline | None = None,
                       progress: Callable[[int, int, str], None] | None = None) -> PrecisionComparison:
    """The text under each precision of the weights, one row per precision (the loaded model's own first).

    Each row is cached per (model, text, precision, new_tokens, repeats): asking again, or for one more precision,
    measures only what is new. A request past its time limit returns the rows done so far (`timed_out`).
    `progress(done, total, what)` is called before each precision."""
    text = clean_text(text)
    names = check_precisions(session, dtypes)
    ids = text_ids(session, text, MAX_PRECISION_TOKENS, "the precision comparison")
    new_tokens, repeats = int(new_tokens), int(repeats)
    if not (1 <= new_tokens <= 4 * PRECISION_NEW_TOKENS and 1 <= repeats <= 4 * PRECISION_REPEATS):
        raise InputError("precision.run_range", "new_tokens must be 1 to {max_new_tokens}, repeats 1 to {max_repeats}.",
                         max_new_tokens=4 * PRECISION_NEW_TOKENS, max_repeats=4 * PRECISION_REPEATS)
    deadline = deadline or Deadline()
    started = time.perf_counter()
    ref = _reference_run(session, text, ids, new_tokens)
    rows, skipped = [], []
    for i, name in enumerate(names[1:]):
        if deadline.expired:
            skipped.append(name)
            continue
        if progress:
            progress(i, len(names) - 1, name)

        def compute(name=name) -> PrecisionRow:
            with precision_copy(session, name) as (variant, info):
                return _measure(session, variant, info, text, ids, ref, new_tokens, repeats, deadline)

        rows.append(session.analysis("precision_row", (text, name, new_tokens, repeats), compute))
    rows.insert(0, _reference_row(session, ids, ref, rows, new_tokens))
    return PrecisionComparison(
        model_id=session.model_id, label=session.label, text_tokens=len(ids), new_tokens=new_tokens, repeats=repeats,
        reference=names[0], num_parameters=session.facts.num_parameters, rows=rows, source_note=source_note(session),
        skipped=skipped, timed_out=bool(skipped), seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------------
# KV cache


@dataclass
class KVPrecisionRow:
    """One kind of KV cache on one text: what it holds and how the predictions it gives differ from the plain
    cache's."""

    name: str
    description: str
    cache_bytes: int  # read from the cache tensors once the whole text is cached
    cached_tokens: int
    formula_bytes_per_token: int  # 2 x layers x KV heads x head dim x bytes per element
    top1_agreement: float  # over the decoded positions, against the plain cache
    mean_kl: float
    max_abs_dprob: float
    perplexity: float  # of the whole text
    ms_per_token: float  # median decode pass over the text
    greedy_ids: list[int]
    greedy_text: str
    first_divergence: int | None
    kl_per_position: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    @property
    def bytes_per_token(self) -> float:
        return self.cache_bytes / self.cached_tokens if self.cached_tokens else float("nan")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kl_per_position"] = [round(float(v), 6) for v in self.kl_per_position]
        out["bytes_per_token"] = self.bytes_per_token
        return out


@dataclass
class KVPrecisionComparison:
    """The plain cache (rows[0]) and each quantized cache on the same text, decoded side by side."""

    model_id: str
    label: str
    text_tokens: int
    prefill_tokens: int  # run in one pass first (the quantized cache returns them unquantized)
    new_tokens: int
    rows: list[KVPrecisionRow]
    backends: dict[str, bool]  # QuantizedCache backends and whether each is installed here
    timed_out: bool = False
    seconds: float = 0.0

    def retained_bytes(self) -> int:
        return sum(r.kl_per_position.nbytes for r in self.rows)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [r.to_dict() for r in self.rows]}


KV_DESCRIPTIONS = {
    "plain": "transformers' DynamicCache: keys and values as the model computes them",
    "fp8": "QuantizedCache, fp8 backend: float8 e4m3 values, one scale per layer fixed on the first pass",
    "quanto": "QuantizedCache, quanto backend: 4-bit groups of 64, the last 128 tokens kept unquantized",
    "hqq": "QuantizedCache, HQQ backend: 4-bit groups of 64, the last 128 tokens kept unquantized",
}


def compare_kv_precision(session, text: str, backends: Sequence[str] = ("fp8",), prefill_tokens: int = KV_PREFILL_TOKENS,
                         new_tokens: int = KV_NEW_TOKENS, deadline: Deadline | None = None) -> KVPrecisionComparison:
    """The text through the plain KV cache and each quantized one, side by side: the first `prefill_tokens` (at most
    half the text) in one pass, then one decode pass per token (so every later prediction reads the quantized keys and values), then
    `new_tokens` greedy tokens with each cache. Cached per (model, text, backends, settings)."""
    text = clean_text(text)
    ids = text_ids(session, text, MAX_KV_EVAL_TOKENS, "the KV-cache comparison")
    backends = tuple(dict.fromkeys(backends))
    for backend in backends:
        if backend not in KV_DESCRIPTIONS or backend == "plain":
            raise InputError("precision.unknown_backend",
                             "'{backend}' is not a QuantizedCache backend; choose from fp8, quanto, hqq.",
                             backend=str(backend)[:20])
    quantized_cache(session, backends[0] if backends else "fp8")  # a clear message for a model it cannot serve
    prefill = max(1, min(int(prefill_tokens), len(ids) // 2))  # at least half the text decoded pass by pass
    new_tokens = max(1, min(int(new_tokens), 4 * KV_NEW_TOKENS))
    key = (text, backends, prefill, new_tokens)
    return session.analysis("kv_precision", key, lambda: _kv_compare(session, ids, backends, prefill, new_tokens,
                                                                     deadline or Deadline()))


def _kv_compare(session, ids: list[int], backends: tuple[str, ...], prefill: int, new_tokens: int,
                deadline: Deadline) -> KVPrecisionComparison:
    started = time.perf_counter()
    names = ("plain", *backends)
    caches = {"plain": new_cache(session), **{b: quantized_cache(session, b) for b in backends}}
    n = len(ids)
    targets = torch.tensor(ids[1:])
    nll = {name: [] for name in names}
    agreement = {name: Agreement() for name in names}
    step_s = {name: [] for name in names}
    last = {}
    # Prefill: positions 0..prefill-1, predicting tokens 1..prefill (identical for every cache: the quantized
    # one returns this pass's keys and values as they are, quantizing them for later passes).
    for name in names:
        normed = run_tokens(session, ids[:prefill], 0, caches[name])
        for rows, lp in logprob_chunks(session, normed):
            nll[name].append(chunk_nll(lp, rows, targets))
            last[name] = lp[-1]
    # Decode: one pass per remaining token, the caches alternately (so their times share the machine's load).
    timed_out = False
    for i in range(prefill, n):
        if deadline.expired:
            timed_out = True
            break
        step = {}
        for name in names:
            begin = time.perf_counter()
            step[name] = step_logprobs(session, ids[i], i, caches[name])  # predicts token i+1
            step_s[name].append(time.perf_counter() - begin)
            nll[name].append(chunk_nll(step[name][None], slice(i, i + 1), targets))
            agreement[name].add(step["plain"], step[name])
            last[name] = step[name]
    held = {name: (sum(cache_storage_bytes(caches[name])), caches[name].get_seq_length()) for name in names}
    # Greedy continuation after the text, each cache on its own.
    greedy = {name: [] for name in names}
    for name in names:
        logprobs = last[name]
        for j in range(new_tokens if not timed_out else 0):
            greedy[name].append(int(logprobs.argmax()))
            if j + 1 < new_tokens:
                logprobs = step_logprobs(session, greedy[name][-1], n + j, caches[name])
    kv = kv_shape(session)
    rows = []
    for name in names:
        element = 1 if name == "fp8" else (kv.bytes_per_element if name == "plain" else 0.5)
        rows.append(KVPrecisionRow(
            name=name if name != "plain" else f"plain ({kv.dtype})", description=KV_DESCRIPTIONS[name],
            cache_bytes=held[name][0], cached_tokens=held[name][1],
            formula_bytes_per_token=int(2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * element),
            top1_agreement=agreement[name].top1_agreement, mean_kl=agreement[name].mean_kl,
            max_abs_dprob=agreement[name].max_abs_dprob, perplexity=perplexity(np.concatenate(nll[name])),
            ms_per_token=1e3 * statistics.median(step_s[name]) if step_s[name] else float("nan"),
            greedy_ids=greedy[name], greedy_text=session.tokenizer.decode(greedy[name]),
            first_divergence=_first_divergence(greedy[name], greedy["plain"]),
            kl_per_position=agreement[name].kl_per_position(),
        ))
    return KVPrecisionComparison(
        model_id=session.model_id, label=session.label, text_tokens=n, prefill_tokens=prefill, new_tokens=new_tokens,
        rows=rows, backends=kv_quantization_backends(), timed_out=timed_out, seconds=time.perf_counter() - started,
    )
