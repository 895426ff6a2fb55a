"""From raw logits to the chosen token: the sampling pipeline, one small function per stage.

The order is the one transformers' `generate()` applies (checked against transformers 5.23):

    raw -> repetition penalty -> presence/frequency penalties -> [EOS blocked: min new tokens]
        -> [constraint: the grammar's mask] -> temperature -> top-k -> top-p -> min-p -> softmax -> draw

A constraint (structured output, `constrained.py`) is a logits processor passed to `generate(logits_processor=
[...])`: transformers puts such processors after its own processors (penalties, min new tokens) and before the
sampling warpers (temperature, top-k, top-p, min-p) (`GenerationMixin._get_logits_processor`), so the mask
sits exactly there. It sets every token the grammar forbids to -inf; the later stages work on what is left.

Each filter sets removed tokens to -inf (transformers' `filter_value`), so softmax gives them probability
exactly 0. Temperature 0 means greedy: transformers refuses it when sampling, so we map it to argmax,
which is what `do_sample=False` does. Presence/frequency penalties do not exist in transformers; they
follow the OpenAI/vLLM formula.

The draw is inverse-CDF sampling: sort the surviving tokens by probability, add them up, and take the
first token whose running total passes a uniform number u * total. The app shows exactly that u and
that CDF. (transformers draws with `torch.multinomial`, an exponential race with no single uniform
number: the same distribution, another random stream.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import InputError, Message
from .limits import (
    MAX_FREQUENCY_PENALTY,
    MAX_PRESENCE_PENALTY,
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOP_K,
)

FILTERED = -float("inf")  # transformers' filter_value

# Stage names in the order they are applied; `raw` is always first, the others only when active.
STAGES = (
    "raw",
    "repetition_penalty",
    "presence_frequency",
    "min_new_tokens",
    "constraint",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "greedy",
)
STAGE_LABELS = {
    "raw": "raw logits",
    "repetition_penalty": "repetition penalty",
    "presence_frequency": "presence / frequency",
    "min_new_tokens": "EOS blocked (min new tokens)",
    "constraint": "constraint (grammar mask)",
    "temperature": "temperature",
    "top_k": "top-k",
    "top_p": "top-p",
    "min_p": "min-p",
    "greedy": "greedy (temperature 0)",
}


# ---------------------------------------------------------------------------------------------------
# Parameters


# What the value that switches a stage off means, by `hint` (a word in a field would stay English in a translation).
OUT_OF_RANGE = {
    "greedy": Message("sampling.out_of_range_greedy", "{name} must be in {interval}, got {value} (0 means greedy)."),
    "top_p_off": Message("sampling.out_of_range_top_p_off",
                         "{name} must be in {interval}, got {value} (1 switches top-p off)."),
    "min_p_off": Message("sampling.out_of_range_min_p_off",
                         "{name} must be in {interval}, got {value} (0 switches min-p off)."),
    "no_penalty_1": Message("sampling.out_of_range_no_penalty_1",
                            "{name} must be in {interval}, got {value} (1 means no penalty)."),
    "no_penalty_0": Message("sampling.out_of_range_no_penalty_0",
                            "{name} must be in {interval}, got {value} (0 means no penalty)."),
    "": Message("sampling.out_of_range", "{name} must be in {interval}, got {value}."),
}


def _number(name: str, value, low: float, high: float, *, low_open: bool = False, hint: str = "") -> float:
    """A finite float within [low, high] (or (low, high] when low_open), else one clear sentence. `hint`: "greedy",
    "top_p_off", "min_p_off", "no_penalty_1" or "no_penalty_0" adds what the stage's neutral value means."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError("sampling.not_a_number", "{name} must be a number, not {value!r}.",
                         name=name, value=value) from None
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    too_low = number <= low if low_open else number < low
    if not math.isfinite(number) or too_low or number > high:
        raise InputError(OUT_OF_RANGE[hint].filled(name=name, interval=interval, value=value))
    return number


def _whole(name: str, value, low: int, high: int, hint: str = "") -> int:
    """A whole number within [low, high]; accepts 3.0 (sliders and JSON send floats) but not 2.5. `hint`: "limit"
    adds "(the limit is {high})", "top_k_off" what 0 means."""
    if isinstance(value, bool) or value is None:
        raise InputError("sampling.not_whole", "{name} must be a whole number, not {value!r}.", name=name, value=value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError("sampling.not_whole", "{name} must be a whole number, not {value!r}.",
                         name=name, value=value) from None
    if not math.isfinite(number) or not number.is_integer():
        raise InputError("sampling.not_whole_got", "{name} must be a whole number, got {value}.",
                         name=name, value=value)
    if not low <= number <= high:
        got = int(number)
        if hint == "top_k_off":
            raise InputError("sampling.whole_out_of_range_top_k_off",
                             "{name} must be between {low:,} and {high:,}, got {value:,} (0 switches top-k off).",
                             name=name, low=low, high=high, value=got)
        if hint == "limit":
            raise InputError("sampling.whole_out_of_range_limit",
                             "{name} must be between {low:,} and {high:,}, got {value:,} (the limit is {high}).",
                             name=name, low=low, high=high, value=got)
        raise InputError("sampling.whole_out_of_range", "{name} must be between {low:,} and {high:,}, got {value:,}.",
                         name=name, low=low, high=high, value=got)
    return int(number)


@dataclass(frozen=True)
class SamplingParams:
    """The knobs of the pipeline, validated on creation (InputError, a ValueError, names the bad one).

    temperature 0 is greedy; top_k 0, top_p 1, min_p 0 and penalties 1/0/0 switch their stage off.
    seed None lets `generate` pick one (and report it, so the run can be repeated).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        fix("temperature", _number("temperature", self.temperature, 0.0, MAX_TEMPERATURE, hint="greedy"))
        fix("top_k", _whole("top_k", self.top_k, 0, MAX_TOP_K, hint="top_k_off"))
        fix("top_p", _number("top_p", self.top_p, 0.0, 1.0, low_open=True, hint="top_p_off"))
        fix("min_p", _number("min_p", self.min_p, 0.0, 1.0, hint="min_p_off"))
        fix("repetition_penalty", _number("repetition_penalty", self.repetition_penalty, 0.0, MAX_REPETITION_PENALTY,
                                          low_open=True, hint="no_penalty_1"))
        fix("presence_penalty", _number("presence_penalty", self.presence_penalty, -MAX_PRESENCE_PENALTY,
                                        MAX_PRESENCE_PENALTY, hint="no_penalty_0"))
        fix("frequency_penalty", _number("frequency_penalty", self.frequency_penalty, -MAX_FREQUENCY_PENALTY,
                                         MAX_FREQUENCY_PENALTY, hint="no_penalty_0"))
        if self.seed is not None:
            fix("seed", _whole("seed", self.seed, 0, MAX_SEED))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ---------------------------------------------------------------------------------------------------
# The stages: each takes logits [V] and returns new logits [V]; none modifies its input.


def apply_repetition_penalty(logits: torch.Tensor, seen_ids: Sequence[int], penalty: float) -> torch.Tensor:
    """Every distinct token already in the context (prompt + generated) gets `s<0 ? s*θ : s/θ`, once.

    With θ > 1 a seen token always moves towards 'less likely': a positive logit shrinks, a negative one
    grows more negative. Ids beyond the logits (a vocabulary padded in the embedding) are skipped.
    """
    vocab = logits.shape[-1]
    ids = torch.tensor(sorted({i for i in seen_ids if 0 <= i < vocab}), dtype=torch.long, device=logits.device)
    out = logits.clone()
    if ids.numel():
        score = out[ids]  # [n_seen]
        out[ids] = torch.where(score < 0, score * penalty, score / penalty)
    return out


def apply_presence_frequency(logits: torch.Tensor, generated_ids: Sequence[int], presence: float,
                             frequency: float) -> torch.Tensor:
    """The OpenAI/vLLM penalties: `s[j] -= c[j]*frequency + (c[j]>0)*presence`, c = counts of token j in
    the GENERATED tokens only (the prompt is not counted, unlike the repetition penalty). Only tokens
    that occur change, so only they are touched."""
    out = logits.clone()
    ids = torch.tensor([i for i in generated_ids if 0 <= i < logits.shape[-1]], dtype=torch.long,
                       device=logits.device)
    if ids.numel():
        seen, counts = torch.unique(ids, return_counts=True)  # [n], [n]
        counts = counts.to(logits.dtype)
        out[seen] = logits[seen] - (counts * frequency + (counts > 0).to(logits.dtype) * presence)
    return out


def block_tokens(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Set the given tokens to -inf: used to forbid EOS until `min_new_tokens` have been generated."""
    out = logits.clone()
    ids = [i for i in token_ids if 0 <= i < logits.shape[-1]]
    if ids:
        out[torch.tensor(ids, device=logits.device)] = FILTERED
    return out


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by T: T < 1 sharpens the distribution, T > 1 flattens it; the ranking never changes."""
    return logits / temperature


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep every token scoring at least the k-th best score (so ties at the boundary all stay)."""
    k = min(top_k, logits.shape[-1])
    kth_best = torch.topk(logits, k).values[..., -1, None]  # [1]
    return logits.masked_fill(logits < kth_best, FILTERED)


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least p (>= 1 token).

    Same arithmetic as transformers: sort ascending, drop tokens whose cumulative mass from the bottom
    is <= 1 - p, never drop the last (most likely) one.
    """
    sorted_logits, sorted_ids = torch.sort(logits, descending=False)  # [V], [V]
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # [V] mass from the least likely upward
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False  # min_tokens_to_keep = 1
    remove = remove_sorted.scatter(-1, sorted_ids, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, FILTERED)


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's probability (>= 1 token kept)."""
    probs = torch.softmax(logits, dim=-1)  # [V]
    remove = probs < min_p * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(-1, torch.topk(probs, 1, dim=-1).indices, False)  # min_tokens_to_keep = 1
    return logits.masked_fill(remove, FILTERED)


def apply_greedy(logits: torch.Tensor) -> torch.Tensor:
    """Temperature 0: all the mass on the arg-max (the first one on an exact tie, as torch.argmax does)."""
    out = torch.full_like(logits, FILTERED)
    best = torch.argmax(logits, dim=-1)
    out[best] = logits[best]
    return out


# ---------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class LogitsTrace:
    """Every active stage of one step, in order, first "raw"; `probs` is the final distribution [V]."""

    stages: list[tuple[str, torch.Tensor]]
    probs: torch.Tensor
    params: SamplingParams
    _stage_probs: list[torch.Tensor] | None = field(default=None, repr=False)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.stages]

    def stage_probs(self) -> list[torch.Tensor]:
        """softmax of each stage's logits (what the distribution would be if sampling stopped there)."""
        if self._stage_probs is None:
            # the last stage's softmax is the final distribution, already computed
            self._stage_probs = [torch.softmax(logits, dim=-1) for _, logits in self.stages[:-1]] + [self.probs]
        return self._stage_probs


def process_logits(logits: torch.Tensor, prompt_ids: Sequence[int], generated_ids: Sequence[int],
                   params: SamplingParams, *, blocked_ids: Sequence[int] = (),
                   mask: Callable[[torch.Tensor], torch.Tensor] | None = None) -> LogitsTrace:
    """Run the pipeline on one step's logits [V] (float32). `blocked_ids`: tokens forbidden at this step
    (EOS while fewer than min_new_tokens have been generated). `mask`: a constraint's grammar mask at this
    step (logits -> logits with the forbidden tokens at -inf; see constrained.GrammarState.apply). Only
    active stages are recorded."""
    if logits.dim() != 1:
        raise ValueError(f"process_logits takes the logits of one step, shape [V]; got {tuple(logits.shape)}")
    logits = logits.float()
    prompt_ids, generated_ids = list(prompt_ids), list(generated_ids)
    stages: list[tuple[str, torch.Tensor]] = [("raw", logits)]
    current = logits

    def add(name: str, new: torch.Tensor) -> None:
        nonlocal current
        current = new
        stages.append((name, new))

    if params.repetition_penalty != 1.0:
        add("repetition_penalty", apply_repetition_penalty(current, prompt_ids + generated_ids,
                                                           params.repetition_penalty))
    if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
        add("presence_frequency", apply_presence_frequency(current, generated_ids, params.presence_penalty,
                                                           params.frequency_penalty))
    if blocked_ids:
        add("min_new_tokens", block_tokens(current, blocked_ids))
    if mask is not None:
        add("constraint", mask(current))
    if params.greedy:
        add("greedy", apply_greedy(current))
    else:
        if params.temperature != 1.0:
            add("temperature", apply_temperature(current, params.temperature))
        if params.top_k > 0:
            add("top_k", apply_top_k(current, params.top_k))
        if params.top_p < 1.0:
            add("top_p", apply_top_p(current, params.top_p))
        if params.min_p > 0.0:
            add("min_p", apply_min_p(current, params.min_p))
    trace = LogitsTrace(stages=stages, probs=torch.softmax(current, dim=-1), params=params)
    return trace


# ---------------------------------------------------------------------------------------------------
# The draw


@dataclass(frozen=True)
class Draw:
    """Where a uniform number landed: the token, its rank in the final distribution (1 = most likely, ties
    broken by id) and its interval [cdf_low, cdf_high) of the cumulative distribution."""

    token_id: int
    rank: int
    prob: float
    u: float | None  # None when greedy: no randomness is used
    cdf_low: float
    cdf_high: float


def draw_token(probs: torch.Tensor, u: float | None) -> Draw:
    """Inverse-CDF draw from probs [V]: the first token (most likely first) whose running total exceeds u.

    u None: greedy, the arg-max. Only tokens with probability > 0 take part, so a filtered token can never
    be drawn whatever u is.
    """
    if u is None:
        token = int(torch.argmax(probs))
        p = float(probs[token])
        rank = 1 + int((probs > p).sum())
        return Draw(token, rank, p, None, 0.0, p)
    survivors = torch.nonzero(probs > 0).squeeze(-1)  # [n] ids ascending
    p = probs[survivors]  # [n]
    order = torch.argsort(p, descending=True, stable=True)  # ties: lower id first
    cdf = torch.cumsum(p[order], dim=0)  # [n]
    target = torch.tensor(u, dtype=cdf.dtype, device=cdf.device) * cdf[-1]  # total may be 1 - 1e-7
    i = min(int(torch.searchsorted(cdf, target, right=True)), len(order) - 1)
    token = int(survivors[order[i]])
    high = float(cdf[i])
    prob = float(p[order[i]])
    return Draw(token, i + 1, prob, float(u), high - prob, high)


def entropy_bits(probs: torch.Tensor) -> float:
    """Shannon entropy in bits (0 for a certain token; log2(n) for n equally likely tokens)."""
    return max(0.0, float(torch.special.entr(probs).sum() / math.log(2)))


def sample_counts(probs: torch.Tensor, n: int, seed: int) -> dict[int, int]:
    """Token -> count over n independent draws from probs (its own generator: the run is not disturbed)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    drawn = torch.multinomial(probs.detach().cpu().float(), n, replacement=True, generator=generator)  # [n]
    ids, counts = torch.unique(drawn, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts)}


# ---------------------------------------------------------------------------------------------------
# A small summary of a trace, for the views (never the whole vocabulary)


@dataclass
class StageSummary:
    """One stage, seen through the candidate tokens: probability, rank (None once removed), kept or not."""

    name: str
    label: str
    survivors: int  # tokens still possible (finite logits)
    entropy_bits: float
    top_prob: float  # the most likely token's probability at this stage
    probs: list[float]  # one per candidate
    ranks: list[int | None]
    kept: list[bool]


FILTERS = {"min_new_tokens", "constraint", "top_k", "top_p", "min_p", "greedy"}  # the stages that can remove tokens
RANK_DEPTH = 64  # ranks up to here come from one top-k per stage; deeper ones from a full comparison


def _count_greater(descending: list[float], q: float) -> int:
    """How many values of a descending list are strictly greater than q (binary search)."""
    low, high = 0, len(descending)
    while low < high:
        mid = (low + high) // 2
        if descending[mid] > q:
            low = mid + 1
        else:
            high = mid
    return low


def summarize(trace: LogitsTrace, top_n: int = 10, extra_ids: Sequence[int] = ()) -> tuple[list[int], list[StageSummary]]:
    """Candidate ids and one StageSummary per stage: what the waterfall and the stage table show.

    Candidates: the union of each stage's top_n (never the arbitrary zeros a filter leaves), plus
    extra_ids (e.g. the chosen token), ordered by final probability, then raw probability.
    The counting runs in NumPy (single-threaded): on a busy 2-core machine, torch's 2-thread
    element-wise kernels over a 49k vocabulary wait for a free core each time, NumPy does not. The top-k
    is torch's (0.1 ms on 49k; NumPy's argpartition takes 0.6 ms, and a served batch runs this for every row).
    """
    stage_probs = [p.detach().cpu() for p in trace.stage_probs()]
    probs = [p.numpy() for p in stage_probs]  # [V] each, no copy on CPU
    stage_logits = [logits.detach().cpu().numpy() for _, logits in trace.stages]
    vocab = probs[0].shape[-1]
    depth = min(RANK_DEPTH, vocab)
    tops = []  # per stage: (values descending, ids), `depth` long
    for t, p in zip(stage_probs, probs):
        part = torch.topk(t, depth, sorted=False).indices.numpy()  # the depth largest, unordered
        part = part[np.lexsort((part, -p[part]))]  # descending, ties by id
        tops.append((p[part].tolist(), part.tolist()))
    chosen = {int(i) for i in extra_ids if i is not None}
    for values, indices in tops:
        chosen.update(i for v, i in zip(values[:top_n], indices[:top_n]) if v > 0)
    index = np.array(sorted(chosen), dtype=np.int64)  # [c]
    final, raw = probs[-1][index], probs[0][index]
    index = index[np.lexsort((index, -raw, -final))]  # by final p, then raw p, then id
    ids = index.tolist()

    summaries = []
    survivors = 0
    for (name, _), logits, p, (values, _) in zip(trace.stages, stage_logits, probs, tops):
        cand_p = p[index].tolist()  # [c]
        kept = np.isfinite(logits[index]).tolist()  # [c]
        if name == "raw" or name in FILTERS:  # penalties and temperature never remove a token
            survivors = int(np.isfinite(logits).sum())
        ranks = [
            None if not k else 1 + (_count_greater(values, q) if q >= values[-1] else int((p > q).sum()))
            for q, k in zip(cand_p, kept)
        ]
        summaries.append(StageSummary(
            name=name,
            label=STAGE_LABELS[name],
            survivors=survivors,
            entropy_bits=_entropy_bits_np(p),
            top_prob=values[0],
            probs=cand_p,
            ranks=ranks,
            kept=kept,
        ))
    return ids, summaries


def _entropy_bits_np(p: np.ndarray) -> float:
    nonzero = p[p > 0].astype(np.float64)
    return max(0.0, float(-(nonzero * np.log2(nonzero)).sum()))  # never "-0.00" for a certain token
