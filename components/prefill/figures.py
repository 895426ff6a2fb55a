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

Every builder that writes words takes `lang` (the catalogue's language, assets/i18n/<lang>/prefill.yaml); the
numbers are filled into the catalogue's {fields}. The CSV tables stay English (machine-readable headers).

Colours are Okabe-Ito (colour-blind safe); where two of them sit side by side with a similar lightness
(prefill orange and recompute pink, the attention-score part of a prefill next to the projections), a hatch
pattern tells them apart in greyscale too.
"""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..i18n import DEFAULT, t
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
SPLIT = {  # parts of a prefill pass: (catalogue key of its label, colour)
    "attention_core_s": ("prefill.split_attention", "#D55E00"),
    "projections_s": ("prefill.split_projections", "#009E73"),
    "mlp_s": ("prefill.split_mlp", "#56B4E9"),
    "other_s": ("prefill.split_other", "#BBBBBB"),
}
PHASE_COLOUR = {"prefill": PREFILL, "decode": DECODE, "recompute": RECOMPUTE}
# Recompute passes are hatched: the pink and the prefill orange look alike in greyscale.
PHASE_PATTERN = {"prefill": "", "decode": "", "recompute": "/"}
SPLIT_PATTERN = {"attention_core_s": "/"}  # the n² part of a prefill stands out without colour
HATCH = dict(fgcolor="#ffffff", solidity=0.25)  # light stripes: the bar's colour and any text on it stay readable
FONT = dict(size=13)
MAX_TICK_LABELS = 32  # beyond this many steps the x axis shows step numbers, not tokens
# Why a generation stopped (inference's machine-readable reason) -> its catalogue key.
STOP_REASONS = {"eos": "prefill.stop_eos", "stop_sequence": "prefill.stop_sequence",
                "max_new_tokens": "prefill.stop_max_new_tokens", "context_length": "prefill.stop_context_length",
                "time_limit": "prefill.stop_time_limit"}
NO_SPACE_BETWEEN_SENTENCES = frozenset({"zh"})


# ---------------------------------------------------------------------------------------------------
# Formatting


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def _esc(text) -> str:
    return html.escape(str(text))


def sentences(parts: Sequence[str], lang: str) -> str:
    """Sentences (or clauses) in a row, as `lang` writes them: Chinese puts no space after its full stop."""
    return ("" if lang in NO_SPACE_BETWEEN_SENTENCES else " ").join(p for p in parts if p)


def _count(n: int, key: str, lang: str) -> str:
    """`n` things in words: catalogue `<key>_one` for 1, `<key>_many` otherwise ("1 KV head", "3 KV heads")."""
    return t(f"{key}_one" if n == 1 else f"{key}_many", lang, n=n)


def _hover(key: str, lang: str, **fields) -> str:
    """A hover template from a catalogue text: its {fields} become Plotly's %{...} references (x, y, ...)."""
    return t(key, lang, **{name: "%{" + ref + "}" for name, ref in fields.items()})


def _phase(phase: str, lang: str) -> str:
    return t(f"prefill.phase_{phase}", lang)


def _stop_reason(reason, lang: str) -> str:
    key = STOP_REASONS.get(reason)
    return t(key, lang) if key else str(reason)


def _memory_method(method: str, lang: str) -> str:
    """How memory was read (inference's words, English) in `lang`; a code name stays as it is."""
    if method == "kernel peak RSS (VmHWM)":
        return t("prefill.method_vmhwm", lang)
    sampled = re.fullmatch(r"RSS sampled every (\S+) ms", method or "")
    if sampled:
        return t("prefill.method_sampled", lang, interval=sampled.group(1))
    return method


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


def headline_html(tl: Timeline, lang: str = DEFAULT) -> str:
    """The four numbers users feel, and how they add up on this run."""
    m, mem = tl.metrics, tl.memory
    n = m.new_tokens
    mem_label = t("prefill.mem_gpu" if mem["kind"] == "cuda_allocated" else "prefill.mem_process", lang)
    mem_detail = t("prefill.mem_detail", lang, weights=nbytes(tl.weights_bytes), kv=nbytes(tl.kv_bytes),
                   method=_esc(_memory_method(mem.get("method", ""), lang)))
    tpot_detail = (t("prefill.tpot_detail", lang, p50=ms(m.tpot_p50_s), p90=ms(m.tpot_p90_s))
                   if m.tpot_mean_s is not None else t("prefill.tpot_none", lang))
    throughput_detail = t("prefill.card_throughput_detail", lang, n=n)
    if m.decode_tokens_per_s:
        throughput_detail += " · " + t("prefill.card_decode_alone", lang, rate=f"{m.decode_tokens_per_s:.1f}")
    cache = t("prefill.cache_on_state" if tl.use_cache else "prefill.cache_off_state", lang)
    cards = "".join([
        _card(t("prefill.card_ttft", lang), ms(m.ttft_s),
              t("prefill.card_ttft_detail", lang, prefill=ms(m.prefill_s), n=m.prompt_tokens,
                draw=ms(m.first_draw_s)),
              'id="pfd-ttft"'),
        _card(t("prefill.card_tpot", lang),
              t("prefill.card_tpot_mean", lang, time=ms(m.tpot_mean_s)) if m.tpot_mean_s else ms(m.tpot_mean_s),
              tpot_detail, 'id="pfd-tpot"'),
        _card(t("prefill.card_throughput", lang), f"{m.tokens_per_s:.1f} tokens/s", throughput_detail),
        _card(t("prefill.card_total", lang), ms(m.total_s), t("prefill.card_total_detail", lang, n=n, cache=cache)),
        _card(mem_label, nbytes(mem["peak_bytes"]), mem_detail),
    ])
    check = ""
    if m.tpot_mean_s is not None:
        predicted = m.ttft_s + m.tpot_mean_s * (n - 1)
        check = ('<div class="pfd-check" id="pfd-check">'
                 + t("prefill.check", lang, ttft=ms(m.ttft_s), k=n - 1, tpot=ms(m.tpot_mean_s), predicted=ms(predicted),
                     total=ms(m.total_s), prefill=ms(m.prefill_s), draw=ms(m.first_draw_s),
                     rest=ms(max(0.0, m.ttft_s - m.prefill_s - m.first_draw_s)))
                 + "</div>")
    text = _esc(tl.text) or f"<i>{t('prefill.no_text', lang)}</i>"
    generated = t("prefill.generated", lang, n=n, reason=_esc(_stop_reason(tl.stop_reason, lang)), text=text)
    return f'<div class="pfd-cards">{cards}</div>{check}<div class="pfd-text">{generated}</div>'


# ---------------------------------------------------------------------------------------------------
# Timeline


def timeline_figure(tl: Timeline, lang: str = DEFAULT) -> go.Figure:
    """Row 1: each pass on the clock (prefill, then one decode pass per token). Row 2: wall time per pass,
    the model's forward pass plus the sampling. Row 3: tokens the pass processed."""
    steps = tl.steps
    labels = _step_labels(steps)
    m = tl.metrics
    few = len(steps) <= MAX_TICK_LABELS
    fig = make_subplots(rows=3, cols=1, row_heights=[0.18, 0.5, 0.32], vertical_spacing=0.09, subplot_titles=[
        t("prefill.tl_clock", lang, ttft=ms(m.ttft_s)), t("prefill.tl_wall", lang), t("prefill.tl_tokens", lang)])
    hover = [t("prefill.tl_hover", lang, phase=_phase(s.phase, lang), index=s.index, token=_esc(s.piece),
               n=s.tokens_in_pass, cache=s.cache_len, forward=ms(s.forward_s), sampling=ms(s.sampling_s))
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
                    marker_pattern=dict(shape=PHASE_PATTERN[phase], **HATCH), name=t(f"prefill.legend_{phase}", lang),
                    hovertext=[hover[i] for i in idx], hoverinfo="text", legendgroup=phase, row=2, col=1)
        fig.add_bar(x=[labels[i] for i in idx], y=[steps[i].tokens_in_pass for i in idx], marker_color=colour,
                    marker_pattern=dict(shape=PHASE_PATTERN[phase], **HATCH),
                    text=[steps[i].tokens_in_pass for i in idx] if few else None, textposition="outside",
                    hovertext=[hover[i] for i in idx], hoverinfo="text", legendgroup=phase, showlegend=False,
                    cliponaxis=False, row=3, col=1)
    fig.add_bar(x=labels, y=[(s.step_s - s.forward_s) * 1e3 for s in steps], marker_color=OVERHEAD,
                name=t("prefill.legend_overhead", lang), hovertext=hover, hoverinfo="text", row=2, col=1)
    fig.update_layout(barmode="stack", uniformtext=dict(minsize=10, mode="hide"))
    ttft = m.ttft_s * 1e3
    fig.add_vline(x=ttft, line=dict(color="#222", dash="dot", width=2), row=1, col=1)
    # A long prompt's prefill can dwarf the decode passes: clip the axis and label the prefill bar instead.
    later = sorted(s.step_s for s in steps[1:])
    if later and steps[0].step_s > 6 * later[int(0.9 * (len(later) - 1))]:
        top = 3 * later[int(0.9 * (len(later) - 1))] * 1e3
        fig.update_yaxes(range=[0, top], row=2, col=1)
        fig.add_annotation(x=labels[0], y=top,
                           text=t("prefill.off_scale", lang, phase=_phase(steps[0].phase, lang),
                                  time=ms(steps[0].step_s)),
                           showarrow=False, yanchor="top", xanchor="left", font=dict(size=12), row=2, col=1)
    most = max(s.tokens_in_pass for s in steps)
    least = min(s.tokens_in_pass for s in steps)
    fig.update_yaxes(showticklabels=False, row=1, col=1)
    if most > 20 * least:  # prefill vs 1-token decode passes: a log axis keeps the 1s visible
        fig.update_yaxes(type="log", dtick=1, range=[-0.4, math.log10(most) + 0.5], row=3, col=1)
        fig.layout.annotations[2].text = t("prefill.tl_tokens_log", lang)
    else:
        fig.update_yaxes(range=[0, most * 1.25], row=3, col=1)
    fig.update_xaxes(matches="x3", showticklabels=False, row=2, col=1)
    fig.update_xaxes(showticklabels=few, tickangle=-45, row=3, col=1,
                     title_text=t("prefill.tl_x_tokens" if few else "prefill.tl_x_hover", lang))
    then = (t("prefill.tl_then_per_token", lang, time=ms(m.tpot_mean_s)) if m.tpot_mean_s
            else t("prefill.tl_then_nothing", lang))
    title = t("prefill.tl_title", lang, passes=len(steps), prefill=ms(m.prefill_s), then=then)
    if not tl.use_cache:
        title += " · " + t("prefill.tl_title_off", lang)
    return _layout(fig, 760, title)


# ---------------------------------------------------------------------------------------------------
# KV cache


def kv_html(tl: Timeline, lang: str = DEFAULT) -> str:
    """The formula with this model's numbers, checked against the cache tensors, and the GQA saving."""
    kv = tl.kv
    if not tl.use_cache:
        return f'<div class="pfd-kv" id="pfd-kv">{t("prefill.kv_off_html", lang)}</div>'
    per_token = kv.bytes_per_token
    windows = [w for w in kv.layer_windows if w]
    formula = t("prefill.kv_formula", lang, layers=kv.num_layers, kv_heads=_count(kv.num_kv_heads, "prefill.kv_heads", lang),
                head_dim=kv.head_dim, bytes=kv.bytes_per_element, dtype=kv.dtype, per_token=f"{per_token:,}")
    sliding = ""
    if windows:
        sliding = "<br>" + t("prefill.kv_sliding", lang, windows=len(windows), layers=kv.num_layers,
                             keep=f"{windows[0] - 1:,}")
    ok = tl.kv_bytes == tl.kv_formula_bytes and tl.kv_matches()
    verdict = t("prefill.kv_equal" if ok else "prefill.kv_differs", lang)
    mha, gqa = kv.mha_bytes_per_token, kv.gqa_factor
    if kv.num_kv_heads < kv.num_heads:
        gqa_text = t("prefill.kv_gqa", lang, heads=kv.num_heads,
                     kv_heads=_count(kv.num_kv_heads, "prefill.kv_value_heads", lang), mha=f"{mha:,}",
                     mha_total=nbytes(tl.mha_bytes), factor=f"{gqa:g}")
    else:
        gqa_text = t("prefill.kv_mha", lang)
    measured = t("prefill.kv_measured", lang, tokens=f"{tl.kv_tokens:,}", bytes=f"{tl.kv_bytes:,}",
                 size=nbytes(tl.kv_bytes), formula=f"{tl.kv_formula_bytes:,}",
                 verdict=f'<b id="pfd-kv-verdict">{verdict}</b>')
    return (f'<div class="pfd-kv" id="pfd-kv"><div>{formula}{sliding}</div>'
            f"<div>{measured}</div><div>{gqa_text}</div></div>")


def kv_figure(tl: Timeline, lang: str = DEFAULT) -> go.Figure:
    """Left: bytes in the cache after each pass, measured, with the formula and the MHA equivalent.
    Right: per layer after the last pass."""
    kv = tl.kv
    steps = tl.steps
    if not tl.use_cache:
        fig = go.Figure()
        fig.add_annotation(text=t("prefill.kvfig_off", lang), x=0.5, y=0.5,
                           xref="paper", yref="paper", showarrow=False, font=dict(size=16))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return _layout(fig, 160)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                        subplot_titles=[t("prefill.kvfig_size", lang), t("prefill.kvfig_layers", lang)])
    tokens = [s.cache_len for s in steps]
    fig.add_scatter(x=tokens, y=[s.cache_bytes / 1e6 for s in steps], mode="markers",
                    name=t("prefill.kvfig_measured", lang), marker=dict(color=DECODE, size=8), row=1, col=1,
                    hovertemplate=_hover("prefill.hover_tokens_mb", lang, x="x", y="y:.3f")
                    + f"<extra>{t('prefill.extra_measured', lang)}</extra>")
    if tokens:
        formula = [kv.bytes_for(n) for n in tokens]
        name = sentences([t("prefill.kvfig_formula", lang, bytes=f"{kv.bytes_per_token:,}"),
                          t("prefill.kvfig_capped", lang) if kv.windowed else ""], lang)
        fig.add_scatter(x=tokens, y=[b / 1e6 for b in formula], mode="lines", line=dict(color=FORMULA, dash="dash"),
                        name=name, row=1, col=1)
        if kv.num_kv_heads < kv.num_heads:
            fig.add_scatter(x=tokens, y=[b * kv.gqa_factor / 1e6 for b in formula], mode="lines",
                            name=t("prefill.kvfig_mha", lang, n=kv.num_heads), line=dict(color=MHA, dash="dot"),
                            row=1, col=1)
    layers = list(range(len(tl.layer_bytes)))
    fig.add_bar(x=layers, y=[b / 1e3 for b in tl.layer_bytes], name=t("prefill.kvfig_layer_measured", lang),
                marker_color=[DECODE if not w else PREFILL for w in kv.layer_windows[: len(layers)]],
                marker_pattern_shape=["" if not w else "/" for w in kv.layer_windows[: len(layers)]], row=1, col=2,
                hovertemplate=_hover("prefill.hover_layer", lang, x="x", y="y:,.1f") + "<extra></extra>",
                showlegend=False)
    fig.add_scatter(x=layers, y=[b / 1e3 for b in tl.layer_formula_bytes], mode="markers",
                    name=t("prefill.kvfig_layer_formula", lang),
                    marker=dict(symbol="line-ew", size=14, line=dict(width=2, color=FORMULA)), row=1, col=2,
                    showlegend=False,
                    hovertemplate=_hover("prefill.hover_layer_formula", lang, x="x", y="y:,.1f") + "<extra></extra>")
    fig.update_xaxes(title_text=t("prefill.axis_cache_tokens", lang), tickformat=",d", row=1, col=1)
    if tokens and max(tokens) - min(tokens) < 10:
        fig.update_xaxes(dtick=1, row=1, col=1)  # whole tokens only
    fig.update_xaxes(title_text=t("prefill.kvfig_layer_windowed" if kv.windowed else "prefill.kvfig_layer", lang),
                     row=1, col=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    return _layout(fig, 420, t("prefill.kvfig_title", lang, bytes=f"{kv.bytes_per_token:,}", dtype=kv.dtype,
                               tokens=f"{tl.kv_tokens:,}"))


# ---------------------------------------------------------------------------------------------------
# Cache on vs off


def compare_html(cmp: CacheComparison, lang: str = DEFAULT) -> str:
    on, off = cmp.on, cmp.off
    n = len(on.steps)
    same = (t("prefill.cmp_same", lang) if cmp.identical
            else t("prefill.cmp_differ", lang, step=cmp.first_difference))
    last_on, last_off = on.steps[-1], off.steps[-1]
    body = t("prefill.cmp_html", lang, same=same, n=n, seed=on.seed, on=ms(on.metrics.total_s),
             off=ms(off.metrics.total_s), speedup=f"{cmp.speedup_total:.1f}", last_on=last_on.tokens_in_pass,
             last_off=last_off.tokens_in_pass, on_ms=ms(last_on.forward_s), off_ms=ms(last_off.forward_s),
             speedup_last=f"{cmp.speedup_last_step:.1f}")
    return f'<div class="pfd-kv" id="pfd-compare-summary">{body}</div>'


def compare_figure(cmp: CacheComparison, lang: str = DEFAULT) -> go.Figure:
    on, off = cmp.on.steps, cmp.off.steps
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[t("prefill.cmpfig_forward", lang), t("prefill.cmpfig_elapsed", lang)])
    for steps, group, colour, dash in ((on, "on", DECODE, "solid"), (off, "off", RECOMPUTE, "dash")):
        name = t(f"prefill.cmpfig_{group}", lang)
        x = [s.index for s in steps]
        fig.add_scatter(x=x, y=[s.forward_s * 1e3 for s in steps], mode="lines+markers", name=name,
                        line=dict(color=colour, dash=dash), row=1, col=1, legendgroup=group,
                        customdata=[s.tokens_in_pass for s in steps],
                        hovertemplate=_hover("prefill.cmpfig_hover", lang, x="x", y="y:.1f", tokens="customdata")
                        + f"<extra>{name}</extra>")
        fig.add_scatter(x=x, y=[(s.start_s + s.step_s) for s in steps], mode="lines", name=name,
                        line=dict(color=colour, width=3, dash=dash), row=1, col=2, legendgroup=group, showlegend=False,
                        hovertemplate=_hover("prefill.cmpfig_hover_elapsed", lang, x="x", y="y:.2f")
                        + f"<extra>{name}</extra>")
    fig.update_xaxes(title_text=t("prefill.cmpfig_x", lang))
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, 400, t("prefill.cmpfig_title", lang, n=len(on)))


# ---------------------------------------------------------------------------------------------------
# Context-length sweep


def sweep_figure(sw: Sweep, lang: str = DEFAULT) -> go.Figure:
    points = sw.points
    ns = [p.prompt_tokens for p in points]
    cats = [str(n) for n in ns]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.2, horizontal_spacing=0.1, subplot_titles=[
        t("prefill.swfig_prefill", lang), t("prefill.swfig_split", lang), t("prefill.swfig_decode", lang),
        t("prefill.swfig_memory", lang)])
    fig.add_scatter(x=ns, y=[p.prefill_s for p in points], mode="markers", name=t("prefill.swfig_measured", lang),
                    marker=dict(color=PREFILL, size=10), row=1, col=1,
                    hovertemplate=_hover("prefill.hover_tokens_s", lang, x="x", y="y:.3f") + "<extra></extra>")
    if sw.linear and sw.quadratic:
        grid = [ns[0] + (ns[-1] - ns[0]) * i / 60 for i in range(61)]
        for fit, key, dash in ((sw.linear, "prefill.swfig_linear", "dash"),
                               (sw.quadratic, "prefill.swfig_quadratic", "dot")):
            fig.add_scatter(x=grid, y=[fit.at(x) for x in grid], mode="lines", name=t(key, lang, r2=f"{fit.r2:.3f}"),
                            line=dict(color=FORMULA if fit.degree == 1 else "#D55E00", dash=dash), row=1, col=1)
    for key, (label_key, colour) in SPLIT.items():
        label = t(label_key, lang)
        fig.add_bar(x=cats, y=[p.split[key] / p.prompt_tokens * 1e3 for p in points], name=label,
                    marker_color=colour, marker_pattern_shape=SPLIT_PATTERN.get(key, ""), row=1, col=2,
                    legendgroup="split",
                    hovertemplate=_hover("prefill.hover_tokens_ms_per_token", lang, x="x", y="y:.3f")
                    + f"<extra>{label}</extra>")
    fig.add_scatter(x=ns, y=[p.decode_s * 1e3 for p in points], mode="lines+markers",
                    name=t("prefill.swfig_decode_median", lang), line=dict(color=DECODE), row=2, col=1,
                    hovertemplate=_hover("prefill.hover_tokens_cached_ms", lang, x="x", y="y:.1f") + "<extra></extra>")
    fig.add_bar(x=cats, y=[p.kv_bytes / 1e6 for p in points], name=t("prefill.swfig_kv", lang),
                marker_color=DECODE, row=2, col=2,
                hovertemplate=_hover("prefill.hover_tokens_mb", lang, x="x", y="y:.2f")
                + f"<extra>{t('prefill.extra_kv', lang)}</extra>")
    fig.add_scatter(x=cats, y=[p.memory["increase_bytes"] / 1e6 for p in points], mode="lines+markers",
                    name=t("prefill.swfig_peak", lang), line=dict(color=PREFILL, width=3), row=2, col=2,
                    hovertemplate=_hover("prefill.hover_tokens_plus_mb", lang, x="x", y="y:.1f")
                    + f"<extra>{t('prefill.extra_peak', lang)}</extra>")
    fig.add_scatter(x=cats, y=[p.working_estimate_bytes / 1e6 for p in points], mode="markers",
                    name=t("prefill.swfig_estimate", lang),
                    marker=dict(symbol="x", size=10, color=FORMULA), row=2, col=2,
                    hovertemplate=_hover("prefill.hover_tokens_mb", lang, x="x", y="y:.1f")
                    + f"<extra>{t('prefill.extra_estimate', lang)}</extra>")
    fig.update_layout(barmode="stack")
    prompt_tokens = t("prefill.axis_prompt_tokens", lang)
    fig.update_xaxes(title_text=prompt_tokens, row=1, col=1)
    fig.update_xaxes(title_text=prompt_tokens, type="category", row=1, col=2)
    fig.update_xaxes(title_text=t("prefill.axis_cache_tokens", lang), row=2, col=1)
    fig.update_xaxes(title_text=prompt_tokens, type="category", row=2, col=2)
    fig.update_yaxes(rangemode="tozero")
    title = (t("prefill.swfig_title", lang, first=f"{ns[0]:,}", last=f"{ns[-1]:,}", device=_esc(sw.device)) if ns
             else t("prefill.swfig_title_none", lang))
    return _layout(fig, 840, title, legend_rows=4)


# The findings' trends (inference.sweep) -> catalogue keys.
PER_TOKEN_TREND = {"rose": "prefill.trend_rose", "fell": "prefill.trend_fell", "flat": "prefill.trend_flat"}
DECODE_TREND = {"noisy": "prefill.decode_noisy", "grows": "prefill.decode_grows", "flat": "prefill.decode_flat"}


def sweep_verdict(sw: Sweep, lang: str = DEFAULT) -> list[str]:
    """The sweep's findings (`inference.sweep.sweep_findings`) in sentences that only claim what they hold."""
    if not sw.points:
        return [t("prefill.v_nothing", lang)]
    f = sw.findings
    n0, n1 = f.first_tokens, f.last_tokens
    core0, core1 = f.attention_share
    out = []

    # 1. The fits, weighed against the split measured inside the passes.
    if f.linear_r2 is not None:
        parts = [t("prefill.v_fit", lang, linear=f"{f.linear_r2:.3f}", quadratic=f"{f.quadratic_r2:.3f}")]
        if f.fit_n2_share is not None:
            key = "prefill.v_n2_overstates" if f.fit_overstates else "prefill.v_n2_consistent"
            parts.append(t(key, lang, fit=f"{100 * f.fit_n2_share:.0f}", n=f"{n1:,}", core=f"{100 * core1:.0f}"))
        else:
            parts.append(t("prefill.v_not_positive", lang))
        out.append(sentences(parts, lang))
    else:
        out.append(t("prefill.v_too_few", lang, points=f.points))

    # 2. The split measured inside the passes, next to the FLOP count.
    parts = [t("prefill.v_split", lang, core0=f"{100 * core0:.0f}", n0=f"{n0:,}", core1=f"{100 * core1:.0f}",
               n1=f"{n1:,}", flops0=percent(f.flops_share[0]), flops1=percent(f.flops_share[1]))]
    if f.attention_trend == "grows":
        parts.append(t("prefill.v_share_grows", lang))
    elif f.attention_trend == "unclear":
        parts.append(t("prefill.v_share_unclear", lang))
    parts.append(t("prefill.v_short_prompts", lang))
    out.append(sentences(parts, lang))

    # 3. Per prompt token.
    per0, per1 = f.per_token_s
    out.append(t("prefill.v_per_token", lang, trend=t(PER_TOKEN_TREND[f.per_token_trend], lang), t0=ms(per0),
                 n0=f"{n0:,}", t1=ms(per1), n1=f"{n1:,}", ratio=f"{per1 / per0:.2f}"))

    # 4. KV cache and working memory.
    capped = (t("prefill.v_kv_capped", lang, layers=f.sliding_layers, keep=f"{f.window_keeps:,}")
              if f.sliding_layers else "")
    out.append(t("prefill.v_kv_equal" if f.kv_matches else "prefill.v_kv_differs", lang, capped=capped,
                 size=nbytes(f.kv_bytes), n=f"{n1:,}"))
    if f.memory_growth is not None:
        (before, _), (grew_before, grew_last) = f.memory_tokens, f.memory_increase
        text = t("prefill.v_memory", lang, before_bytes=nbytes(grew_before), before=f"{before:,}",
                 last_bytes=nbytes(grew_last), n=f"{n1:,}", estimate=nbytes(f.working_estimate_bytes),
                 growth=f"{f.memory_growth:.1f}")
        out.append(sentences([text, t("prefill.v_mem_superlinear" if f.memory_superlinear else "prefill.v_mem_linear",
                                      lang)], lang))

    # 5. Decode.
    d0, d1 = f.decode_s
    out.append(t("prefill.v_decode", lang, d0=ms(d0), n0=f"{n0:,}", d1=ms(d1), n1=f"{n1:,}",
                 trend=t(DECODE_TREND[f.decode_trend], lang)))
    return out


SWEEP_HEADERS = ["prefill.th_prompt_tokens", "prefill.th_prefill", "prefill.th_per_token", "prefill.th_attn_measured",
                 "prefill.th_attn_flops", "prefill.th_decode", "prefill.th_kv", "prefill.th_peak"]


def sweep_html(sw: Sweep, lang: str = DEFAULT) -> str:
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
    mem_kind = (t("prefill.sw_mem_gpu", lang) if memory.get("kind") == "cuda_allocated"
                else t("prefill.sw_mem_rss", lang, method=_memory_method(memory.get("method", ""), lang)))
    parts = [t("prefill.sw_cached", lang)] if sw.cached else []
    parts.append(t("prefill.sw_note", lang, steps=sw.points[0].decode_steps if sw.points else 0, memory=mem_kind))
    if sw.timed_out:
        parts.append(t("prefill.sw_timed_out", lang))
    note = sentences(parts, lang)
    verdict = "".join(f"<li>{_esc(s)}</li>" for s in sweep_verdict(sw, lang))
    head = "".join(f"<th>{_esc(t(key, lang))}</th>" for key in SWEEP_HEADERS)
    return (f'<div class="pfd-sweep" id="pfd-sweep-table"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table><ul>{verdict}</ul>"
            f'<div class="lie-note">{_esc(note)}</div></div>')


# ---------------------------------------------------------------------------------------------------
# Batch throughput


def batch_figure(b: BatchComparison, lang: str = DEFAULT) -> go.Figure:
    size = len(b.prompts)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.15,
                        subplot_titles=[t("prefill.bfig_throughput", lang), t("prefill.bfig_pass", lang)])
    names = [t("prefill.bfig_single", lang), t("prefill.bfig_batch", lang, n=size)]
    batched = b.batched.tokens_per_s
    fig.add_bar(x=names, y=[b.single_tokens_per_s, batched], marker_color=[DECODE, PREFILL],
                text=[f"{b.single_tokens_per_s:.1f}", f"{batched:.1f}"], textposition="outside",
                showlegend=False, row=1, col=1)
    single_pass, batch_pass = b.single_decode_mean_s, b.batched.decode_mean_s
    fig.add_bar(x=[t("prefill.bfig_one_row", lang), t("prefill.bfig_rows", lang, n=size)],
                y=[single_pass * 1e3, batch_pass * 1e3],
                marker_color=[DECODE, PREFILL], showlegend=False, row=1, col=2,
                text=[ms(single_pass), ms(batch_pass)], textposition="outside")
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(range=[0, 1.25 * max(b.single_tokens_per_s, batched)], row=1, col=1)
    fig.update_yaxes(range=[0, 1.25e3 * max(single_pass, batch_pass, 1e-6)], row=1, col=2)
    return _layout(fig, 380, t("prefill.bfig_title", lang, n=size, new=b.new_tokens))


def batch_html(b: BatchComparison, lang: str = DEFAULT) -> str:
    size = len(b.prompts)
    tokens = size * b.new_tokens
    same = t("prefill.batch_same" if b.identical else "prefill.batch_differ", lang)
    body = t("prefill.batch_html", lang, tokens=tokens, size=size, new=b.new_tokens, single=ms(b.single_total_s),
             single_rate=f"{b.single_tokens_per_s:.1f}", batch=ms(b.batched.total_s),
             batch_rate=f"{b.batched.tokens_per_s:.1f}", speedup=f"{b.speedup:.1f}", same=same)
    return f'<div class="pfd-kv" id="pfd-batch-summary">{body}</div>'


# ---------------------------------------------------------------------------------------------------
# Text alternatives: each figure in one sentence, with this run's numbers


def timeline_summary(tl: Timeline, lang: str = DEFAULT) -> str:
    steps, m = tl.steps, tl.metrics
    first, rest = steps[0], steps[1:]
    if not tl.use_cache:
        last = steps[-1]
        return t("prefill.sum_tl_off", lang, passes=len(steps), first=first.tokens_in_pass, first_ms=ms(first.forward_s),
                 last=last.tokens_in_pass, last_ms=ms(last.forward_s), ttft=ms(m.ttft_s), total=ms(m.total_s))
    values = dict(passes=len(steps), n=first.tokens_in_pass, time=ms(first.forward_s), ttft=ms(m.ttft_s),
                  total=ms(m.total_s), new=_count(m.new_tokens, "prefill.new_tokens", lang))
    if not rest:
        return t("prefill.sum_tl_prefill_only", lang, **values)
    return t("prefill.sum_tl", lang, decode=_count(len(rest), "prefill.decode_passes", lang), mean=ms(m.tpot_mean_s),
             p90=ms(m.tpot_p90_s), **values)


def kv_summary(tl: Timeline, lang: str = DEFAULT) -> str:
    kv, steps = tl.kv, tl.steps
    if not tl.use_cache:
        return t("prefill.sum_kv_off", lang)
    first, last = steps[0], steps[-1]
    verdict = t("prefill.sum_kv_equal" if tl.kv_matches() else "prefill.sum_kv_differs", lang)
    values = dict(per=f"{kv.bytes_per_token:,}", first=nbytes(first.cache_bytes), first_len=f"{first.cache_len:,}",
                  last=nbytes(last.cache_bytes), last_len=f"{last.cache_len:,}", verdict=verdict)
    if kv.num_kv_heads < kv.num_heads:
        return t("prefill.sum_kv_gqa", lang, factor=f"{kv.gqa_factor:g}", **values)
    return t("prefill.sum_kv", lang, **values)


def compare_summary(cmp: CacheComparison, lang: str = DEFAULT) -> str:
    on, off = cmp.on, cmp.off
    same = (t("prefill.sum_cmp_same", lang) if cmp.identical
            else t("prefill.sum_cmp_differ", lang, step=cmp.first_difference))
    last_on, last_off = on.steps[-1], off.steps[-1]
    return t("prefill.sum_cmp", lang, n=len(on.steps), on=ms(on.metrics.total_s), off=ms(off.metrics.total_s),
             slower=f"{cmp.speedup_total:.1f}", last_on=last_on.tokens_in_pass, last_off=last_off.tokens_in_pass,
             same=same)


def sweep_summary(sw: Sweep, lang: str = DEFAULT) -> str:
    points = sw.points
    if not points:
        return t("prefill.sum_sweep_none", lang)
    a, b = points[0], points[-1]
    return t("prefill.sum_sweep_timed_out" if sw.timed_out else "prefill.sum_sweep", lang,
             prefill_a=ms(a.prefill_s), n_a=f"{a.prompt_tokens:,}", prefill_b=ms(b.prefill_s),
             n_b=f"{b.prompt_tokens:,}", share_a=f"{a.attention_share:.0%}", share_b=f"{b.attention_share:.0%}",
             decode_a=ms(a.decode_s), decode_b=ms(b.decode_s), kv=nbytes(b.kv_bytes))


def batch_summary(b: BatchComparison, lang: str = DEFAULT) -> str:
    size = len(b.prompts)
    return t("prefill.sum_batch", lang, size=size, new=b.new_tokens, single_rate=f"{b.single_tokens_per_s:.1f}",
             batch_rate=f"{b.batched.tokens_per_s:.1f}", speedup=f"{b.speedup:.1f}",
             single=ms(b.single_decode_mean_s), batch=ms(b.batched.decode_mean_s))


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
