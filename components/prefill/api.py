"""Prefill & decode tab, the JSON endpoints `timeline` and `context_sweep` (gradio_client, notebooks): the
inference dataclasses serialised by their own `to_dict()`."""

from __future__ import annotations

from inference.sampling import SamplingParams
from inference.sweep import context_sweep
from inference.serving import served_timeline

from ..common import session, user_errors


@user_errors
def timeline_api(prompt: str, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int | None = None, max_new_tokens: int = 32, chat: bool = True, use_cache: bool = True,
                 model: str | None = None) -> dict:
    """One generation, timed pass by pass: prompt + sampling parameters + use_cache -> per step (phase, tokens
    processed, cache length, forward/sampling/step seconds, start time, the token, KV-cache bytes measured from the
    cache tensors), headline metrics (ttft_s, prefill_s, tpot_mean_s/p50/p90, tokens_per_s, total_s), the KV-cache
    formula with its check, and peak memory. Requests that arrive together are decoded in one batch (`serving`:
    how many other requests shared its passes)."""
    s = session(model)
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    tl, serving = served_timeline(s, prompt, params, max_new_tokens, chat, use_cache=use_cache)
    return {**tl.to_dict(), "serving": serving} if serving else tl.to_dict()


@user_errors
def context_sweep_api(max_tokens: int = 256, fresh: bool = False, model: str | None = None) -> dict:
    """Context-length sweep up to max_tokens (standard lengths 16, 32, 64...): per length the prefill time and its
    split (attention scores, projections, MLP, other), decode time per token, KV bytes, peak memory, FLOPs; and
    linear/quadratic fits of prefill time. Cached per model; fresh=True measures again."""
    return context_sweep(session(model), max_tokens, fresh=fresh).to_dict()
