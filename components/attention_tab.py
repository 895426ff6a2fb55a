"""Attention tab: where every head of every layer looks, the decode step's single new row, and a logit lens.

One model pass per text (cached in the session); moving a slider, clicking a head or picking a token only
re-draws from that cached analysis.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import gradio as gr
import numpy as np

from inference.attention import SUMMARIES, AttentionMaps, capture_attention
from inference.errors import InputError
from inference.limits import (
    ATTENTION_MEMORY_BUDGET, LENS_MAX_POSITIONS, LENS_TOP_K, MAX_ATTENTION_TOKENS, MAX_TEXT_CHARS,
)

from .common import MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session, user_errors
from .figures.attention import attention_heatmap, lens_heatmap, lens_table_html, overview_html, token_focus_html

TITLE = "Attention"
EXAMPLES = json.loads((Path(__file__).parent.parent / "assets" / "examples" / "attention.json").read_text())
DEFAULT_TEXT = EXAMPLES["France (logit lens)"]
METRICS = [(label, name) for name, (label, _unit) in SUMMARIES.items()]

INTRO = f"""
Type a prompt and see where the model looks. Every **layer** has several **heads**; each head gives every
token (a **query**, one row) a set of weights over the tokens it may see (the **keys**, columns). These are
the model's own weights from this very pass, not a re-computation. Limits: {MAX_ATTENTION_TOKENS} tokens
per prompt (every layer and head is kept, at most {ATTENTION_MEMORY_BUDGET / 1e6:.0f} MB per prompt; past about
480 tokens a layer you re-open may need one more model pass). The logit lens covers the last
{LENS_MAX_POSITIONS} positions.
"""

EXPLANATION = """
**How one head attends.** Each token's hidden state is projected to a *query* (what it is looking for),
a *key* (what it offers) and a *value* (what it passes on). The score of query *i* for key *j* is
q<sub>i</sub>·k<sub>j</sub>/√d (d = the head's size). The **causal mask** sets the scores of later tokens
to −∞, so a token can only look at itself and earlier tokens: those cells are exactly 0 and drawn **grey**.
A **softmax** turns each row of scores into weights that are ≥ 0 and **sum to 1**; the head's output for
the token is the weighted sum of the values.

**Heads and layers.** Each head has its own projections and learns its own pattern: the previous token,
the same word earlier on, punctuation. Many models use **grouped-query attention**: several query heads
share one key/value head (the overview groups them), so the KV cache stores fewer keys and values.

**The attention sink.** Many heads put most of their weight on the **first token**, whatever it is. A
softmax must spend all its weight somewhere; when a head has nothing useful to do, the first token, which
every query can see, serves as a resting place. Pick "attention to the first token" in the overview.

**Decode.** When generating, only the new token is a new query: its keys and values for the earlier tokens
come from the KV cache, so one decode step adds a single row (the strip under the map).

**Logit lens.** Apply the model's final norm and output layer to the hidden state after each layer: what
would the model predict if it stopped there? Small models often decide late: watch the last layers.
"""

HEAD_CSS = """
.lie-att-note { font-size: .95rem; margin: .2rem 0 .4rem 0; }
"""
OVERVIEW_CSS = """
.lie-att-overview table { border-collapse: collapse; font-size: .8rem; font-variant-numeric: tabular-nums; }
.lie-att-overview th { font-weight: 600; padding: 1px 4px; text-align: right; white-space: nowrap; }
.lie-att-overview thead th { text-align: center; }
.lie-att-overview th.lie-att-group { border-bottom: 1px solid #888; font-weight: 500; }
.lie-att-cell { padding: 2px 5px; text-align: center; cursor: pointer; border: 1px solid #fff; min-width: 2.6em; }
.lie-att-cell:hover { outline: 2px solid #d55e00; outline-offset: -2px; }
.lie-att-cell.selected { outline: 3px solid #d55e00; outline-offset: -3px; font-weight: 700; }
.group-start { border-left: 3px solid #fff !important; }
.lie-att-caption { font-size: .9rem; margin-bottom: .3rem; }
"""
FOCUS_CSS = """
.lie-att-tokens { display: flex; flex-wrap: wrap; gap: 4px 2px; font-family: var(--font-mono); font-size: 1.05rem; }
.lie-att-tok { padding: 3px 3px; border-radius: 4px; border: 1px solid #ddd; white-space: pre; }
.lie-att-tok.query { outline: 3px solid #d55e00; }
.lie-att-tok.masked { color: #888; background: #e6e6e6; border-style: dashed; }
.lie-att-tok.special { font-weight: 700; }
.lie-att-focus-top { font-size: 1rem; margin-bottom: .3rem; }
"""
LENS_CSS = """
.lie-att-lens table { border-collapse: collapse; font-size: .85rem; }
.lie-att-lens th, .lie-att-lens td { padding: 1px 6px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
.lie-att-guess { font-family: var(--font-mono); margin-right: .5rem; }
.lie-att-guess.answer { background: #ffe2c2; font-weight: 700; }
.lie-att-caption { font-size: .9rem; margin-bottom: .3rem; }
"""
# A click on a cell of the overview sends (layer, head) to Python as a custom event.
OVERVIEW_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('[data-layer]');
  if (cell) trigger('pick_head', {layer: Number(cell.dataset.layer), head: cell.dataset.head});
});
"""


# ---------------------------------------------------------------------------------------------------
# From the cached analysis to views (no model call)


def _maps(state: dict | None) -> AttentionMaps:
    """The cached analysis the views show; a model switch since Run asks for a new Run."""
    if not state:
        raise InputError("Press Run to analyse a prompt first.")
    s = session()
    if s.model_id != state["model"]:
        raise InputError(f"The model is now {s.label}: press Run to analyse the prompt with it.")
    return capture_attention(s, state["text"], state["chat"])


def _head_or_mean(maps: AttentionMaps, head: int, mean: bool) -> int | None:
    return None if mean else maps.check_head(int(head))


def _gqa_note(maps: AttentionMaps, layer: int, head: int | None) -> str:
    group = maps.queries_per_kv_head
    if group == 1:
        shared = f"Every head has its own keys and values ({maps.num_heads} KV heads)."
    elif head is None:
        shared = (f"Grouped-query attention: {maps.num_heads} query heads share {maps.num_kv_heads} key/value heads "
                  f"({group} query heads each).")
    else:
        mates = maps.heads_sharing(head)
        shared = (f"Head {head} reads KV head {maps.kv_head(head)}, shared with heads {mates[0]}–{mates[-1]}: "
                  f"{maps.num_heads} query heads share {maps.num_kv_heads} key/value heads, so the KV cache stores "
                  f"{maps.num_kv_heads} heads' keys per layer, not {maps.num_heads}.")
    return f'<div class="lie-att-note">{html.escape(shared)}</div>'


def _heatmap(maps: AttentionMaps, layer: int, head: int | None):
    which = "mean over heads" if head is None else f"head {head}"
    decode = maps.decode
    return attention_heatmap(
        maps.pattern(layer, head), maps.tokens.pieces,
        f"Layer {layer}, {which} · grey = masked (a later token)",
        decode_row=decode.row(layer, head), decode_piece=decode.piece,
    )


def _focus(maps: AttentionMaps, layer: int, head: int | None, token: int | None) -> str:
    """The focused token's attention row as highlighted text; token n is the decode step's new token."""
    n = maps.n
    token = n - 1 if token is None else int(token)
    if not 0 <= token <= n:
        raise InputError(f"Token {token} does not exist: the prompt has {n} tokens (0 to {n - 1}), plus the decode step {n}.")
    pieces, special = list(maps.tokens.pieces), list(maps.tokens.special)
    if token == n:
        row = maps.decode.row(layer, head)  # [n+1]
        pieces, special = pieces + [maps.decode.piece], special + [False]
    else:
        row = maps.query_row(layer, token, head)  # [token+1]
    return token_focus_html(pieces, special, row, token)


def _overview(maps: AttentionMaps, metric: str, layer: int, head: int | None) -> str:
    if metric not in SUMMARIES:
        raise InputError(f"Unknown summary {metric!r}; pick one of: {', '.join(SUMMARIES)}.")
    label, unit = SUMMARIES[metric]
    return overview_html(maps.summaries[metric], label, unit, maps.queries_per_kv_head, selected=(layer, head))


def _lens_views(maps: AttentionMaps, token: int | None):
    lens = maps.lens
    n = maps.n
    position = n - 1 if token is None or int(token) not in lens.positions else int(token)
    column = lens.column(position)
    labels = [maps.tokens.pieces[p] for p in lens.positions]
    figure = lens_heatmap(lens.layer_names, labels, lens.top_pieces, lens.top_probs, lens.answer_pieces,
                          lens.answer_probs, selected_column=column)
    table = lens_table_html(
        lens.layer_names, [layer[column] for layer in lens.top_pieces], lens.top_probs[:, column],
        lens.answer_pieces[column], lens.answer_probs[:, column], f"#{position} {labels[column]}",
    )
    return figure, table


def _info(maps: AttentionMaps) -> str:
    d = maps.decode
    cells = [
        ("tokens", f"{maps.n:,}"),
        ("layers × heads", f"{maps.num_layers} × {maps.num_heads}"),
        ("KV heads", f"{maps.num_kv_heads}"),
        ("next token (greedy)", f"{html.escape(d.piece)} ({d.prob:.0%})"),
        ("captured in", f"{maps.capture_seconds:.2f} s"),
        ("kept in memory", f"{maps.retained_bytes() / 1e6:.2f} MB"),
    ]
    inner = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in cells)
    return f'<div class="lie-counts">{inner}</div>'


def _token_choices(maps: AttentionMaps) -> list[tuple[str, int]]:
    choices = [(f"#{i} {piece}", i) for i, piece in enumerate(maps.tokens.pieces)]
    return choices + [(f"#{maps.n} {maps.decode.piece} (decode step)", maps.n)]


# ---------------------------------------------------------------------------------------------------
# Events


@user_errors
def run_attention(text: str, chat: bool, layer: int, head: int, mean: bool, metric: str):
    """Capture (one model pass, cached) and draw every view."""
    s = session()
    maps = capture_attention(s, text, chat)
    state = {"model": s.model_id, "text": text, "chat": bool(chat)}
    layer = min(int(layer or 0), maps.num_layers - 1)
    head = min(int(head or 0), maps.num_heads - 1)
    shown = None if mean else head
    token = maps.n - 1
    lens_fig, lens_table = _lens_views(maps, token)
    return (
        state,
        gr.update(maximum=maps.num_layers - 1, value=layer),
        gr.update(maximum=maps.num_heads - 1, value=head),
        gr.update(choices=_token_choices(maps), value=token),
        _info(maps),
        _heatmap(maps, layer, shown),
        _gqa_note(maps, layer, shown),
        _focus(maps, layer, shown, token),
        _overview(maps, metric, layer, shown),
        lens_fig,
        lens_table,
    )


@user_errors
def show_head(state: dict, layer: int, head: int, mean: bool, token: int, metric: str):
    """A layer/head/mean switch: re-draw from the cached analysis (no model call)."""
    maps = _maps(state)
    layer = maps.check_layer(int(layer))
    shown = _head_or_mean(maps, head, mean)
    return (_heatmap(maps, layer, shown), _gqa_note(maps, layer, shown), _focus(maps, layer, shown, token),
            _overview(maps, metric, layer, shown))


@user_errors
def pick_head(state: dict, token: int, metric: str, evt: gr.EventData):
    """A click on the overview grid opens that head (or the layer's mean over heads)."""
    maps = _maps(state)
    data = getattr(evt, "_data", None) or {}
    layer = maps.check_layer(int(data.get("layer", 0)))
    mean = data.get("head") == "mean"
    shown = None if mean else maps.check_head(int(data.get("head", 0)))
    head = gr.update() if mean else shown  # the mean column keeps the head slider where it was
    return (layer, head, mean, _heatmap(maps, layer, shown), _gqa_note(maps, layer, shown),
            _focus(maps, layer, shown, token), _overview(maps, metric, layer, shown))


@user_errors
def show_token(state: dict, layer: int, head: int, mean: bool, token: int):
    maps = _maps(state)
    shown = _head_or_mean(maps, head, mean)
    return (_focus(maps, maps.check_layer(int(layer)), shown, token), *_lens_views(maps, token))


@user_errors
def show_overview(state: dict, layer: int, head: int, mean: bool, metric: str):
    maps = _maps(state)
    return _overview(maps, metric, maps.check_layer(int(layer)), _head_or_mean(maps, head, mean))


@user_errors
def attention_api(text: str, layer: int = 0, head: int = 0, chat: bool = False) -> dict:
    """Attention weights of one layer and head for a prompt (chat=True wraps it in the chat template).

    Returns the tokens, the weight matrix (rows = queries, columns = keys; the causal mask makes the upper
    triangle 0), the decode step's new row for the same head, which query heads share its KV head, and the
    logit lens at the last position (top-5 guesses after every layer)."""
    s = session()
    maps = capture_attention(s, text, chat)
    layer, head = maps.check_layer(layer), maps.check_head(head)
    lens, last = maps.lens, maps.lens.column(maps.n - 1)
    return {
        "model": s.model_id,
        "tokens": list(maps.tokens.pieces),
        "ids": list(maps.tokens.ids),
        "num_layers": maps.num_layers,
        "num_heads": maps.num_heads,
        "num_kv_heads": maps.num_kv_heads,
        "layer": layer,
        "head": head,
        "kv_head": maps.kv_head(head),
        "heads_sharing_kv": maps.heads_sharing(head),
        "weights": np.round(maps.pattern(layer, head), 5).tolist(),
        "decode": {
            "token": maps.decode.piece,
            "id": maps.decode.token_id,
            "prob": round(maps.decode.prob, 5),
            "cached_keys": maps.decode.cached_keys,
            "row": np.round(maps.decode.row(layer, head), 5).tolist(),
        },
        "logit_lens": {
            "position": maps.n - 1,
            "final_token": lens.answer_pieces[last],
            "layers": [
                {
                    "layer": name,
                    "final_token_prob": round(float(lens.answer_probs[r, last]), 6),
                    "top": [
                        {"token": p, "id": int(i), "prob": round(float(q), 6)}
                        for p, i, q in zip(lens.top_pieces[r][last], lens.top_ids[r, last], lens.top_probs[r, last])
                    ],
                }
                for r, name in enumerate(lens.layer_names)
            ],
        },
    }


def build(demo: gr.Blocks) -> None:
    gr.Markdown(INTRO)
    facts = session().facts  # the sliders' ranges; Run updates them when the model changes
    state = gr.State(None, time_to_live=STATE_TTL_S)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Prompt", lines=2, value=DEFAULT_TEXT, max_length=MAX_TEXT_CHARS,
                              elem_id="att-text")
        with gr.Column(scale=1, min_width=220):
            chat = gr.Checkbox(label="as chat (apply the chat template)", value=False, elem_id="att-chat")
            run = gr.Button("Run", variant="primary", elem_id="att-run")
    examples = gr.Examples(examples=[[t] for t in EXAMPLES.values()], example_labels=list(EXAMPLES), inputs=[text],
                           label="Examples", api_visibility="private", api_name="attention_example")
    info = gr.HTML(elem_id="att-info")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                layer = gr.Slider(0, facts.num_layers - 1, value=0, step=1, label="layer (0 = first)", elem_id="att-layer")
                head = gr.Slider(0, facts.num_heads - 1, value=0, step=1, label="head", elem_id="att-head")
                mean = gr.Checkbox(label="mean over heads", value=False, elem_id="att-mean", min_width=120)
            heatmap = gr.Plot(show_label=False, elem_id="att-heatmap")
            note = gr.HTML(elem_id="att-gqa", css_template=HEAD_CSS)
        with gr.Column(scale=2, min_width=420):
            metric = gr.Radio(METRICS, value="first", label="Overview: one number per head", elem_id="att-metric")
            overview = gr.HTML(elem_id="att-overview", css_template=OVERVIEW_CSS, js_on_load=OVERVIEW_JS)
    gr.Markdown("### Token focus: what one token looks at")
    token = gr.Dropdown(choices=[], label="token (query)", elem_id="att-token", interactive=True)
    focus = gr.HTML(elem_id="att-focus", css_template=FOCUS_CSS)
    gr.Markdown("### Logit lens: the next-token guess forming layer by layer")
    lens_fig = gr.Plot(show_label=False, elem_id="att-lens")
    with gr.Accordion("Top guesses of every layer for the selected token", open=True):
        lens_table = gr.HTML(elem_id="att-lens-table", css_template=LENS_CSS)
    with gr.Accordion("How attention works", open=True):
        gr.Markdown(EXPLANATION)
    gr.Markdown(f"<small>Logit lens: top {LENS_TOP_K} guesses per layer at the last {LENS_MAX_POSITIONS} positions.</small>")

    head_views = [heatmap, note, focus, overview]
    run_outputs = [state, layer, head, token, info, heatmap, note, focus, overview, lens_fig, lens_table]
    run_inputs = [text, chat, layer, head, mean, metric]
    gr.on([demo.load, model_changed(demo), run.click, text.submit, chat.input], run_attention, run_inputs, run_outputs,
          api_visibility="private", concurrency_id=MODEL_CONCURRENCY, trigger_mode="always_last")
    examples.load_input_event.then(run_attention, run_inputs, run_outputs, api_visibility="private",
                                   concurrency_id=MODEL_CONCURRENCY)
    # Views of the cached analysis: .input fires on the user's moves only, so a click on the overview
    # (which sets the sliders itself) does not draw twice.
    gr.on([layer.input, head.input, mean.input], show_head, [state, layer, head, mean, token, metric], head_views,
          api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    overview.pick_head(pick_head, [state, token, metric], [layer, head, mean, *head_views],
                       api_visibility="private", show_progress="hidden")
    token.input(show_token, [state, layer, head, mean, token], [focus, lens_fig, lens_table],
                api_visibility="private", show_progress="hidden")
    metric.input(show_overview, [state, layer, head, mean, metric], overview, api_visibility="private",
                 show_progress="hidden")
    gr.api(attention_api, api_name="attention", concurrency_id=MODEL_CONCURRENCY)
