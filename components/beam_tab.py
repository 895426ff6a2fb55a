"""Beam search tab: the animated tree of the real search (transformers' own algorithm), the ranked finished
hypotheses, and greedy and sampled decoding of the same prompt for comparison."""

from __future__ import annotations

import html
import json
from pathlib import Path

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

from .common import MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session, user_errors
from .figures.beam import hypotheses_table, step_figure

TITLE = "Beam search"
EXAMPLES = json.loads((Path(__file__).parent.parent / "assets" / "examples" / "beam.json").read_text())
DEFAULT = EXAMPLES["default"]
SPEEDS = {"1 step/s": 1.0, "2 steps/s": 0.5, "4 steps/s": 0.25}  # label -> timer interval (s)
DEFAULT_SPEED = "2 steps/s"
PLAY, PAUSE = "▶ Play", "⏸ Pause"

INTRO = f"""
**Beam search** keeps the `num_beams` most likely partial answers (*beams*) instead of one. At every step each
live beam proposes next tokens; a candidate's running score is its beam's sum of log-probabilities plus the new
token's log-prob. Of all beams × vocabulary continuations the search keeps the best **2 × num_beams**
candidates: the best `num_beams` that did not end become the next beams, the others are **pruned**. A candidate
ending in EOS becomes a **finished hypothesis** only if it ranks in the top `num_beams`. This is transformers'
own algorithm, run step by step: the hypotheses and scores below equal `model.generate(num_beams=...)`.

**Cost:** every decode step runs `num_beams` token rows through the model, one per beam, each with its own rows
of the KV cache (reordered after every step to follow its parent): about `num_beams` × the compute and cache
memory of greedy decoding.

**Length penalty:** finished hypotheses are ranked by *score = sum of log-probs / length<sup>length_penalty</sup>*.
Log-probs are negative, so every extra token lowers the sum: at 0 the raw sum decides and short answers win;
at 1 the score is the mean log-prob per token; above 1 longer answers gain, below 0 shorter ones do.
**Early stopping:** *False* stops once the best live beam, scored at its current length, cannot beat the worst
of `num_beams` finished hypotheses; *True* stops as soon as `num_beams` hypotheses have finished; *never*
(with a positive penalty) scores the live beam at max new tokens, so the search runs on while a longer answer
might still win.

Limits: 1–{MAX_NUM_BEAMS} beams, 1–{MAX_BEAM_NEW_TOKENS} new tokens, length penalty {MIN_LENGTH_PENALTY:g} to
{MAX_LENGTH_PENALTY:g}, prompt up to {MAX_PROMPT_TOKENS:,} tokens.
"""

HOW_TO_READ = """
Steps run left to right from the prompt. The top rows are **lanes, one per live beam**: a beam stays in its lane;
a diagonal line is a beam branching into the lane of a beam that died. Below the dashed line: **finished
hypotheses** (stars, with their final score) and, for the step shown, the **pruned** candidates (faded).
Colour and size show the cumulative log-prob. Hover a node for its token, step log-prob, cumulative log-prob
and normalized score. At the end the returned hypotheses are numbered and the best one is highlighted.
"""


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


@user_errors
def run_search(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping):
    request = _request(prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping)
    tree = beam_search(session(), **request)
    steps = tree.num_steps
    return (
        request,
        _summary_html(tree),
        gr.Slider(minimum=0, maximum=steps, value=steps, step=1, interactive=True),
        step_figure(tree, steps),
        hypotheses_table(tree),
        gr.Timer(active=False),
        gr.Button(value=PLAY),
        False,
    )


def on_model():
    """Chat mode only where the loaded model has a chat template (a base model has none)."""
    return gr.Checkbox(value=session().has_chat_template)


@user_errors
def show_step(step, request):
    return step_figure(_tree(request), int(step or 0))


@user_errors
def play_pause(step, request, playing):
    """Toggle the timer; Play at the last step starts over from the prompt."""
    tree = _tree(request)
    if playing:
        return gr.Timer(active=False), gr.Button(value=PLAY), False, gr.Slider(), gr.Plot()
    step = int(step or 0)
    if step >= tree.num_steps:
        step = 0
    return gr.Timer(active=True), gr.Button(value=PAUSE), True, gr.Slider(value=step), step_figure(tree, step)


@user_errors
def tick(step, request, playing):
    """One animation frame: the next step; the timer stops itself at the end."""
    if not playing:
        return gr.Slider(), gr.Plot(), gr.Timer(active=False), gr.Button(value=PLAY), False
    tree = _tree(request)
    step = min(int(step or 0) + 1, tree.num_steps)
    done = step >= tree.num_steps
    return (
        gr.Slider(value=step),
        step_figure(tree, step),
        gr.Timer(active=not done),
        gr.Button(value=PLAY if done else PAUSE),
        not done,
    )


def set_speed(speed):
    return gr.Timer(value=SPEEDS.get(speed, 0.5))


@user_errors
def run_compare(request, seed):
    """Beam search's best hypothesis next to greedy and a seeded sample of the same prompt and budget."""
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
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, value=DEFAULT["prompt"], elem_id="beam-prompt")
            chat = gr.Checkbox(label="as chat (apply the chat template; answers end on EOS)", value=DEFAULT["chat"],
                               elem_id="beam-chat")
            gr.Examples(
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
                                      elem_id="beam-early-stopping")
            run = gr.Button("Run beam search", variant="primary", elem_id="beam-run")
    summary = gr.HTML(elem_id="beam-summary")
    with gr.Row():
        with gr.Column(scale=0, min_width=120):
            play = gr.Button(PLAY, variant="secondary", elem_id="beam-play")
        step = gr.Slider(0, MAX_BEAM_NEW_TOKENS, value=0, step=1, label="step", scale=4, elem_id="beam-step")
        speed = gr.Radio(list(SPEEDS), value=DEFAULT_SPEED, label="speed", scale=2, elem_id="beam-speed")
    tree_plot = gr.Plot(label="Search tree", elem_id="beam-tree")
    gr.Markdown(HOW_TO_READ)
    gr.Markdown("### Finished hypotheses, ranked by score\n"
                "*rank by raw sum* is where each would stand without the length penalty.")
    table = gr.Dataframe(interactive=False, wrap=True, elem_id="beam-table")
    gr.Markdown("### What beam search buys: greedy and sampled decoding of the same prompt\n"
                "Same prompt and token budget; sum log-prob is the model's own log-probability of each text, "
                "scored with the same length penalty.")
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="seed for the sampled run", scale=0, min_width=160,
                         elem_id="beam-seed")
    compare = gr.Dataframe(interactive=False, wrap=True, elem_id="beam-compare")

    request = gr.State(None, time_to_live=STATE_TTL_S)
    playing = gr.State(False, time_to_live=STATE_TTL_S)
    timer = gr.Timer(SPEEDS[DEFAULT_SPEED], active=False)

    inputs = [prompt, chat, num_beams, max_new_tokens, length_penalty, early_stopping]
    outputs = [request, summary, step, tree_plot, table, timer, play, playing]
    model_event = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    searched = gr.on([run.click, prompt.submit], run_search, inputs, outputs, **model_event)
    # A new visitor or a new model: the default search on the model shown (chat only if it has a template).
    loaded = gr.on([demo.load, model_changed(demo)], on_model, None, chat, api_visibility="private", queue=False)
    reloaded = loaded.then(run_search, inputs, outputs, **model_event)
    for search in (searched, reloaded):
        search.success(run_compare, [request, seed], compare, **model_event)
    seed.submit(run_compare, [request, seed], compare, api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    # Frames come from the cached tree (no model pass), so they skip the model queue.
    step.input(show_step, [step, request], tree_plot, api_visibility="private", trigger_mode="always_last",
               show_progress="hidden", concurrency_limit=4)
    play.click(play_pause, [step, request, playing], [timer, play, playing, step, tree_plot],
               api_visibility="private", show_progress="hidden", concurrency_limit=4)
    timer.tick(tick, [step, request, playing], [step, tree_plot, timer, play, playing], api_visibility="private",
               show_progress="hidden", concurrency_limit=4)
    speed.change(set_speed, speed, timer, api_visibility="private", show_progress="hidden", queue=False)
    gr.api(beam_search_api, api_name="beam_search", concurrency_id=MODEL_CONCURRENCY)
