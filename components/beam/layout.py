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
from ..i18n import DEFAULT as EN, RTL, T, t
from ..share import share_link, when_drawn
from ..teaching import LessonPanel

TITLE = "Beam search"  # not translated: the app translates tab names
EXAMPLES = json.loads((ASSETS / "examples" / "beam.json").read_text())
DEFAULT = EXAMPLES["default"]

# Example buttons: their labels (assets/examples/beam.json) in the catalogue; a label not listed stays as it is.
EXAMPLE_KEYS = {
    "Chat: 2+2 (ends on EOS)": "beam.example_sum",
    "Chat: capital of France": "beam.example_capital",
    "Story opening": "beam.example_story",
    "Fact completion": "beam.example_fact",
    "Chat: a haiku": "beam.example_haiku",
}


def intro(lang: str = EN) -> str:
    """How to operate the tab and its limits; the lesson (assets/lessons/beam.md) explains the search."""
    return t("beam.intro", lang, run=t("beam.run", lang), max_beams=MAX_NUM_BEAMS, max_tokens=MAX_BEAM_NEW_TOKENS,
             min_penalty=f"{MIN_LENGTH_PENALTY:g}", max_penalty=f"{MAX_LENGTH_PENALTY:g}",
             prompt_tokens=f"{MAX_PROMPT_TOKENS:,}")


def example_labels(lang: str = EN) -> list[str]:
    labels = [e["label"] for e in EXAMPLES["examples"]]
    return [t(EXAMPLE_KEYS[label], lang) if label in EXAMPLE_KEYS else label for label in labels]


def _markdown(texts, text):
    """A Markdown whose text `text(lang)` is built (its fields filled), re-read and turned right to left with the
    page's language."""
    return texts.add(gr.Markdown(text(EN)), lambda lang: gr.update(value=text(lang), rtl=lang in RTL))


def _directed(texts, markdown):
    """A Markdown that a handler fills (a text alternative): right to left with a right-to-left language."""
    return texts.add(markdown, lambda lang: gr.update(rtl=lang in RTL))


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "beam")
    texts = demo.texts
    _markdown(texts, intro)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = texts.make(gr.Textbox, label=T("beam.prompt"), lines=3, value=DEFAULT["prompt"],
                                elem_id="beam-prompt")
            chat = texts.make(gr.Checkbox, label=T("beam.chat"), value=DEFAULT["chat"], elem_id="beam-chat")
            examples = gr.Examples(
                examples=[[e["prompt"], e["chat"]] for e in EXAMPLES["examples"]],
                example_labels=example_labels(), inputs=[prompt, chat], label=t("beam.examples", EN),
            )
            texts.add(examples.dataset, lambda lang: gr.update(label=t("beam.examples", lang),
                                                               sample_labels=example_labels(lang)))
        with gr.Column(scale=2, min_width=280):
            num_beams = texts.label(gr.Slider(1, MAX_NUM_BEAMS, value=4, step=1,
                                                label=t("beam.num_beams", EN, max=MAX_NUM_BEAMS),
                                                elem_id="beam-num-beams"), "beam.num_beams", max=MAX_NUM_BEAMS)
            max_new_tokens = texts.label(gr.Slider(1, MAX_BEAM_NEW_TOKENS, value=12, step=1,
                                                     label=t("beam.max_new_tokens", EN, max=MAX_BEAM_NEW_TOKENS),
                                                     elem_id="beam-max-new"),
                                         "beam.max_new_tokens", max=MAX_BEAM_NEW_TOKENS)
            length_penalty = texts.make(gr.Slider, MIN_LENGTH_PENALTY, MAX_LENGTH_PENALTY, value=1.0, step=0.1,
                                        label=T("beam.length_penalty"), elem_id="beam-length-penalty")
            # The choices are transformers' own values of early_stopping (the lesson names them so): not translated.
            early_stopping = texts.make(gr.Radio, choices=["False", "True", "never"], value="False",
                                        label=T("beam.early_stopping"), elem_id="beam-early-stopping",
                                        elem_classes=["lie-advanced"])
            run = texts.make(gr.Button, T("beam.run"), variant="primary", elem_id="beam-run")
            with gr.Row(equal_height=True):
                predict = texts.make(gr.Checkbox, label=T("beam.predict"), value=False, elem_id="beam-predict",
                                     scale=2, min_width=160)
                reveal_btn = texts.make(gr.Button, T("beam.reveal"), elem_id="beam-reveal", scale=1, min_width=100)
    seed = texts.make(gr.Number, value=0, precision=0, minimum=0, maximum=MAX_SEED, label=T("beam.seed"), scale=0,
                      min_width=160, elem_id="beam-seed", elem_classes=["lie-advanced"], render=False)
    fields = {"prompt": prompt, "chat": chat, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
              "length_penalty": length_penalty, "early_stopping": early_stopping, "seed": seed, "predict": predict}
    loaded = share_link(demo, "beam", fields)
    hidden_note = texts.add(gr.HTML(visible=False, elem_id="beam-hidden"),
                            lambda lang: gr.update(value=ev.hidden_note(lang)))
    with gr.Column(elem_id="beam-results") as results:
        summary = gr.HTML(elem_id="beam-summary")
        with gr.Row():
            with gr.Column(scale=0, min_width=120):
                play = texts.make(gr.Button, T("beam.play"), variant="secondary", elem_id="beam-play")
            step = texts.make(gr.Slider, 0, MAX_BEAM_NEW_TOKENS, value=0, step=1, label=T("beam.step"), scale=4,
                              elem_id="beam-step")
            speed = texts.make(gr.Radio, choices=[(T(ev.SPEED_KEYS[s]), s) for s in ev.SPEEDS],
                               value=ev.DEFAULT_SPEED, label=T("beam.speed"), scale=2, elem_id="beam-speed",
                               elem_classes=["lie-advanced"])
        tree_plot = texts.make(gr.Plot, label=T("beam.tree"), elem_id="beam-tree")
        tree_alt = _directed(texts, gr.Markdown(elem_id="beam-tree-alt", elem_classes=["lie-alt"]))
        texts.make(gr.Markdown, T("beam.table_heading"))
        table = gr.Dataframe(interactive=False, wrap=True, elem_id="beam-table")
        with gr.Row(elem_classes=["lie-advanced"]):
            tree_json = texts.make(gr.DownloadButton, label=T("beam.tree_json"), size="sm", elem_id="beam-tree-json",
                                   interactive=False)
            hypotheses_csv = texts.make(gr.DownloadButton, label=T("beam.hypotheses_csv"), size="sm",
                                        elem_id="beam-hyp-csv", interactive=False)
        texts.make(gr.Markdown, T("beam.compare_heading"))
        with gr.Row():
            seed.render()
        compare = gr.Dataframe(interactive=False, wrap=True, elem_id="beam-compare")

    request = gr.State(None, time_to_live=STATE_TTL_S)
    hidden = gr.State(False, time_to_live=STATE_TTL_S)
    playing = gr.State(False, time_to_live=STATE_TTL_S)
    # The comparison on screen (request, seed, the other decoders' results), kept for this page: with the request's
    # tree (the analysis cache), a change of language redraws every view without a model pass. The picker sets
    # `page_language` (the page's language events are wired after the tabs are built); its change redraws.
    compared = gr.State(None, time_to_live=STATE_TTL_S)
    page_language = texts.add(gr.State(EN), lambda lang: lang)
    timer = gr.Timer(ev.SPEEDS[ev.DEFAULT_SPEED], active=False)

    inputs = [prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping, predict]
    outputs = dict(request=request, hidden=hidden, hidden_note=hidden_note, results=results, summary=summary,
                   step=step, tree=tree_plot, tree_alt=tree_alt, table=table, tree_json=tree_json,
                   hypotheses_csv=hypotheses_csv, timer=timer, play=play, playing=playing)
    search_views = [outputs[name] for name in ev.VIEW_NAMES]
    frame_views = [outputs[name] for name in ev.FRAME_NAMES]
    model_event = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    quick = dict(api_visibility="private", queue=False)
    compare_event = dict(fn=ev.compare_kept, inputs=[request, seed, hidden], outputs=[compare, compared], **model_event)

    # Searches start from explicit triggers only (never a field's programmatic .change): a shared link or a
    # "try this" sets several fields at once and must search exactly once.
    searches = [
        gr.on([run.click, prompt.submit], ev.run_search, inputs, search_views, **model_event),
        # The first view, with a shared link's values if there are any ("as chat" only with a chat template).
        loaded.then(ev.model_chat, chat, chat, **quick).then(ev.run_search, inputs, search_views, **model_event),
        # A new model: the default search on the model shown (chat only if it has a template).
        when_drawn(model_changed(demo)(ev.on_model, None, chat, **quick).then, loaded).then(
            ev.run_search, inputs, search_views, **model_event),
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
    redrawn = dict(summary=summary, tree=tree_plot, tree_alt=tree_alt, table=table, play=play, compare=compare)
    page_language.change(ev.on_language, [page_language, request, hidden, step, playing, compared],
                         [redrawn[name] for name in ev.LANGUAGE_NAMES], **frame_event)
    gr.api(beam_search_api, api_name="beam_search", concurrency_id=MODEL_CONCURRENCY)
