"""Sampling tab, the event handlers: one step at a time, generate to the end, what-if, predict then reveal, a
constraint (structured output) and an ablation on the run, and two runs compared side by side.

The run itself is `inference.sampling_run.SamplingRun` (its tokens, its seed, when it ends); a visitor's state
(`TabState`) holds that run's plain data and what the tab shows of it: the step on view and whether the newest
step is hidden. The logits of recent steps live in the model session's bounded store, so moving a slider
re-applies the pipeline to the step on view without running the model.

Every event receives the controls in the order of `CONTROL_NAMES` (see `Controls`) and returns the views in
the order of `VIEW_NAMES` (see `views`), so the layout and these handlers agree on one list each.
"""

from __future__ import annotations

import copy
import html
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from inference.ablation_text import format_ablation, parse_ablation
from inference.compare import RunSpec, compare_runs
from inference.constrained import PRESETS, Constraint, validity
from inference.errors import InputError
from inference.generation import StepRecord
from inference.interventions import Ablation
from inference.limits import MAX_COMPARE_NEW_TOKENS
from inference.sampling import SamplingParams
from inference.sampling_run import SamplingRun, Settings, place_guess
from inference.serving import run_on

from ..common import error_text, session, user_errors
from ..export import csv_file
from ..i18n import language, t
from .exports import STAGE_CSV_HEADER, TRACE_CSV_HEADER, stage_rows, trace_rows
from .figures import (
    compare_figure,
    compare_status,
    compare_summary,
    compare_tokens_html,
    draw_figure,
    draw_summary,
    ended_text,
    generated_html,
    guess_line,
    hidden_note,
    shared_text,
    stage_explanations,
    stage_table_html,
    status_markdown,
    waterfall_figure,
    waterfall_summary,
)

log = logging.getLogger(__name__)
PARAMS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"]
CONTROL_NAMES = ["prompt", "chat", "seed", *PARAMS, "max_new_tokens", "min_new_tokens", "stop", "predict", "guess",
                 "constraint_kind", "constraint", "ablation", "ablation_mode"]
VIEW_NAMES = ["text", "status", "hidden_note", "panels", "waterfall", "waterfall_alt", "table", "draw", "draw_alt",
              "whatif", "stage_csv", "trace_csv", "seed", "steps", "state"]
# Run B of the comparison: its own sampling settings, seed, model, constraint on/off and ablation.
B_PARAMS = ["b_temperature", "b_top_k", "b_top_p", "b_min_p", "b_repetition_penalty"]
COMPARE_NAMES = [*B_PARAMS, "b_seed", "b_model", "b_constraint", "b_ablation"]
COMPARE_VIEW_NAMES = ["compare_tokens", "compare_status", "compare_plot", "compare_alt", "compare_on", "compare_box"]
SAMPLES = 100  # draws in the "sample 100 times" histogram
ENDED = "sampling.ended_note"  # catalogue key: the run has ended (press Reset, or branch at an earlier step)


# ---------------------------------------------------------------------------------------------------
# The controls


@dataclass(frozen=True)
class Controls:
    """Everything the controls send, in CONTROL_NAMES order (raw: checked by `read`)."""

    prompt: str
    chat: bool
    seed: int | None
    values: tuple  # the PARAMS, in order
    max_new_tokens: int
    min_new_tokens: int
    stop: str
    predict: bool
    guess: str
    constraint_kind: str = "none"
    constraint: str = ""  # the choices (one per line), the regex or the JSON schema
    ablation: str = ""  # "L3H2, mlp L0"
    ablation_mode: str = "zero"

    @classmethod
    def of(cls, values) -> "Controls":
        if len(values) != len(CONTROL_NAMES):
            raise TypeError(f"expected {len(CONTROL_NAMES)} controls ({', '.join(CONTROL_NAMES)}), got {len(values)}")
        prompt, chat, seed, *rest = values
        params, rest = rest[: len(PARAMS)], rest[len(PARAMS):]
        max_new, min_new, stop, predict, guess, kind, constraint, ablation, mode = rest
        seed = None if seed is None or seed == "" else seed
        return cls(prompt, bool(chat), seed, tuple(params), max_new, min_new, stop or "", bool(predict), guess or "",
                   kind or "none", constraint or "", ablation or "", mode or "zero")

    def read(self) -> Settings:
        """Validate; one clear sentence on the first bad value."""
        params = SamplingParams(**dict(zip(PARAMS, self.values)), seed=self.seed)
        return Settings.checked(params, self.max_new_tokens, self.min_new_tokens, parse_stop(self.stop))

    def run_constraint(self) -> Constraint | None:
        return Constraint.from_text(self.constraint_kind, self.constraint)

    def run_ablation(self) -> Ablation | None:
        ablation = parse_ablation(session(), self.ablation, self.ablation_mode)
        return None if ablation.empty else ablation


def parse_stop(text: str | None) -> list[str]:
    """Stop sequences typed one per line; `\\n` and `\\t` stand for a newline and a tab."""
    lines = (text or "").split("\n")
    return [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines if line != ""]


# ---------------------------------------------------------------------------------------------------
# A visitor's state


@dataclass
class TabState:
    """The run, and what the tab shows of it."""

    run: SamplingRun
    view: int = 0  # the step on view (0 = the first new token; len(tokens) = the next one)
    hidden: bool = False  # predict first: the newest step stays hidden until Reveal
    trace_csv: tuple[str, str] | None = None  # (what it holds, path) of the generated tokens' CSV last written

    def show_last(self) -> None:
        self.view = max(0, len(self.run.tokens) - 1)


def new_state(c: Controls) -> TabState:
    """A fresh run: nothing generated yet, viewing the first step. An empty seed box gets a random seed,
    which the views write back into the box (so a link carries it)."""
    run = SamplingRun.start(session(), c.prompt, c.chat, c.seed, c.run_constraint(), c.run_ablation())
    return TabState(run, hidden=c.predict)


def same_run(state: TabState | None, c: Controls) -> bool:
    """The controls still describe the state's run (same model, prompt, chat, constraint, ablation and a typed
    seed equal to its)."""
    if not state or c.seed is None:
        return False
    run = state.run
    return ((run.model_id, run.prompt, run.chat, run.seed, run.constraint, run.ablation)
            == (session().model_id, c.prompt, c.chat, int(c.seed), c.run_constraint(), c.run_ablation()))


def continue_state(state: TabState | None, c: Controls) -> TabState:
    """The run to continue: this one (a copy) if the prompt, chat and seed are unchanged, else a new one."""
    return copy.deepcopy(state) if same_run(state, c) else new_state(c)


def whatif_choices(record: StepRecord, lang: str | None = None) -> list[tuple[str, int]]:
    final = record.stages[-1]
    removed = t("sampling.whatif_removed", lang)
    return [
        (f"{piece}   {p:.1%}" if kept else f"{piece}   ({removed})", cand)
        for cand, piece, p, kept in zip(record.candidates, record.pieces, final.probs, final.kept)
    ]


# ---------------------------------------------------------------------------------------------------
# The views


def views(**values) -> tuple:
    """The outputs in VIEW_NAMES order; a view not given is left as it is."""
    unknown = set(values) - set(VIEW_NAMES)
    if unknown:
        raise TypeError(f"unknown views {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in VIEW_NAMES)


def _text(state: TabState, view: int | None = None, pending: bool | None = None) -> str:
    run = state.run
    lang = language()
    return generated_html(run.tokens, state.view if view is None else view,
                          pending=not run.done if pending is None else pending, ended=ended_text(run, lang),
                          hide_last=state.hidden, by_removed_mass=run.constraint is not None,
                          ablation=run.ablation, lang=lang)


def _seed_box(state: TabState, c: Controls):
    """Write the seed into the box only when the box was empty (random): typing is never overwritten."""
    return state.run.seed if c.seed is None else gr.skip()


def _trace_download(state: TabState):
    """The generated tokens as CSV, written again only when they changed (a slider move leaves them as
    they are, and a class drags sliders a lot)."""
    run = state.run
    if not run.tokens:
        return gr.DownloadButton(value=None, interactive=False)
    key = f"{run.seed}:{run.token_ids}:{[t.forced for t in run.tokens]}"
    if not state.trace_csv or state.trace_csv[0] != key or not Path(state.trace_csv[1]).exists():
        state.trace_csv = (key, csv_file("sampling-trace", TRACE_CSV_HEADER, trace_rows(run)))
    return gr.DownloadButton(value=state.trace_csv[1], interactive=True)


def render_hidden(state: TabState, c: Controls):
    """Predict first: the text so far, and nothing of the step's distribution or the newest token."""
    return views(
        text=_text(state), status="",
        hidden_note=gr.HTML(hidden_note(state.run, state.view, language()), visible=True),
        panels=gr.Column(visible=False), waterfall=None, waterfall_alt="", table="", draw=None, draw_alt="",
        whatif=gr.Radio(choices=[], value=None), stage_csv=gr.DownloadButton(value=None, interactive=False),
        trace_csv=gr.DownloadButton(value=None, interactive=False), seed=_seed_box(state, c),
        steps=len(state.run.tokens), state=state,
    )


def render(state: TabState, c: Controls, settings: Settings, extra: str = ""):
    """All views of the step on view. The step's logits come from the store (no model call) unless the
    step is old, then one forward pass recomputes them."""
    if state.hidden:
        return render_hidden(state, c)
    s = session()
    lang = language()
    run, j = state.run, state.view
    taken = run.tokens[j].token_id if j < len(run.tokens) else None
    record, trace = run.inspect(s, j, settings, samples=SAMPLES, extra_ids=[taken] if taken is not None else ())
    params, min_new = settings.params, settings.min_new_tokens
    guess = guess_line(place_guess(s, trace, record, c.guess), record, lang)
    stages_csv = csv_file(f"sampling-step{j + 1}-stages", STAGE_CSV_HEADER, stage_rows(record))
    valid = validity(s, run.constraint, run_text(run)) if run.constraint is not None and run.done else None
    return views(
        text=_text(state),
        status=status_markdown(run, j, record, params, min_new, "  \n".join(x for x in (extra, guess) if x),
                               valid=valid, lang=lang),
        hidden_note=gr.HTML("", visible=False),
        panels=gr.Column(visible=True),
        waterfall=waterfall_figure(record, taken, lang=lang),
        waterfall_alt=waterfall_summary(record, lang),
        table=stage_table_html(record, stage_explanations(params, min_new, record, run.constraint, lang), lang),
        draw=draw_figure(record, params.greedy, lang),
        draw_alt=draw_summary(record, params.greedy, lang),
        whatif=gr.Radio(choices=whatif_choices(record, lang), value=None,
                        label=t("sampling.whatif_step", lang, step=j + 1)),
        stage_csv=gr.DownloadButton(value=stages_csv, interactive=True),
        trace_csv=_trace_download(state),
        seed=_seed_box(state, c),
        steps=len(run.tokens),
        state=state,
    )


def run_text(run: SamplingRun) -> str:
    """The run's text as a user reads it (special tokens such as EOS left out)."""
    return session().tokenizer.decode(run.token_ids, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------
# Events (each wrapped by user_errors: a bad value becomes one clear message). Every event receives the
# controls as *values, in CONTROL_NAMES order.


@user_errors
def on_reset(*values):
    c = Controls.of(values)
    settings = c.read()
    return render(new_state(c), c, settings)


@user_errors
def on_seed(state, *values):
    """A control that defines the run was changed (the seed box left or submitted, the constraint, the
    ablation): a new run only if the run really changed."""
    c = Controls.of(values)
    if same_run(state, c):
        return views()
    settings = c.read()
    return render(new_state(c), c, settings)


def ended_view(state: TabState, c: Controls, settings: Settings):
    """A Step or Generate on a run that has ended: show its last step and say so."""
    state.view = len(state.run.tokens) - 1
    return render(state, c, settings, t(ENDED))


@user_errors
def on_step(state, *values):
    """Draw one token with the current settings (a new run if the prompt, chat or seed changed)."""
    c = Controls.of(values)
    settings = c.read()
    state = continue_state(state, c)
    if state.run.done:
        return ended_view(state, c, settings)
    state.run.step(session(), settings)
    state.show_last()
    state.hidden = c.predict
    return render(state, c, settings)


@user_errors
def on_rerender(state, *values):
    """A slider moved: the same step, the pipeline re-applied to its stored logits. If the prompt, chat
    or seed changed meanwhile, this starts the new run instead."""
    c = Controls.of(values)
    settings = c.read()
    if not same_run(state, c):
        state = new_state(c)
    return render(state, c, settings)


@user_errors
def on_show_step(evt: gr.EventData, state, *values):
    """A click on a generated token (or on 'next') shows that step."""
    c = Controls.of(values)
    settings = c.read()
    if not state:
        raise InputError(t("sampling.err_no_run"))
    data = getattr(evt, "_data", None) or {}
    try:
        j = int(data.get("step"))
    except (TypeError, ValueError):
        raise InputError(t("sampling.err_click_token")) from None
    state = copy.deepcopy(state)
    last = len(state.run.tokens) - (1 if state.run.done else 0)
    state.view = max(0, min(j, last))
    return render(state, c, settings)


@user_errors
def on_branch(state, choice, *values):
    """What-if: take the picked candidate at the step on view, drop what came after, go on from there."""
    c = Controls.of(values)
    settings = c.read()
    if not state:
        raise InputError(t("sampling.err_no_branch_run"))
    if choice is None or choice == "":
        raise InputError(t("sampling.err_pick_candidate"))
    state = copy.deepcopy(state)
    j = state.view
    record = state.run.branch(session(), j, int(choice), settings)
    state.hidden = False  # the user picked this token: nothing to guess
    return render(state, c, settings, t("sampling.branched", step=j + 1, token=html.escape(record.piece)))


@user_errors
def on_reveal(state, *values):
    """Reveal: show the hidden step, with where the class's guess stands."""
    c = Controls.of(values)
    settings = c.read()
    if not state:
        raise InputError(t("sampling.err_nothing_to_reveal"))
    state = copy.deepcopy(state)
    state.hidden = False
    return render(state, c, settings)


def on_language(state, *values):
    """The visitor's language changed: the step on view again, in that language (the same run, no new one).
    Nothing happens without a run, or when the controls no longer describe it (their own events start the new
    run); a bad value in a control says nothing here (the control's own event says it)."""
    if not state:
        return views()
    try:
        c = Controls.of(values)
        settings = c.read()
        if not same_run(state, c):
            return views()
        return render(state, c, settings)
    except InputError:
        return views()


@user_errors
def on_predict(state, *values):
    """The Predict-first box was ticked (hide the step on view) or cleared (show it)."""
    c = Controls.of(values)
    settings = c.read()
    if not state:
        return views()
    state = copy.deepcopy(state)
    state.hidden = c.predict
    return render(state, c, settings)


def _generate(state: TabState, c: Controls, settings: Settings, limit: int | None = None):
    """Run on with the KV cache from the run's tokens (at most `limit` more steps), streaming the text a
    few times a second; the views then show the last step (hidden when predicting)."""
    steps, trace = run_on(state.run, session(), settings, limit)  # batched with other visitors' generations
    lang = language()
    state.hidden = c.predict
    shown = time.perf_counter()
    for _ in steps:
        if time.perf_counter() - shown > 0.4:  # stream the text a few times a second, not every token
            shown = time.perf_counter()
            yield views(text=_text(state, view=-1, pending=False),
                        status=t("sampling.generating", lang, n=len(state.run.tokens)), state=state)
    state.show_last()
    timing = ""
    if trace.ttft_s is not None:
        timing = t("sampling.timing_tpot" if trace.tpot_s else "sampling.timing", lang, n=len(trace.token_ids),
                   ttft=f"{trace.ttft_s * 1000:.0f}", prefill=trace.steps[0].tokens_in_pass,
                   tpot=f"{(trace.tpot_s or 0) * 1000:.0f}")
    shared = shared_text(trace, lang)
    yield render(state, c, settings, f"{timing}  \n{shared}" if shared else timing)


def on_generate(state, *values):
    """Generate to the end with the KV cache, streaming the text; the views show the last step."""
    c = Controls.of(values)
    settings = c.read()
    state = continue_state(state, c)
    if state.run.done:
        return [ended_view(state, c, settings)]
    return _generate(state, c, settings)


def on_try(*values):
    """A lesson's "try this": a fresh run of its prompt and settings, generated to the end."""
    c = Controls.of(values)
    settings = c.read()
    return _generate(new_state(c), c, settings)


def on_first_view(steps, *values):
    """The page's first view (with a shared link's values): a fresh run, replaying the link's number of
    seeded steps, so the link shows the same tokens."""
    c = Controls.of(values)
    settings = c.read()
    state = new_state(c)
    steps = int(steps or 0)
    if steps <= 0:
        return [render(state, c, settings)]
    return _generate(state, c, settings, limit=min(steps, settings.max_new_tokens))


def _streaming(handler):
    """Gradio streams only from a generator function. Bad values fail in the handler (InputError);
    anything failing mid-run is turned into one message here."""

    def stream(*args):
        try:
            yield from handler(*args)
        except gr.Error:
            raise
        except InputError as exc:
            raise gr.Error(error_text(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("%s failed", handler.__name__)
            raise gr.Error(t("sampling.err_failed", error=type(exc).__name__), print_exception=False) from None

    stream.__name__ = stream.__qualname__ = handler.__name__ + "_stream"
    stream.__doc__ = handler.__doc__
    return stream


generate_to_end = _streaming(on_generate)
try_to_end = _streaming(on_try)
first_view = _streaming(on_first_view)


def model_chat(chat: bool):
    """'as chat' only where the loaded model has a chat template (a base model has none)."""
    return bool(chat) and session().has_chat_template


# ---------------------------------------------------------------------------------------------------
# Play: one step per tick


def toggle_play(playing: bool):
    playing = not playing
    return playing, gr.Timer(active=playing), gr.Button(value=t("sampling.pause" if playing else "sampling.play"))


def stop_play():
    return False, gr.Timer(active=False), gr.Button(value=t("sampling.play"))


def on_tick(state, *values):
    """Play: one step per tick; the timer stops at the end of the run or on a bad value."""
    try:
        out = on_step(state, *values)
    except gr.Error:
        gr.Warning(t("sampling.play_stopped"))
        return (*views(), *stop_play())
    ended = out[VIEW_NAMES.index("state")].run.done
    return (*out, *(stop_play() if ended else (True, gr.skip(), gr.skip())))


# ---------------------------------------------------------------------------------------------------
# Constraint presets


def on_preset(name: str):
    """A preset button: the constraint's kind and its text."""
    constraint = PRESETS[name]
    return constraint.kind, constraint.text


# ---------------------------------------------------------------------------------------------------
# Two runs side by side: run A is the tab's run settings, run B the compare box's


@dataclass(frozen=True)
class CompareControls:
    """Run B's controls, in COMPARE_NAMES order."""

    values: tuple  # B_PARAMS, in order
    seed: int | None
    model_id: str  # "" = the same model as A
    constraint: bool  # B uses A's constraint
    ablation: str

    @classmethod
    def of(cls, values) -> "CompareControls":
        if len(values) != len(COMPARE_NAMES):
            raise TypeError(f"expected {len(COMPARE_NAMES)} compare controls, got {len(values)}")
        *params, seed, model, constraint, ablation = values
        return cls(tuple(params), None if seed is None or seed == "" else seed, model or "", bool(constraint),
                   ablation or "")


def run_specs(c: Controls, b: CompareControls):
    """Run A (the tab's settings) and run B, and their sessions. A model without a chat template (a base model)
    gets the prompt as plain text."""
    settings = c.read()
    if settings.max_new_tokens > MAX_COMPARE_NEW_TOKENS:
        raise InputError(t("sampling.err_compare_tokens", n=MAX_COMPARE_NEW_TOKENS))
    a_session = session()
    b_session = session(b.model_id) if b.model_id else a_session
    a_params = settings.params
    b_params = SamplingParams(*b.values[:4], repetition_penalty=b.values[4],
                              presence_penalty=a_params.presence_penalty, frequency_penalty=a_params.frequency_penalty,
                              seed=b.seed)
    constraint = c.run_constraint()
    if b.constraint and constraint is None:
        raise InputError(t("sampling.err_b_constraint"))
    a = RunSpec(c.prompt, a_params, settings.max_new_tokens, c.chat, constraint, c.run_ablation(), stop=settings.stop)
    b_ablation = parse_ablation(b_session, b.ablation, c.ablation_mode)
    b_spec = RunSpec(c.prompt, b_params, settings.max_new_tokens, c.chat and b_session.has_chat_template,
                     constraint if b.constraint else None, None if b_ablation.empty else b_ablation,
                     stop=settings.stop)
    return a, b_spec, (a_session, b_session)


def compare_views(comparison) -> tuple:
    lang = language()
    return (compare_tokens_html(comparison, lang), compare_status(comparison, lang), compare_figure(comparison, lang),
            compare_summary(comparison, lang), True, gr.Accordion(open=True))


@user_errors
def on_compare(*values):
    """Run A and run B side by side (generated together, step by step)."""
    n = len(CONTROL_NAMES)
    c, b = Controls.of(values[:n]), CompareControls.of(values[n:])
    a_spec, b_spec, sessions = run_specs(c, b)
    return compare_views(compare_runs(a_spec, b_spec, sessions=sessions))


def compare_if_on(on, *values):
    """The page's first view (or a lesson's try): compare too when the link says so."""
    if not on:
        return tuple(gr.skip() for _ in COMPARE_VIEW_NAMES)
    return on_compare(*values)


def b_like_a(*values, constraint: bool | None = None, ablation: str | None = None):
    """Run B's controls set to A's settings (then one of them changed)."""
    c = Controls.of(values)
    temperature, top_k, top_p, min_p, repetition, _, _ = c.values
    return (temperature, top_k, top_p, min_p, repetition, c.seed, "",
            c.constraint_kind != "none" if constraint is None else constraint,
            c.ablation if ablation is None else ablation)


def b_same(*values):
    return b_like_a(*values)


def b_without_constraint(*values):
    return b_like_a(*values, constraint=False)


def b_without_ablation(*values):
    return b_like_a(*values, ablation="")
