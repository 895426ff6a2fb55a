"""Attention tab (coming next: issue 3)."""

import gradio as gr

TITLE = "Attention"


def build(demo: gr.Blocks) -> None:
    gr.Markdown(
        "**Coming next.** This tab will show where every head of every layer looks, attention during decode, and a logit lens, "
        "measured on the loaded model. The Tokenizer tab works today."
    )
