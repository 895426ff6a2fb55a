"""Serving tab, the event handlers: serve a burst three ways (`inference.continuous`) and draw it (`figures`)."""

from __future__ import annotations

import re

import gradio as gr

from inference.continuous import serve_burst
from inference.errors import InputError
from inference.limits import MAX_BURST_NEW_TOKENS
from inference.serving import batcher_stats

from ..common import session, user_errors
from ..export import csv_file
from ..i18n import language, t
from .figures import (
    burst_table,
    gantt_figure,
    gantt_summary,
    headline_html,
    requests_html,
    schedule_figure,
    schedule_summary,
)

BUDGET = re.compile(r"^(.*?)\s*\|\s*(\d+)\s*$")


def parse_burst(text: str | None, default_budget: int) -> tuple[list[str], list[int]]:
    """One request per line: `prompt | new tokens`; a line without `| n` gets the default budget."""
    prompts, budgets = [], []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        match = BUDGET.match(line)
        prompt, budget = (match.group(1), int(match.group(2))) if match else (line, int(default_budget))
        if not prompt.strip():
            raise InputError(t("serving.error_no_prompt", line=repr(line.strip()[:40])))
        if not 1 <= budget <= MAX_BURST_NEW_TOKENS:
            raise InputError(t("serving.error_budget", max=MAX_BURST_NEW_TOKENS, budget=budget))
        prompts.append(prompt.strip())
        budgets.append(budget)
    return prompts, budgets


def _chat(chat: bool) -> bool:
    return bool(chat) and session().has_chat_template


def views(cmp, live: dict | None, lang: str) -> tuple:
    """The run's views in `lang`: headline, schedule and its summary, the three modes in time and their summary,
    the per-request table."""
    return (headline_html(cmp, live, lang), schedule_figure(cmp, lang), schedule_summary(cmp, lang),
            gantt_figure(cmp, lang), gantt_summary(cmp, lang), requests_html(cmp, lang))


@user_errors
def on_serve(burst_text, default_budget, chat, num_blocks, max_batch_tokens):
    """Serve the burst with the engine, as a static batch and one at a time; every view of the run, the CSV, and
    the run itself (kept for this page, so a change of language redraws the views without a new run)."""
    prompts, budgets = parse_burst(burst_text, int(default_budget or 16))
    s = session()
    cmp = serve_burst(s, prompts, budgets, _chat(chat), int(num_blocks), int(max_batch_tokens))
    live = batcher_stats(s)
    header, rows = burst_table(cmp)
    return (*views(cmp, live, language()),
            gr.DownloadButton(value=csv_file("serving-burst", header, rows), interactive=True), (cmp, live))


def on_language(last):
    """A new language: the last run's views redrawn in it (no model pass); nothing to do before a run."""
    if last is None:
        return tuple(gr.skip() for _ in range(6))
    cmp, live = last
    return views(cmp, live, language())


def on_model():
    """A new model: old results go (the chat box follows the model's template)."""
    return (gr.Checkbox(value=session().has_chat_template), "", None, "", None, "", "",
            gr.DownloadButton(value=None, interactive=False), None)
