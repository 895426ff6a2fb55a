"""Sampling tab: from raw logits to the chosen token, stage by stage, one decode step at a time.

The per-user state is a small dict (prompt, seed, generated ids and their probabilities, the step on view);
the logits of recent steps live in the model session's bounded store, so moving a slider re-applies the
pipeline to the step on view without running the model.
"""

from __future__ import annotations

import copy
import html
import json
import logging
import time
from pathlib import Path

import gradio as gr

from inference.errors import InputError
from inference.generation import (
    STOP_REASONS,
    Generation,
    StepRecord,
    check_lengths,
    check_stop,
    generate,
    inspect_step,
    pick_seed,
    prompt_ids,
    stop_reason,
)
from inference.limits import (
    MAX_FREQUENCY_PENALTY,
    MAX_NEW_TOKENS,
    MAX_PRESENCE_PENALTY,
    MAX_PROMPT_TOKENS,
    MAX_REPETITION_PENALTY,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TEMPERATURE,
)
from inference.sampling import SamplingParams

from .common import MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session, user_errors
from .figures.sampling import CSS, draw_figure, generated_html, stage_table_html, waterfall_figure

TITLE = "Sampling"
log = logging.getLogger(__name__)
EXAMPLES = json.loads((Path(__file__).parent.parent / "assets" / "examples" / "sampling.json").read_text())["examples"]
PARAMS = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"]
DEFAULT = EXAMPLES[0]
SAMPLES = 100  # draws in the "sample 100 times" histogram
TICK_S = 0.8  # Play: one step per tick

INTRO = f"""
At every step the model gives one score (**logit**) to each of its vocabulary's tokens. Before one token is
drawn, a pipeline reshapes those scores, in the order Hugging Face `generate()` applies it:
**repetition penalty → presence/frequency penalties → temperature → top-k → top-p → min-p → softmax → draw**.
Press **Step** to draw one token and watch each stage; drag a slider to re-apply the pipeline to the same
logits (no new model call); click a generated token to go back to its step; pick another candidate to branch.
Limits: prompt {MAX_PROMPT_TOKENS:,} tokens, {MAX_NEW_TOKENS} new tokens, {MAX_STOP_SEQUENCES} stop sequences of
{MAX_STOP_CHARS} characters.
"""

LESSON = """
**Why these stages, in this order?** Penalties first change *scores* of tokens the text already contains.
Temperature then rescales every score, which changes how peaked the distribution is without changing the
ranking. The three filters remove tokens: **top-k** keeps a fixed number, **top-p** keeps a fixed share of
the probability mass, **min-p** keeps tokens at least a fraction as likely as the best one, so it cuts more
when the model is confident and less when it is unsure. Whatever survives is renormalised by softmax and one
token is drawn.

**The draw.** Sort the survivors by probability and stack them on a line from 0 to 1, each taking as much room
as its probability. A uniform random number *u* lands in exactly one token's stretch: that is the token.
The seed fixes the sequence of *u*'s, so the same seed and settings repeat the same text. (transformers
draws with `torch.multinomial`, a different but equivalent method: same probabilities, other random numbers.)

**Greedy.** Temperature 0 means no randomness: the highest score wins every time. It is what
`generate(do_sample=False)` does; it tends to repeat itself, which is what the penalties were invented for.

**Entropy** (in bits) measures how spread the distribution is: 0 bits = one certain token, 1 bit = a coin flip
between two, log2(n) = n equally likely tokens.

**Stopping.** A run ends when the model draws its end-of-sequence token (EOS), when a stop sequence appears
in the text (the token that completes it is kept, as in transformers), or at max new tokens. Min new tokens
sets EOS to −∞ until that many tokens exist.
"""


# ---------------------------------------------------------------------------------------------------
# Plain helpers


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


def parse_stop(text: str | None) -> list[str]:
    """Stop sequences typed one per line; `\\n` and `\\t` stand for a newline and a tab."""
    lines = (text or "").split("\n")
    return [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines if line != ""]


def make_params(values, seed) -> SamplingParams:
    return SamplingParams(**dict(zip(PARAMS, values)), seed=None if seed is None or seed == "" else seed)


def new_run(prompt: str, chat: bool, seed) -> dict:
    """A fresh run: nothing generated yet, viewing the first step. Validates the prompt and the seed."""
    s = session()
    prompt_ids(s, prompt, chat)
    params = SamplingParams(seed=None if seed is None or seed == "" else seed)
    return {
        "model": s.model_id, "prompt": prompt, "chat": bool(chat), "seed_in": params.seed, "seed": pick_seed(params),
        "ids": [], "texts": [], "probs": [], "forced": [], "blocked": [], "view": 0, "stop": None, "stop_seq": None,
    }


def same_run(state: dict | None, prompt: str, chat: bool, seed) -> bool:
    seed = None if seed is None or seed == "" else int(seed)
    return bool(state) and state["model"] == session().model_id and state["prompt"] == prompt \
        and state["chat"] == bool(chat) and state["seed_in"] == seed


def append_step(state: dict, record: StepRecord) -> None:
    state["ids"].append(record.token_id)
    state["texts"].append(record.text)
    state["probs"].append(record.raw_prob)
    state["forced"].append(record.forced)
    state["blocked"].append(record.eos_blocked)


def truncate(state: dict, length: int) -> None:
    for key in ("ids", "texts", "probs", "forced", "blocked"):
        del state[key][length:]
    state["stop"] = state["stop_seq"] = None


def end_text(state: dict) -> str | None:
    if not state["stop"]:
        return None
    reason = STOP_REASONS.get(state["stop"], state["stop"])
    if state["stop"] == "stop_sequence":
        reason += f" ({state['stop_seq']!r})"
    return f"ended: {reason}"


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


def whatif_choices(record: StepRecord) -> list[tuple[str, int]]:
    final = record.stages[-1]
    return [
        (f"{piece}   {p:.1%}" if kept else f"{piece}   (removed)", cand)
        for cand, piece, p, kept in zip(record.candidates, record.pieces, final.probs, final.kept)
    ]


def render(state: dict, params: SamplingParams, min_new: int, extra: str = ""):
    """All views of the step on view. The step's logits come from the store (no model call) unless the
    step is old, then one forward pass recomputes them."""
    s = session()
    j = state["view"]
    ids = state["ids"]
    run_token = ids[j] if j < len(ids) else None
    seeded = SamplingParams(**{k: getattr(params, k) for k in PARAMS}, seed=state["seed"])
    record, _, _ = inspect_step(s, state["prompt"], seeded, ids[:j], chat=state["chat"], min_new_tokens=min_new,
                                samples=SAMPLES,
                                extra_ids=[run_token] if run_token is not None else ())
    run_piece = record.pieces[record.candidates.index(run_token)] if run_token is not None else None
    return (
        generated_html(state["texts"], state["probs"], j, forced=state["forced"], blocked=state["blocked"],
                       pending=state["stop"] is None, ended=end_text(state)),
        status_markdown(state, record, run_token, run_piece, params, min_new, extra),
        waterfall_figure(record, run_token),
        stage_table_html(record, stage_explanations(params, min_new)),
        draw_figure(record, seeded.greedy),
        gr.Radio(choices=whatif_choices(record), value=None,
                 label=f"What-if: take another token at step {j + 1} and continue from there"),
        state,
    )


def read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text):
    """Validate everything a control sends; one clear sentence on the first bad value."""
    params = make_params(values, seed)
    max_new, min_new = check_lengths(max_new, min_new)
    stop = check_stop(parse_stop(stop_text))
    return params, max_new, min_new, stop


def do_step(state, prompt, chat, seed, values, max_new, min_new, stop_text):
    """Draw one token with the current settings (a new run if the prompt, chat or seed changed)."""
    params, max_new, min_new, stop = read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text)
    state = copy.deepcopy(state) if same_run(state, prompt, chat, seed) else new_run(prompt, chat, seed)
    if state["stop"]:
        state["view"] = len(state["ids"]) - 1
        return render(state, params, min_new, "The run has ended: press Reset, or branch at an earlier step.")
    s = session()
    ids = state["ids"]
    seeded = SamplingParams(**{k: getattr(params, k) for k in PARAMS}, seed=state["seed"])
    record, _, _ = inspect_step(s, prompt, seeded, ids, chat=chat, min_new_tokens=min_new)
    append_step(state, record)
    state["stop"], state["stop_seq"] = stop_reason(s, prompt_ids(s, prompt, chat), ids, stop, max_new)
    state["view"] = len(ids) - 1
    return render(state, params, min_new)


# ---------------------------------------------------------------------------------------------------
# Events (each wrapped by user_errors: a bad value becomes one clear message). Every control arrives as
# (prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency, max_new, min_new,
# stop_text): explicit parameters, so Gradio can also inject gr.EventData.


@user_errors
def on_reset(prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
             max_new, min_new, stop_text):
    values = (temperature, top_k, top_p, min_p, repetition, presence, frequency)
    params, _, min_new, _ = read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text)
    return render(new_run(prompt, chat, seed), params, min_new)


@user_errors
def on_step(state, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
            max_new, min_new, stop_text):
    values = (temperature, top_k, top_p, min_p, repetition, presence, frequency)
    return do_step(state, prompt, chat, seed, values, max_new, min_new, stop_text)


@user_errors
def on_rerender(state, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
                max_new, min_new, stop_text):
    """A slider moved: the same step, the pipeline re-applied to its stored logits. If the prompt, chat
    or seed changed meanwhile (an example was picked), this starts the new run instead."""
    values = (temperature, top_k, top_p, min_p, repetition, presence, frequency)
    params, _, min_new, _ = read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text)
    if not same_run(state, prompt, chat, seed):
        state = new_run(prompt, chat, seed)
    return render(state, params, min_new)


@user_errors
def on_show_step(state, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
                 max_new, min_new, stop_text, evt: gr.EventData):
    """A click on a generated token (or on 'next') shows that step."""
    values = (temperature, top_k, top_p, min_p, repetition, presence, frequency)
    params, _, min_new, _ = read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text)
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
    return render(state, params, min_new)


@user_errors
def on_branch(state, choice, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
              max_new, min_new, stop_text):
    """What-if: take the picked candidate at the step on view, drop what came after, go on from there."""
    values = (temperature, top_k, top_p, min_p, repetition, presence, frequency)
    params, max_new, min_new, stop = read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text)
    if not state:
        raise InputError("Press Step first: there is no run to branch from.")
    if choice is None or choice == "":
        raise InputError("Pick a candidate token first, then press Branch.")
    state = copy.deepcopy(state)
    s = session()
    j = state["view"]
    truncate(state, j)
    seeded = SamplingParams(**{k: getattr(params, k) for k in PARAMS}, seed=state["seed"])
    record, _, _ = inspect_step(s, state["prompt"], seeded, state["ids"], chat=state["chat"],
                                min_new_tokens=min_new, forced=int(choice))
    record.forced = True  # chosen by the user, even if the draw would have agreed
    append_step(state, record)
    state["stop"], state["stop_seq"] = stop_reason(s, prompt_ids(s, state["prompt"], state["chat"]), state["ids"],
                                                   stop, max_new)
    return render(state, params, min_new, f"Branched: step {j + 1} is now **{html.escape(record.piece)}**; "
                                          "Step or Generate to end continues from here.")


@user_errors
def on_generate(state, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
                max_new, min_new, stop_text):
    """Generate to the end with the KV cache, streaming the text; the views show the last step."""
    values = (temperature, top_k, top_p, min_p, repetition, presence, frequency)
    params, max_new, min_new, stop = read_inputs(prompt, chat, seed, values, max_new, min_new, stop_text)
    state = copy.deepcopy(state) if same_run(state, prompt, chat, seed) else new_run(prompt, chat, seed)
    if state["stop"]:
        state["view"] = len(state["ids"]) - 1
        return [render(state, params, min_new, "The run has ended: press Reset, or branch at an earlier step.")]
    return _generate_stream(state, params, max_new, min_new, stop)


def _generate_stream(state, params, max_new, min_new, stop):
    seeded = SamplingParams(**{k: getattr(params, k) for k in PARAMS}, seed=state["seed"])
    run = Generation(session(), state["prompt"], seeded, max_new, state["chat"], stop, min_new_tokens=min_new,
                     prefix_ids=state["ids"], keep_logits=True)
    shown = time.perf_counter()
    for record in run:
        append_step(state, record)
        if time.perf_counter() - shown > 0.4:  # stream the text a few times a second, not every token
            shown = time.perf_counter()
            text = generated_html(state["texts"], state["probs"], -1, forced=state["forced"],
                                  blocked=state["blocked"], pending=False)
            yield text, f"Generating… {len(state['ids'])} tokens", gr.skip(), gr.skip(), gr.skip(), gr.skip(), state
    trace = run.trace
    state["stop"], state["stop_seq"] = trace.stop_reason, trace.stop_sequence
    state["view"] = len(state["ids"]) - 1
    timing = ""
    if trace.ttft_s is not None:
        timing = (f"This run: {len(trace.token_ids)} tokens, time to first token {trace.ttft_s * 1000:.0f} ms "
                  f"(prefill of {trace.steps[0].tokens_in_pass} tokens)"
                  + (f", then {trace.tpot_s * 1000:.0f} ms per token." if trace.tpot_s else "."))
    yield render(state, params, min_new, timing)


def generate_to_end(*args):
    """Gradio streams only from a generator function. Bad values fail in on_generate (user_errors);
    anything failing mid-run is turned into one message here."""
    try:
        yield from on_generate(*args)
    except gr.Error:
        raise
    except InputError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    except Exception as exc:
        log.exception("generate to end failed")
        raise gr.Error(f"Something went wrong ({type(exc).__name__}); the app is still running. Try again.",
                       print_exception=False) from None


def toggle_play(playing: bool):
    playing = not playing
    return playing, gr.Timer(active=playing), gr.Button(value="⏸ Pause" if playing else "▶ Play")


def stop_play():
    return False, gr.Timer(active=False), gr.Button(value="▶ Play")


def on_tick(state, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
            max_new, min_new, stop_text):
    """Play: one step per tick; the timer stops at the end of the run or on a bad value."""
    try:
        out = on_step(state, prompt, chat, seed, temperature, top_k, top_p, min_p, repetition, presence, frequency,
                      max_new, min_new, stop_text)
    except gr.Error:
        gr.Warning("Play stopped: fix the value above and press Play again.")
        return (*[gr.skip()] * 7, *stop_play())
    ended = bool(out[-1]["stop"])
    return (*out, *(stop_play() if ended else (True, gr.skip(), gr.skip())))


# ---------------------------------------------------------------------------------------------------
# JSON endpoints


@user_errors
def next_token_api(prompt: str, generated_ids: list[int] | None = None, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                   presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
                   chat: bool = True, min_new_tokens: int = 0) -> dict:
    """The stage table of one step: prompt + generated_ids so far + sampling parameters -> every active
    stage (survivors, entropy, top candidates with probability, rank and whether they survive), the
    uniform number of this step (the seed's stream) and the token it picks. No token is appended."""
    s = session()
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    _, min_new = check_lengths(MAX_NEW_TOKENS, min_new_tokens)
    record, _, seed_used = inspect_step(s, prompt, params, generated_ids or [], chat=chat, min_new_tokens=min_new)
    return {
        "model": s.model_id,
        "seed": seed_used,
        "step": record.index,
        "stages": [
            {
                "name": st.name, "label": st.label, "survivors": st.survivors,
                "entropy_bits": st.entropy_bits, "top_prob": st.top_prob,
                "candidates": [
                    {"id": c, "piece": p, "prob": q, "rank": r, "kept": k}
                    for c, p, q, r, k in zip(record.candidates, record.pieces, st.probs, st.ranks, st.kept)
                ],
            }
            for st in record.stages
        ],
        "draw": record.draw,
        "chosen": {"id": record.token_id, "piece": record.piece, "text": record.text, "prob": record.chosen_prob,
                   "rank": record.chosen_rank, "raw_prob": record.raw_prob},
        "eos_blocked": record.eos_blocked,
    }


@user_errors
def generate_api(prompt: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int | None = None, max_new_tokens: int = 32, chat: bool = True,
                 stop: list[str] | None = None, min_new_tokens: int = 0) -> dict:
    """Generate with the sampling pipeline: prompt + parameters -> token ids, text, stop reason
    (eos, stop_sequence, max_new_tokens), time to first token and per output token, and per step the chosen
    token (probability, rank, the uniform number) with the top candidates of the final distribution."""
    s = session()
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    trace = generate(s, prompt, params, max_new_tokens, chat, stop or (), min_new_tokens=min_new_tokens)
    return {
        "model": s.model_id,
        **trace.to_dict(steps=False),
        "steps": [
            {
                "token_id": st.token_id, "piece": st.piece, "prob": st.chosen_prob, "rank": st.chosen_rank,
                "raw_prob": st.raw_prob, "draw": st.draw, "eos_blocked": st.eos_blocked,
                "top": [{"id": i, "piece": p, "prob": q} for i, p, q in st.final_top[:5]],
            }
            for st in trace.steps
        ],
    }


# ---------------------------------------------------------------------------------------------------
# Layout


def build(demo: gr.Blocks) -> None:
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=DEFAULT["prompt"], lines=2, max_length=4000, elem_id="smp-prompt")
        with gr.Column(scale=2, min_width=260):
            with gr.Row():
                chat = gr.Checkbox(label="as chat (chat template)", value=DEFAULT["chat"], elem_id="smp-chat")
                seed = gr.Number(label="seed (empty = random)", value=42, precision=0, minimum=0, maximum=MAX_SEED,
                                 elem_id="smp-seed")
            with gr.Row():
                max_new = gr.Number(label=f"max new tokens (≤ {MAX_NEW_TOKENS})", value=48, precision=0, minimum=1,
                                    maximum=MAX_NEW_TOKENS, elem_id="smp-max-new")
                min_new = gr.Number(label="min new tokens (EOS blocked until)", value=0, precision=0, minimum=0,
                                    maximum=MAX_NEW_TOKENS, elem_id="smp-min-new")
            stop_text = gr.Textbox(label=f"stop sequences (one per line, ≤ {MAX_STOP_SEQUENCES}; \\n = newline)",
                                   lines=1, max_lines=MAX_STOP_SEQUENCES, elem_id="smp-stop")
    with gr.Row(elem_id="smp-sliders"):
        temperature = gr.Slider(0, min(2.0, MAX_TEMPERATURE), value=DEFAULT["temperature"], step=0.05,
                                label="temperature (0 = greedy)", elem_id="smp-temperature")
        top_k = gr.Slider(0, 200, value=DEFAULT["top_k"], step=1, label="top-k (0 = off)", elem_id="smp-top-k")
        top_p = gr.Slider(0.01, 1.0, value=DEFAULT["top_p"], step=0.01, label="top-p (1 = off)", elem_id="smp-top-p")
        min_p = gr.Slider(0.0, 1.0, value=DEFAULT["min_p"], step=0.01, label="min-p (0 = off)", elem_id="smp-min-p")
    with gr.Row():
        repetition = gr.Slider(0.5, min(2.0, MAX_REPETITION_PENALTY), value=DEFAULT["repetition_penalty"], step=0.05,
                               label="repetition penalty θ (1 = off)", elem_id="smp-repetition")
        presence = gr.Slider(-MAX_PRESENCE_PENALTY, MAX_PRESENCE_PENALTY, value=DEFAULT["presence_penalty"], step=0.1,
                             label="presence penalty (0 = off)", elem_id="smp-presence")
        frequency = gr.Slider(-MAX_FREQUENCY_PENALTY, MAX_FREQUENCY_PENALTY, value=DEFAULT["frequency_penalty"],
                              step=0.1, label="frequency penalty (0 = off)", elem_id="smp-frequency")
    gr.Examples(
        examples=[[e["prompt"], e["chat"], *[e[k] for k in PARAMS]] for e in EXAMPLES],
        example_labels=[e["label"] for e in EXAMPLES],
        inputs=[prompt, chat, temperature, top_k, top_p, min_p, repetition, presence, frequency], label="Examples (each sets the prompt and the sliders)",
    )
    with gr.Row():
        step_btn = gr.Button("Step ▸", variant="primary", elem_id="smp-step")
        play_btn = gr.Button("▶ Play", elem_id="smp-play")
        gen_btn = gr.Button("Generate to end ⏭", elem_id="smp-generate")
        reset_btn = gr.Button("Reset ↺", elem_id="smp-reset")
    state = gr.State(None, time_to_live=STATE_TTL_S)
    playing = gr.State(False, time_to_live=STATE_TTL_S)
    timer = gr.Timer(TICK_S, active=False)

    text = gr.HTML(elem_id="smp-text", css_template=CSS, js_on_load=(
        "element.addEventListener('click', (e) => { const t = e.target.closest('[data-step]');"
        " if (t) trigger('click', {step: parseInt(t.dataset.step)}); });"))
    status = gr.Markdown(elem_id="smp-status")
    waterfall = gr.Plot(label="Each stage, on the top candidates (grey: removed)", elem_id="smp-waterfall")
    table = gr.HTML(elem_id="smp-table", css_template=CSS)
    with gr.Row():
        with gr.Column(scale=3):
            draw = gr.Plot(label="The draw", elem_id="smp-draw")
        with gr.Column(scale=2):
            whatif = gr.Radio(label="What-if: take another token here and continue", choices=[], elem_id="smp-whatif")
            branch_btn = gr.Button("Branch: continue with this token", elem_id="smp-branch")
    with gr.Accordion("How the pipeline works", open=False):
        gr.Markdown(LESSON)

    sliders = [temperature, top_k, top_p, min_p, repetition, presence, frequency]
    controls = [prompt, chat, seed, *sliders, max_new, min_new, stop_text]
    views = [text, status, waterfall, table, draw, whatif, state]
    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")


    # A model without a chat template (Gemma base) starts with "as chat" off instead of an error.
    gr.on([demo.load, model_changed(demo)], lambda: gr.Checkbox(value=session().has_chat_template), None, chat,
          api_visibility="private", queue=False).then(on_reset, controls, views, **model_event)
    gr.on([reset_btn.click, prompt.submit, chat.change, seed.change], on_reset, controls, views,
          **model_event).then(stop_play, None, [playing, timer, play_btn], api_visibility="private", queue=False)
    step_btn.click(on_step, [state, *controls], views, **model_event)
    generation = gen_btn.click(generate_to_end, [state, *controls], views, **model_event)
    reset_btn.click(None, None, None, cancels=[generation], api_visibility="private", queue=False)
    play_btn.click(toggle_play, [playing], [playing, timer, play_btn], api_visibility="private", queue=False)
    timer.tick(on_tick, [state, *controls], [*views, playing, timer, play_btn], **model_event)
    # Sliders re-apply the pipeline to the stored logits of the step on view: no model call, so they stay
    # out of the model queue and always show the latest position.
    gr.on([s.change for s in sliders] + [min_new.change], on_rerender, [state, *controls], views,
          api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    text.click(on_show_step, [state, *controls], views, **model_event)
    branch_btn.click(on_branch, [state, whatif, *controls], views, **model_event)

    gr.api(next_token_api, api_name="next_token", concurrency_id=MODEL_CONCURRENCY)
    gr.api(generate_api, api_name="generate", concurrency_id=MODEL_CONCURRENCY)
