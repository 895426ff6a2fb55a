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

from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed
from ..i18n import DEFAULT, RTL, T, Texts, t
from ..share import share_link
from ..teaching import LessonPanel
from .api import kv_policies_api, kv_precision_api, precision_api
from .events import (
    ALL_OUTPUTS, DEFAULT_DTYPES, OUTPUTS, SECTIONS, forget, kv_precision_kept, layers_kept, layers_note, linked_section,
    model_note, on_language, on_model, on_page, policies_kept, precision_kept, run_section_kept, sweep_kept,
)
from .figures import CSS

TITLE = "Memory"
EXAMPLES = json.loads((ASSETS / "examples" / "memory.json").read_text(encoding="utf-8"))["texts"]
DEFAULT_TEXT = next(iter(EXAMPLES.values()))
# The catalogue keys of the example texts' labels, by their label in memory.json (the texts themselves stay English:
# the model reads English best). A label not named here (a text added to memory.json later) shows as it is.
EXAMPLE_KEYS = {"The lighthouse keeper (about 300 tokens)": "memory.example_lighthouse",
                "A recipe (about 120 tokens)": "memory.example_recipe",
                "Short: the capital of France": "memory.example_capitals"}

# The intros' numbers are the server's limits, filled in when the text is shown.
INTRO_VALUES = dict(precision_tokens=MAX_PRECISION_TOKENS, kv_tokens=MAX_KV_EVAL_TOKENS)
PRECISION_INTRO_VALUES = dict(repeats=PRECISION_REPEATS, new_tokens=PRECISION_NEW_TOKENS)


def _example_labels(lang: str) -> list[str]:
    return [t(EXAMPLE_KEYS[label], lang) if label in EXAMPLE_KEYS else label for label in EXAMPLES]


def _alt(texts: Texts, elem_id: str) -> gr.Markdown:
    """The one-line text alternative under a figure (written by the run, in the visitor's language; right to left
    for a right-to-left language)."""
    return texts.add(gr.Markdown(elem_id=elem_id, elem_classes=["lie-alt"]), lambda lang: gr.update(rtl=lang in RTL))


def _download(texts: Texts, key: str, elem_id: str) -> gr.DownloadButton:
    return texts.make(gr.DownloadButton, T(key), size="sm", elem_id=elem_id, interactive=False, scale=0, min_width=300)


def _naming(section: str):
    return lambda: section


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    lesson = LessonPanel(demo, "memory")
    texts.markdown("memory.intro", **INTRO_VALUES)
    model_note_box = texts.add(gr.HTML(elem_id="mem-model-note"), lambda lang: gr.update(value=model_note(lang)))
    text = texts.make(gr.Textbox, label=T("memory.text"), value=DEFAULT_TEXT, lines=4, max_lines=8,
                      max_length=MAX_TEXT_CHARS, elem_id="mem-text")
    examples = gr.Examples(examples=[[e] for e in EXAMPLES.values()], example_labels=_example_labels(DEFAULT),
                           inputs=[text], label=t("memory.examples", DEFAULT), api_visibility="private",
                           api_name="memory_example")
    texts.add(examples.dataset, lambda lang: gr.update(label=t("memory.examples", lang),
                                                       sample_labels=_example_labels(lang)))
    # The section a link or a "try this" runs (precision, kv_cache, policies, sweep, layers); never shown.
    section = gr.Textbox(value="", visible=False, elem_id="mem-section")
    # The sections' settings are made here, so the link's row sits under the text; each renders in its section.
    dtypes = texts.make(gr.Dropdown, choices=list(PRECISIONS), value=DEFAULT_DTYPES, multiselect=True, scale=3,
                        render=False, label=T("memory.dtypes"), elem_id="mem-dtypes")
    budget = texts.make(gr.Slider, MIN_POLICY_BUDGET, MAX_POLICY_BUDGET, value=32, step=1, scale=2, render=False,
                        label=T("memory.budget"), elem_id="mem-budget")
    sinks = texts.make(gr.Slider, 0, MAX_SINKS, value=4, step=1, scale=1, label=T("memory.sinks"), elem_id="mem-sinks",
                       render=False)
    longest = t("memory.max_tokens", DEFAULT, max=MAX_LAYER_KIND_TOKENS)
    max_tokens = texts.label(gr.Dropdown(choices=[512, 1024, 2048], value=1024, scale=2, elem_id="mem-layers-max",
                                         render=False, label=longest), "memory.max_tokens", max=MAX_LAYER_KIND_TOKENS)
    fields = {"text": text, "dtypes": dtypes, "budget": budget, "sinks": sinks, "max_tokens": max_tokens,
              "section": section}
    loaded = share_link(demo, "memory", fields)

    texts.make(gr.Markdown, T("memory.heading_precision"))
    texts.markdown("memory.precision_intro", **PRECISION_INTRO_VALUES)
    with gr.Row():
        dtypes.render()
        precision_btn = texts.make(gr.Button, T("memory.precision_run"), variant="primary", scale=1,
                                   elem_id="mem-precision-run")
    precision_html = gr.HTML(elem_id="mem-precision-table", css_template=CSS)
    precision_plot = gr.Plot(show_label=False, elem_id="mem-precision-plot")
    precision_alt = _alt(texts, "mem-precision-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        precision_csv = _download(texts, "memory.precision_csv", "mem-precision-csv")

    texts.make(gr.Markdown, T("memory.heading_kv"))
    texts.make(gr.Markdown, T("memory.kv_intro"))
    kv_btn = texts.make(gr.Button, T("memory.kv_run"), elem_id="mem-kv-run")
    kv_html = gr.HTML(elem_id="mem-kv-table", css_template=CSS)
    kv_plot = gr.Plot(show_label=False, elem_id="mem-kv-plot")
    kv_alt = _alt(texts, "mem-kv-summary")

    texts.make(gr.Markdown, T("memory.heading_policies"))
    texts.make(gr.Markdown, T("memory.policy_intro"))
    with gr.Row():
        budget.render()
        sinks.render()
        with gr.Column(scale=1, min_width=220):
            policies_btn = texts.make(gr.Button, T("memory.policies_run"), variant="primary",
                                      elem_id="mem-policies-run")
            sweep_budgets = ", ".join(map(str, POLICY_SWEEP_BUDGETS))
            sweep_btn = texts.value(gr.Button(t("memory.sweep_run", DEFAULT, budgets=sweep_budgets),
                                              elem_id="mem-sweep-run"), "memory.sweep_run", budgets=sweep_budgets)
    policies_html = gr.HTML(elem_id="mem-policies-table", css_template=CSS)
    policies_alt = _alt(texts, "mem-policies-summary")
    kept_plot = texts.make(gr.Plot, label=T("memory.kept_plot"), elem_id="mem-kept-plot")
    kept_alt = _alt(texts, "mem-kept-summary")
    first_plot = gr.Plot(show_label=False, elem_id="mem-first-plot")
    first_alt = _alt(texts, "mem-first-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        policies_csv = _download(texts, "memory.policies_csv", "mem-policies-csv")
    sweep_plot = gr.Plot(show_label=False, elem_id="mem-sweep-plot")
    sweep_alt = _alt(texts, "mem-sweep-summary")

    texts.make(gr.Markdown, T("memory.heading_layers"))
    layers_note_box = texts.add(gr.HTML(elem_id="mem-layers-note"), lambda lang: gr.update(value=layers_note(lang)))
    with gr.Column(elem_id="mem-layers-box") as layers_box:  # shown for a model with sliding-window layers only
        with gr.Row():
            max_tokens.render()
            layers_btn = texts.make(gr.Button, T("memory.layers_run"), scale=1, elem_id="mem-layers-run")
        layers_plot = gr.Plot(show_label=False, elem_id="mem-layers-plot")
        layers_alt = _alt(texts, "mem-layers-summary")

    # Each section's analysis, kept for this page: a change of language redraws the views from it (no model pass).
    # The picker sets `page_language` (the page's language events are wired after the tabs are built); its change
    # redraws.
    kept = {name: gr.State(None, time_to_live=STATE_TTL_S) for name in SECTIONS}
    page_language = texts.add(gr.State(DEFAULT), lambda lang: lang)

    views = dict(precision_html=precision_html, precision_plot=precision_plot, precision_alt=precision_alt,
                 precision_csv=precision_csv, kv_html=kv_html, kv_plot=kv_plot, kv_alt=kv_alt,
                 policies_html=policies_html, kept_plot=kept_plot, kept_alt=kept_alt, first_plot=first_plot,
                 first_alt=first_alt, policies_alt=policies_alt, policies_csv=policies_csv, sweep_plot=sweep_plot,
                 sweep_alt=sweep_alt, layers_plot=layers_plot, layers_alt=layers_alt)
    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    section_inputs = [section, text, dtypes, budget, sinks, max_tokens]
    all_views = [views[name] for name in ALL_OUTPUTS]
    page_outputs = [model_note_box, layers_note_box, dtypes, max_tokens, layers_box]

    all_kept = [kept[name] for name in SECTIONS]

    loaded.then(on_page, None, page_outputs, api_visibility="private", queue=False).then(
        linked_section, section_inputs, [*all_views, *all_kept], **model_event)
    model_changed(demo)(on_model, None, [*page_outputs, *all_views], api_visibility="private", queue=False)
    model_changed(demo)(forget, None, all_kept, api_visibility="private", queue=False)
    for event in lesson.connect(fields):  # a "try this" sets its fields (the section among them), then runs it
        event.then(run_section_kept, section_inputs, [*all_views, *all_kept], **model_event)

    def outputs(section_name: str) -> list:
        """A section's views, then its kept analysis."""
        return [*(views[name] for name in OUTPUTS[section_name]), kept[section_name]]

    precision_btn.click(precision_kept, [text, dtypes], outputs("precision"), **model_event)
    kv_btn.click(kv_precision_kept, [text], outputs("kv_cache"), **model_event)
    policies_btn.click(policies_kept, [text, budget, sinks], outputs("policies"), **model_event)
    sweep_btn.click(sweep_kept, [text, sinks], outputs("sweep"), **model_event)
    layers_btn.click(layers_kept, [text, max_tokens], outputs("layers"), **model_event)
    page_language.change(on_language, [page_language, *all_kept], all_views, api_visibility="private",
                         show_progress="hidden")
    # A button also names its section, so a link copied afterwards opens the same view.
    for button, name in ((precision_btn, "precision"), (kv_btn, "kv_cache"), (policies_btn, "policies"),
                         (sweep_btn, "sweep"), (layers_btn, "layers")):
        button.click(_naming(name), None, section, queue=False, api_visibility="private")

    gr.api(precision_api, api_name="precision", concurrency_id=MODEL_CONCURRENCY)
    gr.api(kv_precision_api, api_name="kv_precision", concurrency_id=MODEL_CONCURRENCY)
    gr.api(kv_policies_api, api_name="kv_policies", concurrency_id=MODEL_CONCURRENCY)
