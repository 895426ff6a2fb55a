"""Serving views: pure functions of `inference.continuous.BurstComparison` (a burst served three ways).

    headline_html      throughput, latency and KV memory of the three modes side by side, and whether they agree
    schedule_figure    the engine's schedule: each request's state at each step (waiting, prefill, decode, done),
                       the tokens each pass carried (prefill vs decode) and the KV blocks in use
    gantt_figure       the three modes on one time axis: when each request waited, was prefilled, decoded, and
                       (static batch) sat finished waiting for the longest request
    requests_html      per request: prompt and budget, the text, TTFT and latency in each mode
    *_summary          each figure in one sentence with this run's numbers (the text alternative under it)
    burst_table        the rows of the CSV download (one row per request and mode)

Colours are Okabe-Ito (colour-blind safe); "waiting" and "finished, held by the batch" are grey and hatched so
they read without colour.

Every builder that writes words takes `lang` (default English): the event handlers pass the visitor's language.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..i18n import DEFAULT, t
from ..units import ms, nbytes

if TYPE_CHECKING:
    from inference.continuous import BurstComparison, ServedBurst

PREFILL = "#E69F00"
DECODE = "#0072B2"
WAITING = "#BBBBBB"
HELD = "#DDDDDD"
DONE = "#FFFFFF"
BLOCKS = "#009E73"
FONT = dict(size=13)
MODE_KEYS = {"continuous": "serving.mode_continuous", "static": "serving.mode_static",
             "sequential": "serving.mode_sequential"}
STATE_COLOURS = [(0, WAITING), (0.25, WAITING), (0.25, PREFILL), (0.5, PREFILL), (0.5, DECODE), (0.75, DECODE),
                 (0.75, "#F4F4F4"), (1.0, "#F4F4F4")]
STATES = {"waiting": 0, "prefill": 1, "decode": 2, "done": 3}
STATE_KEYS = {"waiting": "serving.state_waiting", "prefill": "serving.state_prefill", "decode": "serving.state_decode",
              "done": "serving.state_done", "held": "serving.state_held"}
CSS = """
.srv-grid {border-collapse: collapse; font-size: 0.92em; margin: 6px 0;}
.srv-grid th, .srv-grid td {border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top;}
.srv-grid th:first-child, .srv-grid td:first-child, .srv-grid td.srv-text {text-align: left;}
.srv-best {font-weight: 700;}
.srv-note {margin: 4px 0; color: #333;}
"""


def _esc(text) -> str:
    return html.escape(str(text))


def _text(text: str) -> str:
    """Catalogue text as an element's content (quotes stay as they are)."""
    return html.escape(text, quote=False)


def mode_label(mode: str, lang: str = DEFAULT) -> str:
    return t(MODE_KEYS[mode], lang)


def _layout(fig: go.Figure, height: int, title: str) -> go.Figure:
    fig.update_layout(height=height, font=FONT, margin=dict(l=70, r=20, t=80, b=90), plot_bgcolor="white",
                      legend=dict(orientation="h", yref="container", y=0.005, yanchor="bottom", x=0),
                      title=dict(text=title, x=0, font=dict(size=15)), barmode="stack", bargap=0.25)
    fig.update_xaxes(showline=True, linecolor="#888", gridcolor="#eee")
    fig.update_yaxes(showline=True, linecolor="#888", gridcolor="#eee", zeroline=False)
    return fig


def _label(cmp: BurstComparison, i: int) -> str:
    return f"#{i + 1} ({cmp.prompt_tokens[i]}+{cmp.max_new_tokens[i]})"


# ---------------------------------------------------------------------------------------------------
# Headline


HEADLINE_COLUMNS = ["serving.col_mode", "serving.col_tokens_per_s", "serving.col_ratio", "serving.col_wall",
                    "serving.col_cpu", "serving.col_mean_ttft", "serving.col_mean_latency", "serving.col_p95_latency",
                    "serving.col_kv_peak", "serving.col_kv_reserved", "serving.col_same"]


def headline_html(cmp: BurstComparison, live: dict | None = None, lang: str = DEFAULT) -> str:
    """The three modes side by side: throughput from wall time, latency users feel, KV memory, same answers."""
    runs = cmp.runs
    best = max(runs.values(), key=lambda r: r.tokens_per_s).mode
    rows = []
    for mode, run in runs.items():
        same = "—" if mode == "continuous" else t("serving.same" if cmp.identical(mode) else "serving.differ", lang)
        ratio = "1.00×" if mode == "continuous" else f"{cmp.speedup(mode):.2f}×"
        mark = ' class="srv-best"' if mode == best else ""
        rows.append(
            f"<tr{mark}><td>{_esc(mode_label(mode, lang))}</td>"
            f"<td>{run.tokens_per_s:.1f}</td><td>{ratio}</td><td>{ms(run.wall_s)}</td><td>{ms(run.cpu_s)}</td>"
            f"<td>{ms(run.mean('ttft_s'))}</td><td>{ms(run.mean('latency_s'))}</td>"
            f"<td>{ms(run.percentile('latency_s', 95))}</td><td>{nbytes(run.kv_peak_bytes)}</td>"
            f"<td>{nbytes(run.kv_reserved_bytes)}</td><td>{_text(same)}</td></tr>")
    n, tokens = len(cmp.prompts), cmp.continuous.new_tokens
    head = "".join(f"<th>{_text(t(key, lang))}</th>" for key in HEADLINE_COLUMNS)
    table = f"<table class='srv-grid' id='srv-headline-table'><tr>{head}</tr>" + "".join(rows) + "</table>"
    kv = t("serving.kv_line", lang, blocks=cmp.num_blocks, page=cmp.page_tokens, block_bytes=nbytes(cmp.block_bytes),
           used=max((s.blocks_used for s in cmp.continuous.steps), default=0), batch_tokens=cmp.max_batch_tokens)
    live_line = ""
    if live and live.get("passes"):
        text = t("serving.live_line", lang, sampling=t("tab.sampling", lang), prefill=t("tab.prefill", lang),
                 passes=f"{live['passes']:,}", mean=f"{live['mean_rows']:.1f}", max=live["max_rows"])
        live_line = f"<p class='srv-note' id='srv-live'>{_text(text)}</p>"
    intro = _text(t("serving.headline_intro", lang, n=n, tokens=tokens))
    return (f"<div id='srv-headline'><p class='srv-note'>{intro}</p>"
            f"{table}<p class='srv-note'>{_esc(kv)}</p>{live_line}</div>")


# ---------------------------------------------------------------------------------------------------
# The engine's schedule


def _states(cmp: BurstComparison) -> list[list[int]]:
    """[request][step] state code of the engine run."""
    steps = cmp.continuous.steps
    grid = [[STATES["done"]] * len(steps) for _ in cmp.prompts]
    for j, step in enumerate(steps):
        for i in step.waiting:
            grid[i][j] = STATES["waiting"]
        for i, _ in step.prefill:
            grid[i][j] = STATES["prefill"]
        for i in step.decode:
            grid[i][j] = STATES["decode"]
    return grid


def schedule_figure(cmp: BurstComparison, lang: str = DEFAULT) -> go.Figure:
    """Requests × steps (waiting, prefill, decode, done), then per step the tokens in the pass and KV blocks in use."""
    steps = cmp.continuous.steps
    x = [s.index + 1 for s in steps]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.06,
                        specs=[[{}], [{"secondary_y": True}]])
    names = {v: k for k, v in STATES.items()}
    grid = _states(cmp)
    text = [[t(STATE_KEYS[names[v]], lang) for v in row] for row in grid]
    hover = t("serving.schedule_hover", lang, request="%{y}", step="%{x}", state="%{text}")
    fig.add_heatmap(z=grid, x=x, y=[_label(cmp, i) for i in range(len(cmp.prompts))], zmin=0, zmax=3,
                    colorscale=STATE_COLOURS, showscale=False, xgap=1, ygap=1, text=text,
                    hovertemplate=hover + "<extra></extra>", row=1, col=1)
    for state, colour in (("waiting", WAITING), ("prefill", PREFILL), ("decode", DECODE)):
        fig.add_scatter(x=[None], y=[None], mode="markers", marker=dict(color=colour, size=12, symbol="square"),
                        name=t(STATE_KEYS[state], lang), row=1, col=1)
    fig.add_bar(x=x, y=[sum(n for _, n in s.prefill) for s in steps], name=t("serving.prefill_tokens", lang),
                marker_color=PREFILL, row=2, col=1)
    fig.add_bar(x=x, y=[len(s.decode) for s in steps], name=t("serving.decode_tokens", lang), marker_color=DECODE,
                row=2, col=1)
    fig.add_scatter(x=x, y=[s.blocks_used for s in steps], name=t("serving.blocks_in_use", lang, blocks=cmp.num_blocks),
                    mode="lines+markers", line=dict(color=BLOCKS, width=2), row=2, col=1, secondary_y=True)
    fig.update_yaxes(autorange="reversed", row=1, col=1, title_text=t("serving.axis_request", lang))
    fig.update_yaxes(title_text=t("serving.axis_tokens", lang), row=2, col=1, rangemode="tozero")
    fig.update_yaxes(title_text=t("serving.axis_blocks", lang), row=2, col=1, secondary_y=True, rangemode="tozero",
                     showgrid=False)
    fig.update_xaxes(title_text=t("serving.axis_step", lang), row=2, col=1)
    return _layout(fig, 360 + 22 * len(cmp.prompts),
                   t("serving.schedule_title", lang, passes=len(steps), requests=len(cmp.prompts)))


def schedule_summary(cmp: BurstComparison, lang: str = DEFAULT) -> str:
    steps = cmp.continuous.steps
    if not steps:
        return t("serving.no_pass", lang)
    widest = max(steps, key=lambda s: len(s.decode) + len(s.prefill))
    waited = sum(1 for i in range(len(cmp.prompts)) if any(i in s.waiting for s in steps))
    split = sum(1 for s in steps for i, n in s.prefill if n < cmp.prompt_tokens[i])
    return t("serving.schedule_summary", lang, requests=len(cmp.prompts), passes=len(steps),
             widest=len(widest.decode) + len(widest.prefill), widest_tokens=widest.tokens, waited=waited, split=split,
             used=max(s.blocks_used for s in steps), blocks=cmp.num_blocks)


# ---------------------------------------------------------------------------------------------------
# The three modes in time


def _segments(run: ServedBurst):
    """(request, state, start, end) of every segment of every request."""
    for r in run.requests:
        yield r.index, "waiting", 0.0, r.start_s
        yield r.index, "prefill", r.start_s, r.first_token_s
        yield r.index, "decode", r.first_token_s, r.end_s
        if r.returned_s > r.end_s + 1e-6:
            yield r.index, "held", r.end_s, r.returned_s


def gantt_figure(cmp: BurstComparison, lang: str = DEFAULT) -> go.Figure:
    modes = list(cmp.runs)
    fig = make_subplots(rows=len(modes), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[t("serving.gantt_subtitle", lang, mode=mode_label(m, lang),
                                          tokens_per_s=f"{cmp.runs[m].tokens_per_s:.1f}", wall=ms(cmp.runs[m].wall_s))
                                        for m in modes])
    style = {"waiting": (WAITING, "", t("serving.state_waiting", lang)),
             "prefill": (PREFILL, "", t("serving.legend_prefill", lang)),
             "decode": (DECODE, "", t("serving.state_decode", lang)),
             "held": (HELD, "/", t("serving.legend_held", lang))}
    labels = [_label(cmp, i) for i in range(len(cmp.prompts))]
    shown: set[str] = set()  # each state once in the legend
    for row, mode in enumerate(modes, start=1):
        segs = list(_segments(cmp.runs[mode]))
        for state, (colour, pattern, name) in style.items():
            part = [s for s in segs if s[1] == state and s[3] > s[2]]
            if not part:
                continue
            fig.add_bar(y=[labels[i] for i, *_ in part], x=[end - start for *_, start, end in part],
                        base=[start for *_, start, _ in part], orientation="h", name=name, legendgroup=state,
                        showlegend=state not in shown, marker=dict(color=colour, pattern_shape=pattern),
                        hovertemplate=t("serving.gantt_hover", lang, request="%{y}", state=t(STATE_KEYS[state], lang),
                                        start="%{base:.2f}", duration="%{x:.2f}") + "<extra></extra>",
                        row=row, col=1)
            shown.add(state)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text=t("serving.axis_seconds", lang), row=len(modes), col=1)
    fig = _layout(fig, 220 + (60 + 18 * len(cmp.prompts)) * len(modes), t("serving.gantt_title", lang))
    fig.update_layout(barmode="overlay")
    return fig


def gantt_summary(cmp: BurstComparison, lang: str = DEFAULT) -> str:
    c, s, q = (cmp.runs[m] for m in ("continuous", "static", "sequential"))
    return t("serving.gantt_summary", lang, n=len(cmp.prompts), continuous=ms(c.wall_s), static=ms(s.wall_s),
             sequential=ms(q.wall_s), continuous_latency=ms(c.mean("latency_s")),
             static_latency=ms(s.mean("latency_s")), sequential_latency=ms(q.mean("latency_s")),
             longest=max(cmp.max_new_tokens))


# ---------------------------------------------------------------------------------------------------
# Per request


REQUEST_COLUMNS = ["serving.col_request", "serving.col_prompt", "serving.col_prompt_tokens", "serving.col_budget",
                   "serving.col_tokens_out", "serving.col_text", "serving.col_tpot"]


def requests_html(cmp: BurstComparison, lang: str = DEFAULT) -> str:
    modes = list(cmp.runs)
    head = "".join(f"<th>{_esc(t('serving.col_ttft_of', lang, mode=mode_label(m, lang)))}</th>"
                   f"<th>{_esc(t('serving.col_latency_of', lang, mode=mode_label(m, lang)))}</th>" for m in modes)
    no_text = f"<i>{_text(t('serving.no_text', lang))}</i>"
    rows = []
    engine = cmp.continuous.requests
    for i, prompt in enumerate(cmp.prompts):
        cells = "".join(f"<td>{ms(cmp.runs[m].requests[i].ttft_s)}</td><td>{ms(cmp.runs[m].requests[i].latency_s)}</td>"
                        for m in modes)
        text = engine[i].text
        tpot = engine[i].tpot_s
        rows.append(f"<tr><td>#{i + 1}</td><td class='srv-text'>{_esc(prompt[:80])}</td><td>{cmp.prompt_tokens[i]}</td>"
                    f"<td>{cmp.max_new_tokens[i]}</td><td>{len(engine[i].token_ids)}</td>"
                    f"<td class='srv-text'>{_esc(text[:120]) or no_text}</td><td>{ms(tpot)}</td>"
                    f"{cells}</tr>")
    first = "".join(f"<th>{_text(t(key, lang))}</th>" for key in REQUEST_COLUMNS)
    return ("<table class='srv-grid' id='srv-requests'><tr>" + first + head + "</tr>"
            + "".join(rows) + "</table>")


def burst_table(cmp: BurstComparison) -> tuple[list[str], list[list]]:
    """The CSV download: machine-readable headers and mode names (not translated)."""
    header = ["mode", "request", "prompt_tokens", "max_new_tokens", "new_tokens", "start_s", "first_token_s", "end_s",
              "returned_s", "ttft_s", "tpot_s", "latency_s", "text"]
    rows = []
    for mode, run in cmp.runs.items():
        for r in run.requests:
            rows.append([mode, r.index + 1, r.prompt_tokens, r.max_new_tokens, len(r.token_ids), r.start_s,
                         r.first_token_s, r.end_s, r.returned_s, r.ttft_s, r.tpot_s, r.latency_s, r.text])
    return header, rows
