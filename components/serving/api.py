"""Serving tab, the JSON endpoint `serving`: a burst served three ways, as plain data."""

from __future__ import annotations

from inference.continuous import serve_burst

from ..common import session, user_errors


@user_errors
def serving_api(prompts: list[str], max_new_tokens: list[int] | int = 16, chat: bool = True, num_blocks: int = 64,
                max_batch_tokens: int = 256, model: str | None = None) -> dict:
    """The same burst of greedy requests served by transformers' continuous-batching engine (paged KV cache,
    `num_blocks` blocks, at most `max_batch_tokens` tokens per pass), as one static batch and one at a time: per
    mode the requests (tokens, text, start, first token, end, returned; TTFT, TPOT, latency), the passes (prefill
    and decode requests, waiting requests, KV blocks in use), throughput from wall time, CPU time, KV memory; and
    whether the baselines' texts equal the engine's."""
    s = session(model)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts or [])  # one prompt given as a string
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, (int, float)) else list(max_new_tokens or [])
    return serve_burst(s, prompts, budgets, bool(chat) and s.has_chat_template, num_blocks,
                       max_batch_tokens).to_dict()
