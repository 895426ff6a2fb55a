"""Attention tab, the event handlers: Run (one model pass per text, cached in the session), and the switches
that only re-draw from that cached analysis: layer, head, mean over heads, a click on the overview, the focused
token, the overview's metric, the map's CSV download, and a change of language.
"""

from __future__ import annotations

import html

import gradio as gr

from inference.attention import SUMMARIES, AttentionMaps, capture_attention
from inference.errors import InputError

from ..common import session, user_errors
from ..export import csv_file
from ..i18n import language, t
from .exports import lens_rows, map_rows
from .figures import (
    attention_heatmap, attention_summary, lens_heatmap, lens_summary, lens_table_html, overview_html,
    overview_summary, token_focus_html,
)


# ---------------------------------------------------------------------------------------------------
# From the cached analysis to views (no model call)


def _maps(state: dict | None) -> AttentionMaps:
    """The cached analysis the views show; a model switch since Run asks for a new Run."""
    if not state:
        raise InputError(t("attention.err_run_first"))
    s = session()
    if s.model_id != state["model"]:
        raise InputError(t("attention.err_model_changed", model=s.label))
    return capture_attention(s, state["text"], state["chat"])


def _head_or_mean(maps: AttentionMaps, head: int, mean: bool) -> int | None:
    return None if mean else maps.check_head(int(head))


def _gqa_note(maps: AttentionMaps, layer: int, head: int | None, lang: str | None = None) -> str:
    group = maps.queries_per_kv_head
    if group == 1:
        shared = t("attention.gqa_own", lang, n=maps.num_heads)
    elif head is None:
        shared = t("attention.gqa_mean", lang, heads=maps.num_heads, kv_heads=maps.num_kv_heads, group=group)
    else:
        mates = maps.heads_sharing(head)
        shared = t("attention.gqa_head", lang, head=head, kv_head=maps.kv_head(head), first=mates[0], last=mates[-1],
                   heads=maps.num_heads, kv_heads=maps.num_kv_heads)
    return f'<div class="lie-att-note">{html.escape(shared)}</div>'


def _what(layer: int, head: int | None, windows: list[int | None] = (), lang: str | None = None) -> str:
    """"Layer 3, head 4" (the map's title and its CSV button), in `lang` (default: this visitor's language)."""
    window = windows[layer] if layer < len(windows) else None
    local = t("attention.what_local", lang, window=window) if window else ""
    if head is None:
        return t("attention.what_mean", lang, layer=layer, local=local)
    return t("attention.what_head", lang, layer=layer, local=local, head=head)


def _heatmap(maps: AttentionMaps, layer: int, head: int | None, lang: str | None = None):
    """The map of one head (or the layer's mean) with the decode strip, and its one-line text alternative."""
    decode = maps.decode
    weights = maps.pattern(layer, head)  # [n, n]
    decode_row = decode.row(layer, head)  # [n+1]
    pieces = maps.tokens.pieces
    lang = lang or language()
    what = _what(layer, head, maps.windows, lang)
    figure = attention_heatmap(weights, pieces, t("attention.heatmap_title", lang, what=what),
                               decode_row=decode_row, decode_piece=decode.piece, lang=lang)
    return figure, attention_summary(weights, pieces, what, decode_row, decode.piece, lang=lang)


def _focus(maps: AttentionMaps, layer: int, head: int | None, token: int | None, lang: str | None = None) -> str:
    """The focused token's attention row as highlighted text; token n is the decode step's new token."""
    n = maps.n
    token = n - 1 if token is None else int(token)
    if not 0 <= token <= n:
        raise InputError(t("attention.err_token", lang, token=token, n=n, last=n - 1))
    pieces, special = list(maps.tokens.pieces), list(maps.tokens.special)
    if token == n:
        row = maps.decode.row(layer, head)  # [n+1]
        pieces, special = pieces + [maps.decode.piece], special + [False]
    else:
        row = maps.query_row(layer, token, head)  # [token+1]
    return token_focus_html(pieces, special, row, token, lang=lang or language())


def _overview(maps: AttentionMaps, metric: str, layer: int, head: int | None, lang: str | None = None):
    """The clickable layer x head grid of one summary, and its one-line text alternative."""
    lang = lang or language()
    if metric not in SUMMARIES:
        raise InputError(t("attention.err_metric", lang, metric=repr(metric), choices=", ".join(SUMMARIES)))
    _label, unit = SUMMARIES[metric]
    label = t(f"attention.metric_{metric}", lang)
    values = maps.summaries[metric]  # [layers, heads]
    return (overview_html(values, label, unit, maps.queries_per_kv_head, selected=(layer, head),
                          windows=maps.windows, lang=lang),
            overview_summary(values, label, unit, lang=lang))


def _lens_position(maps: AttentionMaps, token: int | None) -> int:
    """The position the lens highlights: the focused token if the lens covers it, else the last one."""
    n = maps.n
    return n - 1 if token is None or int(token) not in maps.lens.positions else int(token)


def _lens_views(maps: AttentionMaps, token: int | None, lang: str | None = None):
    """Logit lens figure, its table for the highlighted position, and the one-line text alternative."""
    lens = maps.lens
    position = _lens_position(maps, token)
    column = lens.column(position)
    labels = [maps.tokens.pieces[p] for p in lens.positions]
    lang = lang or language()
    figure = lens_heatmap(lens.layer_names, labels, lens.top_pieces, lens.top_probs, lens.answer_pieces,
                          lens.answer_probs, selected_column=column, lang=lang)
    label = f"#{position} {labels[column]}"
    column_pieces = [layer[column] for layer in lens.top_pieces]  # [L+1][k]
    table = lens_table_html(lens.layer_names, column_pieces, lens.top_probs[:, column], lens.answer_pieces[column],
                            lens.answer_probs[:, column], label, lang=lang)
    summary = lens_summary(lens.layer_names, column_pieces, lens.answer_pieces[column], lens.answer_probs[:, column],
                           label, lang=lang)
    return figure, table, summary


def _lens_csv(maps: AttentionMaps) -> str:
    """Every layer's top guesses at every position the lens covers, as a CSV file (small: written on Run)."""
    return csv_file("logit-lens", *lens_rows(maps))


def _info(maps: AttentionMaps, no_template: bool = False, lang: str | None = None) -> str:
    d = maps.decode
    lang = lang or language()
    cells = [("attention.info_no_template", html.escape(t("attention.info_plain_text", lang)))] if no_template else []
    cells += [
        ("attention.info_tokens", f"{maps.n:,}"),
        ("attention.info_layers_heads", f"{maps.num_layers} × {maps.num_heads}"),
        ("attention.info_kv_heads", f"{maps.num_kv_heads}"),
        ("attention.info_next_token", f"{html.escape(d.piece)} ({d.prob:.0%})"),
        ("attention.info_captured", f"{maps.capture_seconds:.2f} s"),
        ("attention.info_kept", f"{maps.retained_bytes() / 1e6:.2f} MB"),
    ]
    inner = "".join(f"<span><b>{v}</b> {html.escape(t(k, lang))}</span>" for k, v in cells)
    return f'<div class="lie-counts">{inner}</div>'


def _token_choices(maps: AttentionMaps, lang: str | None = None) -> list[tuple[str, int]]:
    choices = [(f"#{i} {piece}", i) for i, piece in enumerate(maps.tokens.pieces)]
    return choices + [(t("attention.token_decode_step", lang, index=maps.n, piece=maps.decode.piece), maps.n)]


# The attention-map CSV is written only on request ("Prepare CSV"): a 512-token map is 263,000 cells, too many
# to format on every layer/head switch (the switch's budget is 50 ms). A switch empties the button instead,
# so a download always holds the map on screen.
def map_csv_empty(lang: str | None = None) -> dict:
    """The map's download button with no file (its label in `lang`, default: this visitor's)."""
    return dict(value=None, interactive=False, label=t("attention.map_csv_empty", lang))


def _switch_views(maps: AttentionMaps, layer: int, shown: int | None, token: int | None, metric: str,
                  lang: str | None = None) -> tuple:
    """Everything a layer/head switch re-draws: heatmap, its summary, GQA note, token focus, overview, its summary."""
    figure, summary = _heatmap(maps, layer, shown, lang)
    grid, grid_summary = _overview(maps, metric, layer, shown, lang)
    return (figure, summary, _gqa_note(maps, layer, shown, lang), _focus(maps, layer, shown, token, lang), grid,
            grid_summary)


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
        gr.DownloadButton(**map_csv_empty()),
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
            gr.DownloadButton(**map_csv_empty()))


@user_errors
def pick_head(state: dict, token: int, metric: str, evt: gr.EventData):
    """A click on the overview grid opens that head (or the layer's mean over heads)."""
    maps = _maps(state)
    data = getattr(evt, "_data", None) or {}
    layer = maps.check_layer(int(data.get("layer", 0)))
    mean = data.get("head") == "mean"
    shown = None if mean else maps.check_head(int(data.get("head", 0)))
    head = gr.update() if mean else shown  # the mean column keeps the head slider where it was
    return (layer, head, mean, *_switch_views(maps, layer, shown, token, metric), gr.DownloadButton(**map_csv_empty()))


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
    name = f"attention-layer{layer}-" + ("mean" if shown is None else f"head{shown}")
    path = csv_file(name, *map_rows(maps, layer, shown))
    return gr.DownloadButton(value=path, interactive=True, label=t("attention.map_csv_ready", what=_what(layer, shown)))


# What `on_language` redraws, in this order (the layout wires the same names): every view of the analysis on screen
# but the map's download, which the language change empties (its label and its file never disagree).
LANGUAGE_OUTPUTS = ("token", "info", "heatmap", "heatmap_alt", "note", "focus", "overview", "overview_alt",
                    "lens_fig", "lens_alt", "lens_html")


def on_language(lang: str, state: dict | None, chat: bool, layer: int, head: int, mean: bool, token: int | None,
                metric: str):
    """A new language: the analysis on screen redrawn in it at the layer, head, focused token and summary the visitor
    chose, from the session's cached analysis (as the switches redraw). Nothing before a Run, after a model switch
    (its own Run follows), or when a control no longer fits the analysis (its own event says why)."""
    try:
        maps = _maps(state)
        s = session()
        layer = maps.check_layer(int(layer))
        shown = _head_or_mean(maps, head, mean)
        token = maps.n - 1 if token is None or not 0 <= int(token) <= maps.n else int(token)
        figure, summary, note, focus, grid, grid_summary = _switch_views(maps, layer, shown, token, metric, lang)
        lens_fig, lens_html, lens_text = _lens_views(maps, token, lang)
        no_template = bool(chat) and not s.has_chat_template
    except (InputError, ValueError, TypeError):
        return (gr.skip(),) * len(LANGUAGE_OUTPUTS)
    return (gr.update(choices=_token_choices(maps, lang), value=token), _info(maps, no_template, lang), figure,
            summary, note, focus, grid, grid_summary, lens_fig, lens_text, lens_html)
