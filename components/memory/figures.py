"""Memory tab views: pure functions of the dataclasses `inference.precision` and `inference.kv_policies` return.

    precision_html / precision_figure / precision_summary   weights at several precisions: bytes, speed, agreement
    kv_html / kv_figure / kv_summary                         the plain KV cache against a quantized one
    policies_html / kept_figure / first_token_figure         eviction policies at one budget: perplexity, bytes,
                                                             which positions each kept, the attention sink
    sweep_figure / sweep_summary                             perplexity of each policy as the budget grows
    layer_kind_figure / layer_kind_summary                   bytes of local vs global layers as the context grows
    *_rows                                                   the rows of each CSV download (header, rows)

Colours are Okabe-Ito (colour-blind safe); each policy also has its own marker and dash, so the lines read in grey.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..units import nbytes

if TYPE_CHECKING:  # annotations only: figures never import the model's side
    from inference.kv_policies import BudgetSweep, LayerKindMemory, PolicyComparison, PolicyRun
    from inference.precision import KVPrecisionComparison, PrecisionComparison

FONT = dict(size=13)
PRECISION_COLOUR = {"float32": "#000000", "bfloat16": "#0072B2", "float16": "#56B4E9", "int8": "#E69F00",
                    "int4": "#D55E00"}
PRECISION_SYMBOL = {"float32": "diamond", "bfloat16": "circle", "float16": "square", "int8": "triangle-up",
                    "int4": "star"}
POLICY_STYLE = {  # colour, marker, dash
    "full": ("#000000", "line-ew", "dot"),
    "window": ("#D55E00", "x", "solid"),
    "sinks": ("#0072B2", "circle", "dash"),
    "heavy_hitters": ("#009E73", "diamond", "dashdot"),
}
LOCAL, GLOBAL = "#56B4E9", "#E69F00"

CSS = """
.mem-table table { border-collapse: collapse; font-size: .92rem; margin: .3rem 0; }
.mem-table th, .mem-table td { border-bottom: 1px solid var(--border-color-primary); padding: .25rem .55rem; text-align: right; }
.mem-table th { font-weight: 600; vertical-align: bottom; }
.mem-table td { white-space: nowrap; }
.mem-table td:first-child, .mem-table th:first-child { text-align: left; white-space: normal; min-width: 9rem; }
.mem-table tr.ref td { font-weight: 600; }
.mem-table .desc { display: inline-block; text-align: left; font-size: .82rem; color: var(--body-text-color-subdued);
                   min-width: 16rem; max-width: 24rem; white-space: normal; }
.mem-table { overflow-x: auto; }
.mem-table .check { margin: .35rem 0; font-size: .92rem; }
.mem-table .greedy { font-family: var(--font-mono); font-size: .82rem; text-align: left; white-space: pre-wrap; }
"""


def _esc(text) -> str:
    return html.escape(str(text))


def _num(value: float, digits: int = 3) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:,.{digits}f}"


def _kl(value: float) -> str:
    if value is None or value != value:
        return "–"
    return "0" if value == 0 else f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def _layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(height=height, font=FONT, plot_bgcolor="white", margin=dict(l=70, r=20, t=70 if title else 40, b=95),
                      legend=dict(orientation="h", yref="container", y=0.005, yanchor="bottom", x=0),
                      title=dict(text=title, x=0, font=dict(size=15)) if title else None)
    fig.update_xaxes(showline=True, linecolor="#888", gridcolor="#eee")
    fig.update_yaxes(showline=True, linecolor="#888", gridcolor="#eee", zeroline=False)
    return fig


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                   for row, cls in zip(rows, row_classes or [""] * len(rows)))
    return f"<table class='mem-main'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------------------------------------------
# Weights


def _divergence(index: int | None, total: int) -> str:
    return "never" if index is None else f"token {index + 1} of {total}"


def _differs(index: int | None, total: int) -> str:
    return (f"its greedy text equals the plain cache's for all {total} tokens" if index is None
            else f"its greedy text differs from token {index + 1} of {total}")


def precision_html(cmp: "PrecisionComparison") -> str:
    """The table: one row per precision, the reference first, and the checks under it."""
    ref = cmp.rows[0]
    rows, classes = [], []
    for r in cmp.rows:
        speed = "" if r.is_reference else f" ({r.speedup:.2f}×)"
        rows.append([
            f"<b>{_esc(r.name)}</b>", nbytes(r.weight_bytes), f"{r.bits_per_parameter:.2f}",
            f"{r.ms_per_token:,.1f}{speed}", f"{r.prefill_tokens_per_s:,.0f}", f"{r.top1_agreement:.1%}", _kl(r.mean_kl),
            f"{r.max_abs_dprob:.3f}", _num(r.perplexity, 2), _divergence(r.first_divergence, cmp.new_tokens),
            f"<span class='desc'>{_esc(r.description)}"
            + (f"; {r.quantized_layers} linear layers quantized" if r.quantized_layers else "")
            + (f", {r.skipped_layers} left as they were" if r.skipped_layers else "") + "</span>",
        ])
        classes.append("ref" if r.is_reference else "")
    header = ["precision", "weights", "bits per parameter", "ms per decode token (speed vs reference)",
              "prefill tokens/s", f"top-1 agreement with {_esc(ref.name)}", "mean KL (nats)", "max |Δp|", "perplexity",
              "greedy text differs at", "what it is"]
    per = ref.weight_bytes / cmp.num_parameters
    check = (f"Weights are the parameter tensors' bytes, each tensor counted once (a quantized weight: its integer data, "
             f"scales and zero points). Formula for the reference: {cmp.num_parameters:,} parameters × {per:g} bytes = "
             f"{cmp.num_parameters * per:,.0f} bytes; measured {ref.weight_bytes:,} "
             + ("✓" if abs(cmp.num_parameters * per - ref.weight_bytes) < 1 else "✗") + ". "
             f"Agreement, KL and max |Δp| compare each precision's next-token distribution with the reference's at all "
             f"{cmp.text_tokens} positions of the text; speed is the median decode pass of {cmp.repeats} greedy runs of "
             f"{cmp.new_tokens} tokens, alternating with the reference's.")
    late = (f"<div class='check'>Stopped at the time limit before {', '.join(map(_esc, cmp.skipped))}: run again to "
            "measure them (rows done are kept).</div>") if cmp.skipped else ""
    greedy = "".join(f"<tr><td>{_esc(r.name)}</td><td class='greedy'>{_esc(r.greedy_text)}</td></tr>" for r in cmp.rows)
    return (f"<div class='mem-table'>{_table(header, rows, classes)}<div class='check'>{_esc(check)}</div>{late}"
            f"<details><summary>Greedy continuations ({cmp.new_tokens} tokens after the text)</summary>"
            f"<table>{greedy}</table></details></div>")


def precision_figure(cmp: "PrecisionComparison") -> go.Figure:
    """Two panels sharing the x axis (weight MB): mean KL from the reference, and ms per decode token."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        "What it costs: mean KL from the reference", "What it runs at: ms per decode token"))
    for r in cmp.rows:  # no text on the points: bfloat16 and float16 sit at one size; colour + symbol + legend name them
        colour = PRECISION_COLOUR.get(r.name, "#666666")
        mb = r.weight_bytes / 1e6
        for col, y in ((1, r.mean_kl), (2, r.ms_per_token)):
            fig.add_trace(go.Scatter(
                x=[mb], y=[y], mode="markers", name=r.name, legendgroup=r.name, showlegend=col == 1,
                marker=dict(size=15, color=colour, symbol=PRECISION_SYMBOL.get(r.name, "circle"),
                            line=dict(width=1, color="#333")),
                hovertemplate=(f"<b>{_esc(r.name)}</b><br>weights {nbytes(r.weight_bytes)}<br>mean KL {_kl(r.mean_kl)}"
                               f"<br>{r.ms_per_token:,.1f} ms/token<br>perplexity {r.perplexity:,.2f}<extra></extra>")),
                row=1, col=col)
    top_kl = max((r.mean_kl for r in cmp.rows), default=0) or 1e-3
    top_ms = max((r.ms_per_token for r in cmp.rows if r.ms_per_token == r.ms_per_token), default=1)
    fig.update_yaxes(title_text="mean KL(reference ‖ precision), nats", range=[-0.08 * top_kl, 1.3 * top_kl], row=1,
                     col=1)
    fig.update_yaxes(title_text="ms per decode token", range=[0, 1.3 * top_ms], row=1, col=2)
    top_mb = max(r.weight_bytes for r in cmp.rows) / 1e6
    for col in (1, 2):
        fig.update_xaxes(title_text="weights (MB)", range=[0, 1.15 * top_mb], row=1, col=col)
    return _layout(fig, 440)


def precision_summary(cmp: "PrecisionComparison") -> str:
    ref = cmp.rows[0]
    parts = []
    for r in cmp.rows[1:]:
        parts.append(f"{r.name} {nbytes(r.weight_bytes)} ({r.weight_bytes / ref.weight_bytes:.0%} of {ref.name}), "
                     f"{r.ms_per_token:,.0f} ms/token, top-1 agreement {r.top1_agreement:.1%}, mean KL {_kl(r.mean_kl)}, "
                     f"perplexity {r.perplexity:,.2f}")
    head = (f"{cmp.label} on {cmp.text_tokens} tokens: {ref.name} {nbytes(ref.weight_bytes)}, {ref.ms_per_token:,.0f} "
            f"ms/token, perplexity {ref.perplexity:,.2f}")
    return head + ("; " + "; ".join(parts) if parts else "") + "."


def precision_rows(cmp: "PrecisionComparison") -> tuple[list[str], list[list]]:
    header = ["precision", "weight_bytes", "bits_per_parameter", "ms_per_token", "reference_ms_per_token",
              "prefill_tokens_per_s", "top1_agreement", "mean_kl", "max_abs_dprob", "perplexity", "first_divergence",
              "greedy_text"]
    rows = [[r.name, r.weight_bytes, round(r.bits_per_parameter, 4), round(r.ms_per_token, 3),
             round(r.reference_ms_per_token, 3), round(r.prefill_tokens_per_s, 2), round(r.top1_agreement, 6),
             r.mean_kl, r.max_abs_dprob, r.perplexity, "" if r.first_divergence is None else r.first_divergence,
             r.greedy_text] for r in cmp.rows]
    return header, rows


# ---------------------------------------------------------------------------------------------------
# KV cache precision


def kv_html(kvc: "KVPrecisionComparison") -> str:
    rows, classes = [], []
    for i, r in enumerate(kvc.rows):
        rows.append([f"<b>{_esc(r.name)}</b>", f"{r.bytes_per_token:,.1f}", f"{r.formula_bytes_per_token:,}",
                     nbytes(r.cache_bytes), f"{r.top1_agreement:.1%}", _kl(r.mean_kl), f"{r.max_abs_dprob:.4f}",
                     _num(r.perplexity, 3), f"{r.ms_per_token:,.1f}", _divergence(r.first_divergence, kvc.new_tokens),
                     f"<span class='desc'>{_esc(r.description)}</span>"])
        classes.append("ref" if i == 0 else "")
    header = ["KV cache", "bytes per token (measured)", "formula", f"held for {kvc.text_tokens} tokens",
              "top-1 agreement", "mean KL (nats)", "max |Δp|", "perplexity", "ms per decode pass",
              "greedy text differs at", "what it is"]
    decoded = kvc.text_tokens - kvc.prefill_tokens
    note = (f"Bytes are read from the cache tensors once the whole text is cached (a quantized layer's 8-bit data and "
            f"its scales); the formula is 2 × layers × KV heads × head dim × bytes per element. The first "
            f"{kvc.prefill_tokens} tokens run in one pass (the quantized cache fixes its scales on them and returns "
            f"them unquantized), then {decoded} decode passes, one per token, each reading every earlier key and value "
            f"from the cache: agreement, KL and max |Δp| compare those {decoded} predictions with the plain cache's.")
    missing = [b for b, ok in kvc.backends.items() if not ok]
    if missing:
        note += f" Not installed here: the {', '.join(missing)} backend{'s' if len(missing) > 1 else ''}."
    late = "<div class='check'>Stopped at the time limit: the rows cover the positions decoded so far.</div>" \
        if kvc.timed_out else ""
    greedy = "".join(f"<tr><td>{_esc(r.name)}</td><td class='greedy'>{_esc(r.greedy_text)}</td></tr>" for r in kvc.rows)
    return (f"<div class='mem-table'>{_table(header, rows, classes)}<div class='check'>{_esc(note)}</div>{late}"
            f"<details><summary>Greedy continuations ({kvc.new_tokens} tokens after the text)</summary>"
            f"<table>{greedy}</table></details></div>")


def kv_figure(kvc: "KVPrecisionComparison") -> go.Figure:
    """Bytes per token of each cache (measured bars, formula marks), and the KL of each decoded position."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.32, 0.68], horizontal_spacing=0.12,
                        subplot_titles=("Bytes per cached token", "KL from the plain cache at each decoded position"))
    names = [r.name for r in kvc.rows]
    fig.add_trace(go.Bar(x=names, y=[r.bytes_per_token for r in kvc.rows], name="measured from the tensors",
                         marker_color=["#000000", "#E69F00", "#D55E00", "#CC79A7"][: len(names)],
                         text=[f"{r.bytes_per_token:,.0f}" for r in kvc.rows], textposition="outside"), row=1, col=1)
    fig.add_trace(go.Scatter(x=names, y=[r.formula_bytes_per_token for r in kvc.rows], mode="markers",
                             name="formula", marker=dict(symbol="line-ew-open", size=34, color="#333",
                                                         line=dict(width=3, color="#333"))),
                  row=1, col=1)
    top = max(r.bytes_per_token for r in kvc.rows)
    fig.update_yaxes(title_text="bytes per token", range=[0, 1.25 * top], row=1, col=1)
    for r, colour in zip(kvc.rows[1:], ["#E69F00", "#D55E00", "#CC79A7"]):
        xs = list(range(kvc.prefill_tokens, kvc.prefill_tokens + len(r.kl_per_position)))
        fig.add_trace(go.Scatter(x=xs, y=[float(v) for v in r.kl_per_position], name=f"{r.name}: KL",
                                 mode="lines" if len(xs) > 40 else "lines+markers",
                                 line=dict(color=colour, width=1.6),
                                 hovertemplate="position %{x}<br>KL %{y:.2e}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="text position (decoded one pass each)", row=1, col=2)
    fig.update_yaxes(title_text="KL(plain ‖ quantized), nats", rangemode="tozero", row=1, col=2)
    return _layout(fig, 420)


def kv_summary(kvc: "KVPrecisionComparison") -> str:
    plain = kvc.rows[0]
    parts = [f"{r.name} holds {r.bytes_per_token:,.0f} bytes per token ({r.bytes_per_token / plain.bytes_per_token:.0%} "
             f"of the plain cache's {plain.bytes_per_token:,.0f}), top-1 agreement {r.top1_agreement:.1%}, mean KL "
             f"{_kl(r.mean_kl)}, perplexity {r.perplexity:,.3f} vs {plain.perplexity:,.3f}; "
             f"{_differs(r.first_divergence, kvc.new_tokens)}" for r in kvc.rows[1:]]
    return f"{kvc.label}, {kvc.text_tokens} tokens: " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------------------------------
# Eviction policies


def policies_html(pc: "PolicyComparison") -> str:
    full = pc.full
    header = ["cache", "tokens kept", "cache bytes (measured)", "formula", "perplexity", "vs full",
              "top-1 agreement with full", "first token evicted at", "seconds"]
    rows, classes = [], []
    for r in [full, *pc.runs]:
        ratio = r.perplexity / full.perplexity
        rows.append([f"<b>{_esc(r.label)}</b>", f"{r.kept_tokens:,}", nbytes(r.cache_bytes),
                     f"{r.kept_tokens:,} × {r.bytes_per_token:,} B "
                     + ("✓" if r.kept_tokens * r.bytes_per_token == r.cache_bytes else "✗"),
                     _num(r.perplexity, 2), "—" if r is full else f"{ratio:.2f}×",
                     "—" if r is full else f"{r.agreement_with(full):.1%}",
                     "never" if r.first_evicted_at is None else f"position {r.first_evicted_at}", f"{r.seconds:,.1f}"])
        classes.append("ref" if r is full else "")
    note = (f"{pc.text_tokens} tokens. Each policy runs the first {min(pc.budget, pc.text_tokens)} tokens in one pass, "
            "then one decode pass per token, keeping at most the budget in every layer; perplexity = exp(mean negative "
            "log-likelihood) over every predicted token. Bytes are read from the cache tensors at the end.")
    late = ("<div class='check'>A run stopped at the time limit: its perplexity covers the positions it reached. Run "
            "again to finish it.</div>") if pc.timed_out else ""
    return f"<div class='mem-table'>{_table(header, rows, classes)}<div class='check'>{_esc(note)}</div>{late}</div>"


def policies_summary(pc: "PolicyComparison") -> str:
    full = pc.full
    parts = [f"{r.label}: perplexity {r.perplexity:,.2f} ({r.perplexity / full.perplexity:.2f}× full), "
             f"{nbytes(r.cache_bytes)}" for r in pc.runs]
    return (f"Full cache: perplexity {full.perplexity:,.2f}, {nbytes(full.cache_bytes)} for {pc.text_tokens} tokens; "
            + "; ".join(parts) + ".")


def kept_figure(pc: "PolicyComparison") -> go.Figure:
    """Which text positions each cache holds at the end: one row per policy, shaded by the share of layers holding
    the position (window and sinks: every layer holds the same ones; heavy hitters: each layer its own)."""
    runs = [pc.full, *pc.runs]
    n = pc.text_tokens
    z, hover = [], []
    for r in runs:
        counts = [0] * n
        for layer in r.kept_by_layer:
            for p in layer:
                counts[p] += 1
        layers = max(1, len(r.kept_by_layer))
        z.append([c / layers for c in counts])
        hover.append([f"{_esc(pc.pieces[p]) if p < len(pc.pieces) else ''}<br>position {p}<br>held by {counts[p]} of "
                      f"{layers} layers" for p in range(n)])
    labels = [r.label for r in runs]
    fig = go.Figure(go.Heatmap(z=z, y=labels, x=list(range(n)), zmin=0, zmax=1, xgap=0, ygap=3,
                               colorscale=[[0, "#f4f4f4"], [0.001, "#cfe3f1"], [1, "#0b4f8a"]],
                               colorbar=dict(title=dict(text="share of layers", side="right"), len=0.9, thickness=14),
                               customdata=hover, hovertemplate="%{customdata}<extra>%{y}</extra>"))
    fig.update_xaxes(title_text="text position", range=[-0.5, n - 0.5])
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(fig, 150 + 55 * len(runs)).update_layout(margin=dict(l=20, b=60))


def kept_summary(pc: "PolicyComparison") -> str:
    def spans(positions: list[int]) -> str:
        out, start = [], None
        for i, p in enumerate(positions):
            if start is None:
                start = p
            if i + 1 == len(positions) or positions[i + 1] != p + 1:
                out.append(f"{start}" if start == p else f"{start}–{p}")
                start = None
        return ", ".join(out[:6]) + (" …" if len(out) > 6 else "")

    parts = []
    for r in pc.runs:
        if r.policy == "heavy_hitters":
            first = sum(1 for layer in r.kept_by_layer if 0 in layer)
            parts.append(f"{r.label}: each layer its own {r.kept_tokens} positions, position 0 kept by {first} of "
                         f"{len(r.kept_by_layer)} layers")
        else:
            parts.append(f"{r.label}: positions {spans(r.kept_positions)}")
    return f"At the end of the {pc.text_tokens}-token text the caches hold: " + "; ".join(parts) + "."


def first_token_figure(full: "PolicyRun") -> go.Figure:
    """Mean attention weight each layer puts on the first token (over its heads and every later query)."""
    weights = full.first_token_attention
    per_layer = [float(row.mean()) for row in weights]
    fig = go.Figure(go.Bar(x=[f"{i}" for i in range(len(per_layer))], y=per_layer, marker_color="#0072B2",
                           customdata=[[float(row.max())] for row in weights],
                           hovertemplate="layer %{x}<br>mean over heads %{y:.2f}<br>busiest head "
                                         "%{customdata[0]:.2f}<extra></extra>", name="attention on the first token"))
    n = full.text_tokens  # query q spreading evenly over its q + 1 keys gives token 0 a weight of 1 / (q + 1)
    even = sum(1 / (q + 1) for q in range(1, n)) / max(1, n - 1)
    fig.add_trace(go.Scatter(x=[f"{i}" for i in range(len(per_layer))], y=[even] * len(per_layer), mode="lines",
                             line=dict(color="#555", dash="dot", width=2), hoverinfo="skip",
                             name=f"if every query spread its attention evenly: {even:.2f}"))
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="attention on token 0", range=[0, 1])
    return _layout(fig, 380, "Where attention goes: the first token (the attention sink)")


def first_token_summary(full: "PolicyRun") -> str:
    per_layer = full.first_token_attention.mean(1)
    heavy = int((per_layer > 0.3).sum())
    return (f"Averaged over heads and queries, layers put {float(per_layer.mean()):.0%} of their attention on the first "
            f"token (from {float(per_layer.min()):.0%} in layer {int(per_layer.argmin())} to "
            f"{float(per_layer.max()):.0%} in layer {int(per_layer.argmax())}); {heavy} of {len(per_layer)} layers put "
            "more than 30% there. Evict it and that mass lands on other tokens.")


def policies_rows(pc: "PolicyComparison") -> tuple[list[str], list[list]]:
    header = ["policy", "budget", "sinks", "recent", "perplexity", "top1_agreement_with_full", "cache_bytes",
              "kept_positions", "first_evicted_at", "seconds"]
    rows = [[r.policy, r.budget, r.sinks, r.recent, r.perplexity,
             1.0 if r is pc.full else r.agreement_with(pc.full), r.cache_bytes, " ".join(map(str, r.kept_positions)),
             "" if r.first_evicted_at is None else r.first_evicted_at, round(r.seconds, 3)] for r in [pc.full, *pc.runs]]
    return header, rows


def sweep_figure(sweep: "BudgetSweep") -> go.Figure:
    fig = go.Figure()
    for policy, runs in sweep.runs.items():
        if not runs:
            continue
        colour, marker, dash = POLICY_STYLE[policy]
        fig.add_trace(go.Scatter(
            x=[r.budget for r in runs], y=[r.perplexity for r in runs], mode="lines+markers",
            name=runs[0].label.split(" (")[0], line=dict(color=colour, dash=dash, width=2.5),
            marker=dict(symbol=marker, size=10, color=colour),
            customdata=[[nbytes(r.cache_bytes)] for r in runs],
            hovertemplate="budget %{x} tokens<br>perplexity %{y:.2f}<br>cache %{customdata[0]}<extra></extra>"))
    # A trace, not add_hline: on a log axis plotly places an hline's annotation at the raw value, off the plot.
    fig.add_trace(go.Scatter(x=[sweep.budgets[0], sweep.budgets[-1]], y=[sweep.full.perplexity] * 2, mode="lines",
                             line=dict(color="#000", dash="dot", width=2), hoverinfo="skip",
                             name=f"full cache ({sweep.text_tokens} tokens): {sweep.full.perplexity:,.2f}"))
    fig.update_xaxes(title_text="budget: tokens each layer keeps (log scale)", type="log",
                     tickvals=sweep.budgets, ticktext=[str(b) for b in sweep.budgets])
    values = [r.perplexity for runs in sweep.runs.values() for r in runs] + [sweep.full.perplexity]
    low, high = min(values) * 0.9, max(values) * 1.15
    ticks = [m * 10 ** k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5) if low <= m * 10 ** k <= high]
    fig.update_yaxes(title_text="perplexity of the text (log scale)", type="log", tickvals=ticks,
                     ticktext=[f"{t:,g}" for t in ticks], range=[math.log10(low), math.log10(high)])
    return _layout(fig, 420, f"Perplexity as the budget grows ({sweep.sinks} sinks for StreamingLLM)")


def sweep_summary(sweep: "BudgetSweep") -> str:
    parts = []
    for policy, runs in sweep.runs.items():
        if runs:
            parts.append(runs[0].label.split(" (")[0] + ": " + ", ".join(f"{r.perplexity:,.1f} at {r.budget}" for r in runs))
    late = " Stopped at the time limit: run it again to measure the rest." if sweep.timed_out else ""
    return (f"Full cache {sweep.full.perplexity:,.2f} over {sweep.text_tokens} tokens. " + "; ".join(parts) + "." + late)


# ---------------------------------------------------------------------------------------------------
# Sliding-window layers


def layer_kind_figure(m: "LayerKindMemory") -> go.Figure:
    """Stacked bars per context length: the sliding-window layers' bytes at the bottom, the global layers' on top
    (measured from the cache tensors), the formula's marks at the top of each part, and what every layer keeping
    every token would hold."""
    fig = go.Figure()
    x = [f"{n:,}" for n in m.lengths]
    tallest = max(lb + gb for lb, gb in zip(m.local_bytes, m.global_bytes))

    def label(values: list[int]) -> list[str]:  # no text in a part too thin to hold it (the hover has it)
        return [nbytes(v) if v > 0.2 * tallest else "" for v in values]

    fig.add_trace(go.Bar(x=x, y=m.local_bytes, name=f"{len(m.local_layers)} sliding-window layers (keep the last "
                                                     f"{m.window - 1})",
                         marker_color=LOCAL, marker_pattern=dict(shape="/", fgcolor="#ffffff", solidity=0.25),
                         text=label(m.local_bytes), textposition="inside", insidetextanchor="middle"))
    fig.add_trace(go.Bar(x=x, y=m.global_bytes, name=f"{len(m.global_layers)} global layers (keep every token)",
                         marker_color=GLOBAL, text=label(m.global_bytes), textposition="inside",
                         insidetextanchor="middle"))
    tops = [lf + gf for lf, gf in zip(m.local_formula, m.global_formula)]
    fig.add_trace(go.Scatter(x=x + x, y=m.local_formula + tops, mode="markers", name="formula",
                             marker=dict(symbol="line-ew-open", size=40, color="#333", line=dict(width=3, color="#333"))))
    layers = len(m.local_layers) + len(m.global_layers)
    every = [layers * n * m.bytes_per_token_layer for n in m.lengths]
    fig.add_trace(go.Scatter(x=x, y=every, mode="lines+markers", name=f"if all {layers} layers kept every token",
                             line=dict(color="#555", dash="dot", width=2), marker=dict(size=7, color="#555")))
    fig.update_layout(barmode="stack", bargap=0.35)
    fig.update_xaxes(title_text="tokens in the cache")
    fig.update_yaxes(title_text="KV cache (bytes)", range=[0, 1.1 * max(every)])
    return _layout(fig, 440, "KV cache held by each kind of layer as the context grows")


def layer_kind_summary(m: "LayerKindMemory") -> str:
    last = len(m.lengths) - 1
    total = m.local_bytes[last] + m.global_bytes[last]
    every = (len(m.local_layers) + len(m.global_layers)) * m.bytes_per_token_layer * m.lengths[last]
    return (f"At {m.lengths[last]:,} tokens the {len(m.local_layers)} sliding-window layers hold "
            f"{nbytes(m.local_bytes[last])} (capped at {m.window - 1} tokens each) and the {len(m.global_layers)} global "
            f"layers {nbytes(m.global_bytes[last])}: {nbytes(total)} in all, where every layer keeping every token would "
            f"need {nbytes(every)}. Measured bytes "
            + ("equal the formula at every length." if m.matches_formula else "differ from the formula."))
