"""Attention tab: where every head of every layer looks, the decode step's single new row, and a logit lens.

One model pass per text (cached in the session); moving a slider, clicking a head or picking a token only
re-draws from that cached analysis. The lesson (assets/lessons/attention.md) sits on top with its "try this"
buttons; every view can be shared as a link (text, chat, layer, head, mean, metric, token) and downloaded (the
shown map and the logit lens as CSV; figures as PNG from plotly's toolbar); each figure has a one-line text
alternative under it.

This module holds the layout and its wiring; the handlers live in `events`, the JSON endpoint in `api`, the
endpoint's data and the CSV rows in `exports`, the views in `figures` (pure).
"""

from __future__ import annotations

import json

import gradio as gr

from inference.attention import SUMMARIES
from inference.limits import (
    ATTENTION_MEMORY_BUDGET, LENS_MAX_POSITIONS, LENS_TOP_K, MAX_ATTENTION_TOKENS, MAX_TEXT_CHARS,
)

from ..common import ASSETS, MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session
from ..i18n import DEFAULT, RTL, T, t
from ..share import share_link, when_drawn
from ..teaching import LessonPanel
from .api import attention_api
from .events import (
    LANGUAGE_OUTPUTS, map_csv_empty, on_language, on_switch, pick_head, prepare_map_csv, run_attention, run_linked,
    show_head, show_overview, show_token,
)

__all__ = ["TITLE", "attention_api", "build", "on_switch", "pick_head", "prepare_map_csv", "run_attention",
           "run_linked", "show_head", "show_overview", "show_token"]

TITLE = "Attention"  # not translated: the app translates tab names
EXAMPLES = json.loads((ASSETS / "examples" / "attention.json").read_text())
DEFAULT_TEXT = EXAMPLES["France (logit lens)"]
# The overview's summaries: the label in the visitor's language, the value the SUMMARIES name (links use it).
METRICS = [(T(f"attention.metric_{name}"), name) for name in SUMMARIES]
# Example buttons: their labels (assets/examples/attention.json) in the catalogue; a label not listed stays as it is.
EXAMPLE_KEYS = {
    "France (logit lens)": "attention.example_france",
    "Who was tired?": "attention.example_tired",
    "Names": "attention.example_names",
    "Repeated text (induction heads)": "attention.example_repeated",
    "Counting": "attention.example_counting",
    "Code": "attention.example_code",
}


def intro(lang: str = DEFAULT) -> str:
    """How to operate the tab and its limits; the teaching text is the lesson (assets/lessons/attention.md)."""
    return t("attention.intro", lang, ablate=t("attention.ablate", lang), tokens=MAX_ATTENTION_TOKENS,
             mb=f"{ATTENTION_MEMORY_BUDGET / 1e6:.0f}", reopen=480, top_k=LENS_TOP_K, positions=LENS_MAX_POSITIONS)


def example_labels(lang: str = DEFAULT) -> list[str]:
    return [t(EXAMPLE_KEYS[label], lang) if label in EXAMPLE_KEYS else label for label in EXAMPLES]


def _directed(texts, markdown):
    """A Markdown that a handler fills (a text alternative): right to left with a right-to-left language."""
    return texts.add(markdown, lambda lang: gr.update(rtl=lang in RTL))

HEAD_CSS = """
.lie-att-note { font-size: .95rem; margin: .2rem 0 .4rem 0; }
"""
OVERVIEW_CSS = """
.lie-att-overview { overflow-x: auto; }
.lie-att-overview table { border-collapse: collapse; font-size: .8rem; font-variant-numeric: tabular-nums; }
.lie-att-overview th { font-weight: 600; padding: 1px 3px; text-align: right; white-space: nowrap; }
.lie-att-overview thead th { text-align: center; }
.lie-att-overview th.lie-att-group { border-bottom: 1px solid #888; font-weight: 500; }
.lie-att-overview th.lie-att-local { color: #b45309; white-space: nowrap; }
.lie-att-cell { padding: 2px 2px; text-align: center; cursor: pointer; border: 1px solid #fff; min-width: 2.3em; }
.lie-att-cell:hover { outline: 2px solid #d55e00; outline-offset: -2px; }
.lie-att-cell.selected { outline: 3px solid #d55e00; outline-offset: -3px; font-weight: 700; }
.group-start { border-left: 3px solid #fff !important; }
.lie-att-caption { font-size: .9rem; margin-bottom: .3rem; }
"""
FOCUS_CSS = """
.lie-att-tokens { display: flex; flex-wrap: wrap; gap: 4px 2px; font-family: var(--font-mono); font-size: 1.05rem; }
.lie-att-tok { padding: 3px 3px; border-radius: 4px; border: 1px solid #ddd; white-space: pre; }
.lie-att-tok.query { outline: 3px solid #d55e00; }
.lie-att-tok.masked { color: #888; background: #e6e6e6; border-style: dashed; }
.lie-att-tok.special { font-weight: 700; }
.lie-att-focus-top { font-size: 1rem; margin-bottom: .3rem; }
"""
LENS_CSS = """
.lie-att-lens { overflow-x: auto; }
.lie-att-lens table { border-collapse: collapse; font-size: .85rem; }
.lie-att-lens th, .lie-att-lens td { padding: 1px 6px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
.lie-att-guess { font-family: var(--font-mono); margin-right: .5rem; }
.lie-att-guess.answer { background: #ffe2c2; font-weight: 700; }
.lie-att-caption { font-size: .9rem; margin-bottom: .3rem; }
"""
# A click on a cell of the overview sends (layer, head) to Python as a custom event.
OVERVIEW_JS = """
element.addEventListener('click', (event) => {
  const cell = event.target.closest('[data-layer]');
  if (cell) trigger('pick_head', {layer: Number(cell.dataset.layer), head: cell.dataset.head});
});
"""



def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "attention")
    texts = demo.texts
    texts.add(gr.Markdown(intro()), lambda lang: gr.update(value=intro(lang), rtl=lang in RTL))
    facts = session().facts  # the sliders' ranges; Run updates them when the model changes
    state = gr.State(None, time_to_live=STATE_TTL_S)
    with gr.Row():
        with gr.Column(scale=3):
            text = texts.make(gr.Textbox, label=T("attention.prompt"), lines=2, value=DEFAULT_TEXT,
                              max_length=MAX_TEXT_CHARS, elem_id="att-text")
        with gr.Column(scale=1, min_width=220):
            chat = texts.make(gr.Checkbox, label=T("attention.chat"), value=False, elem_id="att-chat")
            run = texts.make(gr.Button, T("attention.run"), variant="primary", elem_id="att-run")
    examples = gr.Examples(examples=[[e] for e in EXAMPLES.values()], example_labels=example_labels(), inputs=[text],
                           label=t("attention.examples", DEFAULT), api_visibility="private",
                           api_name="attention_example")
    texts.add(examples.dataset, lambda lang: gr.update(label=t("attention.examples", lang),
                                                       sample_labels=example_labels(lang)))
    share_box = gr.Column()  # the "Copy link" row goes here, made once every field exists (below)
    info = gr.HTML(elem_id="att-info")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                layer = texts.make(gr.Slider, 0, facts.num_layers - 1, value=0, step=1, label=T("attention.layer"),
                                   elem_id="att-layer")
                head = texts.make(gr.Slider, 0, facts.num_heads - 1, value=0, step=1, label=T("attention.head"),
                                  elem_id="att-head")
                mean = texts.make(gr.Checkbox, label=T("attention.mean_over_heads"), value=False, elem_id="att-mean",
                                  min_width=120)
                # Opens the Interventions tab with this text, layer and head (the whole attention block under "mean").
                ablate = texts.make(gr.Button, T("attention.ablate"), size="sm", elem_id="att-ablate", scale=0,
                                    min_width=170)
            heatmap = gr.Plot(show_label=False, elem_id="att-heatmap")
            heatmap_alt = _directed(texts, gr.Markdown(elem_id="att-heatmap-summary", elem_classes=["lie-alt"]))
            note = gr.HTML(elem_id="att-gqa", css_template=HEAD_CSS)
            with gr.Row(elem_classes=["lie-advanced"], elem_id="att-map-csv-row"):
                prepare = texts.make(gr.Button, T("attention.map_csv_prepare"), size="sm",
                                     elem_id="att-map-csv-prepare", scale=0, min_width=220)
                # A new language empties the download too, so its label and its file never disagree.
                map_csv = texts.add(gr.DownloadButton(size="sm", elem_id="att-map-csv", scale=0, min_width=300,
                                                      **map_csv_empty(DEFAULT)),
                                    lambda lang: gr.update(**map_csv_empty(lang)))
        with gr.Column(scale=2, min_width=420):
            metric = texts.make(gr.Radio, choices=METRICS, value="first", label=T("attention.metric"),
                                elem_id="att-metric")
            overview = gr.HTML(elem_id="att-overview", css_template=OVERVIEW_CSS, js_on_load=OVERVIEW_JS)
            overview_alt = _directed(texts, gr.Markdown(elem_id="att-overview-summary", elem_classes=["lie-alt"]))
    texts.make(gr.Markdown, T("attention.focus_heading"))
    token = texts.make(gr.Dropdown, choices=[], label=T("attention.token"), elem_id="att-token", interactive=True)
    # The focused token as a plain number, for the shareable link (the dropdown's choices change with the text).
    token_pick = gr.Number(value=None, precision=0, minimum=0, maximum=MAX_ATTENTION_TOKENS, visible=False,
                           elem_id="att-token-pick")
    focus = gr.HTML(elem_id="att-focus", css_template=FOCUS_CSS)
    texts.make(gr.Markdown, T("attention.lens_heading"))
    lens_fig = gr.Plot(show_label=False, elem_id="att-lens")
    lens_alt = _directed(texts, gr.Markdown(elem_id="att-lens-summary", elem_classes=["lie-alt"]))
    with texts.make(gr.Accordion, label=T("attention.lens_table"), open=True, elem_classes=["lie-advanced"],
                    elem_id="att-lens-table-box"):
        lens_html = gr.HTML(elem_id="att-lens-table", css_template=LENS_CSS)
        lens_csv = texts.make(gr.DownloadButton, label=T("attention.lens_csv"), size="sm", elem_id="att-lens-csv",
                              interactive=False)

    fields = {"text": text, "chat": chat, "layer": layer, "head": head, "mean": mean, "metric": metric,
              "token": token_pick}
    with share_box:
        loaded = share_link(demo, "attention", fields)
    # The page's language, set by the picker (the page's language events are wired after the tabs are built): its
    # change redraws the analysis on screen in the new language (from the cached analysis, as the switches do).
    page_language = texts.add(gr.State(DEFAULT), lambda lang: lang)

    head_views = [heatmap, heatmap_alt, note, focus, overview, overview_alt, map_csv]
    run_outputs = [state, layer, head, token, token_pick, info, heatmap, heatmap_alt, note, focus, overview,
                   overview_alt, lens_fig, lens_alt, lens_html, lens_csv, map_csv]
    run_inputs = [text, chat, layer, head, mean, metric]
    run_event = dict(fn=run_attention, inputs=run_inputs, outputs=run_outputs, api_visibility="private",
                     concurrency_id=MODEL_CONCURRENCY)
    # The first run follows the tab's first showing, which applied a shared link's values (the link's token included).
    loaded.then(run_linked, [*run_inputs, token_pick], run_outputs, api_visibility="private",
                concurrency_id=MODEL_CONCURRENCY)
    gr.on([run.click, text.submit, chat.input], trigger_mode="always_last", **run_event)
    when_drawn(model_changed(demo), loaded).then(**run_event)  # a tab not drawn yet draws on the new model when shown
    examples.load_input_event.then(**run_event)
    lesson.connect(fields, then=run_event)
    # Views of the cached analysis: .input fires on the user's moves only, so a click on the overview
    # (which sets the sliders itself) does not draw twice.
    gr.on([layer.input, head.input, mean.input], on_switch, [state, layer, head, mean, token, metric], head_views,
          api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    overview.pick_head(pick_head, [state, token, metric], [layer, head, mean, *head_views],
                       api_visibility="private", show_progress="hidden")
    token.input(show_token, [state, layer, head, mean, token], [focus, lens_fig, lens_alt, lens_html, token_pick],
                api_visibility="private", show_progress="hidden")
    metric.input(show_overview, [state, layer, head, mean, metric], [overview, overview_alt],
                 api_visibility="private", show_progress="hidden")
    prepare.click(prepare_map_csv, [state, layer, head, mean], map_csv, api_visibility="private")
    redrawn = dict(token=token, info=info, heatmap=heatmap, heatmap_alt=heatmap_alt, note=note, focus=focus,
                   overview=overview, overview_alt=overview_alt, lens_fig=lens_fig, lens_alt=lens_alt,
                   lens_html=lens_html)
    page_language.change(on_language, [page_language, state, chat, layer, head, mean, token, metric],
                         [redrawn[name] for name in LANGUAGE_OUTPUTS], api_visibility="private",
                         trigger_mode="always_last", show_progress="hidden")
    # The Interventions tab is built after this one and wires the button (components/interventions/layout.py).
    demo.intervention_sources = [*getattr(demo, "intervention_sources", []),
                                 ("attention", ablate.click, [text, chat, layer, head, mean])]
    gr.api(attention_api, api_name="attention", concurrency_id=MODEL_CONCURRENCY)
