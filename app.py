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

from components import attention_tab, beam_tab, forward_tab, header, prefill_tab, sampling_tab, tokenizer_tab
from components.header import model_facts_html
from inference import limits
from inference.session import current_session, switch_model

ASSETS = Path(__file__).parent / "assets"
# Lesson order (the Hugging Face course's outline): tokens, attention, sampling, beam search, cost.
TABS = [tokenizer_tab, forward_tab, attention_tab, sampling_tab, beam_tab, prefill_tab]


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="LLM Inference Explorer") as demo:
        facts = header.build()
        demo.model_facts = facts  # tabs listen to its change event: see components.common.model_changed
        with gr.Tabs(elem_id="lie-tabs") as tabs:
            demo.tabs = tabs  # a tab can switch to another by returning gr.Tabs(selected=<tab module name>)
            for tab in TABS:
                with gr.Tab(tab.TITLE, id=tab.__name__.rsplit(".", 1)[-1]):
                    tab.build(demo)
        with gr.Accordion("Limits on this server", open=False, elem_id="lie-limits"):
            gr.HTML(limits_html())
        # A visitor sees the model loaded now, even if someone switched it after the page was built.
        demo.load(lambda: model_facts_html(current_session()), None, facts, api_visibility="private", queue=False)
    demo.queue(max_size=limits.QUEUE_SIZE, default_concurrency_limit=1)
    return demo


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
