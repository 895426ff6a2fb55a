"""Memory tab views: pure functions of the dataclasses `inference.precision` and `inference.kv_policies` return.

    precision_html / precision_figure / precision_summary   weights at several precisions: bytes, speed, agreement
    kv_html / kv_figure / kv_summary                         the plain KV cache against a quantized one
    policies_html / kept_figure / first_token_figure         eviction policies at one budget: perplexity, bytes,
                                                             which positions each kept, the attention sink
    sweep_figure / sweep_summary                             perplexity of each policy as the budget grows
    layer_kind_figure / layer_kind_summary                   bytes of local vs global layers as the context grows
    *_rows                                                   the rows of each CSV download (header, rows)

Colours are Okabe-Ito (colour-blind safe); each policy also has its own marker and dash, so the lines read in grey.
Every builder that writes words takes `lang` (the catalogue's language, assets/i18n/<lang>/memory.yaml); the CSV rows
stay English (their headers are data).
"""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..i18n import DEFAULT, t
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
.mem-table th, .mem-table td { border-bottom: 1px solid var(--border-color-primary); padding: .25rem .55rem; text-align: end; }
.mem-table th { font-weight: 600; vertical-align: bottom; }
.mem-table td { white-space: nowrap; }
.mem-table td:first-child, .mem-table th:first-child { text-align: start; white-space: normal; min-width: 9rem; }
.mem-table tr.ref td { font-weight: 600; }
.mem-table .desc { display: inline-block; text-align: start; font-size: .82rem; color: var(--body-text-color-subdued);
                   min-width: 16rem; max-width: 24rem; white-space: normal; }
.mem-table { overflow-x: auto; }
.mem-table .check { margin: .35rem 0; font-size: .92rem; }
.mem-table .greedy { font-family: var(--font-mono); font-size: .82rem; text-align: left; direction: ltr; white-space: pre-wrap; }
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


def _headers(keys: list[str], lang: str, **values) -> list[str]:
    """A table's column headers, from the catalogue (escaped: they go into HTML)."""
    return [_esc(t(f"memory.col.{key}", lang, **values)) for key in keys]


def _clauses(parts: list[str], lang: str) -> str:
    """Parts of a summary joined as this language joins the clauses of a sentence ("; " in English)."""
    return t("memory.sep", lang).join(parts)


def sentences(lang: str, *parts: str) -> str:
    """Whole sentences one after another, as this language writes them (English: a space between; Chinese: none)."""
    text = parts[0]
    for part in parts[1:]:
        text = t("memory.sentences", lang, first=text, second=part)
    return text


def _hover(*lines: str) -> str:
    return "<br>".join(lines)


# The texts `inference` gives in English (a precision's and a KV cache's description, a policy's label), read from
# the catalogue when it has them; a text the catalogue does not know (a newer inference) is shown as it came.
def _described(kind: str, name: str, english: str, lang: str, **values) -> str:
    key = f"memory.{kind}.{name}"
    try:
        if t(key, DEFAULT, **values) != english:
            return english
    except KeyError:
        return english
    return t(key, lang, **values)


def precision_description(name: str, english: str, lang: str = DEFAULT) -> str:
    group = re.search(r"per (\d+) inputs", english)
    return _described("precision_desc", name, english, lang, group=group.group(1) if group else "")


def kv_name(name: str, lang: str = DEFAULT) -> str:
    """A KV cache's row name: "plain (float32)" reads in `lang`; a backend's name (fp8, quanto, hqq) stays."""
    plain = re.fullmatch(r"plain \((\w+)\)", name)
    return t("memory.kv_plain", lang, dtype=plain.group(1)) if plain else name


def kv_description(name: str, english: str, lang: str = DEFAULT) -> str:
    return _described("kv_desc", "plain" if name.startswith("plain (") else name, english, lang)


def policy_name(policy: str, lang: str = DEFAULT, short: bool = False) -> str:
    """A policy's name ("sinks + window (StreamingLLM)"); `short` without what it is modelled on ("sinks + window")."""
    return t(f"memory.policy_short.{policy}" if short else f"memory.policy.{policy}", lang)


def policy_label(run: "PolicyRun", lang: str = DEFAULT) -> str:
    """A run's label in `lang`, in English exactly `run.label` ("sinks + window (StreamingLLM) (8 tokens, 2 sinks)")."""
    if run.policy not in POLICY_STYLE:
        return run.label
    if run.policy == "full":
        return policy_name("full", lang)
    return t(f"memory.label.{run.policy}", lang, name=policy_name(run.policy, lang), budget=run.budget,
             sinks=run.sinks, recent=run.recent)


# ---------------------------------------------------------------------------------------------------
# Weights


def _divergence(index: int | None, total: int, lang: str = DEFAULT) -> str:
    return t("memory.never", lang) if index is None else t("memory.token_of", lang, index=index + 1, total=total)


def _differs(index: int | None, total: int, lang: str = DEFAULT) -> str:
    return (t("memory.differs_never", lang, total=total) if index is None
            else t("memory.differs_at", lang, index=index + 1, total=total))


def _greedy_details(rows, new_tokens: int, name, lang: str) -> str:
    greedy = "".join(f"<tr><td>{_esc(name(r))}</td><td class='greedy'>{_esc(r.greedy_text)}</td></tr>" for r in rows)
    return (f"<details><summary>{_esc(t('memory.greedy_continuations', lang, n=new_tokens))}</summary>"
            f"<table>{greedy}</table></details>")


def precision_html(cmp: "PrecisionComparison", lang: str = DEFAULT) -> str:
    """The table: one row per precision, the reference first, and the checks under it."""
    ref = cmp.rows[0]
    rows, classes = [], []
    for r in cmp.rows:
        speed = "" if r.is_reference else f" ({r.speedup:.2f}×)"
        rows.append([
            f"<b>{_esc(r.name)}</b>", nbytes(r.weight_bytes), f"{r.bits_per_parameter:.2f}",
            f"{r.ms_per_token:,.1f}{speed}", f"{r.prefill_tokens_per_s:,.0f}", f"{r.top1_agreement:.1%}", _kl(r.mean_kl),
            f"{r.max_abs_dprob:.3f}", _num(r.perplexity, 2),
            _esc(_divergence(r.first_divergence, cmp.new_tokens, lang)),
            f"<span class='desc'>{_esc(precision_description(r.name, r.description, lang))}"
            + (_esc(t("memory.quantized_layers", lang, n=r.quantized_layers)) if r.quantized_layers else "")
            + (_esc(t("memory.skipped_layers", lang, n=r.skipped_layers)) if r.skipped_layers else "") + "</span>",
        ])
        classes.append("ref" if r.is_reference else "")
    header = _headers(["precision", "weights", "bits", "ms_decode", "prefill_rate", "top1_with", "mean_kl", "max_dp",
                       "perplexity", "differs_at", "what"], lang, ref=ref.name)
    per = ref.weight_bytes / cmp.num_parameters
    check = t("memory.precision_check", lang, params=cmp.num_parameters, per=per, formula=cmp.num_parameters * per,
              measured=ref.weight_bytes, mark="✓" if abs(cmp.num_parameters * per - ref.weight_bytes) < 1 else "✗",
              positions=cmp.text_tokens, repeats=cmp.repeats, new_tokens=cmp.new_tokens)
    late = (f"<div class='check'>{_esc(t('memory.precision_late', lang, names=', '.join(cmp.skipped)))}</div>"
            if cmp.skipped else "")
    return (f"<div class='mem-table'>{_table(header, rows, classes)}<div class='check'>{_esc(check)}</div>{late}"
            f"{_greedy_details(cmp.rows, cmp.new_tokens, lambda r: r.name, lang)}</div>")


def precision_figure(cmp: "PrecisionComparison", lang: str = DEFAULT) -> go.Figure:
    """Two panels sharing the x axis (weight MB): mean KL from the reference, and ms per decode token."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
        t("memory.fig.precision_kl", lang), t("memory.fig.precision_ms", lang)))
    for r in cmp.rows:  # no text on the points: bfloat16 and float16 sit at one size; colour + symbol + legend name them
        colour = PRECISION_COLOUR.get(r.name, "#666666")
        mb = r.weight_bytes / 1e6
        hover = _hover(f"<b>{_esc(r.name)}</b>", _esc(t("memory.hover.weights", lang, value=nbytes(r.weight_bytes))),
                       _esc(t("memory.hover.mean_kl", lang, value=_kl(r.mean_kl))),
                       _esc(t("memory.hover.ms_token", lang, ms=r.ms_per_token)),
                       _esc(t("memory.hover.perplexity", lang, value=f"{r.perplexity:,.2f}")))
        for col, y in ((1, r.mean_kl), (2, r.ms_per_token)):
            fig.add_trace(go.Scatter(
                x=[mb], y=[y], mode="markers", name=r.name, legendgroup=r.name, showlegend=col == 1,
                marker=dict(size=15, color=colour, symbol=PRECISION_SYMBOL.get(r.name, "circle"),
                            line=dict(width=1, color="#333")),
                hovertemplate=hover + "<extra></extra>"),
                row=1, col=col)
    top_kl = max((r.mean_kl for r in cmp.rows), default=0) or 1e-3
    top_ms = max((r.ms_per_token for r in cmp.rows if r.ms_per_token == r.ms_per_token), default=1)
    fig.update_yaxes(title_text=t("memory.axis.kl_precision", lang), range=[-0.08 * top_kl, 1.3 * top_kl], row=1,
                     col=1)
    fig.update_yaxes(title_text=t("memory.axis.ms_decode", lang), range=[0, 1.3 * top_ms], row=1, col=2)
    top_mb = max(r.weight_bytes for r in cmp.rows) / 1e6
    for col in (1, 2):
        fig.update_xaxes(title_text=t("memory.axis.weights_mb", lang), range=[0, 1.15 * top_mb], row=1, col=col)
    return _layout(fig, 440)


def precision_summary(cmp: "PrecisionComparison", lang: str = DEFAULT) -> str:
    ref = cmp.rows[0]
    parts = [t("memory.precision_summary_head", lang, model=cmp.label, n=cmp.text_tokens, ref=ref.name,
               weights=nbytes(ref.weight_bytes), ms=ref.ms_per_token, ppl=ref.perplexity)]
    for r in cmp.rows[1:]:
        parts.append(t("memory.precision_summary_row", lang, name=r.name, weights=nbytes(r.weight_bytes),
                       share=r.weight_bytes / ref.weight_bytes, ref=ref.name, ms=r.ms_per_token,
                       top1=r.top1_agreement, kl=_kl(r.mean_kl), ppl=r.perplexity))
    return _clauses(parts, lang) + t("memory.stop", lang)


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


def kv_html(kvc: "KVPrecisionComparison", lang: str = DEFAULT) -> str:
    rows, classes = [], []
    for i, r in enumerate(kvc.rows):
        rows.append([f"<b>{_esc(kv_name(r.name, lang))}</b>", f"{r.bytes_per_token:,.1f}",
                     f"{r.formula_bytes_per_token:,}", nbytes(r.cache_bytes), f"{r.top1_agreement:.1%}",
                     _kl(r.mean_kl), f"{r.max_abs_dprob:.4f}", _num(r.perplexity, 3), f"{r.ms_per_token:,.1f}",
                     _esc(_divergence(r.first_divergence, kvc.new_tokens, lang)),
                     f"<span class='desc'>{_esc(kv_description(r.name, r.description, lang))}</span>"])
        classes.append("ref" if i == 0 else "")
    header = _headers(["kv_cache", "bytes_measured", "formula", "held_for", "top1", "mean_kl", "max_dp", "perplexity",
                       "ms_pass", "differs_at", "what"], lang, n=kvc.text_tokens)
    decoded = kvc.text_tokens - kvc.prefill_tokens
    note = t("memory.kv_note", lang, prefill=kvc.prefill_tokens, decoded=decoded)
    missing = [b for b, ok in kvc.backends.items() if not ok]
    if missing:
        note = sentences(lang, note, t("memory.kv_missing_many" if len(missing) > 1 else "memory.kv_missing_one",
                                       lang, names=", ".join(missing)))
    late = f"<div class='check'>{_esc(t('memory.kv_late', lang))}</div>" if kvc.timed_out else ""
    return (f"<div class='mem-table'>{_table(header, rows, classes)}<div class='check'>{_esc(note)}</div>{late}"
            f"{_greedy_details(kvc.rows, kvc.new_tokens, lambda r: kv_name(r.name, lang), lang)}</div>")


def kv_figure(kvc: "KVPrecisionComparison", lang: str = DEFAULT) -> go.Figure:
    """Bytes per token of each cache (measured bars, formula marks), and the KL of each decoded position."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.32, 0.68], horizontal_spacing=0.12,
                        subplot_titles=(t("memory.fig.kv_bytes", lang), t("memory.fig.kv_kl", lang)))
    names = [kv_name(r.name, lang) for r in kvc.rows]
    fig.add_trace(go.Bar(x=names, y=[r.bytes_per_token for r in kvc.rows], name=t("memory.legend.measured", lang),
                         marker_color=["#000000", "#E69F00", "#D55E00", "#CC79A7"][: len(names)],
                         text=[f"{r.bytes_per_token:,.0f}" for r in kvc.rows], textposition="outside"), row=1, col=1)
    fig.add_trace(go.Scatter(x=names, y=[r.formula_bytes_per_token for r in kvc.rows], mode="markers",
                             name=t("memory.legend.formula", lang),
                             marker=dict(symbol="line-ew-open", size=34, color="#333", line=dict(width=3, color="#333"))),
                  row=1, col=1)
    top = max(r.bytes_per_token for r in kvc.rows)
    fig.update_yaxes(title_text=t("memory.axis.bytes_per_token", lang), range=[0, 1.25 * top], row=1, col=1)
    hover = _hover(_esc(t("memory.hover.position", lang, p="%{x}")), _esc(t("memory.hover.kl", lang, value="%{y:.2e}")))
    for r, colour in zip(kvc.rows[1:], ["#E69F00", "#D55E00", "#CC79A7"]):
        xs = list(range(kvc.prefill_tokens, kvc.prefill_tokens + len(r.kl_per_position)))
        fig.add_trace(go.Scatter(x=xs, y=[float(v) for v in r.kl_per_position],
                                 name=t("memory.legend.kl", lang, name=kv_name(r.name, lang)),
                                 mode="lines" if len(xs) > 40 else "lines+markers",
                                 line=dict(color=colour, width=1.6),
                                 hovertemplate=hover + "<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text=t("memory.axis.position_decoded", lang), row=1, col=2)
    fig.update_yaxes(title_text=t("memory.axis.kl_quantized", lang), rangemode="tozero", row=1, col=2)
    return _layout(fig, 420)


def kv_summary(kvc: "KVPrecisionComparison", lang: str = DEFAULT) -> str:
    plain = kvc.rows[0]
    parts = [t("memory.kv_summary_row", lang, name=kv_name(r.name, lang), bytes=r.bytes_per_token,
               share=r.bytes_per_token / plain.bytes_per_token, plain=plain.bytes_per_token, top1=r.top1_agreement,
               kl=_kl(r.mean_kl), ppl=r.perplexity, plain_ppl=plain.perplexity,
               differs=_differs(r.first_divergence, kvc.new_tokens, lang)) for r in kvc.rows[1:]]
    return t("memory.kv_summary", lang, model=kvc.label, n=kvc.text_tokens, parts=_clauses(parts, lang))


# ---------------------------------------------------------------------------------------------------
# Eviction policies


def policies_html(pc: "PolicyComparison", lang: str = DEFAULT) -> str:
    full = pc.full
    header = _headers(["cache", "kept", "cache_bytes", "formula", "perplexity", "vs_full", "top1_full", "evicted_at",
                       "seconds"], lang)
    rows, classes = [], []
    for r in [full, *pc.runs]:
        ratio = r.perplexity / full.perplexity
        rows.append([f"<b>{_esc(policy_label(r, lang))}</b>", f"{r.kept_tokens:,}", nbytes(r.cache_bytes),
                     f"{r.kept_tokens:,} × {r.bytes_per_token:,} B "
                     + ("✓" if r.kept_tokens * r.bytes_per_token == r.cache_bytes else "✗"),
                     _num(r.perplexity, 2), "—" if r is full else f"{ratio:.2f}×",
                     "—" if r is full else f"{r.agreement_with(full):.1%}",
                     _esc(t("memory.never", lang) if r.first_evicted_at is None
                          else t("memory.position", lang, p=r.first_evicted_at)), f"{r.seconds:,.1f}"])
        classes.append("ref" if r is full else "")
    note = t("memory.policies_note", lang, n=pc.text_tokens, first=min(pc.budget, pc.text_tokens))
    late = f"<div class='check'>{_esc(t('memory.policies_late', lang))}</div>" if pc.timed_out else ""
    return f"<div class='mem-table'>{_table(header, rows, classes)}<div class='check'>{_esc(note)}</div>{late}</div>"


def policies_summary(pc: "PolicyComparison", lang: str = DEFAULT) -> str:
    full = pc.full
    parts = [t("memory.policies_summary_row", lang, label=policy_label(r, lang), ppl=r.perplexity,
               ratio=r.perplexity / full.perplexity, bytes=nbytes(r.cache_bytes)) for r in pc.runs]
    return t("memory.policies_summary", lang, ppl=full.perplexity, bytes=nbytes(full.cache_bytes), n=pc.text_tokens,
             parts=_clauses(parts, lang))


def kept_figure(pc: "PolicyComparison", lang: str = DEFAULT) -> go.Figure:
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
        hover.append([_hover(_esc(pc.pieces[p]) if p < len(pc.pieces) else "",
                             _esc(t("memory.hover.position", lang, p=p)),
                             _esc(t("memory.hover.held", lang, count=counts[p], layers=layers))) for p in range(n)])
    labels = [policy_label(r, lang) for r in runs]
    fig = go.Figure(go.Heatmap(z=z, y=labels, x=list(range(n)), zmin=0, zmax=1, xgap=0, ygap=3,
                               colorscale=[[0, "#f4f4f4"], [0.001, "#cfe3f1"], [1, "#0b4f8a"]],
                               colorbar=dict(title=dict(text=t("memory.legend.share_layers", lang), side="right"),
                                             len=0.9, thickness=14),
                               customdata=hover, hovertemplate="%{customdata}<extra>%{y}</extra>"))
    fig.update_xaxes(title_text=t("memory.axis.position", lang), range=[-0.5, n - 0.5])
    fig.update_yaxes(autorange="reversed", automargin=True)
    return _layout(fig, 150 + 55 * len(runs)).update_layout(margin=dict(l=20, b=60))


def kept_summary(pc: "PolicyComparison", lang: str = DEFAULT) -> str:
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
            parts.append(t("memory.kept_summary_hh", lang, label=policy_label(r, lang), kept=r.kept_tokens, first=first,
                           layers=len(r.kept_by_layer)))
        else:
            parts.append(t("memory.kept_summary_row", lang, label=policy_label(r, lang),
                           positions=spans(r.kept_positions)))
    return t("memory.kept_summary", lang, n=pc.text_tokens, parts=_clauses(parts, lang))


def first_token_figure(full: "PolicyRun", lang: str = DEFAULT) -> go.Figure:
    """Mean attention weight each layer puts on the first token (over its heads and every later query)."""
    weights = full.first_token_attention
    per_layer = [float(row.mean()) for row in weights]
    hover = _hover(_esc(t("memory.hover.layer", lang, layer="%{x}")),
                   _esc(t("memory.hover.mean_heads", lang, value="%{y:.2f}")),
                   _esc(t("memory.hover.busiest_head", lang, value="%{customdata[0]:.2f}")))
    fig = go.Figure(go.Bar(x=[f"{i}" for i in range(len(per_layer))], y=per_layer, marker_color="#0072B2",
                           customdata=[[float(row.max())] for row in weights],
                           hovertemplate=hover + "<extra></extra>", name=t("memory.legend.first_token", lang)))
    n = full.text_tokens  # query q spreading evenly over its q + 1 keys gives token 0 a weight of 1 / (q + 1)
    even = sum(1 / (q + 1) for q in range(1, n)) / max(1, n - 1)
    fig.add_trace(go.Scatter(x=[f"{i}" for i in range(len(per_layer))], y=[even] * len(per_layer), mode="lines",
                             line=dict(color="#555", dash="dot", width=2), hoverinfo="skip",
                             name=t("memory.legend.even", lang, even=even)))
    fig.update_xaxes(title_text=t("memory.axis.layer", lang))
    fig.update_yaxes(title_text=t("memory.axis.on_token0", lang), range=[0, 1])
    return _layout(fig, 380, t("memory.fig.first_token", lang))


def first_token_summary(full: "PolicyRun", lang: str = DEFAULT) -> str:
    per_layer = full.first_token_attention.mean(1)
    heavy = int((per_layer > 0.3).sum())
    return t("memory.first_summary", lang, mean=float(per_layer.mean()), low=float(per_layer.min()),
             low_layer=int(per_layer.argmin()), high=float(per_layer.max()), high_layer=int(per_layer.argmax()),
             heavy=heavy, layers=len(per_layer))


def policies_rows(pc: "PolicyComparison") -> tuple[list[str], list[list]]:
    header = ["policy", "budget", "sinks", "recent", "perplexity", "top1_agreement_with_full", "cache_bytes",
              "kept_positions", "first_evicted_at", "seconds"]
    rows = [[r.policy, r.budget, r.sinks, r.recent, r.perplexity,
             1.0 if r is pc.full else r.agreement_with(pc.full), r.cache_bytes, " ".join(map(str, r.kept_positions)),
             "" if r.first_evicted_at is None else r.first_evicted_at, round(r.seconds, 3)] for r in [pc.full, *pc.runs]]
    return header, rows


def _sweep_name(policy: str, runs: list, lang: str) -> str:
    """A policy's legend name in the sweep (its label up to " (", in English: "sinks + window")."""
    return policy_name(policy, lang, short=True) if policy in POLICY_STYLE else runs[0].label.split(" (")[0]


def sweep_figure(sweep: "BudgetSweep", lang: str = DEFAULT) -> go.Figure:
    fig = go.Figure()
    hover = _hover(_esc(t("memory.hover.budget", lang, budget="%{x}")),
                   _esc(t("memory.hover.perplexity", lang, value="%{y:.2f}")),
                   _esc(t("memory.hover.cache", lang, value="%{customdata[0]}")))
    for policy, runs in sweep.runs.items():
        if not runs:
            continue
        colour, marker, dash = POLICY_STYLE[policy]
        fig.add_trace(go.Scatter(
            x=[r.budget for r in runs], y=[r.perplexity for r in runs], mode="lines+markers",
            name=_sweep_name(policy, runs, lang), line=dict(color=colour, dash=dash, width=2.5),
            marker=dict(symbol=marker, size=10, color=colour),
            customdata=[[nbytes(r.cache_bytes)] for r in runs],
            hovertemplate=hover + "<extra></extra>"))
    # A trace, not add_hline: on a log axis plotly places an hline's annotation at the raw value, off the plot.
    fig.add_trace(go.Scatter(x=[sweep.budgets[0], sweep.budgets[-1]], y=[sweep.full.perplexity] * 2, mode="lines",
                             line=dict(color="#000", dash="dot", width=2), hoverinfo="skip",
                             name=t("memory.legend.full_cache", lang, n=sweep.text_tokens, ppl=sweep.full.perplexity)))
    fig.update_xaxes(title_text=t("memory.axis.budget_log", lang), type="log",
                     tickvals=sweep.budgets, ticktext=[str(b) for b in sweep.budgets])
    values = [r.perplexity for runs in sweep.runs.values() for r in runs] + [sweep.full.perplexity]
    low, high = min(values) * 0.9, max(values) * 1.15
    ticks = [m * 10 ** k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5) if low <= m * 10 ** k <= high]
    fig.update_yaxes(title_text=t("memory.axis.perplexity_log", lang), type="log", tickvals=ticks,
                     ticktext=[f"{v:,g}" for v in ticks], range=[math.log10(low), math.log10(high)])
    return _layout(fig, 420, t("memory.fig.sweep", lang, sinks=sweep.sinks))


def sweep_summary(sweep: "BudgetSweep", lang: str = DEFAULT) -> str:
    parts = []
    for policy, runs in sweep.runs.items():
        if runs:
            points = t("memory.comma", lang).join(t("memory.sweep_point", lang, ppl=r.perplexity, budget=r.budget)
                                                  for r in runs)
            parts.append(t("memory.sweep_row", lang, name=_sweep_name(policy, runs, lang), points=points))
    summary = t("memory.sweep_summary", lang, ppl=sweep.full.perplexity, n=sweep.text_tokens,
                parts=_clauses(parts, lang))
    return sentences(lang, summary, t("memory.sweep_late", lang)) if sweep.timed_out else summary


# ---------------------------------------------------------------------------------------------------
# Sliding-window layers


def layer_kind_figure(m: "LayerKindMemory", lang: str = DEFAULT) -> go.Figure:
    """Stacked bars per context length: the sliding-window layers' bytes at the bottom, the global layers' on top
    (measured from the cache tensors), the formula's marks at the top of each part, and what every layer keeping
    every token would hold."""
    fig = go.Figure()
    x = [f"{n:,}" for n in m.lengths]
    tallest = max(lb + gb for lb, gb in zip(m.local_bytes, m.global_bytes))

    def label(values: list[int]) -> list[str]:  # no text in a part too thin to hold it (the hover has it)
        return [nbytes(v) if v > 0.2 * tallest else "" for v in values]

    fig.add_trace(go.Bar(x=x, y=m.local_bytes,
                         name=t("memory.legend.local_layers", lang, n=len(m.local_layers), kept=m.window - 1),
                         marker_color=LOCAL, marker_pattern=dict(shape="/", fgcolor="#ffffff", solidity=0.25),
                         text=label(m.local_bytes), textposition="inside", insidetextanchor="middle"))
    fig.add_trace(go.Bar(x=x, y=m.global_bytes, name=t("memory.legend.global_layers", lang, n=len(m.global_layers)),
                         marker_color=GLOBAL, text=label(m.global_bytes), textposition="inside",
                         insidetextanchor="middle"))
    tops = [lf + gf for lf, gf in zip(m.local_formula, m.global_formula)]
    fig.add_trace(go.Scatter(x=x + x, y=m.local_formula + tops, mode="markers", name=t("memory.legend.formula", lang),
                             marker=dict(symbol="line-ew-open", size=40, color="#333", line=dict(width=3, color="#333"))))
    layers = len(m.local_layers) + len(m.global_layers)
    every = [layers * n * m.bytes_per_token_layer for n in m.lengths]
    fig.add_trace(go.Scatter(x=x, y=every, mode="lines+markers", name=t("memory.legend.every_layer", lang, n=layers),
                             line=dict(color="#555", dash="dot", width=2), marker=dict(size=7, color="#555")))
    fig.update_layout(barmode="stack", bargap=0.35)
    fig.update_xaxes(title_text=t("memory.axis.tokens_cached", lang))
    fig.update_yaxes(title_text=t("memory.axis.kv_bytes", lang), range=[0, 1.1 * max(every)])
    return _layout(fig, 440, t("memory.fig.layer_kinds", lang))


def layer_kind_summary(m: "LayerKindMemory", lang: str = DEFAULT) -> str:
    last = len(m.lengths) - 1
    total = m.local_bytes[last] + m.global_bytes[last]
    every = (len(m.local_layers) + len(m.global_layers)) * m.bytes_per_token_layer * m.lengths[last]
    return sentences(lang, t("memory.layers_summary", lang, length=m.lengths[last], local=len(m.local_layers),
                             local_bytes=nbytes(m.local_bytes[last]), cap=m.window - 1, glob=len(m.global_layers),
                             global_bytes=nbytes(m.global_bytes[last]), total=nbytes(total), every=nbytes(every)),
                     t("memory.layers_match" if m.matches_formula else "memory.layers_differ", lang))
