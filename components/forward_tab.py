"""Forward pass tab: the path from token ids to logits drawn from the loaded model, its embeddings and
positions, the residual stream, surprisal and perplexity, and two prompts' next-token distributions.

One recorded model pass per text (cached in the session, `inference.forward.forward_pass`); clicking a box or
re-drawing only reads that cached analysis. The lesson (assets/lessons/forward.md) sits at the top; the view is
shareable as a link (text, chat, the picked box and the two comparisons) and every trace downloads as CSV/JSON.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path

import gradio as gr
import numpy as np

from inference.errors import InputError
from inference.forward import ForwardPass, anatomy, diagram, forward_pass, pieces, positional_scheme
from inference.limits import (
    COMPARE_TOP_K, FORWARD_EMBED_TOKENS, MAX_FORWARD_TOKENS, MAX_TEXT_CHARS, SURPRISAL_TOP,
)

from .common import MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session, user_errors
from .export import csv_file, json_file
from .figures.forward import (
    compare_figure, compare_summary, cosine_heatmap, cosine_summary, diagram_html, embedding_strip,
    embedding_strip_summary, explain_html, find_box, lens_figure, lens_summary, norms_heatmap, norms_summary,
    position_figure, position_summary, surprisal_html, surprisal_legend_html, surprising_table_html, updates_figure,
    updates_summary,
)
from .share import share_link
from .teaching import LessonPanel

TITLE = "Forward pass"
EXAMPLES = json.loads((Path(__file__).parent.parent / "assets" / "examples" / "forward.json").read_text())
DEFAULT_TEXT = EXAMPLES["texts"]["France"]
DEFAULT_PAIR = EXAMPLES["surprisal_pairs"]["Normal vs shuffled"]
DEFAULT_PROMPTS = EXAMPLES["prompt_pairs"]["Statement vs Q&A"]

# How to operate the tab and its limits; the teaching text is the lesson (assets/lessons/forward.md).
INTRO = (f"Type a text (at most {MAX_FORWARD_TOKENS:,} tokens) and press **Run**: the model runs **once** over it "
         "and every view below reads that one recorded pass. Click a box of the diagram to see what it does.")

DIAGRAM_CSS = """
.fw-diagram { font-size: .95rem; max-width: 760px; }
.fw-box, .fw-layers { border: 1px solid #999; border-radius: 8px; padding: 6px 10px; cursor: pointer; color: #111; }
.fw-box:hover, .fw-layers:hover, .fw-sub:hover { outline: 2px solid #d55e00; outline-offset: 1px; }
.fw-box.selected, .fw-layers.selected, .fw-sub.selected { outline: 3px solid #d55e00; outline-offset: 1px; }
.fw-layers { border: 2px dashed #555; background: #fafafa; padding: 8px 10px; }
.fw-layer-body { margin: 6px 0 2px 18px; }
.fw-head, .fw-layers-head { display: flex; justify-content: space-between; gap: 1rem; align-items: baseline; }
.fw-params { font-variant-numeric: tabular-nums; color: #333; white-space: nowrap; font-size: .88rem; }
.fw-module { font-family: var(--font-mono); font-size: .8rem; color: #444; }
.fw-detail { font-size: .88rem; color: #333; }
.fw-shape { font-family: var(--font-mono); font-size: .85rem; color: #000; }
.fw-arrow { text-align: left; padding-left: 1.5rem; color: #555; font-size: .95rem; line-height: 1.3; }
.fw-arrow span { font-family: var(--font-mono); font-size: .8rem; }
.fw-subs { margin-top: 4px; display: flex; flex-direction: column; gap: 2px; }
.fw-sub { display: grid; grid-template-columns: 15rem 1fr 4.5rem; gap: .5rem; border: 1px solid #bbb; border-radius: 5px;
          padding: 1px 6px; font-size: .85rem; cursor: pointer; }
.fw-sub .fw-params { text-align: right; }
.fw-sub-name { font-family: var(--font-mono); }
.fw-total { margin-top: .6rem; font-size: .9rem; }
"""
EXPLAIN_CSS = """
.fw-link { display: block; width: 100%; margin: .5rem 0; padding: .55rem 1rem; font-size: 1.05rem; font-weight: 600;
           border: 1px solid var(--button-secondary-border-color, #bbb); border-radius: 8px; cursor: pointer;
           background: var(--button-secondary-background-fill, #fff); color: var(--button-secondary-text-color, #111); }
.fw-link:hover { background: var(--button-secondary-background-fill-hover, #f0f0f0); }
.fw-explain h4 { margin: 0 0 .3rem 0; font-size: 1.1rem; }
.fw-explain p { font-size: 1rem; line-height: 1.45; }
.fw-facts { border-collapse: collapse; font-size: .9rem; margin-top: .4rem; }
.fw-facts th { text-align: left; padding: 1px 10px 1px 0; font-weight: 600; white-space: nowrap; vertical-align: top; }
.fw-facts td { font-family: var(--font-mono); font-size: .85rem; }
"""
SURPRISAL_CSS = """
.fw-surprisal h4 { margin: .2rem 0; }
.fw-ppl { font-size: 1rem; margin: .2rem 0 .4rem 0; }
.fw-tokens { line-height: 2.1; font-family: var(--font-mono); font-size: 1rem; white-space: pre-wrap; word-break: break-all; }
.fw-tok { padding: 2px 2px; margin: 0 1px; border-radius: 4px; border: 1px solid #ddd; cursor: help; }
.fw-tok.first { background: #eee; color: #666; border-style: dashed; }
.fw-legend { font-size: .9rem; margin: .3rem 0; line-height: 2; }
.fw-table { border-collapse: collapse; font-size: .9rem; margin-top: .4rem; }
.fw-table th, .fw-table td { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
.fw-pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2rem; }
"""
# A click on a box (or a step inside one) sends its key to Python as a custom event.
DIAGRAM_JS = """
const pick = (event) => {
  const box = event.target.closest('[data-key]');
  if (box) { event.stopPropagation(); trigger('pick_box', {key: box.dataset.key}); }
};
element.addEventListener('click', pick);
element.addEventListener('keydown', (event) => { if (event.key === 'Enter') pick(event); });
"""

# The link under an explanation asks Python for the tab (the tab id comes from the picked box, not the page).
EXPLAIN_JS = """
// Show the explanation beside the box it explains: a long diagram would leave it out of view at the top.
const holder = element.closest('.block') || element;
holder.style.flex = '0 0 auto';
const place = () => {
  const picked = document.querySelector('#fw-diagram .selected');
  const column = holder.parentElement;
  if (!picked || !column) { holder.style.marginTop = '0px'; return; }
  const offset = picked.getBoundingClientRect().top - column.getBoundingClientRect().top;
  const room = column.scrollHeight - holder.offsetHeight;
  holder.style.marginTop = Math.max(0, Math.min(offset, room)) + 'px';
};
watch('value', () => setTimeout(place, 60));  // after the diagram has re-drawn its selection too
element.addEventListener('click', (event) => {
  if (event.target.closest('.fw-link')) trigger('open_tab', {});
});
"""


# ---------------------------------------------------------------------------------------------------
# From the cached pass to views (no model call once the text was run)


def _pass(state: dict | None) -> ForwardPass:
    """The cached analysis the views show; a model switch since Run asks for a new Run."""
    if not state:
        raise InputError("Press Run to analyse a text first.")
    s = session()
    if s.model_id != state["model"]:
        raise InputError(f"The model is now {s.label}: press Run to analyse the text with it.")
    return forward_pass(s, state["text"], state["chat"])


def _boxes(forward: ForwardPass) -> list[dict]:
    return [dataclasses.asdict(box) for box in diagram(session(), forward)]


def _facts(forward: ForwardPass, boxes: list[dict]) -> dict:
    s = session()
    positions = positional_scheme(s)
    layer = find_box(boxes, "layers") or {}
    return {
        **dataclasses.asdict(s.facts), "n": forward.n, "tied": anatomy(s).tied,
        "positions_kind": positions.kind, "positions_summary": positions.summary,
        "mid_reader": forward.mid_reader,
        "first_child": (layer.get("children") or [{}])[0].get("module", "").rsplit(".", 1)[-1],
    }


def _diagram_views(forward: ForwardPass, selected: str | None):
    """Diagram HTML and the explanation HTML (with a link to the tab that opens the picked box further)."""
    boxes = _boxes(forward)
    box = find_box(boxes, selected) if selected else None
    explain = explain_html(box, _facts(forward, boxes))
    return diagram_html(boxes, box["key"] if box else None, session().facts.num_parameters), explain


def _info(forward: ForwardPass) -> str:
    s = session()
    ppl = f"{forward.perplexity:,.2f}" if forward.perplexity is not None else "— (one token)"
    cells = [
        ("token" if forward.n == 1 else "tokens", f"{forward.n:,}"),
        ("layers", f"{forward.num_layers}"),
        ("parameters", f"{s.facts.num_parameters / 1e6:,.1f}M"),
        ("perplexity", ppl),
        ("for the pass", f"{forward.seconds:.2f} s"),
    ]
    inner = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in cells)
    check = (f'<div class="lie-note">Check: the final norm and the LM head applied to the last layer\'s output give the '
             f"model's own logits (largest difference {forward.head_check:.1e}).</div>")
    return f'<div class="lie-counts">{inner}</div>{check}'


def _row_names(num_layers: int) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(num_layers)]


def _embedding_views(forward: ForwardPass):
    """The embedding strip and the cosine heatmap, each followed by its one-line summary."""
    k = len(forward.embeddings)
    view = forward.tokens
    return (embedding_strip(view.pieces, forward.embeddings, forward.n),
            embedding_strip_summary(view.pieces, forward.embeddings, forward.n),
            cosine_heatmap(view.pieces[:k], forward.embeddings),
            cosine_summary(view.pieces[:k], forward.embeddings))


def _positions_markdown() -> str:
    s = session()
    scheme = positional_scheme(s)
    if scheme.kind == "rope":
        waves = "; ".join(
            ("" if name == "all" else f"{name.replace('_', ' ')} layers: ")
            + f"the fastest pair of dimensions turns once every {fast:.1f} tokens, the slowest once every {slow:,.0f}"
            for name, (fast, slow) in scheme.wavelengths.items())
        return (f"**Positions in {s.label}: {scheme.summary}.** Nothing is added to the embeddings; instead every "
                f"attention layer rotates each query and key by its position (the rotary module's `inv_freq`: one speed "
                f"per pair of dimensions, θ^(−2i/d)). {waves}. Context length {scheme.context_length:,} tokens.")
    if scheme.kind == "learned":
        return f"**Positions in {s.label}: {scheme.summary}**, added to the token embeddings before the first layer."
    return f"**Positions in {s.label}:** {scheme.summary}."


def _position_plot():
    """The positions plot and its summary (none for a model whose positions have no curve to draw)."""
    scheme = positional_scheme(session())
    if not scheme.curves:
        return None, ""
    return (position_figure(scheme.kind, scheme.distances, scheme.curves),
            position_summary(scheme.kind, scheme.distances, scheme.curves))


def _residual_views(forward: ForwardPass):
    """Updates bars, norms heatmap and logit lens, each followed by its one-line summary."""
    s = session()
    names = [f"layer {i}" for i in range(forward.num_layers)]
    rows = _row_names(forward.num_layers)
    lens_pieces = pieces(s, forward.lens_top_ids)
    answer = pieces(s, [int(np.argmax(forward.next_logprobs))])[0]
    updates = (names, forward.attn_update_norms, forward.mlp_update_norms, forward.layer_update_norms)
    return (
        updates_figure(*updates, skip_first=forward.n > 1), updates_summary(*updates, skip_first=forward.n > 1),
        norms_heatmap(rows, forward.hidden_norms, forward.tokens.pieces),
        norms_summary(rows, forward.hidden_norms, forward.tokens.pieces),
        lens_figure(rows, forward.lens_answer_probs, lens_pieces, answer),
        lens_summary(rows, forward.lens_answer_probs, lens_pieces, answer),
    )


def surprisal_rows(forward: ForwardPass) -> dict:
    """Per token (None for the first, which nothing predicts): bits, p, the model's top guess there."""
    s = session()
    expected = pieces(s, forward.expected_ids)
    bits = [None] + [float(b) for b in forward.surprisal_bits]
    return {
        "bits": bits,
        "probs": [None] + [float(2.0 ** -b) for b in forward.surprisal_bits],
        "expected": [None] + expected,
        "expected_probs": [None] + [float(p) for p in forward.expected_probs],
        "entropy_bits": [None] + [float(e) for e in forward.entropy_bits],
    }


def _most_surprising(forward: ForwardPass, rows: dict) -> list[dict]:
    return [
        {"position": i, "token": forward.tokens.pieces[i], "id": forward.tokens.ids[i], "bits": rows["bits"][i],
         "prob": rows["probs"][i], "expected": rows["expected"][i], "expected_prob": rows["expected_probs"][i]}
        for i in forward.most_surprising(SURPRISAL_TOP)
    ]


def _surprisal_view(forward: ForwardPass, title: str) -> str:
    rows = surprisal_rows(forward)
    return surprisal_html(forward.tokens.pieces, rows["bits"], rows["probs"], rows["expected"], title,
                          forward.perplexity, forward.mean_bits)


# ---------------------------------------------------------------------------------------------------
# Downloads: every trace the tab shows, as CSV (tables) or JSON (the whole pass). File names are fixed here.

SURPRISAL_HEADER = ["position", "id", "token", "surprisal_bits", "probability", "top_prediction",
                    "top_prediction_id", "top_prediction_probability", "entropy_bits"]
RESIDUAL_HEADER = ["stage", "layer", "position", "id", "token", "residual_norm", "attention_update_norm",
                   "mlp_update_norm", "layer_update_norm"]
LENS_HEADER = ["stage", "layer", "top_guess", "top_guess_id", "final_answer", "final_answer_probability"]
PAIR_HEADER = ["text", *SURPRISAL_HEADER]
PROMPTS_HEADER = ["token", "id", "probability_after_a", "probability_after_b"]


def _blank(value):
    """None (the first token: not predicted) as an empty CSV cell."""
    return "" if value is None else value


def surprisal_csv_rows(forward: ForwardPass) -> list[list]:
    """One row per token: its id, surprisal and probability, and the model's top prediction at that position."""
    rows = surprisal_rows(forward)
    expected_ids = [None] + [int(i) for i in forward.expected_ids]
    return [[i, int(forward.tokens.ids[i]), forward.tokens.pieces[i], _blank(rows["bits"][i]), _blank(rows["probs"][i]),
             _blank(rows["expected"][i]), _blank(expected_ids[i]), _blank(rows["expected_probs"][i]),
             _blank(rows["entropy_bits"][i])] for i in range(forward.n)]


def residual_csv_rows(forward: ForwardPass) -> list[list]:
    """One row per stage (embeddings, then the stream after each layer) and token: the stream's norm and the
    norms of what that layer's attention and MLP added (hidden_norms row l+1 is the stream after layer l)."""
    out, ids, toks = [], forward.tokens.ids, forward.tokens.pieces
    # Rounded to 4 decimals (as the endpoint): short numbers keep a 1,024-token file quick to write.
    stream = _floats(forward.hidden_norms, 4)  # [L+1][n]
    updates = [_floats(u, 4) for u in (forward.attn_update_norms, forward.mlp_update_norms, forward.layer_update_norms)]
    for stage, name in enumerate(_row_names(forward.num_layers)):
        layer = stage - 1  # -1: the embeddings, before any layer
        for t in range(forward.n):
            added = ["" if u is None or layer < 0 else u[layer][t] for u in updates]
            out.append([name, "" if layer < 0 else layer, t, int(ids[t]), toks[t], stream[stage][t], *added])
    return out


def lens_csv_rows(forward: ForwardPass) -> list[list]:
    s = session()
    answer_id = int(np.argmax(forward.next_logprobs))
    answer = pieces(s, [answer_id])[0]
    tops = pieces(s, forward.lens_top_ids)
    return [[name, "" if stage == 0 else stage - 1, tops[stage], int(forward.lens_top_ids[stage]), answer,
             float(forward.lens_answer_probs[stage])] for stage, name in enumerate(_row_names(forward.num_layers))]


def _floats(a, decimals: int = 5):
    """An array as nested lists of rounded floats (None stays None)."""
    return None if a is None else np.round(np.asarray(a, dtype=np.float64), decimals).tolist()


def forward_data(forward: ForwardPass) -> dict:
    """The pass as JSON-ready data: tokens, diagram, positions, residual norms, logit lens, next tokens."""
    s = session()
    boxes = _boxes(forward)
    scheme = positional_scheme(s)
    top_ids, top_probs = forward.top_next(10)
    rnd = lambda a: None if a is None else np.round(a.astype(np.float64), 4).tolist()  # noqa: E731
    return {
        "model": s.model_id,
        "tokens": list(forward.tokens.pieces),
        "ids": list(forward.tokens.ids),
        "num_tokens": forward.n,
        "num_layers": forward.num_layers,
        "num_parameters": s.facts.num_parameters,
        "diagram_parameters": sum(b["params"] for b in boxes),
        "diagram": boxes,
        "positions": {"kind": scheme.kind, "summary": scheme.summary, "thetas": scheme.thetas,
                      "context_length": scheme.context_length},
        "layer_names": _row_names(forward.num_layers),
        "hidden_norms": rnd(forward.hidden_norms),
        "attn_update_norms": rnd(forward.attn_update_norms),
        "mlp_update_norms": rnd(forward.mlp_update_norms),
        "logit_lens": {
            "position": forward.n - 1,
            "top_tokens": pieces(s, forward.lens_top_ids),
            "final_token_probs": rnd(forward.lens_answer_probs),
        },
        "next_token": [{"token": p, "id": int(i), "prob": round(float(q), 6)}
                       for p, i, q in zip(pieces(s, top_ids), top_ids, top_probs)],
        "head_check": forward.head_check,
        "seconds": round(forward.seconds, 4),
        "max_tokens": MAX_FORWARD_TOKENS,
    }


def surprisal_data(forward: ForwardPass) -> dict:
    """Per-token surprisal as JSON-ready data (null for the first token), with the perplexity."""
    rows = surprisal_rows(forward)
    return {
        "tokens": list(forward.tokens.pieces),
        "ids": list(forward.tokens.ids),
        "surprisal_bits": [None if b is None else round(b, 5) for b in rows["bits"]],
        "probs": [None if p is None else round(p, 8) for p in rows["probs"]],
        "expected": rows["expected"],
        "entropy_bits": [None if e is None else round(e, 5) for e in rows["entropy_bits"]],
        "num_predicted": forward.num_predicted,
        "mean_bits": None if forward.mean_bits is None else round(forward.mean_bits, 6),
        "perplexity": None if forward.perplexity is None else round(forward.perplexity, 6),
        "most_surprising": _most_surprising(forward, rows),
    }


def pass_json(forward: ForwardPass, text: str, chat: bool) -> dict:
    """Everything the tab draws for one text: the pass, its surprisal, the embeddings drawn and the positions plot."""
    unit = forward.embeddings / np.maximum(np.linalg.norm(forward.embeddings, axis=-1, keepdims=True), 1e-12)
    scheme = positional_scheme(session())
    k = len(forward.embeddings)
    return {
        "text": text, "chat": chat, **forward_data(forward),
        "surprisal": surprisal_data(forward),
        "embeddings": {"tokens": forward.tokens.pieces[:k], "vectors": _floats(forward.embeddings),
                       "cosine": _floats(unit @ unit.T)},
        "position_curves": {"kind": scheme.kind, "distances": [int(d) for d in scheme.distances],
                            "curves": {name: dict(zip(("mean", "min", "max"), _floats(c)))
                                       for name, c in scheme.curves.items()}},
    }


def _downloads(forward: ForwardPass, text: str, chat: bool) -> tuple:
    """The run's files, as values for its download buttons (surprisal, residual norms, logit lens, whole pass)."""
    return (
        gr.DownloadButton(value=csv_file("forward-surprisal", SURPRISAL_HEADER, surprisal_csv_rows(forward))),
        gr.DownloadButton(value=csv_file("forward-residual-norms", RESIDUAL_HEADER, residual_csv_rows(forward))),
        gr.DownloadButton(value=csv_file("forward-logit-lens", LENS_HEADER, lens_csv_rows(forward))),
        gr.DownloadButton(value=json_file("forward-pass", pass_json(forward, text, chat))),
    )


# ---------------------------------------------------------------------------------------------------
# Events

# What run_forward returns, in order (build() lists the components in the same order).
RUN_OUTPUTS = ("state", "info", "flow", "explain", "strip", "strip_alt", "cosine", "cosine_alt", "positions", "rope",
               "rope_alt", "updates", "updates_alt", "norms", "norms_alt", "lens", "lens_alt", "surprisal",
               "surprising", "download_surprisal", "download_residual", "download_lens", "download_json")


@user_errors
def run_forward(text: str, chat: bool, state: dict | None, box: str | None = None):
    """Run (one model pass, cached) and draw every view of the text; `box` is the picked box (from a click or a
    shared link), kept when it exists in this model's diagram."""
    s = session()
    chat = bool(chat) and s.has_chat_template  # a link may ask for chat on a model without a template
    forward = forward_pass(s, text, chat)
    selected = box if box is not None else (state or {}).get("selected")
    if selected and find_box(_boxes(forward), selected) is None:
        selected = None
    state = {"model": s.model_id, "text": text, "chat": chat, "selected": selected}
    diagram_view, explain = _diagram_views(forward, selected)
    table = surprising_table_html(_most_surprising(forward, surprisal_rows(forward)))
    return (state, _info(forward), diagram_view, explain, *_embedding_views(forward), _positions_markdown(),
            *_position_plot(), *_residual_views(forward), _surprisal_view(forward, "Your text"),
            table or '<div class="lie-note">No token is predicted in a one-token text.</div>',
            *_downloads(forward, text, chat))


@user_errors
def pick_box(state: dict, evt: gr.EventData):
    """A click on a box: explain it and offer its tab (no model call). The key also goes to the hidden field
    the shareable link reads."""
    forward = _pass(state)
    key = str((getattr(evt, "_data", None) or {}).get("key", ""))
    if find_box(_boxes(forward), key) is None:
        raise InputError(f"There is no box {key!r} in this diagram.")
    state = {**state, "selected": key}
    return (state, *_diagram_views(forward, key), key)


@user_errors
def open_tab(state: dict):
    """The picked box's tab (Attention for attention boxes, Sampling for the logits)."""
    forward = _pass(state)
    box = find_box(_boxes(forward), state.get("selected") or "")
    if not box or not box.get("link"):
        raise InputError("Pick a box that belongs to another tab first.")
    return gr.Tabs(selected=box["link"])


@user_errors
def compare_texts(text_a: str, text_b: str):
    """Two texts' surprisal side by side (plain text, one cached pass each), and both as one CSV."""
    s = session()
    a, b = forward_pass(s, text_a, False), forward_pass(s, text_b, False)
    view = f'<div class="fw-pair">{_surprisal_view(a, "Text A")}{_surprisal_view(b, "Text B")}</div>'
    rows = [["A", *r] for r in surprisal_csv_rows(a)] + [["B", *r] for r in surprisal_csv_rows(b)]
    return view, gr.DownloadButton(value=csv_file("forward-compare-texts", PAIR_HEADER, rows))


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
    note = (f'<div class="lie-note">Top token after A: <b>{html.escape(c["top_a"])}</b> ({c["probs_a"].max():.0%}) · '
            f'after B: <b>{html.escape(c["top_b"])}</b> ({c["probs_b"].max():.0%}). Each bar group is one token; both '
            f"prompts' top {COMPARE_TOP_K} are shown.</div>")
    rows = [[label, i, float(pa), float(pb)] for label, i, pa, pb in zip(c["labels"], c["ids"], c["probs_a"], c["probs_b"])]
    return (compare_figure(c["labels"], c["probs_a"], c["probs_b"], "A: " + prompt_a, "B: " + prompt_b),
            compare_summary(c["labels"], c["probs_a"], c["probs_b"]), note,
            gr.DownloadButton(value=csv_file("forward-compare-prompts", PROMPTS_HEADER, rows)))


@user_errors
def on_model():
    """A new model: the chat checkbox only where the model has a chat template (a choice a link made stays
    where the model has one)."""
    if session().has_chat_template:
        return gr.update(interactive=True, label="as chat (apply the chat template)")
    return gr.update(value=False, interactive=False, label="as chat (this model has no chat template)")


@user_errors
def forward_pass_api(text: str, chat: bool = False) -> dict:
    """One forward pass over a text (chat=True wraps it in the chat template), as data.

    Returns the tokens, the data-flow diagram (every box with its module, weight shapes, parameter count and the
    activation shapes of this pass; boxes sum to the model's parameter count), the positional scheme, per-layer
    norms of the residual stream and of each attention and MLP update (rows = layers, columns = tokens), the
    logit lens at the last token and the top next tokens."""
    return forward_data(forward_pass(session(), text, chat))


@user_errors
def surprisal_api(text: str, chat: bool = False) -> dict:
    """Per-token surprisal of a text: -log2 p(token | the tokens before it), in bits, and the perplexity.

    The first token has no surprisal (null): nothing comes before it. Perplexity = 2 ** (mean bits) = exp(mean
    negative log-likelihood), as exp(loss) of model(ids, labels=ids). A one-token text has none: an error says so."""
    s = session()
    forward = forward_pass(s, text, chat)
    if forward.num_predicted == 0:
        raise InputError("The text is a single token: perplexity needs at least two tokens (one to predict from, one "
                         "to predict). Type a longer text.")
    return {"model": s.model_id, **surprisal_data(forward), "max_tokens": MAX_FORWARD_TOKENS}


def _download(label: str, elem_id: str) -> gr.DownloadButton:
    return gr.DownloadButton(label, size="sm", elem_id=elem_id, scale=0, min_width=330)


def _alt(elem_id: str) -> gr.Markdown:
    """The one-line text alternative under a figure."""
    return gr.Markdown(elem_id=elem_id, elem_classes=["lie-alt"])


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "forward")
    gr.Markdown(INTRO)
    state = gr.State(None, time_to_live=STATE_TTL_S)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label=f"Text (at most {MAX_FORWARD_TOKENS:,} tokens)", lines=2, value=DEFAULT_TEXT,
                              max_length=MAX_TEXT_CHARS, elem_id="fw-text")
        with gr.Column(scale=1, min_width=220):
            chat = gr.Checkbox(label="as chat (apply the chat template)", value=False, elem_id="fw-chat")
            run = gr.Button("Run", variant="primary", elem_id="fw-run")
    # The picked box (set by a click or a shared link), so the link can carry it; never shown.
    box = gr.Textbox(value="", visible=False, elem_id="fw-box")
    examples = gr.Examples(examples=[[t] for t in EXAMPLES["texts"].values()], example_labels=list(EXAMPLES["texts"]),
                           inputs=[text], label="Examples", api_visibility="private", api_name="forward_example")
    info = gr.HTML(elem_id="fw-info")
    # Comparison fields are made further down; the link needs them now (its row sits here, under the text).
    text_a = gr.Textbox(label="Text A", value=DEFAULT_PAIR[0], lines=2, max_length=MAX_TEXT_CHARS, elem_id="fw-text-a",
                        render=False)
    text_b = gr.Textbox(label="Text B", value=DEFAULT_PAIR[1], lines=2, max_length=MAX_TEXT_CHARS, elem_id="fw-text-b",
                        render=False)
    prompt_a = gr.Textbox(label="Prompt A", value=DEFAULT_PROMPTS[0], lines=2, max_length=MAX_TEXT_CHARS,
                          elem_id="fw-prompt-a", render=False)
    prompt_b = gr.Textbox(label="Prompt B", value=DEFAULT_PROMPTS[1], lines=2, max_length=MAX_TEXT_CHARS,
                          elem_id="fw-prompt-b", render=False)
    fields = {"text": text, "chat": chat, "box": box, "text_a": text_a, "text_b": text_b, "prompt_a": prompt_a,
              "prompt_b": prompt_b}
    loaded = share_link(demo, "forward", fields)
    with gr.Row(elem_classes=["lie-advanced"]):
        download_json = _download("⬇ The whole pass as JSON", "fw-download-json")

    gr.Markdown("### The path of one forward pass\nEvery box is a module of the loaded model, with the shapes of "
                "this pass and its parameter count. **Click a box** to see what it does.")
    with gr.Row(equal_height=True):  # the explanation's column spans the diagram, so it can stay in view
        with gr.Column(scale=3):
            flow = gr.HTML(elem_id="fw-diagram", css_template=DIAGRAM_CSS, js_on_load=DIAGRAM_JS)
        with gr.Column(scale=2, min_width=360):
            explain = gr.HTML(elem_id="fw-explain", css_template=EXPLAIN_CSS, js_on_load=EXPLAIN_JS)

    with gr.Column(elem_classes=["lie-advanced"], elem_id="fw-embeddings-section"):
        gr.Markdown(f"### Embeddings and positions\nThe embedding lookup gives each token a vector (first "
                    f"{FORWARD_EMBED_TOKENS} tokens drawn). Similar tokens point in similar directions.")
        with gr.Row():
            with gr.Column():
                strip = gr.Plot(show_label=False, elem_id="fw-embed")
                strip_alt = _alt("fw-embed-summary")
            with gr.Column():
                cosine = gr.Plot(show_label=False, elem_id="fw-cosine")
                cosine_alt = _alt("fw-cosine-summary")
        positions = gr.Markdown(elem_id="fw-positions")
        rope = gr.Plot(show_label=False, elem_id="fw-rope")
        rope_alt = _alt("fw-rope-summary")

    gr.Markdown("### Residual stream\nEach layer adds an attention update and an MLP update to the stream. The bars "
                "show which layers change it most; the lens shows when the final answer appears.")
    updates = gr.Plot(show_label=False, elem_id="fw-updates")
    updates_alt = _alt("fw-updates-summary")
    with gr.Row():
        with gr.Column(elem_classes=["lie-advanced"]):
            norms = gr.Plot(show_label=False, elem_id="fw-norms")
            norms_alt = _alt("fw-norms-summary")
        with gr.Column():
            lens = gr.Plot(show_label=False, elem_id="fw-lens")
            lens_alt = _alt("fw-lens-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        download_residual = _download("⬇ Residual-stream norms per layer as CSV", "fw-download-residual")
        download_lens = _download("⬇ Logit lens as CSV", "fw-download-lens")

    gr.Markdown("### Surprisal and perplexity\nHow surprised the model is by each token, given the ones before it. "
                "**Perplexity** = 2^(mean surprisal). Hover a token for its probability and the model's top guess.")
    gr.HTML(surprisal_legend_html(), css_template=SURPRISAL_CSS)
    surprisal = gr.HTML(elem_id="fw-surprisal", css_template=SURPRISAL_CSS)
    with gr.Accordion(f"The {SURPRISAL_TOP} most surprising tokens", open=True):
        surprising = gr.HTML(elem_id="fw-surprising", css_template=SURPRISAL_CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        download_surprisal = _download("⬇ Surprisal per token as CSV", "fw-download-surprisal")
    gr.Markdown("#### Compare two texts (plain text, no chat template)")
    with gr.Row():
        text_a.render()
        text_b.render()
    with gr.Row():
        pair_examples = gr.Examples(examples=list(EXAMPLES["surprisal_pairs"].values()),
                                    example_labels=list(EXAMPLES["surprisal_pairs"]), inputs=[text_a, text_b],
                                    label="Pairs", api_visibility="private", api_name="forward_pair_example")
        compare = gr.Button("Compare texts", elem_id="fw-compare", scale=0, min_width=180)
    pair = gr.HTML(elem_id="fw-pair", css_template=SURPRISAL_CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        download_pair = _download("⬇ Both texts' surprisal as CSV", "fw-download-pair")

    gr.Markdown("### Prompt comparison\nTwo wordings of the same question, and what the model expects next after "
                "each (plain text, no chat template).")
    with gr.Row():
        prompt_a.render()
        prompt_b.render()
    with gr.Row():
        prompt_examples = gr.Examples(examples=list(EXAMPLES["prompt_pairs"].values()),
                                      example_labels=list(EXAMPLES["prompt_pairs"]), inputs=[prompt_a, prompt_b],
                                      label="Prompt pairs", api_visibility="private", api_name="forward_prompt_example")
        compare_p = gr.Button("Compare prompts", elem_id="fw-compare-prompts", scale=0, min_width=180)
    prompt_chart = gr.Plot(show_label=False, elem_id="fw-prompt-chart")
    prompt_alt = _alt("fw-prompt-chart-summary")
    prompt_note = gr.HTML(elem_id="fw-prompt-note")
    with gr.Row(elem_classes=["lie-advanced"]):
        download_prompts = _download("⬇ Both prompts' next-token probabilities as CSV", "fw-download-prompts")

    components = dict(state=state, info=info, flow=flow, explain=explain, strip=strip, strip_alt=strip_alt,
                      cosine=cosine, cosine_alt=cosine_alt, positions=positions, rope=rope, rope_alt=rope_alt,
                      updates=updates, updates_alt=updates_alt, norms=norms, norms_alt=norms_alt, lens=lens,
                      lens_alt=lens_alt, surprisal=surprisal, surprising=surprising,
                      download_surprisal=download_surprisal, download_residual=download_residual,
                      download_lens=download_lens, download_json=download_json)
    run_outputs = [components[name] for name in RUN_OUTPUTS]
    model_events = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    main = dict(fn=run_forward, inputs=[text, chat, state, box], outputs=run_outputs, **model_events)
    pair_run = dict(fn=compare_texts, inputs=[text_a, text_b], outputs=[pair, download_pair], **model_events)
    prompts_run = dict(fn=compare_prompts, inputs=[prompt_a, prompt_b],
                       outputs=[prompt_chart, prompt_alt, prompt_note, download_prompts], **model_events)

    def run_all(event):
        """The whole view after `event`: the text first (it is at the top), then the two comparisons."""
        return event.then(**main).then(**pair_run).then(**prompts_run)

    demo.load(on_model, None, chat, api_visibility="private", queue=False)
    run_all(loaded)  # the first view, with a shared link's values if there are any
    run_all(model_changed(demo)(on_model, None, chat, api_visibility="private", queue=False))
    for event in lesson.connect(fields):  # a "try this" sets the fields, then everything redraws (cached passes)
        run_all(event)
    gr.on([run.click, text.submit, chat.input], trigger_mode="always_last", **main)
    examples.load_input_event.then(**main)
    gr.on([compare.click, text_a.submit, text_b.submit], trigger_mode="always_last", **pair_run)
    pair_examples.load_input_event.then(**pair_run)
    gr.on([compare_p.click, prompt_a.submit, prompt_b.submit], trigger_mode="always_last", **prompts_run)
    prompt_examples.load_input_event.then(**prompts_run)
    flow.pick_box(pick_box, [state], [state, flow, explain, box], api_visibility="private", show_progress="hidden")
    tabs = getattr(demo, "tabs", None)
    if tabs is not None:  # app.py hands over its gr.Tabs so the explanation's link can switch tab
        explain.open_tab(open_tab, [state], tabs, api_visibility="private", show_progress="hidden")
    gr.api(forward_pass_api, api_name="forward_pass", concurrency_id=MODEL_CONCURRENCY)
    gr.api(surprisal_api, api_name="surprisal", concurrency_id=MODEL_CONCURRENCY)
