"""Running the model: one forward pass over ids, with or without a KV cache, and the LM head on its own."""

from __future__ import annotations

import inspect
import time
from typing import Sequence

import torch

from .anatomy import anatomy


def accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def last_logits_only(model, k: int = 1) -> dict:
    """Model kwargs asking for the logits of the last k positions only (`logits_to_keep`, where the model
    takes it): all n positions would be [n, vocab]. Callers read `out.logits[0, -k:]`, right either way."""
    return {"logits_to_keep": k} if accepts(model.forward, "logits_to_keep") else {}


def new_cache(session):
    """An empty DynamicCache for this model (sliding-window layers where its config has them)."""
    from transformers import DynamicCache

    return DynamicCache(config=session.model.config)


def prefix_cache(session, cache, length: int, batch: int):
    """A new cache holding the first `length` positions of `cache` (a one-row cache), repeated for `batch` rows:
    the shared start of `batch` runs that differ only from position `length` on. None when `length` is 0.
    Layer by layer through `update`, so sliding-window layers stay sliding-window layers; every layer must still
    hold those positions (a prompt shorter than the smallest window)."""
    if length == 0:
        return None
    prefix = new_cache(session)
    for index, layer in enumerate(cache.layers):
        keys = layer.keys[:, :, :length].expand(batch, -1, -1, -1).contiguous()  # [batch, kv_heads, length, head_dim]
        values = layer.values[:, :, :length].expand(batch, -1, -1, -1).contiguous()
        prefix.update(keys, values, index)
    return prefix


def sync(device) -> None:
    """Wait for queued GPU work, so a wall-clock reading covers it (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def forward_last(session, ids: Sequence[int], cache=None) -> tuple[torch.Tensor, float]:
    """Run `ids` through the model (appending to `cache` when given); the last position's logits [V] in
    float32 and the pass's wall time. Holds the session lock: one model call at a time."""
    model = session.model
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=session.device)  # [1, n]
    with session.lock, torch.inference_mode():
        start = time.perf_counter()
        out = model(input_ids=input_ids, past_key_values=cache, use_cache=cache is not None,
                    **last_logits_only(model))
        logits = out.logits[0, -1].to(dtype=torch.float32, copy=True)  # [V], like generate()
        sync(logits.device)
        return logits, time.perf_counter() - start


def logits_from_normed(session, normed: torch.Tensor) -> torch.Tensor:
    """The model's LM head on final-norm output (and Gemma 2's logit soft-cap when configured).

    normed [..., d] -> logits [..., vocab], as *ForCausalLM.forward computes them."""
    logits = session.model.get_output_embeddings()(normed)
    cap = anatomy(session).logit_softcap
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def head_logits(session, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm then LM head on a raw residual-stream state: [..., d] -> [..., vocab] (the logit lens)."""
    parts = anatomy(session)
    norm = parts.module(session.model, parts.final_norm)
    return logits_from_normed(session, norm(hidden) if norm is not None else hidden)
