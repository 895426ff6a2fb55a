"""Interventions views as pure functions: the inference dataclasses (AblationResult, HeadSweep, PatchSweep,
PromptPair) in, a plotly Figure, an HTML string or a one-line text alternative (`*_summary`) out.

Colours (checked for colour-blind readers): the before/after bars are Okabe-Ito blue and orange, the "after"
bars also hatched, so the two differ by more than hue. Effects have a sign (an ablation can help the answer,
a patch can push it further away), so the grids use ColorBrewer's blue-white-red (RdBu) centred on 0: red =
the answer gains, blue = it loses (the head sweep) / red = the clean answer comes back (patching). Numbers are
written in the cells where they fit, so no reading depends on the colour alone. The selected cell carries an
Okabe-Ito vermillion outline.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from inference.interventions import AblationResult, HeadSweep, PatchSweep, PromptPair

FONT = dict(size=14, color="#222")
AXIS = dict(automargin=True, ticks="", showgrid=False, zeroline=False, showline=False)
GRID = dict(AXIS, showgrid=True, gridcolor="#e5e5e5")
DIVERGING = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1.0, "#b2182b"]]
SEQUENTIAL = [[0.0, "#ffffff"], [0.1, "#fee0d2"], [0.4, "#fc9272"], [0.7, "#de2d26"], [1.0, "#67000d"]]
BEFORE, AFTER, ACCENT = "#0072B2", "#E69F00", "#d55e00"
SITE_NAMES = {"resid_pre": "residual stream (entering the layer)", "attn_out": "attention output",
              "mlp_out": "MLP output"}
MODE_NAMES = {"zero": "zero ablation", "mean": "mean ablation"}
# The head sweep's colour: change of log p on a signed log scale (|Δ| from 0.01 to 10 nats), so the one MLP
# that breaks the answer (-12 nats) and a head that nudges it (-0.1) both show.
SWEEP_FLOOR = 0.01
SWEEP_TICKS = [-10, -1, -0.1, 0, 0.1, 1, 10]
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


# ---------------------------------------------------------------------------------------------------
# One ablation: before and after


def ablation_rows(result: AblationResult, k: int = 12) -> list[tuple[int, str, float, float]]:
    """The tokens to show (id, piece, p before, p after): the union of both runs' top tokens, most likely in
    either run first, at most k."""
    rows = [(i, p, float(result.clean_probs[i]), float(result.ablated_probs[i]))
            for i, p in zip(result.top_ids, result.top_pieces)]
    rows.sort(key=lambda r: -max(r[2], r[3]))
    return rows[:k]


def ablation_bars(result: AblationResult, k: int = 12) -> go.Figure:
    """The next-token distribution before and after the ablation: grouped horizontal bars, one token per row."""
    rows = ablation_rows(result, k)
    labels = [f"{_short(p, 14)}" for _, p, _, _ in rows]
    before = [r[2] for r in rows]
    after = [r[3] for r in rows]
    what = result.ablation.describe() if not result.ablation.empty else "no ablation (before = after)"
    fig = go.Figure()
    fig.add_bar(y=labels, x=before, orientation="h", name="before (clean run)", marker=dict(color=BEFORE),
                text=[_pct(p) for p in before], textposition="outside", cliponaxis=False,
                hovertemplate="%{y}: %{x:.4f} before<extra></extra>")
    fig.add_bar(y=labels, x=after, orientation="h", name="after (ablated)",
                marker=dict(color=AFTER, pattern=dict(shape="/", fgcolor="#7a5200", size=6, solidity=0.25)),
                text=[_pct(p) for p in after], textposition="outside", cliponaxis=False,
                hovertemplate="%{y}: %{x:.4f} after<extra></extra>")
    top = max([*before, *after, 0.01])
    fig.update_layout(
        title=dict(text=f"Next token: before and after · {_esc(_short(what, 90))}", font=dict(size=15), x=0.02,
                   xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white", barmode="group", bargap=0.25,
        xaxis=dict(GRID, title=dict(text="probability"), range=[0, min(1.0, top * 1.18)], tickformat=".0%"),
        yaxis=dict(AXIS, autorange="reversed", tickfont=dict(size=13, family="monospace")),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.0),
        margin=dict(l=10, r=40, t=80, b=40), height=int(np.clip(34 * len(rows) + 140, 280, 620)),
    )
    return fig


def ablation_summary(result: AblationResult) -> str:
    """One sentence with the numbers the bars show."""
    a = result.ablation
    answer = result.top_pieces[result.top_ids.index(result.clean_token_id)] if result.clean_token_id in result.top_ids else "?"
    before = float(result.clean_probs[result.clean_token_id])
    after = float(result.ablated_probs[result.clean_token_id])
    if a.empty:
        return f"No ablation: the model's answer is {answer} ({_pct(before)}). Name heads or blocks to switch off."
    new = result.ablated_token_id
    if new == result.clean_token_id:
        top = f"the top token stays {answer}"
    else:
        piece = dict(zip(result.top_ids, result.top_pieces)).get(new, f"token {new}")
        top = f"the top token becomes “{piece}” ({_pct(float(result.ablated_probs[new]))})"
    return (f"With {a.spec} switched off ({MODE_NAMES[a.mode]}), p({answer}) goes from {_pct(before)} to {_pct(after)} "
            f"(Δ log p = {_signed(result.delta_logprob)} nats); KL(before ‖ after) = {result.kl:.3f} nats; {top}.")


def ablation_info_html(result: AblationResult) -> str:
    answer = dict(zip(result.top_ids, result.top_pieces)).get(result.clean_token_id, "?")
    new = dict(zip(result.top_ids, result.top_pieces)).get(result.ablated_token_id, f"token {result.ablated_token_id}")
    cells = [
        ("tokens", f"{len(result.tokens):,}"),
        (f"Δ log p({_esc(answer)})", _signed(result.delta_logprob) + " nats"),
        ("KL divergence", f"{result.kl:.3f} nats"),
        ("top token after", _esc(new)),
        ("ablated pass", f"{result.seconds:.2f} s"),
    ]
    inner = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in cells)
    marked = "" if result.ablation.empty else f'<div class="int-marked">⚠ {_esc(result.ablation.describe())}</div>'
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


def sweep_heatmap(sweep: HeadSweep, metric: str = "delta", selected: tuple[int, int] | None = None) -> go.Figure:
    """Layer x head grid (plus the attn and MLP block columns) of the effect on the answer of switching each one
    off alone; `selected` = (layer, column)."""
    rows = list(sweep.layers)  # only the layers swept are drawn (row i is layer rows[i])
    values = sweep_values(sweep, metric)[rows]  # [rows, C]
    deltas, kls = sweep_values(sweep, "delta")[rows], sweep_values(sweep, "kl")[rows]
    layers, columns = values.shape
    labels = sweep_columns(sweep)
    tops = sweep.top_after if sweep.block_top_after is None else np.concatenate([sweep.top_after, sweep.block_top_after], 1)
    tops = tops[rows]
    if metric == "delta":
        z = _signed_log(values)
        limit = float(_signed_log(np.array([10.0]))[0])
        scale, zmin, zmax, zmid = DIVERGING, -limit, limit, 0.0
        ticks = list(_signed_log(np.array(SWEEP_TICKS, dtype=float)))
        colorbar = dict(title=dict(text=f"Δ log p({_esc(sweep.clean_piece)}), nats", side="right"), tickvals=ticks,
                        ticktext=[_signed(t, 2 if abs(t) < 1 else 0) if t else "0" for t in SWEEP_TICKS], thickness=14)
        cell = [["" if np.isnan(v) else "0" if abs(v) < 0.005 else f"{v:+.2f}".replace("-", "−") for v in row]
                for row in values]
    else:
        z = np.log10(np.clip(values, 1e-3, 10.0))
        scale, zmin, zmax, zmid = SEQUENTIAL, -3.0, 1.0, None
        colorbar = dict(title=dict(text="KL(before ‖ after), nats", side="right"), tickvals=[-3, -2, -1, 0, 1],
                        ticktext=["≤0.001", "0.01", "0.1", "1", "≥10"], thickness=14)
        cell = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in values]
    hover = [[(f"layer {rows[i]}, {labels[c] if labels[c].startswith('H') else labels[c] + ' block'} off<br>"
               + ("not run (the time limit)" if np.isnan(values[i, c]) else
                  f"Δ log p({_esc(sweep.clean_piece)}) = {deltas[i, c]:+.3f} nats<br>"
                  f"KL = {kls[i, c]:.3f} nats<br>top token after: {_esc(sweep.names.get(int(tops[i, c]), '?'))}"))
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
    what = "change of log p" if metric == "delta" else "KL divergence"
    fig.update_layout(
        title=dict(text=f"One component off at a time ({MODE_NAMES[sweep.mode]}): {what} of the answer "
                        f"{_esc(sweep.clean_piece)}<br><span style='font-size:13px'>blue = the answer loses, red = it "
                        "gains · click a cell to see that run's next-token bars</span>", font=dict(size=15), x=0.02,
                   xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickvals=list(range(columns)), ticktext=labels, side="top", tickfont=dict(size=12)),
        yaxis=dict(AXIS, tickvals=rows, ticktext=[f"L{l}" for l in rows], tickfont=dict(size=11),
                   title=dict(text="layer"), range=[rows[0] - 0.5, rows[-1] + 0.5]),
        margin=dict(l=10, r=10, t=100, b=10), height=int(np.clip(24 * layers + 150, 260, 900)),
    )
    return fig


def sweep_summary(sweep: HeadSweep) -> str:
    """One sentence: the components whose removal hurts (and helps) the answer most."""
    done = sweep.done
    if not done:
        return "The sweep stopped at the time limit before its first layer; press the button again."
    heads = sweep.delta_logprob
    flat = np.where(np.isnan(heads), np.inf, heads)
    l, h = np.unravel_index(int(np.argmin(flat)), flat.shape)
    parts = [f"Switching off one component at a time ({MODE_NAMES[sweep.mode]}, {len(done)} of "
             f"{len(sweep.layers)} layers), the answer {sweep.clean_piece} loses most without head L{l}H{h} "
             f"(Δ log p {_signed(float(heads[l, h]))} nats)"]
    if sweep.block_delta_logprob is not None:
        blocks = np.where(np.isnan(sweep.block_delta_logprob), np.inf, sweep.block_delta_logprob)
        bl, bk = np.unravel_index(int(np.argmin(blocks)), blocks.shape)
        parts.append(f" and, of whole blocks, without the {('attention', 'MLP')[bk]} block of layer {bl} "
                     f"({_signed(float(blocks[bl, bk]))} nats)")
    run = heads[done]
    big = int((np.abs(run) > 0.1).sum())
    parts.append(f"; {big} of {run.size} heads move it by more than 0.1 nats")
    changed = int((sweep.top_after[done] != sweep.clean_token_id).sum())
    parts.append(f", {changed} {'changes' if changed == 1 else 'change'} the top token." if changed
                 else ", and no single head changes the top token.")
    if sweep.timed_out:
        parts.append(" The sweep stopped at the time limit; press the button again to finish it.")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------
# Activation patching


def position_labels(clean_tokens: list[str], corrupt_tokens: list[str]) -> list[str]:
    """x tick labels: the token, or 'clean/corrupted' in bold where the two prompts differ."""
    out = []
    for i, (a, b) in enumerate(zip(clean_tokens, corrupt_tokens)):
        out.append(f"#{i}<br>{_esc(_short(a, 9))}" if a == b else f"#{i}<br><b>{_esc(_short(a, 9))}</b><br><b>/{_esc(_short(b, 9))}</b>")
    return out


def patch_heatmap(sweep: PatchSweep, metric: str = "effect", selected: tuple[int, int] | None = None) -> go.Figure:
    """Layer x position heatmap of what patching one cell restores: the share of the logit-difference gap
    (metric "effect") or p(clean answer) ("prob"). `selected` = (layer, position)."""
    values = sweep.effect if metric == "effect" else sweep.clean_prob  # [L, n]
    layers, n = values.shape
    clean, corrupt = _esc(sweep.clean_piece), _esc(sweep.corrupt_piece)
    if metric == "effect":
        scale, zmin, zmax, zmid = DIVERGING, -1.0, 1.0, 0.0
        colorbar = dict(title=dict(text="share of the gap restored", side="right"), tickvals=[-1, -0.5, 0, 0.5, 1],
                        ticktext=["≤−100%", "−50%", "0", "50%", "≥100%"], thickness=14)
        cell = [["" if np.isnan(v) else "0%" if abs(v) < 0.005 else f"{v:.0%}".replace("-", "−") for v in row]
                for row in values]
    else:
        scale, zmin, zmax, zmid = SEQUENTIAL, 0.0, 1.0, None
        colorbar = dict(title=dict(text=f"p({clean}) after the patch", side="right"), tickformat=".0%", thickness=14)
        cell = [["" if np.isnan(v) else f"{v:.0%}" for v in row] for row in values]
    if n > MAX_CELL_TEXT_COLUMNS:
        cell = [["" for _ in row] for row in cell]
    hover = [[(f"layer {l}, position #{p} ({_esc(sweep.clean_tokens[p])} → {_esc(sweep.corrupt_tokens[p])})<br>"
               + ("not run" if np.isnan(sweep.effect[l, p]) else
                  f"restored {sweep.effect[l, p]:.0%} of the gap<br>p({clean}) = {sweep.clean_prob[l, p]:.3f}"))
              for p in range(n)] for l in range(layers)]
    fig = go.Figure(go.Heatmap(
        z=np.clip(values, zmin, zmax), x=list(range(n)), y=list(range(layers)), zmin=zmin, zmax=zmax, zmid=zmid,
        colorscale=scale, text=cell, texttemplate="%{text}", textfont=dict(size=10), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", xgap=1, ygap=1, colorbar=colorbar, hoverongaps=False,
    ))
    if selected is not None:
        l, p = selected
        fig.add_shape(type="rect", x0=p - 0.5, x1=p + 0.5, y0=l - 0.5, y1=l + 0.5, line=dict(color=ACCENT, width=3))
    what = "share of the clean answer's lead restored" if metric == "effect" else f"p({clean}) after the patch"
    fig.update_layout(
        title=dict(text=f"Patching the clean {SITE_NAMES[sweep.site]} into the corrupted run: {what}<br>"
                        f"<span style='font-size:13px'>clean answer <b>{clean}</b>, corrupted answer <b>{corrupt}</b>"
                        " · one run per cell · click a cell for its top tokens</span>", font=dict(size=15), x=0.02,
                   xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickvals=list(range(n)), ticktext=position_labels(sweep.clean_tokens, sweep.corrupt_tokens),
                   side="top", tickangle=0, tickfont=dict(size=12, family="monospace")),
        yaxis=dict(AXIS, tickvals=list(range(layers)), ticktext=[f"L{l}" for l in range(layers)], tickfont=dict(size=11),
                   title=dict(text="layer")),
        margin=dict(l=10, r=10, t=150, b=10), height=int(np.clip(22 * layers + 200, 400, 950)),
    )
    return fig


def patch_summary(sweep: PatchSweep) -> str:
    """One sentence: the two answers, where patching restores the most, and from which layer the last position
    carries the answer."""
    done = sweep.done
    if not done:
        return "The patching sweep stopped at the time limit before its first position; press the button again."
    effect = np.where(np.isnan(sweep.effect), -np.inf, sweep.effect)
    l, p = np.unravel_index(int(np.argmax(effect)), effect.shape)
    text = (f"Clean answer {sweep.clean_piece} (p {_pct(sweep.clean_answer_prob)}), corrupted answer "
            f"{sweep.corrupt_piece} (there p({sweep.clean_piece}) = {_pct(sweep.corrupt_answer_prob)}). Patching the "
            f"{SITE_NAMES[sweep.site]} restores the most at layer {l}, position #{p} "
            f"{sweep.clean_tokens[p]}→{sweep.corrupt_tokens[p]} ({effect[l, p]:.0%} of the gap)")
    last = len(sweep.clean_tokens) - 1
    if last in done:
        column = sweep.effect[:, last]
        strong = [i for i in range(len(column)) if column[i] >= 0.5]
        text += (f"; at the last position #{last} {sweep.clean_tokens[last]} half or more comes back from layer "
                 f"{strong[0]} on" if strong else f"; at the last position no layer restores half")
    if sweep.timed_out:
        text += f". Stopped at the time limit after {len(done)} of {len(sweep.clean_tokens)} positions; press again to finish"
    return text + "."


def patch_cell_html(sweep: PatchSweep, layer: int, position: int) -> str:
    """The patched run of one cell: what was copied where, how much came back, and its top tokens as bars."""
    if np.isnan(sweep.effect[layer, position]):
        return '<div class="lie-note">This cell was not run (the sweep stopped at the time limit).</div>'
    a, b = sweep.clean_tokens[position], sweep.corrupt_tokens[position]
    where = f"#{position} {_esc(a)}" if a == b else f"#{position}, where the corrupted prompt has {_esc(b)} and the clean one {_esc(a)}"
    rows = []
    for token_id, prob in zip(sweep.top_ids[layer, position], sweep.top_probs[layer, position]):
        mark = (" int-clean" if token_id == sweep.clean_token_id else
                " int-corrupt" if token_id == sweep.corrupt_token_id else "")
        rows.append(f'<tr class="int-row{mark}"><td class="int-tok">{_esc(sweep.names.get(int(token_id), f"token {int(token_id)}"))}</td>'
                    f'<td class="int-bar-cell"><span class="int-bar" style="width:{max(1.0, 100 * float(prob)):.1f}%"></span></td>'
                    f'<td class="int-p">{_pct(float(prob))}</td></tr>')
    return (f'<div class="int-cell"><div class="int-cell-head">Layer {layer}, position {where}: the clean '
            f'{SITE_NAMES[sweep.site]} copied in restores <b>{sweep.effect[layer, position]:.0%}</b> of the gap; '
            f'p({_esc(sweep.clean_piece)}) = <b>{sweep.clean_prob[layer, position]:.3f}</b>. Top tokens of this run:</div>'
            f'<table class="int-top">{"".join(rows)}</table></div>')


def pair_html(pair: PromptPair) -> str:
    """Both prompts' tokens, one row each, the positions where they differ outlined; the problem (if any) above."""
    def row(label: str, pieces: list[str]) -> str:
        cells = "".join(f'<span class="int-ptok{" diff" if i in diff else ""}">{_esc(p)}</span>'
                        for i, p in enumerate(pieces))
        return f'<div class="int-prow"><span class="int-plabel">{label} ({len(pieces)})</span>{cells}</div>'

    diff = set(pair.differing) if len(pair.clean_ids) == len(pair.corrupt_ids) else set()
    problem = f'<div class="int-problem">{_esc(pair.problem)}</div>' if pair.problem else ""
    ok = ("" if pair.problem else
          f'<div class="lie-note">Both prompts are {len(pair.clean_ids)} tokens; they differ at position'
          f'{"s" if len(diff) > 1 else ""} {", ".join(f"#{i}" for i in sorted(diff))}.</div>')
    return f'{problem}<div class="int-pair">{row("clean", pair.clean_pieces)}{row("corrupted", pair.corrupt_pieces)}</div>{ok}'
