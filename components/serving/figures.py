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
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
MODE_LABEL = {"continuous": "continuous batching (transformers' engine)", "static": "static batch",
              "sequential": "one at a time"}
STATE_COLOURS = [(0, WAITING), (0.25, WAITING), (0.25, PREFILL), (0.5, PREFILL), (0.5, DECODE), (0.75, DECODE),
                 (0.75, "#F4F4F4"), (1.0, "#F4F4F4")]
STATES = {"waiting": 0, "prefill": 1, "decode": 2, "done": 3}
CSS = """
.srv-grid {border-collapse: collapse; font-size: 0.92em; margin: 6px 0;}
.srv-grid th, .srv-grid td {border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top;}
.srv-grid th:first-child, .srv-grid td:first-child, .srv-grid td.srv-text {text-align: left;}
.srv-best {font-weight: 700;}
.srv-note {margin: 4px 0; color: #333;}
"""


def _esc(text) -> str:
    return html.escape(str(text))


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


def headline_html(cmp: BurstComparison, live: dict | None = None) -> str:
    """The three modes side by side: throughput from wall time, latency users feel, KV memory, same answers."""
    runs = cmp.runs
    best = max(runs.values(), key=lambda r: r.tokens_per_s).mode
    rows = []
    for mode, run in runs.items():
        same = "—" if mode == "continuous" else ("✓ same" if cmp.identical(mode) else "✗ differ")
        ratio = "1.00×" if mode == "continuous" else f"{cmp.speedup(mode):.2f}×"
        mark = ' class="srv-best"' if mode == best else ""
        rows.append(
            f"<tr{mark}><td>{_esc(MODE_LABEL[mode])}</td>"
            f"<td>{run.tokens_per_s:.1f}</td><td>{ratio}</td><td>{ms(run.wall_s)}</td><td>{ms(run.cpu_s)}</td>"
            f"<td>{ms(run.mean('ttft_s'))}</td><td>{ms(run.mean('latency_s'))}</td>"
            f"<td>{ms(run.percentile('latency_s', 95))}</td><td>{nbytes(run.kv_peak_bytes)}</td>"
            f"<td>{nbytes(run.kv_reserved_bytes)}</td><td>{same}</td></tr>")
    n, tokens = len(cmp.prompts), cmp.continuous.new_tokens
    table = ("<table class='srv-grid' id='srv-headline-table'><tr><th>mode</th><th>tokens/s</th>"
             "<th>engine's throughput ÷ this</th><th>wall time</th><th>CPU time</th><th>mean TTFT</th>"
             "<th>mean latency</th><th>p95 latency</th><th>KV peak</th><th>KV set aside</th><th>texts vs engine</th></tr>"
             + "".join(rows) + "</table>")
    kv = (f"Paged KV cache: {cmp.num_blocks} blocks of {cmp.page_tokens} tokens × {nbytes(cmp.block_bytes)} each; "
          f"at most {max((s.blocks_used for s in cmp.continuous.steps), default=0)} in use at once. "
          f"Up to {cmp.max_batch_tokens} tokens per pass.")
    live_line = ""
    if live and live.get("passes"):
        live_line = (f"<p class='srv-note' id='srv-live'>This server's own batcher (Sampling's Generate to end, Prefill "
                     f"runs, the /generate and /timeline endpoints on this model) has run {live['passes']:,} passes "
                     f"carrying {live['mean_rows']:.1f} requests on average, at most {live['max_rows']} in one pass.</p>")
    return (f"<div id='srv-headline'><p class='srv-note'>{n} requests, {tokens} new tokens in all, greedy; "
            "throughput = new tokens ÷ wall time from the burst's arrival to its last answer, measured in this run.</p>"
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


def schedule_figure(cmp: BurstComparison) -> go.Figure:
    """Requests × steps (waiting, prefill, decode, done), then per step the tokens in the pass and KV blocks in use."""
    steps = cmp.continuous.steps
    x = [s.index + 1 for s in steps]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.06,
                        specs=[[{}], [{"secondary_y": True}]])
    names = {v: k for k, v in STATES.items()}
    grid = _states(cmp)
    text = [[names[v] for v in row] for row in grid]
    fig.add_heatmap(z=grid, x=x, y=[_label(cmp, i) for i in range(len(cmp.prompts))], zmin=0, zmax=3,
                    colorscale=STATE_COLOURS, showscale=False, xgap=1, ygap=1, text=text,
                    hovertemplate="%{y}, step %{x}: %{text}<extra></extra>", row=1, col=1)
    for name, colour in (("waiting", WAITING), ("prefill", PREFILL), ("decode", DECODE)):
        fig.add_scatter(x=[None], y=[None], mode="markers", marker=dict(color=colour, size=12, symbol="square"),
                        name=name, row=1, col=1)
    fig.add_bar(x=x, y=[sum(n for _, n in s.prefill) for s in steps], name="prefill tokens in the pass",
                marker_color=PREFILL, row=2, col=1)
    fig.add_bar(x=x, y=[len(s.decode) for s in steps], name="decode tokens (one per request)", marker_color=DECODE,
                row=2, col=1)
    fig.add_scatter(x=x, y=[s.blocks_used for s in steps], name=f"KV blocks in use (of {cmp.num_blocks})",
                    mode="lines+markers", line=dict(color=BLOCKS, width=2), row=2, col=1, secondary_y=True)
    fig.update_yaxes(autorange="reversed", row=1, col=1, title_text="request")
    fig.update_yaxes(title_text="tokens", row=2, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="KV blocks", row=2, col=1, secondary_y=True, rangemode="tozero", showgrid=False)
    fig.update_xaxes(title_text="engine step (one forward pass each)", row=2, col=1)
    return _layout(fig, 360 + 22 * len(cmp.prompts),
                   f"The engine's schedule: {len(steps)} passes for {len(cmp.prompts)} requests")


def schedule_summary(cmp: BurstComparison) -> str:
    steps = cmp.continuous.steps
    if not steps:
        return "The engine ran no pass."
    widest = max(steps, key=lambda s: len(s.decode) + len(s.prefill))
    waited = sum(1 for i in range(len(cmp.prompts)) if any(i in s.waiting for s in steps))
    split = sum(1 for s in steps for i, n in s.prefill if n < cmp.prompt_tokens[i])
    return (f"Rows are the requests, labelled #n (prompt tokens + token budget). The engine served {len(cmp.prompts)} requests in {len(steps)} forward passes; the fullest pass carried "
            f"{len(widest.decode) + len(widest.prefill)} requests ({widest.tokens} tokens). {waited} requests waited for "
            f"room before their first pass; {split} prefill chunks were part of a prompt split over passes. At most "
            f"{max(s.blocks_used for s in steps)} of {cmp.num_blocks} KV blocks were in use; a finished request's "
            "blocks were free for the next pass.")


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


def gantt_figure(cmp: BurstComparison) -> go.Figure:
    modes = list(cmp.runs)
    fig = make_subplots(rows=len(modes), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[f"{MODE_LABEL[m]}: {cmp.runs[m].tokens_per_s:.1f} tokens/s, all done in "
                                        f"{ms(cmp.runs[m].wall_s)}" for m in modes])
    style = {"waiting": (WAITING, "", "waiting"), "prefill": (PREFILL, "", "prefill (first token)"),
             "decode": (DECODE, "", "decode"), "held": (HELD, "/", "finished, held until the batch ends")}
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
                        hovertemplate=f"%{{y}} {state}: %{{base:.2f}} s to %{{x:.2f}} s later<extra></extra>",
                        row=row, col=1)
            shown.add(state)
        fig.update_yaxes(autorange="reversed", row=row, col=1)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="seconds since the burst arrived", row=len(modes), col=1)
    fig = _layout(fig, 220 + (60 + 18 * len(cmp.prompts)) * len(modes), "The same burst served three ways")
    fig.update_layout(barmode="overlay")
    return fig


def gantt_summary(cmp: BurstComparison) -> str:
    c, s, q = (cmp.runs[m] for m in ("continuous", "static", "sequential"))
    return (f"All {len(cmp.prompts)} answers were back after {ms(c.wall_s)} with continuous batching, {ms(s.wall_s)} as "
            f"a static batch and {ms(q.wall_s)} one at a time. Mean latency (arrival to answer): {ms(c.mean('latency_s'))}, "
            f"{ms(s.mean('latency_s'))} and {ms(q.mean('latency_s'))}. In the static batch every request waits for the "
            f"longest ({max(cmp.max_new_tokens)} tokens); one at a time, the last request waits for all the others.")


# ---------------------------------------------------------------------------------------------------
# Per request


def requests_html(cmp: BurstComparison) -> str:
    modes = list(cmp.runs)
    head = "".join(f"<th>TTFT · {_esc(MODE_LABEL[m])}</th><th>latency · {_esc(MODE_LABEL[m])}</th>" for m in modes)
    rows = []
    engine = cmp.continuous.requests
    for i, prompt in enumerate(cmp.prompts):
        cells = "".join(f"<td>{ms(cmp.runs[m].requests[i].ttft_s)}</td><td>{ms(cmp.runs[m].requests[i].latency_s)}</td>"
                        for m in modes)
        text = engine[i].text
        tpot = engine[i].tpot_s
        rows.append(f"<tr><td>#{i + 1}</td><td class='srv-text'>{_esc(prompt[:80])}</td><td>{cmp.prompt_tokens[i]}</td>"
                    f"<td>{cmp.max_new_tokens[i]}</td><td>{len(engine[i].token_ids)}</td>"
                    f"<td class='srv-text'>{_esc(text[:120]) or '<i>(no visible text)</i>'}</td><td>{ms(tpot)}</td>"
                    f"{cells}</tr>")
    return ("<table class='srv-grid' id='srv-requests'><tr><th>request</th><th>prompt</th><th>prompt tokens</th>"
            "<th>budget</th><th>tokens out</th><th>text (engine)</th><th>TPOT · engine</th>" + head + "</tr>"
            + "".join(rows) + "</table>")


def burst_table(cmp: BurstComparison) -> tuple[list[str], list[list]]:
    header = ["mode", "request", "prompt_tokens", "max_new_tokens", "new_tokens", "start_s", "first_token_s", "end_s",
              "returned_s", "ttft_s", "tpot_s", "latency_s", "text"]
    rows = []
    for mode, run in cmp.runs.items():
        for r in run.requests:
            rows.append([mode, r.index + 1, r.prompt_tokens, r.max_new_tokens, len(r.token_ids), r.start_s,
                         r.first_token_s, r.end_s, r.returned_s, r.ttft_s, r.tpot_s, r.latency_s, r.text])
    return header, rows
