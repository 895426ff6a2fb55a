"""Beam search tab (coming next: issue 5)."""

import gradio as gr

TITLE = "Beam search"


def build(demo: gr.Blocks) -> None:
    gr.Markdown(
        "**Coming next.** This tab will show the animated tree of the real search, with scores and pruned hypotheses, "
        "measured on the loaded model. The Tokenizer tab works today."
    )
