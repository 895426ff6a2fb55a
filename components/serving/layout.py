"""Serving tab: the serving engine made visible. A burst of requests (different prompt lengths and token
budgets) is served by transformers' own continuous-batching engine (paged KV cache, a scheduler that lets
requests join and leave between passes), then as one static batch and one request at a time, in the same run.

This module holds the layout and its wiring; the handlers live in `events`, the JSON endpoint (`serving`) in
`api`, the pure figure builders in `figures`. The lesson (assets/lessons/serving.md) sits on top with its "try
this" buttons; a link carries the burst and the engine's sizes; the per-request table downloads as CSV.
"""

from __future__ import annotations

import json

import gradio as gr

from inference.limits import (
    MAX_BATCH_ROWS,
    MAX_BURST_NEW_TOKENS,
    MAX_BURST_PROMPT_TOKENS,
    MAX_BURST_REQUESTS,
    MAX_SERVING_BATCH_TOKENS,
    MAX_SERVING_BLOCKS,
    SERVING_PAGE_TOKENS,
)

from . import api
from . import events as ev
from ..common import ASSETS, MODEL_CONCURRENCY, model_changed
from .figures import CSS
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Serving"
BURST = json.loads((ASSETS / "examples" / "serving.json").read_text())["burst"]

INTRO = (f"Type a burst of requests, one per line as `prompt | new tokens`, and press **Serve the burst**. The same "
         "requests are served by transformers' continuous-batching engine, as one static batch, and one at a time; "
         f"every answer is greedy, so all three give the same texts. Limits: {MAX_BURST_REQUESTS} requests of up to "
         f"{MAX_BURST_PROMPT_TOKENS} prompt tokens and {MAX_BURST_NEW_TOKENS} new tokens; {MAX_SERVING_BLOCKS} KV "
         f"blocks of {SERVING_PAGE_TOKENS} tokens.")
TWIN_NOTE = ("The engine runs on a second model object that shares this model's weight tensors (nothing is copied) "
             "with SDPA attention: transformers' engine switches an eager model to paged attention while it runs, "
             "and the other tabs need the eager one. Each run holds the model for its three passes over the burst, "
             "so other visitors' model calls wait meanwhile. Generation in the other tabs is batched too: "
             f"requests that arrive while the model is busy are decoded together, up to {MAX_BATCH_ROWS} per pass.")


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "serving")
    gr.Markdown(INTRO)
    with gr.Row():
        burst = gr.Textbox(label=f"requests, one per line: prompt | new tokens (≤ {MAX_BURST_REQUESTS} lines)",
                           value="\n".join(BURST), lines=8, max_length=20_000, elem_id="srv-burst", scale=3)
        with gr.Column(scale=2, min_width=260):
            default_budget = gr.Slider(1, MAX_BURST_NEW_TOKENS, value=16, step=1,
                                       label="new tokens for a line without '| n'", elem_id="srv-default-budget")
            num_blocks = gr.Slider(4, MAX_SERVING_BLOCKS, value=48, step=1,
                                   label=f"KV blocks the engine may use ({SERVING_PAGE_TOKENS} tokens each)",
                                   elem_id="srv-blocks")
            max_batch_tokens = gr.Slider(16, MAX_SERVING_BATCH_TOKENS, value=128, step=16,
                                         label="tokens per forward pass (prefill chunks + decode tokens)",
                                         elem_id="srv-batch-tokens")
            chat = gr.Checkbox(label="as chat (chat template)", value=True, elem_id="srv-chat")
            serve_btn = gr.Button("Serve the burst ▸", variant="primary", elem_id="srv-run")
    fields = {"burst": burst, "default_budget": default_budget, "num_blocks": num_blocks,
              "max_batch_tokens": max_batch_tokens, "chat": chat}
    share_link(demo, "serving", fields)
    gr.Markdown(TWIN_NOTE, elem_classes=["lie-note"])
    headline = gr.HTML(elem_id="srv-headline-box", css_template=CSS)
    schedule_plot = gr.Plot(label="The engine's schedule, step by step", elem_id="srv-schedule")
    schedule_alt = gr.Markdown(elem_id="srv-schedule-summary", elem_classes=["lie-alt"])
    gantt_plot = gr.Plot(label="Continuous batching vs a static batch vs one at a time", elem_id="srv-gantt")
    gantt_alt = gr.Markdown(elem_id="srv-gantt-summary", elem_classes=["lie-alt"])
    requests = gr.HTML(elem_id="srv-requests-box", css_template=CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        csv = gr.DownloadButton("⬇ Requests as CSV (one row per request and mode)", size="sm", elem_id="srv-csv",
                                interactive=False)

    outputs = [headline, schedule_plot, schedule_alt, gantt_plot, gantt_alt, requests, csv]
    serve = dict(fn=ev.on_serve, inputs=[burst, default_budget, chat, num_blocks, max_batch_tokens], outputs=outputs,
                 concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    for event in lesson.connect(fields):
        event.then(**serve)
    serve_btn.click(**serve)
    model_changed(demo)(ev.on_model, None, [chat, *outputs], api_visibility="private", queue=False)
    gr.api(api.serving_api, api_name="serving", concurrency_id=MODEL_CONCURRENCY)
