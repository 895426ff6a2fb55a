"""Attention tab: where every head of every layer looks, the decode step's single new row, and a logit lens.

One model pass per text (cached in the session); moving a slider, clicking a head or picking a token only
re-draws from that cached analysis. The lesson (assets/lessons/attention.md) sits on top with its "try this"
buttons; every view can be shared as a link (text, chat, layer, head, mean, metric, token) and downloaded (the
shown map and the logit lens as CSV; figures as PNG from plotly's toolbar); each figure has a one-line text
alternative under it.
"""

from __future__ import annotations

import html
import json

import gradio as gr
import numpy as np

from inference.attention import SUMMARIES, AttentionMaps, capture_attention
from inference.errors import InputError
from inference.limits import (
    ATTENTION_MEMORY_BUDGET, LENS_MAX_POSITIONS, LENS_TOP_K, MAX_ATTENTION_TOKENS, MAX_TEXT_CHARS,
)

from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session, user_errors
from ..export import csv_file
from .figures import (
    attention_heatmap, attention_summary, attention_table, lens_heatmap, lens_summary, lens_table, lens_table_html,
    overview_html, overview_summary, token_focus_html,
)
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Attention"
EXAMPLES = json.loads((ASSETS / "examples" / "attention.json").read_text())
DEFAULT_TEXT = EXAMPLES["France (logit lens)"]
METRICS = [(label, name) for name, (label, _unit) in SUMMARIES.items()]

# How to operate the tab and its limits; the teaching text is the lesson (assets/lessons/attention.md).
INTRO = (f"Run a prompt, then move the **layer** and **head** sliders or click a cell of the overview; pick a token "
         f"to see what it looks at. Every view re-draws from one cached model pass. Limits: {MAX_ATTENTION_TOKENS} "
         f"tokens per prompt, at most {ATTENTION_MEMORY_BUDGET / 1e6:.0f} MB kept per prompt (past about 480 tokens "
         f"a layer you re-open may need one more model pass); the logit lens shows the top {LENS_TOP_K} guesses per "
         f"layer at the last {LENS_MAX_POSITIONS} positions.")

HEAD_CSS = """
.lie-att-note { font-size: .95rem; margin: .2rem 0 .4rem 0; }
"""
OVERVIEW_CSS = """
.lie-att-overview { overflow-x: auto; }
.lie-att-overview table { border-collapse: collapse; font-size: .8rem; font-variant-numeric: tabular-nums; }
.lie-att-overview th { font-weight: 600; padding: 1px 3px; text-align: right; white-space: nowrap; }
.lie-att-overview thead th { text-align: center; }
.lie-att-overview th.lie-att-group { border-bottom: 1px solid #888; font-weight: 500; }
.lie-att-cell { padding: 2px 2px; text-align: center; cursor: pointer; border: 1px solid #fff; min-width: 2.3em; }
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
.lie-att-lens { overflow-x: auto; }
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


def _what(layer: int, head: int | None) -> str:
    return f"Layer {layer}, " + ("mean over heads" if head is None else f"head {head}")


def _heatmap(maps: AttentionMaps, layer: int, head: int | None):
    """The map of one head (or the layer's mean) with the decode strip, and its one-line text alternative."""
    decode = maps.decode
    weights = maps.pattern(layer, head)  # [n, n]
    decode_row = decode.row(layer, head)  # [n+1]
    pieces = maps.tokens.pieces
    figure = attention_heatmap(weights, pieces, f"{_what(layer, head)} · hatched grey = masked (a later token)",
                               decode_row=decode_row, decode_piece=decode.piece)
    return figure, attention_summary(weights, pieces, _what(layer, head), decode_row, decode.piece)


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


def _overview(maps: AttentionMaps, metric: str, layer: int, head: int | None):
    """The clickable layer x head grid of one summary, and its one-line text alternative."""
    if metric not in SUMMARIES:
        raise InputError(f"Unknown summary {metric!r}; pick one of: {', '.join(SUMMARIES)}.")
    label, unit = SUMMARIES[metric]
    values = maps.summaries[metric]  # [layers, heads]
    return (overview_html(values, label, unit, maps.queries_per_kv_head, selected=(layer, head)),
            overview_summary(values, label, unit))


def _lens_position(maps: AttentionMaps, token: int | None) -> int:
    """The position the lens highlights: the focused token if the lens covers it, else the last one."""
    n = maps.n
    return n - 1 if token is None or int(token) not in maps.lens.positions else int(token)


def _lens_views(maps: AttentionMaps, token: int | None):
    """Logit lens figure, its table for the highlighted position, and the one-line text alternative."""
    lens = maps.lens
    position = _lens_position(maps, token)
    column = lens.column(position)
    labels = [maps.tokens.pieces[p] for p in lens.positions]
    figure = lens_heatmap(lens.layer_names, labels, lens.top_pieces, lens.top_probs, lens.answer_pieces,
                          lens.answer_probs, selected_column=column)
    label = f"#{position} {labels[column]}"
    column_pieces = [layer[column] for layer in lens.top_pieces]  # [L+1][k]
    table = lens_table_html(lens.layer_names, column_pieces, lens.top_probs[:, column], lens.answer_pieces[column],
                            lens.answer_probs[:, column], label)
    summary = lens_summary(lens.layer_names, column_pieces, lens.answer_pieces[column], lens.answer_probs[:, column],
                           label)
    return figure, table, summary


def _lens_csv(maps: AttentionMaps) -> str:
    """Every layer's top guesses at every position the lens covers, as a CSV file (small: written on Run)."""
    lens = maps.lens
    header, rows = lens_table(lens.layer_names, lens.positions, [maps.tokens.pieces[p] for p in lens.positions],
                              lens.top_pieces, lens.top_ids, lens.top_probs, lens.answer_pieces, lens.answer_probs)
    return csv_file("logit-lens", header, rows)


def _info(maps: AttentionMaps, no_template: bool = False) -> str:
    d = maps.decode
    cells = [("(this model has no chat template)", "as plain text")] if no_template else []
    cells += [
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


# The attention-map CSV is written only on request ("Prepare CSV"): a 512-token map is 263,000 cells, too many
# to format on every layer/head switch (the switch's budget is 50 ms). A switch empties the button instead,
# so a download always holds the map on screen.
MAP_CSV_EMPTY = dict(value=None, interactive=False, label="⬇ Attention map as CSV (prepare it first)")


def _switch_views(maps: AttentionMaps, layer: int, shown: int | None, token: int | None, metric: str) -> tuple:
    """Everything a layer/head switch re-draws: heatmap, its summary, GQA note, token focus, overview, its summary."""
    figure, summary = _heatmap(maps, layer, shown)
    grid, grid_summary = _overview(maps, metric, layer, shown)
    return figure, summary, _gqa_note(maps, layer, shown), _focus(maps, layer, shown, token), grid, grid_summary


# ---------------------------------------------------------------------------------------------------
# Events


def _run(text: str, chat: bool, layer: int, head: int, mean: bool, metric: str, token: int | None):
    """Capture (one model pass, cached) and draw every view; token None = the last prompt token."""
    s = session()
    no_template = bool(chat) and not s.has_chat_template  # e.g. Gemma 3 270M base: run the text as it is
    chat = bool(chat) and not no_template
    maps = capture_attention(s, text, chat)
    state = {"model": s.model_id, "text": text, "chat": chat}
    layer = min(max(int(layer or 0), 0), maps.num_layers - 1)
    head = min(max(int(head or 0), 0), maps.num_heads - 1)
    shown = None if mean else head
    token = maps.n - 1 if token is None or not 0 <= int(token) <= maps.n else int(token)
    figure, summary, note, focus, grid, grid_summary = _switch_views(maps, layer, shown, token, metric)
    lens_fig, lens_html, lens_text = _lens_views(maps, token)
    return (
        state,
        gr.update(maximum=maps.num_layers - 1, value=layer),
        gr.update(maximum=maps.num_heads - 1, value=head),
        gr.update(choices=_token_choices(maps), value=token),
        token,
        _info(maps, no_template),
        figure, summary, note, focus, grid, grid_summary,
        lens_fig, lens_text, lens_html,
        gr.DownloadButton(value=_lens_csv(maps), interactive=True),
        gr.DownloadButton(**MAP_CSV_EMPTY),
    )


@user_errors
def run_attention(text: str, chat: bool, layer: int, head: int, mean: bool, metric: str):
    """Run, Enter, an example or a "try this": analyse the text and focus its last token."""
    return _run(text, chat, layer, head, mean, metric, None)


@user_errors
def run_linked(text: str, chat: bool, layer: int, head: int, mean: bool, metric: str, token: int | None):
    """The page's first run, with a shared link's values: the link's focused token too."""
    return _run(text, chat, layer, head, mean, metric, token)


@user_errors
def show_head(state: dict, layer: int, head: int, mean: bool, token: int, metric: str):
    """A layer/head/mean switch: re-draw from the cached analysis (no model call). Returns the heatmap, the GQA
    note, the token focus and the overview (`on_switch` adds the text alternatives)."""
    maps = _maps(state)
    layer = maps.check_layer(int(layer))
    figure, _summary, note, focus, grid, _grid_summary = _switch_views(maps, layer, _head_or_mean(maps, head, mean),
                                                                      token, metric)
    return figure, note, focus, grid


@user_errors
def on_switch(state: dict, layer: int, head: int, mean: bool, token: int, metric: str):
    """The switch event: every head view, its text alternatives, and an emptied map download."""
    maps = _maps(state)
    layer = maps.check_layer(int(layer))
    return (*_switch_views(maps, layer, _head_or_mean(maps, head, mean), token, metric),
            gr.DownloadButton(**MAP_CSV_EMPTY))


@user_errors
def pick_head(state: dict, token: int, metric: str, evt: gr.EventData):
    """A click on the overview grid opens that head (or the layer's mean over heads)."""
    maps = _maps(state)
    data = getattr(evt, "_data", None) or {}
    layer = maps.check_layer(int(data.get("layer", 0)))
    mean = data.get("head") == "mean"
    shown = None if mean else maps.check_head(int(data.get("head", 0)))
    head = gr.update() if mean else shown  # the mean column keeps the head slider where it was
    return (layer, head, mean, *_switch_views(maps, layer, shown, token, metric), gr.DownloadButton(**MAP_CSV_EMPTY))


@user_errors
def show_token(state: dict, layer: int, head: int, mean: bool, token: int):
    """A token picked for focus: its row, the lens at it, and the link's token field."""
    maps = _maps(state)
    shown = _head_or_mean(maps, head, mean)
    figure, table, summary = _lens_views(maps, token)
    return _focus(maps, maps.check_layer(int(layer)), shown, token), figure, summary, table, int(token)


@user_errors
def show_overview(state: dict, layer: int, head: int, mean: bool, metric: str):
    maps = _maps(state)
    return _overview(maps, metric, maps.check_layer(int(layer)), _head_or_mean(maps, head, mean))


@user_errors
def prepare_map_csv(state: dict, layer: int, head: int, mean: bool):
    """The shown map (rows = queries, columns = keys, the decode step last) as a CSV file to download."""
    maps = _maps(state)
    layer = maps.check_layer(int(layer))
    shown = _head_or_mean(maps, head, mean)
    header, rows = attention_table(maps.pattern(layer, shown), maps.tokens.pieces, maps.decode.row(layer, shown),
                                   maps.decode.piece)
    name = f"attention-layer{layer}-" + ("mean" if shown is None else f"head{shown}")
    path = csv_file(name, header, rows)
    return gr.DownloadButton(value=path, interactive=True, label=f"⬇ {_what(layer, shown)} as CSV")


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
    lesson = LessonPanel(demo, "attention")
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
    share_box = gr.Column()  # the "Copy link" row goes here, made once every field exists (below)
    info = gr.HTML(elem_id="att-info")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                layer = gr.Slider(0, facts.num_layers - 1, value=0, step=1, label="layer (0 = first)", elem_id="att-layer")
                head = gr.Slider(0, facts.num_heads - 1, value=0, step=1, label="head", elem_id="att-head")
                mean = gr.Checkbox(label="mean over heads", value=False, elem_id="att-mean", min_width=120)
            heatmap = gr.Plot(show_label=False, elem_id="att-heatmap")
            heatmap_alt = gr.Markdown(elem_id="att-heatmap-summary", elem_classes=["lie-alt"])
            note = gr.HTML(elem_id="att-gqa", css_template=HEAD_CSS)
            with gr.Row(elem_classes=["lie-advanced"], elem_id="att-map-csv-row"):
                prepare = gr.Button("Prepare CSV of this map", size="sm", elem_id="att-map-csv-prepare", scale=0,
                                    min_width=220)
                map_csv = gr.DownloadButton(size="sm", elem_id="att-map-csv", scale=0, min_width=300, **MAP_CSV_EMPTY)
        with gr.Column(scale=2, min_width=420):
            metric = gr.Radio(METRICS, value="first", label="Overview: one number per head", elem_id="att-metric")
            overview = gr.HTML(elem_id="att-overview", css_template=OVERVIEW_CSS, js_on_load=OVERVIEW_JS)
            overview_alt = gr.Markdown(elem_id="att-overview-summary", elem_classes=["lie-alt"])
    gr.Markdown("### Token focus: what one token looks at")
    token = gr.Dropdown(choices=[], label="token (query)", elem_id="att-token", interactive=True)
    # The focused token as a plain number, for the shareable link (the dropdown's choices change with the text).
    token_pick = gr.Number(value=None, precision=0, minimum=0, maximum=MAX_ATTENTION_TOKENS, visible=False,
                           elem_id="att-token-pick")
    focus = gr.HTML(elem_id="att-focus", css_template=FOCUS_CSS)
    gr.Markdown("### Logit lens: the next-token guess forming layer by layer")
    lens_fig = gr.Plot(show_label=False, elem_id="att-lens")
    lens_alt = gr.Markdown(elem_id="att-lens-summary", elem_classes=["lie-alt"])
    with gr.Accordion("Top guesses of every layer for the selected token", open=True, elem_classes=["lie-advanced"],
                      elem_id="att-lens-table-box"):
        lens_html = gr.HTML(elem_id="att-lens-table", css_template=LENS_CSS)
        lens_csv = gr.DownloadButton("⬇ Logit lens as CSV (every layer, position and rank)", size="sm",
                                     elem_id="att-lens-csv", interactive=False)

    fields = {"text": text, "chat": chat, "layer": layer, "head": head, "mean": mean, "metric": metric,
              "token": token_pick}
    with share_box:
        loaded = share_link(demo, "attention", fields)

    head_views = [heatmap, heatmap_alt, note, focus, overview, overview_alt, map_csv]
    run_outputs = [state, layer, head, token, token_pick, info, heatmap, heatmap_alt, note, focus, overview,
                   overview_alt, lens_fig, lens_alt, lens_html, lens_csv, map_csv]
    run_inputs = [text, chat, layer, head, mean, metric]
    run_event = dict(fn=run_attention, inputs=run_inputs, outputs=run_outputs, api_visibility="private",
                     concurrency_id=MODEL_CONCURRENCY)
    # The first run follows the page load that applied a shared link's values (the link's token included).
    loaded.then(run_linked, [*run_inputs, token_pick], run_outputs, api_visibility="private",
                concurrency_id=MODEL_CONCURRENCY)
    gr.on([model_changed(demo), run.click, text.submit, chat.input], trigger_mode="always_last", **run_event)
    examples.load_input_event.then(**run_event)
    lesson.connect(fields, then=run_event)
    # Views of the cached analysis: .input fires on the user's moves only, so a click on the overview
    # (which sets the sliders itself) does not draw twice.
    gr.on([layer.input, head.input, mean.input], on_switch, [state, layer, head, mean, token, metric], head_views,
          api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    overview.pick_head(pick_head, [state, token, metric], [layer, head, mean, *head_views],
                       api_visibility="private", show_progress="hidden")
    token.input(show_token, [state, layer, head, mean, token], [focus, lens_fig, lens_alt, lens_html, token_pick],
                api_visibility="private", show_progress="hidden")
    metric.input(show_overview, [state, layer, head, mean, metric], [overview, overview_alt],
                 api_visibility="private", show_progress="hidden")
    prepare.click(prepare_map_csv, [state, layer, head, mean], map_csv, api_visibility="private")
    gr.api(attention_api, api_name="attention", concurrency_id=MODEL_CONCURRENCY)
