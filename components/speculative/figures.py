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
accepted and rejected also differ by mark (✓ / ✗) and pattern, so they read in greyscale. Texts come from the
message catalogue (assets/i18n/<lang>/speculative.yaml): each builder takes `lang` (English by default; the event
handlers pass the visitor's language). A record is named `t_` here, as `t` is the catalogue's lookup.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..i18n import DEFAULT, t

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


def _count(key: str, n: int, lang: str) -> str:
    """'1 token', '2 tokens', '3 passes': catalogue texts `<key>_one` and `<key>_many` (n with thousands commas)."""
    return t(f"{key}_{'one' if n == 1 else 'many'}", lang, n=f"{n:,}")


def _stop_words(reason: str, lang: str) -> str:
    """Why a run or a sweep stopped, in words (an unknown reason as it is)."""
    if reason in ("eos", "max_new_tokens", "time_limit", "pass_budget"):
        return t(f"speculative.stop_{reason}", lang)
    return reason


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


# How `inference.speculative` words a draft model's label after its name (matched to find the name; English only).
_HOW = {"model": ", same tokenizer",  # not translated: inference's wording, matched
        "universal": ", another tokenizer: universal assisted decoding"}  # not translated: inference's wording, matched
_ITSELF = " (the target itself)"  # not translated: inference's wording, matched


def drafter_label(d, lang: str = DEFAULT) -> str:
    """The drafter's label: inference's own (English) one, or in another language rebuilt from the drafter's kind
    (a label this module cannot read is shown as it is)."""
    if lang == DEFAULT:
        return d.label
    if d.kind == "prompt_lookup":
        return t("speculative.drafter_prompt_lookup", lang)
    if d.kind == "early_exit" and d.layers:
        return t("speculative.drafter_early_exit", lang, layers=d.layers)
    how = _HOW.get(d.kind)
    if how and d.label.endswith(how):
        name = d.label[: -len(how)]
        if d.kind == "model" and name.endswith(_ITSELF):
            return t("speculative.drafter_model_itself", lang, name=name[: -len(_ITSELF)])
        return t(f"speculative.drafter_{d.kind}", lang, name=name)
    return d.label


def short_name(d, lang: str = DEFAULT) -> str:
    """A drafter in a few words, for axis labels."""
    if d.kind == "prompt_lookup":
        return t("speculative.short_prompt_lookup", lang)
    if d.kind == "early_exit":
        return t("speculative.short_early_exit", lang, layers=d.layers)
    name = (d.model_id or d.spec).rsplit("/", 1)[-1]
    return t("speculative.short_universal", lang, name=name) if d.kind == "universal" else name


def passes_line(t_: SpeculativeTrace, lang: str = DEFAULT) -> str:
    """'48 tokens in 19 target passes instead of 48'."""
    n = len(t_.token_ids)
    return t("speculative.passes_line", lang, tokens=_count("speculative.n_tokens", n, lang),
             passes=_count("speculative.n_target_passes", t_.target_passes, lang), plain=t_.plain_passes or n)


def _speed_words(speedup: float | None, lang: str) -> str:
    if speedup is None:
        return t("speculative.speed_unknown", lang)
    if speedup >= 1.05:
        return t("speculative.speed_faster", lang, x=f"{speedup:.2f}")
    if speedup <= 0.95:
        return t("speculative.speed_slower", lang, x=f"{1 / speedup:.2f}")
    return t("speculative.speed_same", lang, x=f"{speedup:.2f}")


def _sameness(t_: SpeculativeTrace, lang: str) -> tuple[str, str]:
    """(css class, sentence): the proof that nothing changed."""
    if t_.sampling:
        return "spd-info", t("speculative.same_sampling", lang)
    if t_.same_as_plain:
        return "spd-ok", t("speculative.same_yes", lang)
    if t_.same_as_plain is None:
        return "spd-info", t("speculative.same_not_run", lang)
    return "spd-bad", t("speculative.same_no", lang)


# ---------------------------------------------------------------------------------------------------
# Headline and step view


def headline_html(t_: SpeculativeTrace, lang: str = DEFAULT) -> str:
    n = len(t_.token_ids)
    cls, same = _sameness(t_, lang)
    tokens = _count("speculative.n_tokens", n, lang)
    instead = t("speculative.card_instead_of", lang, n=f"{t_.plain_passes or n:,}")
    cards = [
        (t("speculative.card_passes", lang), f"{t_.target_passes:,} <small>{instead}</small>",
         t("speculative.card_passes_detail", lang, tokens=tokens, rate=f"{t_.tokens_per_pass:.2f}"), "spd-passes"),
        (t("speculative.card_speedup", lang), _times(t_.speedup),
         t("speculative.card_speedup_detail", lang, seconds=_secs(t_.seconds), plain=_secs(t_.plain_seconds),
           tokens=tokens), "spd-speedup"),
        (t("speculative.card_acceptance", lang), _pct(t_.acceptance_rate),
         t("speculative.card_acceptance_detail", lang, accepted=f"{t_.accepted:,}",
           draft_tokens=_count("speculative.n_draft_tokens", t_.proposed, lang)), "spd-acceptance"),
        (t("speculative.card_rate", lang), f"{t_.tokens_per_s:.1f}",
         t("speculative.card_rate_detail", lang, rate=f"{t_.plain_tokens_per_s:.1f}") if t_.plain_tokens_per_s else "",
         "spd-rate"),
        (t("speculative.card_drafter_passes", lang), f"{t_.drafter_passes:,}", _esc(drafter_label(t_.drafter, lang)),
         "spd-drafter"),
    ]
    cards_html = "".join(f'<div class="spd-card" id="{i}"><div class="spd-k">{k}</div><div class="spd-v">{v}</div>'
                         f'<div class="spd-d">{d}</div></div>' for k, v, d, i in cards)
    stop = _stop_words(t_.stop_reason, lang)
    text = _esc(t_.text) or f"<i>{t('speculative.no_text', lang)}</i>"
    mode = (t("speculative.mode_greedy", lang) if not t_.sampling else
            t("speculative.mode_sampling", lang, temperature=f"{t_.params.temperature:g}", seed=t_.seed))
    generated = t("speculative.generated", lang, mode=mode, k=t_.num_draft_tokens, generator=_esc(t_.generator),
                  stop=_esc(stop))
    return (f'<div class="spd-cards">{cards_html}</div>'
            f'<div class="spd-same {cls}" id="spd-same">{_esc(same)}</div>'
            f'<div class="spd-text">{generated} {text}</div>')


def _chip(piece: str, cls: str, mark: str = "", title: str = "", below: str = "") -> str:
    sub = f'<span class="spd-sub">{_esc(below)}</span>' if below else ""
    return (f'<span class="spd-chip {cls}" title="{_esc(title)}"><span class="spd-mark">{mark}</span>'
            f'{_esc(piece)}{sub}</span>')


def step_chips(step: SpecStep, lang: str = DEFAULT) -> str:
    """One step's draft tokens (accepted ✓, the first rejected ✗, the rest discarded), then the target's token."""
    chips = []
    for i, piece in enumerate(step.proposed_pieces):
        p = step.p_draft[i] if i < len(step.p_draft) else None
        q = step.q_draft[i] if i < len(step.q_draft) else None
        below = f"{step.accept_prob[i]:.2f}" if i < len(step.accept_prob) else ""
        title = (t("speculative.chip_draft_p", lang, i=i + 1, p=f"{p:.3f}") if p is not None
                 else t("speculative.chip_draft", lang, i=i + 1)) + (
            t("speculative.chip_q", lang, q=f"{q:.3f}") if q is not None else "") + (
            t("speculative.chip_prob", lang, a=below) if below else "")
        if i < step.accepted:
            chips.append(_chip(piece, "spd-acc", "✓", f"{title} · {t('speculative.chip_accepted', lang)}", below))
        elif i == step.accepted and step.cut:  # the run ends at this draft token: transformers stops the step here
            chips.append(_chip(piece, "spd-tgt", "■", f"{title} · {t('speculative.chip_cut', lang)}"))
        elif i == step.accepted:
            chips.append(_chip(piece, "spd-rej", "✗", f"{title} · {t('speculative.chip_rejected', lang)}", below))
        else:
            chips.append(_chip(piece, "spd-dis", "", f"{title} · {t('speculative.chip_discarded', lang)}", ""))
    if not step.proposed:
        chips.append(f'<span class="spd-none">{t("speculative.chip_no_draft", lang)}</span>')
    if step.cut:
        return "".join(chips)
    kind = "bonus" if step.bonus else ("replacement" if step.proposed else "target")
    label = t(f"speculative.chip_{kind}", lang)
    target = _chip(step.target_piece, "spd-bonus" if kind == "bonus" else "spd-tgt", "★" if kind == "bonus" else "→",
                   label)
    return "".join(chips) + '<span class="spd-arrow">⇒</span>' + target


def steps_html(t_: SpeculativeTrace, lang: str = DEFAULT) -> str:
    """The step view: one row per verification pass."""
    if not t_.steps:
        return f'<div class="spd-steps" id="spd-steps"><i>{t("speculative.no_step", lang)}</i></div>'
    rows = []
    proposed = accepted = 0
    for step in t_.steps:
        proposed += len(step.proposed)
        accepted += step.accepted
        rate = _pct(accepted / proposed) if proposed else "–"
        passes = (t("speculative.step_passes_drafter", lang, n=step.drafter_passes) if step.drafter_passes
                  else t("speculative.step_passes", lang))
        rows.append(f'<tr><td class="spd-n">{step.index + 1}</td><td class="spd-row">{step_chips(step, lang)}</td>'
                    f'<td>{step.accepted}/{len(step.proposed)}</td><td>{passes}</td><td>{rate}</td>'
                    f'<td>{_secs(step.draft_s)} + {_secs(step.verify_s)}</td></tr>')
    note = t("speculative.steps_note", lang) if any(s.accept_prob for s in t_.steps) else ""
    legend = ('<div class="spd-legend">' + _chip(t("speculative.legend_accepted", lang), "spd-acc", "✓")
              + _chip(t("speculative.legend_rejected", lang), "spd-rej", "✗")
              + _chip(t("speculative.legend_discarded", lang), "spd-dis")
              + _chip(t("speculative.legend_target", lang), "spd-tgt", "→")
              + _chip(t("speculative.legend_bonus", lang), "spd-bonus", "★") + f" {note}</div>")
    heads = "".join(f"<th>{t(f'speculative.steps_col_{c}', lang)}</th>"
                    for c in ("step", "draft", "kept", "passes", "rate", "time"))
    return (f'<div class="spd-steps" id="spd-steps">{legend}<table><thead><tr>{heads}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


# ---------------------------------------------------------------------------------------------------
# Passes: the same text, passes counted under each


def passes_figure(t_: SpeculativeTrace, lang: str = DEFAULT) -> go.Figure:
    """Two lanes over the generated tokens: speculative decoding (each target pass a box over the tokens it
    produced: accepted drafts, then the target's token) and plain decoding (one pass per token)."""
    n = len(t_.token_ids)
    if not n:
        return _message_figure(t("speculative.no_tokens", lang))
    spec_lane = t("speculative.lane_speculative", lang, passes=_count("speculative.n_passes", t_.target_passes, lang))
    plain_lane = t("speculative.lane_plain", lang, passes=_count("speculative.n_passes", t_.plain_passes or n, lang))
    fig = go.Figure()
    kinds = {"accepted": ([], [], [], []), "target": ([], [], [], []), "bonus": ([], [], [], [])}
    for step in t_.steps:
        hover = (t("speculative.hover_pass", lang, i=step.index + 1, accepted=step.accepted,
                   proposed=len(step.proposed))
                 + f"<br>{_esc(''.join(step.proposed_pieces[: step.accepted]) + step.target_piece)}")
        if step.accepted:
            x, base, text, hov = kinds["accepted"]
            x.append(step.accepted), base.append(step.start), text.append(f"✓{step.accepted}"), hov.append(hover)
        x, base, text, hov = kinds["bonus" if step.bonus else "target"]
        x.append(1), base.append(step.start + step.accepted), text.append(""), hov.append(hover)
    styles = {"accepted": (t("speculative.trace_accepted", lang), ACCEPTED, ""),
              "target": (t("speculative.trace_target", lang), TARGET, ""),
              "bonus": (t("speculative.trace_bonus", lang), BONUS, "/")}
    for kind, (x, base, text, hov) in kinds.items():
        if not x:
            continue
        name, colour, pattern = styles[kind]
        fig.add_bar(y=[spec_lane] * len(x), x=x, base=base, orientation="h", name=name, marker_color=colour,
                    marker_pattern=dict(shape=pattern, **HATCH), marker_line=dict(color="white", width=2),
                    text=text, textposition="inside", insidetextanchor="middle", hovertext=hov, hoverinfo="text")
    fig.add_bar(y=[plain_lane] * n, x=[1] * n, base=list(range(n)), orientation="h",
                name=t("speculative.trace_plain_pass", lang),
                marker_color=[PLAIN if i % 2 else "#C8C8C8" for i in range(n)], marker_line=dict(color="white", width=2),
                hovertext=[t("speculative.hover_plain_pass", lang, i=i + 1, piece=_esc(p))
                           for i, p in enumerate(t_.pieces)],
                hoverinfo="text")
    few = n <= MAX_TICK_TOKENS
    fig.update_xaxes(range=[-0.5, n + 0.5], title_text=t("speculative.axis_generated_tokens", lang),
                     tickmode="array" if few else "auto", tickvals=[i + 0.5 for i in range(n)] if few else None,
                     ticktext=[p[:10] for p in t_.pieces] if few else None, tickangle=-60 if few else 0)
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=[spec_lane, plain_lane])
    fig.update_layout(barmode="overlay", bargap=0.35, uniformtext=dict(minsize=10, mode="hide"))
    return _layout(fig, 330 if few else 290, t("speculative.passes_title", lang, line=passes_line(t_, lang)))


def passes_summary(t_: SpeculativeTrace, lang: str = DEFAULT) -> str:
    n = len(t_.token_ids)
    bonus = sum(1 for s in t_.steps if s.bonus)
    return t("speculative.passes_summary", lang, line=passes_line(t_, lang), rate=f"{t_.tokens_per_pass:.2f}",
             bonus=bonus, steps=_count("speculative.n_steps", len(t_.steps), lang), n=n)


# ---------------------------------------------------------------------------------------------------
# Acceptance per step


def acceptance_figure(t_: SpeculativeTrace, lang: str = DEFAULT) -> go.Figure:
    if not t_.steps:
        return _message_figure(t("speculative.no_step", lang))
    steps = [s.index + 1 for s in t_.steps]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=steps, y=[s.accepted for s in t_.steps], name=t("speculative.trace_accepted", lang),
                marker_color=ACCEPTED)
    if any(s.cut for s in t_.steps):
        fig.add_bar(x=steps, y=[int(s.cut) for s in t_.steps], name=t("speculative.trace_cut", lang),
                    marker_color=TARGET)
    fig.add_bar(x=steps, y=[len(s.proposed) - s.accepted - int(s.cut) for s in t_.steps],
                name=t("speculative.trace_rejected", lang), marker_color=REJECTED,
                marker_pattern=dict(shape="x", **HATCH))
    running, proposed, accepted = [], 0, 0
    for s in t_.steps:
        proposed += len(s.proposed)
        accepted += s.accepted
        running.append(100 * accepted / proposed if proposed else None)
    fig.add_scatter(x=steps, y=running, name=t("speculative.trace_running_rate", lang), mode="lines+markers",
                    line=dict(color="#222", width=2), secondary_y=True)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text=t("speculative.axis_step", lang), dtick=1 if len(steps) <= 30 else None)
    fig.update_yaxes(title_text=t("speculative.axis_draft_tokens", lang), range=[0, t_.num_draft_tokens + 0.5], dtick=1,
                     secondary_y=False)
    fig.update_yaxes(title_text=t("speculative.axis_running_rate", lang), range=[0, 105], secondary_y=True,
                     showgrid=False)
    return _layout(fig, 380, t("speculative.acceptance_title", lang, rate=_pct(t_.acceptance_rate),
                               accepted=t_.accepted, proposed=t_.proposed))


def acceptance_summary(t_: SpeculativeTrace, lang: str = DEFAULT) -> str:
    if not t_.steps:
        return t("speculative.no_step", lang)
    none = sum(1 for s in t_.steps if s.proposed and s.accepted == 0)
    empty = sum(1 for s in t_.steps if not s.proposed)
    extra = t("speculative.acceptance_summary_empty", lang, steps=_count("speculative.n_steps", empty, lang)) \
        if empty else ""
    return t("speculative.acceptance_summary", lang, accepted=t_.accepted,
             draft_tokens=_count("speculative.n_draft_tokens", t_.proposed, lang), rate=_pct(t_.acceptance_rate),
             steps=_count("speculative.n_steps", len(t_.steps), lang),
             none=_count("speculative.n_steps", none, lang), extra=extra)


# ---------------------------------------------------------------------------------------------------
# Speedup


def speedup_figure(t_: SpeculativeTrace, lang: str = DEFAULT) -> go.Figure:
    """Left: forward passes of the target (and drafter) vs plain decoding. Right: wall time of both runs."""
    n = len(t_.token_ids)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16, subplot_titles=[
        t("speculative.speedup_passes_title", lang),
        t("speculative.speedup_time_title", lang, tokens=_count("speculative.n_tokens", n, lang))])
    speculative, plain = t("speculative.run_speculative", lang), t("speculative.run_plain", lang)
    runs = [speculative, plain]
    fig.add_bar(x=runs, y=[t_.target_passes, t_.plain_passes or n], name=t("speculative.trace_target_passes", lang),
                marker_color=[TARGET, PLAIN], text=[t_.target_passes, t_.plain_passes or n], textposition="outside",
                cliponaxis=False, row=1, col=1, showlegend=False)
    if t_.drafter_passes:
        fig.add_bar(x=[speculative], y=[t_.drafter_passes], base=[t_.target_passes],
                    name=t("speculative.trace_drafter_passes", lang), marker_color=DRAFTER,
                    marker_pattern=dict(shape="/", **HATCH),
                    text=[t("speculative.bar_drafter_passes", lang, n=t_.drafter_passes)], textposition="inside",
                    row=1, col=1)
    seconds = [t_.seconds, t_.plain_seconds or 0.0]
    fig.add_bar(x=runs, y=seconds, marker_color=[ACCEPTED if (t_.speedup or 0) >= 1 else REJECTED, PLAIN],
                text=[f"{t_.seconds:.2f} s · {t_.tokens_per_s:.1f} tok/s",
                      f"{(t_.plain_seconds or 0):.2f} s · {(t_.plain_tokens_per_s or 0):.1f} tok/s"],
                textposition="outside", cliponaxis=False, showlegend=False, row=1, col=2)
    top_passes = max(t_.target_passes + t_.drafter_passes, t_.plain_passes or n, 1)
    fig.update_yaxes(range=[0, top_passes * 1.25], title_text=t("speculative.axis_passes", lang), row=1, col=1)
    fig.update_yaxes(range=[0, max(seconds + [1e-3]) * 1.3], title_text=t("speculative.axis_seconds", lang), row=1,
                     col=2)
    fig.update_layout(barmode="overlay")
    return _layout(fig, 380, f"{_speed_words(t_.speedup, lang)} · {passes_line(t_, lang)}")


def speedup_summary(t_: SpeculativeTrace, lang: str = DEFAULT) -> str:
    n = len(t_.token_ids)
    drafter = (t("speculative.speedup_summary_drafter", lang,
                 drafter_passes=_count("speculative.n_drafter_passes", t_.drafter_passes, lang))
               if t_.drafter_passes else "")
    return t("speculative.speedup_summary", lang, target=t_.target_passes, drafter=drafter,
             seconds=f"{t_.seconds:.2f}", rate=f"{t_.tokens_per_s:.1f}", n=n, plain_passes=t_.plain_passes or n,
             plain_seconds=f"{(t_.plain_seconds or 0):.2f}", speed=_speed_words(t_.speedup, lang))


# ---------------------------------------------------------------------------------------------------
# The sampling rule


def rule_steps(t_: SpeculativeTrace) -> list[int]:
    """Indexes of the steps that have a rule view (sampling with a drafter that gives probabilities)."""
    return [s.index for s in t_.steps if s.rule is not None]


def default_rule_step(t_: SpeculativeTrace) -> int | None:
    """The first step where a draft token was rejected (the instructive case), else the first with a view."""
    steps = rule_steps(t_)
    rejected = [i for i in steps if t_.steps[i].rule.outcome == "rejected"]
    return (rejected or steps or [None])[0]


def rule_figure(t_: SpeculativeTrace, step_index: int | None, lang: str = DEFAULT) -> go.Figure:
    """Grouped bars at the decision position of one step: the target's p, the drafter's q, and (after a rejection)
    the residual normalise(max(p - q, 0)) that the target's token was drawn from."""
    if not t_.sampling:
        return _message_figure(t("speculative.rule_greedy", lang))
    if step_index is None or not (0 <= step_index < len(t_.steps)) or t_.steps[step_index].rule is None:
        return _message_figure(t("speculative.rule_no_probabilities", lang))
    step = t_.steps[step_index]
    r = step.rule
    draft, chosen = t("speculative.rule_mark_draft", lang), t("speculative.rule_mark_chosen", lang)
    labels = [f"{p[:12]}" + (f" ✗{draft}" if i == r.draft_token else "")
              + (f" ◆{chosen}" if i == r.chosen_token else "") for i, p in zip(r.token_ids, r.pieces)]
    # Several tokens can print alike (e.g. two spaces); a category axis merges equal labels, so number them.
    labels = [f"{n + 1}. {label}" for n, label in enumerate(labels)]
    fig = go.Figure()
    fig.add_bar(x=labels, y=r.p, name=t("speculative.trace_p", lang), marker_color=TARGET)
    if r.q:
        fig.add_bar(x=labels, y=r.q, name=t("speculative.trace_q", lang), marker_color=Q_COLOUR,
                    marker_pattern=dict(shape="/", **HATCH))
    if r.residual:
        fig.add_bar(x=labels, y=r.residual, name=t("speculative.trace_residual", lang),
                    marker_color=RESIDUAL, marker_line=dict(color="#8a7d00", width=1.5))
    pos = r.position + 1
    if r.outcome == "rejected":
        i = r.position
        p, q, a = step.p_draft[i], step.q_draft[i], step.accept_prob[i]
        title = t("speculative.rule_title_rejected", lang, step=step.index + 1, position=pos,
                  draft=_esc(step.proposed_pieces[i]), p=f"{p:.3f}", q=f"{q:.3f}", a=f"{a:.2f}",
                  target=_esc(step.target_piece))
    else:
        title = t("speculative.rule_title_bonus", lang, step=step.index + 1, n=len(step.proposed),
                  target=_esc(step.target_piece), position=pos)
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(tickangle=-35, title_text=t("speculative.axis_rule_tokens", lang))
    fig.update_yaxes(title_text=t("speculative.axis_probability", lang), rangemode="tozero")
    return _layout(fig, 450, title).update_layout(margin=dict(l=110, b=130))  # room for the slanted first label


def rule_summary(t_: SpeculativeTrace, step_index: int | None, lang: str = DEFAULT) -> str:
    if not t_.sampling:
        return t("speculative.rule_summary_greedy", lang)
    if step_index is None or not (0 <= step_index < len(t_.steps)) or t_.steps[step_index].rule is None:
        return t("speculative.rule_summary_no_probabilities", lang)
    step = t_.steps[step_index]
    r = step.rule
    if r.outcome == "rejected":
        i = r.position
        return t("speculative.rule_summary_rejected", lang, step=step.index + 1, draft=step.proposed_pieces[i],
                 p=f"{step.p_draft[i]:.3f}", q=f"{step.q_draft[i]:.3f}", a=f"{step.accept_prob[i]:.2f}",
                 target=step.target_piece, mass=f"{r.residual_mass:.2f}")
    return t("speculative.rule_summary_bonus", lang, step=step.index + 1, target=step.target_piece)


# ---------------------------------------------------------------------------------------------------
# The k sweep


def sweep_figure(sw: DraftSweep, lang: str = DEFAULT) -> go.Figure:
    if not sw.points:
        return _message_figure(t("speculative.sweep_nothing_budget", lang))
    ks = [p.num_draft_tokens for p in sw.points]
    best = sw.best
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, row_heights=[0.55, 0.45],
                        subplot_titles=[t("speculative.sweep_speedup_title", lang),
                                        t("speculative.sweep_acceptance_title", lang)],
                        specs=[[{}], [{"secondary_y": True}]])
    fig.add_scatter(x=ks, y=[p.speedup for p in sw.points], mode="lines+markers+text",
                    name=t("speculative.trace_speedup", lang),
                    text=[_times(p.speedup) for p in sw.points], textposition="top center",
                    line=dict(color=TARGET, width=3), marker=dict(size=9), row=1, col=1)
    fig.add_hline(y=1.0, line=dict(color="#444", dash="dot"), annotation_text=t("speculative.sweep_plain_line", lang),
                  annotation_position="bottom right", row=1, col=1)
    if best is not None:
        fig.add_scatter(x=[best.num_draft_tokens], y=[best.speedup], mode="markers",
                        name=t("speculative.trace_best_k", lang, k=best.num_draft_tokens),
                        marker=dict(symbol="star", size=20, color=BONUS, line=dict(color="#222", width=1)), row=1, col=1)
    fig.add_bar(x=ks, y=[100 * (p.acceptance_rate or 0) for p in sw.points],
                name=t("speculative.trace_acceptance_pct", lang),
                marker_color=ACCEPTED, opacity=0.8, row=2, col=1, secondary_y=False)
    fig.add_scatter(x=ks, y=[p.tokens / p.target_passes if p.target_passes else None for p in sw.points],
                    mode="lines+markers", name=t("speculative.trace_tokens_per_pass", lang),
                    line=dict(color="#222", dash="dash"), row=2, col=1, secondary_y=True)
    speedups = [p.speedup for p in sw.points if p.speedup is not None] or [1.0]
    fig.update_yaxes(title_text=t("speculative.axis_times_plain", lang), range=[0, max(max(speedups), 1.0) * 1.3],
                     row=1, col=1)
    fig.update_yaxes(title_text=t("speculative.axis_accepted_pct", lang), range=[0, 105], row=2, col=1,
                     secondary_y=False)
    fig.update_yaxes(title_text=t("speculative.axis_tokens_per_pass", lang), rangemode="tozero", row=2, col=1,
                     secondary_y=True, showgrid=False)
    fig.update_xaxes(dtick=1, title_text=t("speculative.axis_k", lang), row=2, col=1)
    label = _esc(drafter_label(sw.drafter, lang))
    title = (t("speculative.sweep_title", lang, drafter=label, k=best.num_draft_tokens, speedup=_times(best.speedup))
             if best else label)
    return _layout(fig, 560, title, legend_rows=2)


def sweep_summary(sw: DraftSweep, lang: str = DEFAULT) -> str:
    if not sw.points:
        return t("speculative.sweep_nothing", lang)
    best = sw.best
    parts = [t("speculative.sweep_point", lang, k=p.num_draft_tokens, speedup=_times(p.speedup),
               rate=_pct(p.acceptance_rate)) for p in sw.points]
    cut = "" if not sw.timed_out else t("speculative.sweep_stopped", lang, reason=_stop_words(sw.stop_reason, lang))
    same = [p.same_as_plain for p in sw.points if p.same_as_plain is not None]
    proof = (t("speculative.sweep_all_same", lang) if same and all(same)
             else t("speculative.sweep_some_differ", lang) if same else "")
    lead = (t("speculative.sweep_best", lang, k=best.num_draft_tokens, speedup=_times(best.speedup))
            if best.speedup >= 1 else
            t("speculative.sweep_none_faster", lang, k=best.num_draft_tokens, speedup=_times(best.speedup)))
    return t("speculative.summary_list", lang, lead=lead, parts=t("speculative.list_sep", lang).join(parts),
             proof=proof, cut=cut)


# ---------------------------------------------------------------------------------------------------
# Drafters side by side


def compare_figure(cmp: DrafterComparison, lang: str = DEFAULT) -> go.Figure:
    if not cmp.runs:
        return _message_figure(t("speculative.compare_nothing_budget", lang))
    names = [f"{i + 1}. {short_name(t_.drafter, lang)}" for i, t_ in enumerate(cmp.runs)]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[t("speculative.compare_speedup_title", lang),
                                        t("speculative.compare_acceptance_title", lang)])
    fig.add_bar(y=names, x=[t_.speedup or 0 for t_ in cmp.runs], orientation="h", showlegend=False,
                marker_color=[ACCEPTED if (t_.speedup or 0) >= 1 else REJECTED for t_ in cmp.runs],
                text=[_times(t_.speedup) for t_ in cmp.runs], textposition="outside", cliponaxis=False, row=1, col=1)
    fig.add_vline(x=1.0, line=dict(color="#444", dash="dot"), row=1, col=1)
    fig.add_bar(y=names, x=[100 * (t_.acceptance_rate or 0) for t_ in cmp.runs], orientation="h", showlegend=False,
                marker_color=TARGET, text=[_pct(t_.acceptance_rate) for t_ in cmp.runs], textposition="outside",
                cliponaxis=False, row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=2)
    fig.update_xaxes(range=[0, max([t_.speedup or 0 for t_ in cmp.runs] + [1.0]) * 1.3], row=1, col=1)
    fig.update_xaxes(range=[0, 120], row=1, col=2)
    height = 170 + 46 * len(cmp.runs)
    title = t("speculative.compare_title", lang, n=len(cmp.runs), k=cmp.num_draft_tokens)
    return _layout(fig, height, title).update_layout(margin=dict(l=240))


def compare_summary(cmp: DrafterComparison, lang: str = DEFAULT) -> str:
    if not cmp.runs:
        return t("speculative.compare_nothing", lang)
    parts = [t("speculative.compare_run_line", lang, drafter=drafter_label(t_.drafter, lang),
               speedup=_times(t_.speedup), rate=_pct(t_.acceptance_rate), target=t_.target_passes,
               drafter_passes=t_.drafter_passes)
             for t_ in cmp.runs]
    same = [t_.same_as_plain for t_ in cmp.runs if t_.same_as_plain is not None]
    proof = t("speculative.compare_all_same", lang) if same and all(same) else ""
    cut = (t("speculative.compare_stopped", lang, reason=_stop_words(cmp.stop_reason, lang)) if cmp.timed_out
           else "")
    return t("speculative.summary_list", lang, lead="", parts=t("speculative.list_sep", lang).join(parts),
             proof=proof, cut=cut)


def _runs_table(table_id: str, first: str, runs: list[tuple], note: str, lang: str) -> str:
    """One row per run (first column, tokens, target passes, drafter passes, acceptance, seconds, speedup, same as
    plain), the plain reference's timings below."""
    rows = "".join(
        f"<tr><td>{_esc(name)}</td><td>{tokens}</td><td>{target}</td><td>{drafter}</td><td>{_pct(rate)}</td>"
        f"<td>{seconds:.2f} s</td><td>{_times(speedup)}</td>"
        f"<td>{'✓' if same else ('–' if same is None else '✗')}</td></tr>"
        for name, tokens, target, drafter, rate, seconds, speedup, same in runs)
    heads = "".join(f"<th>{t(f'speculative.table_col_{c}', lang)}</th>"
                    for c in ("tokens", "target_passes", "drafter_passes", "accepted", "time", "speedup", "same"))
    return (f'<div class="spd-table" id="{table_id}"><table><thead><tr><th>{first}</th>{heads}'
            f'</tr></thead><tbody>{rows}</tbody></table><div class="spd-d">{note}</div></div>')


def compare_html(cmp: DrafterComparison, lang: str = DEFAULT) -> str:
    runs = [(drafter_label(t_.drafter, lang), len(t_.token_ids), t_.target_passes, t_.drafter_passes,
             t_.acceptance_rate, t_.seconds, t_.speedup, t_.same_as_plain) for t_ in cmp.runs]
    plain = ", ".join(f"{s:.2f} s" for s in cmp.plain_seconds)
    return _runs_table("spd-compare-table", t("speculative.table_col_drafter", lang), runs,
                       t("speculative.compare_plain_note", lang, n=cmp.plain_tokens, seconds=plain), lang)


def sweep_html(sw: DraftSweep, lang: str = DEFAULT) -> str:
    runs = [(p.num_draft_tokens, p.tokens, p.target_passes, p.drafter_passes, p.acceptance_rate, p.seconds, p.speedup,
             p.same_as_plain) for p in sw.points]
    plain = ", ".join(f"{s:.2f} s" for s in sw.plain_seconds)
    return _runs_table("spd-sweep-table", "k", runs,  # not translated: the symbol k
                       t("speculative.sweep_plain_note", lang, n=sw.plain_tokens, seconds=plain), lang)


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
