"""Forward pass tab: the recorded pass against a plain forward pass, memory kept, payload of the views, and
the server time of a box click.

    .venv/bin/python -m bench forward
"""

from __future__ import annotations

import json
import time

import torch

from bench.common import TEXT_30, Result, best_of, check, interleaved, text_of_tokens


def _payload_kb(outputs) -> float:
    """Bytes Gradio would send for the views: figures as plotly JSON, HTML as is."""
    import plotly.graph_objects as go

    total = 0
    for value in outputs:
        if isinstance(value, go.Figure):
            total += len(value.to_json())
        elif isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            total += len(json.dumps(value, default=str))
    return total / 1e3


def run() -> list[Result]:
    from components.forward.layout import pick_box, run_forward
    from inference.forward import forward_pass
    from inference.recorded import record_prefill
    from inference.tokens import tokenize
    from inference.limits import MAX_FORWARD_TOKENS
    from inference.session import get_session

    s = get_session()
    results = []

    # The recorded pass (hooks, surprisal of every token by the model's head in chunks, the lens at the last
    # token) against one plain forward pass that computes all logits.
    for label, text in (("30", TEXT_30), ("512", text_of_tokens(s, 512))):
        ids = torch.tensor([s.tokenizer(text).input_ids])

        def plain():
            with s.lock, torch.no_grad():
                s.model(input_ids=ids, use_cache=False)

        view = tokenize(s, text)

        def recorded():  # the recorded prefill without the attention capture (a text over the Attention tab's cap)
            record_prefill(s, view, attention=False)

        def shared():  # what a first visit to either tab runs: one pass for attention + forward analyses
            s.cache.clear()
            forward_pass(s, text)

        ours, theirs = interleaved(recorded, plain, repeat=3)
        results.append(check(f"recorded pass, {label} tokens (s)", ours, "s"))
        results.append(check(f"recorded / plain forward, {label} tokens", ours / theirs, "ratio", 1.5))
        results.append(check(f"shared attention+forward pass, {label} tokens (s)", best_of(shared, repeat=2), "s"))

    # A text at the cap: time, memory kept, and what the views weigh.
    text = text_of_tokens(s, MAX_FORWARD_TOKENS)
    s.cache.clear()
    started = time.perf_counter()
    forward = forward_pass(s, text)
    results.append(check(f"recorded pass, {MAX_FORWARD_TOKENS} tokens (s)", time.perf_counter() - started, "s"))
    results.append(check(f"kept in memory, {MAX_FORWARD_TOKENS} tokens (MB)", forward.retained_bytes() / 1e6, "MB", 5))
    outputs = run_forward(text, False, None)
    results.append(check(f"views payload, {MAX_FORWARD_TOKENS} tokens (KB)", _payload_kb(outputs), "KB", 1500))
    outputs = run_forward(TEXT_30, False, None)
    results.append(check("views payload, 30 tokens (KB)", _payload_kb(outputs), "KB", 600))

    # A box click: no model call, only the diagram and its explanation from the cached pass.
    state = outputs[0]

    class Click:
        _data = {"key": "layer.attention"}

    results.append(check("box click (server ms)", 1e3 * best_of(lambda: pick_box(state, Click()), repeat=15), "ms", 50))
    return results
