"""Memory tab, the event handlers: each button runs one analysis (cached in the session per model, text and settings)
and returns its views; `run_section` runs the section a "try this" button or a shared link names.

Every handler returns its views in the order of the lists in `OUTPUTS`, so the layout and the handlers agree; a
`*_kept` handler adds the analysis, kept for the page (a `gr.State` per section) so that a change of language
redraws the views from it (`on_language`) without running the model.
"""

from __future__ import annotations

import re

import gradio as gr

from inference.errors import InputError
from inference.kv_policies import POLICY_NAMES, compare_policies, layer_kind_memory, sweep_budgets
from inference.limits import LAYER_KIND_CHUNK, MAX_LAYER_KIND_TOKENS
from inference.model import policy
from inference.model.kv import kv_shape
from inference.model.variants import dtype_name
from inference.precision import (available_precisions, compare_kv_precision, compare_precisions, source_note,
                                 weight_bytes)
from inference.model.anatomy import layer_windows

from ..common import note, session, user_errors
from ..export import csv_file
from ..i18n import DEFAULT, language, t
from .figures import (
    first_token_figure, first_token_summary, kept_figure, kept_summary, kv_figure, kv_html, kv_summary,
    layer_kind_figure, layer_kind_summary, nbytes, policies_html, policies_rows, policies_summary, policy_name,
    precision_figure, precision_html, precision_rows, precision_summary, sentences, sweep_figure, sweep_summary,
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


def _source_text(s, lang: str) -> str:
    """`inference.precision.source_note` (what the reference weights are) in `lang`: the same cases, read from the
    catalogue."""
    bundled = policy.BUNDLED.get(s.model_id)
    dtype = dtype_name(s.dtype)
    if bundled is None or "GGUF" not in s.source:
        return t("memory.source_checkpoint", lang, model=s.label, dtype=dtype)
    quant = re.search(r"\.(Q\d\w*)\.gguf$|-(q\d\w*)\.gguf$", bundled.gguf_name, flags=re.I)
    kind = (quant.group(1) or quant.group(2)).upper() if quant else t("memory.source_quantized", lang)
    int4 = "memory.source_int4_q4_1" if kind == "Q4_1" else "memory.source_int4_other"
    return sentences(lang, t("memory.source_gguf", lang, model=s.label, kind=kind, dtype=dtype), t(int4, lang))


def source_text(s, lang: str | None = None) -> str:
    """What the reference weights are, in `lang` (default: the visitor's); should `inference` word its note in a way
    the catalogue does not know, its English note is shown as it is."""
    english = source_note(s)
    if _source_text(s, DEFAULT) != english:
        return english
    return _source_text(s, lang or language())


def model_text(lang: str | None = None) -> str:
    """The loaded model's weights and its KV cache per token, from the tensors and the formula, and what the
    bundled file really was."""
    lang = lang or language()
    s = session()
    kv = kv_shape(s)
    return sentences(lang, t("memory.model_note", lang, model=s.label, device=str(s.device),
                             params=s.facts.num_parameters, dtype=kv.dtype, weights=nbytes(weight_bytes(s)),
                             layers=kv.num_layers, kv_heads=kv.num_kv_heads, head_dim=kv.head_dim,
                             bytes=kv.bytes_per_element, per_token=kv.bytes_per_token,
                             per_1000=nbytes(kv.bytes_for(1000))), source_text(s, lang))


def model_note(lang: str | None = None) -> str:
    return note(model_text(lang))


def layers_text(lang: str | None = None) -> str:
    """Which layers of the loaded model use a sliding window (and, for a model with none, that it has none)."""
    lang = lang or language()
    s = session()
    windows = layer_windows(s)
    local = [i for i, w in enumerate(windows) if w is not None]
    if not local:
        return t("memory.layers_none", lang, model=s.label, n=len(windows))
    glob = [i for i, w in enumerate(windows) if w is None]
    return t("memory.layers_some", lang, model=s.label, local=len(local), n=len(windows), window=windows[local[0]],
             kept=windows[local[0]] - 1, glob=", ".join(map(str, glob)))


def layers_note(lang: str | None = None) -> str:
    return note(layers_text(lang))


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
        raise InputError(t("memory.error_no_precision"))
    return picked


def _reporter(progress, unit: str, describe=None):
    """A progress callback for the inference loops, shown as Gradio's progress bar: `unit` (a catalogue key) in the
    visitor's language, and what the loop says it is on, read by `describe` (default: as it is, e.g. a dtype)."""
    if progress is None:
        return None
    unit = t(unit)
    describe = describe or (lambda what: what)
    return lambda done, total, what: progress((done, total), desc=describe(what), unit=unit)


def _policy_progress(lang: str):
    """What the policy loops report ("sliding window", "sinks + window (StreamingLLM), 16 tokens") in `lang`."""
    policies = {english: name for name, english in POLICY_NAMES.items()}

    def describe(what: str) -> str:
        if what in policies:
            return policy_name(policies[what], lang)
        swept = re.fullmatch(r"(.+), (\d+) tokens", what)
        if swept and swept.group(1) in policies:
            return t("memory.progress_sweep", lang, policy=policy_name(policies[swept.group(1)], lang),
                     budget=swept.group(2))
        return what

    return describe


def precision_views(cmp, lang: str) -> tuple:
    return precision_html(cmp, lang), precision_figure(cmp, lang), precision_summary(cmp, lang)


def kv_views(kvc, lang: str) -> tuple:
    return kv_html(kvc, lang), kv_figure(kvc, lang), kv_summary(kvc, lang)


def policies_views(pc, lang: str) -> tuple:
    return (policies_html(pc, lang), kept_figure(pc, lang), kept_summary(pc, lang), first_token_figure(pc.full, lang),
            first_token_summary(pc.full, lang), policies_summary(pc, lang))


def sweep_views(sweep, lang: str) -> tuple:
    return sweep_figure(sweep, lang), sweep_summary(sweep, lang)


def layers_views(m, lang: str) -> tuple:
    """The layer kinds' figure and its text alternative; `m` False: the model has no sliding-window layers."""
    if m is False:
        return None, layers_text(lang)
    return layer_kind_figure(m, lang), layer_kind_summary(m, lang)


# Each section's views in a language, from its analysis: the section's outputs (OUTPUTS) but its download.
VIEWS = {"precision": precision_views, "kv_cache": kv_views, "policies": policies_views, "sweep": sweep_views,
         "layers": layers_views}

# Each section runs in `_<section>`, which returns its outputs and the analysis they show; `on_<section>` returns
# the outputs (what the tests read), `keep(section)` the outputs and then the analysis, kept for the page so that a
# change of language redraws the views (`on_language`).


def _precision(text, dtypes, progress=None) -> tuple[tuple, object]:
    lang = language()
    cmp = compare_precisions(session(), text, _dtypes(dtypes), progress=_reporter(progress, "memory.unit_precisions"))
    return (*precision_views(cmp, lang), _csv("memory-precision", precision_rows(cmp))), cmp


def _kv_precision(text) -> tuple[tuple, object]:
    kvc = compare_kv_precision(session(), text)
    return kv_views(kvc, language()), kvc


def _policies(text, budget, sinks, progress=None) -> tuple[tuple, object]:
    lang = language()
    pc = compare_policies(session(), text, int(budget), int(sinks),
                          progress=_reporter(progress, "memory.unit_policies", _policy_progress(lang)))
    return (*policies_views(pc, lang), _csv("memory-eviction-policies", policies_rows(pc))), pc


def _sweep(text, sinks, progress=None) -> tuple[tuple, object]:
    lang = language()
    sweep = sweep_budgets(session(), text, int(sinks),
                          progress=_reporter(progress, "memory.unit_runs", _policy_progress(lang)))
    if not sweep.budgets:
        raise InputError(t("memory.error_sweep_short", lang))
    return sweep_views(sweep, lang), sweep


def _layers(text, max_tokens) -> tuple[tuple, object]:
    m = layer_kind_memory(session(), text, int(max_tokens)) if has_windows() else False
    return layers_views(m, language()), m


@user_errors
def on_precision(text, dtypes, progress=gr.Progress()):
    return _precision(text, dtypes, progress)[0]


@user_errors
def on_kv_precision(text):
    return _kv_precision(text)[0]


@user_errors
def on_policies(text, budget, sinks, progress=gr.Progress()):
    return _policies(text, budget, sinks, progress)[0]


@user_errors
def on_sweep(text, sinks, progress=gr.Progress()):
    return _sweep(text, sinks, progress)[0]


@user_errors
def on_layers(text, max_tokens):
    return _layers(text, max_tokens)[0]


def _kept(run: tuple[tuple, object]) -> tuple:
    outputs, analysis = run
    return (*outputs, analysis)


@user_errors
def precision_kept(text, dtypes, progress=gr.Progress()):
    return _kept(_precision(text, dtypes, progress))


@user_errors
def kv_precision_kept(text):
    return _kept(_kv_precision(text))


@user_errors
def policies_kept(text, budget, sinks, progress=gr.Progress()):
    return _kept(_policies(text, budget, sinks, progress))


@user_errors
def sweep_kept(text, sinks, progress=gr.Progress()):
    return _kept(_sweep(text, sinks, progress))


@user_errors
def layers_kept(text, max_tokens):
    return _kept(_layers(text, max_tokens))


RUNS = {
    "precision": lambda text, dtypes, budget, sinks, max_tokens: _precision(text, dtypes, gr.Progress()),
    "kv_cache": lambda text, dtypes, budget, sinks, max_tokens: _kv_precision(text),
    "policies": lambda text, dtypes, budget, sinks, max_tokens: _policies(text, budget, sinks, gr.Progress()),
    "sweep": lambda text, dtypes, budget, sinks, max_tokens: _sweep(text, sinks, gr.Progress()),
    "layers": lambda text, dtypes, budget, sinks, max_tokens: _layers(text, max_tokens),
}


def _section(section, text, dtypes, budget, sinks, max_tokens) -> tuple[tuple, object]:
    """A section's run as every output (the others left as they are), and its analysis (None: no section)."""
    if section not in RUNS:
        return (gr.skip(),) * len(ALL_OUTPUTS), None
    outputs, analysis = RUNS[section](text, dtypes, budget, sinks, max_tokens)
    views = dict(zip(OUTPUTS[section], outputs))
    return tuple(views.get(name, gr.skip()) for name in ALL_OUTPUTS), analysis


@user_errors
def run_section(section, text, dtypes, budget, sinks, max_tokens):
    """The section a "try this" button or a shared link names, run; every other output left as it is."""
    return _section(section, text, dtypes, budget, sinks, max_tokens)[0]


@user_errors
def run_section_kept(section, text, dtypes, budget, sinks, max_tokens):
    """`run_section`, then one analysis per section (SECTIONS order): the section's, kept for the page; the
    others' left as they are."""
    outputs, analysis = _section(section, text, dtypes, budget, sinks, max_tokens)
    return (*outputs, *(analysis if name == section else gr.skip() for name in SECTIONS))


def on_language(lang, *analyses):
    """A new language: every section on screen redrawn in it from the analysis kept for the page (one per section,
    SECTIONS order; no model pass); a section not run yet is left as it is, and so are the downloads (their headers
    are English)."""
    views = {}
    for section, analysis in zip(SECTIONS, analyses):
        if analysis is not None:
            views.update(zip(OUTPUTS[section], VIEWS[section](analysis, lang)))  # the download (last) is not one
    return tuple(views.get(name, gr.skip()) for name in ALL_OUTPUTS)


def forget():
    """A new model: the kept analyses go with the views they drew."""
    return (None,) * len(SECTIONS)


def linked_section(section, text, dtypes, budget, sinks, max_tokens, request: gr.Request):
    """At the tab's first view, only for a link to this tab that names a section: run it (a plain visit runs
    nothing)."""
    if not (request and request.query_params.get("tab") == "memory"):
        return (gr.skip(),) * (len(ALL_OUTPUTS) + len(SECTIONS))
    return run_section_kept(section, text, dtypes, budget, sinks, max_tokens)


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
