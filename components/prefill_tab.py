"""Prefill & decode tab (coming next: issue 6)."""

import gradio as gr

TITLE = "Prefill & decode"


def build(demo: gr.Blocks) -> None:
    gr.Markdown(
        "**Coming next.** This tab will show measured TTFT, TPOT, tokens/s and the KV cache growing, "
        "measured on the loaded model. The Tokenizer tab works today."
    )
