"""Sampling tab, the event handlers: one step at a time, generate to the end, what-if, predict then reveal.

The per-user state is a small dict (prompt, seed, the generated tokens with how each was drawn, the step on
view, whether the newest step is hidden); the logits of recent steps live in the model session's bounded
store, so moving a slider re-applies the pipeline to the step on view without running the model.

Every event receives the controls in the order of `CONTROL_NAMES` (see `Controls`) and returns the views in
the order of `VIEW_NAMES` (see `views`), so the layout (sampling_tab.build) and these handlers agree on one
list each.
"""

from __future__ import annotations

import copy
import html
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from inference.errors import InputError
from inference.generation import (
    STOP_REASONS,
    Generation,
    StepRecord,
    check_lengths,
    check_stop,
    inspect_step,
    pick_seed,
    prompt_ids,
    stop_reason,
    token_texts,
)
from inference.sampling import LogitsTrace, SamplingParams

from ..common import session, user_errors
from ..export import csv_file
from .figures import (
    draw_figure,
    draw_summary,
    generated_html,
    stage_table_html,
    waterfall_figure,
    waterfall_summary,
)

log = logging.getLogger(__name__)
PARAMS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"]
CONTROL_NAMES = ["prompt", "chat", "seed", *PARAMS, "max_new_tokens", "min_new_tokens", "stop", "predict", "guess"]
VIEW_NAMES = ["text", "status", "hidden_note", "panels", "waterfall", "waterfall_alt", "table", "draw", "draw_alt",
              "whatif", "stage_csv", "trace_csv", "seed", "steps", "state"]
SAMPLES = 100  # draws in the "sample 100 times" histogram
STAGE_CSV_HEADER = ["stage", "rank", "id", "token", "probability", "kept"]
TRACE_CSV_HEADER = ["step", "id", "token", "text", "probability", "model_probability", "rank", "u", "how"]
ENDED = "The run has ended: press Reset, or branch at an earlier step."


# ---------------------------------------------------------------------------------------------------
# The controls


def _seed_or_none(seed):
    return None if seed is None or seed == "" else seed


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

    @classmethod
    def of(cls, values) -> "Controls":
        if len(values) != len(CONTROL_NAMES):
            raise TypeError(f"expected {len(CONTROL_NAMES)} controls ({', '.join(CONTROL_NAMES)}), got {len(values)}")
        prompt, chat, seed, *rest = values
        params, (max_new, min_new, stop, predict, guess) = rest[: len(PARAMS)], rest[len(PARAMS):]
        return cls(prompt, bool(chat), _seed_or_none(seed), tuple(params), max_new, min_new, stop or "",
                   bool(predict), guess or "")

    def read(self) -> tuple[SamplingParams, int, int, tuple[str, ...]]:
        """Validate; one clear sentence on the first bad value. (params, max new, min new, stop sequences)."""
        params = SamplingParams(**dict(zip(PARAMS, self.values)), seed=self.seed)
        max_new, min_new = check_lengths(self.max_new_tokens, self.min_new_tokens)
        return params, max_new, min_new, check_stop(parse_stop(self.stop))


def parse_stop(text: str | None) -> list[str]:
    """Stop sequences typed one per line; `\\n` and `\\t` stand for a newline and a tab."""
    lines = (text or "").split("\n")
    return [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines if line != ""]


def seeded(params: SamplingParams, seed: int) -> SamplingParams:
    return SamplingParams(**{k: getattr(params, k) for k in PARAMS}, seed=seed)


# ---------------------------------------------------------------------------------------------------
# The run (per-user state)


def new_run(c: Controls) -> dict:
    """A fresh run: nothing generated yet, viewing the first step. Validates the prompt and the seed; an
    empty seed box gets a random seed, which the views write back into the box (so a link carries it)."""
    s = session()
    prompt_ids(s, c.prompt, c.chat)
    seed = pick_seed(SamplingParams(seed=c.seed))
    return {
        "model": s.model_id, "prompt": c.prompt, "chat": c.chat, "seed": seed,
        "ids": [], "pieces": [], "texts": [], "probs": [], "chosen": [], "ranks": [], "us": [], "forced": [],
        "blocked": [], "view": 0, "stop": None, "stop_seq": None, "hidden": c.predict,
    }


def same_run(state: dict | None, c: Controls) -> bool:
    return bool(state) and c.seed is not None and state["model"] == session().model_id \
        and state["prompt"] == c.prompt and state["chat"] == c.chat and state["seed"] == int(c.seed)


RUN_LISTS = ("ids", "pieces", "texts", "probs", "chosen", "ranks", "us", "forced", "blocked")


def append_step(state: dict, record: StepRecord) -> None:
    values = (record.token_id, record.piece, record.text, record.raw_prob, record.chosen_prob, record.chosen_rank,
              record.draw, record.forced, record.eos_blocked)
    for key, value in zip(RUN_LISTS, values):
        state[key].append(value)


def truncate(state: dict, length: int) -> None:
    for key in RUN_LISTS:
        del state[key][length:]
    state["stop"] = state["stop_seq"] = None


def end_text(state: dict) -> str | None:
    if not state["stop"]:
        return None
    reason = STOP_REASONS.get(state["stop"], state["stop"])
    if state["stop"] == "stop_sequence":
        reason += f" ({state['stop_seq']!r})"
    return f"ended: {reason}"


# ---------------------------------------------------------------------------------------------------
# Texts


def stage_explanations(params: SamplingParams, min_new: int) -> dict[str, str]:
    """One short, exact sentence per stage, with the values in force (HTML)."""
    t, th = params.temperature, params.repetition_penalty
    return {
        "raw": "The model's score <i>s</i> for each token; softmax turns scores into probabilities "
               "<code>p = e^s / Σ e^s</code>.",
        "repetition_penalty": f"Each distinct token already in the prompt or the text: <code>s/θ</code> if "
                              f"<i>s</i> &gt; 0, <code>s·θ</code> if <i>s</i> &lt; 0, once (θ = {th:g}).",
        "presence_frequency": f"<code>s − c·{params.frequency_penalty:g} − (c&gt;0)·{params.presence_penalty:g}</code>, "
                              "<i>c</i> = how often the token appears in the <i>generated</i> text (not the prompt).",
        "min_new_tokens": f"EOS set to −∞: fewer than {min_new} new tokens so far.",
        "temperature": f"<code>s / {t:g}</code>: "
                       + ("sharper, the top tokens gain." if t < 1 else "flatter, unlikely tokens gain.")
                       + " The ranking never changes.",
        "top_k": f"Keep the {params.top_k} highest scores (ties with the {params.top_k}th all stay); the rest → −∞.",
        "top_p": f"Keep the smallest set of most likely tokens whose probabilities add up to ≥ {params.top_p:g} "
                 "(at least one).",
        "min_p": f"Drop tokens with <code>p &lt; {params.min_p:g} × p_max</code>: the cut follows the model's confidence.",
        "greedy": "Temperature 0: all probability on the single highest score; no random number is used.",
        "draw": "Softmax over the survivors, stack them most likely first on [0, 1), and take the token whose "
                "stretch contains the uniform number <i>u</i>.",
    }


def status_markdown(state: dict, record: StepRecord, run_token: int | None, run_piece: str | None,
                    params: SamplingParams, min_new: int, extra: str = "") -> str:
    j = state["view"]
    lines = [f"**Step {j + 1}** · seed {state['seed']} · {len(state['ids'])} token(s) generated"
             + (f" · **{end_text(state)}**" if state["stop"] else "")]
    if params.greedy:
        lines.append(f"Temperature 0: the top token **{html.escape(record.piece)}** is taken, no random number.")
    else:
        lines.append(f"u = **{record.draw:.4f}** lands on **{html.escape(record.piece)}** "
                     f"(rank {record.chosen_rank}, p = {record.chosen_prob:.1%}; the model alone gave it "
                     f"{record.raw_prob:.1%}).")
    if run_token is not None and run_token != record.token_id:
        how = "as a what-if" if state["forced"][j] else "with the settings in force then"
        lines.append(f"The run took **{html.escape(run_piece or '')}** here ({how}); with the current settings the "
                     "draw gives the orange token. Pick it below to branch.")
    if record.eos_blocked:
        lines.append(f"EOS blocked: {j} of at least {min_new} new tokens so far (EOS had p = "
                     f"{record.eos_blocked_prob:.1%} just before the block).")
    if extra:
        lines.append(extra)
    return "  \n".join(lines)


def hidden_note(state: dict) -> str:
    """The note shown instead of the step's views while they are hidden (predict first)."""
    n = len(state["ids"])
    if n and state["view"] >= n - 1:
        what = f"The model has drawn token {n}: it is the <b>?</b> above."
    else:
        what = f"The distribution of step {state['view'] + 1} is hidden."
    return (f'<div class="lie-hidden-note" id="smp-hidden-text">🙈 <b>Predict first</b>: {what} '
            "Make your guess (type it in <i>your guess</i> if you like), then press <b>Reveal</b>.</div>")


def guess_line(s, trace: LogitsTrace, record: StepRecord, guess: str) -> str:
    """Where the guessed token stands in this step's distributions (rank and probability). A guess is
    tokenized as typed and with a leading space (a word inside a sentence usually starts with one); the
    reading that is the drawn token, else the likelier one, counts. Only its first token matters: the model
    picks one token at a time."""
    guess = (guess or "").strip("\n")
    if not guess.strip():
        return ""
    final = trace.probs  # [V]
    raw = trace.stage_probs()[0]  # [V]
    readings = [guess] if guess.startswith(" ") else [guess, " " + guess]
    best = None
    for text in readings:
        ids = s.tokenizer.encode(text, add_special_tokens=False)
        if ids:  # the drawn token first (a hit is a hit), then the likelier reading
            key = (ids[0] == record.token_id, float(final[ids[0]]), float(raw[ids[0]]))
            if best is None or key > best[0]:
                best = (key, ids)
    if best is None:
        return ""
    (_, p, q), ids = best
    token = ids[0]
    piece = token_texts(s, [token])[0][0]
    raw_rank = 1 + int((raw > q).sum())
    name = f"**{html.escape(guess.strip())}** (token `{html.escape(piece)}`, id {token})"
    if p > 0:
        where = (f"rank {1 + int((final > p).sum())}, p = {p:.1%} after the pipeline (the model alone: {q:.1%}, "
                 f"rank {raw_rank:,})")
    else:
        where = f"removed by the pipeline (p = 0); the model alone gave it {q:.2%} (rank {raw_rank:,})"
    verdict = "✔ the draw took it." if token == record.token_id else f"The draw took `{html.escape(record.piece)}`."
    more = " Only its first token counts: the model picks one token at a time." if len(ids) > 1 else ""
    return f"Your guess {name}: {where}. {verdict}{more}"


def whatif_choices(record: StepRecord) -> list[tuple[str, int]]:
    final = record.stages[-1]
    return [
        (f"{piece}   {p:.1%}" if kept else f"{piece}   (removed)", cand)
        for cand, piece, p, kept in zip(record.candidates, record.pieces, final.probs, final.kept)
    ]


# ---------------------------------------------------------------------------------------------------
# Downloads


def stage_rows(record: StepRecord) -> list[list]:
    """The stage table of one step, one row per (stage, candidate): what /next_token returns, flat."""
    return [
        [stage.name, "" if rank is None else rank, cand, piece, f"{prob:.8g}", int(kept)]
        for stage in record.stages
        for cand, piece, prob, rank, kept in zip(record.candidates, record.pieces, stage.probs, stage.ranks,
                                                 stage.kept)
    ]


def trace_rows(state: dict) -> list[list]:
    """The generated tokens, one row per step: what /generate's steps return, flat."""
    rows = []
    for i, (token, piece, text, chosen, prob, rank, u, forced) in enumerate(zip(
            state["ids"], state["pieces"], state["texts"], state["chosen"], state["probs"], state["ranks"],
            state["us"], state["forced"])):
        how = "what-if" if forced else ("greedy" if u is None else "drawn")
        rows.append([i + 1, token, piece, text, f"{chosen:.8g}", f"{prob:.8g}", rank,
                     "" if u is None else f"{u:.8g}", how])
    return rows


# ---------------------------------------------------------------------------------------------------
# The views


def views(**values) -> tuple:
    """The outputs in VIEW_NAMES order; a view not given is left as it is."""
    unknown = set(values) - set(VIEW_NAMES)
    if unknown:
        raise TypeError(f"unknown views {sorted(unknown)}")
    return tuple(values.get(name, gr.skip()) for name in VIEW_NAMES)


def _text(state: dict, view: int | None = None, pending: bool | None = None) -> str:
    return generated_html(
        state["texts"], state["probs"], state["view"] if view is None else view, forced=state["forced"],
        blocked=state["blocked"], pending=state["stop"] is None if pending is None else pending,
        ended=end_text(state), hide_last=state["hidden"],
    )


def _seed_box(state: dict, c: Controls):
    """Write the seed into the box only when the box was empty (random): typing is never overwritten."""
    return state["seed"] if c.seed is None else gr.skip()


def _trace_download(state: dict):
    """The generated tokens as CSV, written again only when they changed (a slider move leaves them as
    they are, and a class drags sliders a lot)."""
    if not state["ids"]:
        return gr.DownloadButton(value=None, interactive=False)
    key = f"{state['seed']}:{state['ids']}:{state['forced']}"
    written = state.get("trace_csv")
    if not written or written[0] != key or not Path(written[1]).exists():
        written = state["trace_csv"] = [key, csv_file("sampling-trace", TRACE_CSV_HEADER, trace_rows(state))]
    return gr.DownloadButton(value=written[1], interactive=True)


def render_hidden(state: dict, c: Controls):
    """Predict first: the text so far, and nothing of the step's distribution or the newest token."""
    return views(
        text=_text(state), status="", hidden_note=gr.HTML(hidden_note(state), visible=True),
        panels=gr.Column(visible=False), waterfall=None, waterfall_alt="", table="", draw=None, draw_alt="",
        whatif=gr.Radio(choices=[], value=None), stage_csv=gr.DownloadButton(value=None, interactive=False),
        trace_csv=gr.DownloadButton(value=None, interactive=False), seed=_seed_box(state, c),
        steps=len(state["ids"]), state=state,
    )


def render(state: dict, c: Controls, params: SamplingParams, min_new: int, extra: str = ""):
    """All views of the step on view. The step's logits come from the store (no model call) unless the
    step is old, then one forward pass recomputes them."""
    if state["hidden"]:
        return render_hidden(state, c)
    s = session()
    j = state["view"]
    ids = state["ids"]
    run_token = ids[j] if j < len(ids) else None
    step_params = seeded(params, state["seed"])
    record, trace, _ = inspect_step(s, state["prompt"], step_params, ids[:j], chat=state["chat"],
                                    min_new_tokens=min_new, samples=SAMPLES,
                                    extra_ids=[run_token] if run_token is not None else ())
    run_piece = record.pieces[record.candidates.index(run_token)] if run_token is not None else None
    guess = guess_line(s, trace, record, c.guess)
    stages_csv = csv_file(f"sampling-step{j + 1}-stages", STAGE_CSV_HEADER, stage_rows(record))
    return views(
        text=_text(state),
        status=status_markdown(state, record, run_token, run_piece, params, min_new,
                               "  \n".join(x for x in (extra, guess) if x)),
        hidden_note=gr.HTML("", visible=False),
        panels=gr.Column(visible=True),
        waterfall=waterfall_figure(record, run_token),
        waterfall_alt=waterfall_summary(record),
        table=stage_table_html(record, stage_explanations(params, min_new)),
        draw=draw_figure(record, step_params.greedy),
        draw_alt=draw_summary(record, step_params.greedy),
        whatif=gr.Radio(choices=whatif_choices(record), value=None,
                        label=f"What-if: take another token at step {j + 1} and continue from there"),
        stage_csv=gr.DownloadButton(value=stages_csv, interactive=True),
        trace_csv=_trace_download(state),
        seed=_seed_box(state, c),
        steps=len(ids),
        state=state,
    )


def draw_next(state: dict, c: Controls, params: SamplingParams, max_new: int, min_new: int, stop) -> None:
    """Draw one token with the current settings and append it (the newest step is then on view)."""
    s = session()
    ids = state["ids"]
    record, _, _ = inspect_step(s, state["prompt"], seeded(params, state["seed"]), ids, chat=state["chat"],
                                min_new_tokens=min_new)
    append_step(state, record)
    state["stop"], state["stop_seq"] = stop_reason(s, prompt_ids(s, state["prompt"], state["chat"]), ids, stop,
                                                   max_new)
    state["view"] = len(ids) - 1
    state["hidden"] = c.predict


def continue_state(state: dict | None, c: Controls) -> dict:
    """The run to continue: this one (a copy) if the prompt, chat and seed are unchanged, else a new one."""
    return copy.deepcopy(state) if same_run(state, c) else new_run(c)


# ---------------------------------------------------------------------------------------------------
# Events (each wrapped by user_errors: a bad value becomes one clear message). Every event receives the
# controls as *values, in CONTROL_NAMES order.


@user_errors
def on_reset(*values):
    c = Controls.of(values)
    params, _, min_new, _ = c.read()
    return render(new_run(c), c, params, min_new)


@user_errors
def on_seed(state, *values):
    """The seed box was left or submitted: a new run only if the seed really changed."""
    c = Controls.of(values)
    if same_run(state, c):
        return views()
    params, _, min_new, _ = c.read()
    return render(new_run(c), c, params, min_new)


def ended_view(state, c, params, min_new):
    """A Step or Generate on a run that has ended: show its last step and say so."""
    state["view"] = len(state["ids"]) - 1
    return render(state, c, params, min_new, ENDED)


@user_errors
def on_step(state, *values):
    """Draw one token with the current settings (a new run if the prompt, chat or seed changed)."""
    c = Controls.of(values)
    params, max_new, min_new, stop = c.read()
    state = continue_state(state, c)
    if state["stop"]:
        return ended_view(state, c, params, min_new)
    draw_next(state, c, params, max_new, min_new, stop)
    return render(state, c, params, min_new)


@user_errors
def on_rerender(state, *values):
    """A slider moved: the same step, the pipeline re-applied to its stored logits. If the prompt, chat
    or seed changed meanwhile, this starts the new run instead."""
    c = Controls.of(values)
    params, _, min_new, _ = c.read()
    if not same_run(state, c):
        state = new_run(c)
    return render(state, c, params, min_new)


@user_errors
def on_show_step(evt: gr.EventData, state, *values):
    """A click on a generated token (or on 'next') shows that step."""
    c = Controls.of(values)
    params, _, min_new, _ = c.read()
    if not state:
        raise InputError("Press Step first: there is no run yet.")
    data = getattr(evt, "_data", None) or {}
    try:
        j = int(data.get("step"))
    except (TypeError, ValueError):
        raise InputError("Click on a token of the generated text.") from None
    state = copy.deepcopy(state)
    last = len(state["ids"]) - (1 if state["stop"] else 0)
    state["view"] = max(0, min(j, last))
    return render(state, c, params, min_new)


@user_errors
def on_branch(state, choice, *values):
    """What-if: take the picked candidate at the step on view, drop what came after, go on from there."""
    c = Controls.of(values)
    params, max_new, min_new, stop = c.read()
    if not state:
        raise InputError("Press Step first: there is no run to branch from.")
    if choice is None or choice == "":
        raise InputError("Pick a candidate token first, then press Branch.")
    state = copy.deepcopy(state)
    s = session()
    j = state["view"]
    truncate(state, j)
    record, _, _ = inspect_step(s, state["prompt"], seeded(params, state["seed"]), state["ids"], chat=state["chat"],
                                min_new_tokens=min_new, forced=int(choice))
    record.forced = True  # chosen by the user, even if the draw would have agreed
    append_step(state, record)
    state["stop"], state["stop_seq"] = stop_reason(s, prompt_ids(s, state["prompt"], state["chat"]), state["ids"],
                                                   stop, max_new)
    state["hidden"] = False  # the user picked this token: nothing to guess
    return render(state, c, params, min_new, f"Branched: step {j + 1} is now **{html.escape(record.piece)}**; "
                                             "Step or Generate to end continues from here.")


@user_errors
def on_reveal(state, *values):
    """Reveal: show the hidden step, with where the class's guess stands."""
    c = Controls.of(values)
    params, _, min_new, _ = c.read()
    if not state:
        raise InputError("Press Step first: there is nothing to reveal yet.")
    state = copy.deepcopy(state)
    state["hidden"] = False
    return render(state, c, params, min_new)


@user_errors
def on_predict(state, *values):
    """The Predict-first box was ticked (hide the step on view) or cleared (show it)."""
    c = Controls.of(values)
    params, _, min_new, _ = c.read()
    if not state:
        return views()
    state = copy.deepcopy(state)
    state["hidden"] = c.predict
    return render(state, c, params, min_new)


def _generate(state: dict, c: Controls, params, max_new: int, min_new: int, stop, limit: int | None = None):
    """Run on with the KV cache from the state's tokens (at most `limit` more steps), streaming the text a
    few times a second; the views then show the last step (hidden when predicting)."""
    run = Generation(session(), state["prompt"], seeded(params, state["seed"]), max_new, state["chat"], stop,
                     min_new_tokens=min_new, prefix_ids=state["ids"], keep_logits=True)
    state["hidden"] = c.predict
    shown = time.perf_counter()
    records = iter(run) if limit is None else itertools.islice(run, limit)
    for record in records:
        append_step(state, record)
        if time.perf_counter() - shown > 0.4:  # stream the text a few times a second, not every token
            shown = time.perf_counter()
            yield views(text=_text(state, view=-1, pending=False), status=f"Generating… {len(state['ids'])} tokens",
                        state=state)
    trace = run.trace
    state["stop"], state["stop_seq"] = trace.stop_reason, trace.stop_sequence
    state["view"] = max(0, len(state["ids"]) - 1)
    timing = ""
    if trace.ttft_s is not None:
        timing = (f"This run: {len(trace.token_ids)} tokens, time to first token {trace.ttft_s * 1000:.0f} ms "
                  f"(prefill of {trace.steps[0].tokens_in_pass} tokens)"
                  + (f", then {trace.tpot_s * 1000:.0f} ms per token." if trace.tpot_s else "."))
    yield render(state, c, params, min_new, timing)


def on_generate(state, *values):
    """Generate to the end with the KV cache, streaming the text; the views show the last step."""
    c = Controls.of(values)
    params, max_new, min_new, stop = c.read()
    state = continue_state(state, c)
    if state["stop"]:
        return [ended_view(state, c, params, min_new)]
    return _generate(state, c, params, max_new, min_new, stop)


def on_try(*values):
    """A lesson's "try this": a fresh run of its prompt and settings, generated to the end."""
    c = Controls.of(values)
    params, max_new, min_new, stop = c.read()
    return _generate(new_run(c), c, params, max_new, min_new, stop)


def on_first_view(steps, *values):
    """The page's first view (with a shared link's values): a fresh run, replaying the link's number of
    seeded steps, so the link shows the same tokens."""
    c = Controls.of(values)
    params, max_new, min_new, stop = c.read()
    state = new_run(c)
    steps = int(steps or 0)
    if steps <= 0:
        return [render(state, c, params, min_new)]
    return _generate(state, c, params, max_new, min_new, stop, limit=min(steps, max_new))


def _streaming(handler):
    """Gradio streams only from a generator function. Bad values fail in the handler (InputError);
    anything failing mid-run is turned into one message here."""

    def stream(*args):
        try:
            yield from handler(*args)
        except gr.Error:
            raise
        except InputError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.exception("%s failed", handler.__name__)
            raise gr.Error(f"Something went wrong ({type(exc).__name__}); the app is still running. Try again.",
                           print_exception=False) from None

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
    return playing, gr.Timer(active=playing), gr.Button(value="⏸ Pause" if playing else "▶ Play")


def stop_play():
    return False, gr.Timer(active=False), gr.Button(value="▶ Play")


def on_tick(state, *values):
    """Play: one step per tick; the timer stops at the end of the run or on a bad value."""
    try:
        out = on_step(state, *values)
    except gr.Error:
        gr.Warning("Play stopped: fix the value above and press Play again.")
        return (*views(), *stop_play())
    ended = bool(out[-1]["stop"])
    return (*out, *(stop_play() if ended else (True, gr.skip(), gr.skip())))
