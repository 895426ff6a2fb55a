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

Every builder that writes words takes `lang` (the catalogue's language, assets/i18n/<lang>/sampling.yaml); the
inference layer's English words (stage labels, stop reasons, a constraint's description) are said here again in
that language, from the data's names.
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
from inference.limits import REQUEST_SECONDS
from inference.sampling import SamplingParams
from inference.sampling_run import ChosenToken, Guess, SamplingRun
from inference.serving import ServedTrace

from ..i18n import DEFAULT, catalogue, message, t

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


# ---------------------------------------------------------------------------------------------------
# Words the inference layer gives in English, said in the visitor's language (the data keeps its names)


def stage_label(stage, lang: str = DEFAULT) -> str:
    """A pipeline stage's name (`stage.name` is the data's; an unknown stage keeps the label it came with)."""
    key = f"sampling.stage_{stage.name}"
    return t(key, lang) if key in catalogue(DEFAULT) else stage.label


def mode_word(mode: str, lang: str = DEFAULT) -> str:
    """An ablation's mode ("zero", "mean") in words."""
    key = f"sampling.mode_{mode}"
    return t(key, lang) if key in catalogue(DEFAULT) else mode


def describe_constraint(constraint: Constraint, lang: str = DEFAULT) -> str:
    """What a constraint allows, in words (`Constraint.description`, in `lang`)."""
    return message(constraint.description(), lang)


def describe_validity(valid: Validity, lang: str = DEFAULT) -> str:
    """Whether a text is valid under the constraint, in a few words (as `Validity.describe`, in `lang`)."""
    if valid.exact:
        return t("sampling.valid", lang)
    return t("sampling.valid_trimmed" if valid.trimmed else "sampling.not_valid", lang)


def describe_ablation(ablation: Ablation | None, lang: str = DEFAULT) -> str:
    """What an ablation switches off, in words (as `Ablation.describe`, in `lang`)."""
    parts = [f"L{l}H{h}" for l, h in ablation.heads] if ablation else []
    parts += [t("sampling.ablation_block", lang, kind=k, layer=l) for k, l in ablation.blocks] if ablation else []
    if not parts:
        return t("sampling.no_ablation", lang)
    return t("sampling.ablated_desc", lang, mode=mode_word(ablation.mode, lang), parts=", ".join(parts))


def stop_reason_text(reason: str | None, stop_sequence: str | None = None, lang: str = DEFAULT) -> str | None:
    """Why a run ended, in words (the stop sequence quoted); None while it can go on."""
    if reason is None:
        return None
    key = f"sampling.stop_{reason}"
    text = t(key, lang, seconds=REQUEST_SECONDS) if key in catalogue(DEFAULT) else reason
    return text + (f" ({stop_sequence!r})" if reason == "stop_sequence" else "")


def shared_text(trace, lang: str = DEFAULT) -> str:
    """What a served run shared with other requests, in words ("" when it ran alone or was not served)."""
    if not isinstance(trace, ServedTrace):
        return ""
    parts = []
    n = trace.shared_with_max
    if n > 0:
        parts.append(t("sampling.shared_one" if n == 1 else "sampling.shared_many", lang, shared=trace.shared_passes,
                       passes=len(trace.pass_rows), n=n, mean=f"{trace.shared_with_mean:.1f}"))
    if trace.cached_prefix_tokens:
        parts.append(t("sampling.shared_prefix", lang, n=trace.cached_prefix_tokens))
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------------
# The step's figures


def waterfall_figure(record: StepRecord, run_token: int | None = None, lang: str = DEFAULT) -> go.Figure:
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
    removed_word = t("sampling.removed", lang)
    rank_hover = t("sampling.hover_rank", lang, rank="%{customdata[0]}")
    data, layout_axes, titles = [], {}, []
    for k, stage in enumerate(stages):
        label = stage_label(stage, lang)
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
                texts.append(removed_word)
                colours.append(REMOVED)
        suffix = "" if k == 0 else str(k + 1)
        data.append(dict(
            type="bar", x=values, y=labels, orientation="h", text=texts,
            marker=dict(color=colours, line=dict(color=OUTLINE, width=widths), pattern=dict(shape=patterns)),
            textposition="outside", cliponaxis=False, showlegend=False, xaxis=f"x{suffix}", yaxis=f"y{suffix}",
            customdata=[[r if r is not None else removed_word] for r in stage.ranks],
            hovertemplate=f"%{{y}}<br>p = %{{x:.4f}}<br>{rank_hover}<extra>{label}</extra>",
        ))
        (x0, x1), (y0, y1) = domains[k]
        layout_axes[f"xaxis{suffix}"] = dict(domain=[x0, x1], anchor=f"y{suffix}", range=[0, x_max * 1.45],
                                             tickformat=".0%", nticks=4, gridcolor="#eee")
        layout_axes[f"yaxis{suffix}"] = dict(domain=[y0, y1], anchor=f"x{suffix}", autorange="reversed",
                                             showticklabels=(k % cols == 0),
                                             tickfont=dict(size=13, family="monospace"))
        removed = (" · " + t("sampling.wf_removed_mass", lang, p=_percent(record.removed_mass))
                   if stage.name == "constraint" and record.removed_mass is not None else "")
        sub = t("sampling.wf_panel", lang, left=f"{stage.survivors:,}", entropy=f"{stage.entropy_bits:.2f}")
        titles.append(dict(
            text=f"<b>{k + 1}. {label}</b><br><span style='font-size:12px'>{sub}{removed}</span>",
            x=(x0 + x1) / 2, y=y1, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
            showarrow=False, font=dict(size=13),
        ))
    layout = dict(
        **layout_axes, annotations=titles, height=height, margin=dict(l=10, r=10, t=70, b=30), font=FONT,
        # Top right: the app's plot label covers the top left corner; the title makes a downloaded PNG readable.
        title=dict(text=t("sampling.wf_title", lang, step=record.index + 1), x=0.99, xanchor="right",
                   y=0.995, yanchor="top", font=dict(size=12, color="#555")),
        bargap=0.25, plot_bgcolor="white", uniformtext=dict(minsize=10, mode="show"),
    )
    return go.Figure(data=data, layout=layout)


def draw_figure(record: StepRecord, greedy: bool, lang: str = DEFAULT) -> go.Figure:
    """Left: the final distribution stacked into a CDF (most likely first) and where u lands.
    Right: 100 draws from the same distribution, against the 100·p we expect."""
    top = record.final_top
    pieces = _unique_labels([p for _, p, _ in top], [i for i, _, _ in top])
    probs = [q for _, _, q in top]
    rest = max(0.0, 1.0 - sum(probs))
    if rest > 1e-4:
        pieces.append(t("sampling.draw_other", lang, n=f"{max(record.stages[-1].survivors - len(top), 0):,}"))
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
             hovertemplate="%{x}<br>" + t("sampling.hover_cumulative", lang, p="%{y:.3f}") + "<extra></extra>"),
    ]
    shapes = []
    title = t("sampling.draw_title", lang)
    if greedy or record.draw is None:
        title = t("sampling.draw_title_greedy", lang)
        note = ""
    else:
        u = record.draw
        shapes.append(dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=u, y1=u,
                           line=dict(color=CHOSEN, dash="dash", width=2)))
        note = t("sampling.draw_note", lang, u=f"{u:.3f}", token=_plotly_text(repr(record.piece)),
                 rank=record.chosen_rank, p=_percent(record.chosen_prob), low=f"{record.cdf_low:.3f}",
                 high=f"{record.cdf_high:.3f}")
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
                 yaxis="y2", hovertemplate="%{x}<br>" + t("sampling.hover_drawn", lang, n="%{y}")
                 + "<extra></extra>"),
            dict(type="scatter", x=names, y=[total * q for _, _, _, q in shown], mode="markers", xaxis="x2",
                 yaxis="y2", marker=dict(symbol="diamond", size=11, color=CHOSEN),
                 hovertemplate="%{x}<br>" + t("sampling.hover_expected", lang, n="%{y:.1f}") + "<extra></extra>"),
        ]
        layout["xaxis2"] = dict(domain=right, anchor="y2", **tick)
        layout["yaxis2"] = dict(domain=[0, 1], anchor="x2", title=dict(text=t("sampling.times_drawn", lang)),
                                gridcolor="#eee")
        annotations.append(dict(text=t("sampling.draws_title", lang, n=total), x=sum(right) / 2,
                                y=1.0, xref="paper", yref="paper", xanchor="center", yanchor="bottom",
                                showarrow=False, font=dict(size=13)))
    return go.Figure(data=data, layout=layout)


def _quoted(piece: str) -> str:
    return f"“{piece}”"


def waterfall_summary(record: StepRecord, lang: str = DEFAULT) -> str:
    """One sentence: what the pipeline did to this step's distribution (the text alternative of the waterfall)."""
    raw, final = record.stages[0], record.stages[-1]
    top = 0  # candidates are ordered by final probability: the first is the final favourite
    chosen = record.candidates.index(record.token_id)
    head = dict(step=record.index + 1, n=f"{raw.survivors:,}", entropy=f"{raw.entropy_bits:.2f}")
    if len(record.stages) == 1:
        first = t("sampling.wf_sum_plain", lang, **head)
    else:
        names = ", ".join(stage_label(s, lang) for s in record.stages[1:])
        first = t("sampling.wf_sum_stages", lang, **head, names=names, left=f"{final.survivors:,}",
                  final_entropy=f"{final.entropy_bits:.2f}", favourite=_quoted(record.pieces[top]),
                  p_raw=_percent(raw.probs[top]), p_final=_percent(final.probs[top]))
    second = t("sampling.wf_sum_taken" if record.draw is None else "sampling.wf_sum_drawn", lang,
               token=_quoted(record.pieces[chosen]), p=_percent(record.chosen_prob), raw=_percent(record.raw_prob))
    grammar = ""
    if record.removed_mass is not None:
        grammar = " " + t("sampling.wf_sum_grammar", lang, tokens=_tokens(record.allowed_tokens, lang),
                          p=_percent(record.removed_mass))
    return f"{first}; {second}{grammar}"


def draw_summary(record: StepRecord, greedy: bool, lang: str = DEFAULT) -> str:
    """One sentence: where the uniform number landed and what 100 draws gave (the text alternative)."""
    piece = _quoted(record.piece)
    if greedy or record.draw is None:
        text = t("sampling.draw_sum_greedy", lang, token=piece)
    else:
        text = t("sampling.draw_sum_u", lang, u=f"{record.draw:.3f}", token=piece, low=f"{record.cdf_low:.3f}",
                 high=f"{record.cdf_high:.3f}", rank=record.chosen_rank, p=_percent(record.chosen_prob))
    if record.samples:
        total = sum(c for _, _, c, _ in record.samples)
        _, most, count, q = record.samples[0]
        text += " " + t("sampling.draw_sum_samples", lang, total=total, token=_quoted(most), count=count,
                        expected=f"{total * q:.1f}", kinds=len(record.samples))
    return text


def stage_table_html(record: StepRecord, explanations: dict[str, str], lang: str = DEFAULT) -> str:
    """One row per stage: the rule, how many tokens survive, entropy, and the top token's probability."""
    rows = []
    for i, stage in enumerate(record.stages):
        rows.append(
            "<tr>"
            f"<td class='n'>{i + 1}</td><td><b>{html.escape(stage_label(stage, lang))}</b></td>"
            f"<td>{explanations.get(stage.name, '')}</td>"
            f"<td class='num'>{stage.survivors:,}</td><td class='num'>{stage.entropy_bits:.2f}</td>"
            f"<td class='num'>{stage.top_prob:.1%}</td>"
            "</tr>"
        )
    draw = explanations.get("draw", "")
    rows.append(f"<tr><td class='n'>→</td><td><b>{t('sampling.stage_draw', lang)}</b></td><td>{draw}</td>"
                "<td></td><td></td><td></td></tr>")
    head = "".join(f"<th>{t(key, lang)}</th>" for key in ("sampling.th_stage", "sampling.th_what",
                                                          "sampling.th_left", "sampling.th_entropy",
                                                          "sampling.th_top_p"))
    return (
        f"<table class='smp-stages'><thead><tr><th></th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def ablation_banner(ablation: Ablation | None, lang: str = DEFAULT) -> str:
    """The mark an ablated run carries wherever its text is shown ("" for none)."""
    if ablation is None or ablation.empty:
        return ""
    text = t("sampling.ablated_banner", lang, ablation=html.escape(format_ablation(ablation)),
             mode=html.escape(mode_word(ablation.mode, lang)))
    return f'<div class="smp-ablated" role="note">✂ {text}</div>'


def generated_html(tokens: Sequence[ChosenToken], view: int, *, pending: bool = True, ended: str | None = None,
                   hide_last: bool = False, by_removed_mass: bool = False, ablation: Ablation | None = None,
                   lang: str = DEFAULT) -> str:
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
        title = t("sampling.tok_title", lang, step=i + 1, p=f"{token.raw_prob:.1%}")
        if token.forced:
            title += " · " + t("sampling.tok_whatif", lang)
        if token.eos_blocked:
            title += " · " + t("sampling.tok_eos_blocked", lang)
        removed = token.removed_mass if by_removed_mass and token.removed_mass is not None else None
        if removed is not None:
            title += " · " + t("sampling.tok_removed", lang, p=f"{removed:.1%}")
        shown = html.escape(token.text).replace("\n", "↵<br>") or "∅"
        colour = prob_colour(token.raw_prob) if removed is None else removed_colour(removed)
        spans.append(f'<span class="{" ".join(classes)}" data-step="{i}" style="background:{colour}" '
                     f'title="{html.escape(title)}">{shown}</span>')
    if secret:
        hidden = html.escape(t("sampling.tok_hidden", lang, step=len(tokens)))
        spans.append(f'<span class="smp-secret" title="{hidden}">?</span>')
    elif pending:
        on = " on" if view == len(tokens) else ""
        spans.append(f'<span class="smp-tok smp-next{on}" data-step="{len(tokens)}" '
                     f'title="{html.escape(t("sampling.tok_next_title", lang))}">▌{t("sampling.tok_next", lang)}'
                     '</span>')
    if ended and not secret:
        spans.append(f'<span class="smp-end">■ {html.escape(ended)}</span>')
    buckets, what = ((REMOVED_BUCKETS, t("sampling.legend_removed", lang))
                     if by_removed_mass else (PROB_BUCKETS, t("sampling.legend_prob", lang)))
    legend = "".join(f'<span class="smp-key" style="background:{c}">{html.escape(k)}</span>' for _, c, k in buckets)
    empty = "" if tokens else f'<span class="smp-hint">{t("sampling.no_tokens", lang)}</span>'
    return (
        f'{ablation_banner(ablation, lang)}<div class="smp-text">{empty}{"".join(spans)}</div>'
        f'<div class="smp-legend">{what}: {legend} · {t("sampling.legend_click", lang)}</div>'
    )


# ---------------------------------------------------------------------------------------------------
# Texts around the figures


def ended_text(run: SamplingRun, lang: str = DEFAULT) -> str | None:
    """'ended: <why>' once the run has ended, else None."""
    why = stop_reason_text(run.stop_reason, run.stop_sequence, lang) if run.done else None
    return t("sampling.ended", lang, why=why) if why else None


def stage_explanations(params: SamplingParams, min_new: int, record: StepRecord | None = None,
                       constraint: Constraint | None = None, lang: str = DEFAULT) -> dict[str, str]:
    """One short, exact sentence per stage, with the values in force (HTML)."""
    temp, th = params.temperature, params.repetition_penalty
    grammar = ""
    if constraint is not None and record is not None and record.removed_mass is not None:
        grammar = t("sampling.expl_constraint", lang, constraint=html.escape(describe_constraint(constraint, lang)),
                    tokens=_tokens(record.allowed_tokens, lang), p=_percent(record.removed_mass))
    return {
        "constraint": grammar,
        "raw": t("sampling.expl_raw", lang),
        "repetition_penalty": t("sampling.expl_repetition", lang, theta=f"{th:g}"),
        "presence_frequency": t("sampling.expl_presence_frequency", lang, frequency=f"{params.frequency_penalty:g}",
                                presence=f"{params.presence_penalty:g}"),
        "min_new_tokens": t("sampling.expl_min_new", lang, n=min_new),
        "temperature": t("sampling.expl_temperature_sharper" if temp < 1 else "sampling.expl_temperature_flatter",
                         lang, t=f"{temp:g}"),
        "top_k": t("sampling.expl_top_k", lang, k=params.top_k),
        "top_p": t("sampling.expl_top_p", lang, p=f"{params.top_p:g}"),
        "min_p": t("sampling.expl_min_p", lang, p=f"{params.min_p:g}"),
        "greedy": t("sampling.expl_greedy", lang),
        "draw": t("sampling.expl_draw", lang),
    }


def validity_text(valid: Validity, constraint: Constraint, lang: str = DEFAULT) -> str:
    if valid.exact:
        return t("sampling.validity_exact", lang, constraint=html.escape(describe_constraint(constraint, lang)))
    if valid.trimmed:
        return t("sampling.validity_trimmed", lang)
    return t("sampling.validity_not", lang)


def status_markdown(run: SamplingRun, view: int, record: StepRecord, params: SamplingParams, min_new: int,
                    extra: str = "", valid: Validity | None = None, lang: str = DEFAULT) -> str:
    """What the step on view did: the draw, the token the run took there when it differs, EOS blocked, the
    constraint's mask, the run's ablation."""
    marks = ""
    if run.ablation is not None:
        marks += " · " + t("sampling.status_ablated", lang, ablation=html.escape(format_ablation(run.ablation)),
                           mode=mode_word(run.ablation.mode, lang))
    if run.constraint is not None:
        marks += " · " + t("sampling.status_constraint", lang,
                           constraint=html.escape(describe_constraint(run.constraint, lang)))
    lines = [t("sampling.status_head", lang, step=view + 1, seed=run.seed, n=len(run.tokens))
             + (f" · **{ended_text(run, lang)}**" if run.done else "") + marks]
    if params.greedy:
        lines.append(t("sampling.status_greedy", lang, token=html.escape(record.piece)))
    else:
        lines.append(t("sampling.status_draw", lang, u=f"{record.draw:.4f}", token=html.escape(record.piece),
                       rank=record.chosen_rank, p=f"{record.chosen_prob:.1%}", raw=f"{record.raw_prob:.1%}"))
    taken = run.tokens[view] if view < len(run.tokens) else None
    if taken is not None and taken.token_id != record.token_id:
        how = t("sampling.status_how_whatif" if taken.forced else "sampling.status_how_then", lang)
        lines.append(t("sampling.status_taken", lang, token=html.escape(taken.piece), how=how))
    if record.eos_blocked:
        lines.append(t("sampling.status_eos_blocked", lang, view=view, n=min_new,
                       p=f"{record.eos_blocked_prob:.1%}"))
    if record.removed_mass is not None:
        lines.append(t("sampling.status_constraint_line", lang, tokens=_tokens(record.allowed_tokens, lang),
                       p=f"{record.removed_mass:.1%}"))
    if valid is not None and run.constraint is not None:
        lines.append(validity_text(valid, run.constraint, lang))
    if extra:
        lines.append(extra)
    return "  \n".join(lines)


def hidden_note(run: SamplingRun, view: int, lang: str = DEFAULT) -> str:
    """The note shown instead of the step's views while they are hidden (predict first)."""
    n = len(run.tokens)
    if n and view >= n - 1:
        what = t("sampling.hidden_drawn", lang, n=n)
    else:
        what = t("sampling.hidden_step", lang, step=view + 1)
    return f'<div class="lie-hidden-note" id="smp-hidden-text">{t("sampling.hidden_note", lang, what=what)}</div>'


def guess_line(guess: Guess | None, record: StepRecord, lang: str = DEFAULT) -> str:
    """Where the class's guess stands in this step's distributions (rank and probability), in one line."""
    if guess is None:
        return ""
    name = t("sampling.guess_name", lang, text=html.escape(guess.text.strip()), piece=html.escape(guess.piece),
             id=guess.token_id)
    if guess.prob > 0:
        where = t("sampling.guess_rank", lang, rank=guess.rank, p=f"{guess.prob:.1%}", raw=f"{guess.raw_prob:.1%}",
                  raw_rank=f"{guess.raw_rank:,}")
    else:
        where = t("sampling.guess_removed", lang, raw=f"{guess.raw_prob:.2%}", raw_rank=f"{guess.raw_rank:,}")
    verdict = (t("sampling.guess_took_it", lang) if guess.drawn
               else t("sampling.guess_took_other", lang, piece=html.escape(record.piece)))
    more = " " + t("sampling.guess_first_only", lang) if guess.num_tokens > 1 else ""
    return t("sampling.guess_line", lang, name=name, where=where, verdict=verdict) + more


# ---------------------------------------------------------------------------------------------------
# Two runs side by side (a Comparison)

A_COLOUR = "#0072B2"  # run A
B_COLOUR = "#D55E00"  # run B


def _difference(c: Comparison, name: str, x: str, y: str, lang: str) -> tuple[str, str, str]:
    """One of `c.differences` in `lang`: the setting's name, and a constraint's or an ablation's value in words."""
    if name == "constraint":
        x, y = (describe_constraint(s.constraint, lang) if s.constraint else t("sampling.none", lang)
                for s in (c.a_spec, c.b_spec))
    elif name == "ablation":
        x, y = (describe_ablation(s.ablation, lang) if s.ablation else t("sampling.none", lang)
                for s in (c.a_spec, c.b_spec))
    key = "sampling.setting_" + name.replace(" ", "_")
    return (t(key, lang) if key in catalogue(DEFAULT) else name), x, y


def differences(c: Comparison, lang: str = DEFAULT) -> list[tuple[str, str, str]]:
    """The settings in which the two runs differ, as (name, A's value, B's value), in `lang`."""
    return [_difference(c, name, x, y, lang) for name, x, y in c.differences]


def side_labels(c: Comparison, lang: str = DEFAULT) -> tuple[str, str]:
    """What each run is, in a few words: the settings in which they differ."""
    if not c.differences:
        same = t("sampling.same_settings", lang)
        return same, same
    diffs = differences(c, lang)
    a = ", ".join(f"{name} {x}" for name, x, _ in diffs)
    b = ", ".join(f"{name} {y}" for name, _, y in diffs)
    return a, b


def _text_html(text: str) -> str:
    return html.escape(text).replace("\n", "↵<br>")


def _side_text(text: str, cut: int | None, lang: str = DEFAULT) -> str:
    """A run's text with the part both runs share greyed and a bar where they part."""
    if cut is None:
        return f'<span class="smp-cmp-common">{_text_html(text)}</span>'
    return (f'<span class="smp-cmp-common">{_text_html(text[:cut])}</span><span class="smp-cmp-cut" '
            f'title="{html.escape(t("sampling.first_difference", lang))}">▌</span>{_text_html(text[cut:])}')


def _validity_badge(v: Validity | None, lang: str = DEFAULT) -> str:
    if v is None:
        return ""
    ok = v.exact or v.trimmed
    return (f'<span class="smp-cmp-valid {"ok" if ok else "bad"}">{"✔" if ok else "✘"} '
            f'{html.escape(describe_validity(v, lang))}</span>')


def _tokens(n: int, lang: str = DEFAULT) -> str:
    """'1 token', '2,048 tokens'."""
    return t("sampling.token_one" if n == 1 else "sampling.token_many", lang, n=f"{n:,}")


def _p(p: float | None) -> str:
    """A probability in the aligned table: tiny ones as "<0.01%" (their digits say nothing at a glance)."""
    if p is None:
        return ""
    return "<0.01%" if 0 < p < 1e-4 else _percent(p)


def compare_tokens_html(c: Comparison, lang: str = DEFAULT) -> str:
    """The two texts side by side, then both runs aligned position by position: each token, the probability
    its run gave it, and the probability the run gave to the other run's token there. The first difference is
    marked; positions where both runs took the same token are grey."""
    la, lb = side_labels(c, lang)
    cut = c.divergence_char
    sides = "".join(
        f'<div class="smp-cmp-side"><div class="smp-cmp-label" style="border-color:{colour}"><b>{name}</b> · '
        f'{html.escape(model)} · {html.escape(label)} {_validity_badge(valid, lang)}</div>'
        f'{ablation_banner(spec.ablation, lang)}<div class="smp-cmp-body">{_side_text(text, cut, lang)}</div></div>'
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
        ("A", t("sampling.cmp_row_token", lang, run="A"), lambda r: token(r.a)),
        ("p<sub>A</sub>(A)", t("sampling.cmp_row_own", lang, run="A"), lambda r: _p(r.a and r.a.own)),
    ]
    if cross:
        lines.append(("p<sub>A</sub>(B)", t("sampling.cmp_row_other", lang, run="A", other="B"),
                      lambda r: _p(r.a and r.a.other)))
    lines += [
        ("B", t("sampling.cmp_row_token", lang, run="B"), lambda r: token(r.b)),
        ("p<sub>B</sub>(B)", t("sampling.cmp_row_own", lang, run="B"), lambda r: _p(r.b and r.b.own)),
    ]
    if cross:
        lines.append(("p<sub>B</sub>(A)", t("sampling.cmp_row_other", lang, run="B", other="A"),
                      lambda r: _p(r.b and r.b.other)))
    for name, side in (("A", "a"), ("B", "b")):
        if any(getattr(r, side) is not None and getattr(r, side).removed_mass is not None for r in c.rows):
            lines.append((t("sampling.cmp_row_removed", lang, run=name),
                          t("sampling.cmp_row_removed_title", lang, run=name),
                          lambda r, side=side: _p(getattr(r, side) and getattr(r, side).removed_mass)))
    body = "".join(
        f'<tr><th title="{html.escape(title)}">{name}</th>{"".join(cell(r, None, fn(r)) for r in c.rows)}</tr>'
        for name, title, fn in lines
    )
    note = ""
    if not cross:
        note = f'<div class="smp-cmp-note">{t("sampling.cmp_by_characters", lang)}</div>'
    return (f'<div class="smp-cmp-texts">{sides}</div>{note}<div class="smp-cmp-wrap"><table class="smp-cmp">'
            f'<thead><tr><th>{t("sampling.cmp_position", lang)}</th>{head}</tr></thead><tbody>{body}</tbody>'
            '</table></div>')


def compare_figure(c: Comparison, lang: str = DEFAULT) -> go.Figure:
    """Per position: the probability each run gave to its own token (solid) and to the other run's token
    (dotted), the first difference marked; with a constraint, the probability it removed (bars)."""
    x = [r.position + 1 for r in c.rows]
    position = t("sampling.hover_position", lang, x="%{x}")
    data = []
    for name, side, colour in (("A", "a", A_COLOUR), ("B", "b", B_COLOUR)):
        other = "B" if name == "A" else "A"
        own = [getattr(r, side).own if getattr(r, side) else None for r in c.rows]
        data.append(dict(type="scatter", x=x, y=own, mode="lines+markers",
                         name=t("sampling.cmp_legend_own", lang, run=name),
                         line=dict(color=colour, width=2), hovertemplate=f"{position}<br>p = %{{y:.3f}}<extra>"
                         + t("sampling.cmp_hover_own", lang, run=name) + "</extra>"))
        if c.aligned_by == "token":
            cross = [getattr(r, side).other if getattr(r, side) else None for r in c.rows]
            data.append(dict(type="scatter", x=x, y=cross, mode="lines+markers",
                             name=t("sampling.cmp_legend_other", lang, run=name, other=other),
                             line=dict(color=colour, width=2, dash="dot"), marker=dict(symbol="x"),
                             hovertemplate=f"{position}<br>p = %{{y:.3f}}<extra>"
                             + t("sampling.cmp_hover_other", lang, run=name, other=other) + "</extra>"))
        removed = [getattr(r, side).removed_mass if getattr(r, side) else None for r in c.rows]
        if any(m is not None for m in removed):
            data.append(dict(type="bar", x=x, y=removed, name=t("sampling.cmp_legend_removed", lang, run=name),
                             marker=dict(color=colour, opacity=0.25),
                             hovertemplate=f"{position}<br>" + t("sampling.cmp_hover_removed", lang, p="%{y:.1%}")
                             + "<extra>" + t("sampling.cmp_hover_constraint", lang, run=name) + "</extra>"))
    shapes, annotations = [], []
    if c.first_divergence is not None:
        k = c.first_divergence + 1
        shapes.append(dict(type="line", xref="x", yref="paper", x0=k, x1=k, y0=0, y1=1,
                           line=dict(color="#333", dash="dash", width=1.5)))
        annotations.append(dict(x=k, y=1.0, xref="x", yref="paper", text=t("sampling.cmp_first_at", lang, k=k),
                                showarrow=False, xanchor="left", yanchor="bottom", font=dict(size=12)))
    layout = dict(
        height=360, margin=dict(l=10, r=10, t=60, b=40), font=FONT, plot_bgcolor="white", barmode="overlay",
        xaxis=dict(title=dict(text=t("sampling.cmp_x", lang)), dtick=max(1, len(x) // 16), gridcolor="#eee"),
        yaxis=dict(title=dict(text=t("sampling.cmp_y", lang)), range=[0, 1.05], tickformat=".0%",
                   gridcolor="#eee"),
        legend=dict(orientation="h", y=-0.25), shapes=shapes, annotations=annotations,
        title=dict(text=t("sampling.cmp_title", lang), x=0.99, xanchor="right", font=dict(size=12, color="#555")),
    )
    return go.Figure(data=data, layout=layout)


def compare_summary(c: Comparison, lang: str = DEFAULT) -> str:
    """One sentence: where the runs part, and how sure each was there (the figure's text alternative)."""
    la, lb = side_labels(c, lang)
    if c.first_divergence is None:
        if not c.differences:
            return t("sampling.cmp_sum_same", lang, n=len(c.rows))
        return t("sampling.cmp_sum_unaltered", lang, a=la, b=lb, n=len(c.rows))
    k = c.first_divergence
    row = c.rows[k] if k < len(c.rows) else None
    if k == 0:
        where = t("sampling.cmp_where_first", lang)
    else:
        where = t("sampling.cmp_where_one" if k == 1 else "sampling.cmp_where_many", lang, k=k, pos=k + 1)
    if c.aligned_by == "character":
        where = t("sampling.cmp_where_chars", lang, chars=c.divergence_char, pos=k + 1)
        return t("sampling.cmp_sum_where", lang, a=la, b=lb, where=where)
    if row is None or row.a is None or row.b is None:
        ended = "A" if row is None or row.a is None else "B"
        return t("sampling.cmp_sum_ended", lang, a=la, b=lb, where=where, run=ended)
    return t("sampling.cmp_sum_part", lang, a=la, b=lb, where=where, a_token=_quoted(row.a.piece),
             a_p=_percent(row.a.own), b_token=_quoted(row.b.piece), a_other=_percent(row.a.other or 0),
             b_p=_percent(row.b.own), b_other=_percent(row.b.other or 0))


def stop_words(reason: str, lang: str = DEFAULT) -> str:
    """How a compared run ended, in two or three words."""
    key = f"sampling.stopw_{reason}"
    return t(key, lang) if key in catalogue(DEFAULT) else reason


def compare_status(c: Comparison, lang: str = DEFAULT) -> str:
    """What differs between the two runs, whether each text is valid under the constraint, and notes."""
    lines = []
    if c.differences:
        lines.append(t("sampling.cmp_differs", lang, list="; ".join(
            f"{html.escape(n)}: A {html.escape(x)} · B {html.escape(y)}" for n, x, y in differences(c, lang))))
    else:
        lines.append(t("sampling.cmp_differs_nothing", lang))
    lines.append(t("sampling.cmp_runs", lang, a_n=len(c.a.token_ids), a_seed=c.a.seed,
                   a_stop=stop_words(c.a.stop_reason, lang), b_n=len(c.b.token_ids), b_seed=c.b.seed,
                   b_stop=stop_words(c.b.stop_reason, lang)))
    if c.constraint is not None:
        lines.append(t("sampling.cmp_checked", lang, constraint=html.escape(describe_constraint(c.constraint, lang)),
                       a=describe_validity(c.a_valid, lang), b=describe_validity(c.b_valid, lang)))
    if c.timed_out:
        lines.append(t("sampling.cmp_timed_out", lang))
    return "  \n".join(lines)


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
