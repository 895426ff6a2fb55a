"""Attention views as pure functions: arrays and token pieces in, a plotly Figure, an HTML string, a one-line
text alternative (`*_summary`) or the rows of a CSV download out.

Colours: attention weights use one white -> dark blue scale everywhere (heatmap, overview, token focus),
with more of the colour range spent on small weights, because most weights are small and a linear scale
would show only the attention sink. The scale is sequential with falling lightness, so it reads the same in
greyscale and to colour-blind eyes. Masked (future) cells are left empty and hatched on a grey background,
so "not allowed to look" never looks like "looked with weight 0" (the hatch keeps them apart in greyscale
too, where the grey alone would match a light blue). The one accent colour (selection outlines) is
Okabe-Ito vermillion, always paired with a shape cue (a thick outline, bold text).
"""

from __future__ import annotations

import html
import re

import numpy as np
import plotly.graph_objects as go

from ..i18n import DEFAULT, t

# White -> dark blue (ColorBrewer Blues); stops bunched at the low end so weights of 0.02-0.2 stay visible.
WEIGHT_SCALE = [
    [0.0, "#ffffff"], [0.02, "#eef4fb"], [0.08, "#c6dbef"], [0.2, "#6baed6"], [0.45, "#2171b5"], [1.0, "#08306b"],
]
MASK_GREY = "#c8c8c8"
FONT = dict(size=14, color="#222")
# Without a template (plotly's templates cost ~10 ms per figure to copy), axes need these set by hand.
AXIS = dict(automargin=True, ticks="", showgrid=False, zeroline=False, showline=False)


def _interp_colour(value: float) -> str:
    """The WEIGHT_SCALE colour of a value in [0, 1], as an rgb() string (for HTML views)."""
    value = float(np.clip(value, 0.0, 1.0))
    for (a, ca), (b, cb) in zip(WEIGHT_SCALE, WEIGHT_SCALE[1:]):
        if value <= b:
            t = 0.0 if b == a else (value - a) / (b - a)
            rgb = [int(ca[i:i + 2], 16) * (1 - t) + int(cb[i:i + 2], 16) * t for i in (1, 3, 5)]
            return "rgb({:.0f},{:.0f},{:.0f})".format(*rgb)
    return WEIGHT_SCALE[-1][1]


_COLOURS = [_interp_colour(i / 255) for i in range(256)]  # lookup table: HTML views colour hundreds of cells


def _colour(value: float) -> str:
    """The WEIGHT_SCALE colour of a value in [0, 1] (to 1/255)."""
    return _COLOURS[int(round(min(max(value, 0.0), 1.0) * 255))]


def _text_colour(value: float) -> str:
    """Dark text on light cells, white on dark ones."""
    return "#fff" if value > 0.3 else "#111"


def _short(piece: str, limit: int = 12) -> str:
    return piece if len(piece) <= limit else piece[: limit - 1] + "…"


def _tick_labels(pieces: list[str], max_labels: int = 64) -> tuple[list[int], list[str]]:
    """Token labels for an axis: all of them up to max_labels, else every k-th (with its index)."""
    n = len(pieces)
    step = max(1, -(-n // max_labels))
    positions = list(range(0, n, step))
    if step == 1:
        return positions, [_short(p) for p in pieces]
    return positions, [f"{i}:{_short(pieces[i], 8)}" for i in positions]


def layer_label(name: str, lang: str = DEFAULT, in_sentence: bool = False) -> str:
    """A logit-lens row name ("embeddings", "layer 3", as `inference.lens` names them) in `lang`; in a sentence
    the embeddings row reads "the embeddings"."""
    if name == "embeddings":
        return t("attention.lens_embeddings_in_sentence" if in_sentence else "attention.lens_embeddings", lang)
    match = re.fullmatch(r"layer (\d+)", name)
    return t("attention.lens_layer", lang, n=int(match[1])) if match else name


def _mask_hatch(n: int, keys: int, lang: str = DEFAULT) -> go.Scatter:
    """A hatched polygon over the masked cells (key j > query i) of an n x keys map: the causal mask's
    staircase. Hovering it says what it is."""
    xs, ys = [keys - 0.5, 0.5], [-0.5, -0.5]
    for i in range(n):  # row i is masked from column i+1 on: down one row, right one column
        xs += [i + 0.5, i + 1.5]
        ys += [i + 0.5, i + 0.5]
    xs[-1], ys[-1] = keys - 0.5, n - 0.5  # the last row: masked only in the decode column (if any)
    xs[-2], ys[-2] = n - 0.5, n - 0.5
    return go.Scatter(
        x=xs, y=ys, fill="toself", mode="lines", line=dict(width=0), fillcolor=MASK_GREY,
        fillpattern=dict(shape="/", fgcolor="#8a8a8a", bgcolor=MASK_GREY, size=8, solidity=0.15),
        hoveron="fills", hoverinfo="text", text=t("attention.fig_masked_hover", lang),
        showlegend=False,
    )


def attention_heatmap(
    weights: np.ndarray,
    pieces: list[str],
    title: str,
    decode_row: np.ndarray | None = None,
    decode_piece: str | None = None,
    lang: str = DEFAULT,
) -> go.Figure:
    """The attention map of one head (or a mean over heads): weights [n, n], rows = queries, cols = keys.

    With decode_row [n+1], a second strip below shows the next token's single query row over the n cached
    keys and its own key (the decode step), aligned with the prompt's key columns."""
    n = len(pieces)
    keys = n + (1 if decode_row is not None else 0)
    z = np.full((n, keys), np.nan, dtype=np.float32)  # NaN: masked, drawn as the grey background
    z[:, :n] = np.where(np.tri(n, dtype=bool), weights, np.nan)
    key_pieces = pieces + ([t("attention.fig_decode_key", lang, piece=decode_piece)] if decode_row is not None else [])
    x_ticks, x_text = _tick_labels(key_pieces)
    y_ticks, y_text = _tick_labels(pieces)
    font_size = 13 if n <= 32 else 11 if n <= 64 else 10
    hover = t("attention.fig_hover", lang, query="%{y}", keypos="%{x}", weight="%{z:.4f}") + "<extra></extra>"
    heat = go.Heatmap(
        z=z, x=list(range(keys)), y=list(range(n)), zmin=0.0, zmax=1.0, colorscale=WEIGHT_SCALE,
        hoverongaps=False, hovertemplate=hover, xgap=1 if n <= 64 else 0, ygap=1 if n <= 64 else 0,
        colorbar=dict(title=dict(text=t("attention.fig_weight", lang), side="right"), len=0.6, y=0.65, thickness=14),
    )
    data = [heat, _mask_hatch(n, keys, lang)]
    layout = dict(
        title=dict(text=title, font=dict(size=16), x=0.02, xanchor="left"),
        template="none", font=FONT, plot_bgcolor=MASK_GREY, paper_bgcolor="white",
        xaxis=dict(AXIS, tickvals=x_ticks, ticktext=x_text, tickangle=-60, tickfont=dict(size=font_size),
                   title=dict(text=t("attention.fig_key_axis", lang)), range=[-0.5, keys - 0.5]),
        # A fixed reversed range (row 0 on top): autorange would pad it for the hatch polygon (a scatter trace).
        yaxis=dict(AXIS, tickvals=y_ticks, ticktext=y_text, range=[n - 0.5, -0.5], tickfont=dict(size=font_size),
                   title=dict(text=t("attention.fig_query_axis", lang))),
        margin=dict(l=10, r=10, t=60, b=10),
        height=int(np.clip(22 * n + 260, 440, 940)),
    )
    if decode_row is not None:
        # The prompt map fills the top; the decode strip (one row) sits below it on the same key axis.
        strip_share = max(0.05, min(0.12, 1.6 / (n + 2)))
        layout["yaxis"]["domain"] = [strip_share + 0.11, 1.0]
        layout["yaxis2"] = dict(AXIS, domain=[0.0, strip_share], tickvals=[0], ticktext=[_short(decode_piece)],
                                tickfont=dict(size=font_size))
        layout["xaxis"]["anchor"] = "y2"
        data.append(go.Heatmap(
            z=decode_row[None, :].astype(np.float32), x=list(range(keys)), y=[0], yaxis="y2",
            zmin=0.0, zmax=1.0, colorscale=WEIGHT_SCALE, showscale=False, xgap=1 if n <= 64 else 0,
            hovertemplate=t("attention.fig_decode_hover", lang, keypos="%{x}", weight="%{z:.4f}") + "<extra></extra>",
        ))
        layout["annotations"] = [dict(
            text=t("attention.fig_decode_note", lang, piece=html.escape(decode_piece), n=n),
            xref="paper", yref="paper", x=0.0, y=strip_share + 0.015, xanchor="left", yanchor="bottom",
            showarrow=False, font=dict(size=13),
        )]
    return go.Figure(data=data, layout=layout)


def overview_html(
    values: np.ndarray,
    label: str,
    unit: str,
    group_size: int,
    selected: tuple[int, int | None] | None = None,
    windows: list[int | None] | None = None,
    lang: str = DEFAULT,
) -> str:
    """Layer x head grid of one summary value per head, as a clickable HTML table.
    windows: per layer, its sliding-window length (a local layer, marked) or None (global attention).

    values [layers, heads]. Each cell carries data-layer / data-head so a click can open that head; the
    last column (mean over the layer's heads) opens the layer's mean map. Columns are grouped by the KV
    head the query heads share (group_size query heads per KV head).
    label: the summary's name, already in `lang`; unit: its unit as `inference.attention.SUMMARIES` names it
    ("weight", "bits" or "tokens"; shown in `lang`)."""
    layers, heads = values.shape
    if unit == "weight":  # weights: the heatmap's absolute 0..1 scale, comparable across prompts
        low, high = 0.0, 1.0
    else:  # bits or tokens: stretch this grid's own range
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
    span = high - low if high > low else 1.0
    digits = 2 if unit == "weight" else 1
    unit_text = t(f"attention.unit_{unit}", lang)
    mean_text = t("attention.mean_over_heads", lang)

    def cell(v: float, layer: int, head: int | None) -> str:
        shade = (v - low) / span
        classes = ["lie-att-cell"]
        if selected is not None and selected == (layer, head):
            classes.append("selected")
        if head is not None and head % group_size == 0 and head > 0:
            classes.append("group-start")
        head_attr = "mean" if head is None else str(head)
        what = mean_text if head is None else t("attention.head_n", lang, head=head)
        title = t("attention.ov_cell_title", lang, layer=layer, what=what, value=f"{v:.3f}", unit=unit_text)
        return (
            f'<td class="{" ".join(classes)}" data-layer="{layer}" data-head="{head_attr}" '
            f'style="background:{_colour(shade)};color:{_text_colour(shade)}" '
            f'title="{html.escape(title)}">{v:.{digits}f}</td>'
        )

    groups = "".join(
        f'<th colspan="{group_size}" class="lie-att-group">{html.escape(t("attention.ov_kv_head", lang, g=g))}</th>'
        for g in range(heads // group_size)
    )
    head_row = "".join(  # h3 = head 3
        f'<th class="{"group-start" if h % group_size == 0 and h > 0 else ""}">h{h}</th>'  # not translated: a symbol
        for h in range(heads)
    )
    body = []
    for layer in range(layers):
        cells = "".join(cell(float(values[layer, h]), layer, h) for h in range(heads))
        cells += cell(float(values[layer].mean()), layer, None)
        window = windows[layer] if windows and layer < len(windows) else None
        if window:
            title = html.escape(t("attention.ov_local_title", lang, window=window))
            row_name = html.escape(t("attention.ov_local_row", lang, layer=layer))
            name = f'<th class="lie-att-local" title="{title}">{row_name}</th>'
        else:
            name = f"<th>{layer}</th>"
        body.append(f"<tr>{name}{cells}</tr>")
    caption = t("attention.ov_caption_absolute" if unit == "weight" else "attention.ov_caption_relative", lang,
                label=html.escape(label), unit=html.escape(unit_text))
    return (
        f'<div class="lie-att-overview"><div class="lie-att-caption">{caption}{_local_note(windows, lang)}</div>'
        f'<table><thead><tr><th></th>{groups}<th></th></tr><tr><th>{html.escape(t("attention.ov_layer", lang))}</th>'
        f'{head_row}<th>{html.escape(t("attention.ov_mean", lang))}</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _local_note(windows: list[int | None] | None, lang: str = DEFAULT) -> str:
    local = [w for w in windows or [] if w]
    if not local:
        return ""
    marked = f"<b>{html.escape(t('attention.ov_local_word', lang))}</b>"
    return " " + t("attention.ov_local_note", lang, local=marked, count=len(local), total=len(windows),
                   window=max(local))


def token_focus_html(pieces: list[str], special: list[bool], row: np.ndarray, query: int, top: int = 4,
                     lang: str = DEFAULT) -> str:
    """The text coloured by one query token's attention row (keys 0..query); later tokens are masked.

    row: weights over keys 0..query (longer rows are cut there: later keys are masked)."""
    weights = np.asarray(row[: query + 1], dtype=np.float32)
    chips = []
    for j, piece in enumerate(pieces):
        classes = ["lie-att-tok"]
        if special[j]:
            classes.append("special")
        if j == query:
            classes.append("query")
        if j > query:
            classes.append("masked")
            masked = html.escape(t("attention.focus_masked", lang, index=j))
            chips.append(f'<span class="{" ".join(classes)}" title="{masked}">'
                         f"{html.escape(piece)}</span>")
            continue
        shade = float(weights[j])  # the heatmap's own colour scale: the same weight, the same colour
        chips.append(
            f'<span class="{" ".join(classes)}" style="background:{_colour(shade)};color:{_text_colour(shade)}" '
            f'title="#{j} {html.escape(piece)}: {weights[j]:.4f}">{html.escape(piece)}</span>'
        )
    order = np.argsort(-weights)[:top]
    best = " · ".join(f"<b>{html.escape(pieces[j])}</b> {weights[j]:.2f}" for j in order)
    top_line = t("attention.focus_top", lang, index=query, piece=f"<b>{html.escape(pieces[query])}</b>", best=best)
    return (
        f'<div class="lie-att-focus-top">{top_line}</div>'
        f'<div class="lie-att-tokens">{"".join(chips)}</div>'
    )


LOG_TICKS = [-4, -3, -2, -1, 0]


def lens_heatmap(
    layer_names: list[str],
    position_labels: list[str],
    top_pieces: list[list[list[str]]],
    top_probs: np.ndarray,
    answer_pieces: list[str],
    answer_probs: np.ndarray,
    selected_column: int | None = None,
    lang: str = DEFAULT,
) -> go.Figure:
    """Logit lens as a layer x position heatmap: each cell's text is that layer's top guess for the next
    token, its colour the probability (log scale) the layer gives to the model's final answer there.

    top_pieces [L+1][P][k], top_probs [L+1, P, k], answer_probs [L+1, P]; row 0 = embeddings."""
    rows, cols = answer_probs.shape
    z = np.log10(np.clip(answer_probs, 1e-4, 1.0)).astype(np.float32)
    text = [[_short(top_pieces[r][c][0], 9) for c in range(cols)] for r in range(rows)]
    names = [layer_label(name, lang) for name in layer_names]
    hover = [
        [
            t("attention.lens_hover_after", lang, layer=html.escape(names[r]), position=html.escape(position_labels[c]))
            + "<br>" + t("attention.lens_hover_p", lang, answer=html.escape(answer_pieces[c]),
                         p=f"{answer_probs[r, c]:.4f}")
            + "<br>" + t("attention.lens_hover_top", lang, guesses=", ".join(
                f"{html.escape(p)} {q:.3f}" for p, q in zip(top_pieces[r][c], top_probs[r, c])))
            for c in range(cols)
        ]
        for r in range(rows)
    ]
    x_text = [f"{_short(label, 9)}<br>→{_short(answer, 9)}" for label, answer in zip(position_labels, answer_pieces)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(cols)), y=list(range(rows)), zmin=-4, zmax=0, colorscale=WEIGHT_SCALE,
        text=text, texttemplate="%{text}", textfont=dict(size=11), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", xgap=1, ygap=1,
        colorbar=dict(title=dict(text=t("attention.lens_colorbar", lang), side="right"), tickvals=LOG_TICKS,
                      ticktext=["≤0.0001", "0.001", "0.01", "0.1", "1"], thickness=14),
    ))
    if selected_column is not None:
        fig.add_shape(type="rect", x0=selected_column - 0.5, x1=selected_column + 0.5, y0=-0.5, y1=rows - 0.5,
                      line=dict(color="#d55e00", width=3))
    fig.update_layout(
        title=dict(text=f"{t('attention.lens_title', lang)}<br><span style='font-size:13px'>"
                        f"{t('attention.lens_subtitle', lang)}</span>", font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickvals=list(range(cols)), ticktext=x_text, side="top", tickangle=0, tickfont=dict(size=12)),
        yaxis=dict(AXIS, tickvals=list(range(rows)), ticktext=names, tickfont=dict(size=11)),
        margin=dict(l=10, r=10, t=120, b=10), height=int(np.clip(20 * rows + 170, 420, 900)),
    )
    return fig


def lens_table_html(
    layer_names: list[str],
    top_pieces: list[list[str]],
    top_probs: np.ndarray,
    answer_piece: str,
    answer_probs: np.ndarray,
    position_label: str,
    lang: str = DEFAULT,
) -> str:
    """Top guesses of every layer at one position, last layer first. top_probs [L+1, k], answer_probs [L+1]."""
    rows = []
    for r in reversed(range(len(layer_names))):
        guesses = " ".join(
            f'<span class="lie-att-guess{" answer" if p == answer_piece else ""}">{html.escape(p)} '
            f"<small>{q:.2f}</small></span>"
            for p, q in zip(top_pieces[r], top_probs[r])
        )
        name = html.escape(layer_label(layer_names[r], lang))
        rows.append(f"<tr><th>{name}</th><td>{answer_probs[r]:.4f}</td><td>{guesses}</td></tr>")
    answer = html.escape(answer_piece)
    caption = t("attention.lens_caption", lang, position=f"<b>{html.escape(position_label)}</b>", k=top_probs.shape[1],
                answer=f"<b>{answer}</b>")
    return (
        f'<div class="lie-att-lens"><div class="lie-att-caption">{caption}</div><table><thead><tr>'
        f'<th>{html.escape(t("attention.ov_layer", lang))}</th><th>P({answer})</th>'
        f'<th>{html.escape(t("attention.lens_top_guesses", lang))}</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# ---------------------------------------------------------------------------------------------------
# Text alternatives: each figure in one sentence, with the numbers of the data it shows


def _tok(i: int, pieces: list[str]) -> str:
    return f"#{i} {pieces[i]}"


def attention_summary(
    weights: np.ndarray,
    pieces: list[str],
    what: str,
    decode_row: np.ndarray | None = None,
    decode_piece: str | None = None,
    lang: str = DEFAULT,
) -> str:
    """The attention map in one sentence. weights [n, n] (rows = queries), decode_row [n+1] or None.

    Cheap at 512 tokens (a few vectorised passes over the map): it runs on every layer/head switch."""
    n = len(pieces)
    if n < 2:
        return t("attention.sum_one_token", lang, what=what)
    # Queries 2..n-1: query 0 has no choice, and query 1's previous token is the first token.
    start = 2 if n > 2 else 1
    first = float(weights[start:, 0].mean())
    previous = float(np.diagonal(weights, offset=-1)[start - 1:].mean())
    # The strongest link that is neither the first token nor the token itself nor the one before it.
    other = np.tril(weights, k=-2)  # [n, n]: keys at least two back
    other[:, 0] = 0.0
    sentence = t("attention.sum_map", lang, what=what, n=n, start=start, first=f"{first:.0%}",
                 previous=f"{previous:.0%}")
    if n > 2 and other.max() >= 0.1:
        q, k = np.unravel_index(int(other.argmax()), other.shape)
        sentence += t("attention.sum_map_link", lang, query=_tok(q, pieces), keypos=_tok(k, pieces),
                      weight=f"{other[q, k]:.2f}")
    if decode_row is not None and decode_piece is not None:
        j = int(np.argmax(decode_row))
        target = t("attention.sum_itself", lang, piece=decode_piece) if j == n else _tok(j, pieces)
        sentence += t("attention.sum_map_decode", lang, piece=decode_piece, target=target,
                      weight=f"{decode_row[j]:.2f}")
    return sentence + t("attention.sum_end", lang)


def overview_summary(values: np.ndarray, label: str, unit: str, lang: str = DEFAULT) -> str:
    """The layer x head overview in one sentence. values [layers, heads]; label in `lang`, unit as SUMMARIES
    names it."""
    layers, heads = values.shape
    hi = np.unravel_index(int(np.argmax(values)), values.shape)
    lo = np.unravel_index(int(np.argmin(values)), values.shape)
    means = values.mean(1)  # [layers]
    fmt = f".{2 if unit == 'weight' else 1}f"
    return t("attention.sum_overview", lang, label=label, unit=t(f"attention.unit_{unit}", lang), layers=layers,
             heads=heads, hi_layer=hi[0], hi_head=hi[1], hi=f"{values[hi]:{fmt}}", lo_layer=lo[0], lo_head=lo[1],
             lo=f"{values[lo]:{fmt}}", first=f"{means[0]:{fmt}}", last=f"{means[-1]:{fmt}}", last_layer=layers - 1,
             best_layer=int(np.argmax(means)), best=f"{means.max():{fmt}}")


def lens_summary(
    layer_names: list[str],
    top_pieces: list[list[str]],
    answer_piece: str,
    answer_probs: np.ndarray,
    position_label: str,
    lang: str = DEFAULT,
) -> str:
    """The logit lens at one position in one sentence. top_pieces [L+1][k] (best first), answer_probs [L+1];
    the last row is the model's real output."""
    rows = len(layer_names)
    is_top = [top_pieces[r][0] == answer_piece for r in range(rows)]
    settled = rows - 1  # the first row from which the answer stays the top guess to the end
    while settled > 0 and is_top[settled - 1]:
        settled -= 1
    before = settled - 1
    name = lambda r: layer_label(layer_names[r], lang, in_sentence=True)  # noqa: E731
    sentence = t("attention.sum_lens", lang, position=position_label, answer=answer_piece,
                 p=f"{answer_probs[-1]:.2f}", layer=name(settled))
    if before >= 0:
        sentence += t("attention.sum_lens_before", lang, layer=name(before), p=f"{answer_probs[before]:.3f}",
                      guess=top_pieces[before][0])
    return sentence + t("attention.sum_end", lang)


# ---------------------------------------------------------------------------------------------------
# Downloads: the rows of the CSV files (plain lists; components.export writes them)


def attention_table(
    weights: np.ndarray,
    pieces: list[str],
    decode_row: np.ndarray | None = None,
    decode_piece: str | None = None,
) -> tuple[list[str], list[list]]:
    """The attention map as a table: header = keys, one row per query (first cell = the query token), the
    masked cells 0. With the decode step, one more key column (its own key) and its row last, so every row
    sums to 1. Labels are '#i piece' (unique, and never start like a spreadsheet formula)."""
    n = len(pieces)
    labels = [f"#{i} {p}" for i, p in enumerate(pieces)]
    matrix = np.asarray(weights, dtype=np.float32)
    if decode_row is not None:
        labels.append(f"#{n} {decode_piece} (decode step)")
        matrix = np.vstack([np.pad(matrix, ((0, 0), (0, 1))), np.asarray(decode_row, np.float32)[None, :]])
    cells = np.char.mod("%.6f", matrix)  # [rows, keys] strings: formatting in numpy, not cell by cell
    return ["query \\ key", *labels], [[label, *row] for label, row in zip(labels, cells.tolist())]


def lens_table(
    layer_names: list[str],
    positions: list[int],
    position_pieces: list[str],
    top_pieces: list[list[list[str]]],
    top_ids: np.ndarray,
    top_probs: np.ndarray,
    answer_pieces: list[str],
    answer_probs: np.ndarray,
) -> tuple[list[str], list[list]]:
    """The logit lens, one row per (layer, position, rank): top_pieces [L+1][P][k], top_ids/top_probs
    [L+1, P, k], answer_probs [L+1, P]."""
    header = ["layer", "position", "token", "final_answer", "p_final_answer", "rank", "guess", "guess_id", "prob"]
    rows = []
    for r, name in enumerate(layer_names):
        for c, position in enumerate(positions):
            for rank in range(top_probs.shape[2]):
                rows.append([name, position, position_pieces[c], answer_pieces[c], f"{answer_probs[r, c]:.6f}",
                             rank + 1, top_pieces[r][c][rank], int(top_ids[r, c, rank]),
                             f"{top_probs[r, c, rank]:.6f}"])
    return header, rows
