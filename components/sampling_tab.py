"""Sampling tab (coming next: issue 4)."""

import gradio as gr

TITLE = "Sampling"


def build(demo: gr.Blocks) -> None:
    gr.Markdown(
        "**Coming next.** This tab will show from raw logits through penalties, temperature, top-k, top-p and min-p to the drawn token, "
        "measured on the loaded model. The Tokenizer tab works today."
    )
