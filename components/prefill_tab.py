"""Prefill & decode tab: the two phases of generation measured, the KV cache growing, what context costs.

Every number comes from `inference.timeline`, measured on the passes the Sampling tab's generation runs;
figures come from `figures.prefill` (plain dicts in, plotly out). No per-user state: each button runs and
draws; the context sweep is cached per model in the session.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from inference.limits import (
    MAX_BATCH_NEW_TOKENS,
    MAX_BATCH_PROMPT_TOKENS,
    MAX_BATCH_PROMPTS,
    MAX_NEW_TOKENS,
    MAX_PROMPT_TOKENS,
    MAX_RECOMPUTE_TOKENS,
    MAX_SEED,
    MAX_SWEEP_TOKENS,
    MAX_SWEEP_WORKING_BYTES,
    SWEEP_DECODE_STEPS,
    SWEEP_LENGTHS,
)
from inference.sampling import SamplingParams
from inference.timeline import batch_throughput, compare_cache, context_sweep, kv_shape, timeline

from .common import MODEL_CONCURRENCY, model_changed, note, session, user_errors
from .figures.prefill import (
    CSS,
    batch_figure,
    batch_html,
    compare_figure,
    compare_html,
    headline_html,
    kv_figure,
    kv_html,
    nbytes,
    sweep_figure,
    sweep_html,
    timeline_figure,
)

TITLE = "Prefill & decode"
_DATA = json.loads((Path(__file__).parent.parent / "assets" / "examples" / "prefill.json").read_text())
EXAMPLES = _DATA["examples"]
BATCH_PROMPTS = _DATA["batch_prompts"]
DEFAULT = EXAMPLES[0]
DEFAULT_SWEEP = 512

INTRO = f"""
A model writes in two phases. **Prefill** runs the whole prompt through the model in *one* forward pass: it fills the
**KV cache** (every layer's keys and values for every prompt token) and gives the first token, so it sets the
**time to first token (TTFT)**. **Decode** then runs *one token per pass*: the new token's keys and values are
added to the cache and its query reads all the cached ones, so it sets the **time per output token (TPOT)**.
Press **Run** and watch both, measured on the real passes of the loaded model; switch the KV cache off to see why
it exists; grow the prompt in the sweep to see what context length costs.
Limits: prompt {MAX_PROMPT_TOKENS:,} tokens, {MAX_NEW_TOKENS} new tokens; without the cache at most
{MAX_RECOMPUTE_TOKENS:,} tokens processed over all passes.
"""

LESSON = """
**TTFT (time to first token)** is how long a user stares at an empty reply: the prefill of the whole prompt plus
the first draw. It grows with the prompt: a long document or chat history means a long prefill.

**TPOT (time per output token)** is the pace of the reply once it streams: one decode pass each. It is the mean
over the tokens after the first; p50/p90 tell whether some tokens were much slower (another program on the CPU,
a garbage collection). Reading speed is ~5 tokens/s, so a TPOT under ~200 ms feels fluent.

**How they add up.** The run's total is TTFT + TPOT × (N − 1) for N new tokens, by the definition of the mean;
the check under the numbers shows it on this run. Decode speed is 1 / TPOT; the overall rate N / total is lower
because it includes the prefill.

**Throughput** is what a server cares about: tokens per second over *all* users. Batching runs several users'
tokens in the same pass: each pass reads every weight once however many rows it has, so a batch of 4 costs far
less than 4 passes, and throughput rises while each user's TPOT gets slightly worse.

**Memory (VRAM on a GPU).** The weights are fixed; the **KV cache** grows by
2 × layers × KV heads × head dim × bytes per element for every token of every sequence, so long contexts and big
batches are what fill a GPU. Grouped-query attention (several query heads sharing one key/value head) shrinks it.
On a GPU this tab reports `torch.cuda.max_memory_allocated` (tensor memory); on a CPU the process's resident
memory (RSS), which also counts Python, the tokenizer and everything else loaded.

**Why prefill is fast per token and decode is not.** A prefill pass pushes n tokens through each weight matrix at
once (matrix × matrix: the hardware is busy computing); a decode pass pushes one token (matrix × vector: the time
goes into reading the weights from memory). That is why 30 prompt tokens take little longer than one decode step.
"""

SWEEP_NOTE = (f"Lengths {', '.join(f'{n:,}' for n in SWEEP_LENGTHS)} up to the one you pick; each is one greedy "
              f"generation ({SWEEP_DECODE_STEPS} decode steps after the prefill). Cap: {MAX_SWEEP_TOKENS:,} tokens, the "
              f"model's context length, and about {MAX_SWEEP_WORKING_BYTES / 1e9:.1f} GB of working memory for the "
              "longest prefill. Results are cached per model. The longest lengths take a while on a small CPU.")


# ---------------------------------------------------------------------------------------------------
# Helpers


def _params(temperature, seed) -> SamplingParams:
    return SamplingParams(temperature=temperature if temperature is not None else 0.0,
                          seed=None if seed is None or seed == "" else seed)


def _chat(chat: bool) -> bool:
    """The chat template only where the model has one (a base model such as Gemma 3 270M has none)."""
    return bool(chat) and session().has_chat_template


def model_note() -> str:
    """What the KV-cache formula gives for the loaded model, before anything runs."""
    s = session()
    kv = kv_shape(s)
    per = kv.bytes_per_token
    return note(
        f"{s.label} on {s.device} ({kv.dtype}): every token adds 2 × {kv.num_layers} layers × {kv.num_kv_heads} KV heads "
        f"× {kv.head_dim} × {kv.bytes_per_element} bytes = {per:,} bytes to the KV cache; 2,048 tokens hold "
        f"{nbytes(kv.bytes_for(2048))}. Context length {s.facts.context_length:,} tokens."
        + ("" if s.has_chat_template else " This model has no chat template: prompts are run as plain text.")
    )


def sweep_choices() -> list[int]:
    context = session().facts.context_length or MAX_SWEEP_TOKENS
    return [n for n in SWEEP_LENGTHS if n <= MAX_SWEEP_TOKENS and n + SWEEP_DECODE_STEPS + 1 <= context]


# ---------------------------------------------------------------------------------------------------
# Events (each wrapped by user_errors: bad input becomes one clear message)


@user_errors
def on_run(prompt, chat, max_new, temperature, seed, use_cache):
    """One generation, measured: headline numbers, the timeline, the KV-cache panel."""
    tl = timeline(session(), prompt, _params(temperature, seed), max_new, _chat(chat), use_cache=bool(use_cache)).to_dict()
    return headline_html(tl), timeline_figure(tl), kv_html(tl), kv_figure(tl)


@user_errors
def on_compare(prompt, chat, max_new, temperature, seed):
    """The same generation with the KV cache on and off."""
    cmp = compare_cache(session(), prompt, _params(temperature, seed), max_new, _chat(chat)).to_dict()
    return compare_html(cmp), compare_figure(cmp)


@user_errors
def on_sweep(max_tokens, fresh, progress=gr.Progress()):
    """Context-length sweep up to max_tokens, with a progress bar."""
    def report(i, total, n):
        progress((i, total), desc=f"prefill of {n:,} tokens ({i + 1} of {total})" if i < total else "done",
                 unit="lengths")

    sw = context_sweep(session(), max_tokens, fresh=bool(fresh), progress=report).to_dict()
    return sweep_figure(sw), sweep_html(sw)


@user_errors
def on_batch(prompts_text, new_tokens, chat):
    prompts = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()]
    b = batch_throughput(session(), prompts, new_tokens, _chat(chat)).to_dict()
    return batch_figure(b), batch_html(b)


def on_model():
    """A new model (or a new visitor): the formula note and the sweep lengths for it; old results go."""
    s = session()
    choices = sweep_choices()
    value = DEFAULT_SWEEP if DEFAULT_SWEEP in choices else choices[-1]
    return (model_note(), gr.Dropdown(choices=choices, value=value), gr.Checkbox(value=s.has_chat_template),
            "", None, "", None, "", None, "", None, "", None)


# ---------------------------------------------------------------------------------------------------
# JSON endpoints


@user_errors
def timeline_api(prompt: str, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int | None = None, max_new_tokens: int = 32, chat: bool = True, use_cache: bool = True) -> dict:
    """One generation, timed pass by pass: prompt + sampling parameters + use_cache -> per step (phase, tokens
    processed, cache length, forward/sampling/step seconds, start time, the token, KV-cache bytes measured from the
    cache tensors), headline metrics (ttft_s, prefill_s, tpot_mean_s/p50/p90, tokens_per_s, total_s), the KV-cache
    formula with its check, and peak memory."""
    s = session()
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    return timeline(s, prompt, params, max_new_tokens, chat, use_cache=use_cache).to_dict()


@user_errors
def context_sweep_api(max_tokens: int = 256, fresh: bool = False) -> dict:
    """Context-length sweep up to max_tokens (standard lengths 16, 32, 64...): per length the prefill time and its
    split (attention scores, projections, MLP, other), decode time per token, KV bytes, peak memory, FLOPs; and
    linear/quadratic fits of prefill time. Cached per model; fresh=True measures again."""
    return context_sweep(session(), max_tokens, fresh=fresh).to_dict()


# ---------------------------------------------------------------------------------------------------
# Layout


def build(demo: gr.Blocks) -> None:
    gr.Markdown(INTRO)
    facts = gr.HTML(elem_id="pfd-model-note")
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=DEFAULT["prompt"], lines=2, max_length=8000, elem_id="pfd-prompt")
        with gr.Column(scale=2, min_width=280):
            with gr.Row():
                chat = gr.Checkbox(label="as chat (chat template)", value=DEFAULT["chat"], elem_id="pfd-chat")
                use_cache = gr.Checkbox(label="KV cache on", value=True, elem_id="pfd-cache")
            with gr.Row():
                max_new = gr.Number(label=f"max new tokens (≤ {MAX_NEW_TOKENS})", value=DEFAULT["max_new_tokens"],
                                    precision=0, minimum=1, maximum=MAX_NEW_TOKENS, elem_id="pfd-max-new")
                seed = gr.Number(label="seed (empty = random)", value=42, precision=0, minimum=0, maximum=MAX_SEED,
                                 elem_id="pfd-seed")
            temperature = gr.Slider(0, 2, value=DEFAULT["temperature"], step=0.05, label="temperature (0 = greedy)",
                                    elem_id="pfd-temperature")
    gr.Examples(examples=[[e["prompt"], e["chat"], e["max_new_tokens"], e["temperature"]] for e in EXAMPLES],
                example_labels=[e["label"] for e in EXAMPLES], inputs=[prompt, chat, max_new, temperature],
                label="Examples")
    with gr.Row():
        run_btn = gr.Button("Run ▸", variant="primary", elem_id="pfd-run")
        compare_btn = gr.Button("Run with the KV cache on and off", elem_id="pfd-compare")
    headline = gr.HTML(elem_id="pfd-headline", css_template=CSS)
    timeline_plot = gr.Plot(label="Timeline: prefill, then one decode pass per token", elem_id="pfd-timeline")
    gr.Markdown("### KV cache")
    kv_text = gr.HTML(elem_id="pfd-kv-html", css_template=CSS)
    kv_plot = gr.Plot(label="KV cache: measured from the tensors vs the formula", elem_id="pfd-kv-plot")
    gr.Markdown("### KV cache on vs off")
    compare_text = gr.HTML(elem_id="pfd-compare-html", css_template=CSS)
    compare_plot = gr.Plot(label="The same generation with and without the cache", elem_id="pfd-compare-plot")

    gr.Markdown("### What context length costs")
    gr.Markdown(SWEEP_NOTE)
    with gr.Row():
        sweep_max = gr.Dropdown(choices=list(SWEEP_LENGTHS), value=DEFAULT_SWEEP, allow_custom_value=True,
                                label=f"longest prompt (tokens, ≤ {MAX_SWEEP_TOKENS:,})", elem_id="pfd-sweep-max")
        fresh = gr.Checkbox(label="measure again (ignore cached results)", value=False, elem_id="pfd-sweep-fresh")
        sweep_btn = gr.Button("Run the sweep", elem_id="pfd-sweep-run")
    sweep_plot = gr.Plot(label="Context-length sweep", elem_id="pfd-sweep-plot")
    sweep_text = gr.HTML(elem_id="pfd-sweep-html", css_template=CSS)

    gr.Markdown("### Throughput: a batch vs one prompt at a time")
    gr.Markdown(f"Greedy decoding of up to {MAX_BATCH_PROMPTS} prompts (≤ {MAX_BATCH_PROMPT_TOKENS} tokens each), "
                "once as one left-padded batch with an attention mask, once one prompt after another. Every prompt "
                "gets exactly the chosen number of new tokens (EOS blocked), so both do the same work.")
    with gr.Row():
        batch_prompts = gr.Textbox(label=f"prompts, one per line (≤ {MAX_BATCH_PROMPTS})", value="\n".join(BATCH_PROMPTS),
                                   lines=4, elem_id="pfd-batch-prompts", scale=3)
        with gr.Column(scale=1, min_width=220):
            batch_new = gr.Slider(1, MAX_BATCH_NEW_TOKENS, value=16, step=1, label="new tokens per prompt",
                                  elem_id="pfd-batch-new")
            batch_btn = gr.Button("Measure throughput", elem_id="pfd-batch-run")
    batch_plot = gr.Plot(label="Throughput", elem_id="pfd-batch-plot")
    batch_text = gr.HTML(elem_id="pfd-batch-html", css_template=CSS)
    with gr.Accordion("What the numbers mean: TTFT, TPOT, throughput, memory", open=True):
        gr.Markdown(LESSON)

    model_event = dict(concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    controls = [prompt, chat, max_new, temperature, seed]
    gr.on([demo.load, model_changed(demo)], on_model, None,
          [facts, sweep_max, chat, headline, timeline_plot, kv_text, kv_plot, compare_text, compare_plot,
           sweep_text, sweep_plot, batch_text, batch_plot], api_visibility="private", queue=False)
    gr.on([run_btn.click, prompt.submit], on_run, [*controls, use_cache], [headline, timeline_plot, kv_text, kv_plot],
          **model_event)
    compare_btn.click(on_compare, controls, [compare_text, compare_plot], **model_event)
    sweep_btn.click(on_sweep, [sweep_max, fresh], [sweep_plot, sweep_text], **model_event)
    batch_btn.click(on_batch, [batch_prompts, batch_new, chat], [batch_plot, batch_text], **model_event)

    gr.api(timeline_api, api_name="timeline", concurrency_id=MODEL_CONCURRENCY)
    gr.api(context_sweep_api, api_name="context_sweep", concurrency_id=MODEL_CONCURRENCY)
