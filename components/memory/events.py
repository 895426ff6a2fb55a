"""Memory tab, the event handlers: each button runs one analysis (cached in the session per model, text and settings)
and returns its views; `run_section` runs the section a "try this" button or a shared link names.

Every handler returns its views in the order of the lists in `OUTPUTS`, so the layout and the handlers agree.
"""

from __future__ import annotations

import gradio as gr

from inference.errors import InputError
from inference.kv_policies import compare_policies, layer_kind_memory, sweep_budgets
from inference.limits import LAYER_KIND_CHUNK, MAX_LAYER_KIND_TOKENS
from inference.model.kv import kv_shape
from inference.precision import (available_precisions, compare_kv_precision, compare_precisions, source_note,
                                 weight_bytes)
from inference.model.anatomy import layer_windows

from ..common import note, session, user_errors
from ..export import csv_file
from .figures import (
    first_token_figure, first_token_summary, kept_figure, kept_summary, kv_figure, kv_html, kv_summary,
    layer_kind_figure, layer_kind_summary, nbytes, policies_html, policies_rows, policies_summary, precision_figure,
    precision_html, precision_rows, precision_summary, sweep_figure, sweep_summary,
)

DEFAULT_DTYPES = ["float32", "bfloat16", "int8"]
SECTIONS = ("precision", "kv_cache", "policies", "sweep", "layers")
# What each section's handler returns, in order (the layout lists its components under the same names).
OUTPUTS = {
    "precision": ("precision_html", "precision_plot", "precision_alt", "precision_csv"),
    "kv_cache": ("kv_html", "kv_plot", "kv_alt"),
    "policies": ("policies_html", "kept_plot", "kept_alt", "first_plot", "first_alt", "policies_alt", "policies_csv"),
    "sweep": ("sweep_plot", "sweep_alt"),
    "layers": ("layers_plot", "layers_alt"),
}
ALL_OUTPUTS = tuple(name for names in OUTPUTS.values() for name in names)


def _csv(name: str, table: tuple[list[str], list[list]]) -> gr.DownloadButton:
    header, rows = table
    return gr.DownloadButton(value=csv_file(name, header, rows), interactive=True)


# ---------------------------------------------------------------------------------------------------
# Notes that need no run


def model_note() -> str:
    """The loaded model's weights and its KV cache per token, from the tensors and the formula, and what the
    bundled file really was."""
    s = session()
    kv = kv_shape(s)
    return note(
        f"{s.label} on {s.device}: {s.facts.num_parameters:,} parameters in {kv.dtype} hold {nbytes(weight_bytes(s))} "
        f"(measured from the parameter tensors). Every token adds 2 × {kv.num_layers} layers × {kv.num_kv_heads} KV "
        f"heads × {kv.head_dim} × {kv.bytes_per_element} bytes = {kv.bytes_per_token:,} bytes to the KV cache: "
        f"{nbytes(kv.bytes_for(1000))} per 1,000 tokens. " + source_note(s))


def layers_text() -> str:
    """Which layers of the loaded model use a sliding window (and, for a model with none, that it has none)."""
    s = session()
    windows = layer_windows(s)
    local = [i for i, w in enumerate(windows) if w is not None]
    if not local:
        return (f"{s.label} has no sliding-window layers: all {len(windows)} layers attend to every earlier token and "
                "keep it in the cache, so its KV cache grows by the same bytes per token at any length. Gemma 3 (in the "
                "model menu) interleaves local layers with global ones: load it to measure the difference.")
    glob = [i for i, w in enumerate(windows) if w is None]
    return (f"{s.label}: {len(local)} of {len(windows)} layers use a sliding window of {windows[local[0]]} tokens (they "
            f"keep the last {windows[local[0]] - 1} in the cache); layers {', '.join(map(str, glob))} are global and "
            "keep every token. Measure what each kind holds as the context grows.")


def layers_note() -> str:
    return note(layers_text())


def has_windows() -> bool:
    return any(w is not None for w in layer_windows(session()))


def layer_lengths() -> list[int]:
    context = session().facts.context_length or MAX_LAYER_KIND_TOKENS
    return [n for n in (512, 1024, 2048) if LAYER_KIND_CHUNK <= n <= min(MAX_LAYER_KIND_TOKENS, context)]


# ---------------------------------------------------------------------------------------------------
# Runs


def _dtypes(dtypes) -> list[str]:
    picked = [d for d in (dtypes or []) if d]
    if not picked:
        raise InputError("Pick at least one precision to compare with the loaded model.")
    return picked


def _reporter(progress, unit: str):
    """A progress callback for the inference loops, shown as Gradio's progress bar."""
    if progress is None:
        return None
    return lambda done, total, what: progress((done, total), desc=what, unit=unit)


@user_errors
def on_precision(text, dtypes, progress=gr.Progress()):
    cmp = compare_precisions(session(), text, _dtypes(dtypes), progress=_reporter(progress, "precisions"))
    return (precision_html(cmp), precision_figure(cmp), precision_summary(cmp),
            _csv("memory-precision", precision_rows(cmp)))


@user_errors
def on_kv_precision(text):
    kvc = compare_kv_precision(session(), text)
    return kv_html(kvc), kv_figure(kvc), kv_summary(kvc)


@user_errors
def on_policies(text, budget, sinks, progress=gr.Progress()):
    pc = compare_policies(session(), text, int(budget), int(sinks), progress=_reporter(progress, "policies"))
    return (policies_html(pc), kept_figure(pc), kept_summary(pc), first_token_figure(pc.full),
            first_token_summary(pc.full), policies_summary(pc), _csv("memory-eviction-policies", policies_rows(pc)))


@user_errors
def on_sweep(text, sinks, progress=gr.Progress()):
    sweep = sweep_budgets(session(), text, int(sinks), progress=_reporter(progress, "runs"))
    if not sweep.budgets:
        raise InputError("The text is shorter than every budget of the sweep: each policy would keep the whole text. "
                         "Use a longer text.")
    return sweep_figure(sweep), sweep_summary(sweep)


@user_errors
def on_layers(text, max_tokens):
    if not has_windows():
        return None, layers_text()
    m = layer_kind_memory(session(), text, int(max_tokens))
    return layer_kind_figure(m), layer_kind_summary(m)


HANDLERS = {
    "precision": lambda text, dtypes, budget, sinks, max_tokens: on_precision(text, dtypes),
    "kv_cache": lambda text, dtypes, budget, sinks, max_tokens: on_kv_precision(text),
    "policies": lambda text, dtypes, budget, sinks, max_tokens: on_policies(text, budget, sinks),
    "sweep": lambda text, dtypes, budget, sinks, max_tokens: on_sweep(text, sinks),
    "layers": lambda text, dtypes, budget, sinks, max_tokens: on_layers(text, max_tokens),
}


def run_section(section, text, dtypes, budget, sinks, max_tokens):
    """The section a "try this" button or a shared link names, run; every other output left as it is."""
    if section not in HANDLERS:
        return (gr.skip(),) * len(ALL_OUTPUTS)
    views = dict(zip(OUTPUTS[section], HANDLERS[section](text, dtypes, budget, sinks, max_tokens)))
    return tuple(views.get(name, gr.skip()) for name in ALL_OUTPUTS)


def linked_section(section, text, dtypes, budget, sinks, max_tokens, request: gr.Request):
    """On page load, only for a link to this tab that names a section: run it (a plain visit runs nothing)."""
    if not (request and request.query_params.get("tab") == "memory"):
        return (gr.skip(),) * len(ALL_OUTPUTS)
    return run_section(section, text, dtypes, budget, sinks, max_tokens)


def on_page():
    """The notes and the controls that depend on the loaded model (a link's values are already applied)."""
    lengths = layer_lengths()
    return (model_note(), layers_note(), gr.Dropdown(choices=available_precisions(session())),
            gr.Dropdown(choices=lengths, value=1024 if 1024 in lengths else lengths[-1]), gr.Column(visible=has_windows()))


def on_model():
    """A new model: its notes and controls; every result of the old one goes."""
    cleared = {"precision_csv": gr.DownloadButton(value=None, interactive=False),
               "policies_csv": gr.DownloadButton(value=None, interactive=False)}
    empty = tuple(cleared.get(name, None if name.endswith("plot") else "") for name in ALL_OUTPUTS)
    return (*on_page(), *empty)
