"""Interventions tab: change the model and watch. Switch off heads or whole blocks (ablation) and see the next
token before and after; switch off every head of some layers in turn (a grid of effects); copy the clean run of
one prompt into a corrupted one at one layer and position (activation patching) and see where the answer lives.

The lesson (assets/lessons/interventions.md) sits on top with its "try this" buttons; the view is shareable as a
link (prompt, list of heads and blocks, mode, sweep range, the two prompts, site and opened cell); both grids
download as CSV and their figures as PNG; each figure has a one-line text alternative under it. The Attention tab
("Ablate this head →") and the Forward diagram ("Ablate this block →") open this tab with their text and
component filled in: they list their buttons on `demo.intervention_sources` (they are built first), and this tab
wires them.

This module holds the layout and its wiring; the handlers live in `events`, the JSON endpoints in `api`, the
endpoints' data and the CSV rows in `exports`, the views in `figures` (pure). Every text is in the catalogue
(assets/i18n/<lang>/interventions.yaml): the controls are re-labelled by the page's `Texts`, and the views on
screen are re-drawn in the new language (`events.relabel_*`).
"""

from __future__ import annotations

import gradio as gr

from inference.limits import MAX_ABLATION_SPEC_CHARS, MAX_INTERVENTION_TOKENS, MAX_PATCH_TOKENS, MAX_TEXT_CHARS

from ..common import MODEL_CONCURRENCY, STATE_TTL_S, model_changed, session
from ..i18n import DEFAULT, RTL, T, t
from ..share import share_link, when_drawn
from ..teaching import LessonPanel
from .api import ablate_api, head_sweep_api, patch_api
from .events import (
    add_attn, add_head, add_mlp, check_pair, from_attention, from_forward, link_asks, on_model, pick_patch_cell,
    pick_sweep_cell, redraw_sweep, relabel_ablation, relabel_patch, relabel_sweep, run_ablation, run_patch,
    run_patch_linked, run_sweep, run_sweep_linked, show_patch_cell,
)
from .figures import sweep_waiting

__all__ = ["TITLE", "ablate_api", "build", "head_sweep_api", "patch_api", "run_ablation", "run_patch", "run_sweep"]

TITLE = "Interventions"
# Repeated made-up words: the model can only continue the list by copying it (an induction head's job); an idiom
# ("the lazy dog") it would complete from memory, with or without its induction heads.
DEFAULT_TEXT = "apple river mountain seven blue window. apple river mountain seven blue"
DEFAULT_SPEC = "L17H4"
DEFAULT_CLEAN = "The Eiffel Tower is in the city of"
DEFAULT_CORRUPT = "The Colosseum is in the city of"


def intro(lang: str) -> str:
    """The tab's first lines: how to name what to switch off, and the limits (read from inference.limits)."""
    return t("interventions.intro", lang, ablate=t("interventions.run", lang), n_ablate=MAX_INTERVENTION_TOKENS,
             n_patch=MAX_PATCH_TOKENS, sampling=t("tab.sampling", lang))


TAB_CSS = """
.int-marked { display: inline-block; font-weight: 700; color: #8a3b00; background: #fff1e0; border: 2px solid #d55e00;
              border-radius: 6px; padding: 2px 8px; margin: .2rem 0; }
.int-problem { font-size: 1.02rem; font-weight: 600; color: #8a1c00; background: #fff1e0; border-left: 4px solid #d55e00;
               padding: .4rem .7rem; margin: .3rem 0; }
.int-pair { display: flex; flex-direction: column; gap: 3px; margin: .2rem 0; }
.int-prow { display: flex; flex-wrap: wrap; gap: 2px; align-items: center; font-family: var(--font-mono); font-size: .95rem; }
.int-plabel { font-family: var(--font-sans); font-size: .85rem; width: 7.5rem; color: var(--body-text-color-subdued); }
.int-ptok { padding: 1px 3px; border: 1px solid #ccc; border-radius: 4px; white-space: pre; }
.int-ptok.diff { border: 2px solid #d55e00; font-weight: 700; }
"""
CELL_CSS = """
.int-cell-head { font-size: 1rem; margin: .2rem 0 .4rem 0; }
.int-top { border-collapse: collapse; font-size: .95rem; min-width: 22rem; border: none !important; }
.int-top td { padding: 2px 8px; border: none !important; border-bottom: 1px solid #e5e5e5 !important; }
.int-tok { font-family: var(--font-mono); white-space: pre; }
.int-bar-cell { width: 14rem; }
.int-bar { display: inline-block; height: .8rem; background: #0072B2; border-radius: 2px; }
.int-row.int-clean .int-tok { font-weight: 700; text-decoration: underline; }
.int-row.int-corrupt .int-tok { font-style: italic; }
.int-p { font-variant-numeric: tabular-nums; text-align: right; }
"""


def bridge_js(plot_id: str) -> str:
    """A click on a cell of the plotly heatmap inside #plot_id, sent to Python as the custom event `pick_cell`
    ({x: column, y: row}). gr.Plot has no click event of its own; plotly's own `plotly_click` is bound on every
    graph div the plot draws (a re-draw may make a new one: checked twice a second)."""
    return """
const bind = () => {
  const gd = document.querySelector('#%s .js-plotly-plot');
  if (!gd || !gd.on || !gd._ev || gd._ev.__lieBound) return;
  gd._ev.__lieBound = true;
  gd.on('plotly_click', (event) => {
    const point = event && event.points && event.points[0];
    if (point && point.data && point.data.type === 'heatmap') trigger('pick_cell', {x: point.x, y: point.y});
  });
};
bind();
setInterval(bind, 500);
""" % plot_id


def _alt(texts, elem_id: str, value: str | None = None) -> gr.Markdown:
    """A figure's one-line text alternative. Its text is a view (events write it); a new language only turns it
    right to left for Persian (the events re-draw the text: `relabel_*`)."""
    return texts.add(gr.Markdown(value, elem_id=elem_id, elem_classes=["lie-alt"]),
                     lambda lang: gr.update(rtl=lang in RTL))


def _markdown(texts, read, **kwargs) -> gr.Markdown:
    """A Markdown whose text `read(lang)` builds (catalogue text with values): English now, re-read (and right to
    left for Persian) when the visitor's language changes."""
    return texts.add(gr.Markdown(read(DEFAULT), **kwargs), lambda lang: gr.update(value=read(lang), rtl=lang in RTL))


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    lesson = LessonPanel(demo, "interventions")
    _markdown(texts, intro)
    facts = session().facts  # the sliders' ranges; a model switch updates them (events.on_model)
    last_layer, last_head = facts.num_layers - 1, facts.num_heads - 1
    sweep_state = gr.State(None, time_to_live=STATE_TTL_S)
    patch_state = gr.State(None, time_to_live=STATE_TTL_S)
    share_box = gr.Column()  # the "Copy link" row goes here, made once every field exists (below)

    texts.make(gr.Markdown, T("interventions.ablation_heading"))
    with gr.Row():
        with gr.Column(scale=3):
            text = texts.label(gr.Textbox(label=t("interventions.prompt", DEFAULT, n=MAX_INTERVENTION_TOKENS), lines=2,
                                          value=DEFAULT_TEXT, max_length=MAX_TEXT_CHARS, elem_id="int-text"),
                               "interventions.prompt", n=MAX_INTERVENTION_TOKENS)
        with gr.Column(scale=1, min_width=260):
            chat = texts.make(gr.Checkbox, label=T("interventions.chat"), value=False, elem_id="int-chat")
            mode = texts.make(gr.Radio, choices=[(T("interventions.mode_zero"), "zero"),
                                                 (T("interventions.mode_mean"), "mean")],
                              value="zero", label=T("interventions.mode"), elem_id="int-mode")
    with gr.Row(equal_height=True):
        spec = texts.make(gr.Textbox, label=T("interventions.spec"), value=DEFAULT_SPEC,
                          max_length=MAX_ABLATION_SPEC_CHARS, elem_id="int-spec", scale=4)
        run = texts.make(gr.Button, T("interventions.run"), variant="primary", elem_id="int-run", scale=0,
                         min_width=140)
    with gr.Row(elem_id="int-picker", equal_height=True):
        layer = texts.make(gr.Slider, 0, last_layer, value=17, step=1, label=T("interventions.layer"),
                           elem_id="int-layer", scale=2)
        head = texts.make(gr.Slider, 0, last_head, value=4, step=1, label=T("interventions.head"), elem_id="int-head",
                          scale=2)
        add_h = texts.make(gr.Button, T("interventions.add_head"), size="sm", elem_id="int-add-head", scale=0,
                           min_width=110)
        add_a = texts.make(gr.Button, T("interventions.add_attn"), size="sm", elem_id="int-add-attn", scale=0,
                           min_width=150)
        add_m = texts.make(gr.Button, T("interventions.add_mlp"), size="sm", elem_id="int-add-mlp", scale=0,
                           min_width=130)
        clear = texts.make(gr.Button, T("interventions.clear"), size="sm", elem_id="int-clear", scale=0, min_width=80)
    info = gr.HTML(elem_id="int-info", css_template=TAB_CSS)
    bars = gr.Plot(show_label=False, elem_id="int-bars")
    bars_alt = _alt(texts, "int-bars-summary")

    texts.make(gr.Markdown, T("interventions.sweep_heading"))
    with gr.Row(equal_height=True):
        sweep_from = texts.make(gr.Slider, 0, last_layer, value=0, step=1, label=T("interventions.sweep_from"),
                                elem_id="int-sweep-from")
        sweep_to = texts.make(gr.Slider, 0, last_layer, value=last_layer, step=1, label=T("interventions.sweep_to"),
                              elem_id="int-sweep-to")
        sweep_metric = texts.make(gr.Radio, choices=[(T("interventions.metric_delta"), "delta"),
                                                     (T("interventions.metric_kl"), "kl")],
                                  value="delta", label=T("interventions.colour"), elem_id="int-sweep-metric")
        sweep_run = texts.make(gr.Button, T("interventions.sweep_run"), variant="primary", elem_id="int-sweep-run",
                               scale=0, min_width=240)
    sweep_plot = gr.Plot(show_label=False, elem_id="int-sweep-grid")
    # Its text is a view (the sweep's summary): a new language re-draws it (events.relabel_sweep), not `texts`.
    sweep_alt = _alt(texts, "int-sweep-summary", sweep_waiting(DEFAULT))
    with gr.Row(elem_classes=["lie-advanced"]):
        # A DownloadButton's text is its label (its value is the file).
        sweep_csv = texts.make(gr.DownloadButton, label=T("interventions.sweep_csv"), size="sm", interactive=False,
                               elem_id="int-sweep-csv", scale=0, min_width=260)
        # Invisible: binds clicks on the grid (above) to Python. It runs in presenter mode too (hidden, not gone).
        sweep_bridge = gr.HTML("", elem_id="int-sweep-bridge", container=False, js_on_load=bridge_js("int-sweep-grid"))

    texts.make(gr.Markdown, T("interventions.patch_heading"))
    with gr.Row():
        clean = texts.make(gr.Textbox, label=T("interventions.clean"), value=DEFAULT_CLEAN, lines=1,
                           max_length=MAX_TEXT_CHARS, elem_id="int-clean")
        corrupt = texts.make(gr.Textbox, label=T("interventions.corrupt"), value=DEFAULT_CORRUPT, lines=1,
                             max_length=MAX_TEXT_CHARS, elem_id="int-corrupt")
    pair = gr.HTML(elem_id="int-pair", css_template=TAB_CSS)
    with gr.Row(equal_height=True):
        site = texts.make(gr.Radio, choices=[(T("interventions.site_resid_pre"), "resid_pre"),
                                             (T("interventions.site_attn_out"), "attn_out"),
                                             (T("interventions.site_mlp_out"), "mlp_out")],
                          value="resid_pre", label=T("interventions.site"), elem_id="int-site")
        patch_metric = texts.make(gr.Radio, choices=[(T("interventions.metric_effect"), "effect"),
                                                     (T("interventions.metric_prob"), "prob")],
                                  value="effect", label=T("interventions.colour"), elem_id="int-patch-metric")
        patch_run = texts.make(gr.Button, T("interventions.patch_run"), variant="primary", elem_id="int-patch-run",
                               scale=0, min_width=180)
    patch_plot = gr.Plot(show_label=False, elem_id="int-patch-grid")
    patch_alt = _alt(texts, "int-patch-summary")
    with gr.Row():
        cell_layer = texts.make(gr.Slider, 0, last_layer, value=0, step=1, label=T("interventions.cell_layer"),
                                elem_id="int-cell-layer")
        cell_position = texts.make(gr.Slider, 0, MAX_PATCH_TOKENS - 1, value=0, step=1,
                                   label=T("interventions.cell_position"), elem_id="int-cell-position")
    cell = gr.HTML(elem_id="int-cell", css_template=CELL_CSS)
    with gr.Row(elem_classes=["lie-advanced"]):
        patch_csv = texts.make(gr.DownloadButton, label=T("interventions.patch_csv"), size="sm", interactive=False,
                               elem_id="int-patch-csv", scale=0, min_width=260)
        patch_bridge = gr.HTML("", elem_id="int-patch-bridge", container=False, js_on_load=bridge_js("int-patch-grid"))
    # The visitor's language, as this tab's views follow it: set by the page's `Texts` on a language change.
    language = texts.add(gr.State(None), lambda lang: gr.update(value=lang))

    fields = {"text": text, "chat": chat, "spec": spec, "mode": mode, "layer": layer, "head": head,
              "sweep_from": sweep_from, "sweep_to": sweep_to, "sweep_metric": sweep_metric, "clean": clean,
              "corrupt": corrupt, "site": site, "patch_metric": patch_metric, "cell_layer": cell_layer,
              "cell_position": cell_position}
    with share_box:
        loaded = share_link(demo, "interventions", fields)

    model_events = dict(api_visibility="private", concurrency_id=MODEL_CONCURRENCY)
    ablation = dict(fn=run_ablation, inputs=[text, chat, spec, mode], outputs=[spec, bars, bars_alt, info],
                    trigger_mode="always_last", **model_events)
    sweep_inputs = [text, chat, mode, sweep_from, sweep_to, sweep_metric]
    sweep_outputs = [sweep_state, sweep_plot, sweep_alt, sweep_csv]
    sweep = dict(fn=run_sweep, inputs=[*sweep_inputs, sweep_state], outputs=sweep_outputs, **model_events)
    patch_inputs = [clean, corrupt, chat, site, patch_metric]
    patch_outputs = [patch_state, patch_plot, patch_alt, pair, cell, cell_layer, cell_position, patch_csv]
    patch = dict(fn=run_patch, inputs=[*patch_inputs, patch_state], outputs=patch_outputs, **model_events)
    pair_check = dict(fn=check_pair, inputs=[clean, corrupt, chat], outputs=pair, api_visibility="private",
                      queue=False, show_progress="hidden")
    quick = dict(api_visibility="private", queue=False, show_progress="hidden")

    # The page's first view (with a shared link's values): the ablation (cached after the first visitor) and the
    # token check; the sweep and the patching grid only where a link asks for them (`asks` changes only then, so
    # no other first view has them waiting on a run).
    asks = gr.State(None)
    loaded.then(**ablation).then(**pair_check).then(link_asks, None, asks, **quick)
    (asks.change(run_sweep_linked, [asks, *sweep_inputs], sweep_outputs, **model_events)
     .then(run_patch_linked, [asks, *patch_inputs, cell_layer, cell_position], patch_outputs, **model_events))
    when_drawn(model_changed(demo)(on_model, spec, [spec, layer, head, sweep_from, sweep_to, cell_layer,
                                                    cell_position], **quick).then, loaded).then(**ablation)

    gr.on([run.click, text.submit, spec.submit, mode.input, chat.input], **ablation)
    add_h.click(add_head, [spec, layer, head], spec, **quick).success(**ablation)
    add_a.click(add_attn, [spec, layer], spec, **quick).success(**ablation)
    add_m.click(add_mlp, [spec, layer], spec, **quick).success(**ablation)
    clear.click(lambda: "", None, spec, **quick).then(**ablation)

    gr.on([sweep_run.click], **sweep)
    sweep_metric.input(redraw_sweep, [sweep_state, sweep_metric], [sweep_plot, sweep_alt], **quick)
    sweep_bridge.pick_cell(pick_sweep_cell, [sweep_state, sweep_metric], [sweep_plot, text, chat, mode, spec, layer, head],
                           api_visibility="private", show_progress="hidden").success(**ablation)

    gr.on([patch_run.click, site.input, clean.submit, corrupt.submit], trigger_mode="always_last", **patch)
    gr.on([clean.input, corrupt.input, chat.input], trigger_mode="always_last", **pair_check)
    gr.on([patch_metric.input, cell_layer.input, cell_position.input], show_patch_cell,
          [patch_state, patch_metric, cell_layer, cell_position], [patch_plot, cell, patch_alt],
          trigger_mode="always_last", **quick)
    patch_bridge.pick_cell(pick_patch_cell, [patch_state, patch_metric], [patch_plot, cell, cell_layer, cell_position],
                           **quick)

    # "Try this": each try sets its fields, then runs what it is about (the patching grid, a sweep, an ablation).
    for tried, event in zip(lesson.lesson.tries, lesson.connect(fields)):
        if "clean" in tried.values:
            event.then(**pair_check).then(**patch)
        elif "sweep_from" in tried.values:
            event.then(**ablation).then(**sweep)
        else:
            event.then(**ablation)

    # Arriving from the Attention tab's "Ablate this head →" or the Forward diagram's "Ablate this block →".
    tabs = getattr(demo, "tabs", None)
    handoffs = {"attention": from_attention, "forward": from_forward}
    if tabs is not None:
        for source, trigger, inputs in getattr(demo, "intervention_sources", []):
            trigger(handoffs[source], inputs, [tabs, text, chat, spec, layer, head], api_visibility="private",
                    show_progress="hidden").success(**ablation)

    # A new language: the views on screen are re-drawn in it from the cached analyses (queued with the model's
    # work: a cache that was emptied since means a pass).
    relabel = dict(show_progress="hidden", **model_events)
    (when_drawn(language.change, loaded)
     .then(relabel_ablation, [language, text, chat, spec, mode], [bars, bars_alt, info], **relabel)
     .then(relabel_sweep, [language, sweep_state, sweep_metric], [sweep_plot, sweep_alt], **relabel)
     .then(relabel_patch, [language, patch_state, patch_metric, cell_layer, cell_position, clean, corrupt, chat],
           [patch_plot, cell, patch_alt, pair], **relabel))

    gr.api(ablate_api, api_name="ablate", concurrency_id=MODEL_CONCURRENCY)
    gr.api(head_sweep_api, api_name="head_sweep", concurrency_id=MODEL_CONCURRENCY)
    gr.api(patch_api, api_name="patch", concurrency_id=MODEL_CONCURRENCY)
