"""Throughput: a few prompts decoded together in one batch vs one at a time.

A decode pass reads every weight once whatever the batch size, so extra rows are cheap until the matrix work
itself fills the hardware. Both ways run the same greedy decoding with EOS blocked, so they do the same work
and (padding aside) produce the same tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from .errors import InputError
from .generation import prompt_ids
from .limits import MAX_BATCH_NEW_TOKENS, MAX_BATCH_PROMPT_TOKENS, MAX_BATCH_PROMPTS
from .model.run import last_logits_only, new_cache, sync
from .model.vocab import eos_ids, pad_id


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

    @property
    def decode_mean_s(self) -> float:
        return sum(self.decode_s) / len(self.decode_s) if self.decode_s else 0.0


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

    @property
    def single_tokens_per_s(self) -> float:
        return len(self.prompts) * self.new_tokens / self.single_total_s

    @property
    def single_decode_mean_s(self) -> float:
        """The mean decode pass of the prompts run alone (one row each)."""
        passes = [s for r in self.single for s in r.decode_s]
        return sum(passes) / len(passes) if passes else 0.0

    @property
    def speedup(self) -> float:
        """Throughput of the batch / throughput one at a time."""
        return self.single_total_s / self.batched.total_s

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts, "prompt_tokens": self.prompt_tokens, "new_tokens": self.new_tokens,
            "batched": {**asdict(self.batched), "tokens_per_s": self.batched.tokens_per_s},
            "single": [{**asdict(r), "tokens_per_s": r.tokens_per_s} for r in self.single],
            "single_total_s": self.single_total_s, "single_tokens_per_s": self.single_tokens_per_s,
            "speedup": self.speedup, "identical": self.identical,
        }


def batched_greedy(session, rows: Sequence[Sequence[int]], new_tokens: int) -> BatchRun:
    """Greedy decoding of every row at once: left-padded prefill with an attention mask (so padding is never
    attended to and every row's last position is its real last token), then one pass per step for all rows.
    EOS is blocked so every row generates exactly new_tokens (as transformers' min_new_tokens does)."""
    model, device = session.model, session.device
    width = max(len(r) for r in rows)
    pad = pad_id(session)
    eos = eos_ids(session)
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
                       use_cache=True, **last_logits_only(model)).logits[:, -1]  # [B, V]
        token = next_tokens(logits)  # [B]
        sync(device)
        prefill_s = time.perf_counter() - started
        out_tokens.append(token)
        for _ in range(new_tokens - 1):
            step = time.perf_counter()
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)  # [B, n + t]
            positions = positions[:, -1:] + 1  # [B, 1]
            logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=positions,
                           past_key_values=cache, use_cache=True).logits[:, -1]  # [B, V]
            token = next_tokens(logits)
            sync(device)
            decode_s.append(time.perf_counter() - step)
            out_tokens.append(token)
        total = time.perf_counter() - started
    generated = torch.stack(out_tokens, dim=1).tolist()  # [B, new_tokens]
    return BatchRun(len(rows), new_tokens, prefill_s, decode_s, total, generated)


def batch_throughput(session, prompts: Sequence[str], new_tokens: int = 16, chat: bool = True) -> BatchComparison:
    """The same greedy decoding of `prompts`, once as one batch and once one prompt at a time."""
    prompts = [p for p in (prompts or []) if p and p.strip()]
    if not prompts:
        raise InputError("batch.no_prompt", "Give at least one prompt (one per line).")
    if len(prompts) > MAX_BATCH_PROMPTS:
        raise InputError("batch.too_many_prompts", "At most {limit} prompts run in one batch; got {count}.",
                         limit=MAX_BATCH_PROMPTS, count=len(prompts))
    try:
        new_tokens = int(new_tokens)
    except (TypeError, ValueError):
        raise InputError("batch.new_tokens_not_whole", "new tokens must be a whole number.") from None
    if not 1 <= new_tokens <= MAX_BATCH_NEW_TOKENS:
        raise InputError("batch.new_tokens_range", "new tokens must be between 1 and {limit}; got {value}.",
                         limit=MAX_BATCH_NEW_TOKENS, value=new_tokens)
    rows = [prompt_ids(session, p, chat) for p in prompts]
    for i, r in enumerate(rows):
        if len(r) > MAX_BATCH_PROMPT_TOKENS:
            raise InputError("batch.prompt_too_long",
                             "Prompt {n} is {tokens:,} tokens; batch prompts may have at most {limit} tokens each.",
                             n=i + 1, tokens=len(r), limit=MAX_BATCH_PROMPT_TOKENS)
    single = [batched_greedy(session, [r], new_tokens) for r in rows]
    batched = batched_greedy(session, rows, new_tokens)
    identical = all(b == s.token_ids[0] for b, s in zip(batched.token_ids, single))
    return BatchComparison(list(prompts), [len(r) for r in rows], new_tokens, batched, single, identical)


__all__ = ["BatchComparison", "BatchRun", "batch_throughput", "batched_greedy"]
