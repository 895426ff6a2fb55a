"""Beam search tab: the animated tree of the real search (transformers' own algorithm), the ranked finished
hypotheses, and greedy and sampled decoding of the same prompt for comparison.

This module holds the layout and its wiring; the event handlers live in `events`, the JSON endpoint in `api`,
the figures in `figures`. The lesson (assets/lessons/beam.md) explains the search; the line in code says only
how to operate it. With "Predict first" ticked, a search's tree and results stay hidden until Reveal, so a class
can guess first.
"""

from __future__ import annotations

import json

import gradio as gr

from inference.limits import (
    MAX_BEAM_NEW_TOKENS,
    MAX_LENGTH_PENALTY,
    MAX_NUM_BEAMS,
    MAX_PROMPT_TOKENS,
    MAX_SEED,
    MIN_LENGTH_PENALTY,
)

from . import events as ev
from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed
from .api import beam_search_api
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Beam search"
EXAMPLES = json.loads((ASSETS / "examples" / "beam.json").read_text())
DEFAULT = EXAMPLES["default"]

INTRO = (f"Press **Run beam search**, then **Play** or drag **step** to watch it. Top rows: one lane per live beam; "
         f"below the dashed line: finished hypotheses (stars) and the step's pruned candidates (faded); colour and "
         f"size = cumulative log-prob; hover a node for its numbers. Limits: 1–{MAX_NUM_BEAMS} beams, "
         f"1–{MAX_BEAM_NEW_TOKENS} new tokens, length penalty {MIN_LENGTH_PENALTY:g} to {MAX_LENGTH_PENALTY:g}, "
         f"prompt up to {MAX_PROMPT_TOKENS:,} tokens.")


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "beam")
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, value=DEFAULT["prompt"], elem_id="beam-prompt")
            chat = gr.Checkbox(label="as chat (apply the chat template; answers end on EOS)", value=DEFAULT["chat"],
                               elem_id="beam-chat")
            examples = gr.Examples(
                examples=[[e["prompt"], e["chat"]] for e in EXAMPLES["examples"]],
                example_labels=[e["label"] for e in EXAMPLES["examples"]], inputs=[prompt, chat], label="Examples",
            )
        with gr.Column(scale=2, min_width=280):
            num_beams = gr.Slider(1, MAX_NUM_BEAMS, value=4, step=1, label=f"num_beams (1–{MAX_NUM_BEAMS})",
                                  elem_id="beam-num-beams")
            max_new_tokens = gr.Slider(1, MAX_BEAM_NEW_TOKENS, value=12, step=1,
                                       label=f"max new tokens (1–{MAX_BEAM_NEW_TOKENS})", elem_id="beam-max-new")
            length_penalty = gr.Slider(MIN_LENGTH_PENALTY, MAX_LENGTH_PENALTY, value=1.0, step=0.1,
                                       label="length penalty (score = sum log-prob / length^penalty)",
                                       elem_id="beam-length-penalty")
            early_stopping = gr.Radio(["False", "True", "never"], value="False", label="early stopping",
                                      elem_id="beam-early-stopping", elem_classes=["lie-advanced"])
            run = gr.Button("Run beam search", variant="primary", elem_id="beam-run")
            with gr.Row(equal_height=True):
                predict = gr.Checkbox(label="Predict first (hide until Reveal)", value=False, elem_id="beam-predict",
                                      scale=2, min_width=160)
                reveal_btn = gr.Button("Reveal 👀", elem_id="beam-reveal", scale=1, min_width=100)
    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="seed for the sampled run", scale=0,
                     min_width=160, elem_id="beam-seed", elem_classes=["lie-advanced"], render=False)
    fields = {"prompt": prompt, "chat": chat, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
              "length_penalty": length_penalty, "early_stopping": early_stopping, "seed": seed, "predict": predict}
    loaded = share_link(demo, "beam", fields)
    hidden_note = gr.HTML(visible=False, elem_id="beam-hidden")
    with gr.Column(elem_id="beam-results") as results:
        summary = gr.HTML(elem_id="beam-summary")
        with gr.Row():
            with gr.Column(scale=0, min_width=120):
                play = gr.Button(ev.PLAY, variant="secondary", elem_id="beam-play")
            step = gr.Slider(0, MAX_BEAM_NEW_TOKENS, value=0, step=1, label="step", scale=4, elem_id="beam-step")
            speed = gr.Radio(list(ev.SPEEDS), value=ev.DEFAULT_SPEED, label="speed", scale=2, elem_id="beam-speed",
                             elem_classes=["lie-advanced"])
        tree_plot = gr.Plot(label="Search tree", elem_id="beam-tree")
        tree_alt = gr.Markdown(elem_id="beam-tree-alt", elem_classes=["lie-alt"])
        gr.Markdown("### Finished hypotheses, ranked by score\n"
                    "*rank by raw sum* is where each would stand without the length penalty.")
        table = gr.Dataframe(interactive=False, wrap=True, elem_id="beam-table")
        with gr.Row(elem_classes=["lie-advanced"]):
            tree_json = gr.DownloadButton("⬇ The whole tree as JSON", size="sm", elem_id="beam-tree-json",
                                          interactive=False)
            hypotheses_csv = gr.DownloadButton("⬇ Finished hypotheses as CSV", size="sm", elem_id="beam-hyp-csv",
                                               interactive=False)
        gr.Markdown("### What beam search buys: greedy and sampled decoding of the same prompt\n"
                    "Same prompt and token budget; sum log-prob is the model's own log-probability of each text, "
                    "scored with the same length penalty.")
        with gr.Row():
            seed.render()
        compare = gr.Dataframe(interactive=False, wrap=True, elem_id="beam-compare")

    request = gr.State(None, time_to_live=STATE_TTL_S)
    hidden = gr.State(False, time_to_live=STATE_TTL_S)
    playing = gr.State(False, time_to_live=STATE_TTL_S)
    timer = gr.Timer(ev.SPEEDS[ev.DEFAULT_SPEED], active=False)

    inputs = [prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping, predict]
    outputs = dict(request=request, hidden=hidden, hidden_note=hidden_note, results=results, summary=summary,
                   step=step, tree=tree_plot, tree_alt=tree_alt, table=table, tree_json=tree_json,
                   hypotheses_csv=hypotheses_csv, timer=timer, play=play, playing=playing)
    search_views = [outputs[name] for name in ev.VIEW_NAMES]
    frame_views = [outputs[name] for name in ev.FRAME_NAMES]
    model_event = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    quick = dict(api_visibility="private", queue=False)
    compare_event = dict(fn=ev.run_compare, inputs=[request, seed, hidden], outputs=compare, **model_event)

    # Searches start from explicit triggers only (never a field's programmatic .change): a shared link or a
    # "try this" sets several fields at once and must search exactly once.
    searches = [
        gr.on([run.click, prompt.submit], ev.run_search, inputs, search_views, **model_event),
        # The first view, with a shared link's values if there are any ("as chat" only with a chat template).
        loaded.then(ev.model_chat, chat, chat, **quick).then(ev.run_search, inputs, search_views, **model_event),
        # A new model: the default search on the model shown (chat only if it has a template).
        model_changed(demo)(ev.on_model, None, chat, **quick).then(ev.run_search, inputs, search_views,
                                                                    **model_event),
        examples.load_input_event.then(ev.run_search, inputs, search_views, **model_event),
    ]
    for event in lesson.connect(fields, then=dict(fn=ev.model_chat, inputs=chat, outputs=chat, queue=False)):
        searches.append(event.then(ev.run_search, inputs, search_views, **model_event))
    searches.append(reveal_btn.click(ev.reveal, [request, hidden], search_views, **model_event))
    searches.append(predict.input(ev.on_predict, [request, predict], search_views, **model_event))
    for search in searches:
        search.success(**compare_event)
    seed.submit(**compare_event)
    # Frames come from the cached tree (no model pass), so they skip the model queue.
    frame_event = dict(api_visibility="private", show_progress="hidden", concurrency_limit=4)
    step.input(ev.show_step, [step, request, hidden], [tree_plot, tree_alt], trigger_mode="always_last",
               **frame_event)
    play.click(ev.play_pause, [step, request, playing, hidden], frame_views, **frame_event)
    timer.tick(ev.tick, [step, request, playing, hidden], frame_views, **frame_event)
    speed.change(ev.set_speed, speed, timer, **quick)
    gr.api(beam_search_api, api_name="beam_search", concurrency_id=MODEL_CONCURRENCY)
