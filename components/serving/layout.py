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
from ..i18n import DEFAULT, RTL, T, t
from .figures import CSS
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Serving"
BURST = json.loads((ASSETS / "examples" / "serving.json").read_text())["burst"]


def intro(lang: str = DEFAULT) -> str:
    return t("serving.intro", lang, requests=MAX_BURST_REQUESTS, prompt_tokens=MAX_BURST_PROMPT_TOKENS,
             new_tokens=MAX_BURST_NEW_TOKENS, blocks=MAX_SERVING_BLOCKS, page=SERVING_PAGE_TOKENS)


def twin_note(lang: str = DEFAULT) -> str:
    return t("serving.twin_note", lang, rows=MAX_BATCH_ROWS)


def _markdown(texts, read, **kwargs) -> gr.Markdown:
    """A Markdown whose text `read(lang)` builds (it has numbers to fill in), right to left where the language is."""
    return texts.add(gr.Markdown(read(DEFAULT), **kwargs), lambda lang: gr.update(value=read(lang), rtl=lang in RTL))


def _rtl(texts, component):
    """A Markdown filled by the handlers: right to left where the language is."""
    return texts.add(component, lambda lang: gr.update(rtl=lang in RTL))


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    lesson = LessonPanel(demo, "serving")
    _markdown(texts, intro)
    with gr.Row():
        burst = texts.label(gr.Textbox(label=t("serving.burst", DEFAULT, max=MAX_BURST_REQUESTS),
                                       value="\n".join(BURST), lines=8, max_length=20_000, elem_id="srv-burst",
                                       scale=3), "serving.burst", max=MAX_BURST_REQUESTS)
        with gr.Column(scale=2, min_width=260):
            default_budget = texts.make(gr.Slider, 1, MAX_BURST_NEW_TOKENS, value=16, step=1,
                                        label=T("serving.default_budget"), elem_id="srv-default-budget")
            num_blocks = texts.label(gr.Slider(4, MAX_SERVING_BLOCKS, value=48, step=1,
                                               label=t("serving.blocks", DEFAULT, page=SERVING_PAGE_TOKENS),
                                               elem_id="srv-blocks"), "serving.blocks", page=SERVING_PAGE_TOKENS)
            max_batch_tokens = texts.make(gr.Slider, 16, MAX_SERVING_BATCH_TOKENS, value=128, step=16,
                                          label=T("serving.batch_tokens"), elem_id="srv-batch-tokens")
            chat = texts.make(gr.Checkbox, label=T("serving.chat"), value=True, elem_id="srv-chat")
            serve_btn = texts.make(gr.Button, T("serving.run"), variant="primary", elem_id="srv-run")
    fields = {"burst": burst, "default_budget": default_budget, "num_blocks": num_blocks,
              "max_batch_tokens": max_batch_tokens, "chat": chat}
    share_link(demo, "serving", fields)
    _markdown(texts, twin_note, elem_classes=["lie-note"])
    headline = gr.HTML(elem_id="srv-headline-box", css_template=CSS)
    schedule_plot = texts.make(gr.Plot, label=T("serving.schedule_plot"), elem_id="srv-schedule")
    schedule_alt = _rtl(texts, gr.Markdown(elem_id="srv-schedule-summary", elem_classes=["lie-alt"]))
    gantt_plot = texts.make(gr.Plot, label=T("serving.gantt_plot"), elem_id="srv-gantt")
    gantt_alt = _rtl(texts, gr.Markdown(elem_id="srv-gantt-summary", elem_classes=["lie-alt"]))
    requests = gr.HTML(elem_id="srv-requests-box", css_template=CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        csv = texts.make(gr.DownloadButton, label=T("serving.csv"), size="sm", elem_id="srv-csv", interactive=False)
    # The last run, kept for this page: a change of language redraws its views without a new run. The picker sets
    # `page_language` (the page's language events are wired after the tabs are built); its change redraws.
    last = gr.State(None)
    page_language = texts.add(gr.State(DEFAULT), lambda lang: lang)

    views = [headline, schedule_plot, schedule_alt, gantt_plot, gantt_alt, requests]
    outputs = [*views, csv, last]
    serve = dict(fn=ev.on_serve, inputs=[burst, default_budget, chat, num_blocks, max_batch_tokens], outputs=outputs,
                 concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    for event in lesson.connect(fields):
        event.then(**serve)
    serve_btn.click(**serve)
    model_changed(demo)(ev.on_model, None, [chat, *outputs], api_visibility="private", queue=False)
    page_language.change(ev.on_language, last, views, api_visibility="private", show_progress="hidden")
    gr.api(api.serving_api, api_name="serving", concurrency_id=MODEL_CONCURRENCY)
