"""Prefill & decode tab, the event handlers: each button runs one measurement (`inference.timing`, `.sweep`,
`.batch`) and draws it (`figures`). The context sweep is cached per model in the session; each section's last
measurement is kept for the page (a `gr.State`), so a change of language redraws it without measuring again.

The outputs of each handler are in the order of the lists `layout.build` wires (run, compare, sweep, batch); a
`*_kept` handler adds the measurement to keep.
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
from ..i18n import language, t
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
    sentences,
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


def model_note(lang: str | None = None) -> str:
    """What the KV-cache formula gives for the loaded model, before anything runs (in `lang`, default: the
    visitor's language)."""
    lang = lang or language()
    s = session()
    kv = kv_shape(s)
    text = t("prefill.model_note", lang, model=s.label, device=s.device, dtype=kv.dtype, layers=kv.num_layers,
             kv_heads=kv.num_kv_heads, head_dim=kv.head_dim, bytes=kv.bytes_per_element,
             per_token=f"{kv.bytes_per_token:,}", tokens=f"{2048:,}", size=nbytes(kv.bytes_for(2048)),
             context=f"{s.facts.context_length:,}")
    return note(sentences([text, "" if s.has_chat_template else t("prefill.no_chat_template", lang)], lang))


def shared_note(serving: dict | None, lang: str) -> str:
    """What a served run shared with other visitors' requests, in words (`inference.serving.shared_note`'s
    sentences, from its numbers, in `lang`); "" when it ran alone."""
    if not serving:
        return ""
    parts = []
    n = serving.get("shared_with_max", 0)
    if n > 0:
        parts.append(t("prefill.shared_one" if n == 1 else "prefill.shared_many", lang, n=n,
                       shared=serving["shared_passes"], passes=serving["passes"],
                       mean=f"{serving['shared_with_mean']:.1f}"))
    if serving.get("cached_prefix_tokens"):
        parts.append(t("prefill.prefix_cached", lang, n=serving["cached_prefix_tokens"]))
    return sentences(parts, lang)


def sweep_choices() -> list[int]:
    context = session().facts.context_length or MAX_SWEEP_TOKENS
    return [n for n in SWEEP_LENGTHS if n <= MAX_SWEEP_TOKENS and n + SWEEP_DECODE_STEPS + 1 <= context]


# ---------------------------------------------------------------------------------------------------
# Buttons (each wrapped by user_errors: bad input becomes one clear message)


def run_views(kept: tuple, lang: str) -> tuple:
    """A run's views in `lang` (headline with what it shared, timeline, its text alternative, the KV-cache panel,
    its figure and text alternative), from the run kept for the page: `(timeline, serving)`."""
    tl, serving = kept
    shared = shared_note(serving, lang)
    shared = note(shared) if shared else ""
    return (headline_html(tl, lang) + shared, timeline_figure(tl, lang), timeline_summary(tl, lang), kv_html(tl, lang),
            kv_figure(tl, lang), kv_summary(tl, lang))


def compare_views(cmp, lang: str) -> tuple:
    return compare_html(cmp, lang), compare_figure(cmp, lang), compare_summary(cmp, lang)


def sweep_views(sw, lang: str) -> tuple:
    return sweep_figure(sw, lang), sweep_summary(sw, lang), sweep_html(sw, lang)


def batch_views(b, lang: str) -> tuple:
    return batch_figure(b, lang), batch_summary(b, lang), batch_html(b, lang)


# Each button's handler comes twice: `on_*` returns the views (what the API of the tests reads), `*_kept` the same
# views and then the measurement itself, kept for this page so a change of language redraws them (`on_language`).


def _run(prompt, chat, max_new, temperature, seed, use_cache) -> tuple[tuple, tuple]:
    kept = served_timeline(session(), prompt, _params(temperature, seed), max_new, _chat(chat),
                           use_cache=bool(use_cache))  # batched with other visitors' generations
    tl = kept[0]
    return (*run_views(kept, language()), _csv("prefill-decode-timeline", timeline_table(tl)), tl.seed), kept


@user_errors
def on_run(prompt, chat, max_new, temperature, seed, use_cache):
    """One generation, measured: headline numbers, the timeline, the KV-cache panel, each figure's text
    alternative, the timeline as CSV, and the seed the run used (written back so a link reproduces it)."""
    return _run(prompt, chat, max_new, temperature, seed, use_cache)[0]


@user_errors
def run_kept(prompt, chat, max_new, temperature, seed, use_cache):
    """`on_run`, and the run kept for the page."""
    views, kept = _run(prompt, chat, max_new, temperature, seed, use_cache)
    return (*views, kept)


def _compare(prompt, chat, max_new, temperature, seed) -> tuple[tuple, object]:
    cmp = compare_cache(session(), prompt, _params(temperature, seed), max_new, _chat(chat))
    return (*compare_views(cmp, language()), _csv("kv-cache-on-off", compare_table(cmp)), cmp.on.seed), cmp


@user_errors
def on_compare(prompt, chat, max_new, temperature, seed):
    """The same generation with the KV cache on and off (one seed for both, written back)."""
    return _compare(prompt, chat, max_new, temperature, seed)[0]


@user_errors
def compare_kept(prompt, chat, max_new, temperature, seed):
    """`on_compare`, and the comparison kept for the page."""
    views, cmp = _compare(prompt, chat, max_new, temperature, seed)
    return (*views, cmp)


def _sweep(max_tokens, fresh, progress) -> tuple[tuple, object]:
    lang = language()

    def report(i, total, n):
        progress((i, total), desc=t("prefill.progress_length", lang, n=f"{n:,}", i=i + 1, total=total) if i < total
                 else t("prefill.progress_done", lang), unit=t("prefill.progress_unit", lang))

    sw = context_sweep(session(), max_tokens, fresh=bool(fresh), progress=report)
    return (*sweep_views(sw, lang), _csv("context-sweep", sweep_table(sw)), int(max_tokens)), sw


@user_errors
def on_sweep(max_tokens, fresh, progress=gr.Progress()):
    """Context-length sweep up to max_tokens, with a progress bar; the last output is the link's max_tokens."""
    return _sweep(max_tokens, fresh, progress)[0]


@user_errors
def sweep_kept(max_tokens, fresh, progress=gr.Progress()):
    """`on_sweep`, and the sweep kept for the page."""
    views, sw = _sweep(max_tokens, fresh, progress)
    return (*views, sw)


@user_errors
def sweep_to(max_tokens, progress=gr.Progress()):
    """A sweep asked for by a link or a "try this" (max_tokens from the link's field): the menu shows it too."""
    return (int(max_tokens), *on_sweep(max_tokens, False, progress=progress))


@user_errors
def sweep_to_kept(max_tokens, progress=gr.Progress()):
    """`sweep_to`, and the sweep kept for the page."""
    return (int(max_tokens), *sweep_kept(max_tokens, False, progress=progress))


def _batch(prompts_text, new_tokens, chat) -> tuple[tuple, object]:
    prompts = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()]
    b = batch_throughput(session(), prompts, new_tokens, _chat(chat))
    return (*batch_views(b, language()), _csv("batch-throughput", batch_table(b))), b


@user_errors
def on_batch(prompts_text, new_tokens, chat):
    return _batch(prompts_text, new_tokens, chat)[0]


@user_errors
def batch_kept(prompts_text, new_tokens, chat):
    """`on_batch`, and the measurement kept for the page."""
    views, b = _batch(prompts_text, new_tokens, chat)
    return (*views, b)


def on_language(lang, run, compare, sweep, batch):
    """A new language: every measurement on screen redrawn in it from the one kept for the page (no model pass, no
    new measurement); a section not run yet is left as it is. The downloads stay: their headers are English."""
    skip = (gr.skip(),) * 3
    return (*(run_views(run, lang) if run is not None else skip * 2),
            *(compare_views(compare, lang) if compare is not None else skip),
            *(sweep_views(sweep, lang) if sweep is not None else skip),
            *(batch_views(batch, lang) if batch is not None else skip))


def forget():
    """A new model: the kept measurements go with the views they drew."""
    return None, None, None, None


# ---------------------------------------------------------------------------------------------------
# The tab's first view and a model change


def _for_this_tab(request: gr.Request | None) -> bool:
    """Whether the page was opened with a link to this tab (then its first view runs it)."""
    return bool(request) and request.query_params.get("tab") == "prefill"


def linked_run(prompt, chat, max_new, temperature, seed, use_cache, request: gr.Request):
    """At the tab's first view, only for a link to this tab: run its generation (a plain visit runs nothing, so thirty
    students opening the app do not queue thirty generations)."""
    if not _for_this_tab(request):
        return (gr.skip(),) * 9
    return run_kept(prompt, chat, max_new, temperature, seed, use_cache)


def linked_sweep(max_tokens, request: gr.Request, progress=gr.Progress()):
    """At the tab's first view, for a link that carries a sweep (max_tokens): run it (cached per model after the
    first)."""
    if not _for_this_tab(request) or max_tokens is None:
        return (gr.skip(),) * 7
    return sweep_to_kept(max_tokens, progress=progress)


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
