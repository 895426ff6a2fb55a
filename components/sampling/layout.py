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
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Sampling"
EXAMPLES = json.loads((ASSETS / "examples" / "sampling.json").read_text())["examples"]
PARAMS = ev.PARAMS
DEFAULT = EXAMPLES[0]
TICK_S = 0.8  # Play: one step per tick

INTRO = (f"**Step** draws one token and shows each stage; drag a slider to re-apply the pipeline to the same logits "
         f"(no new model call); click a generated token to go back to its step; pick another candidate to branch. "
         f"Limits: prompt {MAX_PROMPT_TOKENS:,} tokens, {MAX_NEW_TOKENS} new tokens, {MAX_STOP_SEQUENCES} stop "
         f"sequences of {MAX_STOP_CHARS} characters.")
CONSTRAINT_KINDS = [("none", "none"), ("one of a list", "choice"), ("regex", "regex"), ("JSON schema", "json_schema")]
COMPARE_INTRO = (f"Run **A** is the run above: its prompt and all its settings (constraint and ablation included). "
                 f"Run **B** is the same prompt with the settings below. Both are generated together, step by step "
                 f"(at most {MAX_COMPARE_NEW_TOKENS} new tokens each).")


# ---------------------------------------------------------------------------------------------------
# Layout


def run_b_controls() -> dict:
    """Run B's controls (unrendered: the compare box renders them), by link key."""
    models = [("the same model as A", "")] + [c for c in model_choices() if c[1] != OTHER]
    return {
        "b_temperature": gr.Slider(0, min(2.0, MAX_TEMPERATURE), value=1.2, step=0.05, label="temperature B",
                                   elem_id="smp-b-temperature", render=False),
        "b_top_k": gr.Slider(0, 200, value=0, step=1, label="top-k B", elem_id="smp-b-top-k", render=False),
        "b_top_p": gr.Slider(0.01, 1.0, value=1.0, step=0.01, label="top-p B", elem_id="smp-b-top-p", render=False),
        "b_min_p": gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="min-p B", elem_id="smp-b-min-p", render=False),
        "b_repetition_penalty": gr.Slider(0.5, min(2.0, MAX_REPETITION_PENALTY), value=1.0, step=0.05,
                                          label="repetition penalty B", elem_id="smp-b-repetition", render=False),
        "b_seed": gr.Number(label="seed B", value=42, precision=0, minimum=0, maximum=MAX_SEED, elem_id="smp-b-seed",
                            render=False),
        "b_model": gr.Dropdown(models, value="", label="model B", elem_id="smp-b-model", render=False),
        "b_constraint": gr.Checkbox(label="B uses A's constraint", value=False, elem_id="smp-b-constraint",
                                    render=False),
        "b_ablation": gr.Textbox(label="ablation B (e.g. L3H2; empty = none)", max_length=500,
                                 elem_id="smp-b-ablation", render=False),
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
    lesson = LessonPanel(demo, "sampling")
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=DEFAULT["prompt"], lines=2, max_length=4000, elem_id="smp-prompt")
        with gr.Column(scale=2, min_width=260):
            with gr.Row():
                chat = gr.Checkbox(label="as chat (chat template)", value=DEFAULT["chat"], elem_id="smp-chat")
                seed = gr.Number(label="seed (empty = a new random one)", value=42, precision=0, minimum=0,
                                 maximum=MAX_SEED, elem_id="smp-seed")
            with gr.Row():
                max_new = gr.Number(label=f"max new tokens (≤ {MAX_NEW_TOKENS})", value=48, precision=0, minimum=1,
                                    maximum=MAX_NEW_TOKENS, elem_id="smp-max-new")
                min_new = gr.Number(label="min new tokens (EOS blocked until)", value=0, precision=0, minimum=0,
                                    maximum=MAX_NEW_TOKENS, elem_id="smp-min-new", elem_classes=["lie-advanced"])
            stop_text = gr.Textbox(label=f"stop sequences (one per line, ≤ {MAX_STOP_SEQUENCES}; \\n = newline)",
                                   lines=1, max_lines=MAX_STOP_SEQUENCES, elem_id="smp-stop")
    with gr.Row(elem_id="smp-sliders"):
        temperature = gr.Slider(0, min(2.0, MAX_TEMPERATURE), value=DEFAULT["temperature"], step=0.05,
                                label="temperature (0 = greedy)", elem_id="smp-temperature")
        top_k = gr.Slider(0, 200, value=DEFAULT["top_k"], step=1, label="top-k (0 = off)", elem_id="smp-top-k")
        top_p = gr.Slider(0.01, 1.0, value=DEFAULT["top_p"], step=0.01, label="top-p (1 = off)", elem_id="smp-top-p")
        min_p = gr.Slider(0.0, 1.0, value=DEFAULT["min_p"], step=0.01, label="min-p (0 = off)", elem_id="smp-min-p")
    with gr.Row():
        repetition = gr.Slider(0.5, min(2.0, MAX_REPETITION_PENALTY), value=DEFAULT["repetition_penalty"], step=0.05,
                               label="repetition penalty θ (1 = off)", elem_id="smp-repetition")
        presence = gr.Slider(-MAX_PRESENCE_PENALTY, MAX_PRESENCE_PENALTY, value=DEFAULT["presence_penalty"], step=0.1,
                             label="presence penalty (0 = off)", elem_id="smp-presence", elem_classes=["lie-advanced"])
        frequency = gr.Slider(-MAX_FREQUENCY_PENALTY, MAX_FREQUENCY_PENALTY, value=DEFAULT["frequency_penalty"],
                              step=0.1, label="frequency penalty (0 = off)", elem_id="smp-frequency",
                              elem_classes=["lie-advanced"])
    reason = unavailable_reason()  # None where xgrammar is installed
    structured = LessonPanel(demo, "structured", open=False)  # its own lesson: the constraint, ablation, compare
    with gr.Row(elem_id="smp-run-options"):
        with gr.Column(scale=3, min_width=320):
            constraint_kind = gr.Radio(CONSTRAINT_KINDS, value="none", interactive=reason is None,
                                       label="constraint (structured output): a grammar removes every token that "
                                             "cannot continue a valid output", elem_id="smp-constraint-kind")
            constraint = gr.Textbox(label="the choices (one per line), the regular expression, or the JSON schema",
                                    lines=1, max_lines=8, max_length=MAX_CONSTRAINT_CHARS, interactive=reason is None,
                                    elem_id="smp-constraint")
            with gr.Row(elem_id="smp-presets"):
                presets = [gr.Button(name, size="sm", interactive=reason is None, elem_id=f"smp-preset-{i}",
                                     min_width=80) for i, name in enumerate(PRESETS)]
            if reason:
                gr.Markdown(reason, elem_id="smp-constraint-missing")
        with gr.Column(scale=2, min_width=260):
            ablation = gr.Textbox(label="generate with an ablation: heads / blocks switched off in every pass "
                                        "(e.g. L3H2, mlp L0; empty = none)", max_length=500, elem_id="smp-ablation")
            ablation_mode = gr.Radio([("zero", "zero"), ("mean over the prompt", "mean")], value="zero",
                                     label="ablation mode", elem_id="smp-ablation-mode", elem_classes=["lie-advanced"])
    examples = gr.Examples(
        examples=[[e["prompt"], e["chat"], *[e[k] for k in PARAMS]] for e in EXAMPLES],
        example_labels=[e["label"] for e in EXAMPLES],
        inputs=[prompt, chat, temperature, top_k, top_p, min_p, repetition, presence, frequency],
        label="Examples (each sets the prompt and the sliders)",
    )
    with gr.Row(elem_id="smp-buttons"):
        step_btn = gr.Button("Step ▸", variant="primary", elem_id="smp-step")
        play_btn = gr.Button("▶ Play", elem_id="smp-play")
        gen_btn = gr.Button("Generate to end ⏭", elem_id="smp-generate")
        reset_btn = gr.Button("Reset ↺", elem_id="smp-reset")
    with gr.Row(elem_id="smp-predict-row", equal_height=True):
        predict = gr.Checkbox(label="Predict first (hide until Reveal)", value=False, elem_id="smp-predict",
                              scale=2, min_width=240)
        guess = gr.Textbox(label="your guess (optional: its rank and probability show on Reveal)", scale=3,
                           max_length=100, elem_id="smp-guess")
        reveal_btn = gr.Button("Reveal 👀", elem_id="smp-reveal", scale=1, min_width=120)
    # The number of tokens generated: a shared link replays that many seeded steps (see on_first_view).
    steps = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_NEW_TOKENS, visible=False, elem_id="smp-steps")
    # Whether the compare view is on: a shared link with compare=1 runs it too.
    compare_on = gr.Checkbox(value=False, visible=False, elem_id="smp-compare-on")
    b_fields = run_b_controls()  # shown in the compare box below, but part of this tab's link
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
        waterfall = gr.Plot(label="Each stage, on the top candidates (grey: removed)", elem_id="smp-waterfall")
        waterfall_alt = gr.Markdown(elem_id="smp-waterfall-alt", elem_classes=["lie-alt"])
        table = gr.HTML(elem_id="smp-table", css_template=CSS)
        with gr.Row():
            with gr.Column(scale=3):
                draw = gr.Plot(label="The draw", elem_id="smp-draw")
                draw_alt = gr.Markdown(elem_id="smp-draw-alt", elem_classes=["lie-alt"])
            with gr.Column(scale=2, elem_classes=["lie-advanced"]):
                whatif = gr.Radio(label="What-if: take another token here and continue", choices=[],
                                  elem_id="smp-whatif")
                branch_btn = gr.Button("Branch: continue with this token", elem_id="smp-branch")
        with gr.Row(elem_classes=["lie-advanced"]):
            stage_csv = gr.DownloadButton("⬇ Stage table of this step as CSV", size="sm", elem_id="smp-stage-csv",
                                          interactive=False)
            trace_csv = gr.DownloadButton("⬇ Generated tokens as CSV", size="sm", elem_id="smp-trace-csv",
                                          interactive=False)

    with gr.Accordion("Compare two runs side by side (A = the run above, B = the settings here)", open=False,
                      elem_id="smp-compare-box") as compare_box:
        gr.Markdown(COMPARE_INTRO)
        with gr.Row():
            for name in ("b_model", "b_seed", "b_constraint", "b_ablation"):
                b_fields[name].render()
        with gr.Row():
            for name in ev.B_PARAMS:
                b_fields[name].render()
        with gr.Row():
            compare_btn = gr.Button("Compare A and B ⇆", variant="primary", elem_id="smp-compare")
            same_btn = gr.Button("B = A", size="sm", elem_id="smp-b-same")
            no_constraint_btn = gr.Button("Compare with B = A without the constraint", size="sm",
                                          elem_id="smp-b-no-constraint")
            no_ablation_btn = gr.Button("Compare with B = A without the ablation", size="sm",
                                        elem_id="smp-b-no-ablation")
        compare_status = gr.Markdown(elem_id="smp-compare-status")
        compare_tokens = gr.HTML(elem_id="smp-compare-tokens", css_template=CSS)
        compare_plot = gr.Plot(label="Two runs, position by position", elem_id="smp-compare-plot")
        compare_alt = gr.Markdown(elem_id="smp-compare-alt", elem_classes=["lie-alt"])

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
    model_changed(demo)(lambda: session().has_chat_template, None, chat, **quick).then(
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

    # Two runs side by side.
    compare_btn.click(ev.on_compare, [*controls, *b_controls], compare_outputs, **model_event)
    same_btn.click(ev.b_same, controls, b_controls, **quick)
    for button, fill in ((no_constraint_btn, ev.b_without_constraint), (no_ablation_btn, ev.b_without_ablation)):
        button.click(fill, controls, b_controls, **quick).then(ev.on_compare, [*controls, *b_controls],
                                                                compare_outputs, **model_event)

    gr.api(next_token_api, api_name="next_token", concurrency_id=MODEL_CONCURRENCY)
    gr.api(generate_api, api_name="generate", concurrency_id=MODEL_CONCURRENCY)
    gr.api(compare_api, api_name="compare", concurrency_id=MODEL_CONCURRENCY)

