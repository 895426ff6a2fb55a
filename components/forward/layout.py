"""Forward pass tab: the path from token ids to logits drawn from the loaded model, its embeddings and
positions, the residual stream, surprisal and perplexity, and two prompts' next-token distributions.

This module holds the layout and its wiring; the event handlers live in `events`, the JSON endpoints in `api`,
the CSV rows / JSON data of the downloads and endpoints in `exports` (pure) and the views in `figures` (pure).
One recorded model pass per text (cached in the session, `inference.forward.forward_pass`); clicking a box or
re-drawing only reads that cached analysis. The lesson (assets/lessons/forward.md) sits at the top; the view is
shareable as a link (text, chat, the picked box and the two comparisons) and every trace downloads as CSV/JSON.
Every text is in the visitor's language (assets/i18n/<lang>/forward.yaml): the layout through the page's
registry (`demo.texts`), the views by the handlers; a change of language redraws the views from the cached passes.
"""

from __future__ import annotations

import json
import re

import gradio as gr

from inference.limits import FORWARD_EMBED_TOKENS, MAX_FORWARD_TOKENS, MAX_TEXT_CHARS, SURPRISAL_TOP

from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session
from ..i18n import DEFAULT, RTL, T, Texts, catalogue, t
from ..share import share_link, when_drawn
from ..teaching import LessonPanel
from .api import forward_pass_api, surprisal_api
from .events import (
    RUN_OUTPUTS, chat_label, compare_prompts, compare_texts, on_model, open_tab, pick_box, run_forward,
)
from .figures import surprisal_legend_html

__all__ = ["TITLE", "build", "compare_prompts", "compare_texts", "forward_pass_api", "on_model", "open_tab",
           "pick_box", "run_forward", "surprisal_api"]

TITLE = "Forward pass"  # not translated: the app names the tabs (tab.forward)
EXAMPLES = json.loads((ASSETS / "examples" / "forward.json").read_text())
DEFAULT_TEXT = EXAMPLES["texts"]["France"]
DEFAULT_PAIR = EXAMPLES["surprisal_pairs"]["Normal vs shuffled"]
DEFAULT_PROMPTS = EXAMPLES["prompt_pairs"]["Statement vs Q&A"]

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
.fw-link:hover, .fw-ablate:hover { background: var(--button-secondary-background-fill-hover, #f0f0f0); }
.fw-ablate { display: block; width: 100%; margin: .5rem 0; padding: .55rem 1rem; font-size: 1.05rem; font-weight: 600;
             border: 2px solid #d55e00; border-radius: 8px; cursor: pointer; background: #fff; color: #8a3b00; }
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
  if (event.target.closest('.fw-ablate')) trigger('ablate_block', {});
  else if (event.target.closest('.fw-link')) trigger('open_tab', {});
});
"""


def _download(texts: Texts, key: str, elem_id: str) -> gr.DownloadButton:
    return texts.make(gr.DownloadButton, label=T(key), size="sm", elem_id=elem_id, scale=0, min_width=330)


def _alt(texts: Texts, elem_id: str) -> gr.Markdown:
    """The one-line text alternative under a figure (its text comes from the handlers; right to left in Persian)."""
    return _rtl(texts, gr.Markdown(elem_id=elem_id, elem_classes=["lie-alt"]))


def _rtl(texts: Texts, markdown: gr.Markdown) -> gr.Markdown:
    """A Markdown whose text the handlers write: it reads right to left in a right-to-left language."""
    return texts.add(markdown, lambda lang: gr.update(rtl=lang in RTL))


def _example_label(name: str, lang: str) -> str:
    """An example's name (a key of assets/examples/forward.json) in `lang`; a name the catalogue lacks as it is."""
    key = "forward.example_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return t(key, lang) if key in catalogue(DEFAULT) else name


def _examples(texts: Texts, group: dict, key: str, **kwargs) -> gr.Examples:
    """gr.Examples of a group of assets/examples/forward.json, its label and the examples' names translated."""
    examples = gr.Examples(label=t(key, DEFAULT), example_labels=[_example_label(n, DEFAULT) for n in group],
                           api_visibility="private", **kwargs)
    texts.add(examples.dataset, lambda lang: gr.update(label=t(key, lang),
                                                       sample_labels=[_example_label(n, lang) for n in group]))
    return examples


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    lesson = LessonPanel(demo, "forward")
    texts.markdown("forward.intro", max_tokens=MAX_FORWARD_TOKENS)
    state = gr.State(None, time_to_live=STATE_TTL_S)
    with gr.Row():
        with gr.Column(scale=3):
            text = texts.label(gr.Textbox(label=t("forward.text", DEFAULT, max_tokens=MAX_FORWARD_TOKENS), lines=2,
                                          value=DEFAULT_TEXT, max_length=MAX_TEXT_CHARS, elem_id="fw-text"),
                               "forward.text", max_tokens=MAX_FORWARD_TOKENS)
        with gr.Column(scale=1, min_width=220):
            chat = texts.add(gr.Checkbox(label=chat_label(True, DEFAULT), value=False, elem_id="fw-chat"),
                             lambda lang: gr.update(label=chat_label(session().has_chat_template, lang)))
            run = texts.make(gr.Button, T("forward.run"), variant="primary", elem_id="fw-run")
    # The picked box (set by a click or a shared link), so the link can carry it; never shown.
    box = gr.Textbox(value="", visible=False, elem_id="fw-box")
    examples = _examples(texts, EXAMPLES["texts"], "forward.examples",
                         examples=[[x] for x in EXAMPLES["texts"].values()], inputs=[text], api_name="forward_example")
    info = gr.HTML(elem_id="fw-info")
    # Comparison fields are made further down; the link needs them now (its row sits here, under the text).
    text_a = texts.make(gr.Textbox, label=T("forward.text_a"), value=DEFAULT_PAIR[0], lines=2,
                        max_length=MAX_TEXT_CHARS, elem_id="fw-text-a", render=False)
    text_b = texts.make(gr.Textbox, label=T("forward.text_b"), value=DEFAULT_PAIR[1], lines=2,
                        max_length=MAX_TEXT_CHARS, elem_id="fw-text-b", render=False)
    prompt_a = texts.make(gr.Textbox, label=T("forward.prompt_a"), value=DEFAULT_PROMPTS[0], lines=2,
                          max_length=MAX_TEXT_CHARS, elem_id="fw-prompt-a", render=False)
    prompt_b = texts.make(gr.Textbox, label=T("forward.prompt_b"), value=DEFAULT_PROMPTS[1], lines=2,
                          max_length=MAX_TEXT_CHARS, elem_id="fw-prompt-b", render=False)
    fields = {"text": text, "chat": chat, "box": box, "text_a": text_a, "text_b": text_b, "prompt_a": prompt_a,
              "prompt_b": prompt_b}
    loaded = share_link(demo, "forward", fields)
    with gr.Row(elem_classes=["lie-advanced"]):
        download_json = _download(texts, "forward.download_json", "fw-download-json")

    texts.make(gr.Markdown, T("forward.path_heading"))
    with gr.Row(equal_height=True):  # the explanation's column spans the diagram, so it can stay in view
        with gr.Column(scale=3):
            flow = gr.HTML(elem_id="fw-diagram", css_template=DIAGRAM_CSS, js_on_load=DIAGRAM_JS)
        with gr.Column(scale=2, min_width=360):
            explain = gr.HTML(elem_id="fw-explain", css_template=EXPLAIN_CSS, js_on_load=EXPLAIN_JS)

    with gr.Column(elem_classes=["lie-advanced"], elem_id="fw-embeddings-section"):
        texts.markdown("forward.embeddings_heading", embed_tokens=FORWARD_EMBED_TOKENS)
        with gr.Row():
            with gr.Column():
                strip = gr.Plot(show_label=False, elem_id="fw-embed")
                strip_alt = _alt(texts, "fw-embed-summary")
            with gr.Column():
                cosine = gr.Plot(show_label=False, elem_id="fw-cosine")
                cosine_alt = _alt(texts, "fw-cosine-summary")
        positions = _rtl(texts, gr.Markdown(elem_id="fw-positions"))
        rope = gr.Plot(show_label=False, elem_id="fw-rope")
        rope_alt = _alt(texts, "fw-rope-summary")

    texts.make(gr.Markdown, T("forward.residual_heading"))
    updates = gr.Plot(show_label=False, elem_id="fw-updates")
    updates_alt = _alt(texts, "fw-updates-summary")
    with gr.Row():
        with gr.Column(elem_classes=["lie-advanced"]):
            norms = gr.Plot(show_label=False, elem_id="fw-norms")
            norms_alt = _alt(texts, "fw-norms-summary")
        with gr.Column():
            lens = gr.Plot(show_label=False, elem_id="fw-lens")
            lens_alt = _alt(texts, "fw-lens-summary")
    with gr.Row(elem_classes=["lie-advanced"]):
        download_residual = _download(texts, "forward.download_residual", "fw-download-residual")
        download_lens = _download(texts, "forward.download_lens", "fw-download-lens")

    texts.make(gr.Markdown, T("forward.surprisal_heading"))
    texts.add(gr.HTML(surprisal_legend_html(DEFAULT), css_template=SURPRISAL_CSS),
              lambda lang: gr.update(value=surprisal_legend_html(lang)))
    surprisal = gr.HTML(elem_id="fw-surprisal", css_template=SURPRISAL_CSS)
    with texts.add(gr.Accordion(t("forward.most_surprising", DEFAULT, n=SURPRISAL_TOP), open=True),
                   lambda lang: gr.update(label=t("forward.most_surprising", lang, n=SURPRISAL_TOP))):
        surprising = gr.HTML(elem_id="fw-surprising", css_template=SURPRISAL_CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        download_surprisal = _download(texts, "forward.download_surprisal", "fw-download-surprisal")
    texts.make(gr.Markdown, T("forward.compare_texts_heading"))
    with gr.Row():
        text_a.render()
        text_b.render()
    with gr.Row():
        pair_examples = _examples(texts, EXAMPLES["surprisal_pairs"], "forward.pairs",
                                  examples=list(EXAMPLES["surprisal_pairs"].values()), inputs=[text_a, text_b],
                                  api_name="forward_pair_example")
        compare = texts.make(gr.Button, T("forward.compare_texts"), elem_id="fw-compare", scale=0, min_width=180)
    pair = gr.HTML(elem_id="fw-pair", css_template=SURPRISAL_CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        download_pair = _download(texts, "forward.download_pair", "fw-download-pair")

    texts.make(gr.Markdown, T("forward.prompts_heading"))
    with gr.Row():
        prompt_a.render()
        prompt_b.render()
    with gr.Row():
        prompt_examples = _examples(texts, EXAMPLES["prompt_pairs"], "forward.prompt_pairs",
                                    examples=list(EXAMPLES["prompt_pairs"].values()), inputs=[prompt_a, prompt_b],
                                    api_name="forward_prompt_example")
        compare_p = texts.make(gr.Button, T("forward.compare_prompts"), elem_id="fw-compare-prompts", scale=0,
                               min_width=180)
    prompt_chart = gr.Plot(show_label=False, elem_id="fw-prompt-chart")
    prompt_alt = _alt(texts, "fw-prompt-chart-summary")
    prompt_note = gr.HTML(elem_id="fw-prompt-note")
    with gr.Row(elem_classes=["lie-advanced"]):
        download_prompts = _download(texts, "forward.download_prompts", "fw-download-prompts")
    # The page's language, set when the visitor changes it: its change redraws the views in the new language
    # (from the cached passes; the tab is built before the page's language event exists, so it listens here).
    language = texts.add(gr.State(DEFAULT), lambda lang: lang)

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
    run_all(when_drawn(language.change, loaded))  # a new language: every view in it
    run_all(when_drawn(model_changed(demo)(on_model, None, chat, api_visibility="private", queue=False).then, loaded))
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
    # "Ablate this block →" under the attention or MLP box: the Interventions tab (built later) wires it.
    demo.intervention_sources = [*getattr(demo, "intervention_sources", []),
                                 ("forward", explain.ablate_block, [state])]
    gr.api(forward_pass_api, api_name="forward_pass", concurrency_id=MODEL_CONCURRENCY)
    gr.api(surprisal_api, api_name="surprisal", concurrency_id=MODEL_CONCURRENCY)
