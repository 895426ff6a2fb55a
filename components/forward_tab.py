"""Forward pass tab: the path from token ids to logits drawn from the loaded model, its embeddings and
positions, the residual stream, surprisal and perplexity, and two prompts' next-token distributions.

One recorded model pass per text (cached in the session, `inference.forward.forward_pass`); clicking a box or
re-drawing only reads that cached analysis.
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
from .figures.forward import (
    compare_figure, cosine_heatmap, diagram_html, embedding_strip, explain_html, find_box, lens_figure,
    norms_heatmap, position_figure, surprisal_html, surprisal_legend_html, surprising_table_html, updates_figure,
)

TITLE = "Forward pass"
EXAMPLES = json.loads((Path(__file__).parent.parent / "assets" / "examples" / "forward.json").read_text())
DEFAULT_TEXT = EXAMPLES["texts"]["France"]
DEFAULT_PAIR = EXAMPLES["surprisal_pairs"]["Normal vs shuffled"]
DEFAULT_PROMPTS = EXAMPLES["prompt_pairs"]["Statement vs Q&A"]

INTRO = f"""
What happens between the token ids and the next-token probabilities, drawn from the **loaded model's own
modules** with the real sizes and the values of **your text**. Each text runs through the model **once**
(at most {MAX_FORWARD_TOKENS:,} tokens); every view below reads that one recorded pass.
"""

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
        ("one pass in", f"{forward.seconds:.2f} s"),
    ]
    inner = "".join(f"<span><b>{v}</b> {k}</span>" for k, v in cells)
    check = (f'<div class="lie-note">Check: the final norm and the LM head applied to the last layer\'s output give the '
             f"model's own logits (largest difference {forward.head_check:.1e}).</div>")
    return f'<div class="lie-counts">{inner}</div>{check}'


def _row_names(num_layers: int) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(num_layers)]


def _embedding_views(forward: ForwardPass):
    k = len(forward.embeddings)
    view = forward.tokens
    return (embedding_strip(view.pieces, forward.embeddings, forward.n),
            cosine_heatmap(view.pieces[:k], forward.embeddings))


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
    scheme = positional_scheme(session())
    return position_figure(scheme.kind, scheme.distances, scheme.curves) if scheme.curves else None


def _residual_views(forward: ForwardPass):
    s = session()
    names = [f"layer {i}" for i in range(forward.num_layers)]
    lens_pieces = pieces(s, forward.lens_top_ids)
    answer = pieces(s, [int(np.argmax(forward.next_logprobs))])[0]
    return (
        updates_figure(names, forward.attn_update_norms, forward.mlp_update_norms, forward.layer_update_norms,
                       skip_first=forward.n > 1),
        norms_heatmap(_row_names(forward.num_layers), forward.hidden_norms, forward.tokens.pieces),
        lens_figure(_row_names(forward.num_layers), forward.lens_answer_probs, lens_pieces, answer),
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
# Events


@user_errors
def run_forward(text: str, chat: bool, state: dict | None):
    """Run (one model pass, cached) and draw every view of the text."""
    s = session()
    forward = forward_pass(s, text, chat)
    selected = (state or {}).get("selected")
    state = {"model": s.model_id, "text": text, "chat": bool(chat), "selected": selected}
    diagram_view, explain = _diagram_views(forward, selected)
    table = surprising_table_html(_most_surprising(forward, surprisal_rows(forward)))
    return (state, _info(forward), diagram_view, explain, *_embedding_views(forward), _positions_markdown(),
            _position_plot(), *_residual_views(forward), _surprisal_view(forward, "Your text"),
            table or '<div class="lie-note">No token is predicted in a one-token text.</div>')


@user_errors
def pick_box(state: dict, evt: gr.EventData):
    """A click on a box: explain it and offer its tab (no model call)."""
    forward = _pass(state)
    key = str((getattr(evt, "_data", None) or {}).get("key", ""))
    if find_box(_boxes(forward), key) is None:
        raise InputError(f"There is no box {key!r} in this diagram.")
    state = {**state, "selected": key}
    return (state, *_diagram_views(forward, key))


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
    """Two texts' surprisal side by side (plain text, one cached pass each)."""
    s = session()
    a, b = forward_pass(s, text_a, False), forward_pass(s, text_b, False)
    return f'<div class="fw-pair">{_surprisal_view(a, "Text A")}{_surprisal_view(b, "Text B")}</div>'


@user_errors
def compare_prompts(prompt_a: str, prompt_b: str):
    """Two prompts' next-token distributions on one chart (plain text, one cached pass each)."""
    s = session()
    a, b = forward_pass(s, prompt_a, False), forward_pass(s, prompt_b, False)
    ids = list(dict.fromkeys([*a.top_next(COMPARE_TOP_K)[0].tolist(), *b.top_next(COMPARE_TOP_K)[0].tolist()]))
    probs_a = np.exp(a.next_logprobs[ids].astype(np.float64))
    probs_b = np.exp(b.next_logprobs[ids].astype(np.float64))
    order = np.argsort(-np.maximum(probs_a, probs_b), kind="stable")
    labels = pieces(s, [ids[i] for i in order])
    top_a, top_b = pieces(s, [int(np.argmax(a.next_logprobs))])[0], pieces(s, [int(np.argmax(b.next_logprobs))])[0]
    note = (f'<div class="lie-note">Top token after A: <b>{html.escape(top_a)}</b> ({probs_a.max():.0%}) · after B: '
            f"<b>{html.escape(top_b)}</b> ({probs_b.max():.0%}). Each bar group is one token; both prompts' "
            f"top {COMPARE_TOP_K} are shown.</div>")
    return compare_figure(labels, probs_a[order], probs_b[order], "A: " + prompt_a, "B: " + prompt_b), note


@user_errors
def on_model():
    """A new model: the chat checkbox only where the model has a chat template."""
    has_chat = session().has_chat_template
    return gr.update(value=False, interactive=has_chat,
                     label="as chat (apply the chat template)" if has_chat else "as chat (this model has no chat template)")


@user_errors
def forward_pass_api(text: str, chat: bool = False) -> dict:
    """One forward pass over a text (chat=True wraps it in the chat template), as data.

    Returns the tokens, the data-flow diagram (every box with its module, weight shapes, parameter count and the
    activation shapes of this pass; boxes sum to the model's parameter count), the positional scheme, per-layer
    norms of the residual stream and of each attention and MLP update (rows = layers, columns = tokens), the
    logit lens at the last token and the top next tokens."""
    s = session()
    forward = forward_pass(s, text, chat)
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
    rows = surprisal_rows(forward)
    return {
        "model": s.model_id,
        "tokens": list(forward.tokens.pieces),
        "ids": list(forward.tokens.ids),
        "surprisal_bits": [None if b is None else round(b, 5) for b in rows["bits"]],
        "probs": [None if p is None else round(p, 8) for p in rows["probs"]],
        "expected": rows["expected"],
        "entropy_bits": [None if e is None else round(e, 5) for e in rows["entropy_bits"]],
        "num_predicted": forward.num_predicted,
        "mean_bits": round(forward.mean_bits, 6),
        "perplexity": round(forward.perplexity, 6),
        "most_surprising": _most_surprising(forward, rows),
        "max_tokens": MAX_FORWARD_TOKENS,
    }


def build(demo: gr.Blocks) -> None:
    gr.Markdown(INTRO)
    state = gr.State(None, time_to_live=STATE_TTL_S)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label=f"Text (at most {MAX_FORWARD_TOKENS:,} tokens)", lines=2, value=DEFAULT_TEXT,
                              max_length=MAX_TEXT_CHARS, elem_id="fw-text")
        with gr.Column(scale=1, min_width=220):
            chat = gr.Checkbox(label="as chat (apply the chat template)", value=False, elem_id="fw-chat")
            run = gr.Button("Run", variant="primary", elem_id="fw-run")
    examples = gr.Examples(examples=[[t] for t in EXAMPLES["texts"].values()], example_labels=list(EXAMPLES["texts"]),
                           inputs=[text], label="Examples", api_visibility="private", api_name="forward_example")
    info = gr.HTML(elem_id="fw-info")

    gr.Markdown("### The path of one forward pass\nEvery box is a module of the loaded model, with the shapes of "
                "this pass and its parameter count. **Click a box** to see what it does.")
    with gr.Row(equal_height=True):  # the explanation's column spans the diagram, so it can stay in view
        with gr.Column(scale=3):
            flow = gr.HTML(elem_id="fw-diagram", css_template=DIAGRAM_CSS, js_on_load=DIAGRAM_JS)
        with gr.Column(scale=2, min_width=360):
            explain = gr.HTML(elem_id="fw-explain", css_template=EXPLAIN_CSS, js_on_load=EXPLAIN_JS)

    gr.Markdown(f"### Embeddings and positions\nThe embedding lookup gives each token a vector (first "
                f"{FORWARD_EMBED_TOKENS} tokens drawn). Similar tokens point in similar directions.")
    with gr.Row():
        strip = gr.Plot(show_label=False, elem_id="fw-embed")
        cosine = gr.Plot(show_label=False, elem_id="fw-cosine")
    positions = gr.Markdown(elem_id="fw-positions")
    rope = gr.Plot(show_label=False, elem_id="fw-rope")

    gr.Markdown("### Residual stream\nEach layer adds an attention update and an MLP update to the stream. The bars "
                "show which layers change it most; the lens shows when the final answer appears.")
    updates = gr.Plot(show_label=False, elem_id="fw-updates")
    with gr.Row():
        norms = gr.Plot(show_label=False, elem_id="fw-norms")
        lens = gr.Plot(show_label=False, elem_id="fw-lens")

    gr.Markdown("### Surprisal and perplexity\nHow surprised the model is by each token, given the ones before it. "
                "**Perplexity** = 2^(mean surprisal): the number of equally likely choices the model was, on "
                "average, torn between. Hover a token for its probability and the model's top guess.")
    gr.HTML(surprisal_legend_html(), css_template=SURPRISAL_CSS)
    surprisal = gr.HTML(elem_id="fw-surprisal", css_template=SURPRISAL_CSS)
    with gr.Accordion(f"The {SURPRISAL_TOP} most surprising tokens", open=True):
        surprising = gr.HTML(elem_id="fw-surprising", css_template=SURPRISAL_CSS)
    gr.Markdown("#### Compare two texts (plain text, no chat template)")
    with gr.Row():
        text_a = gr.Textbox(label="Text A", value=DEFAULT_PAIR[0], lines=2, max_length=MAX_TEXT_CHARS, elem_id="fw-text-a")
        text_b = gr.Textbox(label="Text B", value=DEFAULT_PAIR[1], lines=2, max_length=MAX_TEXT_CHARS, elem_id="fw-text-b")
    with gr.Row():
        pair_examples = gr.Examples(examples=list(EXAMPLES["surprisal_pairs"].values()),
                                    example_labels=list(EXAMPLES["surprisal_pairs"]), inputs=[text_a, text_b],
                                    label="Pairs", api_visibility="private", api_name="forward_pair_example")
        compare = gr.Button("Compare texts", elem_id="fw-compare", scale=0, min_width=180)
    pair = gr.HTML(elem_id="fw-pair", css_template=SURPRISAL_CSS)

    gr.Markdown("### Prompt comparison\nTwo wordings of the same question, and what the model expects next after "
                "each (plain text, no chat template).")
    with gr.Row():
        prompt_a = gr.Textbox(label="Prompt A", value=DEFAULT_PROMPTS[0], lines=2, max_length=MAX_TEXT_CHARS,
                              elem_id="fw-prompt-a")
        prompt_b = gr.Textbox(label="Prompt B", value=DEFAULT_PROMPTS[1], lines=2, max_length=MAX_TEXT_CHARS,
                              elem_id="fw-prompt-b")
    with gr.Row():
        prompt_examples = gr.Examples(examples=list(EXAMPLES["prompt_pairs"].values()),
                                      example_labels=list(EXAMPLES["prompt_pairs"]), inputs=[prompt_a, prompt_b],
                                      label="Prompt pairs", api_visibility="private", api_name="forward_prompt_example")
        compare_p = gr.Button("Compare prompts", elem_id="fw-compare-prompts", scale=0, min_width=180)
    prompt_chart = gr.Plot(show_label=False, elem_id="fw-prompt-chart")
    prompt_note = gr.HTML(elem_id="fw-prompt-note")

    run_outputs = [state, info, flow, explain, strip, cosine, positions, rope, updates, norms, lens,
                   surprisal, surprising]
    model_events = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    loaded = gr.on([demo.load, model_changed(demo)], on_model, None, chat, api_visibility="private", queue=False)
    loaded.then(run_forward, [text, chat, state], run_outputs, **model_events) \
        .then(compare_texts, [text_a, text_b], pair, **model_events) \
        .then(compare_prompts, [prompt_a, prompt_b], [prompt_chart, prompt_note], **model_events)
    gr.on([run.click, text.submit, chat.input], run_forward, [text, chat, state], run_outputs,
          trigger_mode="always_last", **model_events)
    examples.load_input_event.then(run_forward, [text, chat, state], run_outputs, **model_events)
    gr.on([compare.click, text_a.submit, text_b.submit], compare_texts, [text_a, text_b], pair,
          trigger_mode="always_last", **model_events)
    pair_examples.load_input_event.then(compare_texts, [text_a, text_b], pair, **model_events)
    gr.on([compare_p.click, prompt_a.submit, prompt_b.submit], compare_prompts, [prompt_a, prompt_b],
          [prompt_chart, prompt_note], trigger_mode="always_last", **model_events)
    prompt_examples.load_input_event.then(compare_prompts, [prompt_a, prompt_b], [prompt_chart, prompt_note],
                                          **model_events)
    flow.pick_box(pick_box, [state], [state, flow, explain], api_visibility="private",
                  show_progress="hidden")
    tabs = getattr(demo, "tabs", None)
    if tabs is not None:  # app.py hands over its gr.Tabs so the explanation's link can switch tab
        explain.open_tab(open_tab, [state], tabs, api_visibility="private", show_progress="hidden")
    gr.api(forward_pass_api, api_name="forward_pass", concurrency_id=MODEL_CONCURRENCY)
    gr.api(surprisal_api, api_name="surprisal", concurrency_id=MODEL_CONCURRENCY)
