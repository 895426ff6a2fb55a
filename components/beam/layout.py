"""Beam search tab: the animated tree of the real search (transformers' own algorithm), the ranked finished
hypotheses, and greedy and sampled decoding of the same prompt for comparison.

The lesson (assets/lessons/beam.md) explains the search; the line in code says only how to operate it. With
"Predict first" ticked, a search's tree and results stay hidden until Reveal, so a class can guess first.
"""

from __future__ import annotations

import html
import json

import gradio as gr
import pandas as pd

from inference.beam import beam_search, check_early_stopping, compare_decoders, to_dict
from inference.limits import (
    MAX_BEAM_NEW_TOKENS,
    MAX_LENGTH_PENALTY,
    MAX_NUM_BEAMS,
    MAX_PROMPT_TOKENS,
    MIN_LENGTH_PENALTY,
)

from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session, user_errors
from ..export import csv_file, json_file
from .figures import hypotheses_table, step_figure, step_figure_summary
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Beam search"
EXAMPLES = json.loads((ASSETS / "examples" / "beam.json").read_text())
DEFAULT = EXAMPLES["default"]
SPEEDS = {"1 step/s": 1.0, "2 steps/s": 0.5, "4 steps/s": 0.25}  # label -> timer interval (s)
DEFAULT_SPEED = "2 steps/s"
PLAY, PAUSE = "▶ Play", "⏸ Pause"

INTRO = (f"Press **Run beam search**, then **Play** or drag **step** to watch it. Top rows: one lane per live beam; "
         f"below the dashed line: finished hypotheses (stars) and the step's pruned candidates (faded); colour and "
         f"size = cumulative log-prob; hover a node for its numbers. Limits: 1–{MAX_NUM_BEAMS} beams, "
         f"1–{MAX_BEAM_NEW_TOKENS} new tokens, length penalty {MIN_LENGTH_PENALTY:g} to {MAX_LENGTH_PENALTY:g}, "
         f"prompt up to {MAX_PROMPT_TOKENS:,} tokens.")
HIDDEN_NOTE = ("<div class='lie-hidden-note' id='beam-hidden-text'>🙈 <b>Predict first</b>: the search has run, "
               "its tree and answers are hidden. Which answer will beam search return, and will it be the greedy "
               "one? Make your guess, then press <b>Reveal</b>.</div>")
HYPOTHESES_CSV_HEADER = ["rank", "rank_by_raw_sum", "text", "tokens", "ends", "sum_logprob", "score", "token_ids"]
# The outputs of a search's views, in this order (see `views`).
VIEW_NAMES = ["request", "hidden", "hidden_note", "results", "summary", "step", "tree", "tree_alt", "table",
              "tree_json", "hypotheses_csv", "timer", "play", "playing"]


def _request(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping) -> dict:
    return dict(prompt=prompt, chat=bool(chat), num_beams=num_beams, max_new_tokens=max_new_tokens,
                length_penalty=length_penalty, early_stopping=check_early_stopping(early_stopping))


def _tree(request: dict | None):
    """The tree of a request from the shared analysis cache (computed again only if it was evicted)."""
    if not request:
        raise gr.Error("Run a beam search first.", print_exception=False)
    return beam_search(session(), **request)


def _summary_html(tree) -> str:
    best = tree.finished[0] if tree.finished else None
    greedy_rows = tree.num_steps - 1
    items = [
        ("steps", f"{tree.num_steps}"),
        ("candidates per step", f"{tree.candidates_per_step}"),
        ("nodes", f"{len(tree.nodes) - 1:,}"),
        ("decode rows", f"{tree.forward_rows:,} (greedy: {greedy_rows})"),
        ("time", f"{tree.seconds:.2f} s"),
    ]
    cells = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in items)
    stop = html.escape(tree.stop_reason)
    best_text = html.escape(best.text) if best else ""
    return (
        f'<div class="lie-counts">{cells}</div>'
        f'<div class="lie-note">Stopped: {stop}. Best hypothesis (score {best.score:.4f}): '
        f"<b>{best_text or '(empty)'}</b></div>"
    )


def hypotheses_rows(tree) -> list[list]:
    """The finished hypotheses best first, for the CSV (token ids space-separated)."""
    by_raw = sorted(range(len(tree.finished)), key=lambda i: -tree.finished[i].sum_logprob)
    raw_rank = {i: r + 1 for r, i in enumerate(by_raw)}
    return [
        [i + 1, raw_rank[i], h.text, h.length, "EOS" if h.ends_with_eos else "max tokens", f"{h.sum_logprob:.6f}",
         f"{h.score:.6f}", " ".join(str(t) for t in h.token_ids)]
        for i, h in enumerate(tree.finished)
    ]


def views(**values) -> tuple:
    """The outputs in VIEW_NAMES order; a view not given is left as it is."""
    unknown = set(values) - set(VIEW_NAMES)
    if unknown:
        raise TypeError(f"unknown views {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in VIEW_NAMES)


def _stopped():
    return dict(timer=gr.Timer(active=False), play=gr.Button(value=PLAY), playing=False)


def render_search(request: dict, hidden: bool):
    """A search's views at its last step, or (predict first) the note and nothing of the tree."""
    if hidden:
        return views(request=request, hidden=True, hidden_note=gr.HTML(HIDDEN_NOTE, visible=True),
                     results=gr.Column(visible=False), summary="", step=gr.Slider(value=0), tree=None, tree_alt="",
                     table=pd.DataFrame(), tree_json=gr.DownloadButton(value=None, interactive=False),
                     hypotheses_csv=gr.DownloadButton(value=None, interactive=False), **_stopped())
    s = session()
    tree = beam_search(s, **request)
    steps = tree.num_steps
    return views(
        request=request, hidden=False, hidden_note=gr.HTML("", visible=False), results=gr.Column(visible=True),
        summary=_summary_html(tree),
        step=gr.Slider(minimum=0, maximum=steps, value=steps, step=1, interactive=True),
        tree=step_figure(tree, steps), tree_alt=step_figure_summary(tree, steps), table=hypotheses_table(tree),
        tree_json=gr.DownloadButton(value=json_file("beam-tree", {"model": s.model_id, **to_dict(tree)}),
                                    interactive=True),
        hypotheses_csv=gr.DownloadButton(value=csv_file("beam-hypotheses", HYPOTHESES_CSV_HEADER,
                                                        hypotheses_rows(tree)), interactive=True),
        **_stopped(),
    )


@user_errors
def run_search(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping, predict=False):
    request = _request(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping)
    beam_search(session(), **request)  # runs (or finds) the search even when its views stay hidden
    return render_search(request, bool(predict))


@user_errors
def reveal(request, hidden):
    """Reveal: the hidden search's tree and results."""
    if not request:
        raise gr.Error("Run a beam search first: there is nothing to reveal yet.", print_exception=False)
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


@user_errors
def show_step(step, request, hidden=False):
    if hidden:
        return gr.skip(), gr.skip()
    tree = _tree(request)
    return step_figure(tree, int(step or 0)), step_figure_summary(tree, int(step or 0))


@user_errors
def play_pause(step, request, playing, hidden=False):
    """Toggle the timer; Play at the last step starts over from the prompt."""
    if hidden:
        gr.Info("Press Reveal first: the search is hidden.")
        return gr.Timer(active=False), gr.Button(value=PLAY), False, gr.Slider(), gr.skip(), gr.skip()
    tree = _tree(request)
    if playing:
        return gr.Timer(active=False), gr.Button(value=PLAY), False, gr.Slider(), gr.skip(), gr.skip()
    step = int(step or 0)
    if step >= tree.num_steps:
        step = 0
    return (gr.Timer(active=True), gr.Button(value=PAUSE), True, gr.Slider(value=step), step_figure(tree, step),
            step_figure_summary(tree, step))


@user_errors
def tick(step, request, playing, hidden=False):
    """One animation frame: the next step; the timer stops itself at the end."""
    if not playing or hidden:
        return gr.Slider(), gr.skip(), gr.skip(), gr.Timer(active=False), gr.Button(value=PLAY), False
    tree = _tree(request)
    step = min(int(step or 0) + 1, tree.num_steps)
    done = step >= tree.num_steps
    return (
        gr.Slider(value=step),
        step_figure(tree, step),
        step_figure_summary(tree, step),
        gr.Timer(active=not done),
        gr.Button(value=PLAY if done else PAUSE),
        not done,
    )


def set_speed(speed):
    return gr.Timer(value=SPEEDS.get(speed, 0.5))


@user_errors
def run_compare(request, seed, hidden=False):
    """Beam search's best hypothesis next to greedy and a seeded sample of the same prompt and budget."""
    if hidden:
        return pd.DataFrame()
    tree = _tree(request)
    others = compare_decoders(session(), request["prompt"], request["max_new_tokens"], request["length_penalty"],
                              request["chat"], seed)
    best = tree.finished[0]
    rows = [dict(method=f"beam search ({tree.num_beams} beams), best", text=best.text, tokens=best.length,
                 ends="EOS" if best.ends_with_eos else "max tokens", sum_logprob=best.sum_logprob, score=best.score)]
    for d in others:
        rows.append(dict(method=d.method + (f" (seed {int(seed)})" if d.method == "sampled" else ""), text=d.text,
                         tokens=d.length, ends="EOS" if d.ends_with_eos else "max tokens", sum_logprob=d.sum_logprob,
                         score=d.score))
    frame = pd.DataFrame(rows)
    frame["sum_logprob"] = frame["sum_logprob"].round(3)
    frame["score"] = frame["score"].round(4)
    return frame.rename(columns={"sum_logprob": "sum log-prob",
                                 "score": f"score = sum / len^{tree.length_penalty:g}"})


@user_errors
def beam_search_api(prompt: str, num_beams: int = 4, max_new_tokens: int = 16, length_penalty: float = 1.0,
                    early_stopping: str = "false", chat: bool = False) -> dict:
    """Run beam search (transformers' algorithm) on the loaded model and return the whole tree.

    early_stopping: "true", "false" or "never". Returns the ranked finished hypotheses (text, token_ids, score =
    sum_logprob / length**length_penalty), every candidate node (parent, step, token, logprob, cum_logprob,
    status kept/pruned/finished, rank) and the edges (parent id, child id)."""
    s = session()
    tree = beam_search(s, prompt, num_beams, max_new_tokens, length_penalty, early_stopping, chat)
    return {"model": s.model_id, **to_dict(tree)}


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
    seed = gr.Number(value=0, precision=0, minimum=0, label="seed for the sampled run", scale=0, min_width=160,
                     elem_id="beam-seed", elem_classes=["lie-advanced"], render=False)
    fields = {"prompt": prompt, "chat": chat, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
              "length_penalty": length_penalty, "early_stopping": early_stopping, "seed": seed, "predict": predict}
    loaded = share_link(demo, "beam", fields)
    hidden_note = gr.HTML(visible=False, elem_id="beam-hidden")
    with gr.Column(elem_id="beam-results") as results:
        summary = gr.HTML(elem_id="beam-summary")
        with gr.Row():
            with gr.Column(scale=0, min_width=120):
                play = gr.Button(PLAY, variant="secondary", elem_id="beam-play")
            step = gr.Slider(0, MAX_BEAM_NEW_TOKENS, value=0, step=1, label="step", scale=4, elem_id="beam-step")
            speed = gr.Radio(list(SPEEDS), value=DEFAULT_SPEED, label="speed", scale=2, elem_id="beam-speed",
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
    timer = gr.Timer(SPEEDS[DEFAULT_SPEED], active=False)

    inputs = [prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping, predict]
    outputs = dict(request=request, hidden=hidden, hidden_note=hidden_note, results=results, summary=summary,
                   step=step, tree=tree_plot, tree_alt=tree_alt, table=table, tree_json=tree_json,
                   hypotheses_csv=hypotheses_csv, timer=timer, play=play, playing=playing)
    search_views = [outputs[name] for name in VIEW_NAMES]
    model_event = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    quick = dict(api_visibility="private", queue=False)
    compare_event = dict(fn=run_compare, inputs=[request, seed, hidden], outputs=compare, **model_event)

    # Searches start from explicit triggers only (never a field's programmatic .change): a shared link or a
    # "try this" sets several fields at once and must search exactly once.
    searches = [
        gr.on([run.click, prompt.submit], run_search, inputs, search_views, **model_event),
        # The first view, with a shared link's values if there are any ("as chat" only with a chat template).
        loaded.then(model_chat, chat, chat, **quick).then(run_search, inputs, search_views, **model_event),
        # A new model: the default search on the model shown (chat only if it has a template).
        model_changed(demo)(on_model, None, chat, **quick).then(run_search, inputs, search_views, **model_event),
        examples.load_input_event.then(run_search, inputs, search_views, **model_event),
    ]
    for event in lesson.connect(fields, then=dict(fn=model_chat, inputs=chat, outputs=chat, queue=False)):
        searches.append(event.then(run_search, inputs, search_views, **model_event))
    searches.append(reveal_btn.click(reveal, [request, hidden], search_views, **model_event))
    searches.append(predict.input(on_predict, [request, predict], search_views, **model_event))
    for search in searches:
        search.success(**compare_event)
    seed.submit(**compare_event)
    # Frames come from the cached tree (no model pass), so they skip the model queue.
    frame = dict(api_visibility="private", show_progress="hidden", concurrency_limit=4)
    step.input(show_step, [step, request, hidden], [tree_plot, tree_alt], trigger_mode="always_last", **frame)
    play.click(play_pause, [step, request, playing, hidden], [timer, play, playing, step, tree_plot, tree_alt],
               **frame)
    timer.tick(tick, [step, request, playing, hidden], [step, tree_plot, tree_alt, timer, play, playing], **frame)
    speed.change(set_speed, speed, timer, **quick)
    gr.api(beam_search_api, api_name="beam_search", concurrency_id=MODEL_CONCURRENCY)
