"""Interventions tab, the event handlers: one ablation (before/after bars), the picker that writes the list of
heads and blocks, the head sweep (with a progress bar; a click on its grid opens that run), activation patching
(with a progress bar; a click on its heatmap opens that cell), the live token check of the two prompts, the
hand-offs from the Attention and Forward tabs, a model switch, and a language switch (the views on screen are
re-drawn in the new language from the cached analyses).

Every analysis is cached in the session (inference.interventions), so re-drawing a grid for another metric or a
selected cell reads the cache; the tab's state only says which analysis is on screen.
"""

from __future__ import annotations

import html
import re

import gradio as gr
import numpy as np

from inference.errors import InputError
from inference.interventions import (
    BLOCK_KINDS, HeadSweep, PatchSweep, ablate, head_sweep, parse_ablation, patch_sweep, prompt_pair,
)
from inference.limits import MAX_PATCH_TOKENS

from ..common import error_text, session, user_errors
from ..export import csv_file
from ..i18n import language, t
from ..share import page_query
from .exports import PATCH_HEADER, SWEEP_HEADER, patch_rows, sweep_rows
from .figures import (
    ablation_bars, ablation_info_html, ablation_summary, pair_html, patch_cell_html, patch_heatmap, patch_summary,
    sweep_columns, sweep_heatmap, sweep_summary, sweep_waiting,
)

TAB_ID = "interventions_tab"
# The Forward diagram draws one decoder layer for all of them: layer 0's modules, so its blocks are layer 0's.
FORWARD_BLOCKS = {"layer.attention": "attn", "layer.mlp": "mlp"}


def _chat(chat: bool) -> bool:
    """Chat only where the model has a chat template (a link may ask for it on a base model)."""
    return bool(chat) and session().has_chat_template


# inference's progress lines (English), read back so the bar speaks the visitor's language.
PROGRESS_LINES = [
    (re.compile(r"^layer (?P<layer>\d+): (?P<runs>\d+) runs, one component off in each$"),
     "interventions.progress_sweep"),
    (re.compile(r"^position (?P<position>\d+) of (?P<n>\d+): patched at each of (?P<layers>\d+) layers$"),
     "interventions.progress_patch"),
]


def progress_text(text: str, lang: str) -> str:
    """One of inference's progress lines in `lang` (a line this tab does not know stays as it is)."""
    for pattern, key in PROGRESS_LINES:
        match = pattern.match(text)
        if match:
            return t(key, lang, **match.groupdict())
    return text


def _progress(progress, lang: str):
    """inference's progress(fraction, text) as Gradio's progress bar, in `lang`."""
    return lambda fraction, text: progress(fraction, desc=progress_text(text, lang))


# ---------------------------------------------------------------------------------------------------
# One ablation


@user_errors
def run_ablation(text: str, chat: bool, spec: str, mode: str):
    """Ablate what the list names (one cached clean pass and one ablated pass): the list written back in its
    plain form, the before/after bars, their summary and the counts."""
    s = session()
    ablation = parse_ablation(s, spec, mode)
    result = ablate(s, text, ablation.heads, ablation.blocks, mode, _chat(chat))
    return (ablation.spec, *_ablation_views(result, language()))


def _ablation_views(result, lang: str):
    return ablation_bars(result, lang=lang), ablation_summary(result, lang), ablation_info_html(result, lang)


def _add(spec: str, item: str) -> str:
    s = session()
    current = parse_ablation(s, spec)  # a clear message if the list is malformed
    return parse_ablation(s, ", ".join(x for x in (current.spec, item) if x)).spec


@user_errors
def add_head(spec: str, layer: int, head: int) -> str:
    return _add(spec, f"L{int(layer)}H{int(head)}")


@user_errors
def add_attn(spec: str, layer: int) -> str:
    return _add(spec, f"attn L{int(layer)}")


@user_errors
def add_mlp(spec: str, layer: int) -> str:
    return _add(spec, f"mlp L{int(layer)}")


# ---------------------------------------------------------------------------------------------------
# The head sweep


def _layers(first: int, last: int) -> list[int]:
    first, last = sorted((int(first), int(last)))
    return list(range(first, last + 1))


def _sweep(state: dict | None, lang: str | None = None) -> HeadSweep:
    """The sweep on screen (from the cache; a model switch since asks for a new run)."""
    if not state:
        raise InputError(t("interventions.error_sweep_first", lang))
    s = session()
    if s.model_id != state["model"]:
        raise InputError(t("interventions.error_sweep_model", lang, model=s.label))
    if state.get("partial") is not None:  # cut short by the time limit: not in the cache, kept in the state
        return state["partial"]
    return head_sweep(s, state["text"], state["layers"], state["mode"], state["chat"])


def _resume(state: dict | None, **args):
    """The unfinished analysis in `state` when it is the one asked for again (so it continues), else None."""
    if not state or state.get("partial") is None or state.get("model") != session().model_id:
        return None
    return state["partial"] if all(state.get(k) == v for k, v in args.items()) else None


def _sweep_outputs(sweep: HeadSweep, state: dict, metric: str, lang: str, selected=None):
    csv = csv_file("head-sweep", SWEEP_HEADER, sweep_rows(sweep))
    return (state, sweep_heatmap(sweep, metric, selected, lang), sweep_summary(sweep, lang),
            gr.DownloadButton(value=csv, interactive=True))


@user_errors
def run_sweep(text: str, chat: bool, mode: str, first: int, last: int, metric: str, state: dict | None = None,
              progress=gr.Progress()):
    """Switch off every head (and block) of the layer range, one at a time: one pass per layer, with a progress
    bar; cached, so running it again is instant. A sweep the time limit cut short continues where it stopped."""
    s = session()
    lang = language()
    chat = _chat(chat)
    layers = _layers(first, last)
    args = {"text": text, "chat": chat, "mode": mode, "layers": layers}
    sweep = head_sweep(s, text, layers, mode, chat, progress=_progress(progress, lang), resume=_resume(state, **args))
    state = {"model": s.model_id, **args, "partial": sweep if sweep.timed_out else None}
    return _sweep_outputs(sweep, state, metric, lang)


@user_errors
def redraw_sweep(state: dict | None, metric: str):
    if not state:
        return gr.skip(), gr.skip()
    lang = language()
    sweep = _sweep(state, lang)
    return sweep_heatmap(sweep, metric, lang=lang), sweep_summary(sweep, lang)


@user_errors
def pick_sweep_cell(state: dict | None, metric: str, evt: gr.EventData):
    """A click on the sweep grid: that component's ablation goes into the list (the bars follow: `run_ablation`)."""
    lang = language()
    sweep = _sweep(state, lang)
    data = getattr(evt, "_data", None) or {}
    layer, column = int(data.get("y", -1)), int(data.get("x", -1))
    columns = sweep_columns(sweep)
    if layer not in sweep.done or not 0 <= column < len(columns):
        raise InputError(t("interventions.error_sweep_cell", lang))
    heads = sweep.delta_logprob.shape[1]
    spec = f"L{layer}H{column}" if column < heads else f"{BLOCK_KINDS[column - heads]} L{layer}"
    head = column if column < heads else gr.skip()
    return (sweep_heatmap(sweep, metric, (layer, column), lang), state["text"], state["chat"], state["mode"], spec,
            layer, head)


# ---------------------------------------------------------------------------------------------------
# Activation patching


def _patch(state: dict | None, lang: str | None = None) -> PatchSweep:
    if not state:
        raise InputError(t("interventions.error_patch_first", lang))
    s = session()
    if s.model_id != state["model"]:
        raise InputError(t("interventions.error_patch_model", lang, model=s.label))
    if state.get("partial") is not None:
        return state["partial"]
    return patch_sweep(s, state["clean"], state["corrupt"], state["site"], state["chat"])


def _best_cell(sweep: PatchSweep) -> tuple[int, int]:
    effect = np.where(np.isnan(sweep.effect), -np.inf, sweep.effect)
    layer, position = np.unravel_index(int(np.argmax(effect)), effect.shape)
    return int(layer), int(position)


@user_errors
def check_pair(clean: str, corrupt: str, chat: bool) -> str:
    """Both prompts' tokens as they are typed (the tokenizer only, no model pass), and whether they can be patched."""
    try:
        return pair_html(prompt_pair(session(), clean, corrupt, _chat(chat)), language())
    except InputError as exc:  # an empty box while typing: say so in place, not in a pop-up
        return f'<div class="int-problem">{error_text(exc)}</div>'


@user_errors
def run_patch(clean: str, corrupt: str, chat: bool, site: str, metric: str, state: dict | None = None,
              progress=gr.Progress()):
    """Patch every (layer, position) with a progress bar (cached); the cell that restores the most is opened.
    Prompts that cannot be patched (token counts differ, the same prompt) get one sentence in place, no run."""
    s = session()
    lang = language()
    chat = _chat(chat)
    pair = prompt_pair(s, clean, corrupt, chat)
    if pair.problem:
        return (None, None, "", pair_html(pair, lang), "", gr.skip(), gr.skip(),
                gr.DownloadButton(value=None, interactive=False))
    args = {"clean": clean, "corrupt": corrupt, "site": site, "chat": chat}
    sweep = patch_sweep(s, clean, corrupt, site, chat, progress=_progress(progress, lang),
                        resume=_resume(state, **args))
    state = {"model": s.model_id, **args, "partial": sweep if sweep.timed_out else None}
    layer, position = _best_cell(sweep)
    csv = csv_file("patching", PATCH_HEADER, patch_rows(sweep))
    layers, n = sweep.effect.shape
    return (state, patch_heatmap(sweep, metric, (layer, position), lang), patch_summary(sweep, lang),
            pair_html(pair, lang), patch_cell_html(sweep, layer, position, lang),
            gr.update(value=layer, maximum=layers - 1), gr.update(value=position, maximum=n - 1),
            gr.DownloadButton(value=csv, interactive=True))


def _cell_views(state: dict | None, metric: str, layer: int, position: int, lang: str | None = None):
    lang = lang or language()
    sweep = _patch(state, lang)
    layers, n = sweep.effect.shape
    if not (0 <= layer < layers and 0 <= position < n):
        raise InputError(t("interventions.error_no_cell", lang, layer=layer, position=position, layers=layers,
                           positions=n))
    return sweep, patch_heatmap(sweep, metric, (layer, position), lang), patch_cell_html(sweep, layer, position, lang)


@user_errors
def show_patch_cell(state: dict | None, metric: str, layer: int, position: int):
    """The cell sliders (or a metric switch): re-draw from the cached sweep."""
    if not state:
        return gr.skip(), gr.skip(), gr.skip()
    lang = language()
    sweep, figure, cell = _cell_views(state, metric, int(layer), int(position), lang)
    return figure, cell, patch_summary(sweep, lang)


@user_errors
def pick_patch_cell(state: dict | None, metric: str, evt: gr.EventData):
    """A click on the patching heatmap: that cell's patched run (from the cache) and the sliders follow."""
    data = getattr(evt, "_data", None) or {}
    layer, position = int(data.get("y", -1)), int(data.get("x", -1))
    _sweep_, figure, cell = _cell_views(state, metric, layer, position)
    return figure, cell, layer, position


# ---------------------------------------------------------------------------------------------------
# Arriving from another tab or a link; a model switch


@user_errors
def from_attention(text: str, chat: bool, layer: int, head: int, mean: bool):
    """"Ablate this head →" on the Attention tab: this tab, with its text, layer and head (the whole attention
    block of the layer when the Attention tab shows the mean over heads)."""
    layer, head = int(layer), int(head)
    spec = f"attn L{layer}" if mean else f"L{layer}H{head}"
    return gr.Tabs(selected=TAB_ID), text, bool(chat), spec, layer, head


@user_errors
def from_forward(state: dict | None):
    """"Ablate this block →" under a picked attention or MLP box of the Forward diagram (layer 0's block: the
    diagram draws layer 0 for all layers)."""
    kind = FORWARD_BLOCKS.get((state or {}).get("selected") or "")
    if not kind:
        raise InputError(t("interventions.error_forward_block"))
    return gr.Tabs(selected=TAB_ID), state["text"], bool(state["chat"]), f"{kind} L0", 0, gr.skip()


def link_asks(request: gr.Request) -> dict | None:
    """What a link to this tab asks to run beyond the ablation: the sweep (it names `sweep_from`) and the patching
    grid (it names both prompts), and whether it names a cell to open. None (no change, nothing runs) otherwise:
    a grid is tens of passes, and no first view should start one unasked."""
    query, _locked = page_query(request)
    if query.get("tab") != "interventions":
        return None
    asks = {"sweep": "sweep_from" in query, "patch": "clean" in query and "corrupt" in query,
            "cell": "cell_layer" in query and "cell_position" in query}
    return asks if asks["sweep"] or asks["patch"] else None


@user_errors
def run_sweep_linked(asks: dict | None, text, chat, mode, first, last, metric, progress=gr.Progress()):
    """A link's sweep (see `link_asks`)."""
    if not (asks or {}).get("sweep"):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return run_sweep(text, chat, mode, first, last, metric, None, progress)


@user_errors
def run_patch_linked(asks: dict | None, clean, corrupt, chat, site, metric, cell_layer, cell_position,
                     progress=gr.Progress()):
    """A link's patching grid (see `link_asks`), with the link's cell opened."""
    if not (asks or {}).get("patch"):
        return (gr.skip(),) * 8
    out = list(run_patch(clean, corrupt, chat, site, metric, None, progress))
    if out[0] and asks.get("cell"):
        try:
            _sweep_, out[1], out[4] = _cell_views(out[0], metric, int(cell_layer), int(cell_position))
            out[5], out[6] = int(cell_layer), int(cell_position)
        except InputError:
            pass  # a cell outside this grid: keep the best cell
    return tuple(out)


@user_errors
def on_model(spec: str):
    """A new model: the sliders' ranges follow its layers and heads, and a list naming heads it lacks is emptied."""
    s = session()
    f = s.facts
    try:
        spec = parse_ablation(s, spec).spec
    except InputError:
        spec = ""
    layer = gr.update(maximum=f.num_layers - 1)
    return (spec, layer, gr.update(maximum=f.num_heads - 1), layer, gr.update(maximum=f.num_layers - 1),
            layer, gr.update(maximum=MAX_PATCH_TOKENS - 1))


# ---------------------------------------------------------------------------------------------------
# A new language: the views on screen, re-drawn in it (the page's `Texts` re-label the controls). Each reads the
# cached analysis; one that cannot be re-drawn (a model switched since, a prompt edited into an error) keeps its
# view as it is, without a message.


@user_errors
def relabel_ablation(lang: str, text: str, chat: bool, spec: str, mode: str):
    """The before/after bars, their summary and the counts in `lang` (the ablation is cached: no new pass)."""
    try:
        s = session()
        ablation = parse_ablation(s, spec, mode)
        return _ablation_views(ablate(s, text, ablation.heads, ablation.blocks, mode, _chat(chat)), lang)
    except InputError:
        return gr.skip(), gr.skip(), gr.skip()


@user_errors
def relabel_sweep(lang: str, state: dict | None, metric: str):
    """The sweep grid and its summary in `lang`; before any sweep, the line that says how to start one."""
    if not state:
        return gr.skip(), sweep_waiting(lang)
    try:
        sweep = _sweep(state, lang)
    except InputError:
        return gr.skip(), gr.skip()
    return sweep_heatmap(sweep, metric, lang=lang), sweep_summary(sweep, lang)


@user_errors
def relabel_patch(lang: str, state: dict | None, metric: str, layer: int, position: int, clean: str, corrupt: str,
                  chat: bool):
    """The patching grid, the opened cell, the summary and the token check in `lang`."""
    try:
        pair = pair_html(prompt_pair(session(), clean, corrupt, _chat(chat)), lang)
    except InputError:
        pair = gr.skip()
    if not state:
        return gr.skip(), gr.skip(), gr.skip(), pair
    try:
        sweep, figure, cell = _cell_views(state, metric, int(layer), int(position), lang)
    except InputError:
        return gr.skip(), gr.skip(), gr.skip(), pair
    return figure, cell, patch_summary(sweep, lang), pair
