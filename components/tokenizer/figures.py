"""Tokenizer views: coloured token chips (HTML), the token table, and token counts per language."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from inference.tokens import TokenView

from ..i18n import DEFAULT, t

# Light tints of the Okabe-Ito colour-blind-safe palette: neighbouring tokens always differ, and dark
# text stays readable on every tint (also on a projector).
CHIP_COLOURS = ["#f9d9a6", "#b9def3", "#a8e0cc", "#fbf3b0", "#a9cbe8", "#f6c5a6", "#e8c5db", "#d9d9d9"]
BAR_COLOUR = "#0072B2"


def _tooltip(view: TokenView, i: int, lang: str = DEFAULT) -> str:
    start, end = view.offsets[i]
    lines = [
        t("tokenizer.tip_token", lang, i=i),
        t("tokenizer.tip_id", lang, id=view.ids[i]),
        t("tokenizer.tip_piece", lang, piece=repr(view.pieces[i])),
        t("tokenizer.tip_bytes", lang, bytes=view.token_bytes[i].hex(" ").upper() or t("tokenizer.tip_no_bytes", lang)),
    ]
    if view.special[i]:
        lines.append(t("tokenizer.tip_special", lang))
    if view.partial[i] and end > start:
        lines.append(t("tokenizer.tip_partial", lang, chars=repr(view.text[start:end])))
    return "\n".join(lines)


def token_chips_html(view: TokenView, lang: str = DEFAULT) -> str:
    """The text as the model sees it: one coloured chip per token, hover for id, piece and bytes."""
    chips = []
    for i, piece in enumerate(view.pieces):
        classes = ["lie-tok"]
        if view.special[i]:
            classes.append("special")
        if view.partial[i]:
            classes.append("partial")
        colour = CHIP_COLOURS[i % len(CHIP_COLOURS)]
        chips.append(
            f'<span class="{" ".join(classes)}" style="background:{colour}" data-id="{view.ids[i]}" '
            f'title="{html.escape(_tooltip(view, i, lang))}">{html.escape(piece)}</span>'
        )
        if piece.endswith("↵"):
            chips.append("<br>")  # keep the text's line structure readable
    label = html.escape(t("tokenizer.chips_aria", lang, n=view.num_tokens))
    return f'<div class="lie-tokens" aria-label="{label}">{"".join(chips)}</div>'


def counts_html(view: TokenView, lang: str = DEFAULT) -> str:
    cells = [
        ("tokenizer.count_tokens", f"{view.num_tokens:,}"),
        ("tokenizer.count_chars", f"{view.num_chars:,}"),
        ("tokenizer.count_chars_per_token", f"{view.chars_per_token:.2f}"),
        ("tokenizer.count_special", f"{sum(view.special):,}"),
    ]
    inner = "".join(f"<span><b>{v}</b> {html.escape(t(k, lang))}</span>" for k, v in cells)
    return f'<div class="lie-counts">{inner}</div>'


# The token table's columns after "#" (the CSV download keeps the English headers).
TABLE_COLUMNS = ["tokenizer.col_id", "tokenizer.col_piece", "tokenizer.col_bytes", "tokenizer.col_special",
                 "tokenizer.col_chars"]


def token_table(view: TokenView, lang: str = DEFAULT) -> pd.DataFrame:
    """The token table as shown, headers and "yes" in `lang` (the CSV download takes it in English: lang="en")."""
    columns = [
        view.ids,
        view.pieces,
        [b.hex(" ").upper() for b in view.token_bytes],
        [t("tokenizer.yes", lang) if s else "" for s in view.special],
        [f"{a}–{b}" for a, b in view.offsets],
    ]
    headers = [t(key, lang) for key in TABLE_COLUMNS]
    return pd.DataFrame({"#": range(view.num_tokens), **dict(zip(headers, columns))})


def language_counts_figure(counts: dict[str, tuple[int, int]], model_label: str, lang: str = DEFAULT) -> go.Figure:
    """Tokens needed for the same sentence in several languages: counts = {language (its name as shown): (tokens,
    chars)}."""
    names = list(counts)
    tokens = [counts[n][0] for n in names]
    per_token = [counts[n][1] / max(counts[n][0], 1) for n in names]
    fig = go.Figure(
        go.Bar(
            x=tokens, y=names, orientation="h", marker_color=BAR_COLOUR,
            text=[t("tokenizer.bar_text", lang, tokens=n, per_token=f"{c:.1f}") for n, c in zip(tokens, per_token)],
            textposition="outside", cliponaxis=False,
            hovertemplate=t("tokenizer.bar_hover", lang, language="%{y}", tokens="%{x}") + "<extra></extra>",
        )
    )
    fig.update_layout(
        title=t("tokenizer.languages_title", lang, model=model_label),
        xaxis=dict(title=t("tokenizer.languages_axis", lang), range=[0, max(tokens, default=1) * 1.45]),
        yaxis=dict(autorange="reversed"),
        height=80 + 34 * len(names), margin=dict(l=10, r=10, t=50, b=40),
        template="plotly_white", font=dict(size=14),
    )
    return fig


def language_counts_summary(counts: dict[str, tuple[int, int]], model_label: str, lang: str = DEFAULT) -> str:
    """The chart in one sentence (its text alternative)."""
    if not counts:
        return ""
    fewest = min(counts, key=lambda n: counts[n][0])
    most = max(counts, key=lambda n: counts[n][0])
    ratio = counts[most][0] / max(counts[fewest][0], 1)
    return t("tokenizer.languages_summary", lang, fewest_tokens=counts[fewest][0], fewest=fewest,
             most_tokens=counts[most][0], most=most, ratio=f"{ratio:.1f}", model=model_label)
