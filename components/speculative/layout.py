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

from ..common import ASSETS, MODEL_CONCURRENCY, model_changed
from ..share import share_link
from ..teaching import LessonPanel
from .api import draft_models, speculative_api, speculative_compare_api, speculative_sweep_api
from .events import default_layers, drafter_choices, max_layers, on_compare, on_model, on_page, on_rule_step, on_run, on_sweep
from .figures import CSS

TITLE = "Speculative decoding"
_DATA = json.loads((ASSETS / "examples" / "speculative.json").read_text(encoding="utf-8"))
EXAMPLES = _DATA["examples"]
DEFAULT = EXAMPLES[0]

INTRO = (f"Pick a **drafter** and press **Run**: transformers' own assisted generation runs with it, and every step "
         f"is recorded (the draft, the verification pass, what was kept), then plain decoding of the same tokens is "
         f"timed in the same request. Limits: 1 to {MAX_DRAFT_TOKENS} draft tokens, {MAX_SPEC_NEW_TOKENS} new tokens "
         f"per run (the plain run doubles the work); the k sweep and the comparison use up to "
         f"{MAX_SPEC_SWEEP_NEW_TOKENS} tokens per run and {MAX_SPEC_SWEEP_PASSES:,} forward passes in all. Presence "
         "and frequency penalties do not exist in transformers' generate(), so they are not offered here.")
SWEEP_NOTE = ("The same prompt and drafter with k = 1, 2, … 8 draft tokens per step. More draft tokens save target "
              "passes while they are accepted, but each verification pass grows and every rejected draft was drafted "
              "for nothing: the speedup rises, then falls. Plain decoding is timed before, in the middle and after "
              "(the median is the reference). A sweep takes a while on a small CPU.")
COMPARE_NOTE = (f"Up to {MAX_SPEC_COMPARE_DRAFTERS} drafters on the same prompt with the same k, against plain decoding "
                "timed before and after. Early exit uses the layers set above.")


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "speculative")
    gr.Markdown(INTRO)
    facts = gr.HTML(elem_id="spd-model-note")
    choices = drafter_choices()
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=DEFAULT["prompt"], lines=5, max_length=8000, elem_id="spd-prompt")
        with gr.Column(scale=2, min_width=300):
            drafter = gr.Dropdown(choices=choices, value=DEFAULT["drafter"], label="drafter", elem_id="spd-drafter")
            layers = gr.Slider(1, max_layers(), value=DEFAULT.get("layers", default_layers()), step=1,
                               label="early exit: layers the drafter uses", elem_id="spd-layers")
            with gr.Row():
                num_draft = gr.Slider(1, MAX_DRAFT_TOKENS, value=DEFAULT["num_draft_tokens"], step=1,
                                      label=f"k: draft tokens per step (1–{MAX_DRAFT_TOKENS})", elem_id="spd-k")
                max_new = gr.Number(label=f"max new tokens (≤ {MAX_SPEC_NEW_TOKENS})", value=DEFAULT["max_new_tokens"],
                                    precision=0, minimum=1, maximum=MAX_SPEC_NEW_TOKENS, elem_id="spd-max-new")
            with gr.Row():
                chat = gr.Checkbox(label="as chat (chat template)", value=DEFAULT["chat"], elem_id="spd-chat")
                temperature = gr.Slider(0, 2, value=DEFAULT["temperature"], step=0.05,
                                        label="temperature (0 = greedy)", elem_id="spd-temperature")
                seed = gr.Number(label="seed (sampling; empty = random)", value=7, precision=0, minimum=0,
                                 maximum=MAX_SEED, elem_id="spd-seed", elem_classes=["lie-advanced"])
    gr.Examples(examples=[[e["prompt"], e["chat"], e["drafter"], e.get("layers", default_layers()),
                           e["num_draft_tokens"], e["max_new_tokens"], e["temperature"]] for e in EXAMPLES],
                example_labels=[e["label"] for e in EXAMPLES],
                inputs=[prompt, chat, drafter, layers, num_draft, max_new, temperature], label="Examples")
    run_btn = gr.Button("Run ▸ (speculative, then plain decoding of the same tokens)", variant="primary",
                        elem_id="spd-run")
    fields = {"prompt": prompt, "chat": chat, "drafter": drafter, "layers": layers, "num_draft_tokens": num_draft,
              "max_new_tokens": max_new, "temperature": temperature, "seed": seed}
    loaded = share_link(demo, "speculative", fields)

    headline = gr.HTML(elem_id="spd-headline", css_template=CSS)
    passes_plot = gr.Plot(label="The same text, its forward passes counted", elem_id="spd-passes-plot")
    passes_alt = gr.Markdown(elem_id="spd-passes-summary", elem_classes=["lie-alt"])
    gr.Markdown("### Step by step: draft, verify in one pass, accept")
    steps = gr.HTML(elem_id="spd-steps-html", css_template=CSS)
    acceptance_plot = gr.Plot(label="Acceptance per step", elem_id="spd-acceptance-plot")
    acceptance_alt = gr.Markdown(elem_id="spd-acceptance-summary", elem_classes=["lie-alt"])
    gr.Markdown("### Speedup: passes and wall time against plain decoding")
    speedup_plot = gr.Plot(label="Speedup", elem_id="spd-speedup-plot")
    speedup_alt = gr.Markdown(elem_id="spd-speedup-summary", elem_classes=["lie-alt"])
    with gr.Row(elem_classes=["lie-advanced"]):
        download = gr.DownloadButton("⬇ The run as JSON (every step)", size="sm", elem_id="spd-json", interactive=False)

    gr.Markdown("### Sampling: the rule that keeps the target's distribution\n"
                "With temperature > 0 and a drafter that gives probabilities (a model, early exit), transformers "
                "accepts draft token x with probability **min(1, p(x)/q(x))** (p: the target, q: the drafter) and, at "
                "the first rejection, draws the target's token from **normalise(max(p − q, 0))**. Every token then has "
                "exactly the target's distribution p.")
    rule_step = gr.Slider(1, 2, value=1, step=1, visible=False, label="step to show", elem_id="spd-rule-step")
    rule_plot = gr.Plot(label="p, q and the residual at one step", elem_id="spd-rule-plot")
    rule_alt = gr.Markdown(elem_id="spd-rule-summary", elem_classes=["lie-alt"])
    trace = gr.State(None)

    gr.Markdown("### How many draft tokens? The k sweep")
    gr.Markdown(SWEEP_NOTE)
    with gr.Row():
        sweep_new = gr.Slider(8, MAX_SPEC_SWEEP_NEW_TOKENS, value=_DATA.get("sweep_max_new_tokens", 32), step=1,
                              label=f"new tokens per run (≤ {MAX_SPEC_SWEEP_NEW_TOKENS})", elem_id="spd-sweep-new")
        sweep_btn = gr.Button("Sweep k = 1 … 8", elem_id="spd-sweep-run")
    sweep_plot = gr.Plot(label="Speedup and acceptance for k = 1..8", elem_id="spd-sweep-plot")
    sweep_alt = gr.Markdown(elem_id="spd-sweep-summary", elem_classes=["lie-alt"])
    sweep_table = gr.HTML(elem_id="spd-sweep-html", css_template=CSS)

    gr.Markdown("### Drafters side by side")
    gr.Markdown(COMPARE_NOTE)
    with gr.Row():
        compare_drafters = gr.CheckboxGroup(choices=choices, value=[PROMPT_LOOKUP, EARLY_EXIT, draft_models()[0]],
                                            label="drafters", elem_id="spd-compare-drafters", scale=3)
        compare_btn = gr.Button("Compare drafters", elem_id="spd-compare-run", scale=1)
    compare_plot = gr.Plot(label="Drafters compared", elem_id="spd-compare-plot")
    compare_alt = gr.Markdown(elem_id="spd-compare-summary", elem_classes=["lie-alt"])
    compare_table = gr.HTML(elem_id="spd-compare-html", css_template=CSS)

    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    controls = [prompt, chat, drafter, layers, num_draft, max_new, temperature, seed]
    run_outputs = [headline, passes_plot, passes_alt, steps, acceptance_plot, acceptance_alt, speedup_plot, speedup_alt,
                   rule_step, rule_plot, rule_alt, trace, download, seed]
    run = dict(fn=on_run, inputs=controls, outputs=run_outputs, **model_event)
    sweep_outputs = [sweep_plot, sweep_alt, sweep_table]
    compare_outputs = [compare_plot, compare_alt, compare_table]

    # Page load: a link's values first, then this model's note and layer range; a link to this tab also runs.
    loaded.then(on_page, [chat, layers], [facts, layers, chat], api_visibility="private", queue=False).then(
        linked_run, controls, run_outputs, **model_event)
    model_changed(demo)(on_model, None, [facts, layers, chat, *run_outputs[:-1], *sweep_outputs, *compare_outputs],
                        api_visibility="private", queue=False)
    for event in lesson.connect(fields):
        event.then(**run)
    gr.on([run_btn.click, prompt.submit], **run)
    rule_step.release(on_rule_step, [trace, rule_step], [rule_plot, rule_alt], api_visibility="private", queue=False)
    sweep_btn.click(on_sweep, [prompt, chat, drafter, layers, sweep_new, temperature, seed], sweep_outputs,
                    **model_event)
    compare_btn.click(on_compare, [prompt, chat, compare_drafters, layers, num_draft, sweep_new, temperature, seed],
                      compare_outputs, **model_event)

    gr.api(speculative_api, api_name="speculative", concurrency_id=MODEL_CONCURRENCY)
    gr.api(speculative_sweep_api, api_name="speculative_sweep", concurrency_id=MODEL_CONCURRENCY)
    gr.api(speculative_compare_api, api_name="speculative_compare", concurrency_id=MODEL_CONCURRENCY)


def linked_run(prompt, chat, drafter, layers, num_draft_tokens, max_new_tokens, temperature, seed,
               request: gr.Request):
    """On page load, only for a link to this tab: run its view (a plain visit runs nothing, so a class opening the
    app does not queue thirty runs)."""
    if not request or request.query_params.get("tab") != "speculative":
        return (gr.skip(),) * 14
    return on_run(prompt, chat, drafter, layers, num_draft_tokens, max_new_tokens, temperature, seed)
