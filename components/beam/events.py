"""Beam search tab, the event handlers: run a search, reveal it, step or play through its tree, compare it with
greedy and sampled decoding.

A visitor's state is the search request (a dict of `beam_search`'s arguments); its tree lives in the session's
analysis cache, so a frame of the animation, or the search redrawn in a new language (`on_language`), never runs
the model. `run_search`, `reveal` and `on_predict` return the views in the order of `VIEW_NAMES`; `play_pause` and
`tick` return a frame in the order of `FRAME_NAMES`, so the layout and these handlers agree on one list each.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from inference.beam import beam_search, check_early_stopping, compare_decoders
from inference.errors import InputError

from ..common import session, user_errors
from ..export import csv_file, json_file
from ..i18n import DEFAULT, language, t
from .exports import HYPOTHESES_CSV_HEADER, hypotheses_rows, tree_data
from .figures import comparison_table, hypotheses_table, step_figure, step_figure_summary, summary_html

# The speed's value (the link's value too) -> timer interval (s); the catalogue key of its label.
SPEEDS = {"1 step/s": 1.0, "2 steps/s": 0.5, "4 steps/s": 0.25}  # not translated: values (labels: SPEED_KEYS)
SPEED_KEYS = {"1 step/s": "beam.speed_1", "2 steps/s": "beam.speed_2", "4 steps/s": "beam.speed_4"}
DEFAULT_SPEED = "2 steps/s"
# The Play button's two faces (English here; a handler shows them in the visitor's language).
PLAY, PAUSE = t("beam.play", DEFAULT), t("beam.pause", DEFAULT)


def hidden_note(lang: str | None = None) -> str:
    """The note shown instead of a search under "Predict first" (it names the Predict first and Reveal controls)."""
    text = t("beam.hidden_note", lang, predict=f"<b>{t('beam.predict_name', lang)}</b>",
             reveal=f"<b>{t('beam.reveal_name', lang)}</b>")
    return f"<div class='lie-hidden-note' id='beam-hidden-text'>🙈 {text}</div>"
# The outputs of a search's views, in this order (see `views`).
VIEW_NAMES = ["request", "hidden", "hidden_note", "results", "summary", "step", "tree", "tree_alt", "table",
              "tree_json", "hypotheses_csv", "timer", "play", "playing"]
# The outputs of one animation frame, in this order (see `frame`).
FRAME_NAMES = ["step", "tree", "tree_alt", "timer", "play", "playing"]


def search_request(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping) -> dict:
    """The controls as `beam_search` arguments (the visitor's state)."""
    return dict(prompt=prompt, chat=bool(chat), num_beams=num_beams, max_new_tokens=max_new_tokens,
                length_penalty=length_penalty, early_stopping=check_early_stopping(early_stopping))


def tree_of(request: dict | None):
    """The tree of a request from the shared analysis cache (computed again only if it was evicted)."""
    if not request:
        raise gr.Error(t("beam.err_run_first"), print_exception=False)
    return beam_search(session(), **request)


# ---------------------------------------------------------------------------------------------------
# A search's views


def views(**values) -> tuple:
    """The outputs in VIEW_NAMES order; a view not given is left as it is."""
    unknown = set(values) - set(VIEW_NAMES)
    if unknown:
        raise TypeError(f"unknown views {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in VIEW_NAMES)


def _stopped() -> dict:
    return dict(timer=gr.Timer(active=False), play=gr.Button(value=t("beam.play")), playing=False)


def render_search(request: dict, hidden: bool):
    """A search's views at its last step, or (predict first) the note and nothing of the tree."""
    if hidden:
        return views(request=request, hidden=True, hidden_note=gr.HTML(hidden_note(), visible=True),
                     results=gr.Column(visible=False), summary="", step=gr.Slider(value=0), tree=None, tree_alt="",
                     table=pd.DataFrame(), tree_json=gr.DownloadButton(value=None, interactive=False),
                     hypotheses_csv=gr.DownloadButton(value=None, interactive=False), **_stopped())
    s = session()
    tree = beam_search(s, **request)
    steps = tree.num_steps
    lang = language()
    return views(
        request=request, hidden=False, hidden_note=gr.HTML("", visible=False), results=gr.Column(visible=True),
        summary=summary_html(tree, lang),
        step=gr.Slider(minimum=0, maximum=steps, value=steps, step=1, interactive=True),
        tree=step_figure(tree, steps, lang=lang), tree_alt=step_figure_summary(tree, steps, lang),
        table=hypotheses_table(tree, lang),
        tree_json=gr.DownloadButton(value=json_file("beam-tree", tree_data(s.model_id, tree)), interactive=True),
        hypotheses_csv=gr.DownloadButton(value=csv_file("beam-hypotheses", HYPOTHESES_CSV_HEADER,
                                                        hypotheses_rows(tree)), interactive=True),
        **_stopped(),
    )


@user_errors
def run_search(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping, predict=False):
    request = search_request(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping)
    beam_search(session(), **request)  # runs (or finds) the search even when its views stay hidden
    return render_search(request, bool(predict))


@user_errors
def reveal(request, hidden):
    """Reveal: the hidden search's tree and results."""
    if not request:
        raise gr.Error(t("beam.err_nothing_to_reveal"), print_exception=False)
    return render_search(request, False)


@user_errors
def on_predict(request, predict):
    """The Predict-first box was ticked (hide the search on view) or cleared (show it)."""
    if not request:
        return views(hidden=bool(predict))
    return render_search(request, bool(predict))


def model_chat(chat: bool):
    """'as chat' only where the loaded model has a chat template (a base model has none)."""
    return bool(chat) and session().has_chat_template


def on_model():
    """Chat mode only where the loaded model has a chat template (a base model has none)."""
    return gr.Checkbox(value=session().has_chat_template)


def _compare(request, seed, hidden):
    """The comparison's table and what it shows (request, seed, the other decoders' results; None when hidden)."""
    if hidden:
        return pd.DataFrame(), None
    tree = tree_of(request)
    others = compare_decoders(session(), request["prompt"], request["max_new_tokens"], request["length_penalty"],
                              request["chat"], seed)
    return comparison_table(tree, others, seed, language()), (request, seed, others)


@user_errors
def run_compare(request, seed, hidden=False):
    """Beam search's best hypothesis next to greedy and a seeded sample of the same prompt and budget."""
    return _compare(request, seed, hidden)[0]


@user_errors
def compare_kept(request, seed, hidden=False):
    """`run_compare`, and what the table shows, kept for the page (a change of language redraws it)."""
    return _compare(request, seed, hidden)


# ---------------------------------------------------------------------------------------------------
# The animation: frames come from the cached tree


def frame(**values) -> tuple:
    """The outputs in FRAME_NAMES order; a view not given is left as it is."""
    unknown = set(values) - set(FRAME_NAMES)
    if unknown:
        raise TypeError(f"unknown frame outputs {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in FRAME_NAMES)


def _paused() -> tuple:
    return frame(step=gr.Slider(), timer=gr.Timer(active=False), play=gr.Button(value=t("beam.play")), playing=False)


@user_errors
def show_step(step, request, hidden=False):
    if hidden:
        return gr.skip(), gr.skip()
    tree = tree_of(request)
    lang = language()
    return step_figure(tree, int(step or 0), lang=lang), step_figure_summary(tree, int(step or 0), lang)


@user_errors
def play_pause(step, request, playing, hidden=False):
    """Toggle the timer; Play at the last step starts over from the prompt."""
    if hidden:
        gr.Info(t("beam.info_reveal_first"))
        return _paused()
    tree = tree_of(request)
    if playing:
        return _paused()
    step = int(step or 0)
    if step >= tree.num_steps:
        step = 0
    lang = language()
    return frame(step=gr.Slider(value=step), tree=step_figure(tree, step, lang=lang),
                 tree_alt=step_figure_summary(tree, step, lang), timer=gr.Timer(active=True),
                 play=gr.Button(value=t("beam.pause", lang)), playing=True)


@user_errors
def tick(step, request, playing, hidden=False):
    """One animation frame: the next step; the timer stops itself at the end."""
    if not playing or hidden:
        return _paused()
    tree = tree_of(request)
    step = min(int(step or 0) + 1, tree.num_steps)
    done = step >= tree.num_steps
    lang = language()
    return frame(step=gr.Slider(value=step), tree=step_figure(tree, step, lang=lang),
                 tree_alt=step_figure_summary(tree, step, lang), timer=gr.Timer(active=not done),
                 play=gr.Button(value=t("beam.play" if done else "beam.pause", lang)), playing=not done)


def set_speed(speed):
    return gr.Timer(value=SPEEDS.get(speed, 0.5))


# ---------------------------------------------------------------------------------------------------
# A change of language: the search on screen redrawn (no model pass)

# What `on_language` redraws, in this order (the layout wires the same names).
LANGUAGE_NAMES = ["summary", "tree", "tree_alt", "table", "play", "compare"]


def on_language(lang, request, hidden, step, playing, compared):
    """A new language: the search on screen redrawn in it at the step the slider shows (its tree from the session's
    analysis cache, as a frame of the animation is drawn), with the comparison kept for the page. Nothing before a
    search, or while it is hidden (the note follows the language by itself)."""
    if not request or hidden:
        return (gr.skip(),) * len(LANGUAGE_NAMES)
    try:
        tree = tree_of(request)
    except (gr.Error, InputError):
        return (gr.skip(),) * len(LANGUAGE_NAMES)
    frame_step = min(max(int(step or 0), 0), tree.num_steps)
    compare = gr.skip()
    if compared is not None and compared[0] == request:
        _request, seed, others = compared
        compare = comparison_table(tree, others, seed, lang)
    # A playing animation keeps its Pause face (the page's labels turned it back to Play).
    play = gr.Button(value=t("beam.pause", lang)) if playing else gr.skip()
    return (summary_html(tree, lang), step_figure(tree, frame_step, lang=lang),
            step_figure_summary(tree, frame_step, lang), hypotheses_table(tree, lang), play, compare)
