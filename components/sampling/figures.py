"""Sampling views, pure functions of inference data (a StepRecord, the SamplingRun) in, plotly Figure or
HTML / Markdown string out.

    waterfall_figure   the candidates' probability at each stage, removed tokens greyed
    draw_figure        the CDF with the uniform number, and a histogram of 100 draws
    stage_table_html   survivors, entropy and the rule of each stage
    generated_html     the generated text, each token coloured by the model's probability (with a constraint: by
                       the probability the grammar removed), clickable; an ablated run is marked above it
    *_summary          one sentence per figure with its real numbers (the text alternative shown under it)
    status_markdown    the line above the figures: the draw, the run's token, EOS blocked; guess_line, hidden_note
    compare_*          two runs side by side (a Comparison): the aligned tokens, the probabilities per position
"""

from __future__ import annotations

import html
import math
from typing import Sequence

import plotly.graph_objects as go

from inference.ablation_text import format_ablation
from inference.compare import Comparison
from inference.constrained import Constraint, Validity
from inference.generation import StepRecord
from inference.interventions import Ablation
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


# With a constraint: the model's probability the grammar removed at that step -> white (nothing) to orange
# (the model wanted something else). Dark text reads on all of them.
REMOVED_BUCKETS = [
    (0.05, "#f7f7f7", "< 5%"),
    (0.20, "#fee6ce", "5–20%"),
    (0.50, "#fdbe85", "20–50%"),
    (0.80, "#fd8d3c", "50–80%"),
    (1.01, "#e6550d", "≥ 80%"),
]


def prob_colour(p: float) -> str:
    return next(colour for bound, colour, _ in PROB_BUCKETS if p < bound)


def removed_colour(m: float) -> str:
    return next(colour for bound, colour, _ in REMOVED_BUCKETS if m < bound)


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
        removed = (f" · removed {_percent(record.removed_mass)} of p"
                   if stage.name == "constraint" and record.removed_mass is not None else "")
        titles.append(dict(
            text=f"<b>{k + 1}. {stage.label}</b><br><span style='font-size:12px'>{stage.survivors:,} left · "
                 f"H = {stage.entropy_bits:.2f} bits{removed}</span>",
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
    grammar = ""
    if record.removed_mass is not None:
        grammar = (f" The constraint allowed {_tokens(record.allowed_tokens)} and removed "
                   f"{_percent(record.removed_mass)} of the model's probability.")
    return (f"{head}{body}; {_quoted(record.pieces[chosen])} {took} (p = {_percent(record.chosen_prob)}, "
            f"the model alone gave it {_percent(record.raw_prob)}).{grammar}")


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


def ablation_banner(ablation: Ablation | None) -> str:
    """The mark an ablated run carries wherever its text is shown ("" for none)."""
    if ablation is None or ablation.empty:
        return ""
    return (f'<div class="smp-ablated" role="note">✂ ablated: {html.escape(format_ablation(ablation))} '
            f'({html.escape(ablation.mode)}) · every forward pass of this run has these switched off</div>')


def generated_html(tokens: Sequence[ChosenToken], view: int, *, pending: bool = True, ended: str | None = None,
                   hide_last: bool = False, by_removed_mass: bool = False, ablation: Ablation | None = None) -> str:
    """The generated text, token by token: background = the model's own probability of that token (before
    any sampling setting), outlined = the step on view, dashed = a what-if token. Each token carries
    data-step, so a click shows that step. `pending`: a cursor for the next step to draw.

    `by_removed_mass` (a constrained run): background = the model's probability the constraint removed at
    that step instead; a high value means the model wanted something else there (the cost of the format).
    `ablation`: the run's ablation, marked above the text.

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
        removed = token.removed_mass if by_removed_mass and token.removed_mass is not None else None
        if removed is not None:
            title += f" · the constraint removed {removed:.1%} of the model's probability"
        shown = html.escape(token.text).replace("\n", "↵<br>") or "∅"
        colour = prob_colour(token.raw_prob) if removed is None else removed_colour(removed)
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
    buckets, what = ((REMOVED_BUCKETS, "probability the constraint removed at each token")
                     if by_removed_mass else (PROB_BUCKETS, "model probability of each token"))
    legend = "".join(f'<span class="smp-key" style="background:{c}">{html.escape(t)}</span>' for _, c, t in buckets)
    empty = "" if tokens else '<span class="smp-hint">No tokens yet: press Step.</span>'
    return (
        f'{ablation_banner(ablation)}<div class="smp-text">{empty}{"".join(spans)}</div>'
        f'<div class="smp-legend">{what}: {legend} · click a token to see its step</div>'
    )


# ---------------------------------------------------------------------------------------------------
# Texts around the figures


def ended_text(run: SamplingRun) -> str | None:
    """'ended: <why>' once the run has ended, else None."""
    why = run.why_stopped()
    return f"ended: {why}" if why else None


def stage_explanations(params: SamplingParams, min_new: int, record: StepRecord | None = None,
                       constraint: Constraint | None = None) -> dict[str, str]:
    """One short, exact sentence per stage, with the values in force (HTML)."""
    t, th = params.temperature, params.repetition_penalty
    grammar = ""
    if constraint is not None and record is not None and record.removed_mass is not None:
        grammar = (f"The grammar ({html.escape(constraint.describe())}) allows {_tokens(record.allowed_tokens)} here; "
                   f"every other token → −∞. That removed <b>{_percent(record.removed_mass)}</b> of the model's "
                   "probability; the allowed tokens are renormalised.")
    return {
        "constraint": grammar,
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


def validity_text(valid: Validity, constraint: Constraint) -> str:
    if valid.exact:
        return f"✔ The text is a complete, valid output ({html.escape(constraint.describe())})."
    if valid.trimmed:
        return "✔ The text is valid once the spaces around it are trimmed."
    return ("✘ The text is not a complete valid output: the run stopped before the grammar was done "
            "(more new tokens would let it finish).")


def status_markdown(run: SamplingRun, view: int, record: StepRecord, params: SamplingParams, min_new: int,
                    extra: str = "", valid: Validity | None = None) -> str:
    """What the step on view did: the draw, the token the run took there when it differs, EOS blocked, the
    constraint's mask, the run's ablation."""
    marks = ""
    if run.ablation is not None:
        marks += f" · **✂ ablated: {html.escape(format_ablation(run.ablation))}** ({run.ablation.mode})"
    if run.constraint is not None:
        marks += f" · constraint: {html.escape(run.constraint.describe())}"
    lines = [f"**Step {view + 1}** · seed {run.seed} · {len(run.tokens)} token(s) generated"
             + (f" · **{ended_text(run)}**" if run.done else "") + marks]
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
    if record.removed_mass is not None:
        lines.append(f"Constraint: the grammar allowed **{_tokens(record.allowed_tokens)}** here and removed "
                     f"**{record.removed_mass:.1%}** of the model's probability.")
    if valid is not None and run.constraint is not None:
        lines.append(validity_text(valid, run.constraint))
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


# ---------------------------------------------------------------------------------------------------
# Two runs side by side (a Comparison)

A_COLOUR = "#0072B2"  # run A
B_COLOUR = "#D55E00"  # run B


def side_labels(c: Comparison) -> tuple[str, str]:
    """What each run is, in a few words: the settings in which they differ."""
    if not c.differences:
        return "the same settings", "the same settings"
    a = ", ".join(f"{name} {x}" for name, x, _ in c.differences)
    b = ", ".join(f"{name} {y}" for name, _, y in c.differences)
    return a, b


def _text_html(text: str) -> str:
    return html.escape(text).replace("\n", "↵<br>")


def _side_text(text: str, cut: int | None) -> str:
    """A run's text with the part both runs share greyed and a bar where they part."""
    if cut is None:
        return f'<span class="smp-cmp-common">{_text_html(text)}</span>'
    return (f'<span class="smp-cmp-common">{_text_html(text[:cut])}</span><span class="smp-cmp-cut" '
            f'title="the first difference">▌</span>{_text_html(text[cut:])}')


def _validity_badge(v: Validity | None) -> str:
    if v is None:
        return ""
    ok = v.exact or v.trimmed
    return f'<span class="smp-cmp-valid {"ok" if ok else "bad"}">{"✔" if ok else "✘"} {html.escape(v.describe())}</span>'


def _tokens(n: int) -> str:
    """'1 token', '2,048 tokens'."""
    return f"{n:,} token" + ("" if n == 1 else "s")


def _p(p: float | None) -> str:
    """A probability in the aligned table: tiny ones as "<0.01%" (their digits say nothing at a glance)."""
    if p is None:
        return ""
    return "<0.01%" if 0 < p < 1e-4 else _percent(p)


def compare_tokens_html(c: Comparison) -> str:
    """The two texts side by side, then both runs aligned position by position: each token, the probability
    its run gave it, and the probability the run gave to the other run's token there. The first difference is
    marked; positions where both runs took the same token are grey."""
    la, lb = side_labels(c)
    cut = c.divergence_char
    sides = "".join(
        f'<div class="smp-cmp-side"><div class="smp-cmp-label" style="border-color:{colour}"><b>{name}</b> · '
        f'{html.escape(model)} · {html.escape(label)} {_validity_badge(valid)}</div>{ablation_banner(spec.ablation)}'
        f'<div class="smp-cmp-body">{_side_text(text, cut)}</div></div>'
        for name, colour, model, label, valid, spec, text in (
            ("A", A_COLOUR, c.a_model, la, c.a_valid, c.a_spec, c.a_text),
            ("B", B_COLOUR, c.b_model, lb, c.b_valid, c.b_spec, c.b_text))
    )
    cross = c.aligned_by == "token"

    def cell(row, side, content: str) -> str:
        classes = ["same" if row.same else "diff"]
        if row.position == c.first_divergence:
            classes.append("div")
        return f'<td class="{" ".join(classes)}">{content}</td>'

    def token(s) -> str:
        return "" if s is None else f'<code>{html.escape(s.piece)}</code>'

    head = "".join(f'<th class="{"div" if r.position == c.first_divergence else ""}">{r.position + 1}'
                   f'{"<br>⇣" if r.position == c.first_divergence else ""}</th>' for r in c.rows)
    lines = [
        ("A", "run A's token", lambda r: token(r.a)),
        ("p<sub>A</sub>(A)", "run A's probability of its own token", lambda r: _p(r.a and r.a.own)),
    ]
    if cross:
        lines.append(("p<sub>A</sub>(B)", "run A's probability of run B's token at this position",
                      lambda r: _p(r.a and r.a.other)))
    lines += [
        ("B", "run B's token", lambda r: token(r.b)),
        ("p<sub>B</sub>(B)", "run B's probability of its own token", lambda r: _p(r.b and r.b.own)),
    ]
    if cross:
        lines.append(("p<sub>B</sub>(A)", "run B's probability of run A's token at this position",
                      lambda r: _p(r.b and r.b.other)))
    for name, side in (("A", "a"), ("B", "b")):
        if any(getattr(r, side) is not None and getattr(r, side).removed_mass is not None for r in c.rows):
            lines.append((f"removed ({name})", f"the probability run {name}'s constraint removed at this step",
                          lambda r, side=side: _p(getattr(r, side) and getattr(r, side).removed_mass)))
    body = "".join(
        f'<tr><th title="{html.escape(title)}">{name}</th>{"".join(cell(r, None, fn(r)) for r in c.rows)}</tr>'
        for name, title, fn in lines
    )
    note = ""
    if not cross:
        note = ('<div class="smp-cmp-note">The two models have different tokenizers: a position means a different '
                'piece of text in each, so the texts are aligned by characters (the bar marks the first differing '
                'character) and the probabilities of the other run\'s token are left out.</div>')
    return (f'<div class="smp-cmp-texts">{sides}</div>{note}<div class="smp-cmp-wrap"><table class="smp-cmp">'
            f'<thead><tr><th>position</th>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def compare_figure(c: Comparison) -> go.Figure:
    """Per position: the probability each run gave to its own token (solid) and to the other run's token
    (dotted), the first difference marked; with a constraint, the probability it removed (bars)."""
    x = [r.position + 1 for r in c.rows]
    data = []
    for name, side, colour in (("A", "a", A_COLOUR), ("B", "b", B_COLOUR)):
        other = "B" if name == "A" else "A"
        own = [getattr(r, side).own if getattr(r, side) else None for r in c.rows]
        data.append(dict(type="scatter", x=x, y=own, mode="lines+markers", name=f"{name}: its own token",
                         line=dict(color=colour, width=2), hovertemplate="position %{x}<br>p = %{y:.3f}<extra>"
                         + f"{name}, own token</extra>"))
        if c.aligned_by == "token":
            cross = [getattr(r, side).other if getattr(r, side) else None for r in c.rows]
            data.append(dict(type="scatter", x=x, y=cross, mode="lines+markers", name=f"{name}: {other}'s token",
                             line=dict(color=colour, width=2, dash="dot"), marker=dict(symbol="x"),
                             hovertemplate="position %{x}<br>p = %{y:.3f}<extra>" + f"{name}, {other}'s token</extra>"))
        removed = [getattr(r, side).removed_mass if getattr(r, side) else None for r in c.rows]
        if any(m is not None for m in removed):
            data.append(dict(type="bar", x=x, y=removed, name=f"{name}: probability the constraint removed",
                             marker=dict(color=colour, opacity=0.25), hovertemplate="position %{x}<br>removed "
                             "%{y:.1%}<extra>" + f"{name}'s constraint</extra>"))
    shapes, annotations = [], []
    if c.first_divergence is not None:
        k = c.first_divergence + 1
        shapes.append(dict(type="line", xref="x", yref="paper", x0=k, x1=k, y0=0, y1=1,
                           line=dict(color="#333", dash="dash", width=1.5)))
        annotations.append(dict(x=k, y=1.0, xref="x", yref="paper", text=f"first difference: position {k}",
                                showarrow=False, xanchor="left", yanchor="bottom", font=dict(size=12)))
    layout = dict(
        height=360, margin=dict(l=10, r=10, t=60, b=40), font=FONT, plot_bgcolor="white", barmode="overlay",
        xaxis=dict(title=dict(text="position (new token)"), dtick=max(1, len(x) // 16), gridcolor="#eee"),
        yaxis=dict(title=dict(text="probability"), range=[0, 1.05], tickformat=".0%", gridcolor="#eee"),
        legend=dict(orientation="h", y=-0.25), shapes=shapes, annotations=annotations,
        title=dict(text="Each run's probability of its own token (solid) and of the other run's token (dotted)",
                   x=0.99, xanchor="right", font=dict(size=12, color="#555")),
    )
    return go.Figure(data=data, layout=layout)


def compare_summary(c: Comparison) -> str:
    """One sentence: where the runs part, and how sure each was there (the figure's text alternative)."""
    la, lb = side_labels(c)
    if c.first_divergence is None:
        if not c.differences:
            return f"Runs A and B use the same settings and wrote the same {len(c.rows)} tokens, as a seed promises."
        return (f"Run A ({la}) and run B ({lb}) wrote the same {len(c.rows)} tokens: here the change did not "
                "alter the text.")
    k = c.first_divergence
    row = c.rows[k] if k < len(c.rows) else None
    where = ("They differ from the first token on" if k == 0 else
             f"They agree on the first {k} token{'s' if k != 1 else ''} and part at position {k + 1}")
    if c.aligned_by == "character":
        where = (f"The texts agree on the first {c.divergence_char} characters (the tokenizers differ, so they are "
                 f"compared by characters) and part in A's token {k + 1}")
        return f"Run A ({la}) and run B ({lb}). {where}."
    if row is None or row.a is None or row.b is None:
        ended = "A" if row is None or row.a is None else "B"
        return f"Run A ({la}) and run B ({lb}). {where}, where run {ended} has already ended."
    return (f"Run A ({la}) and run B ({lb}). {where}: A took {_quoted(row.a.piece)} (p = {_percent(row.a.own)}; it "
            f"gave B's {_quoted(row.b.piece)} {_percent(row.a.other or 0)}), B took {_quoted(row.b.piece)} "
            f"(p = {_percent(row.b.own)}; it gave A's token {_percent(row.b.other or 0)}).")


def compare_status(c: Comparison) -> str:
    """What differs between the two runs, whether each text is valid under the constraint, and notes."""
    lines = []
    if c.differences:
        lines.append("**What differs:** " + "; ".join(
            f"{html.escape(n)}: A {html.escape(x)} · B {html.escape(y)}" for n, x, y in c.differences))
    else:
        lines.append("**What differs:** nothing: both runs use the same settings (a check: they must agree).")
    lines.append(f"A: {len(c.a.token_ids)} tokens, seed {c.a.seed}, {STOP_WORDS.get(c.a.stop_reason, c.a.stop_reason)}"
                 f" · B: {len(c.b.token_ids)} tokens, seed {c.b.seed}, "
                 f"{STOP_WORDS.get(c.b.stop_reason, c.b.stop_reason)}.")
    if c.constraint is not None:
        lines.append(f"Checked against the constraint ({html.escape(c.constraint.describe())}): "
                     f"A is **{c.a_valid.describe()}**, B is **{c.b_valid.describe()}**.")
    if c.timed_out:
        lines.append("The server's time limit ended a run early; both show what they computed.")
    return "  \n".join(lines)


STOP_WORDS = {"eos": "ended at EOS", "stop_sequence": "ended at a stop sequence", "max_new_tokens": "max new tokens",
              "context_length": "context full", "time_limit": "time limit"}


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
.smp-ablated { display: inline-block; margin: 0 0 .3rem 0; padding: 2px 10px; border-radius: 4px; font-weight: 600;
               background: #fff3cd; color: #5c4400; border: 2px dashed #b58100; }
.smp-cmp-texts { display: flex; gap: .8rem; flex-wrap: wrap; }
.smp-cmp-side { flex: 1 1 320px; min-width: 0; }
.smp-cmp-label { border-left: 6px solid; padding-left: .4rem; margin-bottom: .2rem; }
.smp-cmp-body { white-space: pre-wrap; word-break: break-word; padding: .4rem; border-radius: 6px; font-size: 1.05rem;
                border: 1px solid var(--border-color-primary); min-height: 2.5rem; }
.smp-cmp-common { color: #777; }
.smp-cmp-cut { color: #000; font-weight: 700; }
.smp-cmp-valid { font-size: .85rem; padding: 0 6px; border-radius: 3px; margin-left: .3rem; }
.smp-cmp-valid.ok { background: #d1e5f0; color: #08306b; }
.smp-cmp-valid.bad { background: #fddbc7; color: #67000d; }
.smp-cmp-note { font-size: .9rem; color: var(--body-text-color-subdued); margin: .4rem 0; }
.smp-cmp-wrap { overflow-x: auto; margin-top: .5rem; }
.smp-cmp { border-collapse: collapse; font-size: .85rem; }
.smp-cmp th, .smp-cmp td { padding: 2px 5px; border-bottom: 1px solid var(--border-color-primary); text-align: center;
                           white-space: nowrap; font-variant-numeric: tabular-nums; }
.smp-cmp tbody th { text-align: left; position: sticky; left: 0; background: var(--background-fill-primary); }
.smp-cmp td.same { background: #f2f2f2; color: #555; }
.smp-cmp td.div, .smp-cmp th.div { border-left: 3px solid #000; }
.smp-cmp code { font-size: .85rem; }
"""
