"""LLM Inference Explorer: a visual teaching app that opens up a real language model while it works.

    python app.py [--model HUB_ID_OR_DIR] [--port 7860]

The server address comes from Gradio's own settings (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT), so a
Hugging Face Space and a laptop both work unchanged.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
from pathlib import Path

import gradio as gr
import torch
import yaml

from components import header
from components.attention import layout as attention_tab
from components.beam import layout as beam_tab
from components.forward import layout as forward_tab
from components.prefill import layout as prefill_tab
from components.sampling import layout as sampling_tab
from components.tokenizer import layout as tokenizer_tab
from components.header import model_facts_html
from components.share import tab_from_query
from inference import limits
from inference.session import current_session, switch_model

ASSETS = Path(__file__).parent / "assets"
# Lesson order (the Hugging Face course's outline): tokens, attention, sampling, beam search, cost.
TABS = [tokenizer_tab, forward_tab, attention_tab, sampling_tab, beam_tab, prefill_tab]
TAB_NAMES = [tab.__name__.split(".")[1] for tab in TABS]  # components.<name>.layout; the tab id is <name>_tab
TOUR = yaml.safe_load((ASSETS / "lessons" / "tour.yaml").read_text(encoding="utf-8"))["steps"]

# Presenter mode is a class on <body> (see assets/style.css): larger type, high contrast, advanced controls
# hidden. It stays on the page (no server round trip) and `?presenter=1` turns it on from a link.
PRESENTER_JS = """(on) => {
  on = (on === undefined) ? !document.body.classList.contains('lie-presenter') : on;
  document.body.classList.toggle('lie-presenter', on);
  // Plotly sizes a figure to its container only on a window resize: tell it the layout changed.
  setTimeout(() => window.dispatchEvent(new Event('resize')), 50);
  return on ? '🖥 Leave presenter mode' : '📽 Presenter mode';
}"""
# The toggle with no argument flips the mode; on page load the link decides.
PRESENTER_TOGGLE_JS = "() => (" + PRESENTER_JS + ")()"
PRESENTER_FROM_URL_JS = ("() => (" + PRESENTER_JS + ")(new URLSearchParams(window.location.search).get('presenter') "
                         "=== '1')")


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="LLM Inference Explorer") as demo:
        facts = header.build()
        demo.model_facts = facts  # tabs listen to its change event: see components.common.model_changed
        with gr.Row(elem_id="lie-toolbar"):
            tour_start = gr.Button("▶ Start here: guided tour", variant="primary", size="sm", elem_id="lie-tour-start",
                                   scale=0, min_width=230)
            presenter = gr.Button("📽 Presenter mode", size="sm", elem_id="lie-presenter-toggle", scale=0, min_width=200)
        with gr.Group(visible=False, elem_id="lie-tour") as tour_panel:
            tour_text = gr.Markdown(elem_id="lie-tour-text")
            with gr.Row():
                tour_back = gr.Button("◀ Back", size="sm", elem_id="lie-tour-back")
                tour_next = gr.Button("Next ▶", size="sm", variant="primary", elem_id="lie-tour-next")
                tour_end = gr.Button("End tour", size="sm", elem_id="lie-tour-end")
        with gr.Tabs(elem_id="lie-tabs") as tabs:
            demo.tabs = tabs  # a tab can switch to another by returning gr.Tabs(selected=<tab module name>)
            for name, tab in zip(TAB_NAMES, TABS):
                with gr.Tab(tab.TITLE, id=f"{name}_tab"):
                    tab.build(demo)
        with gr.Accordion("Limits on this server", open=False, elem_id="lie-limits"):
            gr.HTML(limits_html())
        # A visitor sees the model loaded now, even if someone switched it after the page was built.
        demo.load(lambda: model_facts_html(current_session()), None, facts, api_visibility="private", queue=False)
        # A shared link opens its tab (each tab applies its own values: components.share).
        demo.load(open_linked_tab, None, tabs, api_visibility="private", queue=False)
        demo.load(None, None, presenter, js=PRESENTER_FROM_URL_JS)
        presenter.click(None, None, presenter, js=PRESENTER_TOGGLE_JS)

        tour_step = gr.State(0)
        tour_outputs = [tour_step, tour_panel, tour_text, tabs, tour_back, tour_next]
        tour_start.click(lambda: tour_view(0), None, tour_outputs, api_visibility="private", queue=False)
        tour_next.click(lambda i: tour_view(i + 1), tour_step, tour_outputs, api_visibility="private", queue=False)
        tour_back.click(lambda i: tour_view(i - 1), tour_step, tour_outputs, api_visibility="private", queue=False)
        tour_end.click(lambda: (0, gr.Group(visible=False)), None, [tour_step, tour_panel], api_visibility="private",
                       queue=False)
    demo.queue(max_size=limits.QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def open_linked_tab(request: gr.Request):
    return tab_from_query(dict(request.query_params), TAB_NAMES) if request else gr.skip()


def tour_view(step: int):
    """The tour at `step` (clamped; past the last step it closes): its text, its tab, and the buttons."""
    if step >= len(TOUR):
        return 0, gr.Group(visible=False), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    step = max(0, step)
    stop = TOUR[step]
    title = TABS[TAB_NAMES.index(stop["tab"])].TITLE
    text = (f"**Guided tour · step {step + 1} of {len(TOUR)} · {title} tab**\n\n"
            f"### {stop['title']}\n\n{stop['text']}")
    last = step == len(TOUR) - 1
    return (step, gr.Group(visible=True), text, gr.Tabs(selected=f"{stop['tab']}_tab"),
            gr.Button(interactive=step > 0), gr.Button(value="Finish ✓" if last else "Next ▶"))


def limits_html() -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in limits.describe())
    note = ("Model calls run one at a time, each using every CPU core; a request that arrives meanwhile waits "
            "in the queue and says so.")
    return f"<table class='lie-limits'>{rows}</table><p class='lie-note'>{html.escape(note)}</p>"


def configure_threads() -> None:
    """One model call at a time, using every core: measured on 2 cores, two 128-token passes run in
    1.5 s one after the other with 2 threads each, but 3.0 s side by side (oversubscribed)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cores)


def launch_kwargs() -> dict:
    """theme and css go to launch() in Gradio 6."""
    return dict(
        theme=gr.themes.Soft(primary_hue="blue"),
        css=(ASSETS / "style.css").read_text(),
        allowed_paths=[str(ASSETS)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local folder (default: the bundled SmolLM2)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_threads()
    if args.model:
        switch_model(args.model)
    session = current_session()  # load before serving: the first visitor should not wait for it
    logging.info("model %s on %s, loaded in %.1f s (%s)", session.model_id, session.device, session.load_seconds, session.source)
    build_demo().launch(server_port=args.port, **launch_kwargs())


if __name__ == "__main__":
    main()
