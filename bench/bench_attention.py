"""Attention tab: memory kept per prompt, the cost of capturing, and the server time of a layer/head switch.

    .venv/bin/python -m bench attention
"""

from __future__ import annotations

import json
import time

import torch

from bench.common import TEXT_30, Result, best_of, check, interleaved, text_of_tokens


def _switch_seconds(state: dict, layers: list[int], metric: str = "first") -> float:
    """Median server time of a layer switch: the event function plus Gradio's postprocessing of its outputs."""
    import gradio as gr

    from components.attention.layout import show_head

    plot = gr.Plot()
    index = {"i": 0}

    def switch():
        layer = layers[index["i"] % len(layers)]
        index["i"] += 1
        figure, note, focus, overview = show_head(state, layer, 4, False, None, metric)
        return len(plot.postprocess(figure).plot) + len(note) + len(focus) + len(overview)

    return best_of(switch, repeat=15, warmup=2)


def run() -> list[Result]:
    from components.attention.layout import show_head
    from inference.attention import capture_attention
    from inference.limits import ATTENTION_MEMORY_BUDGET, MAX_ATTENTION_TOKENS
    from inference.session import get_session

    s = get_session()
    results = []

    # Capture cost against one plain forward pass of the same prompt (the capture runs prefill with
    # attentions and hidden states, one decode step and the logit lens).
    ids = torch.tensor([s.tokenizer(TEXT_30).input_ids])

    def plain():
        with s.lock, torch.no_grad():
            s.model(ids)

    def capture():
        s.cache.clear()
        capture_attention(s, TEXT_30)

    ours, theirs = interleaved(capture, plain, repeat=3)
    results.append(check("attention capture, 30 tokens (s)", ours, "s"))
    results.append(check("capture / plain forward, 30 tokens", ours / theirs, "ratio"))

    # Switching layer or head: no model call, only drawing from the cached analysis.
    capture_attention(s, TEXT_30)
    state = {"model": s.model_id, "text": TEXT_30, "chat": False}
    results.append(check("layer/head switch, 30 tokens (server ms)", 1e3 * _switch_seconds(state, [3, 17, 25]), "ms", 50))
    figure = show_head(state, 3, 4, False, None, "first")[0]
    results.append(check("heatmap payload, 30 tokens (KB)", len(figure.to_json()) / 1e3, "KB"))

    # Memory kept for a prompt at the cap, and what switching costs there.
    text = text_of_tokens(s, MAX_ATTENTION_TOKENS)
    started = time.perf_counter()
    maps = capture_attention(s, text)
    results.append(check(f"attention capture, {MAX_ATTENTION_TOKENS} tokens (s)", time.perf_counter() - started, "s"))
    results.append(check(f"memory kept, {MAX_ATTENTION_TOKENS}-token prompt (MB)", maps.retained_bytes() / 1e6, "MB",
                         ATTENTION_MEMORY_BUDGET / 1e6))
    fp32_all = maps.num_layers * maps.num_heads * maps.n * maps.n * 4
    results.append(check("  (all layers in fp32 would be, MB)", fp32_all / 1e6, "MB"))
    resident = maps.resident_layers()
    results.append(check(f"  layers held of {maps.num_layers}", len(resident), "layers"))
    state = {"model": s.model_id, "text": text, "chat": False}
    results.append(check(f"layer/head switch, {MAX_ATTENTION_TOKENS} tokens, held layer (server ms)",
                         1e3 * _switch_seconds(state, resident[:3]), "ms", 50))
    print(json.dumps({"resident_layers": resident, "recaptures": maps.recaptures}))
    return results
