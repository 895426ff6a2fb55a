"""Beam search views, pure functions of a BeamTree: one tree figure per step of the search (gr.Plot drops
plotly frames, so the tab animates by sending these one at a time), the ranked table of finished hypotheses,
the search's summary line and the comparison with greedy and sampled decoding (`inference.beam.Decoded`).

Layout (fixed for the whole search, so the animation never jumps): steps run left to right; the top
num_beams rows are lanes, one per live beam (a beam keeps its lane while it lives; a new branch takes
the lane of a beam that died), the rows below them hold the step's other candidates: finished
hypotheses (stars) and, for the step being shown, the pruned ones (faded). Earlier steps keep only
their live beams and finished hypotheses, so 8 beams x 64 steps stays readable.
"""

from __future__ import annotations

import html
import math
import re

import networkx as nx
import pandas as pd
import plotly.graph_objects as go

from inference.beam import FINISHED, KEPT, PRUNED, ROOT, BeamNode, BeamTree, Decoded

from ..i18n import DEFAULT, t

COLORSCALE = "Viridis"  # colour-blind safe, readable on a projector
EDGE_KEPT = "#5b6b7f"
EDGE_FINISHED = "#D55E00"  # Okabe-Ito vermillion: finished hypotheses
EDGE_PRUNED = "#c4c4c4"
BEST_PATH = "rgba(86, 180, 233, 0.55)"  # Okabe-Ito sky blue, wide and translucent: the best hypothesis
ROW_PX = 34  # vertical room per row: a label above a node fits between two rows
MAX_LABEL_CHARS = 10


# ---------------------------------------------------------------------------------------------------
# Layout


def tree_graph(tree: BeamTree) -> nx.DiGraph:
    """The search as a networkx tree: node id -> attributes, edges parent -> candidate."""
    graph = nx.DiGraph()
    for node in tree.nodes:
        graph.add_node(node.id, step=node.step, status=node.status)
        if node.parent >= 0:
            graph.add_edge(node.parent, node.id)
    return graph


def beam_lanes(tree: BeamTree) -> dict[int, int]:
    """Kept node id -> display lane. A beam stays in its lane while it lives: a node's best kept child
    inherits its parent's lane, further children take the free lane nearest their parent (the lanes of
    beams that died). transformers' own row order (`node.beam`) re-sorts beams by score every step,
    which would draw every step as a crossing of lines."""
    k = tree.num_beams
    lanes: dict[int, int] = {}
    for step in range(tree.num_steps):
        kept = _laned(tree, step)  # best rank first
        if step == 0:
            lanes.update({n.id: lane for lane, n in enumerate(kept)})
            continue
        free = set(range(k))
        waiting = []
        for node in kept:
            lane = lanes[node.parent]
            if lane in free:
                lanes[node.id] = lane
                free.discard(lane)
            else:
                waiting.append(node)
        for node in waiting:
            want = lanes[node.parent]
            lane = min(free, key=lambda f: (abs(f - want), f))
            lanes[node.id] = lane
            free.discard(lane)
    return lanes


def _laned(tree: BeamTree, step: int) -> list[BeamNode]:
    """The nodes of a step drawn in the lanes: the live beams; at a last step that stopped every
    candidate (max new tokens), the hypotheses finished there."""
    nodes = tree.step_nodes(step)
    kept = [n for n in nodes if n.status == KEPT]
    return kept or [n for n in nodes if n.status == FINISHED]


def lane_layout(tree: BeamTree) -> dict[int, tuple[float, float]]:
    """Node id -> (x, y): x = step, y = row. Kept nodes sit in their beam's lane (0..k-1); the step's other
    candidates (finished, pruned) fill the rows below in rank order. Computed once from the whole tree."""
    k = tree.num_beams
    lanes = beam_lanes(tree)
    pos = {0: (_root_x(tree.num_steps), (k - 1) / 2)}  # the prompt, centred on the lanes
    for step in range(tree.num_steps):
        below = k
        for node in tree.step_nodes(step):  # best rank first
            if node.id in lanes:
                pos[node.id] = (float(step), float(lanes[node.id]))
            else:
                pos[node.id] = (float(step), float(below))
                below += 1
    return pos


def _root_x(steps: int) -> float:
    """The prompt sits left of step 1, further (in step units) when many steps share the width."""
    return -max(1.0, steps / 16)


def _left_edge(steps: int) -> float:
    """Left end of the x axis: room for the word "prompt" left of the root."""
    return _root_x(steps) - max(1.3, steps * 0.07)


def num_rows(tree: BeamTree) -> int:
    return max(tree.candidates_per_step, tree.num_beams + 1)


# ---------------------------------------------------------------------------------------------------
# The search's own words (inference.beam says why a node got its status and why the search stopped, in English):
# each known sentence in the visitor's language, its numbers kept; a sentence not known here stays as it is.

REASONS = [
    (r"the prompt", "beam.reason_prompt"),
    (r"ended on EOS in the top num_beams", "beam.reason_eos_top"),
    (r"ended on EOS but ranked outside the top num_beams", "beam.reason_eos_outside"),
    (r"reached max new tokens outside the top num_beams", "beam.reason_max_outside"),
    (r"reached max new tokens", "beam.reason_max"),
    (r"stopped by the time limit", "beam.reason_time_limit"),
    (r"one of the (?P<k>\d+) best continuations: live beam (?P<beam>\d+)", "beam.reason_kept"),
    (r"not among the (?P<k>\d+) best continuations", "beam.reason_pruned"),
    (r"displaced by better finished hypotheses", "beam.reason_displaced"),
    (r"reached max new tokens \((?P<n>\d+)\)", "beam.stop_max"),
    (r"(?P<k>\d+) hypotheses finished \(early_stopping=True stops as soon as num_beams are done\)", "beam.stop_early"),
    (r"the best live beam can no longer beat the worst finished hypothesis \(its score (?P<best>\S+) <= "
     r"(?P<worst>\S+)\)", "beam.stop_cannot_beat"),
    (r"the server's time limit of (?P<seconds>\S+) s per request: stopped after (?P<n>\d+) of (?P<max>\d+) tokens, "
     r"the beams as they stood", "beam.stop_time_limit"),
]


def reason_text(reason: str, lang: str = DEFAULT) -> str:
    """A node's reason or the search's stop reason (`inference.beam`'s English) in `lang`; parts joined by "; "
    are translated one by one."""
    if lang == DEFAULT or not reason:
        return reason
    parts = []
    for part in reason.split("; "):
        for pattern, key in REASONS:
            match = re.fullmatch(pattern, part)
            if match:
                part = t(key, lang, **match.groupdict())
                break
        parts.append(part)
    return t("beam.reason_sep", lang).join(parts)


def _ends(ends_with_eos: bool, lang: str) -> str:
    return "EOS" if ends_with_eos else t("beam.ends_max_tokens", lang)  # not translated: EOS, the token's name


# ---------------------------------------------------------------------------------------------------
# One frame


def _short(piece: str) -> str:
    return piece if len(piece) <= MAX_LABEL_CHARS else piece[: MAX_LABEL_CHARS - 1] + "…"


STATUS_KEYS = {PRUNED: "beam.status_pruned", KEPT: "beam.status_kept", FINISHED: "beam.status_finished"}


def _hover(node: BeamNode, tree: BeamTree, lang: str = DEFAULT) -> str:
    if node.status == ROOT:
        return (t("beam.hover_prompt", lang, prompt=f"<b>{html.escape(t('beam.prompt_node', lang))}</b>",
                  n=len(tree.prompt_ids)) + f"<br>{html.escape(tree.prompt[:80])}")
    lines = [
        f"<b>{html.escape(node.piece)}</b>  (id {node.token_id})",
        t("beam.hover_step", lang, step=node.step + 1, rank=node.rank + 1, of=tree.candidates_per_step),
        t("beam.hover_logprob", lang, logprob=f"{node.logprob:.3f}", p=f"{math.exp(node.logprob):.3f}"),
        t("beam.hover_cum", lang, cum=f"{node.cum_logprob:.3f}"),
        t("beam.hover_score", lang, score=f"{node.score:.3f}", cum=f"{node.cum_logprob:.2f}", length=node.length,
          penalty=f"{tree.length_penalty:g}"),
        f"{html.escape(t(STATUS_KEYS[node.status], lang))}: {html.escape(reason_text(node.reason, lang))}",
    ]
    if node.final_rank is not None:
        lines.append(f"<b>{html.escape(t('beam.hover_returned', lang, rank=node.final_rank + 1))}</b>")
    return "<br>".join(lines)


def _visible(tree: BeamTree, frame: int) -> list[BeamNode]:
    """Nodes drawn in frame `frame` (0 = the prompt only; f = steps 0..f-1 done, step f-1 shown in full)."""
    shown = [tree.nodes[0]]
    for step in range(frame):
        current = step == frame - 1
        shown += [n for n in tree.step_nodes(step) if current or n.status != PRUNED]
    return shown


def colour_range(tree: BeamTree) -> tuple[float, float]:
    """Fixed colour range for every frame: the lowest cumulative log-prob of any kept or finished node."""
    values = [n.cum_logprob for n in tree.nodes[1:] if n.status != PRUNED] or [-1.0]
    low = min(values)
    return (min(low, -1e-3), 0.0)


def step_figure(tree: BeamTree, frame: int, pos: dict | None = None, lang: str = DEFAULT) -> go.Figure:
    """The tree after `frame` steps (0..tree.num_steps). The last frame marks the returned hypotheses."""
    frame = max(0, min(int(frame), tree.num_steps))
    pos = pos or lane_layout(tree)
    k, steps = tree.num_beams, tree.num_steps
    final = frame == steps
    nodes = _visible(tree, frame)
    shown_ids = {n.id for n in nodes}
    best_path = set()
    if final and tree.finished:
        best_path = nx.ancestors(tree_graph(tree), tree.finished[0].node) | {tree.finished[0].node}
    cmin, cmax = colour_range(tree)
    fig = go.Figure()

    # Edges, one trace per kind (None separates segments): cheap to send, one legend entry each.
    groups = {"kept": [], "finished": [], "pruned": [], "best": []}
    for node in nodes[1:]:
        if node.parent not in shown_ids:
            continue
        kind = "best" if node.id in best_path else {KEPT: "kept", FINISHED: "finished", PRUNED: "pruned"}[node.status]
        (x0, y0), (x1, y1) = pos[node.parent], pos[node.id]
        groups[kind] += [(x0, y0), (x1, y1), (None, None)]
    styles = {
        "pruned": dict(color=EDGE_PRUNED, width=1, dash="dot"),
        "kept": dict(color=EDGE_KEPT, width=1.6),
        "finished": dict(color=EDGE_FINISHED, width=1.6),
        "best": dict(color=BEST_PATH, width=9),
    }
    names = {kind: t(f"beam.legend_{kind}", lang) for kind in ("pruned", "kept", "finished", "best")}
    for kind in ("best", "pruned", "kept", "finished"):  # the highlight first, under the other lines
        points = groups[kind]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", line=styles[kind],
            hoverinfo="skip", name=names[kind], showlegend=True, legendgroup=kind,
        ))

    # Nodes: colour and size by cumulative log-prob (fixed range, so colours mean the same in every frame).
    label_history = _label_history(steps)
    for status, symbol, opacity in ((PRUNED, "circle", 0.35), (KEPT, "circle", 1.0), (FINISHED, "star", 1.0),
                                    (ROOT, "square", 1.0)):
        group = [n for n in nodes if n.status == status]
        labels, positions = [], []
        for n in group:
            current = n.step == frame - 1
            if status == ROOT:
                labels.append(t("beam.prompt_node", lang))
            elif status == FINISHED and (current or steps <= 24 or n.final_rank is not None or
                                         pos[n.id][1] < k):  # dense old stars: hover only
                rank = f"#{n.final_rank + 1} " if (final and n.final_rank is not None) else ""
                piece = "EOS" if n.eos else _short(n.piece)  # not translated: EOS, the token's name
                if not current and pos[n.id][1] >= k:
                    # An older star below the lanes (it ended on EOS): rank and score on one short line to its
                    # right, so stars finished at the same step, one row apart, keep their labels apart; when
                    # the columns are narrow, the rank only (the score is in the hover and the table).
                    labels.append(f"{rank}{n.score:.2f}" if steps <= 24 else rank.strip())
                else:
                    labels.append(f"{rank}{piece} {n.score:.2f}")
            elif current or (label_history and status == KEPT):
                labels.append(_short(n.piece))
            else:
                labels.append("")
            if status == ROOT:
                positions.append("middle left")
            elif status == FINISHED and not current and pos[n.id][1] >= k:
                # history stars below the lanes: a label beside them (wide columns) or above (a rank only)
                positions.append("middle right" if steps <= 24 else "top center")
            elif current:
                positions.append("middle right")  # nothing drawn to the right of the newest column yet
            else:
                positions.append("top center")  # above the node, off the edge that leaves it
        fig.add_trace(go.Scatter(
            x=[pos[n.id][0] for n in group], y=[pos[n.id][1] for n in group],
            mode="markers+text", text=labels, textposition=positions,
            textfont=dict(size=12, color="#222" if status != PRUNED else "#888"),
            marker=dict(
                symbol=symbol,
                size=[_size(n, cmin, cmax, status, steps) for n in group],
                color=[max(n.cum_logprob, cmin) if status != ROOT else cmax for n in group],
                colorscale=COLORSCALE, cmin=cmin, cmax=cmax, opacity=opacity,
                line=dict(width=[2.5 if (final and n.final_rank is not None) else 0.8 for n in group],
                          color=[EDGE_FINISHED if (final and n.final_rank is not None) else "#333" for n in group]),
                showscale=status == KEPT,
                colorbar=dict(title=dict(text=t("beam.colorbar", lang), side="right"), thickness=12, len=0.8,
                              x=1.0),
            ),
            hovertext=[_hover(n, tree, lang) for n in group], hoverinfo="text",
            name=t({PRUNED: "beam.status_pruned", KEPT: "beam.legend_kept", FINISHED: "beam.status_finished",
                    ROOT: "beam.prompt_node"}[status], lang),
            showlegend=False,
        ))

    rows = num_rows(tree)
    # The line between the live lanes and the rows of finished / pruned candidates.
    fig.add_shape(type="line", x0=_left_edge(steps), x1=steps + 0.2, y0=k - 0.5, y1=k - 0.5,
                  line=dict(color="#999", width=1, dash="dash"), layer="below")
    fig.add_annotation(x=_left_edge(steps), y=k - 0.5, xanchor="left", yanchor="top", showarrow=False,
                       text=t("beam.below_line", lang), font=dict(size=11, color="#777"))
    title = _title(tree, frame, lang)
    fig.update_layout(
        title=dict(text=title, font=dict(size=15), x=0.01),
        height=max(300, 140 + rows * ROW_PX),
        margin=dict(l=60, r=20, t=60, b=50),
        plot_bgcolor="white",
        hoverlabel=dict(bgcolor="white", font_size=13),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0, font=dict(size=12)),
        uirevision=f"{tree.prompt}|{k}|{steps}",  # keep a user's zoom while frames change
    )
    fig.update_xaxes(
        range=[_left_edge(steps) - 0.1, steps - 1 + _right_room(steps)], title=t("beam.x_axis", lang), showgrid=False,
        zeroline=False,
        tickmode="array", tickvals=list(range(0, steps, max(1, steps // 16))),
        ticktext=[str(s + 1) for s in range(0, steps, max(1, steps // 16))],
    )
    fig.update_yaxes(
        range=[rows - 0.4, -0.95], showgrid=False, zeroline=False,
        tickmode="array", tickvals=list(range(k)), ticktext=[t("beam.lane", lang, n=b + 1) for b in range(k)],
    )
    return fig


def _label_history(steps: int) -> bool:
    """Token labels on every live beam fit only when the columns are wide enough."""
    return steps <= 16


def _right_room(steps: int) -> float:
    """Space right of the last column for the labels of the current step (in step units)."""
    return max(1.8, 0.17 * (steps + 1.6))


def _size(node: BeamNode, cmin: float, cmax: float, status: str, steps: int) -> float:
    """Marker size by cumulative log-prob, smaller when many steps share the width."""
    if status == ROOT:
        return 14
    share = (max(node.cum_logprob, cmin) - cmin) / (cmax - cmin or 1.0)
    biggest = 18 if steps <= 24 else 12
    base = 5 + (biggest - 5) * share
    return base * (1.6 if status == FINISHED else 1.0)


def _title(tree: BeamTree, frame: int, lang: str = DEFAULT) -> str:
    if frame == 0:
        return t("beam.title_start", lang, steps=tree.num_steps)
    if frame < tree.num_steps:
        nodes = tree.step_nodes(frame - 1)
        done = sum(n.status == FINISHED for n in nodes)
        extra = t("beam.title_finished", lang, done=done) if done else ""
        return t("beam.title_step", lang, step=frame, steps=tree.num_steps, k=tree.num_beams,
                 candidates=tree.candidates_per_step, finished=extra)
    return t("beam.title_done", lang, step=frame, steps=tree.num_steps,
             reason=html.escape(reason_text(tree.stop_reason, lang)))


# ---------------------------------------------------------------------------------------------------
# Table


def hypotheses_table(tree: BeamTree, lang: str = DEFAULT) -> pd.DataFrame:
    """The finished hypotheses best first, with the rank they would have by raw log-prob sum alone, so a
    student sees how the length penalty reorders them."""
    by_raw = sorted(range(len(tree.finished)), key=lambda i: -tree.finished[i].sum_logprob)
    raw_rank = {i: r + 1 for r, i in enumerate(by_raw)}
    col = {name: t(f"beam.col_{name}", lang) for name in ("rank", "raw_rank", "text", "tokens", "ends", "sum")}
    score = t("beam.col_score", lang, penalty=f"{tree.length_penalty:g}")
    rows = []
    for i, hyp in enumerate(tree.finished):
        rows.append({
            col["rank"]: i + 1,
            col["raw_rank"]: raw_rank[i],
            col["text"]: hyp.text if hyp.text.strip() else t("beam.empty_ended_at_once", lang),
            col["tokens"]: hyp.length,
            col["ends"]: _ends(hyp.ends_with_eos, lang),
            col["sum"]: round(hyp.sum_logprob, 3),
            score: round(hyp.score, 4),
        })
    return pd.DataFrame(rows)


METHOD_KEYS = {"greedy": "beam.method_greedy", "sampled": "beam.method_sampled"}


def comparison_table(tree: BeamTree, others: list[Decoded], seed: int, lang: str = DEFAULT) -> pd.DataFrame:
    """Beam search's best hypothesis next to greedy and a seeded sample of the same prompt and budget, each
    scored the same way (its sum of log-probs over length ** length_penalty)."""
    best = tree.finished[0]
    rows = [dict(method=t("beam.method_beam", lang, k=tree.num_beams), text=best.text, tokens=best.length,
                 ends=_ends(best.ends_with_eos, lang), sum_logprob=best.sum_logprob, score=best.score)]
    for d in others:
        method = t(METHOD_KEYS[d.method], lang) if d.method in METHOD_KEYS else d.method
        if d.method == "sampled":
            method = t("beam.method_seed", lang, method=method, seed=int(seed))
        rows.append(dict(method=method, text=d.text, tokens=d.length, ends=_ends(d.ends_with_eos, lang),
                         sum_logprob=d.sum_logprob, score=d.score))
    frame = pd.DataFrame(rows)
    frame["sum_logprob"] = frame["sum_logprob"].round(3)
    frame["score"] = frame["score"].round(4)
    return frame.rename(columns={"method": t("beam.col_method", lang), "text": t("beam.col_text", lang),
                                 "tokens": t("beam.col_tokens", lang), "ends": t("beam.col_ends", lang),
                                 "sum_logprob": t("beam.col_sum", lang),
                                 "score": t("beam.col_score", lang, penalty=f"{tree.length_penalty:g}")})


# ---------------------------------------------------------------------------------------------------
# Text


def summary_html(tree: BeamTree, lang: str = DEFAULT) -> str:
    """The search in numbers (steps, candidates, nodes, decode rows, time), why it stopped and its best answer."""
    best = tree.finished[0] if tree.finished else None
    greedy_rows = tree.num_steps - 1
    items = [
        ("beam.info_steps", f"{tree.num_steps}"),
        ("beam.info_candidates", f"{tree.candidates_per_step}"),
        ("beam.info_nodes", f"{len(tree.nodes) - 1:,}"),
        ("beam.info_decode_rows", html.escape(t("beam.info_decode_rows_value", lang, rows=f"{tree.forward_rows:,}",
                                                  greedy=greedy_rows))),
        ("beam.info_time", f"{tree.seconds:.2f} s"),
    ]
    cells = "".join(f"<span><b>{v}</b> {html.escape(t(k, lang))}</span>" for k, v in items)
    stop = html.escape(reason_text(tree.stop_reason, lang))
    best_text = html.escape(best.text) if best else ""
    best_text = best_text or html.escape(t("beam.empty", lang))
    note = t("beam.summary_note", lang, reason=stop, score=f"{best.score:.4f}", text=f"<b>{best_text}</b>")
    return f'<div class="lie-counts">{cells}</div><div class="lie-note">{note}</div>'



def _one_line(text: str) -> str:
    """A text on one line (newlines and runs of spaces become one space), for a sentence about it."""
    return " ".join(text.split())


def _path_text(tree: BeamTree, node_id: int) -> str:
    """The readable pieces from the prompt to a node (· is a space, ↵ a newline)."""
    pieces = []
    node = tree.nodes[node_id]
    while node.status != ROOT:
        pieces.append(node.piece)
        node = tree.nodes[node.parent]
    return _one_line("".join(reversed(pieces)).replace("·", " ").replace("↵", " "))


def step_figure_summary(tree: BeamTree, frame: int, lang: str = DEFAULT) -> str:
    """One sentence: what the tree shows at `frame` (0..tree.num_steps), with its real numbers."""
    frame = max(0, min(int(frame), tree.num_steps))
    k, per_step = tree.num_beams, tree.candidates_per_step
    if frame == 0:
        return t("beam.alt_start", lang, n=len(tree.prompt_ids), k=k, candidates=per_step)
    nodes = tree.step_nodes(frame - 1)
    finished_so_far = sum(n.status == FINISHED for s in range(frame) for n in tree.step_nodes(s))
    pruned = sum(n.status == PRUNED for n in nodes)
    if frame < tree.num_steps:
        kept = [n for n in nodes if n.status == KEPT]
        best = kept[0] if kept else nodes[0]
        return t("beam.alt_step", lang, step=frame, steps=tree.num_steps, candidates=len(nodes), kept=len(kept),
                 pruned=pruned, finished=finished_so_far, text=_path_text(tree, best.id),
                 cum=f"{best.cum_logprob:.2f}")
    reason = reason_text(tree.stop_reason, lang)
    if not tree.finished:
        return t("beam.alt_done_none", lang, steps=tree.num_steps, reason=reason)
    best = tree.finished[0]
    by_raw = max(tree.finished, key=lambda h: h.sum_logprob)
    reorder = "" if by_raw is best else " " + t("beam.alt_reorder", lang, text=_one_line(by_raw.text),
                                                 sum=f"{by_raw.sum_logprob:.2f}")
    return t("beam.alt_done", lang, steps=tree.num_steps, reason=reason, n=len(tree.finished),
             text=_one_line(best.text), score=f"{best.score:.3f}", sum=f"{best.sum_logprob:.2f}", length=best.length,
             penalty=f"{tree.length_penalty:g}") + reorder
