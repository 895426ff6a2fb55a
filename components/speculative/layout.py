"""Speculative decoding tab: a cheap drafter guesses k tokens, the target checks them all in one pass; accepted
drafts are kept, the first wrong one is replaced by the target's own token. Shown step by step, counted in
forward passes, timed against plain decoding of the same tokens, and proved unchanged (greedy: the same tokens).

Everything comes from `inference.speculative` (transformers' own assisted generation, observed); figures from
`figures.py` (records in, plotly/HTML out); the handlers are in `events.py`, the JSON endpoints in `api.py`. The
lesson (assets/lessons/speculative.md) sits on top with its "try this" buttons; a link carries the run's settings.
"""

from __future__ import annotations

import json

import gradio as gr

from inference.limits import (MAX_DRAFT_TOKENS, MAX_SEED, MAX_SPEC_COMPARE_DRAFTERS, MAX_SPEC_NEW_TOKENS,
                              MAX_SPEC_SWEEP_NEW_TOKENS, MAX_SPEC_SWEEP_PASSES)
from inference.speculative import EARLY_EXIT, PROMPT_LOOKUP

from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed
from ..i18n import DEFAULT as DEFAULT_LANGUAGE
from ..i18n import RTL, T, t
from ..share import share_link
from ..teaching import LessonPanel
from .api import draft_models, speculative_api, speculative_compare_api, speculative_sweep_api
from .events import (LANGUAGE_OUTPUTS, compare_kept, default_layers, drafter_choices, forget, max_layers, model_note,
                     on_language, on_model, on_page, on_rule_step, on_run, sweep_kept)
from .figures import CSS

TITLE = "Speculative decoding"  # not translated: the app translates tab names (tab.speculative)
_DATA = json.loads((ASSETS / "examples" / "speculative.json").read_text(encoding="utf-8"))
EXAMPLES = _DATA["examples"]
DEFAULT = EXAMPLES[0]

# The examples' labels (assets/examples/speculative.json, English) -> their catalogue keys; a label not listed here
# shows as it is.
EXAMPLE_KEYS = {"Edit a paragraph (prompt lookup)": "speculative.example_edit",  # not translated: matched
                "Fix a typo (prompt lookup)": "speculative.example_typo",  # not translated: matched
                "A chat question (draft model)": "speculative.example_chat",  # not translated: matched
                "Early exit (an untrained drafter)": "speculative.example_early_exit",  # not translated: matched
                "Sampling: the min(1, p/q) rule": "speculative.example_sampling"}  # not translated: matched
LIMITS = dict(max_draft=MAX_DRAFT_TOKENS, max_new=MAX_SPEC_NEW_TOKENS, sweep_new=MAX_SPEC_SWEEP_NEW_TOKENS,
              sweep_passes=MAX_SPEC_SWEEP_PASSES)


def example_labels(lang: str = DEFAULT_LANGUAGE) -> list[str]:
    return [t(EXAMPLE_KEYS[e["label"]], lang) if e["label"] in EXAMPLE_KEYS else e["label"] for e in EXAMPLES]


def _alt(texts, elem_id: str) -> gr.Markdown:
    """A figure's one-line text alternative (written by a handler): right to left for a right-to-left language."""
    return texts.add(gr.Markdown(elem_id=elem_id, elem_classes=["lie-alt"]), lambda lang: gr.update(rtl=lang in RTL))


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    en = DEFAULT_LANGUAGE
    lesson = LessonPanel(demo, "speculative")
    texts.markdown("speculative.intro", **LIMITS)
    facts = texts.add(gr.HTML(elem_id="spd-model-note"), lambda lang: model_note(lang))
    choices = drafter_choices(en)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = texts.make(gr.Textbox, label=T("speculative.prompt"), value=DEFAULT["prompt"], lines=5,
                                max_length=8000, elem_id="spd-prompt")
        with gr.Column(scale=2, min_width=300):
            drafter = texts.add(gr.Dropdown(choices=choices, value=DEFAULT["drafter"],
                                            label=t("speculative.drafter", en), elem_id="spd-drafter"),
                                lambda lang: gr.update(label=t("speculative.drafter", lang),
                                                       choices=drafter_choices(lang)))
            layers = texts.make(gr.Slider, 1, max_layers(), value=DEFAULT.get("layers", default_layers()), step=1,
                                label=T("speculative.layers"), elem_id="spd-layers")
            with gr.Row():
                num_draft = texts.label(gr.Slider(1, MAX_DRAFT_TOKENS, value=DEFAULT["num_draft_tokens"], step=1,
                                                  label=t("speculative.num_draft", en, max=MAX_DRAFT_TOKENS),
                                                  elem_id="spd-k"), "speculative.num_draft", max=MAX_DRAFT_TOKENS)
                max_new = texts.label(gr.Number(label=t("speculative.max_new", en, max=MAX_SPEC_NEW_TOKENS),
                                                value=DEFAULT["max_new_tokens"], precision=0, minimum=1,
                                                maximum=MAX_SPEC_NEW_TOKENS, elem_id="spd-max-new"),
                                      "speculative.max_new", max=MAX_SPEC_NEW_TOKENS)
            with gr.Row():
                chat = texts.make(gr.Checkbox, label=T("speculative.chat"), value=DEFAULT["chat"], elem_id="spd-chat")
                temperature = texts.make(gr.Slider, 0, 2, value=DEFAULT["temperature"], step=0.05,
                                         label=T("speculative.temperature"), elem_id="spd-temperature")
                seed = texts.make(gr.Number, label=T("speculative.seed"), value=7, precision=0, minimum=0,
                                  maximum=MAX_SEED, elem_id="spd-seed", elem_classes=["lie-advanced"])
    examples = gr.Examples(examples=[[e["prompt"], e["chat"], e["drafter"], e.get("layers", default_layers()),
                                      e["num_draft_tokens"], e["max_new_tokens"], e["temperature"]] for e in EXAMPLES],
                           example_labels=example_labels(en),
                           inputs=[prompt, chat, drafter, layers, num_draft, max_new, temperature],
                           label=t("speculative.examples", en))
    texts.add(examples.dataset, lambda lang: gr.update(label=t("speculative.examples", lang),
                                                       sample_labels=example_labels(lang)))
    run_btn = texts.make(gr.Button, T("speculative.run"), variant="primary", elem_id="spd-run")
    fields = {"prompt": prompt, "chat": chat, "drafter": drafter, "layers": layers, "num_draft_tokens": num_draft,
              "max_new_tokens": max_new, "temperature": temperature, "seed": seed}
    loaded = share_link(demo, "speculative", fields)

    headline = gr.HTML(elem_id="spd-headline", css_template=CSS)
    passes_plot = texts.make(gr.Plot, label=T("speculative.passes_plot"), elem_id="spd-passes-plot")
    passes_alt = _alt(texts, "spd-passes-summary")
    texts.make(gr.Markdown, T("speculative.steps_heading"))
    steps = gr.HTML(elem_id="spd-steps-html", css_template=CSS)
    acceptance_plot = texts.make(gr.Plot, label=T("speculative.acceptance_plot"), elem_id="spd-acceptance-plot")
    acceptance_alt = _alt(texts, "spd-acceptance-summary")
    texts.make(gr.Markdown, T("speculative.speedup_heading"))
    speedup_plot = texts.make(gr.Plot, label=T("speculative.speedup_plot"), elem_id="spd-speedup-plot")
    speedup_alt = _alt(texts, "spd-speedup-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        # DownloadButton's first argument is its label (Texts.make would take it for the value): the label by name.
        download = texts.make(gr.DownloadButton, label=T("speculative.download"), size="sm", elem_id="spd-json",
                              interactive=False)

    texts.make(gr.Markdown, T("speculative.rule_heading"))
    rule_step = texts.make(gr.Slider, 1, 2, value=1, step=1, visible=False, label=T("speculative.rule_step"),
                           elem_id="spd-rule-step")
    rule_plot = texts.make(gr.Plot, label=T("speculative.rule_plot"), elem_id="spd-rule-plot")
    rule_alt = _alt(texts, "spd-rule-summary")
    trace = gr.State(None)

    texts.make(gr.Markdown, T("speculative.sweep_heading"))
    texts.make(gr.Markdown, T("speculative.sweep_note"))
    with gr.Row():
        sweep_new = texts.label(gr.Slider(8, MAX_SPEC_SWEEP_NEW_TOKENS, value=_DATA.get("sweep_max_new_tokens", 32),
                                          step=1, label=t("speculative.sweep_new", en, max=MAX_SPEC_SWEEP_NEW_TOKENS),
                                          elem_id="spd-sweep-new"), "speculative.sweep_new",
                                max=MAX_SPEC_SWEEP_NEW_TOKENS)
        sweep_btn = texts.make(gr.Button, T("speculative.sweep_run"), elem_id="spd-sweep-run")
    sweep_plot = texts.make(gr.Plot, label=T("speculative.sweep_plot"), elem_id="spd-sweep-plot")
    sweep_alt = _alt(texts, "spd-sweep-summary")
    sweep_table = gr.HTML(elem_id="spd-sweep-html", css_template=CSS)

    texts.make(gr.Markdown, T("speculative.compare_heading"))
    texts.markdown("speculative.compare_note", max=MAX_SPEC_COMPARE_DRAFTERS)
    with gr.Row():
        compare_drafters = texts.add(
            gr.CheckboxGroup(choices=choices, value=[PROMPT_LOOKUP, EARLY_EXIT, draft_models()[0]],
                             label=t("speculative.compare_drafters", en), elem_id="spd-compare-drafters", scale=3),
            lambda lang: gr.update(label=t("speculative.compare_drafters", lang), choices=drafter_choices(lang)))
        compare_btn = texts.make(gr.Button, T("speculative.compare_run"), elem_id="spd-compare-run", scale=1)
    compare_plot = texts.make(gr.Plot, label=T("speculative.compare_plot"), elem_id="spd-compare-plot")
    compare_alt = _alt(texts, "spd-compare-summary")
    compare_table = gr.HTML(elem_id="spd-compare-html", css_template=CSS)

    # The sweep and the comparison, kept for this page as the run is (`trace`): a change of language redraws their
    # views from them (no model pass). The picker sets `page_language` (the page's language events are wired after
    # the tabs are built); its change redraws.
    sweep_record = gr.State(None, time_to_live=STATE_TTL_S)
    compare_record = gr.State(None, time_to_live=STATE_TTL_S)
    page_language = texts.add(gr.State(en), lambda lang: lang)

    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    controls = [prompt, chat, drafter, layers, num_draft, max_new, temperature, seed]
    run_outputs = [headline, passes_plot, passes_alt, steps, acceptance_plot, acceptance_alt, speedup_plot, speedup_alt,
                   rule_step, rule_plot, rule_alt, trace, download, seed]
    run = dict(fn=on_run, inputs=controls, outputs=run_outputs, **model_event)
    sweep_outputs = [sweep_plot, sweep_alt, sweep_table]
    compare_outputs = [compare_plot, compare_alt, compare_table]

    # The tab's first view: a link's values first, then this model's note and layer range; a link to this tab also runs.
    loaded.then(on_page, [chat, layers], [facts, layers, chat], api_visibility="private", queue=False).then(
        linked_run, controls, run_outputs, **model_event)
    model_changed(demo)(on_model, None, [facts, layers, chat, *run_outputs[:-1], *sweep_outputs, *compare_outputs],
                        api_visibility="private", queue=False)
    model_changed(demo)(forget, None, [sweep_record, compare_record], api_visibility="private", queue=False)
    for event in lesson.connect(fields):
        event.then(**run)
    gr.on([run_btn.click, prompt.submit], **run)
    rule_step.release(on_rule_step, [trace, rule_step], [rule_plot, rule_alt], api_visibility="private", queue=False)
    sweep_btn.click(sweep_kept, [prompt, chat, drafter, layers, sweep_new, temperature, seed],
                    [*sweep_outputs, sweep_record], **model_event)
    compare_btn.click(compare_kept, [prompt, chat, compare_drafters, layers, num_draft, sweep_new, temperature, seed],
                      [*compare_outputs, compare_record], **model_event)
    redrawn = dict(headline=headline, passes=passes_plot, passes_alt=passes_alt, steps=steps,
                   acceptance=acceptance_plot, acceptance_alt=acceptance_alt, speedup=speedup_plot,
                   speedup_alt=speedup_alt, rule_step=rule_step, rule=rule_plot, rule_alt=rule_alt, sweep=sweep_plot,
                   sweep_alt=sweep_alt, sweep_table=sweep_table, compare=compare_plot, compare_alt=compare_alt,
                   compare_table=compare_table)
    page_language.change(on_language, [page_language, trace, rule_step, sweep_record, compare_record],
                         [redrawn[name] for name in LANGUAGE_OUTPUTS], api_visibility="private", show_progress="hidden")

    gr.api(speculative_api, api_name="speculative", concurrency_id=MODEL_CONCURRENCY)
    gr.api(speculative_sweep_api, api_name="speculative_sweep", concurrency_id=MODEL_CONCURRENCY)
    gr.api(speculative_compare_api, api_name="speculative_compare", concurrency_id=MODEL_CONCURRENCY)


def linked_run(prompt, chat, drafter, layers, num_draft_tokens, max_new_tokens, temperature, seed,
               request: gr.Request):
    """At the tab's first view, only for a link to this tab: run its view (a plain visit runs nothing, so a class
    opening the app does not queue thirty runs)."""
    if not request or request.query_params.get("tab") != "speculative":
        return (gr.skip(),) * 14
    return on_run(prompt, chat, drafter, layers, num_draft_tokens, max_new_tokens, temperature, seed)
