"""Memory tab: what each way of saving memory saves, and what it costs in the model's own predictions.

Four sections, each a button that runs one analysis on the text (cached in the session, so running it again or
moving to another section does not run the model again): the weights at several precisions, the KV cache plain vs
quantized, bounded caches (a sliding window, sinks + window, heavy hitters) at one budget and over a sweep of budgets,
and, for a model with sliding-window layers (Gemma 3), the bytes each kind of layer holds at long context. The lesson
(assets/lessons/memory.md) sits on top with its "try this" buttons; a link carries the text, the settings and the
section to run.
"""

from __future__ import annotations

import json

import gradio as gr

from inference.limits import (MAX_KV_EVAL_TOKENS, MAX_LAYER_KIND_TOKENS, MAX_POLICY_BUDGET, MAX_PRECISION_TOKENS,
                              MAX_SINKS, MAX_TEXT_CHARS, MIN_POLICY_BUDGET, POLICY_SWEEP_BUDGETS, PRECISION_NEW_TOKENS,
                              PRECISION_REPEATS)
from inference.precision import PRECISIONS

from ..common import ASSETS, MODEL_CONCURRENCY, model_changed
from ..share import share_link
from ..teaching import LessonPanel
from .api import kv_policies_api, kv_precision_api, precision_api
from .events import (
    ALL_OUTPUTS, DEFAULT_DTYPES, OUTPUTS, linked_section, on_kv_precision, on_layers, on_model, on_page, on_policies,
    on_precision, on_sweep, run_section,
)
from .figures import CSS

TITLE = "Memory"
EXAMPLES = json.loads((ASSETS / "examples" / "memory.json").read_text(encoding="utf-8"))["texts"]
DEFAULT_TEXT = next(iter(EXAMPLES.values()))

INTRO = (f"Type a text (or keep the lesson's) and press a section's button: every number is measured on the loaded model "
         f"in that run. Limits: {MAX_PRECISION_TOKENS} tokens for the precision comparison, {MAX_KV_EVAL_TOKENS} for the "
         "KV-cache runs (one decode pass per token: a long text takes a while on a small CPU; results are cached).")

PRECISION_INTRO = (f"Each precision is a copy of the model (one at a time, freed after its row), run over the text once "
                   f"(its next-token distribution at every position against the loaded model's), then timed on "
                   f"{PRECISION_REPEATS} greedy runs of {PRECISION_NEW_TOKENS} tokens that alternate with the loaded "
                   "model's. int8 keeps float32 activations; int4 runs on torch's int4 CPU kernel with bfloat16 "
                   "activations.")
KV_INTRO = ("The loaded model (unchanged) reads the text through two KV caches side by side: transformers' plain cache "
            "and its QuantizedCache with the pure-torch fp8 backend (float8 values, one scale per layer). After a short "
            "prefill every token is one decode pass, so each later prediction reads the quantized keys and values.")
POLICY_INTRO = ("Keep at most the **budget** of tokens in every layer's cache: a **sliding window** keeps the last ones; "
                "**sinks + window** (StreamingLLM) also keeps the first few; **heavy hitters** (H2O) keeps the recent half "
                "and the earlier tokens that received the most attention. Each runs the text one decode pass per token "
                "through a cache layer of ours, RoPE positions kept right.")


def _alt(elem_id: str) -> gr.Markdown:
    """The one-line text alternative under a figure."""
    return gr.Markdown(elem_id=elem_id, elem_classes=["lie-alt"])


def _download(label: str, elem_id: str) -> gr.DownloadButton:
    return gr.DownloadButton(label, size="sm", elem_id=elem_id, interactive=False, scale=0, min_width=300)


def _naming(section: str):
    return lambda: section


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "memory")
    gr.Markdown(INTRO)
    model_note = gr.HTML(elem_id="mem-model-note")
    text = gr.Textbox(label="Text", value=DEFAULT_TEXT, lines=4, max_lines=8, max_length=MAX_TEXT_CHARS,
                      elem_id="mem-text")
    gr.Examples(examples=[[t] for t in EXAMPLES.values()], example_labels=list(EXAMPLES), inputs=[text],
                label="Texts", api_visibility="private", api_name="memory_example")
    # The section a link or a "try this" runs (precision, kv_cache, policies, sweep, layers); never shown.
    section = gr.Textbox(value="", visible=False, elem_id="mem-section")
    # The sections' settings are made here, so the link's row sits under the text; each renders in its section.
    dtypes = gr.Dropdown(choices=list(PRECISIONS), value=DEFAULT_DTYPES, multiselect=True, scale=3, render=False,
                         label="precisions (the loaded model's own is always the reference)", elem_id="mem-dtypes")
    budget = gr.Slider(MIN_POLICY_BUDGET, MAX_POLICY_BUDGET, value=32, step=1, scale=2, render=False,
                       label="budget: tokens each layer keeps", elem_id="mem-budget")
    sinks = gr.Slider(0, MAX_SINKS, value=4, step=1, scale=1, label="sinks (StreamingLLM)", elem_id="mem-sinks",
                      render=False)
    max_tokens = gr.Dropdown(choices=[512, 1024, 2048], value=1024, scale=2, elem_id="mem-layers-max", render=False,
                             label=f"longest context (tokens, the text repeated; ≤ {MAX_LAYER_KIND_TOKENS:,})")
    fields = {"text": text, "dtypes": dtypes, "budget": budget, "sinks": sinks, "max_tokens": max_tokens,
              "section": section}
    loaded = share_link(demo, "memory", fields)

    gr.Markdown("### 1 · Precision of the weights")
    gr.Markdown(PRECISION_INTRO)
    with gr.Row():
        dtypes.render()
        precision_btn = gr.Button("Compare precisions", variant="primary", scale=1, elem_id="mem-precision-run")
    precision_html = gr.HTML(elem_id="mem-precision-table", css_template=CSS)
    precision_plot = gr.Plot(show_label=False, elem_id="mem-precision-plot")
    precision_alt = _alt("mem-precision-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        precision_csv = _download("⬇ Precision table as CSV", "mem-precision-csv")

    gr.Markdown("### 2 · Precision of the KV cache")
    gr.Markdown(KV_INTRO)
    kv_btn = gr.Button("Compare the plain and the fp8 KV cache", elem_id="mem-kv-run")
    kv_html = gr.HTML(elem_id="mem-kv-table", css_template=CSS)
    kv_plot = gr.Plot(show_label=False, elem_id="mem-kv-plot")
    kv_alt = _alt("mem-kv-summary")

    gr.Markdown("### 3 · Bounded caches: evicting tokens")
    gr.Markdown(POLICY_INTRO)
    with gr.Row():
        budget.render()
        sinks.render()
        with gr.Column(scale=1, min_width=220):
            policies_btn = gr.Button("Run the policies", variant="primary", elem_id="mem-policies-run")
            sweep_btn = gr.Button(f"Sweep budgets {', '.join(map(str, POLICY_SWEEP_BUDGETS))}", elem_id="mem-sweep-run")
    policies_html = gr.HTML(elem_id="mem-policies-table", css_template=CSS)
    policies_alt = _alt("mem-policies-summary")
    kept_plot = gr.Plot(label="Which positions each cache holds at the end", elem_id="mem-kept-plot")
    kept_alt = _alt("mem-kept-summary")
    first_plot = gr.Plot(show_label=False, elem_id="mem-first-plot")
    first_alt = _alt("mem-first-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        policies_csv = _download("⬇ Policies as CSV", "mem-policies-csv")
    sweep_plot = gr.Plot(show_label=False, elem_id="mem-sweep-plot")
    sweep_alt = _alt("mem-sweep-summary")

    gr.Markdown("### 4 · Sliding-window layers")
    layers_note = gr.HTML(elem_id="mem-layers-note")
    with gr.Column(elem_id="mem-layers-box") as layers_box:  # shown for a model with sliding-window layers only
        with gr.Row():
            max_tokens.render()
            layers_btn = gr.Button("Measure each kind of layer", scale=1, elem_id="mem-layers-run")
        layers_plot = gr.Plot(show_label=False, elem_id="mem-layers-plot")
        layers_alt = _alt("mem-layers-summary")

    views = dict(precision_html=precision_html, precision_plot=precision_plot, precision_alt=precision_alt,
                 precision_csv=precision_csv, kv_html=kv_html, kv_plot=kv_plot, kv_alt=kv_alt,
                 policies_html=policies_html, kept_plot=kept_plot, kept_alt=kept_alt, first_plot=first_plot,
                 first_alt=first_alt, policies_alt=policies_alt, policies_csv=policies_csv, sweep_plot=sweep_plot,
                 sweep_alt=sweep_alt, layers_plot=layers_plot, layers_alt=layers_alt)
    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    section_inputs = [section, text, dtypes, budget, sinks, max_tokens]
    all_views = [views[name] for name in ALL_OUTPUTS]
    page_outputs = [model_note, layers_note, dtypes, max_tokens, layers_box]

    loaded.then(on_page, None, page_outputs, api_visibility="private", queue=False).then(
        linked_section, section_inputs, all_views, **model_event)
    model_changed(demo)(on_model, None, [*page_outputs, *all_views], api_visibility="private", queue=False)
    for event in lesson.connect(fields):  # a "try this" sets its fields (the section among them), then runs it
        event.then(run_section, section_inputs, all_views, **model_event)

    def outputs(section_name: str) -> list:
        return [views[name] for name in OUTPUTS[section_name]]

    precision_btn.click(on_precision, [text, dtypes], outputs("precision"), **model_event)
    kv_btn.click(on_kv_precision, [text], outputs("kv_cache"), **model_event)
    policies_btn.click(on_policies, [text, budget, sinks], outputs("policies"), **model_event)
    sweep_btn.click(on_sweep, [text, sinks], outputs("sweep"), **model_event)
    layers_btn.click(on_layers, [text, max_tokens], outputs("layers"), **model_event)
    # A button also names its section, so a link copied afterwards opens the same view.
    for button, name in ((precision_btn, "precision"), (kv_btn, "kv_cache"), (policies_btn, "policies"),
                         (sweep_btn, "sweep"), (layers_btn, "layers")):
        button.click(_naming(name), None, section, queue=False, api_visibility="private")

    gr.api(precision_api, api_name="precision", concurrency_id=MODEL_CONCURRENCY)
    gr.api(kv_precision_api, api_name="kv_precision", concurrency_id=MODEL_CONCURRENCY)
    gr.api(kv_policies_api, api_name="kv_policies", concurrency_id=MODEL_CONCURRENCY)
