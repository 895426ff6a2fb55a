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
from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed
from ..i18n import DEFAULT as ENGLISH, RTL, T, t
from .figures import CSS
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Prefill & decode"
_DATA = json.loads((ASSETS / "examples" / "prefill.json").read_text())
EXAMPLES = _DATA["examples"]
BATCH_PROMPTS = _DATA["batch_prompts"]
DEFAULT = EXAMPLES[0]

# How to operate the tab and its limits (catalogue texts, filled with this server's limits); the teaching text is
# the lesson (assets/lessons/<lang>/prefill.md).
INTRO_VALUES = dict(prompt_tokens=f"{MAX_PROMPT_TOKENS:,}", new_tokens=MAX_NEW_TOKENS,
                    recompute_tokens=f"{MAX_RECOMPUTE_TOKENS:,}")
SWEEP_NOTE_VALUES = dict(lengths=", ".join(f"{n:,}" for n in SWEEP_LENGTHS), steps=SWEEP_DECODE_STEPS,
                         cap=f"{MAX_SWEEP_TOKENS:,}", memory=f"{MAX_SWEEP_WORKING_BYTES / 1e9:.1f}")
BATCH_NOTE_VALUES = dict(prompts=MAX_BATCH_PROMPTS, tokens=MAX_BATCH_PROMPT_TOKENS)


def example_labels(lang: str) -> list[str]:
    """The examples' labels in `lang`: catalogue key prefill.example_<i> (from 1) where its English text is the
    label in assets/examples/prefill.json; a label the catalogue does not know stays as the file has it."""
    labels = []
    for i, e in enumerate(EXAMPLES, 1):
        key = f"prefill.example_{i}"
        try:
            known = t(key, ENGLISH) == e["label"]
        except KeyError:
            known = False
        labels.append(t(key, lang) if known else e["label"])
    return labels


def _alt(texts, elem_id: str) -> gr.Markdown:
    """A figure's one-line text alternative (written by a handler): right to left for a right-to-left language."""
    return texts.add(gr.Markdown(elem_id=elem_id, elem_classes=["lie-alt"]), lambda lang: gr.update(rtl=lang in RTL))


# ---------------------------------------------------------------------------------------------------
# Layout


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    lesson = LessonPanel(demo, "prefill")
    texts.markdown("prefill.intro", **INTRO_VALUES)
    facts = texts.add(gr.HTML(elem_id="pfd-model-note"), lambda lang: ev.model_note(lang))
    with gr.Row():
        with gr.Column(scale=3):
            prompt = texts.make(gr.Textbox, label=T("prefill.prompt"), value=DEFAULT["prompt"], lines=2, max_length=8000,
                                elem_id="pfd-prompt")
        with gr.Column(scale=2, min_width=280):
            with gr.Row():
                chat = texts.make(gr.Checkbox, label=T("prefill.chat"), value=DEFAULT["chat"], elem_id="pfd-chat")
                use_cache = texts.make(gr.Checkbox, label=T("prefill.use_cache"), value=True, elem_id="pfd-cache")
            with gr.Row():
                max_new = texts.label(gr.Number(label=t("prefill.max_new", ENGLISH, n=MAX_NEW_TOKENS),
                                                value=DEFAULT["max_new_tokens"], precision=0, minimum=1,
                                                maximum=MAX_NEW_TOKENS, elem_id="pfd-max-new"),
                                      "prefill.max_new", n=MAX_NEW_TOKENS)
                seed = texts.make(gr.Number, label=T("prefill.seed"), value=42, precision=0,
                                  minimum=0, maximum=MAX_SEED, elem_id="pfd-seed", elem_classes=["lie-advanced"])
            temperature = texts.make(gr.Slider, 0, 2, value=DEFAULT["temperature"], step=0.05,
                                     label=T("prefill.temperature"), elem_id="pfd-temperature")
    examples = gr.Examples(examples=[[e["prompt"], e["chat"], e["max_new_tokens"], e["temperature"]] for e in EXAMPLES],
                           example_labels=example_labels(ENGLISH), inputs=[prompt, chat, max_new, temperature],
                           label=t("prefill.examples", ENGLISH))
    texts.add(examples.dataset, lambda lang: gr.update(label=t("prefill.examples", lang),
                                                       sample_labels=example_labels(lang)))
    with gr.Row():
        run_btn = texts.make(gr.Button, T("prefill.run"), variant="primary", elem_id="pfd-run")
        compare_btn = texts.make(gr.Button, T("prefill.compare"), elem_id="pfd-compare")
    # The longest sweep length of the view, for the shareable link: empty until a sweep has run.
    sweep_link = gr.Number(value=None, precision=0, minimum=8, maximum=MAX_SWEEP_TOKENS, visible=False,
                           elem_id="pfd-sweep-link")
    fields = {"prompt": prompt, "chat": chat, "max_new_tokens": max_new, "temperature": temperature, "seed": seed,
              "use_cache": use_cache, "max_tokens": sweep_link}
    loaded = share_link(demo, "prefill", fields)
    headline = gr.HTML(elem_id="pfd-headline", css_template=CSS)
    timeline_plot = texts.make(gr.Plot, label=T("prefill.timeline_plot"), elem_id="pfd-timeline")
    timeline_alt = _alt(texts, "pfd-timeline-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        # A DownloadButton's first argument is its label (not its value): named here.
        timeline_csv = texts.make(gr.DownloadButton, label=T("prefill.timeline_csv"), size="sm",
                                  elem_id="pfd-timeline-csv", interactive=False)
    texts.make(gr.Markdown, T("prefill.kv_heading"))
    kv_text = gr.HTML(elem_id="pfd-kv-html", css_template=CSS)
    kv_plot = texts.make(gr.Plot, label=T("prefill.kv_plot"), elem_id="pfd-kv-plot")
    kv_alt = _alt(texts, "pfd-kv-summary")
    texts.make(gr.Markdown, T("prefill.compare_heading"))
    compare_text = gr.HTML(elem_id="pfd-compare-html", css_template=CSS)
    compare_plot = texts.make(gr.Plot, label=T("prefill.compare_plot"), elem_id="pfd-compare-plot")
    compare_alt = _alt(texts, "pfd-compare-summary-alt")
    with gr.Row(elem_classes=["lie-advanced"]):
        compare_csv = texts.make(gr.DownloadButton, label=T("prefill.compare_csv"), size="sm", elem_id="pfd-compare-csv",
                                 interactive=False)

    texts.make(gr.Markdown, T("prefill.sweep_heading"))
    texts.markdown("prefill.sweep_note", **SWEEP_NOTE_VALUES)
    with gr.Row():
        sweep_max = texts.label(gr.Dropdown(choices=list(SWEEP_LENGTHS), value=ev.DEFAULT_SWEEP, allow_custom_value=True,
                                            label=t("prefill.sweep_max", ENGLISH, n=f"{MAX_SWEEP_TOKENS:,}"),
                                            elem_id="pfd-sweep-max"),
                                "prefill.sweep_max", n=f"{MAX_SWEEP_TOKENS:,}")
        fresh = texts.make(gr.Checkbox, label=T("prefill.fresh"), value=False, elem_id="pfd-sweep-fresh",
                           elem_classes=["lie-advanced"])
        sweep_btn = texts.make(gr.Button, T("prefill.sweep_run"), elem_id="pfd-sweep-run")
    sweep_plot = texts.make(gr.Plot, label=T("prefill.sweep_plot"), elem_id="pfd-sweep-plot")
    sweep_alt = _alt(texts, "pfd-sweep-summary")
    sweep_text = gr.HTML(elem_id="pfd-sweep-html", css_template=CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        sweep_csv = texts.make(gr.DownloadButton, label=T("prefill.sweep_csv"), size="sm", elem_id="pfd-sweep-csv",
                               interactive=False)

    texts.make(gr.Markdown, T("prefill.batch_heading"))
    texts.markdown("prefill.batch_note", **BATCH_NOTE_VALUES)
    with gr.Row():
        batch_prompts = texts.label(gr.Textbox(label=t("prefill.batch_prompts", ENGLISH, n=MAX_BATCH_PROMPTS),
                                               value="\n".join(BATCH_PROMPTS), lines=4, elem_id="pfd-batch-prompts",
                                               scale=3),
                                    "prefill.batch_prompts", n=MAX_BATCH_PROMPTS)
        with gr.Column(scale=1, min_width=220):
            batch_new = texts.make(gr.Slider, 1, MAX_BATCH_NEW_TOKENS, value=16, step=1, label=T("prefill.batch_new"),
                                   elem_id="pfd-batch-new")
            batch_btn = texts.make(gr.Button, T("prefill.batch_run"), elem_id="pfd-batch-run")
    batch_plot = texts.make(gr.Plot, label=T("prefill.batch_plot"), elem_id="pfd-batch-plot")
    batch_alt = _alt(texts, "pfd-batch-summary-alt")
    batch_text = gr.HTML(elem_id="pfd-batch-html", css_template=CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        batch_csv = texts.make(gr.DownloadButton, label=T("prefill.batch_csv"), size="sm", elem_id="pfd-batch-csv",
                               interactive=False)

    # Each section's last measurement, kept for this page: a change of language redraws its views from it (no new
    # measurement). The picker sets `page_language` (the page's language events are wired after the tabs are
    # built); its change redraws.
    kept_run, kept_compare, kept_sweep, kept_batch = (gr.State(None, time_to_live=STATE_TTL_S) for _ in range(4))
    page_language = texts.add(gr.State(ENGLISH), lambda lang: lang)

    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    controls = [prompt, chat, max_new, temperature, seed]
    run_outputs = [headline, timeline_plot, timeline_alt, kv_text, kv_plot, kv_alt, timeline_csv, seed]
    compare_outputs = [compare_text, compare_plot, compare_alt, compare_csv, seed]
    sweep_outputs = [sweep_plot, sweep_alt, sweep_text, sweep_csv, sweep_link]
    batch_outputs = [batch_plot, batch_alt, batch_text, batch_csv]
    run = dict(fn=ev.run_kept, inputs=[*controls, use_cache], outputs=[*run_outputs, kept_run], **model_event)
    compare = dict(fn=ev.compare_kept, inputs=controls, outputs=[*compare_outputs, kept_compare], **model_event)
    sweep_from_field = dict(fn=ev.sweep_to_kept, inputs=sweep_link, outputs=[sweep_max, *sweep_outputs, kept_sweep],
                            **model_event)

    # The tab's first view: the link's values are applied first; then the note for this model, then (for a link to this
    # tab only) its run and its sweep.
    loaded.then(ev.on_page, chat, [facts, sweep_max, chat], api_visibility="private", queue=False).then(
        ev.linked_run, [*controls, use_cache], [*run_outputs, kept_run], **model_event).then(
        ev.linked_sweep, sweep_link, [sweep_max, *sweep_outputs, kept_sweep], **model_event)
    model_changed(demo)(ev.on_model, None, [facts, sweep_max, chat, sweep_link, *run_outputs[:-1], *compare_outputs[:-1],
                                         *sweep_outputs[:-1], *batch_outputs], api_visibility="private", queue=False)
    kept = [kept_run, kept_compare, kept_sweep, kept_batch]
    model_changed(demo)(ev.forget, None, kept, api_visibility="private", queue=False)
    # "Try this": a button sets its fields, then runs what it is about (a run; a run and the cache comparison
    # when it turns the cache off; the sweep when it names a longest length).
    for try_, event in zip(lesson.lesson.tries, lesson.connect(fields)):
        if "max_tokens" in try_.values:
            event.then(**sweep_from_field)
        elif try_.values.get("use_cache") is False:
            event.then(**run).then(**compare)
        else:
            event.then(**run)
    gr.on([run_btn.click, prompt.submit], **run)
    compare_btn.click(**compare)
    sweep_btn.click(ev.sweep_kept, [sweep_max, fresh], [*sweep_outputs, kept_sweep], **model_event)
    batch_btn.click(ev.batch_kept, [batch_prompts, batch_new, chat], [*batch_outputs, kept_batch], **model_event)
    page_language.change(ev.on_language, [page_language, *kept],
                         [*run_outputs[:6], *compare_outputs[:3], *sweep_outputs[:3], *batch_outputs[:3]],
                         api_visibility="private", show_progress="hidden")

    gr.api(api.timeline_api, api_name="timeline", concurrency_id=MODEL_CONCURRENCY)
    gr.api(api.context_sweep_api, api_name="context_sweep", concurrency_id=MODEL_CONCURRENCY)
