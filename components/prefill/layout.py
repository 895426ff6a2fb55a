"""Prefill & decode tab: the two phases of generation measured, the KV cache growing, what context costs.

This module holds the layout and its wiring; the handlers live in `events`, the JSON endpoints (`timeline`,
`context_sweep`) in `api`, the pure figure builders in `figures`. Every number comes from `inference.timing`,
`.sweep` and `.batch`, measured on the passes the Sampling tab's generation runs. The lesson
(assets/lessons/prefill.md) sits on top with its "try this" buttons; a link carries the run's parameters (the
seed it used included) and the sweep's longest length; every trace downloads as CSV and every figure has a
one-line text alternative under it.
"""

from __future__ import annotations

import json

import gradio as gr

from inference.limits import (
    MAX_BATCH_NEW_TOKENS,
    MAX_BATCH_PROMPT_TOKENS,
    MAX_BATCH_PROMPTS,
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    MAX_RECOMPUTE_TOKENS,
    MAX_SEED,
    MAX_SWEEP_TOKENS,
    MAX_SWEEP_WORKING_BYTES,
    SWEEP_DECODE_STEPS,
    SWEEP_LENGTHS,
)

from . import api
from . import events as ev
from ..common import ASSETS, MODEL_CONCURRENCY, model_changed
from .figures import CSS
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Prefill & decode"
_DATA = json.loads((ASSETS / "examples" / "prefill.json").read_text())
EXAMPLES = _DATA["examples"]
BATCH_PROMPTS = _DATA["batch_prompts"]
DEFAULT = EXAMPLES[0]

# How to operate the tab and its limits; the teaching text is the lesson (assets/lessons/prefill.md).
INTRO = (f"Press **Run** to generate and time every forward pass of the loaded model; untick **KV cache on** to see "
         f"why the cache exists; grow the prompt in the sweep to see what context costs. Limits: prompt "
         f"{MAX_PROMPT_TOKENS:,} tokens, {MAX_NEW_TOKENS} new tokens; without the cache at most "
         f"{MAX_RECOMPUTE_TOKENS:,} tokens processed over all passes.")

SWEEP_NOTE = (f"Lengths {', '.join(f'{n:,}' for n in SWEEP_LENGTHS)} up to the one you pick; each is one greedy "
              f"generation ({SWEEP_DECODE_STEPS} decode steps after the prefill). Cap: {MAX_SWEEP_TOKENS:,} tokens, the "
              f"model's context length, and about {MAX_SWEEP_WORKING_BYTES / 1e9:.1f} GB of working memory for the "
              "longest prefill. Results are cached per model. The longest lengths take a while on a small CPU.")


# ---------------------------------------------------------------------------------------------------
# Layout


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "prefill")
    gr.Markdown(INTRO)
    facts = gr.HTML(elem_id="pfd-model-note")
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=DEFAULT["prompt"], lines=2, max_length=8000, elem_id="pfd-prompt")
        with gr.Column(scale=2, min_width=280):
            with gr.Row():
                chat = gr.Checkbox(label="as chat (chat template)", value=DEFAULT["chat"], elem_id="pfd-chat")
                use_cache = gr.Checkbox(label="KV cache on", value=True, elem_id="pfd-cache")
            with gr.Row():
                max_new = gr.Number(label=f"max new tokens (≤ {MAX_NEW_TOKENS})", value=DEFAULT["max_new_tokens"],
                                    precision=0, minimum=1, maximum=MAX_NEW_TOKENS, elem_id="pfd-max-new")
                seed = gr.Number(label="seed (empty = random; a run writes the one it used)", value=42, precision=0,
                                 minimum=0, maximum=MAX_SEED, elem_id="pfd-seed", elem_classes=["lie-advanced"])
            temperature = gr.Slider(0, 2, value=DEFAULT["temperature"], step=0.05, label="temperature (0 = greedy)",
                                    elem_id="pfd-temperature")
    gr.Examples(examples=[[e["prompt"], e["chat"], e["max_new_tokens"], e["temperature"]] for e in EXAMPLES],
                example_labels=[e["label"] for e in EXAMPLES], inputs=[prompt, chat, max_new, temperature],
                label="Examples")
    with gr.Row():
        run_btn = gr.Button("Run ▸", variant="primary", elem_id="pfd-run")
        compare_btn = gr.Button("Run with the KV cache on and off", elem_id="pfd-compare")
    # The longest sweep length of the view, for the shareable link: empty until a sweep has run.
    sweep_link = gr.Number(value=None, precision=0, minimum=8, maximum=MAX_SWEEP_TOKENS, visible=False,
                           elem_id="pfd-sweep-link")
    fields = {"prompt": prompt, "chat": chat, "max_new_tokens": max_new, "temperature": temperature, "seed": seed,
              "use_cache": use_cache, "max_tokens": sweep_link}
    loaded = share_link(demo, "prefill", fields)
    headline = gr.HTML(elem_id="pfd-headline", css_template=CSS)
    timeline_plot = gr.Plot(label="Timeline: prefill, then one decode pass per token", elem_id="pfd-timeline")
    timeline_alt = gr.Markdown(elem_id="pfd-timeline-summary", elem_classes=["lie-alt"])
    with gr.Row(elem_classes=["lie-advanced"]):
        timeline_csv = gr.DownloadButton("⬇ Timeline as CSV (one row per pass)", size="sm",
                                         elem_id="pfd-timeline-csv", interactive=False)
    gr.Markdown("### KV cache")
    kv_text = gr.HTML(elem_id="pfd-kv-html", css_template=CSS)
    kv_plot = gr.Plot(label="KV cache: measured from the tensors vs the formula", elem_id="pfd-kv-plot")
    kv_alt = gr.Markdown(elem_id="pfd-kv-summary", elem_classes=["lie-alt"])
    gr.Markdown("### KV cache on vs off")
    compare_text = gr.HTML(elem_id="pfd-compare-html", css_template=CSS)
    compare_plot = gr.Plot(label="The same generation with and without the cache", elem_id="pfd-compare-plot")
    compare_alt = gr.Markdown(elem_id="pfd-compare-summary-alt", elem_classes=["lie-alt"])
    with gr.Row(elem_classes=["lie-advanced"]):
        compare_csv = gr.DownloadButton("⬇ Both runs as CSV", size="sm", elem_id="pfd-compare-csv", interactive=False)

    gr.Markdown("### What context length costs")
    gr.Markdown(SWEEP_NOTE)
    with gr.Row():
        sweep_max = gr.Dropdown(choices=list(SWEEP_LENGTHS), value=ev.DEFAULT_SWEEP, allow_custom_value=True,
                                label=f"longest prompt (tokens, ≤ {MAX_SWEEP_TOKENS:,})", elem_id="pfd-sweep-max")
        fresh = gr.Checkbox(label="measure again (ignore cached results)", value=False, elem_id="pfd-sweep-fresh",
                            elem_classes=["lie-advanced"])
        sweep_btn = gr.Button("Run the sweep", elem_id="pfd-sweep-run")
    sweep_plot = gr.Plot(label="Context-length sweep", elem_id="pfd-sweep-plot")
    sweep_alt = gr.Markdown(elem_id="pfd-sweep-summary", elem_classes=["lie-alt"])
    sweep_text = gr.HTML(elem_id="pfd-sweep-html", css_template=CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        sweep_csv = gr.DownloadButton("⬇ Sweep as CSV (one row per length)", size="sm", elem_id="pfd-sweep-csv",
                                      interactive=False)

    gr.Markdown("### Throughput: a batch vs one prompt at a time")
    gr.Markdown(f"Greedy decoding of up to {MAX_BATCH_PROMPTS} prompts (≤ {MAX_BATCH_PROMPT_TOKENS} tokens each), "
                "once as one left-padded batch with an attention mask, once one prompt after another. Every prompt "
                "gets exactly the chosen number of new tokens (EOS blocked), so both do the same work.")
    with gr.Row():
        batch_prompts = gr.Textbox(label=f"prompts, one per line (≤ {MAX_BATCH_PROMPTS})", value="\n".join(BATCH_PROMPTS),
                                   lines=4, elem_id="pfd-batch-prompts", scale=3)
        with gr.Column(scale=1, min_width=220):
            batch_new = gr.Slider(1, MAX_BATCH_NEW_TOKENS, value=16, step=1, label="new tokens per prompt",
                                  elem_id="pfd-batch-new")
            batch_btn = gr.Button("Measure throughput", elem_id="pfd-batch-run")
    batch_plot = gr.Plot(label="Throughput", elem_id="pfd-batch-plot")
    batch_alt = gr.Markdown(elem_id="pfd-batch-summary-alt", elem_classes=["lie-alt"])
    batch_text = gr.HTML(elem_id="pfd-batch-html", css_template=CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        batch_csv = gr.DownloadButton("⬇ Throughput as CSV", size="sm", elem_id="pfd-batch-csv", interactive=False)

    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    controls = [prompt, chat, max_new, temperature, seed]
    run_outputs = [headline, timeline_plot, timeline_alt, kv_text, kv_plot, kv_alt, timeline_csv, seed]
    compare_outputs = [compare_text, compare_plot, compare_alt, compare_csv, seed]
    sweep_outputs = [sweep_plot, sweep_alt, sweep_text, sweep_csv, sweep_link]
    batch_outputs = [batch_plot, batch_alt, batch_text, batch_csv]
    run = dict(fn=ev.on_run, inputs=[*controls, use_cache], outputs=run_outputs, **model_event)
    compare = dict(fn=ev.on_compare, inputs=controls, outputs=compare_outputs, **model_event)
    sweep_from_field = dict(fn=ev.sweep_to, inputs=sweep_link, outputs=[sweep_max, *sweep_outputs], **model_event)

    # Page load: the link's values are applied first; then the note for this model, then (for a link to this
    # tab only) its run and its sweep.
    loaded.then(ev.on_page, chat, [facts, sweep_max, chat], api_visibility="private", queue=False).then(
        ev.linked_run, [*controls, use_cache], run_outputs, **model_event).then(
        ev.linked_sweep, sweep_link, [sweep_max, *sweep_outputs], **model_event)
    model_changed(demo)(ev.on_model, None, [facts, sweep_max, chat, sweep_link, *run_outputs[:-1], *compare_outputs[:-1],
                                         *sweep_outputs[:-1], *batch_outputs], api_visibility="private", queue=False)
    # "Try this": a button sets its fields, then runs what it is about (a run; a run and the cache comparison
    # when it turns the cache off; the sweep when it names a longest length).
    for t, event in zip(lesson.lesson.tries, lesson.connect(fields)):
        if "max_tokens" in t.values:
            event.then(**sweep_from_field)
        elif t.values.get("use_cache") is False:
            event.then(**run).then(**compare)
        else:
            event.then(**run)
    gr.on([run_btn.click, prompt.submit], **run)
    compare_btn.click(**compare)
    sweep_btn.click(ev.on_sweep, [sweep_max, fresh], sweep_outputs, **model_event)
    batch_btn.click(ev.on_batch, [batch_prompts, batch_new, chat], batch_outputs, **model_event)

    gr.api(api.timeline_api, api_name="timeline", concurrency_id=MODEL_CONCURRENCY)
    gr.api(api.context_sweep_api, api_name="context_sweep", concurrency_id=MODEL_CONCURRENCY)
