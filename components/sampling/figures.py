"""Sampling views, pure functions of inference data (a StepRecord, the SamplingRun) in, plotly Figure or
HTML / Markdown string out.

    waterfall_figure   the candidates' probability at each stage, removed tokens greyed
    draw_figure        the CDF with the uniform number, and a histogram of 100 draws
    stage_table_html   survivors, entropy and the rule of each stage
    generated_html     the generated text, each token coloured by the model's probability, clickable
    *_summary          one sentence per figure with its real numbers (the text alternative shown under it)
    status_markdown    the line above the figures: the draw, the run's token, EOS blocked; guess_line, hidden_note
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import plotly.graph_objects as go

from inference.generation import StepRecord
from inference.sampling import SamplingParams
from inference.sampling_run import ChosenToken, Guess, SamplingRun

# Okabe-Ito colours (colour-blind safe) that read on a projector. Colour is never the only cue: the drawn
# token's bar also has a black outline, the run's token a hatch, a removed token the word "removed".
KEPT = "#0072B2"  # a surviving candidate
CHOSEN = "#E69F00"  # the token the draw picks
RUN = "#CC79A7"  # the token the run actually took there, when it differs (earlier settings or a what-if)
REMOVED = "#d0d0d0"  # a removed candidate: a ghost of its last probability
OUTLINE = "#000000"
FONT = dict(size=13)
MAX_COLUMNS = 4

# The model's probability of each generated token -> a light tint, dark text readable on all of them.
PROB_BUCKETS = [  # (upper bound, colour, legend)
    (0.05, "#f4a582", "< 5%"),
    (0.20, "#fddbc7", "5–20%"),
    (0.50, "#f2f2f2", "20–50%"),
    (0.80, "#d1e5f0", "50–80%"),
    (1.01, "#92c5de", "≥ 80%"),
]


def prob_colour(p: float) -> str:
    return next(colour for bound, colour, _ in PROB_BUCKETS if p < bound)


def _plotly_text(text: str) -> str:
    """Plotly reads a few HTML tags in labels; a token like '<b>' must show as text (entities render)."""
    return html.escape(text, quote=False)


def _unique_labels(pieces: Sequence[str], ids: Sequence[int]) -> list[str]:
    """Axis labels: a plotly category axis merges equal labels, so repeat pieces get their id."""
    seen: dict[str, int] = {}
    for piece in pieces:
        seen[piece] = seen.get(piece, 0) + 1
    return [_plotly_text(f"{p}  #{i}" if seen[p] > 1 else p) for p, i in zip(pieces, ids)]


def _percent(p: float) -> str:
    if p == 0:
        return "0"
    if p < 0.001:
        return f"{p:.1e}"
    return f"{p:.1%}"


def _grid(n: int, cols: int, rows: int, hgap: float, vgap: float) -> list[tuple[list[float], list[float]]]:
    """(x domain, y domain) of panel k, row by row from the top, in paper coordinates."""
    width = (1 - hgap * (cols - 1)) / cols
    height = (1 - vgap * (rows - 1)) / rows
    domains = []
    for k in range(n):
        row, col = divmod(k, cols)
        x0 = col * (width + hgap)
        y1 = 1 - row * (height + vgap)
        domains.append(([max(0.0, x0), min(1.0, x0 + width)], [max(0.0, y1 - height), min(1.0, y1)]))
    return domains


def waterfall_figure(record: StepRecord, run_token: int | None = None) -> go.Figure:
    """Small multiples, one per stage: each candidate's probability if sampling stopped at that stage.

    A removed candidate keeps a grey ghost bar of its last probability, marked 'removed'. The drawn token
    is orange; the token the run took (when it differs) pink. The layout is written as one dict (not
    make_subplots + per-axis updates): a slider move rebuilds it, so it must be quick.
    """
    stages = record.stages
    n = len(stages)
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    labels = _unique_labels(record.pieces, record.candidates)
    row_px = 60 + 22 * len(record.candidates)
    height = rows * row_px + 40 + (rows - 1) * 70
    domains = _grid(n, cols, rows, hgap=0.1 / cols + 0.05, vgap=min(0.3, 70 / height))
    x_max = max(max(s.probs, default=0) for s in stages) or 1.0
    last_prob = list(stages[0].probs)
    data, layout_axes, titles = [], {}, []
    for k, stage in enumerate(stages):
        colours, values, texts, widths, patterns = [], [], [], [], []
        for j, cand in enumerate(record.candidates):
            drawn, taken = cand == record.token_id, cand == run_token and cand != record.token_id
            widths.append(2 if drawn else 0)
            patterns.append("/" if taken else "")
            if stage.kept[j]:
                last_prob[j] = stage.probs[j]
                values.append(stage.probs[j])
                texts.append(_percent(stage.probs[j]))
                colours.append(CHOSEN if drawn else RUN if taken else KEPT)
            else:  # removed here or earlier: ghost of the probability it had before
                values.append(last_prob[j])
                texts.append("removed")
                colours.append(REMOVED)
        suffix = "" if k == 0 else str(k + 1)
        data.append(dict(
            type="bar", x=values, y=labels, orientation="h", text=texts,
            marker=dict(color=colours, line=dict(color=OUTLINE, width=widths), pattern=dict(shape=patterns)),
            textposition="outside", cliponaxis=False, showlegend=False, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
            customdata=[[r if r is not None else "removed"] for r in stage.ranks],
            hovertemplate="%{y}<br>p = %{x:.4f}<br>rank %{customdata[0]}<extra>" + stage.label + "</extra>",
        ))
        (x0, x1), (y0, y1) = domains[k]
        layout_axes[f"xaxis{suffix}"] = dict(domain=[x0, x1], anchor=f"y{suffix}", range=[0, x_max * 1.45],
                                             tickformat=".0%", nticks=4, gridcolor="#eee")
        layout_axes[f"yaxis{suffix}"] = dict(domain=[y0, y1], anchor=f"x{suffix}", autorange="reversed",
                                             showticklabels=(k % cols == 0),
                                             tickfont=dict(size=13, family="monospace"))
        titles.append(dict(
            text=f"<b>{k + 1}. {stage.label}</b><br><span style='font-size:12px'>{stage.survivors:,} left · "
                 f"H = {stage.entropy_bits:.2f} bits</span>",
            x=(x0 + x1) / 2, y=y1, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
            showarrow=False, font=dict(size=13),
        ))
    layout = dict(
        **layout_axes, annotations=titles, height=height, margin=dict(l=10, r=10, t=70, b=30), font=FONT,
        # Top right: the app's plot label covers the top left corner; the title makes a downloaded PNG readable.
        title=dict(text=f"Step {record.index + 1}: the top candidates at each stage", x=0.99, xanchor="right",
                   y=0.995, yanchor="top", font=dict(size=12, color="#555")),
        bargap=0.25, plot_bgcolor="white", uniformtext=dict(minsize=10, mode="show"),
    )
    return go.Figure(data=data, layout=layout)


def draw_figure(record: StepRecord, greedy: bool) -> go.Figure:
    """Left: the final distribution stacked into a CDF (most likely first) and where u lands.
    Right: 100 draws from the same distribution, against the 100·p we expect."""
    top = record.final_top
    pieces = _unique_labels([p for _, p, _ in top], [i for i, _, _ in top])
    probs = [q for _, _, q in top]
    rest = max(0.0, 1.0 - sum(probs))
    if rest > 1e-4:
        pieces.append(f"other {max(record.stages[-1].survivors - len(top), 0):,}")
        probs.append(rest)
    cumulative = [sum(probs[: i + 1]) for i in range(len(probs))]
    chosen_at = next((k for k, (i, _, _) in enumerate(top) if i == record.token_id), len(pieces) - 1)
    tick = dict(tickangle=-45, tickfont=dict(family="monospace", size=12))
    left, right = [0.0, 0.56], [0.64, 1.0]
    data = [
        dict(type="bar", x=pieces, y=probs, marker=dict(
            color=[CHOSEN if k == chosen_at else KEPT for k in range(len(pieces))],
            line=dict(color=OUTLINE, width=[2 if k == chosen_at else 0 for k in range(len(pieces))])),
             width=0.8 if len(pieces) > 3 else 0.3, hovertemplate="%{x}<br>p = %{y:.4f}<extra></extra>"),
        dict(type="scatter", x=pieces, y=cumulative, mode="lines+markers", line=dict(shape="hv", color="#333"),
             hovertemplate="%{x}<br>cumulative %{y:.3f}<extra></extra>"),
    ]
    shapes = []
    title = "<b>The draw</b>: bars = p, line = running total (CDF), dashed = u"
    if greedy or record.draw is None:
        title = "<b>The draw</b>: temperature 0, no random number: the top token is taken"
        note = ""
    else:
        u = record.draw
        shapes.append(dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=u, y1=u,
                           line=dict(color=CHOSEN, dash="dash", width=2)))
        note = (f"u = {u:.3f} lands in the stretch of {_plotly_text(repr(record.piece))}<br>"
                f"(rank {record.chosen_rank}, p = {_percent(record.chosen_prob)}, "
                f"from {record.cdf_low:.3f} to {record.cdf_high:.3f})")
    annotations = [
        dict(text=title, x=sum(left) / 2, y=1.0, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
             showarrow=False, font=dict(size=14)),
    ]
    if note:  # top left lies above the rising CDF
        annotations.append(dict(text=note, xref="x domain", yref="y domain", x=0.02, y=0.98, showarrow=False,
                                xanchor="left", yanchor="top", align="left", font=dict(size=13, color="#333"),
                                bgcolor="rgba(255,255,255,0.9)"))
    layout = dict(
        xaxis=dict(domain=left, anchor="y", **tick),
        yaxis=dict(domain=[0, 1], anchor="x", range=[0, 1.05], tickformat=".0%", gridcolor="#eee"),
        height=400, margin=dict(l=10, r=10, t=60, b=10), font=FONT, plot_bgcolor="white", showlegend=False,
        bargap=0.2, shapes=shapes, annotations=annotations,
    )
    if record.samples:
        total = sum(c for _, _, c, _ in record.samples)
        shown = record.samples[:12]
        names = _unique_labels([p for _, p, _, _ in shown], [i for i, _, _, _ in shown])
        data += [
            dict(type="bar", x=names, y=[c for _, _, c, _ in shown], marker=dict(color=KEPT), xaxis="x2",
                 yaxis="y2", hovertemplate="%{x}<br>drawn %{y} times<extra></extra>"),
            dict(type="scatter", x=names, y=[total * q for _, _, _, q in shown], mode="markers", xaxis="x2",
                 yaxis="y2", marker=dict(symbol="diamond", size=11, color=CHOSEN),
                 hovertemplate="%{x}<br>expected %{y:.1f}<extra></extra>"),
        ]
        layout["xaxis2"] = dict(domain=right, anchor="y2", **tick)
        layout["yaxis2"] = dict(domain=[0, 1], anchor="x2", title=dict(text="times drawn"), gridcolor="#eee")
        annotations.append(dict(text=f"<b>{total} draws</b>: bars = drawn, ◆ = {total}·p", x=sum(right) / 2,
                                y=1.0, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
                                showarrow=False, font=dict(size=13)))
    return go.Figure(data=data, layout=layout)


def _quoted(piece: str) -> str:
    return f"“{piece}”"


def waterfall_summary(record: StepRecord) -> str:
    """One sentence: what the pipeline did to this step's distribution (the text alternative of the waterfall)."""
    raw, final = record.stages[0], record.stages[-1]
    top = 0  # candidates are ordered by final probability: the first is the final favourite
    chosen = record.candidates.index(record.token_id)
    head = (f"Step {record.index + 1}: the model's {raw.survivors:,} possible tokens (entropy {raw.entropy_bits:.2f} "
            f"bits) ")
    if len(record.stages) == 1:
        body = "are used as they are, no stage is active"
    else:
        names = ", ".join(s.label for s in record.stages[1:])
        body = (f"go through {names}: {final.survivors:,} left, entropy {final.entropy_bits:.2f} bits; the favourite "
                f"{_quoted(record.pieces[top])} goes from {_percent(raw.probs[top])} to {_percent(final.probs[top])}")
    took = "is taken" if record.draw is None else "is drawn"
    return (f"{head}{body}; {_quoted(record.pieces[chosen])} {took} (p = {_percent(record.chosen_prob)}, "
            f"the model alone gave it {_percent(record.raw_prob)}).")


def draw_summary(record: StepRecord, greedy: bool) -> str:
    """One sentence: where the uniform number landed and what 100 draws gave (the text alternative)."""
    piece = _quoted(record.piece)
    if greedy or record.draw is None:
        text = f"Temperature 0: no random number is used; the top token {piece} is taken."
    else:
        text = (f"u = {record.draw:.3f} falls in the stretch of {piece}, from {record.cdf_low:.3f} to "
                f"{record.cdf_high:.3f} of the running total, so it is drawn (rank {record.chosen_rank}, "
                f"p = {_percent(record.chosen_prob)}).")
    if record.samples:
        total = sum(c for _, _, c, _ in record.samples)
        _, most, count, q = record.samples[0]
        text += (f" In {total} draws from the same distribution {_quoted(most)} came {count} times "
                 f"(expected {total * q:.1f}); {len(record.samples)} different tokens came up.")
    return text


def stage_table_html(record: StepRecord, explanations: dict[str, str]) -> str:
    """One row per stage: the rule, how many tokens survive, entropy, and the top token's probability."""
    rows = []
    for i, stage in enumerate(record.stages):
        rows.append(
            "<tr>"
            f"<td class='n'>{i + 1}</td><td><b>{html.escape(stage.label)}</b></td>"
            f"<td>{explanations.get(stage.name, '')}</td>"
            f"<td class='num'>{stage.survivors:,}</td><td class='num'>{stage.entropy_bits:.2f}</td>"
            f"<td class='num'>{stage.top_prob:.1%}</td>"
            "</tr>"
        )
    draw = explanations.get("draw", "")
    rows.append(f"<tr><td class='n'>→</td><td><b>draw</b></td><td>{draw}</td><td></td><td></td><td></td></tr>")
    return (
        "<table class='smp-stages'><thead><tr><th></th><th>stage</th><th>what it does</th>"
        "<th>tokens left</th><th>entropy (bits)</th><th>top p</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def generated_html(tokens: Sequence[ChosenToken], view: int, *, pending: bool = True, ended: str | None = None,
                   hide_last: bool = False) -> str:
    """The generated text, token by token: background = the model's own probability of that token (before
    any sampling setting), outlined = the step on view, dashed = a what-if token. Each token carries
    data-step, so a click shows that step. `pending`: a cursor for the next step to draw.

    `hide_last` (predict first): the newest token is a "?" and neither its text, its probability nor why the
    run ended is written into the page, so nothing gives the answer away before Reveal."""
    secret = hide_last and len(tokens) > 0
    shown_n = len(tokens) - 1 if secret else len(tokens)
    spans = []
    for i, token in enumerate(tokens[:shown_n]):
        classes = ["smp-tok"]
        if i == view:
            classes.append("on")
        if token.forced:
            classes.append("whatif")
        title = f"step {i + 1}: p = {token.raw_prob:.1%} (model)" + (" · what-if" if token.forced else "")
        if token.eos_blocked:
            title += " · EOS was blocked"
        shown = html.escape(token.text).replace("\n", "↵<br>") or "∅"
        colour = prob_colour(token.raw_prob)
        spans.append(f'<span class="{" ".join(classes)}" data-step="{i}" style="background:{colour}" '
                     f'title="{html.escape(title)}">{shown}</span>')
    if secret:
        spans.append(f'<span class="smp-secret" title="step {len(tokens)}: hidden until Reveal">?</span>')
    elif pending:
        on = " on" if view == len(tokens) else ""
        spans.append(f'<span class="smp-tok smp-next{on}" data-step="{len(tokens)}" '
                     'title="the next step">▌next</span>')
    if ended and not secret:
        spans.append(f'<span class="smp-end">■ {html.escape(ended)}</span>')
    legend = "".join(f'<span class="smp-key" style="background:{c}">{html.escape(t)}</span>' for _, c, t in PROB_BUCKETS)
    empty = "" if tokens else '<span class="smp-hint">No tokens yet: press Step.</span>'
    return (
        f'<div class="smp-text">{empty}{"".join(spans)}</div>'
        f'<div class="smp-legend">model probability of each token: {legend} · click a token to see its step</div>'
    )


# ---------------------------------------------------------------------------------------------------
# Texts around the figures


def ended_text(run: SamplingRun) -> str | None:
    """'ended: <why>' once the run has ended, else None."""
    why = run.why_stopped()
    return f"ended: {why}" if why else None


def stage_explanations(params: SamplingParams, min_new: int) -> dict[str, str]:
    """One short, exact sentence per stage, with the values in force (HTML)."""
    t, th = params.temperature, params.repetition_penalty
    return {
        "raw": "The model's score <i>s</i> for each token; softmax turns scores into probabilities "
               "<code>p = e^s / Σ e^s</code>.",
        "repetition_penalty": f"Each distinct token already in the prompt or the text: <code>s/θ</code> if "
                              f"<i>s</i> &gt; 0, <code>s·θ</code> if <i>s</i> &lt; 0, once (θ = {th:g}).",
        "presence_frequency": f"<code>s − c·{params.frequency_penalty:g} − (c&gt;0)·{params.presence_penalty:g}</code>, "
                              "<i>c</i> = how often the token appears in the <i>generated</i> text (not the prompt).",
        "min_new_tokens": f"EOS set to −∞: fewer than {min_new} new tokens so far.",
        "temperature": f"<code>s / {t:g}</code>: "
                       + ("sharper, the top tokens gain." if t < 1 else "flatter, unlikely tokens gain.")
                       + " The ranking never changes.",
        "top_k": f"Keep the {params.top_k} highest scores (ties with the {params.top_k}th all stay); the rest → −∞.",
        "top_p": f"Keep the smallest set of most likely tokens whose probabilities add up to ≥ {params.top_p:g} "
                 "(at least one).",
        "min_p": f"Drop tokens with <code>p &lt; {params.min_p:g} × p_max</code>: the cut follows the model's confidence.",
        "greedy": "Temperature 0: all probability on the single highest score; no random number is used.",
        "draw": "Softmax over the survivors, stack them most likely first on [0, 1), and take the token whose "
                "stretch contains the uniform number <i>u</i>.",
    }


def status_markdown(run: SamplingRun, view: int, record: StepRecord, params: SamplingParams, min_new: int,
                    extra: str = "") -> str:
    """What the step on view did: the draw, the token the run took there when it differs, EOS blocked."""
    lines = [f"**Step {view + 1}** · seed {run.seed} · {len(run.tokens)} token(s) generated"
             + (f" · **{ended_text(run)}**" if run.done else "")]
    if params.greedy:
        lines.append(f"Temperature 0: the top token **{html.escape(record.piece)}** is taken, no random number.")
    else:
        lines.append(f"u = **{record.draw:.4f}** lands on **{html.escape(record.piece)}** "
                     f"(rank {record.chosen_rank}, p = {record.chosen_prob:.1%}; the model alone gave it "
                     f"{record.raw_prob:.1%}).")
    taken = run.tokens[view] if view < len(run.tokens) else None
    if taken is not None and taken.token_id != record.token_id:
        how = "as a what-if" if taken.forced else "with the settings in force then"
        lines.append(f"The run took **{html.escape(taken.piece)}** here ({how}); with the current settings the "
                     "draw gives the orange token. Pick it below to branch.")
    if record.eos_blocked:
        lines.append(f"EOS blocked: {view} of at least {min_new} new tokens so far (EOS had p = "
                     f"{record.eos_blocked_prob:.1%} just before the block).")
    if extra:
        lines.append(extra)
    return "  \n".join(lines)


def hidden_note(run: SamplingRun, view: int) -> str:
    """The note shown instead of the step's views while they are hidden (predict first)."""
    n = len(run.tokens)
    if n and view >= n - 1:
        what = f"The model has drawn token {n}: it is the <b>?</b> above."
    else:
        what = f"The distribution of step {view + 1} is hidden."
    return (f'<div class="lie-hidden-note" id="smp-hidden-text">🙈 <b>Predict first</b>: {what} '
            "Make your guess (type it in <i>your guess</i> if you like), then press <b>Reveal</b>.</div>")


def guess_line(guess: Guess | None, record: StepRecord) -> str:
    """Where the class's guess stands in this step's distributions (rank and probability), in one line."""
    if guess is None:
        return ""
    name = f"**{html.escape(guess.text.strip())}** (token `{html.escape(guess.piece)}`, id {guess.token_id})"
    if guess.prob > 0:
        where = (f"rank {guess.rank}, p = {guess.prob:.1%} after the pipeline (the model alone: {guess.raw_prob:.1%}, "
                 f"rank {guess.raw_rank:,})")
    else:
        where = (f"removed by the pipeline (p = 0); the model alone gave it {guess.raw_prob:.2%} "
                 f"(rank {guess.raw_rank:,})")
    verdict = "✔ the draw took it." if guess.drawn else f"The draw took `{html.escape(record.piece)}`."
    more = " Only its first token counts: the model picks one token at a time." if guess.num_tokens > 1 else ""
    return f"Your guess {name}: {where}. {verdict}{more}"


CSS = """
.smp-text { font-size: 1.15rem; line-height: 2.1; white-space: pre-wrap; word-break: break-word; padding: .4rem;
            border: 1px solid var(--border-color-primary); border-radius: 6px; min-height: 3rem; }
.smp-tok { cursor: pointer; padding: 2px 1px; border-radius: 3px; color: #111; }
.smp-tok:hover { outline: 2px solid #888; }
.smp-tok.on { outline: 3px solid #E69F00; }
.smp-tok.whatif { border-bottom: 3px dashed #CC79A7; }
.smp-next { background: #fff; color: #0072B2; font-weight: 600; }
.smp-end { margin-left: .6rem; color: #555; font-size: .95rem; font-style: italic; }
.smp-hint { color: #666; }
.smp-secret { display: inline-block; min-width: 1.6em; text-align: center; font-weight: 700; color: #fff;
              background: #0072B2; border-radius: 3px; padding: 0 4px; margin-left: 2px; }
.smp-legend { font-size: .85rem; color: var(--body-text-color-subdued); margin-top: .3rem; }
.smp-key { padding: 1px 6px; margin: 0 2px; border-radius: 3px; color: #111; }
.smp-stages { border-collapse: collapse; width: 100%; font-size: .95rem; }
.smp-stages th, .smp-stages td { border-bottom: 1px solid var(--border-color-primary); padding: 4px 6px; text-align: left;
                                  vertical-align: top; }
.smp-stages td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.smp-stages td.n { color: #888; }
.smp-stages code { font-size: .9rem; }
"""
