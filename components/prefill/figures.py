"""Prefill & decode views: pure functions of the dataclasses `inference.timing`, `.sweep` and `.batch` return.

    headline_html      TTFT, TPOT (mean, p50, p90), tokens/s, total, memory, and the check TTFT + TPOT x (N-1) = total
    timeline_figure    the passes on a time axis, the wall time of each pass, the tokens each pass processed
    kv_html, kv_figure the KV-cache formula checked against the tensors, its growth per step, per layer, GQA vs MHA
    compare_html/_figure  cache on vs off: identical tokens, speedup, per-step and cumulative time
    sweep_figure       context-length sweep: prefill time with fits, per-token split, decode time, memory
    sweep_html         the sweep's numbers, and `sweep_verdict`: its findings (what they do and do not show) in words
    batch_html/_figure throughput of a batch vs one prompt at a time
    *_summary          each figure in one sentence with its numbers (the text alternative under it)
    *_table            the rows of each trace's CSV download (header, rows)

Colours are Okabe-Ito (colour-blind safe); where two of them sit side by side with a similar lightness
(prefill orange and recompute pink, the attention-score part of a prefill next to the projections), a hatch
pattern tells them apart in greyscale too.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..units import ms, nbytes

if TYPE_CHECKING:
    from inference.batch import BatchComparison
    from inference.sweep import Sweep
    from inference.timing import CacheComparison, StepTiming, Timeline

# Okabe-Ito colours (colour-blind safe), readable on a projector.
PREFILL = "#E69F00"
DECODE = "#0072B2"
RECOMPUTE = "#CC79A7"
OVERHEAD = "#BBBBBB"  # sampling and bookkeeping of a step
FORMULA = "#333333"
MHA = "#999999"
SPLIT = {  # parts of a prefill pass
    "attention_core_s": ("attention scores: QKᵀ, softmax, ×V (∝ n²)", "#D55E00"),
    "projections_s": ("Q/K/V/O projections (∝ n)", "#009E73"),
    "mlp_s": ("MLP (∝ n)", "#56B4E9"),
    "other_s": ("embeddings, norms, LM head, mask", "#BBBBBB"),
}
PHASE_COLOUR = {"prefill": PREFILL, "decode": DECODE, "recompute": RECOMPUTE}
# Recompute passes are hatched: the pink and the prefill orange look alike in greyscale.
PHASE_PATTERN = {"prefill": "", "decode": "", "recompute": "/"}
SPLIT_PATTERN = {"attention_core_s": "/"}  # the n² part of a prefill stands out without colour
HATCH = dict(fgcolor="#ffffff", solidity=0.25)  # light stripes: the bar's colour and any text on it stay readable
FONT = dict(size=13)
MAX_TICK_LABELS = 32  # beyond this many steps the x axis shows step numbers, not tokens


# ---------------------------------------------------------------------------------------------------
# Formatting


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def _esc(text) -> str:
    return html.escape(str(text))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _step_labels(steps: Sequence[StepTiming]) -> list[str]:
    """x labels: the token each pass produced, numbered (a category axis merges equal labels)."""
    return [f"{s.index}: {s.piece}" for s in steps]


def _layout(fig: go.Figure, height: int, title: str | None = None, legend_rows: int = 1) -> go.Figure:
    """Common look; the legend sits at the very bottom of the figure, below every axis title."""
    fig.update_layout(height=height, font=FONT, margin=dict(l=60, r=20, t=80 if title else 40, b=60 + 24 * legend_rows),
                      plot_bgcolor="white",
                      legend=dict(orientation="h", yref="container", y=0.005, yanchor="bottom", x=0),
                      title=dict(text=title, x=0, font=dict(size=15)) if title else None, bargap=0.15)
    fig.update_xaxes(showline=True, linecolor="#888", gridcolor="#eee")
    fig.update_yaxes(showline=True, linecolor="#888", gridcolor="#eee", zeroline=False)
    return fig


# ---------------------------------------------------------------------------------------------------
# Headline numbers


def _card(label: str, value: str, detail: str = "", elem: str = "") -> str:
    return (f'<div class="pfd-card" {elem}><div class="pfd-card-k">{label}</div>'
            f'<div class="pfd-card-v">{value}</div><div class="pfd-card-d">{detail}</div></div>')


def headline_html(tl: Timeline) -> str:
    """The four numbers users feel, and how they add up on this run."""
    m, mem = tl.metrics, tl.memory
    n = m.new_tokens
    mem_label = "peak GPU memory (VRAM)" if mem["kind"] == "cuda_allocated" else "peak process memory (RSS)"
    mem_detail = (f"weights {nbytes(tl.weights_bytes)} · KV cache {nbytes(tl.kv_bytes)} · "
                  f"{_esc(mem.get('method', ''))}")
    tpot_detail = (f"p50 {ms(m.tpot_p50_s)} · p90 {ms(m.tpot_p90_s)}" if m.tpot_mean_s is not None
                   else "one token only: no decode step")
    cards = "".join([
        _card("TTFT · time to first token", ms(m.ttft_s),
              f"prefill {ms(m.prefill_s)} ({m.prompt_tokens} tokens) + first draw {ms(m.first_draw_s)}",
              'id="pfd-ttft"'),
        _card("TPOT · time per output token", ms(m.tpot_mean_s) + (" mean" if m.tpot_mean_s else ""),
              tpot_detail, 'id="pfd-tpot"'),
        _card("throughput", f"{m.tokens_per_s:.1f} tokens/s",
              f"{n} tokens / total" + (f" · decode alone {m.decode_tokens_per_s:.1f} tokens/s"
                                       if m.decode_tokens_per_s else "")),
        _card("total", ms(m.total_s), f"{n} new tokens · {'KV cache on' if tl.use_cache else 'KV cache OFF'}"),
        _card(mem_label, nbytes(mem["peak_bytes"]), mem_detail),
    ])
    check = ""
    if m.tpot_mean_s is not None:
        predicted = m.ttft_s + m.tpot_mean_s * (n - 1)
        check = (f'<div class="pfd-check" id="pfd-check">Check: TTFT {ms(m.ttft_s)} + {n - 1} × TPOT '
                 f'{ms(m.tpot_mean_s)} = <b>{ms(predicted)}</b>; measured total <b>{ms(m.total_s)}</b>. '
                 f"TTFT = prefill {ms(m.prefill_s)} + first draw {ms(m.first_draw_s)} + "
                 f"{ms(max(0.0, m.ttft_s - m.prefill_s - m.first_draw_s))} of bookkeeping.</div>")
    text = _esc(tl.text) or "<i>(no visible text)</i>"
    return (f'<div class="pfd-cards">{cards}</div>{check}'
            f'<div class="pfd-text"><b>Generated</b> ({n} tokens, stopped: {_esc(tl.stop_reason)}): {text}</div>')


# ---------------------------------------------------------------------------------------------------
# Timeline


def timeline_figure(tl: Timeline) -> go.Figure:
    """Row 1: each pass on the clock (prefill, then one decode pass per token). Row 2: wall time per pass,
    the model's forward pass plus the sampling. Row 3: tokens the pass processed."""
    steps = tl.steps
    labels = _step_labels(steps)
    m = tl.metrics
    few = len(steps) <= MAX_TICK_LABELS
    fig = make_subplots(rows=3, cols=1, row_heights=[0.18, 0.5, 0.32], vertical_spacing=0.09, subplot_titles=[
        f"Every forward pass on the clock (ms since the start) · first token at {ms(m.ttft_s)} (dotted line)",
        "Wall time of each pass (ms)", "Tokens processed by each pass"])
    hover = [f"{s.phase} pass {s.index}<br>token {_esc(s.piece)}<br>{s.tokens_in_pass} tokens in, "
             f"cache {s.cache_len} after<br>forward {ms(s.forward_s)} + sampling {ms(s.sampling_s)}"
             for s in steps]
    # Row 1 is a single trace: bars of one trace never stack, so each keeps its own base (start time).
    fig.add_bar(y=["passes"] * len(steps), x=[s.step_s * 1e3 for s in steps], base=[s.start_s * 1e3 for s in steps],
                orientation="h", marker_color=[PHASE_COLOUR[s.phase] for s in steps],
                marker_pattern=dict(shape=[PHASE_PATTERN[s.phase] for s in steps], **HATCH),
                marker_line=dict(color="white", width=1), text=[s.piece for s in steps] if few else None,
                textposition="inside",
                insidetextanchor="middle", textangle=0, hovertext=hover, hoverinfo="text", showlegend=False,
                row=1, col=1)
    for phase in ("prefill", "decode", "recompute"):
        idx = [i for i, s in enumerate(steps) if s.phase == phase]
        if not idx:
            continue
        colour = PHASE_COLOUR[phase]
        fig.add_bar(x=[labels[i] for i in idx], y=[steps[i].forward_s * 1e3 for i in idx], marker_color=colour,
                    marker_pattern=dict(shape=PHASE_PATTERN[phase], **HATCH), name=f"{phase} pass",
                    hovertext=[hover[i] for i in idx], hoverinfo="text", legendgroup=phase, row=2, col=1)
        fig.add_bar(x=[labels[i] for i in idx], y=[steps[i].tokens_in_pass for i in idx], marker_color=colour,
                    marker_pattern=dict(shape=PHASE_PATTERN[phase], **HATCH),
                    text=[steps[i].tokens_in_pass for i in idx] if few else None, textposition="outside",
                    hovertext=[hover[i] for i in idx], hoverinfo="text", legendgroup=phase, showlegend=False,
                    cliponaxis=False, row=3, col=1)
    fig.add_bar(x=labels, y=[(s.step_s - s.forward_s) * 1e3 for s in steps], marker_color=OVERHEAD,
                name="sampling + bookkeeping", hovertext=hover, hoverinfo="text", row=2, col=1)
    fig.update_layout(barmode="stack", uniformtext=dict(minsize=10, mode="hide"))
    ttft = m.ttft_s * 1e3
    fig.add_vline(x=ttft, line=dict(color="#222", dash="dot", width=2), row=1, col=1)
    # A long prompt's prefill can dwarf the decode passes: clip the axis and label the prefill bar instead.
    later = sorted(s.step_s for s in steps[1:])
    if later and steps[0].step_s > 6 * later[int(0.9 * (len(later) - 1))]:
        top = 3 * later[int(0.9 * (len(later) - 1))] * 1e3
        fig.update_yaxes(range=[0, top], row=2, col=1)
        fig.add_annotation(x=labels[0], y=top, text=f"{steps[0].phase} {ms(steps[0].step_s)} ↑ (off scale)",
                           showarrow=False, yanchor="top", xanchor="left", font=dict(size=12), row=2, col=1)
    most = max(s.tokens_in_pass for s in steps)
    least = min(s.tokens_in_pass for s in steps)
    fig.update_yaxes(showticklabels=False, row=1, col=1)
    if most > 20 * least:  # prefill vs 1-token decode passes: a log axis keeps the 1s visible
        fig.update_yaxes(type="log", dtick=1, range=[-0.4, math.log10(most) + 0.5], row=3, col=1)
        fig.layout.annotations[2].text = "Tokens processed by each pass (log scale)"
    else:
        fig.update_yaxes(range=[0, most * 1.25], row=3, col=1)
    fig.update_xaxes(matches="x3", showticklabels=False, row=2, col=1)
    fig.update_xaxes(showticklabels=few, tickangle=-45, row=3, col=1,
                     title_text="each pass, labelled with the token it produced" if few else "pass (hover for the token)")
    title = (f"{len(steps)} passes · prefill {ms(m.prefill_s)} · then "
             + (f"{ms(m.tpot_mean_s)} per token" if m.tpot_mean_s else "nothing more")
             + ("" if tl.use_cache else " · KV cache OFF: every pass re-runs the whole sequence"))
    return _layout(fig, 760, title)


# ---------------------------------------------------------------------------------------------------
# KV cache


def kv_html(tl: Timeline) -> str:
    """The formula with this model's numbers, checked against the cache tensors, and the GQA saving."""
    kv = tl.kv
    if not tl.use_cache:
        return ('<div class="pfd-kv" id="pfd-kv">KV cache <b>off</b>: nothing is kept between passes, so every step '
                "runs the whole sequence through the model again (see the tokens per pass above).</div>")
    per_token = kv.bytes_per_token
    windows = [w for w in kv.layer_windows if w]
    formula = (f"2 (K and V) × {kv.num_layers} layers × {_plural(kv.num_kv_heads, 'KV head')} × {kv.head_dim} head dim × "
               f"{kv.bytes_per_element} bytes ({kv.dtype}) = <b>{per_token:,} bytes per token</b>")
    sliding = ""
    if windows:
        sliding = (f"<br>{len(windows)} of {kv.num_layers} layers use sliding-window attention and keep only their "
                   f"last {windows[0] - 1:,} tokens, so beyond that only the other layers grow.")
    ok = tl.kv_bytes == tl.kv_formula_bytes and tl.kv_matches()
    verdict = ("✓ equal at every step" if ok else "✗ differs from the formula")
    mha, gqa = kv.mha_bytes_per_token, kv.gqa_factor
    if kv.num_kv_heads < kv.num_heads:
        gqa_text = (f"<b>Grouped-query attention</b>: {kv.num_heads} query heads share "
                    f"{_plural(kv.num_kv_heads, 'key/value head')}. Full multi-head attention would cache {mha:,} bytes per token ({nbytes(tl.mha_bytes)} "
                    f"here): GQA keeps <b>{gqa:g}× less</b>.")
    else:
        gqa_text = "Multi-head attention: one key/value head per query head (no GQA saving)."
    return (f'<div class="pfd-kv" id="pfd-kv"><div>{formula}{sliding}</div>'
            f"<div>After the last pass the cache holds <b>{tl.kv_tokens:,} tokens</b>: measured from the DynamicCache "
            f"tensors <b>{tl.kv_bytes:,} bytes</b> ({nbytes(tl.kv_bytes)}); the formula gives "
            f"{tl.kv_formula_bytes:,} bytes: <b id=\"pfd-kv-verdict\">{verdict}</b>.</div><div>{gqa_text}</div></div>")


def kv_figure(tl: Timeline) -> go.Figure:
    """Left: bytes in the cache after each pass, measured, with the formula and the MHA equivalent.
    Right: per layer after the last pass."""
    kv = tl.kv
    steps = tl.steps
    if not tl.use_cache:
        fig = go.Figure()
        fig.add_annotation(text="KV cache off: nothing is kept between passes (0 bytes)", x=0.5, y=0.5,
                           xref="paper", yref="paper", showarrow=False, font=dict(size=16))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return _layout(fig, 160)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                        subplot_titles=["Cache size after each pass (MB)", "Per layer after the last pass (KB)"])
    tokens = [s.cache_len for s in steps]
    fig.add_scatter(x=tokens, y=[s.cache_bytes / 1e6 for s in steps], mode="markers", name="measured (tensors)",
                    marker=dict(color=DECODE, size=8), row=1, col=1,
                    hovertemplate="%{x} tokens: %{y:.3f} MB<extra>measured</extra>")
    if tokens:
        formula = [kv.bytes_for(t) for t in tokens]
        fig.add_scatter(x=tokens, y=[b / 1e6 for b in formula], mode="lines", line=dict(color=FORMULA, dash="dash"),
                        name=f"formula: {kv.bytes_per_token:,} B × tokens" + (" (windowed layers capped)" if kv.windowed
                                                                             else ""), row=1, col=1)
        if kv.num_kv_heads < kv.num_heads:
            fig.add_scatter(x=tokens, y=[b * kv.gqa_factor / 1e6 for b in formula], mode="lines",
                            name=f"full MHA ({kv.num_heads} KV heads)", line=dict(color=MHA, dash="dot"),
                            row=1, col=1)
    layers = list(range(len(tl.layer_bytes)))
    fig.add_bar(x=layers, y=[b / 1e3 for b in tl.layer_bytes], name="per layer, measured",
                marker_color=[DECODE if not w else PREFILL for w in kv.layer_windows[: len(layers)]],
                marker_pattern_shape=["" if not w else "/" for w in kv.layer_windows[: len(layers)]], row=1, col=2,
                hovertemplate="layer %{x}: %{y:,.1f} KB<extra></extra>", showlegend=False)
    fig.add_scatter(x=layers, y=[b / 1e3 for b in tl.layer_formula_bytes], mode="markers", name="per layer, formula",
                    marker=dict(symbol="line-ew", size=14, line=dict(width=2, color=FORMULA)), row=1, col=2,
                    showlegend=False, hovertemplate="layer %{x}: formula %{y:,.1f} KB<extra></extra>")
    fig.update_xaxes(title_text="tokens in the cache", tickformat=",d", row=1, col=1)
    if tokens and max(tokens) - min(tokens) < 10:
        fig.update_xaxes(dtick=1, row=1, col=1)  # whole tokens only
    fig.update_xaxes(title_text="layer" + (" (orange, hatched: sliding window)" if kv.windowed else ""), row=1, col=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    return _layout(fig, 420, f"KV cache: {kv.bytes_per_token:,} bytes per token ({kv.dtype}), "
                              f"{tl.kv_tokens:,} tokens held after the last pass")


# ---------------------------------------------------------------------------------------------------
# Cache on vs off


def compare_html(cmp: CacheComparison) -> str:
    on, off = cmp.on, cmp.off
    n = len(on.steps)
    same = ("✓ identical tokens" if cmp.identical
            else f"✗ the runs part at step {cmp.first_difference} (float rounding tipped a near tie)")
    last_on, last_off = on.steps[-1], off.steps[-1]
    return (f'<div class="pfd-kv" id="pfd-compare-summary"><b>{same}</b> ({n} tokens, seed {on.seed}). '
            f"With the cache: total {ms(on.metrics.total_s)}; without: {ms(off.metrics.total_s)}: "
            f"<b>{cmp.speedup_total:.1f}× faster with the cache</b>. The last pass processed "
            f"{last_on.tokens_in_pass} token(s) with the cache and {last_off.tokens_in_pass} without "
            f"({ms(last_on.forward_s)} vs {ms(last_off.forward_s)}, {cmp.speedup_last_step:.1f}×). "
            "Without the cache each step's cost grows with the sequence; with it, a decode step only adds one "
            "token's keys and values and reads the rest.</div>")


def compare_figure(cmp: CacheComparison) -> go.Figure:
    on, off = cmp.on.steps, cmp.off.steps
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["Forward pass of each step (ms)", "Time since the run started (s)"])
    for steps, name, colour, dash in ((on, "KV cache on", DECODE, "solid"), (off, "KV cache off", RECOMPUTE, "dash")):
        x = [s.index for s in steps]
        fig.add_scatter(x=x, y=[s.forward_s * 1e3 for s in steps], mode="lines+markers", name=name,
                        line=dict(color=colour, dash=dash), row=1, col=1, legendgroup=name,
                        customdata=[s.tokens_in_pass for s in steps],
                        hovertemplate="step %{x}: %{y:.1f} ms, %{customdata} tokens in<extra>" + name + "</extra>")
        fig.add_scatter(x=x, y=[(s.start_s + s.step_s) for s in steps], mode="lines", name=name,
                        line=dict(color=colour, width=3, dash=dash), row=1, col=2, legendgroup=name, showlegend=False,
                        hovertemplate="after step %{x}: %{y:.2f} s<extra>" + name + "</extra>")
    fig.update_xaxes(title_text="step (0 = prefill)")
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, 400, f"The same {len(on)} tokens with the KV cache on and off")


# ---------------------------------------------------------------------------------------------------
# Context-length sweep


def sweep_figure(sw: Sweep) -> go.Figure:
    points = sw.points
    ns = [p.prompt_tokens for p in points]
    cats = [str(n) for n in ns]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.2, horizontal_spacing=0.1, subplot_titles=[
        "Prefill time (s) vs prompt length", "Prefill time per prompt token (ms), split by where it goes",
        "Decode time per new token (ms) vs tokens in the cache", "Memory (MB)"])
    fig.add_scatter(x=ns, y=[p.prefill_s for p in points], mode="markers", name="prefill, measured",
                    marker=dict(color=PREFILL, size=10), row=1, col=1,
                    hovertemplate="%{x} tokens: %{y:.3f} s<extra></extra>")
    if sw.linear and sw.quadratic:
        grid = [ns[0] + (ns[-1] - ns[0]) * i / 60 for i in range(61)]
        for fit, name, dash in ((sw.linear, "linear fit", "dash"), (sw.quadratic, "quadratic fit", "dot")):
            fig.add_scatter(x=grid, y=[fit.at(x) for x in grid], mode="lines", name=f"{name} (R² {fit.r2:.3f})",
                            line=dict(color=FORMULA if fit.degree == 1 else "#D55E00", dash=dash), row=1, col=1)
    for key, (label, colour) in SPLIT.items():
        fig.add_bar(x=cats, y=[p.split[key] / p.prompt_tokens * 1e3 for p in points], name=label,
                    marker_color=colour, marker_pattern_shape=SPLIT_PATTERN.get(key, ""), row=1, col=2,
                    legendgroup="split",
                    hovertemplate="%{x} tokens: %{y:.3f} ms per token<extra>" + label + "</extra>")
    fig.add_scatter(x=ns, y=[p.decode_s * 1e3 for p in points], mode="lines+markers", name="decode pass, median",
                    line=dict(color=DECODE), row=2, col=1, hovertemplate="%{x} tokens cached: %{y:.1f} ms<extra></extra>")
    fig.add_bar(x=cats, y=[p.kv_bytes / 1e6 for p in points], name="KV cache after prefill (measured)",
                marker_color=DECODE, row=2, col=2, hovertemplate="%{x} tokens: %{y:.2f} MB<extra>KV cache</extra>")
    fig.add_scatter(x=cats, y=[p.memory["increase_bytes"] / 1e6 for p in points], mode="lines+markers",
                    name="peak memory increase during the run", line=dict(color=PREFILL, width=3), row=2, col=2,
                    hovertemplate="%{x} tokens: +%{y:.1f} MB<extra>peak increase</extra>")
    fig.add_scatter(x=cats, y=[p.working_estimate_bytes / 1e6 for p in points], mode="markers",
                    name="estimate: 3 score matrices [heads, n, n] + KV + MLP activations",
                    marker=dict(symbol="x", size=10, color=FORMULA), row=2, col=2,
                    hovertemplate="%{x} tokens: %{y:.1f} MB<extra>estimate</extra>")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="prompt tokens", row=1, col=1)
    fig.update_xaxes(title_text="prompt tokens", type="category", row=1, col=2)
    fig.update_xaxes(title_text="tokens in the cache", row=2, col=1)
    fig.update_xaxes(title_text="prompt tokens", type="category", row=2, col=2)
    fig.update_yaxes(rangemode="tozero")
    title = (f"Context-length sweep: {ns[0]:,} to {ns[-1]:,} prompt tokens on {_esc(sw.device)}" if ns else
             "Context-length sweep: the time limit stopped it before the first length (run it again)")
    return _layout(fig, 840, title, legend_rows=4)


PER_TOKEN_TREND = {"rose": "rose", "fell": "fell", "flat": "stayed about the same"}
DECODE_TREND = {
    "noisy": ("the decode times jump around by more than 2× without a trend: other programs were using the CPU, "
              "so no conclusion about decode is possible from this run (tick “measure again”)."),
    "grows": ("each new token attends over every cached one, so decode slows as the context grows, though far "
              "less than prefill."),
    "flat": ("no clear growth at these lengths: a decode pass is dominated by reading the weights, and attending "
             "over the cache is a small part of it (it grows with the context)."),
}


def sweep_verdict(sw: Sweep) -> list[str]:
    """The sweep's findings (`inference.sweep.sweep_findings`) in sentences that only claim what they hold."""
    if not sw.points:
        return ["Nothing was measured yet: the request's time limit came before the first length."]
    f = sw.findings
    n0, n1 = f.first_tokens, f.last_tokens
    core0, core1 = f.attention_share
    out = []

    # 1. The fits, weighed against the split measured inside the passes.
    if f.linear_r2 is not None:
        text = (f"A straight line through the prefill times fits with R² = {f.linear_r2:.3f}; adding an n² term "
                f"gives R² = {f.quadratic_r2:.3f} (an extra term always fits at least as well). ")
        if f.fit_n2_share is not None:
            text += f"In that fit the n² term is {100 * f.fit_n2_share:.0f}% of the time at {n1:,} tokens"
            if f.fit_overstates:
                text += (f", but the attention scores measured inside those passes are only {100 * core1:.0f}%: most of "
                         "the curvature is noise or other effects (CPU caches, other programs), not attention. Trust "
                         "the measured split more than the fit.")
            else:
                text += f"; the attention scores measured inside those passes are {100 * core1:.0f}%, consistent with it."
        else:
            text += ("The fitted n² coefficient is not positive: the total times alone show no quadratic growth here "
                     "(noise can hide it; the split chart measures the n² part directly).")
        out.append(text)
    else:
        out.append(f"{f.points} lengths measured: fitting linear against quadratic growth needs at least 4 "
                   "(a quadratic passes through any 3 points), so no fit is shown.")

    # 2. The split measured inside the passes, next to the FLOP count.
    text = (f"Measured inside the passes (forward hooks), the attention scores (QKᵀ, softmax, ×V) took {100 * core0:.0f}% "
            f"of prefill at {n0:,} tokens and {100 * core1:.0f}% at {n1:,}. By FLOP count (from the config) their share "
            f"goes from {percent(f.flops_share[0])} to {percent(f.flops_share[1])}: QKᵀ and ×V cost 4 × layers × "
            "heads × head dim × n² FLOPs, the projections and MLP 2 × parameters × n, so the scores' share grows about "
            "in proportion to n. ")
    if f.attention_trend == "grows":
        text += "The measured share grows too: that is the quadratic part of prefill, visible. "
    elif f.attention_trend == "unclear":
        text += "The measured share does not grow clearly at these lengths. "
    text += ("At short prompts the measured share is mostly fixed per-operation cost (RoPE, reshapes, a softmax over "
             "tiny matrices), not FLOPs; softmax and masking also move memory that FLOPs do not count.")
    out.append(text)

    # 3. Per prompt token.
    per0, per1 = f.per_token_s
    out.append(f"Prefill time per prompt token {PER_TOKEN_TREND[f.per_token_trend]}: {ms(per0)} at {n0:,} tokens, "
               f"{ms(per1)} at {n1:,} (×{per1 / per0:.2f}). "
               "Fixed per-pass costs (dozens of small operations per layer) make short prompts expensive per token; "
               "the n² attention work makes long prompts more expensive per token; the split chart shows which wins "
               "where.")

    # 4. KV cache and working memory.
    capped = (f" in the full-attention layers ({f.sliding_layers} sliding-window layers stop at {f.window_keeps:,} "
              "tokens)") if f.sliding_layers else ""
    out.append(f"The KV cache grows linearly{capped}: {nbytes(f.kv_bytes)} at {n1:,} tokens "
               + ("(equal to the formula at every length)." if f.kv_matches
                  else "(it differs from the formula: see the table)."))
    if f.memory_growth is not None:
        (before, _), (grew_before, grew_last) = f.memory_tokens, f.memory_increase
        text = (f"Peak memory rose by {nbytes(grew_before)} during the run at {before:,} tokens and by "
                f"{nbytes(grew_last)} at {n1:,} (estimate {nbytes(f.working_estimate_bytes)}): it grows like "
                f"n^{f.memory_growth:.1f} there. ")
        if f.memory_superlinear:
            text += ("Faster than linear: eager attention writes the full n × n score matrix of every head, so this "
                     "working memory grows with n², while the KV cache grows with n. Fused kernels (FlashAttention, "
                     "SDPA) compute the same result in tiles and never hold the whole matrix.")
        else:
            text += ("No faster than n: activations that grow with n dominate, and eager attention's n × n score "
                     "matrices (which grow with n²) are still small at these lengths.")
        out.append(text)

    # 5. Decode.
    d0, d1 = f.decode_s
    out.append(f"A decode pass took {ms(d0)} with {n0:,} cached tokens and {ms(d1)} with {n1:,}: "
               f"{DECODE_TREND[f.decode_trend]}")
    return out


def sweep_html(sw: Sweep) -> str:
    rows = []
    for p in sw.points:
        mem = p.memory
        rows.append(
            f"<tr><td>{p.prompt_tokens:,}</td><td>{ms(p.prefill_s)}</td>"
            f"<td>{ms(p.prefill_s / p.prompt_tokens)}</td>"
            f"<td>{percent(p.attention_share if p.prefill_s else None)}</td>"
            f"<td>{percent(p.attention_flops_share)}</td>"
            f"<td>{ms(p.decode_s)}</td>"
            f"<td>{nbytes(p.kv_bytes)} {'✓' if p.kv_bytes == p.kv_formula_bytes else '✗'}</td>"
            f"<td>{nbytes(mem['peak_bytes'])} (+{nbytes(mem['increase_bytes'])})</td></tr>")
    memory = sw.points[0].memory if sw.points else {}
    mem_kind = ("GPU memory allocated by tensors (torch.cuda.max_memory_allocated)"
                if memory.get("kind") == "cuda_allocated"
                else f"process RSS, {memory.get('method', '')}; freed memory is handed back to the system before "
                     "each run (malloc_trim) so the increase is this run's own")
    note = (f"{'Cached result (measured earlier for this model); tick “measure again” to re-run. ' if sw.cached else ''}"
            f"Each length: the fastest of up to 3 prefills (fewer for long prompts), then "
            f"{sw.points[0].decode_steps if sw.points else 0} decode passes (median). Memory: {mem_kind}. "
            "Timings on a shared CPU are noisy."
            + (" The request's time limit stopped this sweep before its longest lengths; the lengths measured are "
               "kept, so running it again goes on from there." if sw.timed_out else ""))
    verdict = "".join(f"<li>{_esc(s)}</li>" for s in sweep_verdict(sw))
    return (f'<div class="pfd-sweep" id="pfd-sweep-table"><table><thead><tr><th>prompt tokens</th><th>prefill</th>'
            "<th>per token</th><th>attention scores, measured</th><th>attention scores, FLOPs</th>"
            "<th>decode / token</th><th>KV cache (= formula)</th><th>peak memory (increase)</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table><ul>{verdict}</ul>"
            f'<div class="lie-note">{_esc(note)}</div></div>')


# ---------------------------------------------------------------------------------------------------
# Batch throughput


def batch_figure(b: BatchComparison) -> go.Figure:
    size = len(b.prompts)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.15,
                        subplot_titles=["Throughput (new tokens per second)", "One decode pass (ms)"])
    names = ["one prompt at a time", f"batch of {size}"]
    batched = b.batched.tokens_per_s
    fig.add_bar(x=names, y=[b.single_tokens_per_s, batched], marker_color=[DECODE, PREFILL],
                text=[f"{b.single_tokens_per_s:.1f}", f"{batched:.1f}"], textposition="outside",
                showlegend=False, row=1, col=1)
    single_pass, batch_pass = b.single_decode_mean_s, b.batched.decode_mean_s
    fig.add_bar(x=["1 row", f"{size} rows"], y=[single_pass * 1e3, batch_pass * 1e3],
                marker_color=[DECODE, PREFILL], showlegend=False, row=1, col=2,
                text=[ms(single_pass), ms(batch_pass)], textposition="outside")
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(range=[0, 1.25 * max(b.single_tokens_per_s, batched)], row=1, col=1)
    fig.update_yaxes(range=[0, 1.25e3 * max(single_pass, batch_pass, 1e-6)], row=1, col=2)
    return _layout(fig, 380, f"Throughput: {size} prompts × {b.new_tokens} new tokens, as one batch vs one at a "
                             "time")


def batch_html(b: BatchComparison) -> str:
    size = len(b.prompts)
    tokens = size * b.new_tokens
    same = ("✓ every row of the batch produced the same tokens as its prompt alone" if b.identical
            else "✗ some rows differ from their prompt alone (padding changes float rounding; a near tie can flip)")
    return (f'<div class="pfd-kv" id="pfd-batch-summary">{tokens} new tokens ({size} prompts × {b.new_tokens}): '
            f"one at a time {ms(b.single_total_s)} ({b.single_tokens_per_s:.1f} tokens/s); as one batch "
            f"{ms(b.batched.total_s)} ({b.batched.tokens_per_s:.1f} tokens/s): <b>{b.speedup:.1f}× "
            f"the throughput</b>. {same}. A decode pass reads every weight once whatever the batch size, so extra rows "
            "are cheap until the matrix work itself fills the hardware; each user's own TPOT gets a little worse "
            "while the server serves more users per second.</div>")


# ---------------------------------------------------------------------------------------------------
# Text alternatives: each figure in one sentence, with this run's numbers


def timeline_summary(tl: Timeline) -> str:
    steps, m = tl.steps, tl.metrics
    first, rest = steps[0], steps[1:]
    if not tl.use_cache:
        last = steps[-1]
        return (f"KV cache off: {len(steps)} passes, each re-running the whole sequence: the first processed "
                f"{first.tokens_in_pass} tokens in {ms(first.forward_s)}, the last {last.tokens_in_pass} "
                f"tokens in {ms(last.forward_s)}; first token after {ms(m.ttft_s)}, total {ms(m.total_s)}.")
    text = (f"{len(steps)} passes: one prefill of {first.tokens_in_pass} prompt tokens took "
            f"{ms(first.forward_s)} (first token after {ms(m.ttft_s)})")
    if rest:
        passes = "1 decode pass" if len(rest) == 1 else f"{len(rest)} decode passes"
        text += (f", then {passes} of one token each took {ms(m.tpot_mean_s)} on average "
                 f"(p90 {ms(m.tpot_p90_s)})")
    return text + f"; total {ms(m.total_s)} for {_plural(m.new_tokens, 'new token')}."


def kv_summary(tl: Timeline) -> str:
    kv, steps = tl.kv, tl.steps
    if not tl.use_cache:
        return "KV cache off: nothing is kept between passes, so the cache holds 0 bytes."
    first, last = steps[0], steps[-1]
    verdict = "equal to the formula at every pass" if tl.kv_matches() else "differing from the formula"
    text = (f"The KV cache grew by {kv.bytes_per_token:,} bytes per token: {nbytes(first.cache_bytes)} after the "
            f"prefill ({first.cache_len:,} tokens), {nbytes(last.cache_bytes)} after the last pass "
            f"({last.cache_len:,} tokens), {verdict}")
    if kv.num_kv_heads < kv.num_heads:
        text += f"; full multi-head attention would hold {kv.gqa_factor:g}× as much"
    return text + "."


def compare_summary(cmp: CacheComparison) -> str:
    on, off = cmp.on, cmp.off
    same = "identical tokens" if cmp.identical else f"tokens that part at step {cmp.first_difference}"
    last_on, last_off = on.steps[-1], off.steps[-1]
    return (f"{len(on.steps)} tokens with the KV cache took {ms(on.metrics.total_s)}, without it "
            f"{ms(off.metrics.total_s)} ({cmp.speedup_total:.1f}× slower); the last pass processed "
            f"{last_on.tokens_in_pass} token(s) with the cache and {last_off.tokens_in_pass} without; {same}.")


def sweep_summary(sw: Sweep) -> str:
    points = sw.points
    if not points:
        return "No length was measured."
    a, b = points[0], points[-1]
    text = (f"Prefill took {ms(a.prefill_s)} at {a.prompt_tokens:,} tokens and {ms(b.prefill_s)} at "
            f"{b.prompt_tokens:,} (attention scores {a.attention_share:.0%} → {b.attention_share:.0%} of it, "
            f"measured); a decode pass took {ms(a.decode_s)} → {ms(b.decode_s)}; the KV cache grew to "
            f"{nbytes(b.kv_bytes)}")
    if sw.timed_out:
        text += "; the request's time limit stopped the sweep before its longest lengths (run it again to go on)"
    return text + "."


def batch_summary(b: BatchComparison) -> str:
    size = len(b.prompts)
    return (f"{size} prompts × {b.new_tokens} new tokens: one at a time {b.single_tokens_per_s:.1f} tokens/s, "
            f"as one batch {b.batched.tokens_per_s:.1f} tokens/s ({b.speedup:.1f}× the throughput); a decode "
            "pass "
            f"took {ms(b.single_decode_mean_s)} for 1 row and {ms(b.batched.decode_mean_s)} for {size} rows.")


# ---------------------------------------------------------------------------------------------------
# Downloads: the rows of each trace's CSV (components.export writes them)

TIMELINE_HEADER = ["pass", "phase", "tokens_in_pass", "cache_len", "start_ms", "forward_ms", "sampling_ms", "time_ms",
                   "token_id", "token", "kv_bytes"]


def _ms3(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def timeline_table(tl: Timeline) -> tuple[list[str], list[list]]:
    """One row per forward pass: phase, tokens in the pass, cache length after it, times (ms), the token, KV
    bytes measured from the cache tensors after it."""
    rows = [[s.index, s.phase, s.tokens_in_pass, s.cache_len, _ms3(s.start_s), _ms3(s.forward_s),
             _ms3(s.sampling_s), _ms3(s.step_s), s.token_id, s.piece, s.cache_bytes]
            for s in tl.steps]
    return TIMELINE_HEADER, rows


def compare_table(cmp: CacheComparison) -> tuple[list[str], list[list]]:
    """Both runs' passes, the cache-on run first (column `kv_cache`: on / off)."""
    rows = []
    for which, run in (("on", cmp.on), ("off", cmp.off)):
        rows += [[which, *row] for row in timeline_table(run)[1]]
    return ["kv_cache", *TIMELINE_HEADER], rows


def sweep_table(sw: Sweep) -> tuple[list[str], list[list]]:
    header = ["prompt_tokens", "prefill_ms", "prefill_ms_per_token", "attention_scores_ms", "projections_ms", "mlp_ms",
              "other_ms", "attention_scores_share", "attention_flops", "linear_flops", "decode_ms", "decode_steps",
              "kv_bytes", "kv_formula_bytes", "peak_memory_bytes", "memory_increase_bytes", "working_estimate_bytes",
              "prefill_runs"]
    rows = []
    for p in sw.points:
        split, mem = p.split, p.memory
        share = f"{p.attention_share:.4f}" if p.prefill_s else ""
        rows.append([p.prompt_tokens, _ms3(p.prefill_s), _ms3(p.prefill_s / p.prompt_tokens),
                     _ms3(split["attention_core_s"]), _ms3(split["projections_s"]), _ms3(split["mlp_s"]),
                     _ms3(split["other_s"]), share, p.flops["attention"], p.flops["linear"], _ms3(p.decode_s),
                     p.decode_steps, p.kv_bytes, p.kv_formula_bytes, mem.get("peak_bytes"),
                     mem.get("increase_bytes"), p.working_estimate_bytes, p.runs])
    return header, rows


def batch_table(b: BatchComparison) -> tuple[list[str], list[list]]:
    """One row for the batch, then one per prompt run alone."""
    header = ["run", "prompts", "prompt_tokens", "new_tokens_each", "prefill_ms", "decode_pass_ms_mean", "total_ms",
              "tokens_per_s"]
    batch = b.batched
    rows = [["batch", len(b.prompts), sum(b.prompt_tokens), b.new_tokens, _ms3(batch.prefill_s),
             _ms3(batch.decode_mean_s), _ms3(batch.total_s), f"{batch.tokens_per_s:.3f}"]]
    for i, (run, tokens) in enumerate(zip(b.single, b.prompt_tokens)):
        rows.append([f"prompt {i + 1} alone", 1, tokens, b.new_tokens, _ms3(run.prefill_s),
                     _ms3(run.decode_mean_s), _ms3(run.total_s), f"{run.tokens_per_s:.3f}"])
    return header, rows


CSS = """
.pfd-cards { display: flex; flex-wrap: wrap; gap: .6rem; margin: .4rem 0; }
.pfd-card { flex: 1 1 180px; border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .5rem .7rem; }
.pfd-card-k { font-size: .85rem; color: var(--body-text-color-subdued); }
.pfd-card-v { font-size: 1.5rem; font-weight: 700; }
.pfd-card-d { font-size: .85rem; color: var(--body-text-color-subdued); }
.pfd-check, .pfd-text { margin: .35rem 0; font-size: .95rem; }
.pfd-kv { margin: .4rem 0; font-size: .98rem; line-height: 1.5; }
.pfd-kv div { margin: .2rem 0; }
.pfd-sweep table { border-collapse: collapse; font-size: .92rem; margin: .3rem 0; }
.pfd-sweep th, .pfd-sweep td { border-bottom: 1px solid var(--border-color-primary); padding: .2rem .6rem; text-align: right; }
.pfd-sweep td { white-space: nowrap; }
.pfd-sweep th { font-weight: 600; }
.pfd-sweep ul { margin: .4rem 0 .2rem 1.2rem; }
.pfd-sweep li { margin: .2rem 0; }
"""
