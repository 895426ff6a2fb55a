"""Interventions views as pure functions: the inference dataclasses (AblationResult, HeadSweep, PatchSweep,
PromptPair) in, a plotly Figure, an HTML string or a one-line text alternative (`*_summary`) out.

Colours (checked for colour-blind readers): the before/after bars are Okabe-Ito blue and orange, the "after"
bars also hatched, so the two differ by more than hue. Effects have a sign (an ablation can help the answer,
a patch can push it further away), so the grids use ColorBrewer's blue-white-red (RdBu) centred on 0: red =
the answer gains, blue = it loses (the head sweep) / red = the clean answer comes back (patching). Numbers are
written in the cells where they fit, so no reading depends on the colour alone. The selected cell carries an
Okabe-Ito vermillion outline.

Every builder that writes words takes `lang` (the catalogue's interventions.* texts); numbers, token pieces and the
list's own syntax (L17H4, attn L3) are filled into the texts, never typed into them.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from inference.interventions import Ablation, AblationResult, HeadSweep, PatchSweep, PromptPair

from ..i18n import DEFAULT, message, t

FONT = dict(size=14, color="#222")
AXIS = dict(automargin=True, ticks="", showgrid=False, zeroline=False, showline=False)
GRID = dict(AXIS, showgrid=True, gridcolor="#e5e5e5")
DIVERGING = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1.0, "#b2182b"]]
SEQUENTIAL = [[0.0, "#ffffff"], [0.1, "#fee0d2"], [0.4, "#fc9272"], [0.7, "#de2d26"], [1.0, "#67000d"]]
BEFORE, AFTER, ACCENT = "#0072B2", "#E69F00", "#d55e00"
# Sites and modes are named by the catalogue: interventions.site_name_<site>, interventions.mode_name_<mode>.
# The head sweep's colour: change of log p on a signed log scale (|Δ| from 0.01 to 10 nats), so the one MLP
# that breaks the answer (-12 nats) and a head that nudges it (-0.1) both show.
SWEEP_FLOOR = 0.01
SWEEP_TICKS = [-10, -1, -0.1, 0, 0.1, 1, 10]
MOVED = 0.1  # nats: the summary counts the heads that move the answer by more than this
MAX_CELL_TEXT_COLUMNS = 16  # beyond this many positions the patching grid leaves its cells without numbers


def _short(piece: str, limit: int = 12) -> str:
    return piece if len(piece) <= limit else piece[: limit - 1] + "…"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _pct(p: float) -> str:
    if p >= 0.0995:
        return f"{p:.0%}"
    if p >= 0.000995:
        return f"{p:.1%}"
    return f"{p:.0e}" if p > 0 else "0"


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def mode_name(mode: str, lang: str = DEFAULT) -> str:
    """"zero ablation" / "mean ablation" in `lang`."""
    return t(f"interventions.mode_name_{mode}", lang)


def site_name(site: str, lang: str = DEFAULT) -> str:
    """The patched site ("resid_pre", "attn_out", "mlp_out") in words, in `lang`."""
    return t(f"interventions.site_name_{site}", lang)


def describe(ablation: Ablation, lang: str = DEFAULT) -> str:
    """What the ablation switches off, in `lang` ("zero-ablated: L17H4, attn block L3"); the tab's own wording of
    inference's `Ablation.describe` (which stays English)."""
    parts = [f"L{l}H{h}" for l, h in ablation.heads] + [t("interventions.block_part", lang, kind=k, layer=l)
                                                          for k, l in ablation.blocks]
    if not parts:
        return t("interventions.no_ablation", lang)
    return t(f"interventions.ablated_{ablation.mode}", lang, parts=", ".join(parts))


def _token(names: dict, token_id: int, lang: str) -> str:
    """A token's piece, or "token 123" where the piece is not known."""
    return names.get(token_id) if token_id in names else t("interventions.token_id", lang, id=token_id)


# ---------------------------------------------------------------------------------------------------
# One ablation: before and after


def ablation_rows(result: AblationResult, k: int = 12) -> list[tuple[int, str, float, float]]:
    """The tokens to show (id, piece, p before, p after): the union of both runs' top tokens, most likely in
    either run first, at most k."""
    rows = [(i, p, float(result.clean_probs[i]), float(result.ablated_probs[i]))
            for i, p in zip(result.top_ids, result.top_pieces)]
    rows.sort(key=lambda r: -max(r[2], r[3]))
    return rows[:k]


def ablation_bars(result: AblationResult, k: int = 12, lang: str = DEFAULT) -> go.Figure:
    """The next-token distribution before and after the ablation: grouped horizontal bars, one token per row."""
    rows = ablation_rows(result, k)
    labels = [f"{_short(p, 14)}" for _, p, _, _ in rows]
    before = [r[2] for r in rows]
    after = [r[3] for r in rows]
    what = describe(result.ablation, lang) if not result.ablation.empty else t("interventions.no_ablation_bars", lang)
    hover = dict(token="%{y}", p="%{x:.4f}")  # plotly fills these in the browser
    fig = go.Figure()
    fig.add_bar(y=labels, x=before, orientation="h", name=t("interventions.before", lang), marker=dict(color=BEFORE),
                text=[_pct(p) for p in before], textposition="outside", cliponaxis=False,
                hovertemplate=t("interventions.hover_before", lang, **hover) + "<extra></extra>")
    fig.add_bar(y=labels, x=after, orientation="h", name=t("interventions.after", lang),
                marker=dict(color=AFTER, pattern=dict(shape="/", fgcolor="#7a5200", size=6, solidity=0.25)),
                text=[_pct(p) for p in after], textposition="outside", cliponaxis=False,
                hovertemplate=t("interventions.hover_after", lang, **hover) + "<extra></extra>")
    top = max([*before, *after, 0.01])
    fig.update_layout(
        title=dict(text=t("interventions.bars_title", lang, what=_esc(_short(what, 90))), font=dict(size=15), x=0.02,
                   xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white", barmode="group", bargap=0.25,
        xaxis=dict(GRID, title=dict(text=t("interventions.probability", lang)), range=[0, min(1.0, top * 1.18)],
                   tickformat=".0%"),
        yaxis=dict(AXIS, autorange="reversed", tickfont=dict(size=13, family="monospace")),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.0),
        margin=dict(l=10, r=40, t=80, b=40), height=int(np.clip(34 * len(rows) + 140, 280, 620)),
    )
    return fig


def ablation_summary(result: AblationResult, lang: str = DEFAULT) -> str:
    """One sentence with the numbers the bars show."""
    a = result.ablation
    answer = result.top_pieces[result.top_ids.index(result.clean_token_id)] if result.clean_token_id in result.top_ids else "?"
    before = float(result.clean_probs[result.clean_token_id])
    after = float(result.ablated_probs[result.clean_token_id])
    if a.empty:
        return t("interventions.summary_none", lang, answer=answer, p=_pct(before))
    new = result.ablated_token_id
    if new == result.clean_token_id:
        top = t("interventions.top_stays", lang, answer=answer)
    else:
        piece = _token(dict(zip(result.top_ids, result.top_pieces)), new, lang)
        top = t("interventions.top_becomes", lang, token=piece, p=_pct(float(result.ablated_probs[new])))
    return t("interventions.summary", lang, spec=a.spec, mode=mode_name(a.mode, lang), answer=answer,
             before=_pct(before), after=_pct(after), delta=_signed(result.delta_logprob), kl=f"{result.kl:.3f}",
             top=top)


def ablation_info_html(result: AblationResult, lang: str = DEFAULT) -> str:
    names = dict(zip(result.top_ids, result.top_pieces))
    answer = names.get(result.clean_token_id, "?")
    new = _token(names, result.ablated_token_id, lang)
    cells = [
        (t("interventions.info_tokens", lang), f"{len(result.tokens):,}"),
        (t("interventions.info_delta", lang, answer=_esc(answer)), _signed(result.delta_logprob) + " nats"),
        (t("interventions.info_kl", lang), f"{result.kl:.3f} nats"),
        (t("interventions.info_top_after", lang), _esc(new)),
        (t("interventions.info_seconds", lang), f"{result.seconds:.2f} s"),
    ]
    inner = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in cells)
    marked = ("" if result.ablation.empty else
              f'<div class="int-marked">⚠ {_esc(describe(result.ablation, lang))}</div>')
    return f'{marked}<div class="lie-counts">{inner}</div>'


# ---------------------------------------------------------------------------------------------------
# The head sweep: every head (and block) of some layers, one at a time


def sweep_columns(sweep: HeadSweep) -> list[str]:
    """Column labels of the sweep grid: H0..H{n-1}, then attn and mlp when the blocks were swept."""
    heads = [f"H{h}" for h in range(sweep.delta_logprob.shape[1])]
    return heads + (["attn", "mlp"] if sweep.block_delta_logprob is not None else [])


def sweep_values(sweep: HeadSweep, metric: str = "delta") -> np.ndarray:
    """[layers, columns]: Δ log p (metric "delta") or KL ("kl") per head, then per block."""
    heads = sweep.delta_logprob if metric == "delta" else sweep.kl
    blocks = sweep.block_delta_logprob if metric == "delta" else sweep.block_kl
    return heads if blocks is None else np.concatenate([heads, blocks], axis=1)


def _signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) * log10(1 + |x| / floor): 0 stays 0, ±floor is ±0.3, ±10 nats is ±3."""
    return np.sign(x) * np.log10(1 + np.abs(x) / SWEEP_FLOOR)


def sweep_heatmap(sweep: HeadSweep, metric: str = "delta", selected: tuple[int, int] | None = None,
                  lang: str = DEFAULT) -> go.Figure:
    """Layer x head grid (plus the attn and MLP block columns) of the effect on the answer of switching each one
    off alone; `selected` = (layer, column)."""
    rows = list(sweep.layers)  # only the layers swept are drawn (row i is layer rows[i])
    values = sweep_values(sweep, metric)[rows]  # [rows, C]
    deltas, kls = sweep_values(sweep, "delta")[rows], sweep_values(sweep, "kl")[rows]
    layers, columns = values.shape
    labels = sweep_columns(sweep)
    tops = sweep.top_after if sweep.block_top_after is None else np.concatenate([sweep.top_after, sweep.block_top_after], 1)
    tops = tops[rows]
    answer = _esc(sweep.clean_piece)
    if metric == "delta":
        z = _signed_log(values)
        limit = float(_signed_log(np.array([10.0]))[0])
        scale, zmin, zmax, zmid = DIVERGING, -limit, limit, 0.0
        ticks = list(_signed_log(np.array(SWEEP_TICKS, dtype=float)))
        colorbar = dict(title=dict(text=t("interventions.sweep_colorbar_delta", lang, answer=answer), side="right"),
                        tickvals=ticks, thickness=14,
                        ticktext=[_signed(v, 2 if abs(v) < 1 else 0) if v else "0" for v in SWEEP_TICKS])
        cell = [["" if np.isnan(v) else "0" if abs(v) < 0.005 else f"{v:+.2f}".replace("-", "−") for v in row]
                for row in values]
    else:
        z = np.log10(np.clip(values, 1e-3, 10.0))
        scale, zmin, zmax, zmid = SEQUENTIAL, -3.0, 1.0, None
        colorbar = dict(title=dict(text=t("interventions.sweep_colorbar_kl", lang), side="right"),
                        tickvals=[-3, -2, -1, 0, 1], ticktext=["≤0.001", "0.01", "0.1", "1", "≥10"], thickness=14)
        cell = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in values]

    def off(layer: int, label: str) -> str:
        if label.startswith("H"):
            return t("interventions.hover_head_off", lang, layer=layer, head=label)
        return t("interventions.hover_block_off", lang, layer=layer, kind=label)

    not_run = t("interventions.hover_not_run_time", lang)
    hover = [[(off(rows[i], labels[c]) + "<br>"
               + (not_run if np.isnan(values[i, c]) else
                  t("interventions.hover_delta", lang, answer=answer, delta=f"{deltas[i, c]:+.3f}") + "<br>"
                  + t("interventions.hover_kl", lang, kl=f"{kls[i, c]:.3f}") + "<br>"
                  + t("interventions.hover_top_after", lang, token=_esc(sweep.names.get(int(tops[i, c]), "?")))))
              for c in range(columns)] for i in range(layers)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(columns)), y=rows, zmin=zmin, zmax=zmax, zmid=zmid, colorscale=scale,
        text=cell, texttemplate="%{text}", textfont=dict(size=10), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", xgap=1, ygap=1, colorbar=colorbar, hoverongaps=False,
    ))
    heads = sweep.delta_logprob.shape[1]
    if columns > heads:  # a line between the heads and the whole blocks
        fig.add_shape(type="line", x0=heads - 0.5, x1=heads - 0.5, y0=rows[0] - 0.5, y1=rows[-1] + 0.5,
                      line=dict(color="#222", width=2))
    if selected is not None:
        l, c = selected
        fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=l - 0.5, y1=l + 0.5, line=dict(color=ACCENT, width=3))
    what = t("interventions.sweep_what_delta" if metric == "delta" else "interventions.sweep_what_kl", lang)
    title = t("interventions.sweep_title", lang, mode=mode_name(sweep.mode, lang), what=what, answer=answer)
    fig.update_layout(
        title=dict(text=f"{title}<br><span style='font-size:13px'>{t('interventions.sweep_subtitle', lang)}</span>",
                   font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickvals=list(range(columns)), ticktext=labels, side="top", tickfont=dict(size=12)),
        yaxis=dict(AXIS, tickvals=rows, ticktext=[f"L{l}" for l in rows], tickfont=dict(size=11),
                   title=dict(text=t("interventions.layer", lang)), range=[rows[0] - 0.5, rows[-1] + 0.5]),
        margin=dict(l=10, r=10, t=100, b=10), height=int(np.clip(24 * layers + 150, 260, 900)),
    )
    return fig


def sweep_waiting(lang: str = DEFAULT) -> str:
    """The sweep's text alternative before any sweep: which button starts one (named as the button reads)."""
    return t("interventions.sweep_waiting", lang, button=t("interventions.sweep_run", lang))


def sweep_summary(sweep: HeadSweep, lang: str = DEFAULT) -> str:
    """One sentence: the components whose removal hurts (and helps) the answer most."""
    done = sweep.done
    if not done:
        return t("interventions.sweep_none", lang)
    heads = sweep.delta_logprob
    flat = np.where(np.isnan(heads), np.inf, heads)
    l, h = np.unravel_index(int(np.argmin(flat)), flat.shape)
    parts = [t("interventions.sweep_summary_head", lang, mode=mode_name(sweep.mode, lang), done=len(done),
               total=len(sweep.layers), answer=sweep.clean_piece, head=f"L{l}H{h}", delta=_signed(float(heads[l, h])))]
    if sweep.block_delta_logprob is not None:
        blocks = np.where(np.isnan(sweep.block_delta_logprob), np.inf, sweep.block_delta_logprob)
        bl, bk = np.unravel_index(int(np.argmin(blocks)), blocks.shape)
        parts.append(t(f"interventions.sweep_summary_{('attn', 'mlp')[bk]}", lang, layer=bl,
                       delta=_signed(float(blocks[bl, bk]))))
    run = heads[done]
    big = int((np.abs(run) > MOVED).sum())
    parts.append(t("interventions.sweep_summary_moved", lang, big=big, heads=run.size, threshold=MOVED))
    changed = int((sweep.top_after[done] != sweep.clean_token_id).sum())
    parts.append(t("interventions.sweep_summary_changed_none", lang) if not changed else
                 t("interventions.sweep_summary_changed_one" if changed == 1 else
                   "interventions.sweep_summary_changed_many", lang, n=changed))
    if sweep.timed_out:
        parts.append(t("interventions.sweep_summary_stopped", lang))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------
# Activation patching


def position_labels(clean_tokens: list[str], corrupt_tokens: list[str]) -> list[str]:
    """x tick labels: the token, or 'clean/corrupted' in bold where the two prompts differ."""
    out = []
    for i, (a, b) in enumerate(zip(clean_tokens, corrupt_tokens)):
        out.append(f"#{i}<br>{_esc(_short(a, 9))}" if a == b else f"#{i}<br><b>{_esc(_short(a, 9))}</b><br><b>/{_esc(_short(b, 9))}</b>")
    return out


def patch_heatmap(sweep: PatchSweep, metric: str = "effect", selected: tuple[int, int] | None = None,
                  lang: str = DEFAULT) -> go.Figure:
    """Layer x position heatmap of what patching one cell restores: the share of the logit-difference gap
    (metric "effect") or p(clean answer) ("prob"). `selected` = (layer, position)."""
    values = sweep.effect if metric == "effect" else sweep.clean_prob  # [L, n]
    layers, n = values.shape
    clean, corrupt = _esc(sweep.clean_piece), _esc(sweep.corrupt_piece)
    prob_after = t("interventions.patch_prob_after", lang, answer=clean)
    if metric == "effect":
        scale, zmin, zmax, zmid = DIVERGING, -1.0, 1.0, 0.0
        colorbar = dict(title=dict(text=t("interventions.metric_effect", lang), side="right"),
                        tickvals=[-1, -0.5, 0, 0.5, 1], ticktext=["≤−100%", "−50%", "0", "50%", "≥100%"], thickness=14)
        cell = [["" if np.isnan(v) else "0%" if abs(v) < 0.005 else f"{v:.0%}".replace("-", "−") for v in row]
                for row in values]
    else:
        scale, zmin, zmax, zmid = SEQUENTIAL, 0.0, 1.0, None
        colorbar = dict(title=dict(text=prob_after, side="right"), tickformat=".0%", thickness=14)
        cell = [["" if np.isnan(v) else f"{v:.0%}" for v in row] for row in values]
    if n > MAX_CELL_TEXT_COLUMNS:
        cell = [["" for _ in row] for row in cell]
    not_run = t("interventions.hover_not_run", lang)
    hover = [[(t("interventions.hover_cell", lang, layer=l, position=p, clean=_esc(sweep.clean_tokens[p]),
                 corrupt=_esc(sweep.corrupt_tokens[p])) + "<br>"
               + (not_run if np.isnan(sweep.effect[l, p]) else
                  t("interventions.hover_restored", lang, share=f"{sweep.effect[l, p]:.0%}") + "<br>"
                  + t("interventions.hover_prob", lang, answer=clean, p=f"{sweep.clean_prob[l, p]:.3f}")))
              for p in range(n)] for l in range(layers)]
    fig = go.Figure(go.Heatmap(
        z=np.clip(values, zmin, zmax), x=list(range(n)), y=list(range(layers)), zmin=zmin, zmax=zmax, zmid=zmid,
        colorscale=scale, text=cell, texttemplate="%{text}", textfont=dict(size=10), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", xgap=1, ygap=1, colorbar=colorbar, hoverongaps=False,
    ))
    if selected is not None:
        l, p = selected
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=l - 0.5, y1=l + 0.5, line=dict(color=ACCENT, width=3))
    what = t("interventions.patch_what_effect", lang) if metric == "effect" else prob_after
    title = t("interventions.patch_title", lang, site=site_name(sweep.site, lang), what=what)
    subtitle = t("interventions.patch_subtitle", lang, clean=f"<b>{clean}</b>", corrupt=f"<b>{corrupt}</b>")
    fig.update_layout(
        title=dict(text=f"{title}<br><span style='font-size:13px'>{subtitle}</span>", font=dict(size=15), x=0.02,
                   xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickvals=list(range(n)), ticktext=position_labels(sweep.clean_tokens, sweep.corrupt_tokens),
                   side="top", tickangle=0, tickfont=dict(size=12, family="monospace")),
        yaxis=dict(AXIS, tickvals=list(range(layers)), ticktext=[f"L{l}" for l in range(layers)], tickfont=dict(size=11),
                   title=dict(text=t("interventions.layer", lang))),
        margin=dict(l=10, r=10, t=150, b=10), height=int(np.clip(22 * layers + 200, 400, 950)),
    )
    return fig


def patch_summary(sweep: PatchSweep, lang: str = DEFAULT) -> str:
    """One sentence: the two answers, where patching restores the most, and from which layer the last position
    carries the answer."""
    done = sweep.done
    if not done:
        return t("interventions.patch_none", lang)
    effect = np.where(np.isnan(sweep.effect), -np.inf, sweep.effect)
    l, p = np.unravel_index(int(np.argmax(effect)), effect.shape)
    text = t("interventions.patch_summary", lang, clean=sweep.clean_piece, p_clean=_pct(sweep.clean_answer_prob),
             corrupt=sweep.corrupt_piece, p_corrupt=_pct(sweep.corrupt_answer_prob), site=site_name(sweep.site, lang),
             layer=l, position=p, from_token=sweep.clean_tokens[p], to_token=sweep.corrupt_tokens[p],
             share=f"{effect[l, p]:.0%}")
    last = len(sweep.clean_tokens) - 1
    if last in done:
        column = sweep.effect[:, last]
        strong = [i for i in range(len(column)) if column[i] >= 0.5]
        text += (t("interventions.patch_summary_last", lang, position=last, token=sweep.clean_tokens[last],
                   layer=strong[0]) if strong else t("interventions.patch_summary_last_none", lang))
    if sweep.timed_out:
        return text + t("interventions.patch_summary_stopped", lang, done=len(done), total=len(sweep.clean_tokens))
    return text + t("interventions.patch_summary_end", lang)


def patch_cell_html(sweep: PatchSweep, layer: int, position: int, lang: str = DEFAULT) -> str:
    """The patched run of one cell: what was copied where, how much came back, and its top tokens as bars."""
    if np.isnan(sweep.effect[layer, position]):
        return f'<div class="lie-note">{_esc(t("interventions.cell_not_run", lang))}</div>'
    a, b = sweep.clean_tokens[position], sweep.corrupt_tokens[position]
    where = (f"#{position} {_esc(a)}" if a == b else
             t("interventions.cell_where_diff", lang, position=position, corrupt=_esc(b), clean=_esc(a)))
    rows = []
    for token_id, prob in zip(sweep.top_ids[layer, position], sweep.top_probs[layer, position]):
        mark = (" int-clean" if token_id == sweep.clean_token_id else
                " int-corrupt" if token_id == sweep.corrupt_token_id else "")
        piece = _esc(_token(sweep.names, int(token_id), lang))
        rows.append(f'<tr class="int-row{mark}"><td class="int-tok">{piece}</td>'
                    f'<td class="int-bar-cell"><span class="int-bar" style="width:{max(1.0, 100 * float(prob)):.1f}%"></span></td>'
                    f'<td class="int-p">{_pct(float(prob))}</td></tr>')
    head = t("interventions.cell_head", lang, layer=layer, where=where, site=site_name(sweep.site, lang),
             share=f"<b>{sweep.effect[layer, position]:.0%}</b>", answer=_esc(sweep.clean_piece),
             p=f"<b>{sweep.clean_prob[layer, position]:.3f}</b>")
    return (f'<div class="int-cell"><div class="int-cell-head">{head}</div>'
            f'<table class="int-top">{"".join(rows)}</table></div>')


def pair_problem(pair: PromptPair, lang: str = DEFAULT) -> str | None:
    """Why the two prompts cannot be patched, in `lang` (None: they can): inference's `PromptPair.problem`."""
    return message(pair.problem, lang) if pair.problem else None


def pair_html(pair: PromptPair, lang: str = DEFAULT) -> str:
    """Both prompts' tokens, one row each, the positions where they differ outlined; the problem (if any) above."""
    def row(key: str, pieces: list[str]) -> str:
        cells = "".join(f'<span class="int-ptok{" diff" if i in diff else ""}">{_esc(p)}</span>'
                        for i, p in enumerate(pieces))
        return f'<div class="int-prow"><span class="int-plabel">{_esc(t(key, lang, n=len(pieces)))}</span>{cells}</div>'

    diff = set(pair.differing) if len(pair.clean_ids) == len(pair.corrupt_ids) else set()
    problem = pair_problem(pair, lang)
    problem = f'<div class="int-problem">{_esc(problem)}</div>' if problem else ""
    ok = ""
    if not pair.problem:
        key = "interventions.pair_ok_many" if len(diff) > 1 else "interventions.pair_ok_one"
        text = t(key, lang, n=len(pair.clean_ids), positions=", ".join(f"#{i}" for i in sorted(diff)))
        ok = f'<div class="lie-note">{_esc(text)}</div>'
    rows = row("interventions.pair_clean", pair.clean_pieces) + row("interventions.pair_corrupt", pair.corrupt_pieces)
    return f'{problem}<div class="int-pair">{rows}</div>{ok}'
