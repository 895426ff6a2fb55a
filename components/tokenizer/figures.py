"""Tokenizer views: coloured token chips (HTML), the token table, and token counts per language."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from inference.tokens import TokenView

# Light tints of the Okabe-Ito colour-blind-safe palette: neighbouring tokens always differ, and dark
# text stays readable on every tint (also on a projector).
CHIP_COLOURS = ["#f9d9a6", "#b9def3", "#a8e0cc", "#fbf3b0", "#a9cbe8", "#f6c5a6", "#e8c5db", "#d9d9d9"]
BAR_COLOUR = "#0072B2"


def _tooltip(view: TokenView, i: int) -> str:
    start, end = view.offsets[i]
    lines = [
        f"token #{i}",
        f"id {view.ids[i]}",
        f"piece {view.pieces[i]!r}",
        f"bytes {view.token_bytes[i].hex(' ').upper() or '(none)'}",
    ]
    if view.special[i]:
        lines.append("special (control) token")
    if view.partial[i] and end > start:
        lines.append(f"part of the character(s) {view.text[start:end]!r}, split across tokens")
    return "\n".join(lines)


def token_chips_html(view: TokenView) -> str:
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
            f'title="{html.escape(_tooltip(view, i))}">{html.escape(piece)}</span>'
        )
        if piece.endswith("↵"):
            chips.append("<br>")  # keep the text's line structure readable
    return f'<div class="lie-tokens" aria-label="{view.num_tokens} tokens">{"".join(chips)}</div>'


def counts_html(view: TokenView) -> str:
    cells = [
        ("tokens", f"{view.num_tokens:,}"),
        ("characters", f"{view.num_chars:,}"),
        ("characters per token", f"{view.chars_per_token:.2f}"),
        ("special tokens", f"{sum(view.special):,}"),
    ]
    inner = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in cells)
    return f'<div class="lie-counts">{inner}</div>'


def token_table(view: TokenView) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "#": range(view.num_tokens),
            "id": view.ids,
            "piece": view.pieces,
            "bytes": [b.hex(" ").upper() for b in view.token_bytes],
            "special": ["yes" if s else "" for s in view.special],
            "chars": [f"{a}–{b}" for a, b in view.offsets],
        }
    )


def language_counts_figure(counts: dict[str, tuple[int, int]], model_label: str) -> go.Figure:
    """Tokens needed for the same sentence in several languages: counts = {language: (tokens, chars)}."""
    names = list(counts)
    tokens = [counts[n][0] for n in names]
    per_token = [counts[n][1] / max(counts[n][0], 1) for n in names]
    fig = go.Figure(
        go.Bar(
            x=tokens, y=names, orientation="h", marker_color=BAR_COLOUR,
            text=[f"{t} tokens · {c:.1f} chars/token" for t, c in zip(tokens, per_token)],
            textposition="outside", cliponaxis=False,
            hovertemplate="%{y}: %{x} tokens<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"The same sentence, tokenized by {model_label}",
        xaxis=dict(title="tokens (fewer = cheaper and more context left)", range=[0, max(tokens, default=1) * 1.45]),
        yaxis=dict(autorange="reversed"),
        height=80 + 34 * len(names), margin=dict(l=10, r=10, t=50, b=40),
        template="plotly_white", font=dict(size=14),
    )
    return fig


def language_counts_summary(counts: dict[str, tuple[int, int]], model_label: str) -> str:
    """The chart in one sentence (its text alternative)."""
    if not counts:
        return ""
    fewest = min(counts, key=lambda n: counts[n][0])
    most = max(counts, key=lambda n: counts[n][0])
    ratio = counts[most][0] / max(counts[fewest][0], 1)
    return (f"The same sentence takes {counts[fewest][0]} tokens in {fewest} and {counts[most][0]} in {most} "
            f"({ratio:.1f}× as many) with {model_label}'s tokenizer.")
