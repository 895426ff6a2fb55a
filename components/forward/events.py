"""Forward pass tab, the event handlers: Run, a click on a box, the link to another tab, the two comparisons
and a model switch.

Run records one model pass per text (cached in the session, `inference.forward.forward_pass`); every other
view, a click on a box included, only reads that cached analysis. `run_forward` returns the views in the order
of `RUN_OUTPUTS`, so the layout (`layout.build`) and this handler agree on one list. The table rows and JSON
of the downloads come from `exports`; what each box does is the tab's text, assets/lessons/<lang>/forward_boxes.yaml.
Every text is in the visitor's language (`language()`, handed to the pure figure builders as `lang`).
"""

from __future__ import annotations

import html

import gradio as gr
import numpy as np

from inference.diagram import Diagram, build_diagram
from inference.errors import InputError
from inference.forward import ForwardPass, forward_pass
from inference.limits import COMPARE_TOP_K, SURPRISAL_TOP
from inference.model.vocab import pieces
from inference.positions import positional_scheme

from ..common import session, user_errors
from ..export import csv_file, json_file
from ..i18n import DEFAULT, language, t
from ..teaching import load_yaml
from .figures import (
    box_links, compare_figure, compare_summary, cosine_heatmap, cosine_summary, diagram_html, embedding_strip,
    embedding_strip_summary, explain_html, lens_figure, lens_summary, norms_heatmap, norms_summary, position_figure,
    position_summary, scheme_summary, surprisal_html, surprising_table_html, updates_figure, updates_summary,
)
from .exports import (
    LENS_HEADER, PAIR_HEADER, PROMPTS_HEADER, RESIDUAL_HEADER, SURPRISAL_HEADER, lens_csv_rows, pair_csv_rows,
    pass_json, prompts_csv_rows, residual_csv_rows, surprisal_csv_rows,
)


def box_texts(lang: str | None = None) -> dict:
    """What each box of the diagram does (HTML with {placeholders} for the model's numbers), shown on a click, in
    `lang` (default: the visitor's language; assets/lessons/<lang>/forward_boxes.yaml)."""
    return load_yaml("forward_boxes.yaml", lang or language())

# What run_forward returns, in order (build() lists the components in the same order).
RUN_OUTPUTS = ("state", "info", "flow", "explain", "strip", "strip_alt", "cosine", "cosine_alt", "positions", "rope",
               "rope_alt", "updates", "updates_alt", "norms", "norms_alt", "lens", "lens_alt", "surprisal",
               "surprising", "download_surprisal", "download_residual", "download_lens", "download_json")


# ---------------------------------------------------------------------------------------------------
# From the cached pass to views (no model call once the text was run)


def shown_pass(state: dict | None) -> ForwardPass:
    """The cached analysis the views show; a model switch since Run asks for a new Run."""
    if not state:
        raise InputError(t("forward.press_run"))
    s = session()
    if s.model_id != state["model"]:
        raise InputError(t("forward.model_changed", model=s.label))
    return forward_pass(s, state["text"], state["chat"])


def diagram_of(forward: ForwardPass) -> Diagram:
    """The data-flow diagram of a pass (read from the model's modules and the pass's recorded shapes)."""
    return build_diagram(session(), forward)


def _diagram_views(forward: ForwardPass, selected: str | None, lang: str = DEFAULT):
    """Diagram HTML and the explanation HTML (with a link to the tab that opens the picked box further)."""
    diagram = diagram_of(forward)
    box = diagram.find(selected) if selected else None
    link = box_links(diagram.boxes)[box.key] if box else None
    explain = explain_html(diagram, box, box_texts(lang), link, lang=lang)
    return diagram_html(diagram, box.key if box else None, lang=lang), explain


def _info(forward: ForwardPass, lang: str = DEFAULT) -> str:
    s = session()
    ppl = f"{forward.perplexity:,.2f}" if forward.perplexity is not None else t("forward.info_no_perplexity", lang)
    cells = [
        ("forward.info_token" if forward.n == 1 else "forward.info_tokens", f"{forward.n:,}"),
        ("forward.info_layers", f"{forward.num_layers}"),
        ("forward.info_parameters", f"{s.facts.num_parameters / 1e6:,.1f}M"),
        ("forward.info_perplexity", ppl),
        ("forward.info_seconds", f"{forward.seconds:.2f} s"),
    ]
    inner = "".join(f"<span><b>{v}</b> {t(k, lang)}</span>" for k, v in cells)
    check = f'<div class="lie-note">{t("forward.info_check", lang, difference=forward.head_check)}</div>'
    return f'<div class="lie-counts">{inner}</div>{check}'


def _embedding_views(forward: ForwardPass, lang: str = DEFAULT):
    """The embedding strip and the cosine heatmap, each followed by its one-line summary."""
    return (embedding_strip(forward, lang), embedding_strip_summary(forward, lang), cosine_heatmap(forward, lang),
            cosine_summary(forward, lang))


def _positions_markdown(lang: str = DEFAULT) -> str:
    s = session()
    scheme = positional_scheme(s)
    summary = scheme_summary(scheme, s.facts.head_dim, lang)
    if scheme.kind == "rope":
        waves = t("forward.list_separator", lang).join(
            t("forward.positions_wave", lang, fast=fast, slow=slow) if name == "all" else
            t("forward.positions_wave_layers", lang, layers=name.replace("_", " "), fast=fast, slow=slow)
            for name, (fast, slow) in scheme.wavelengths.items())
        return t("forward.positions_rope", lang, model=s.label, summary=summary, waves=waves,
                 context=scheme.context_length)
    if scheme.kind == "learned":
        return t("forward.positions_learned", lang, model=s.label, summary=summary)
    return t("forward.positions_none", lang, model=s.label, summary=summary)


def _position_plot(lang: str = DEFAULT):
    """The positions plot and its summary (none for a model whose positions have no curve to draw)."""
    scheme = positional_scheme(session())
    if not scheme.curves:
        return None, ""
    return position_figure(scheme, lang), position_summary(scheme, lang)


def _residual_views(forward: ForwardPass, lang: str = DEFAULT):
    """Updates bars, norms heatmap and logit lens, each followed by its one-line summary."""
    updates = (forward.stages[1:], forward.attn_update_norms, forward.mlp_update_norms, forward.layer_update_norms)
    return (
        updates_figure(*updates, skip_first=forward.n > 1, lang=lang),
        updates_summary(*updates, skip_first=forward.n > 1, lang=lang),
        norms_heatmap(forward, lang), norms_summary(forward, lang), lens_figure(forward, lang),
        lens_summary(forward, lang),
    )


def _surprisal_view(forward: ForwardPass, title: str, lang: str = DEFAULT) -> str:
    return surprisal_html(forward, pieces(session(), forward.expected_ids), title, lang)


def _downloads(forward: ForwardPass, text: str, chat: bool) -> tuple:
    """The run's files, as values for its download buttons (surprisal, residual norms, logit lens, whole pass).
    File names are fixed here."""
    s = session()
    return (
        gr.DownloadButton(value=csv_file("forward-surprisal", SURPRISAL_HEADER, surprisal_csv_rows(s, forward))),
        gr.DownloadButton(value=csv_file("forward-residual-norms", RESIDUAL_HEADER, residual_csv_rows(forward))),
        gr.DownloadButton(value=csv_file("forward-logit-lens", LENS_HEADER, lens_csv_rows(s, forward))),
        gr.DownloadButton(value=json_file("forward-pass", pass_json(s, forward, text, chat))),
    )


# ---------------------------------------------------------------------------------------------------
# Events


@user_errors
def run_forward(text: str, chat: bool, state: dict | None, box: str | None = None):
    """Run (one model pass, cached) and draw every view of the text; `box` is the picked box (from a click or a
    shared link), kept when it exists in this model's diagram."""
    s = session()
    chat = bool(chat) and s.has_chat_template  # a link may ask for chat on a model without a template
    forward = forward_pass(s, text, chat)
    selected = box if box is not None else (state or {}).get("selected")
    if selected and diagram_of(forward).find(selected) is None:
        selected = None
    state = {"model": s.model_id, "text": text, "chat": chat, "selected": selected}
    lang = language()
    diagram_view, explain = _diagram_views(forward, selected, lang)
    table = surprising_table_html(forward, pieces(s, forward.expected_ids), SURPRISAL_TOP, lang)
    return (state, _info(forward, lang), diagram_view, explain, *_embedding_views(forward, lang),
            _positions_markdown(lang), *_position_plot(lang), *_residual_views(forward, lang),
            _surprisal_view(forward, t("forward.your_text", lang), lang),
            table or f'<div class="lie-note">{t("forward.no_prediction", lang)}</div>',
            *_downloads(forward, text, chat))


@user_errors
def pick_box(state: dict, evt: gr.EventData):
    """A click on a box: explain it and offer its tab (no model call). The key also goes to the hidden field
    the shareable link reads."""
    forward = shown_pass(state)
    key = str((getattr(evt, "_data", None) or {}).get("key", ""))
    if diagram_of(forward).find(key) is None:
        raise InputError(t("forward.no_box", box=repr(key)))
    state = {**state, "selected": key}
    return (state, *_diagram_views(forward, key, language()), key)


@user_errors
def open_tab(state: dict):
    """The picked box's tab (Attention for attention boxes, Sampling for the logits)."""
    link = box_links(diagram_of(shown_pass(state)).boxes).get(state.get("selected") or "")
    if not link:
        raise InputError(t("forward.pick_box_first"))
    return gr.Tabs(selected=link)


@user_errors
def compare_texts(text_a: str, text_b: str):
    """Two texts' surprisal side by side (plain text, one cached pass each), and both as one CSV."""
    s = session()
    a, b = forward_pass(s, text_a, False), forward_pass(s, text_b, False)
    lang = language()
    view = (f'<div class="fw-pair">{_surprisal_view(a, t("forward.text_a", lang), lang)}'
            f'{_surprisal_view(b, t("forward.text_b", lang), lang)}</div>')
    return view, gr.DownloadButton(value=csv_file("forward-compare-texts", PAIR_HEADER, pair_csv_rows(s, a, b)))


def prompt_comparison(prompt_a: str, prompt_b: str) -> dict:
    """Two prompts' next-token probabilities over the union of each one's top COMPARE_TOP_K tokens, in the
    chart's order (most likely after either prompt first)."""
    s = session()
    a, b = forward_pass(s, prompt_a, False), forward_pass(s, prompt_b, False)
    ids = list(dict.fromkeys([*a.top_next(COMPARE_TOP_K)[0].tolist(), *b.top_next(COMPARE_TOP_K)[0].tolist()]))
    probs_a = np.exp(a.next_logprobs[ids].astype(np.float64))
    probs_b = np.exp(b.next_logprobs[ids].astype(np.float64))
    order = np.argsort(-np.maximum(probs_a, probs_b), kind="stable")
    ids = [int(ids[i]) for i in order]
    return {"ids": ids, "labels": pieces(s, ids), "probs_a": probs_a[order], "probs_b": probs_b[order],
            "top_a": pieces(s, [int(np.argmax(a.next_logprobs))])[0],
            "top_b": pieces(s, [int(np.argmax(b.next_logprobs))])[0]}


@user_errors
def compare_prompts(prompt_a: str, prompt_b: str):
    """Two prompts' next-token distributions on one chart (plain text, one cached pass each)."""
    c = prompt_comparison(prompt_a, prompt_b)
    lang = language()
    note = t("forward.prompts_note", lang, top_a=html.escape(c["top_a"]), p_a=c["probs_a"].max(),
             top_b=html.escape(c["top_b"]), p_b=c["probs_b"].max(), k=COMPARE_TOP_K)
    return (compare_figure(c["labels"], c["probs_a"], c["probs_b"], "A: " + prompt_a, "B: " + prompt_b, lang),
            compare_summary(c["labels"], c["probs_a"], c["probs_b"], lang), f'<div class="lie-note">{note}</div>',
            gr.DownloadButton(value=csv_file("forward-compare-prompts", PROMPTS_HEADER, prompts_csv_rows(c))))


def chat_label(has_template: bool, lang: str | None = None) -> str:
    """The chat checkbox's label: what it does, or that this model cannot do it."""
    return t("forward.chat" if has_template else "forward.chat_none", lang)


@user_errors
def on_model():
    """A new model: the chat checkbox only where the model has a chat template (a choice a link made stays
    where the model has one)."""
    if session().has_chat_template:
        return gr.update(interactive=True, label=chat_label(True))
    return gr.update(value=False, interactive=False, label=chat_label(False))
