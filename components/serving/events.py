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
            raise InputError(f"A line has a token budget but no prompt: {line.strip()[:40]!r}.")
        if not 1 <= budget <= MAX_BURST_NEW_TOKENS:
            raise InputError(f"Each request's new tokens must be from 1 to {MAX_BURST_NEW_TOKENS}; a line asks for "
                             f"{budget}.")
        prompts.append(prompt.strip())
        budgets.append(budget)
    return prompts, budgets


def _chat(chat: bool) -> bool:
    return bool(chat) and session().has_chat_template


@user_errors
def on_serve(burst_text, default_budget, chat, num_blocks, max_batch_tokens):
    """Serve the burst with the engine, as a static batch and one at a time; every view of the run."""
    prompts, budgets = parse_burst(burst_text, int(default_budget or 16))
    s = session()
    cmp = serve_burst(s, prompts, budgets, _chat(chat), int(num_blocks), int(max_batch_tokens))
    header, rows = burst_table(cmp)
    return (headline_html(cmp, batcher_stats(s)), schedule_figure(cmp), schedule_summary(cmp), gantt_figure(cmp),
            gantt_summary(cmp), requests_html(cmp),
            gr.DownloadButton(value=csv_file("serving-burst", header, rows), interactive=True))


def on_model():
    """A new model: old results go (the chat box follows the model's template)."""
    return (gr.Checkbox(value=session().has_chat_template), "", None, "", None, "", "",
            gr.DownloadButton(value=None, interactive=False))
