"""Prefill & decode tab, the event handlers: each button runs one measurement (`inference.timing`, `.sweep`,
`.batch`) and draws it (`figures`). No per-user state; the context sweep is cached per model in the session.

The outputs of each handler are in the order of the lists `layout.build` wires (run, compare, sweep, batch).
"""

from __future__ import annotations

import gradio as gr

from inference.batch import batch_throughput
from inference.limits import MAX_SWEEP_TOKENS, SWEEP_DECODE_STEPS, SWEEP_LENGTHS
from inference.model.kv import kv_shape
from inference.sampling import SamplingParams
from inference.serving import served_timeline
from inference.sweep import context_sweep
from inference.timing import compare_cache

from ..common import note, session, user_errors
from ..export import csv_file
from .figures import (
    batch_figure,
    batch_html,
    batch_summary,
    batch_table,
    compare_figure,
    compare_html,
    compare_summary,
    compare_table,
    headline_html,
    kv_figure,
    kv_html,
    kv_summary,
    nbytes,
    sweep_figure,
    sweep_html,
    sweep_summary,
    sweep_table,
    timeline_figure,
    timeline_summary,
    timeline_table,
)

DEFAULT_SWEEP = 512
EMPTY_CSV = dict(value=None, interactive=False)


def _params(temperature, seed) -> SamplingParams:
    return SamplingParams(temperature=temperature if temperature is not None else 0.0,
                          seed=None if seed is None or seed == "" else seed)


def _chat(chat: bool) -> bool:
    """The chat template only where the model has one (a base model such as Gemma 3 270M has none)."""
    return bool(chat) and session().has_chat_template


def _csv(name: str, table: tuple[list[str], list[list]]) -> gr.DownloadButton:
    header, rows = table
    return gr.DownloadButton(value=csv_file(name, header, rows), interactive=True)


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
# Buttons (each wrapped by user_errors: bad input becomes one clear message)


@user_errors
def on_run(prompt, chat, max_new, temperature, seed, use_cache):
    """One generation, measured: headline numbers, the timeline, the KV-cache panel, each figure's text
    alternative, the timeline as CSV, and the seed the run used (written back so a link reproduces it)."""
    tl, serving = served_timeline(session(), prompt, _params(temperature, seed), max_new, _chat(chat),
                                  use_cache=bool(use_cache))  # batched with other visitors' generations
    shared = note(serving["note"]) if serving and serving["note"] else ""
    return (headline_html(tl) + shared, timeline_figure(tl), timeline_summary(tl), kv_html(tl), kv_figure(tl), kv_summary(tl),
            _csv("prefill-decode-timeline", timeline_table(tl)), tl.seed)


@user_errors
def on_compare(prompt, chat, max_new, temperature, seed):
    """The same generation with the KV cache on and off (one seed for both, written back)."""
    cmp = compare_cache(session(), prompt, _params(temperature, seed), max_new, _chat(chat))
    return (compare_html(cmp), compare_figure(cmp), compare_summary(cmp), _csv("kv-cache-on-off", compare_table(cmp)),
            cmp.on.seed)


@user_errors
def on_sweep(max_tokens, fresh, progress=gr.Progress()):
    """Context-length sweep up to max_tokens, with a progress bar; the last output is the link's max_tokens."""
    def report(i, total, n):
        progress((i, total), desc=f"prefill of {n:,} tokens ({i + 1} of {total})" if i < total else "done",
                 unit="lengths")

    sw = context_sweep(session(), max_tokens, fresh=bool(fresh), progress=report)
    return (sweep_figure(sw), sweep_summary(sw), sweep_html(sw), _csv("context-sweep", sweep_table(sw)),
            int(max_tokens))


@user_errors
def sweep_to(max_tokens, progress=gr.Progress()):
    """A sweep asked for by a link or a "try this" (max_tokens from the link's field): the menu shows it too."""
    return (int(max_tokens), *on_sweep(max_tokens, False, progress=progress))


@user_errors
def on_batch(prompts_text, new_tokens, chat):
    prompts = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()]
    b = batch_throughput(session(), prompts, new_tokens, _chat(chat))
    return batch_figure(b), batch_summary(b), batch_html(b), _csv("batch-throughput", batch_table(b))


# ---------------------------------------------------------------------------------------------------
# Page load and model change


def _for_this_tab(request: gr.Request | None) -> bool:
    """Whether the page was opened with a link to this tab (then its view is run on load)."""
    return bool(request) and request.query_params.get("tab") == "prefill"


def linked_run(prompt, chat, max_new, temperature, seed, use_cache, request: gr.Request):
    """On page load, only for a link to this tab: run its generation (a plain visit runs nothing, so thirty
    students opening the app do not queue thirty generations)."""
    if not _for_this_tab(request):
        return (gr.skip(),) * 8
    return on_run(prompt, chat, max_new, temperature, seed, use_cache)


def linked_sweep(max_tokens, request: gr.Request, progress=gr.Progress()):
    """On page load, for a link that carries a sweep (max_tokens): run it (cached per model after the first)."""
    if not _for_this_tab(request) or max_tokens is None:
        return (gr.skip(),) * 6
    return sweep_to(max_tokens, progress=progress)


def on_page(chat):
    """After a link's values are applied: the formula note, the sweep lengths for this model, and the chat box
    (off on a model without a chat template)."""
    choices = sweep_choices()
    value = DEFAULT_SWEEP if DEFAULT_SWEEP in choices else choices[-1]
    return model_note(), gr.Dropdown(choices=choices, value=value), bool(chat) and session().has_chat_template


def on_model():
    """A new model: the formula note and the sweep lengths for it; old results and downloads go."""
    s = session()
    choices = sweep_choices()
    value = DEFAULT_SWEEP if DEFAULT_SWEEP in choices else choices[-1]
    return (model_note(), gr.Dropdown(choices=choices, value=value), gr.Checkbox(value=s.has_chat_template), None,
            "", None, "", "", None, "", gr.DownloadButton(**EMPTY_CSV),  # run
            "", None, "", gr.DownloadButton(**EMPTY_CSV),  # compare
            None, "", "", gr.DownloadButton(**EMPTY_CSV),  # sweep
            None, "", "", gr.DownloadButton(**EMPTY_CSV))  # batch
