"""Speculative decoding: pure builders from `inference.speculative`'s records to plotly figures and HTML.

    headline_html      the run in numbers: tokens per target pass, speedup, acceptance, the proof of sameness
    steps_html         the step view: each step's draft tokens marked accepted / rejected / discarded, the target's
                       own token (replacement or bonus), the passes, the running acceptance rate
    passes_figure      the same text under speculative and plain decoding, each forward pass a box over its tokens
    acceptance_figure  draft tokens accepted and discarded per step, with the running acceptance rate
    speedup_figure     forward passes and wall time, speculative vs plain decoding of the same tokens
    rule_figure        sampling: p, q and normalise(max(p - q, 0)) at the position where a step decided
    sweep_figure       speedup and acceptance rate for k = 1..8 draft tokens; the best k marked
    compare_figure     speedup and acceptance rate of each drafter on one prompt

Every figure has a one-line text summary (`*_summary`) shown under it. Colours: Okabe-Ito (colour-blind safe);
accepted and rejected also differ by mark (✓ / ✗) and pattern, so they read in greyscale.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:  # records only; this module never runs the model
    from inference.speculative import DrafterComparison, DraftSweep, SpecStep, SpeculativeTrace

ACCEPTED = "#009E73"  # bluish green
REJECTED = "#D55E00"  # vermillion
DISCARDED = "#BBBBBB"  # drafted after a rejection: never looked at
TARGET = "#0072B2"  # the target's own token (replacement)
BONUS = "#E69F00"  # the extra token when every draft was accepted
PLAIN = "#999999"
DRAFTER = "#56B4E9"
Q_COLOUR = "#CC79A7"
RESIDUAL = "#F0E442"
HATCH = dict(fgcolor="#ffffff", solidity=0.3)
FONT = dict(size=13)
MAX_TICK_TOKENS = 40  # beyond this many tokens the x axis shows positions, not pieces


# ---------------------------------------------------------------------------------------------------
# Formatting


def _esc(text) -> str:
    return html.escape(str(text))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _secs(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.2f} s" if s >= 1 else f"{1000 * s:.0f} ms"


def _times(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _plural(n: int, word: str) -> str:
    """'1 token', '2 tokens', '3 passes'."""
    return f"{n:,} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _layout(fig: go.Figure, height: int, title: str, legend_rows: int = 1) -> go.Figure:
    fig.update_layout(height=height, font=FONT, plot_bgcolor="white", title=dict(text=title, x=0, font=dict(size=15)),
                      margin=dict(l=70, r=30, t=80, b=60 + 24 * legend_rows),
                      legend=dict(orientation="h", yref="container", y=0.005, yanchor="bottom", x=0))
    fig.update_xaxes(showline=True, linecolor="#888", gridcolor="#eee")
    fig.update_yaxes(showline=True, linecolor="#888", gridcolor="#eee", zeroline=False)
    return fig


def _message_figure(text: str, height: int = 180) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, plot_bgcolor="white", margin=dict(l=20, r=20, t=20, b=20))
    return fig


def short_name(d) -> str:
    """A drafter in a few words, for axis labels."""
    if d.kind == "prompt_lookup":
        return "prompt lookup"
    if d.kind == "early_exit":
        return f"early exit, {d.layers} layers"
    name = (d.model_id or d.spec).rsplit("/", 1)[-1]
    return f"{name} (another tokenizer)" if d.kind == "universal" else name


def passes_line(t: SpeculativeTrace) -> str:
    """'48 tokens in 19 target passes instead of 48'."""
    n = len(t.token_ids)
    return f"{_plural(n, 'token')} in {_plural(t.target_passes, 'target pass')} instead of {t.plain_passes or n}"


def _speed_words(speedup: float | None) -> str:
    if speedup is None:
        return "speed not measured"
    if speedup >= 1.05:
        return f"{speedup:.2f}× faster than plain decoding"
    if speedup <= 0.95:
        return f"{1 / speedup:.2f}× slower than plain decoding"
    return f"as fast as plain decoding ({speedup:.2f}×)"


def _sameness(t: SpeculativeTrace) -> tuple[str, str]:
    """(css class, sentence): the proof that nothing changed."""
    if t.sampling:
        return ("spd-info", "Sampling: the tokens differ from a plain run with the same seed (the random numbers are "
                "used differently), but every token has exactly the target's distribution (the min(1, p/q) rule).")
    if t.same_as_plain:
        return "spd-ok", "✓ Identical tokens to plain greedy decoding: speculation changed nothing but the time."
    if t.same_as_plain is None:
        return "spd-info", "Plain decoding was not run."
    return "spd-bad", "✗ The tokens differ from plain greedy decoding."


# ---------------------------------------------------------------------------------------------------
# Headline and step view


def headline_html(t: SpeculativeTrace) -> str:
    n = len(t.token_ids)
    cls, same = _sameness(t)
    cards = [
        ("target passes", f"{t.target_passes:,} <small>instead of {t.plain_passes or n:,}</small>",
         f"{_plural(n, 'token')}, {t.tokens_per_pass:.2f} per target pass", "spd-passes"),
        ("speedup vs plain decoding", _times(t.speedup),
         f"{_secs(t.seconds)} vs {_secs(t.plain_seconds)} for the same {_plural(n, 'token')}", "spd-speedup"),
        ("acceptance rate", _pct(t.acceptance_rate),
         f"{t.accepted:,} of {_plural(t.proposed, 'draft token')} kept", "spd-acceptance"),
        ("tokens / s", f"{t.tokens_per_s:.1f}",
         f"plain {t.plain_tokens_per_s:.1f} tokens/s" if t.plain_tokens_per_s else "", "spd-rate"),
        ("drafter passes", f"{t.drafter_passes:,}", _esc(t.drafter.label), "spd-drafter"),
    ]
    cards_html = "".join(f'<div class="spd-card" id="{i}"><div class="spd-k">{k}</div><div class="spd-v">{v}</div>'
                         f'<div class="spd-d">{d}</div></div>' for k, v, d, i in cards)
    stop = {"eos": "end of sequence", "max_new_tokens": "max new tokens", "time_limit": "time limit",
            "pass_budget": "pass budget"}.get(t.stop_reason, t.stop_reason)
    text = _esc(t.text) or "<i>(no visible text)</i>"
    mode = "greedy" if not t.sampling else f"sampling, temperature {t.params.temperature:g}, seed {t.seed}"
    return (f'<div class="spd-cards">{cards_html}</div>'
            f'<div class="spd-same {cls}" id="spd-same">{_esc(same)}</div>'
            f'<div class="spd-text"><b>Generated</b> ({mode}; k = {t.num_draft_tokens}; {_esc(t.generator)}; stopped: '
            f'{_esc(stop)}): {text}</div>')


def _chip(piece: str, cls: str, mark: str = "", title: str = "", below: str = "") -> str:
    sub = f'<span class="spd-sub">{_esc(below)}</span>' if below else ""
    return (f'<span class="spd-chip {cls}" title="{_esc(title)}"><span class="spd-mark">{mark}</span>'
            f'{_esc(piece)}{sub}</span>')


def step_chips(step: SpecStep) -> str:
    """One step's draft tokens (accepted ✓, the first rejected ✗, the rest discarded), then the target's token."""
    chips = []
    for i, piece in enumerate(step.proposed_pieces):
        p = step.p_draft[i] if i < len(step.p_draft) else None
        q = step.q_draft[i] if i < len(step.q_draft) else None
        below = f"{step.accept_prob[i]:.2f}" if i < len(step.accept_prob) else ""
        title = (f"draft token {i + 1}: target p = {p:.3f}" if p is not None else f"draft token {i + 1}") + (
            f", drafter q = {q:.3f}" if q is not None else "") + (f", accepted with probability min(1, p/q) = {below}"
                                                                   if below else "")
        if i < step.accepted:
            chips.append(_chip(piece, "spd-acc", "✓", title + " · accepted", below))
        elif i == step.accepted and step.cut:  # the run ends at this draft token: transformers stops the step here
            chips.append(_chip(piece, "spd-tgt", "■", title + " · kept as the step's last token: the run ends here "
                               "(end of sequence or max new tokens), so transformers does not count it as a match"))
        elif i == step.accepted:
            chips.append(_chip(piece, "spd-rej", "✗", title + " · rejected", below))
        else:
            chips.append(_chip(piece, "spd-dis", "", title + " · discarded (after a rejection)", ""))
    if not step.proposed:
        chips.append('<span class="spd-none">no draft (no match in the text, or no room left): a plain decode '
                     'step</span>')
    if step.cut:
        return "".join(chips)
    kind = "bonus" if step.bonus else ("replacement" if step.proposed else "target")
    label = {"bonus": "bonus token (every draft accepted)", "replacement": "the target's own token, in place of the "
             "rejected draft", "target": "the target's own token"}[kind]
    target = _chip(step.target_piece, "spd-bonus" if kind == "bonus" else "spd-tgt", "★" if kind == "bonus" else "→",
                   label)
    return "".join(chips) + '<span class="spd-arrow">⇒</span>' + target


def steps_html(t: SpeculativeTrace) -> str:
    """The step view: one row per verification pass."""
    if not t.steps:
        return '<div class="spd-steps" id="spd-steps"><i>No step ran.</i></div>'
    rows = []
    proposed = accepted = 0
    for step in t.steps:
        proposed += len(step.proposed)
        accepted += step.accepted
        rate = _pct(accepted / proposed) if proposed else "–"
        passes = f"1 target + {step.drafter_passes} drafter" if step.drafter_passes else "1 target"
        rows.append(f'<tr><td class="spd-n">{step.index + 1}</td><td class="spd-row">{step_chips(step)}</td>'
                    f'<td>{step.accepted}/{len(step.proposed)}</td><td>{passes}</td><td>{rate}</td>'
                    f'<td>{_secs(step.draft_s)} + {_secs(step.verify_s)}</td></tr>')
    note = ("Under each draft token: the probability min(1, p/q) with which the rule accepted it."
            if any(s.accept_prob for s in t.steps) else "")
    legend = ('<div class="spd-legend">' + _chip("accepted", "spd-acc", "✓") + _chip("rejected", "spd-rej", "✗")
              + _chip("discarded", "spd-dis") + _chip("target's own token", "spd-tgt", "→")
              + _chip("bonus token", "spd-bonus", "★") + f" {note}</div>")
    return (f'<div class="spd-steps" id="spd-steps">{legend}<table><thead><tr><th>step</th><th>draft ⇒ verification '
            f'(one target pass)</th><th>kept</th><th>passes</th><th>acceptance so far</th><th>draft + verify</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


# ---------------------------------------------------------------------------------------------------
# Passes: the same text, passes counted under each


def passes_figure(t: SpeculativeTrace) -> go.Figure:
    """Two lanes over the generated tokens: speculative decoding (each target pass a box over the tokens it
    produced: accepted drafts, then the target's token) and plain decoding (one pass per token)."""
    n = len(t.token_ids)
    if not n:
        return _message_figure("No tokens were generated.")
    spec_lane = f"speculative: {_plural(t.target_passes, 'pass')}"
    plain_lane = f"plain: {_plural(t.plain_passes or n, 'pass')}"
    fig = go.Figure()
    kinds = {"accepted": ([], [], [], []), "target": ([], [], [], []), "bonus": ([], [], [], [])}
    for step in t.steps:
        hover = (f"pass {step.index + 1}: {step.accepted} of {len(step.proposed)} drafts kept"
                 f"<br>{_esc(''.join(step.proposed_pieces[: step.accepted]) + step.target_piece)}")
        if step.accepted:
            x, base, text, hov = kinds["accepted"]
            x.append(step.accepted), base.append(step.start), text.append(f"✓{step.accepted}"), hov.append(hover)
        x, base, text, hov = kinds["bonus" if step.bonus else "target"]
        x.append(1), base.append(step.start + step.accepted), text.append(""), hov.append(hover)
    styles = {"accepted": ("accepted draft tokens", ACCEPTED, ""), "target": ("the target's own token", TARGET, ""),
              "bonus": ("bonus token (all drafts kept)", BONUS, "/")}
    for kind, (x, base, text, hov) in kinds.items():
        if not x:
            continue
        name, colour, pattern = styles[kind]
        fig.add_bar(y=[spec_lane] * len(x), x=x, base=base, orientation="h", name=name, marker_color=colour,
                    marker_pattern=dict(shape=pattern, **HATCH), marker_line=dict(color="white", width=2),
                    text=text, textposition="inside", insidetextanchor="middle", hovertext=hov, hoverinfo="text")
    fig.add_bar(y=[plain_lane] * n, x=[1] * n, base=list(range(n)), orientation="h", name="plain decode pass",
                marker_color=[PLAIN if i % 2 else "#C8C8C8" for i in range(n)], marker_line=dict(color="white", width=2),
                hovertext=[f"plain pass {i + 1}: {_esc(p)}" for i, p in enumerate(t.pieces)], hoverinfo="text")
    few = n <= MAX_TICK_TOKENS
    fig.update_xaxes(range=[-0.5, n + 0.5], title_text="generated tokens (each box: one forward pass of the target)",
                     tickmode="array" if few else "auto", tickvals=[i + 0.5 for i in range(n)] if few else None,
                     ticktext=[p[:10] for p in t.pieces] if few else None, tickangle=-60 if few else 0)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=[spec_lane, plain_lane])
    fig.update_layout(barmode="overlay", bargap=0.35, uniformtext=dict(minsize=10, mode="hide"))
    return _layout(fig, 330 if few else 290, f"The same text: {passes_line(t)}")


def passes_summary(t: SpeculativeTrace) -> str:
    n = len(t.token_ids)
    bonus = sum(1 for s in t.steps if s.bonus)
    return (f"{passes_line(t)} ({t.tokens_per_pass:.2f} tokens per target pass); {bonus} of {_plural(len(t.steps), 'step')} "
            f"kept every draft token and got a bonus token; plain decoding needs one pass per token ({n}).")


# ---------------------------------------------------------------------------------------------------
# Acceptance per step


def acceptance_figure(t: SpeculativeTrace) -> go.Figure:
    if not t.steps:
        return _message_figure("No step ran.")
    steps = [s.index + 1 for s in t.steps]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=steps, y=[s.accepted for s in t.steps], name="accepted draft tokens", marker_color=ACCEPTED)
    if any(s.cut for s in t.steps):
        fig.add_bar(x=steps, y=[int(s.cut) for s in t.steps], name="kept: the run ended there", marker_color=TARGET)
    fig.add_bar(x=steps, y=[len(s.proposed) - s.accepted - int(s.cut) for s in t.steps], name="rejected or discarded",
                marker_color=REJECTED, marker_pattern=dict(shape="x", **HATCH))
    running, proposed, accepted = [], 0, 0
    for s in t.steps:
        proposed += len(s.proposed)
        accepted += s.accepted
        running.append(100 * accepted / proposed if proposed else None)
    fig.add_scatter(x=steps, y=running, name="acceptance rate so far (right axis)", mode="lines+markers",
                    line=dict(color="#222", width=2), secondary_y=True)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="step (one target pass each)", dtick=1 if len(steps) <= 30 else None)
    fig.update_yaxes(title_text="draft tokens", range=[0, t.num_draft_tokens + 0.5], dtick=1, secondary_y=False)
    fig.update_yaxes(title_text="acceptance so far (%)", range=[0, 105], secondary_y=True, showgrid=False)
    return _layout(fig, 380, f"Draft tokens kept per step · acceptance rate {_pct(t.acceptance_rate)} "
                             f"({t.accepted} of {t.proposed})")


def acceptance_summary(t: SpeculativeTrace) -> str:
    if not t.steps:
        return "No step ran."
    none = sum(1 for s in t.steps if s.proposed and s.accepted == 0)
    empty = sum(1 for s in t.steps if not s.proposed)
    extra = f"; {_plural(empty, 'step')} had no draft (plain decode steps)" if empty else ""
    return (f"{t.accepted} of {_plural(t.proposed, 'draft token')} accepted ({_pct(t.acceptance_rate)}) over "
            f"{_plural(len(t.steps), 'step')}; {_plural(none, 'step')} kept none of their drafts{extra}.")


# ---------------------------------------------------------------------------------------------------
# Speedup


def speedup_figure(t: SpeculativeTrace) -> go.Figure:
    """Left: forward passes of the target (and drafter) vs plain decoding. Right: wall time of both runs."""
    n = len(t.token_ids)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16, subplot_titles=[
        "Forward passes", f"Wall time for the same {_plural(n, 'token')} (s)"])
    runs = ["speculative", "plain"]
    fig.add_bar(x=runs, y=[t.target_passes, t.plain_passes or n], name="target passes", marker_color=[TARGET, PLAIN],
                text=[t.target_passes, t.plain_passes or n], textposition="outside", cliponaxis=False, row=1, col=1,
                showlegend=False)
    if t.drafter_passes:
        fig.add_bar(x=["speculative"], y=[t.drafter_passes], base=[t.target_passes], name="drafter passes",
                    marker_color=DRAFTER, marker_pattern=dict(shape="/", **HATCH), text=[f"+{t.drafter_passes} drafter"],
                    textposition="inside", row=1, col=1)
    seconds = [t.seconds, t.plain_seconds or 0.0]
    fig.add_bar(x=runs, y=seconds, marker_color=[ACCEPTED if (t.speedup or 0) >= 1 else REJECTED, PLAIN],
                text=[f"{t.seconds:.2f} s · {t.tokens_per_s:.1f} tok/s",
                      f"{(t.plain_seconds or 0):.2f} s · {(t.plain_tokens_per_s or 0):.1f} tok/s"],
                textposition="outside", cliponaxis=False, showlegend=False, row=1, col=2)
    top_passes = max(t.target_passes + t.drafter_passes, t.plain_passes or n, 1)
    fig.update_yaxes(range=[0, top_passes * 1.25], title_text="passes", row=1, col=1)
    fig.update_yaxes(range=[0, max(seconds + [1e-3]) * 1.3], title_text="seconds", row=1, col=2)
    fig.update_layout(barmode="overlay")
    return _layout(fig, 380, f"{_speed_words(t.speedup)} · {passes_line(t)}")


def speedup_summary(t: SpeculativeTrace) -> str:
    n = len(t.token_ids)
    drafter = f" plus {_plural(t.drafter_passes, 'drafter pass')}" if t.drafter_passes else ""
    return (f"Speculative: {t.target_passes} target passes{drafter}, {t.seconds:.2f} s ({t.tokens_per_s:.1f} tokens/s); "
            f"plain decoding of the same {n} tokens: {t.plain_passes or n} passes, {(t.plain_seconds or 0):.2f} s: "
            f"{_speed_words(t.speedup)}.")


# ---------------------------------------------------------------------------------------------------
# The sampling rule


def rule_steps(t: SpeculativeTrace) -> list[int]:
    """Indexes of the steps that have a rule view (sampling with a drafter that gives probabilities)."""
    return [s.index for s in t.steps if s.rule is not None]


def default_rule_step(t: SpeculativeTrace) -> int | None:
    """The first step where a draft token was rejected (the instructive case), else the first with a view."""
    steps = rule_steps(t)
    rejected = [i for i in steps if t.steps[i].rule.outcome == "rejected"]
    return (rejected or steps or [None])[0]


def rule_figure(t: SpeculativeTrace, step_index: int | None) -> go.Figure:
    """Grouped bars at the decision position of one step: the target's p, the drafter's q, and (after a rejection)
    the residual normalise(max(p - q, 0)) that the target's token was drawn from."""
    if not t.sampling:
        return _message_figure("Greedy: a draft token is kept when it is the target's most likely token.<br>"
                               "Set a temperature > 0 with a model or early-exit drafter to see the sampling rule.")
    if step_index is None or not (0 <= step_index < len(t.steps)) or t.steps[step_index].rule is None:
        return _message_figure("This drafter gives no probabilities (prompt lookup): the target samples its own token "
                               "at each position<br>and keeps the drafts while they agree, which also keeps its "
                               "distribution exactly.")
    step = t.steps[step_index]
    r = step.rule
    labels = [f"{p[:12]}" + (" ✗draft" if i == r.draft_token else "") + (" ◆chosen" if i == r.chosen_token else "")
              for i, p in zip(r.token_ids, r.pieces)]
    # Several tokens can print alike (e.g. two spaces); a category axis merges equal labels, so number them.
    labels = [f"{n + 1}. {label}" for n, label in enumerate(labels)]
    fig = go.Figure()
    fig.add_bar(x=labels, y=r.p, name="p: the target", marker_color=TARGET)
    if r.q:
        fig.add_bar(x=labels, y=r.q, name="q: the drafter", marker_color=Q_COLOUR, marker_pattern=dict(shape="/", **HATCH))
    if r.residual:
        fig.add_bar(x=labels, y=r.residual, name="normalise(max(p − q, 0)): drawn from after a rejection",
                    marker_color=RESIDUAL, marker_line=dict(color="#8a7d00", width=1.5))
    pos = r.position + 1
    if r.outcome == "rejected":
        i = r.position
        p, q, a = step.p_draft[i], step.q_draft[i], step.accept_prob[i]
        title = (f"Step {step.index + 1}, draft token {pos} '{_esc(step.proposed_pieces[i])}': accept with min(1, p/q) = "
                 f"min(1, {p:.3f}/{q:.3f}) = {a:.2f} → rejected; '{_esc(step.target_piece)}' drawn from the residual")
    else:
        title = (f"Step {step.index + 1}: all {len(step.proposed)} drafts accepted; the bonus token "
                 f"'{_esc(step.target_piece)}' is drawn from p at position {pos}")
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(tickangle=-35, title_text="tokens (the most likely under p and q, the draft, the chosen)")
    fig.update_yaxes(title_text="probability", rangemode="tozero")
    return _layout(fig, 450, title).update_layout(margin=dict(l=110, b=130))  # room for the slanted first label


def rule_summary(t: SpeculativeTrace, step_index: int | None) -> str:
    if not t.sampling:
        return "Greedy run: no sampling rule; the tokens equal plain greedy decoding."
    if step_index is None or not (0 <= step_index < len(t.steps)) or t.steps[step_index].rule is None:
        return "No probabilities from this drafter: the target samples each position itself and keeps matching drafts."
    step = t.steps[step_index]
    r = step.rule
    if r.outcome == "rejected":
        i = r.position
        return (f"Step {step.index + 1}: draft '{step.proposed_pieces[i]}' had p = {step.p_draft[i]:.3f} under the target "
                f"and q = {step.q_draft[i]:.3f} under the drafter, so it was kept with probability "
                f"{step.accept_prob[i]:.2f}; it was rejected and '{step.target_piece}' was drawn from max(p − q, 0) "
                f"(which holds {r.residual_mass:.2f} of p's mass before normalising). Accepting with min(1, p/q) and "
                "drawing rejections from max(p − q, 0) gives exactly the target's distribution p.")
    return (f"Step {step.index + 1}: every draft token was accepted; the bonus token '{step.target_piece}' was drawn "
            "from the target's own p at the next position.")


# ---------------------------------------------------------------------------------------------------
# The k sweep


def sweep_figure(sw: DraftSweep) -> go.Figure:
    if not sw.points:
        return _message_figure("The sweep measured nothing (time or pass budget reached first).")
    ks = [p.num_draft_tokens for p in sw.points]
    best = sw.best
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, row_heights=[0.55, 0.45],
                        subplot_titles=["Speedup vs plain decoding (same tokens, same request)",
                                        "Acceptance rate and tokens per target pass"], specs=[[{}], [{"secondary_y": True}]])
    fig.add_scatter(x=ks, y=[p.speedup for p in sw.points], mode="lines+markers+text", name="speedup",
                    text=[_times(p.speedup) for p in sw.points], textposition="top center",
                    line=dict(color=TARGET, width=3), marker=dict(size=9), row=1, col=1)
    fig.add_hline(y=1.0, line=dict(color="#444", dash="dot"), annotation_text="plain decoding (1×)",
                  annotation_position="bottom right", row=1, col=1)
    if best is not None:
        fig.add_scatter(x=[best.num_draft_tokens], y=[best.speedup], mode="markers", name=f"best k = {best.num_draft_tokens}",
                        marker=dict(symbol="star", size=20, color=BONUS, line=dict(color="#222", width=1)), row=1, col=1)
    fig.add_bar(x=ks, y=[100 * (p.acceptance_rate or 0) for p in sw.points], name="acceptance rate (%)",
                marker_color=ACCEPTED, opacity=0.8, row=2, col=1, secondary_y=False)
    fig.add_scatter(x=ks, y=[p.tokens / p.target_passes if p.target_passes else None for p in sw.points],
                    mode="lines+markers", name="tokens per target pass (right axis)", line=dict(color="#222", dash="dash"),
                    row=2, col=1, secondary_y=True)
    speedups = [p.speedup for p in sw.points if p.speedup is not None] or [1.0]
    fig.update_yaxes(title_text="× plain", range=[0, max(max(speedups), 1.0) * 1.3], row=1, col=1)
    fig.update_yaxes(title_text="accepted (%)", range=[0, 105], row=2, col=1, secondary_y=False)
    fig.update_yaxes(title_text="tokens / pass", rangemode="tozero", row=2, col=1, secondary_y=True, showgrid=False)
    fig.update_xaxes(dtick=1, title_text="k: draft tokens per step", row=2, col=1)
    title = (f"{_esc(sw.drafter.label)} · best k here = {best.num_draft_tokens} ({_times(best.speedup)})" if best
             else _esc(sw.drafter.label))
    return _layout(fig, 560, title, legend_rows=2)


def sweep_summary(sw: DraftSweep) -> str:
    if not sw.points:
        return "The sweep measured nothing."
    best = sw.best
    parts = [f"k={p.num_draft_tokens}: {_times(p.speedup)}, {_pct(p.acceptance_rate)} accepted" for p in sw.points]
    cut = "" if not sw.timed_out else f" Stopped early ({sw.stop_reason.replace('_', ' ')}): the points measured so far."
    same = [p.same_as_plain for p in sw.points if p.same_as_plain is not None]
    proof = (" Every k gave exactly the tokens of plain greedy decoding." if same and all(same)
             else " Some k gave other tokens than plain greedy decoding!" if same else "")
    lead = (f"Best k on this machine: {best.num_draft_tokens} ({_times(best.speedup)} vs plain decoding). "
            if best.speedup >= 1 else
            f"No k beats plain decoding here with this drafter; the least slow is k = {best.num_draft_tokens} "
            f"({_times(best.speedup)}). ")
    return lead + "; ".join(parts) + "." + proof + cut


# ---------------------------------------------------------------------------------------------------
# Drafters side by side


def compare_figure(cmp: DrafterComparison) -> go.Figure:
    if not cmp.runs:
        return _message_figure("No drafter ran (time or pass budget reached first).")
    names = [f"{i + 1}. {short_name(t.drafter)}" for i, t in enumerate(cmp.runs)]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["Speedup vs plain decoding", "Acceptance rate (%)"])
    fig.add_bar(y=names, x=[t.speedup or 0 for t in cmp.runs], orientation="h", showlegend=False,
                marker_color=[ACCEPTED if (t.speedup or 0) >= 1 else REJECTED for t in cmp.runs],
                text=[_times(t.speedup) for t in cmp.runs], textposition="outside", cliponaxis=False, row=1, col=1)
    fig.add_vline(x=1.0, line=dict(color="#444", dash="dot"), row=1, col=1)
    fig.add_bar(y=names, x=[100 * (t.acceptance_rate or 0) for t in cmp.runs], orientation="h", showlegend=False,
                marker_color=TARGET, text=[_pct(t.acceptance_rate) for t in cmp.runs], textposition="outside",
                cliponaxis=False, row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=2)
    fig.update_xaxes(range=[0, max([t.speedup or 0 for t in cmp.runs] + [1.0]) * 1.3], row=1, col=1)
    fig.update_xaxes(range=[0, 120], row=1, col=2)
    height = 170 + 46 * len(cmp.runs)
    return _layout(fig, height, f"{len(cmp.runs)} drafters, k = {cmp.num_draft_tokens}, same prompt").update_layout(
        margin=dict(l=240))


def compare_summary(cmp: DrafterComparison) -> str:
    if not cmp.runs:
        return "No drafter ran."
    parts = [f"{t.drafter.label}: {_times(t.speedup)}, {_pct(t.acceptance_rate)} accepted, {t.target_passes} target + "
             f"{t.drafter_passes} drafter passes" for t in cmp.runs]
    same = [t.same_as_plain for t in cmp.runs if t.same_as_plain is not None]
    proof = " All gave exactly the tokens of plain greedy decoding." if same and all(same) else ""
    cut = (f" Stopped early ({cmp.stop_reason.replace('_', ' ')}): the drafters measured so far." if cmp.timed_out
           else "")
    return "; ".join(parts) + "." + proof + cut


def _runs_table(table_id: str, first: str, runs: list[tuple], note: str) -> str:
    """One row per run (first column, tokens, target passes, drafter passes, acceptance, seconds, speedup, same as
    plain), the plain reference's timings below."""
    rows = "".join(
        f"<tr><td>{_esc(name)}</td><td>{tokens}</td><td>{target}</td><td>{drafter}</td><td>{_pct(rate)}</td>"
        f"<td>{seconds:.2f} s</td><td>{_times(speedup)}</td>"
        f"<td>{'✓' if same else ('–' if same is None else '✗')}</td></tr>"
        for name, tokens, target, drafter, rate, seconds, speedup, same in runs)
    return (f'<div class="spd-table" id="{table_id}"><table><thead><tr><th>{first}</th><th>tokens</th>'
            f'<th>target passes</th><th>drafter passes</th><th>accepted</th><th>time</th><th>speedup</th>'
            f'<th>same as plain</th></tr></thead><tbody>{rows}</tbody></table><div class="spd-d">{note}</div></div>')


def compare_html(cmp: DrafterComparison) -> str:
    runs = [(t.drafter.label, len(t.token_ids), t.target_passes, t.drafter_passes, t.acceptance_rate, t.seconds,
             t.speedup, t.same_as_plain) for t in cmp.runs]
    plain = ", ".join(f"{s:.2f} s" for s in cmp.plain_seconds)
    return _runs_table("spd-compare-table", "drafter", runs,
                       f"Plain decoding of {cmp.plain_tokens} tokens, timed before and after: {plain}.")


def sweep_html(sw: DraftSweep) -> str:
    runs = [(p.num_draft_tokens, p.tokens, p.target_passes, p.drafter_passes, p.acceptance_rate, p.seconds, p.speedup,
             p.same_as_plain) for p in sw.points]
    plain = ", ".join(f"{s:.2f} s" for s in sw.plain_seconds)
    return _runs_table("spd-sweep-table", "k", runs, f"Plain decoding of {sw.plain_tokens} tokens, timed before, "
                       f"in the middle and after: {plain}.")


CSS = """
.spd-cards { display: flex; flex-wrap: wrap; gap: .6rem; margin: .4rem 0; }
.spd-card { flex: 1 1 170px; border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .5rem .7rem; }
.spd-k { font-size: .85rem; color: var(--body-text-color-subdued); }
.spd-v { font-size: 1.5rem; font-weight: 700; }
.spd-v small { font-size: .9rem; font-weight: 400; }
.spd-d { font-size: .85rem; color: var(--body-text-color-subdued); }
.spd-same { margin: .4rem 0; padding: .35rem .6rem; border-radius: 6px; font-weight: 600; }
.spd-ok { background: #e3f4ec; color: #00583f; }
.spd-bad { background: #fbe3d6; color: #7a2e00; }
.spd-info { background: #e6eef7; color: #0b3d6b; }
.spd-text { margin: .35rem 0; font-size: .95rem; }
.spd-steps table, .spd-table table { border-collapse: collapse; font-size: .92rem; margin: .3rem 0; width: 100%; }
.spd-steps th, .spd-steps td, .spd-table th, .spd-table td { border-bottom: 1px solid var(--border-color-primary);
  padding: .25rem .5rem; text-align: left; vertical-align: middle; }
.spd-steps td.spd-n { font-weight: 600; text-align: right; }
.spd-row { line-height: 2.3; }
.spd-chip { display: inline-block; font-family: var(--font-mono); padding: 1px 5px; margin: 1px 2px; border-radius: 5px;
  border: 2px solid transparent; color: #111; white-space: pre; position: relative; }
.spd-chip .spd-mark { font-weight: 700; margin-right: 2px; }
.spd-chip .spd-sub { display: block; font-size: .7rem; line-height: 1; text-align: center; color: #333; }
.spd-acc { background: #cdeee1; border-color: #009E73; }
.spd-rej { background: #f9d3bf; border-color: #D55E00; text-decoration: line-through; }
.spd-dis { background: #eee; border-color: #ccc; color: #777; border-style: dashed; }
.spd-tgt { background: #cfe3f3; border-color: #0072B2; font-weight: 700; }
.spd-bonus { background: #fbe6c0; border-color: #E69F00; font-weight: 700; }
.spd-arrow { margin: 0 .35rem; color: var(--body-text-color-subdued); }
.spd-none { font-style: italic; color: var(--body-text-color-subdued); }
.spd-legend { font-size: .88rem; margin: .2rem 0 .4rem 0; }
.spd-steps { max-height: 560px; overflow-y: auto; }
"""
