"""Scoring a text with a model, and comparing two models' next-token distributions, from their logits.

A pass over n tokens has logits [n, vocab] (Gemma's 262k vocabulary makes that 0.5 GB for 512 tokens), so a pass
asks the model for the last position's logits only and keeps the final norm's output [n, d]; the model's own LM
head turns it into logits a chunk of positions at a time. Everything here is computed from those logits:

    negative log-likelihood  nll[i] = -log p(token i+1 | tokens 0..i)       (natural log)
    perplexity               exp(mean nll)
    top-1 agreement          argmax of both distributions equal
    KL divergence            KL(reference || candidate) = sum p_ref * (log p_ref - log p_cand)   (nats)
    max |Δp|                 the largest change of any token's probability
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .errors import InputError, Message
from .limits import FORWARD_LOGIT_CHUNK
from .model.hooks import hooks
from .model.run import last_logits_only, logits_from_normed, sync
from .tokens import clean_text, tokenize


def text_ids(session, text: str, cap: int, what: str) -> list[int]:
    """The text's token ids as the Forward pass tab reads it (plain text, the model's own special tokens).
    `what` names the measurement whose cap `cap` is, and so picks the sentence over it (each its own catalogue
    key): "an eviction policy run", "this measurement", "the precision comparison" or "the KV-cache comparison";
    any other gets a sentence that names none."""
    ids = tokenize(session, clean_text(text)).ids
    if len(ids) < 2:
        raise InputError("scoring.single_token",
                         "The text is a single token: type a longer text (every position predicts the next token).")
    if len(ids) > cap:
        raise InputError(TOO_MANY.get(what, ANY_TOO_MANY).filled(tokens=len(ids), limit=cap))
    return ids


# The sentence over a cap, by the measurement it caps (`what`): each its own catalogue key.
TOO_MANY = {
    "an eviction policy run": Message("scoring.too_many_tokens_eviction", "The text is {tokens:,} tokens; an eviction "
                                      "policy run takes at most {limit:,}. Shorten it and try again."),
    "this measurement": Message("scoring.too_many_tokens_measurement", "The text is {tokens:,} tokens; this "
                                "measurement takes at most {limit:,}. Shorten it and try again."),
    "the precision comparison": Message("scoring.too_many_tokens_precision", "The text is {tokens:,} tokens; the "
                                        "precision comparison takes at most {limit:,}. Shorten it and try again."),
    "the KV-cache comparison": Message("scoring.too_many_tokens_kv_cache", "The text is {tokens:,} tokens; the "
                                       "KV-cache comparison takes at most {limit:,}. Shorten it and try again."),
}
ANY_TOO_MANY = Message("scoring.too_many_tokens",
                       "The text is {tokens:,} tokens; the limit is {limit:,}. Shorten it and try again.")


def perplexity(nll: np.ndarray) -> float:
    """exp(mean negative log-likelihood), in float64; NaN for no predicted token."""
    return float(math.exp(np.asarray(nll, dtype=np.float64).mean())) if len(nll) else float("nan")


def run_tokens(session, ids: Sequence[int], start: int = 0, cache=None,
               observe: Mapping[str, Callable[[torch.Tensor], None]] | None = None) -> torch.Tensor:
    """Run `ids` (text positions start .. start+q-1) through the session's model, appending to `cache` when given;
    returns the final norm's output [q, d] in the model's dtype. Positions are passed explicitly: a cache that
    evicted tokens holds fewer than `start`, and the model would otherwise number the new tokens from its length.
    `observe` sees hook points during the pass (e.g. the attention weights). Holds the session lock."""
    model = session.model
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=session.device)  # [1, q]
    positions = torch.arange(start, start + len(ids), device=session.device)[None]  # [1, q]
    with session.lock, torch.inference_mode(), hooks(session, read=["ln_final.hook_normalized"], observe=observe,
                                                     dtype=None, device=session.device) as rec:
        model(input_ids=input_ids, position_ids=positions, past_key_values=cache, use_cache=cache is not None,
              **last_logits_only(model))
        normed = rec["ln_final.hook_normalized"][0]  # [q, d]
        sync(normed.device)
    return normed


def step_logprobs(session, token: int, position: int, cache,
                  observe: Mapping[str, Callable[[torch.Tensor], None]] | None = None) -> torch.Tensor:
    """One decode pass: `token` at text position `position` on the cache; log-probs of the next token [V] float32."""
    model = session.model
    input_ids = torch.tensor([[token]], dtype=torch.long, device=session.device)  # [1, 1]
    positions = torch.tensor([[position]], device=session.device)  # [1, 1]: see run_tokens
    with session.lock, torch.inference_mode(), hooks(session, observe=observe):
        out = model(input_ids=input_ids, position_ids=positions, past_key_values=cache, use_cache=True)
        logprobs = torch.log_softmax(out.logits[0, -1].float(), -1)  # [V]
        sync(logprobs.device)
    return logprobs


def logprob_chunks(session, normed: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(positions, log-probs [c, V] float32) for the rows of `normed` [q, d], a chunk of positions at a time."""
    vocab = session.model.get_output_embeddings().weight.shape[0]
    chunk = max(1, FORWARD_LOGIT_CHUNK // vocab)
    for begin in range(0, normed.shape[0], chunk):
        rows = slice(begin, min(begin + chunk, normed.shape[0]))
        # Inference mode per chunk, never across the yield: a generator suspended inside it (zip() leaves the
        # longer one so) would leave it on in the caller's thread.
        with torch.inference_mode():
            logprobs = torch.log_softmax(logits_from_normed(session, normed[rows]).float(), -1)  # [c, V]
        yield rows, logprobs


def target_nll(logprobs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """-log p of each target: logprobs [c, V], targets [c] -> [c] float64."""
    return (-logprobs.gather(-1, targets[:, None].to(logprobs.device))[:, 0]).double().cpu().numpy()


def chunk_nll(logprobs: torch.Tensor, rows: slice, targets: torch.Tensor) -> np.ndarray:
    """-log p of the targets of the positions `rows` (log-probs [c, V] of those positions; targets [n-1] of the
    whole text: position i predicts targets[i] = token i+1, the last position has none)."""
    stop = min(rows.stop, len(targets))
    if stop <= rows.start:
        return np.zeros(0)
    return target_nll(logprobs[: stop - rows.start], targets[rows.start:stop])


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two models' log-probs at the same positions ([c, V] or [V]): top-1 equal [c], KL(ref || cand) [c] in nats,
    max |Δp| [c]."""
    reference, candidate = reference.reshape(-1, reference.shape[-1]), candidate.reshape(-1, candidate.shape[-1])
    p_ref, p_cand = reference.exp(), candidate.exp()
    same = (reference.argmax(-1) == candidate.argmax(-1)).cpu().numpy()
    kl = (p_ref * (reference - candidate)).sum(-1).clamp_min(0).double().cpu().numpy()  # rounding can dip below 0
    max_dp = (p_ref - p_cand).abs().amax(-1).double().cpu().numpy()
    return same, kl, max_dp


@dataclass
class Agreement:
    """Per-position comparison of a candidate with a reference, accumulated chunk by chunk or step by step."""

    same_top1: list[np.ndarray] = field(default_factory=list)
    kl: list[np.ndarray] = field(default_factory=list)
    max_dp: list[np.ndarray] = field(default_factory=list)

    def add(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        same, kl, max_dp = compare(reference, candidate)
        self.same_top1.append(same)
        self.kl.append(kl)
        self.max_dp.append(max_dp)

    def _all(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def positions(self) -> int:
        return len(self._all(self.same_top1))

    @property
    def top1_agreement(self) -> float:
        same = self._all(self.same_top1)
        return float(same.mean()) if len(same) else float("nan")

    @property
    def mean_kl(self) -> float:
        kl = self._all(self.kl)
        return float(kl.mean()) if len(kl) else float("nan")

    @property
    def max_abs_dprob(self) -> float:
        dp = self._all(self.max_dp)
        return float(dp.max()) if len(dp) else float("nan")

    def kl_per_position(self) -> np.ndarray:
        return self._all(self.kl).astype(np.float32)
