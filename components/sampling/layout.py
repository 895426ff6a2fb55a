"""Sampling tab: from raw logits to the chosen token, stage by stage, one decode step at a time.

This module holds the layout and its wiring; the event handlers live in `events`, the JSON endpoints in `api`,
the figures in `figures`. The lesson (assets/lessons/sampling.md) explains the pipeline; the line in code says
only how to operate it.
"""

from __future__ import annotations

import json

import gradio as gr

from inference.constrained import PRESETS, unavailable_reason
from inference.limits import (
    MAX_COMPARE_NEW_TOKENS,
    MAX_CONSTRAINT_CHARS,
    MAX_FREQUENCY_PENALTY,
    MAX_NEW_TOKENS,
    MAX_PRESENCE_PENALTY,
    MAX_PROMPT_TOKENS,
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TEMPERATURE,
)

from . import events as ev
from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session
from .api import compare_api, generate_api, next_token_api
from .figures import CSS
from ..header import OTHER, choices as model_choices
from ..i18n import DEFAULT as ENGLISH, RTL, T, message, t
from ..share import share_link, when_drawn
from ..teaching import LessonPanel

TITLE = "Sampling"
EXAMPLES = json.loads((ASSETS / "examples" / "sampling.json").read_text())["examples"]
PARAMS = ev.PARAMS
DEFAULT = EXAMPLES[0]
TICK_S = 0.8  # Play: one step per tick

# The texts with numbers: (catalogue key, its values); the catalogue is assets/i18n/<lang>/sampling.yaml.
INTRO = ("sampling.intro", dict(prompt_tokens=f"{MAX_PROMPT_TOKENS:,}", new_tokens=MAX_NEW_TOKENS,
                                stop_sequences=MAX_STOP_SEQUENCES, stop_chars=MAX_STOP_CHARS))
CONSTRAINT_KINDS = [(T("sampling.kind_none"), "none"), (T("sampling.kind_choice"), "choice"),
                    (T("sampling.kind_regex"), "regex"), (T("sampling.kind_json_schema"), "json_schema")]
COMPARE_INTRO = ("sampling.compare_intro", dict(n=MAX_COMPARE_NEW_TOKENS))
# The constraint presets' buttons (the preset's name in inference.constrained.PRESETS -> its catalogue key).
PRESET_KEYS = {"yes / no": "sampling.preset_yes_no", "a date (YYYY-MM-DD)": "sampling.preset_date",
               "a person (JSON)": "sampling.preset_person"}
# The examples' labels (assets/examples/sampling.json, English) -> their catalogue keys.
EXAMPLE_KEYS = {"A poem (balanced)": "sampling.example_poem", "A fact (greedy)": "sampling.example_fact",
                "Wild (high temperature)": "sampling.example_wild", "Tamed by min-p": "sampling.example_min_p",
                "Repetition trap": "sampling.example_repetition", "Frequency penalty": "sampling.example_frequency",
                "Plain text (no chat)": "sampling.example_plain"}


def _markdown(texts, key: str, values: dict, **kwargs) -> gr.Markdown:
    """A Markdown with catalogue text `key` filled with `values`, relabelled (and turned right to left) on a
    language change (`Texts.make` fills no values)."""
    return texts.add(gr.Markdown(t(key, ENGLISH, **values), **kwargs),
                     lambda lang: gr.update(value=t(key, lang, **values), rtl=lang in RTL))


def _labelled(texts, cls, key: str, values: dict, **kwargs):
    """A component whose label is catalogue text `key` filled with `values`."""
    return texts.label(cls(label=t(key, ENGLISH, **values), **kwargs), key, **values)


def _example_label(label: str, lang: str) -> str:
    key = EXAMPLE_KEYS.get(label)
    return t(key, lang) if key else label


# ---------------------------------------------------------------------------------------------------
# Layout


def run_b_controls(texts) -> dict:
    """Run B's controls (unrendered: the compare box renders them), by link key."""
    models = [(T("sampling.b_same_model"), "")] + [c for c in model_choices(ENGLISH) if c[1] != OTHER]
    make = texts.make
    return {
        "b_temperature": make(gr.Slider, 0, min(2.0, MAX_TEMPERATURE), value=1.2, step=0.05,
                              label=T("sampling.b_temperature"), elem_id="smp-b-temperature", render=False),
        "b_top_k": make(gr.Slider, 0, 200, value=0, step=1, label=T("sampling.b_top_k"), elem_id="smp-b-top-k",
                        render=False),
        "b_top_p": make(gr.Slider, 0.01, 1.0, value=1.0, step=0.01, label=T("sampling.b_top_p"),
                        elem_id="smp-b-top-p", render=False),
        "b_min_p": make(gr.Slider, 0.0, 1.0, value=0.0, step=0.01, label=T("sampling.b_min_p"),
                        elem_id="smp-b-min-p", render=False),
        "b_repetition_penalty": make(gr.Slider, 0.5, min(2.0, MAX_REPETITION_PENALTY), value=1.0, step=0.05,
                                     label=T("sampling.b_repetition"), elem_id="smp-b-repetition", render=False),
        "b_seed": make(gr.Number, label=T("sampling.b_seed"), value=42, precision=0, minimum=0, maximum=MAX_SEED,
                       elem_id="smp-b-seed", render=False),
        "b_model": make(gr.Dropdown, choices=models, value="", label=T("sampling.b_model"), elem_id="smp-b-model",
                        render=False),
        "b_constraint": make(gr.Checkbox, label=T("sampling.b_constraint"), value=False, elem_id="smp-b-constraint",
                             render=False),
        "b_ablation": make(gr.Textbox, label=T("sampling.b_ablation"), max_length=500, elem_id="smp-b-ablation",
                           render=False),
    }


def connect_tries(panel: LessonPanel, fields: dict, chat, controls, views, play_outputs, compare_inputs,
                  compare_outputs) -> None:
    """A lesson's tries: set the fields, generate to the end, and compare when the try says so."""
    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    quick = dict(api_visibility="private", queue=False)
    tries = panel.connect(fields, then=dict(fn=ev.model_chat, inputs=chat, outputs=chat, queue=False))
    for t, event in zip(panel.lesson.tries, tries):
        event = event.then(ev.try_to_end, controls, views, **model_event).then(ev.stop_play, None, play_outputs,
                                                                              **quick)
        if t.values.get("compare"):  # a try that compares two runs: A is the run just made
            event.then(ev.on_compare, compare_inputs, compare_outputs, **model_event)


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    make = texts.make
    lesson = LessonPanel(demo, "sampling")
    _markdown(texts, *INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = make(gr.Textbox, label=T("sampling.prompt"), value=DEFAULT["prompt"], lines=2, max_length=4000,
                          elem_id="smp-prompt")
        with gr.Column(scale=2, min_width=260):
            with gr.Row():
                chat = make(gr.Checkbox, label=T("sampling.chat"), value=DEFAULT["chat"], elem_id="smp-chat")
                seed = make(gr.Number, label=T("sampling.seed"), value=42, precision=0, minimum=0,
                            maximum=MAX_SEED, elem_id="smp-seed")
            with gr.Row():
                max_new = _labelled(texts, gr.Number, "sampling.max_new", dict(n=MAX_NEW_TOKENS), value=48,
                                    precision=0, minimum=1, maximum=MAX_NEW_TOKENS, elem_id="smp-max-new")
                min_new = make(gr.Number, label=T("sampling.min_new"), value=0, precision=0, minimum=0,
                               maximum=MAX_NEW_TOKENS, elem_id="smp-min-new", elem_classes=["lie-advanced"])
            stop_text = _labelled(texts, gr.Textbox, "sampling.stop", dict(n=MAX_STOP_SEQUENCES), lines=1,
                                  max_lines=MAX_STOP_SEQUENCES, elem_id="smp-stop")
    with gr.Row(elem_id="smp-sliders"):
        temperature = make(gr.Slider, 0, min(2.0, MAX_TEMPERATURE), value=DEFAULT["temperature"], step=0.05,
                           label=T("sampling.temperature"), elem_id="smp-temperature")
        top_k = make(gr.Slider, 0, 200, value=DEFAULT["top_k"], step=1, label=T("sampling.top_k"),
                     elem_id="smp-top-k")
        top_p = make(gr.Slider, 0.01, 1.0, value=DEFAULT["top_p"], step=0.01, label=T("sampling.top_p"),
                     elem_id="smp-top-p")
        min_p = make(gr.Slider, 0.0, 1.0, value=DEFAULT["min_p"], step=0.01, label=T("sampling.min_p"),
                     elem_id="smp-min-p")
    with gr.Row():
        repetition = make(gr.Slider, 0.5, min(2.0, MAX_REPETITION_PENALTY), value=DEFAULT["repetition_penalty"],
                          step=0.05, label=T("sampling.repetition"), elem_id="smp-repetition")
        presence = make(gr.Slider, -MAX_PRESENCE_PENALTY, MAX_PRESENCE_PENALTY, value=DEFAULT["presence_penalty"],
                        step=0.1, label=T("sampling.presence"), elem_id="smp-presence", elem_classes=["lie-advanced"])
        frequency = make(gr.Slider, -MAX_FREQUENCY_PENALTY, MAX_FREQUENCY_PENALTY, value=DEFAULT["frequency_penalty"],
                         step=0.1, label=T("sampling.frequency"), elem_id="smp-frequency",
                         elem_classes=["lie-advanced"])
    reason = unavailable_reason()  # None where xgrammar is installed
    structured = LessonPanel(demo, "structured", open=False)  # its own lesson: the constraint, ablation, compare
    with gr.Row(elem_id="smp-run-options"):
        with gr.Column(scale=3, min_width=320):
            constraint_kind = make(gr.Radio, choices=CONSTRAINT_KINDS, value="none", interactive=reason is None,
                                   label=T("sampling.constraint_kind"), elem_id="smp-constraint-kind")
            constraint = make(gr.Textbox, label=T("sampling.constraint"), lines=1, max_lines=8,
                              max_length=MAX_CONSTRAINT_CHARS, interactive=reason is None, elem_id="smp-constraint")
            with gr.Row(elem_id="smp-presets"):
                # A preset without a catalogue key keeps its name.
                presets = [make(gr.Button, T(PRESET_KEYS[name]) if name in PRESET_KEYS else name, size="sm",
                                interactive=reason is None, elem_id=f"smp-preset-{i}", min_width=80)
                           for i, name in enumerate(PRESETS)]
            if reason:
                texts.add(gr.Markdown(message(reason, ENGLISH), elem_id="smp-constraint-missing"),
                          lambda lang: gr.update(value=message(reason, lang), rtl=lang in RTL))
        with gr.Column(scale=2, min_width=260):
            ablation = make(gr.Textbox, label=T("sampling.ablation"), max_length=500, elem_id="smp-ablation")
            ablation_mode = make(gr.Radio, choices=[(T("sampling.ablation_zero"), "zero"),
                                                    (T("sampling.ablation_mean"), "mean")], value="zero",
                                 label=T("sampling.ablation_mode"), elem_id="smp-ablation-mode",
                                 elem_classes=["lie-advanced"])
    examples = gr.Examples(
        examples=[[e["prompt"], e["chat"], *[e[k] for k in PARAMS]] for e in EXAMPLES],
        example_labels=[_example_label(e["label"], ENGLISH) for e in EXAMPLES],
        inputs=[prompt, chat, temperature, top_k, top_p, min_p, repetition, presence, frequency],
        label=t("sampling.examples", ENGLISH),
    )
    texts.add(examples.dataset, lambda lang: gr.update(
        label=t("sampling.examples", lang), sample_labels=[_example_label(e["label"], lang) for e in EXAMPLES]))
    with gr.Row(elem_id="smp-buttons"):
        step_btn = make(gr.Button, T("sampling.step"), variant="primary", elem_id="smp-step")
        play_btn = make(gr.Button, T("sampling.play"), elem_id="smp-play")
        gen_btn = make(gr.Button, T("sampling.generate"), elem_id="smp-generate")
        reset_btn = make(gr.Button, T("sampling.reset"), elem_id="smp-reset")
    with gr.Row(elem_id="smp-predict-row", equal_height=True):
        predict = make(gr.Checkbox, label=T("sampling.predict"), value=False, elem_id="smp-predict",
                       scale=2, min_width=240)
        guess = make(gr.Textbox, label=T("sampling.guess"), scale=3, max_length=100, elem_id="smp-guess")
        reveal_btn = make(gr.Button, T("sampling.reveal"), elem_id="smp-reveal", scale=1, min_width=120)
    # The number of tokens generated: a shared link replays that many seeded steps (see on_first_view).
    steps = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_NEW_TOKENS, visible=False, elem_id="smp-steps")
    # Whether the compare view is on: a shared link with compare=1 runs it too.
    compare_on = gr.Checkbox(value=False, visible=False, elem_id="smp-compare-on")
    b_fields = run_b_controls(texts)  # shown in the compare box below, but part of this tab's link
    fields = {"prompt": prompt, "chat": chat, "seed": seed, "temperature": temperature, "top_k": top_k,
              "top_p": top_p, "min_p": min_p, "repetition_penalty": repetition, "presence_penalty": presence,
              "frequency_penalty": frequency, "max_new_tokens": max_new, "min_new_tokens": min_new, "stop": stop_text,
              "predict": predict, "steps": steps, "constraint_kind": constraint_kind, "constraint": constraint,
              "ablation": ablation, "ablation_mode": ablation_mode, "compare": compare_on}
    loaded = share_link(demo, "sampling", {**fields, **b_fields})
    state = gr.State(None, time_to_live=STATE_TTL_S)
    playing = gr.State(False, time_to_live=STATE_TTL_S)
    timer = gr.Timer(TICK_S, active=False)

    text = gr.HTML(elem_id="smp-text", css_template=CSS, js_on_load=(
        "element.addEventListener('click', (e) => { const t = e.target.closest('[data-step]');"
        " if (t) trigger('click', {step: parseInt(t.dataset.step)}); });"))
    status = gr.Markdown(elem_id="smp-status")
    hidden = gr.HTML(visible=False, elem_id="smp-hidden")
    with gr.Column(elem_id="smp-panels") as panels:
        waterfall = make(gr.Plot, label=T("sampling.waterfall"), elem_id="smp-waterfall")
        waterfall_alt = gr.Markdown(elem_id="smp-waterfall-alt", elem_classes=["lie-alt"])
        table = gr.HTML(elem_id="smp-table", css_template=CSS)
        with gr.Row():
            with gr.Column(scale=3):
                draw = make(gr.Plot, label=T("sampling.draw"), elem_id="smp-draw")
                draw_alt = gr.Markdown(elem_id="smp-draw-alt", elem_classes=["lie-alt"])
            with gr.Column(scale=2, elem_classes=["lie-advanced"]):
                whatif = make(gr.Radio, label=T("sampling.whatif"), choices=[], elem_id="smp-whatif")
                branch_btn = make(gr.Button, T("sampling.branch"), elem_id="smp-branch")
        with gr.Row(elem_classes=["lie-advanced"]):
            stage_csv = make(gr.DownloadButton, label=T("sampling.stage_csv"), size="sm", elem_id="smp-stage-csv",
                             interactive=False)
            trace_csv = make(gr.DownloadButton, label=T("sampling.trace_csv"), size="sm", elem_id="smp-trace-csv",
                             interactive=False)

    with make(gr.Accordion, label=T("sampling.compare_box"), open=False, elem_id="smp-compare-box") as compare_box:
        _markdown(texts, *COMPARE_INTRO)
        with gr.Row():
            for name in ("b_model", "b_seed", "b_constraint", "b_ablation"):
                b_fields[name].render()
        with gr.Row():
            for name in ev.B_PARAMS:
                b_fields[name].render()
        with gr.Row():
            compare_btn = make(gr.Button, T("sampling.compare"), variant="primary", elem_id="smp-compare")
            same_btn = make(gr.Button, T("sampling.b_same"), size="sm", elem_id="smp-b-same")
            no_constraint_btn = make(gr.Button, T("sampling.b_no_constraint"), size="sm",
                                     elem_id="smp-b-no-constraint")
            no_ablation_btn = make(gr.Button, T("sampling.b_no_ablation"), size="sm", elem_id="smp-b-no-ablation")
        compare_status = gr.Markdown(elem_id="smp-compare-status")
        compare_tokens = gr.HTML(elem_id="smp-compare-tokens", css_template=CSS)
        compare_plot = make(gr.Plot, label=T("sampling.compare_plot"), elem_id="smp-compare-plot")
        compare_alt = gr.Markdown(elem_id="smp-compare-alt", elem_classes=["lie-alt"])
    # The handlers write these in the visitor's language: Persian reads right to left.
    for markdown in (status, waterfall_alt, draw_alt, compare_status, compare_alt):
        texts.add(markdown, lambda lang: gr.update(rtl=lang in RTL))
    # The page's language, for this tab's own event: a new language shows the step on view again in it (the
    # language's own event is wired after the tabs exist, so the tab follows this hidden box instead).
    language_box = texts.add(gr.Textbox(ENGLISH, visible=False, elem_id="smp-language"),
                             lambda lang: gr.update(value=lang))

    sliders = [temperature, top_k, top_p, min_p, repetition, presence, frequency]
    controls = [prompt, chat, seed, *sliders, max_new, min_new, stop_text, predict, guess, constraint_kind, constraint,
                ablation, ablation_mode]
    assert len(controls) == len(ev.CONTROL_NAMES)
    b_controls = [b_fields[name] for name in ev.COMPARE_NAMES]
    compare_outputs = [compare_tokens, compare_status, compare_plot, compare_alt, compare_on, compare_box]
    assert len(compare_outputs) == len(ev.COMPARE_VIEW_NAMES)
    outputs = dict(text=text, status=status, hidden_note=hidden, panels=panels, waterfall=waterfall,
                   waterfall_alt=waterfall_alt, table=table, draw=draw, draw_alt=draw_alt, whatif=whatif,
                   stage_csv=stage_csv, trace_csv=trace_csv, seed=seed, steps=steps, state=state)
    views = [outputs[name] for name in ev.VIEW_NAMES]
    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    quick = dict(api_visibility="private", queue=False)
    play_outputs = [playing, timer, play_btn]

    # Runs start from explicit triggers only (user input events, the link, a try, an example), never from a
    # field's programmatic .change: a link or a try sets many fields at once and must run exactly once.
    # The first view: a shared link's values (if any) are applied by `loaded`, then one run.
    loaded.then(ev.model_chat, chat, chat, **quick).then(ev.first_view, [steps, *controls], views, **model_event).then(
        ev.compare_if_on, [compare_on, *controls, *b_controls], compare_outputs, **model_event)
    # A new model: "as chat" only if it has a chat template, then a fresh run.
    when_drawn(model_changed(demo)(lambda: session().has_chat_template, None, chat, **quick).then, loaded).then(
        ev.on_reset, controls, views, **model_event)
    for panel in (lesson, structured):
        connect_tries(panel, {**fields, **b_fields, "guess": guess}, chat, controls, views, play_outputs,
                      [*controls, *b_controls], compare_outputs)
    examples.load_input_event.then(ev.on_reset, controls, views, **model_event)

    gr.on([reset_btn.click, prompt.submit, chat.input], ev.on_reset, controls, views, **model_event).then(
        ev.stop_play, None, play_outputs, **quick)
    # The seed, the constraint and the ablation define the run: a change starts a new run (only a real change).
    gr.on([seed.submit, seed.blur, constraint_kind.input, constraint.submit, constraint.blur, ablation.submit,
           ablation.blur, ablation_mode.input], ev.on_seed, [state, *controls], views, **model_event)
    for name, button in zip(PRESETS, presets):
        button.click(lambda name=name: ev.on_preset(name), None, [constraint_kind, constraint], **quick).then(
            ev.on_seed, [state, *controls], views, **model_event)
    step_btn.click(ev.on_step, [state, *controls], views, **model_event)
    generation = gen_btn.click(ev.generate_to_end, [state, *controls], views, **model_event)
    reset_btn.click(None, None, None, cancels=[generation], **quick)
    play_btn.click(ev.toggle_play, [playing], play_outputs, **quick)
    timer.tick(ev.on_tick, [state, *controls], [*views, *play_outputs], **model_event)
    # Sliders re-apply the pipeline to the stored logits of the step on view: no model call, so they stay
    # out of the model queue and always show the latest position.
    gr.on([s.input for s in sliders] + [min_new.input], ev.on_rerender, [state, *controls], views,
          api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    text.click(ev.on_show_step, [state, *controls], views, **model_event)
    branch_btn.click(ev.on_branch, [state, whatif, *controls], views, **model_event)
    gr.on([reveal_btn.click, guess.submit], ev.on_reveal, [state, *controls], views, **model_event)
    predict.input(ev.on_predict, [state, *controls], views, **model_event)
    when_drawn(language_box.change, loaded).then(ev.on_language, [state, *controls], views, show_progress="hidden",
                                                 **model_event)

    # Two runs side by side.
    compare_btn.click(ev.on_compare, [*controls, *b_controls], compare_outputs, **model_event)
    same_btn.click(ev.b_same, controls, b_controls, **quick)
    for button, fill in ((no_constraint_btn, ev.b_without_constraint), (no_ablation_btn, ev.b_without_ablation)):
        button.click(fill, controls, b_controls, **quick).then(ev.on_compare, [*controls, *b_controls],
                                                                compare_outputs, **model_event)

    gr.api(next_token_api, api_name="next_token", concurrency_id=MODEL_CONCURRENCY)
    gr.api(generate_api, api_name="generate", concurrency_id=MODEL_CONCURRENCY)
    gr.api(compare_api, api_name="compare", concurrency_id=MODEL_CONCURRENCY)

