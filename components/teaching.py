"""Lessons: one Markdown file per tab and language in assets/lessons/<lang>/, shown at the top of the tab in
the visitor's language, with "try this" buttons that load a prompt and settings with one click.

A lesson file starts with YAML front matter:

    ---
    title: Tokens and the chat template
    summary: one line, used by the guided tour
    try:
      - label: The capital of France
        values: {prompt: "The capital of France is", chat: false}
    ---
    Markdown body. {{layers}}, {{heads}}, ... are replaced by the loaded model's facts (see `lesson_facts`),
    so a number a lesson states about the model is read from the model, never typed by hand.

`values` keys are the tab's field names (the same keys as its shareable link, see components.share).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from inference.model.kv import kv_shape

from .common import model_changed, session
from .i18n import DEFAULT, LANGUAGES, RTL, language, t

LESSONS_DIR = Path(__file__).resolve().parent.parent / "assets" / "lessons"
PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")


@dataclass(frozen=True)
class TryThis:
    label: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    summary: str
    body: str  # Markdown with {{fact}} placeholders
    tries: list[TryThis] = field(default_factory=list)


@functools.cache
def load_lesson(name: str, lang: str = DEFAULT) -> Lesson:
    """assets/lessons/<lang>/<name>.md, parsed. `name` comes from code (a tab's name) and `lang` is one of
    LANGUAGES, never a user's text."""
    if lang not in LANGUAGES:
        raise ValueError(f"no language {lang!r}")
    text = (LESSONS_DIR / lang / f"{name}.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, flags=re.S)
    if not match:
        raise ValueError(f"lesson {lang}/{name}: missing the --- front matter ---")
    meta = yaml.safe_load(match.group(1)) or {}
    tries = [TryThis(str(t["label"]), dict(t.get("values") or {})) for t in meta.get("try") or []]
    return Lesson(name, str(meta["title"]), str(meta.get("summary", "")), match.group(2).strip(), tries)


@functools.cache
def load_yaml(name: str, lang: str = DEFAULT):
    """A lesson-side YAML file (tour.yaml, forward_boxes.yaml) in `lang`."""
    if lang not in LANGUAGES:
        raise ValueError(f"no language {lang!r}")
    return yaml.safe_load((LESSONS_DIR / lang / name).read_text(encoding="utf-8"))


def lesson_names() -> list[str]:
    return sorted(p.stem for p in (LESSONS_DIR / DEFAULT).glob("*.md"))


def lesson_facts(s) -> dict[str, str]:
    """The numbers a lesson may state about the loaded model, formatted for reading."""
    f = s.facts
    kv = kv_shape(s)
    return {
        "model": s.label,
        "layers": f"{f.num_layers}",
        "heads": f"{f.num_heads}",
        "kv_heads": f"{f.num_kv_heads}",
        "gqa_group": f"{f.num_heads // max(1, f.num_kv_heads)}",
        "head_dim": f"{f.head_dim}",
        "hidden": f"{f.hidden_size:,}",
        "intermediate": f"{f.intermediate_size:,}",
        "vocab": f"{f.vocab_size:,}",
        "context": f"{f.context_length:,}",
        "params_m": f"{f.num_parameters / 1e6:,.0f}",
        "dtype": kv.dtype,
        "bytes_per_element": f"{kv.bytes_per_element}",
        "kv_bytes_per_token": f"{kv.bytes_per_token:,}",
        "kv_kb_per_token": f"{kv.bytes_per_token / 1024:,.0f}",
        "kv_mb_per_1k_tokens": f"{kv.bytes_for(1000) / 1e6:,.1f}",
    }


def render_lesson(lesson: Lesson, s) -> str:
    """The lesson's Markdown with the model's facts filled in (an unknown placeholder is a bug: KeyError)."""
    facts = lesson_facts(s)
    return PLACEHOLDER.sub(lambda m: facts[m.group(1)], lesson.body)


class LessonPanel:
    """A tab's lesson, rendered where it is created (at the top of the tab), in the visitor's language. Its "try
    this" buttons are wired by `connect` once the tab has made the fields they set."""

    def __init__(self, demo: gr.Blocks, name: str, open: bool = True):
        self.name = name
        self.lesson = load_lesson(name)
        with gr.Accordion(t("lesson.heading", DEFAULT, title=self.lesson.title), open=open, elem_id=f"lesson-{name}",
                          elem_classes=["lie-lesson"]) as panel:
            body = gr.Markdown(render_lesson(self.lesson, session()), elem_classes=["lie-lesson-body"])
            self.buttons = []
            if self.lesson.tries:
                with gr.Row(elem_classes=["lie-try-row"]):
                    label = gr.HTML(self._try_label(DEFAULT), elem_classes=["lie-try-label-box"], container=False)
                    self.buttons = [gr.Button(t.label, size="sm", variant="secondary", elem_classes=["lie-try"],
                                              elem_id=f"try-{name}-{i}") for i, t in enumerate(self.lesson.tries)]
        texts = demo.texts
        texts.add(panel, lambda lang: gr.update(label=t("lesson.heading", lang, title=load_lesson(name, lang).title)))
        texts.add(body, lambda lang: gr.update(value=render_lesson(load_lesson(name, lang), session()),
                                               rtl=lang in RTL))
        if self.buttons:
            texts.add(label, lambda lang: self._try_label(lang))
            for i, button in enumerate(self.buttons):
                texts.add(button, lambda lang, i=i: gr.update(value=load_lesson(name, lang).tries[i].label))
        model_changed(demo)(lambda: render_lesson(load_lesson(name, language()), session()), None, body,
                            api_visibility="private", queue=False)

    @staticmethod
    def _try_label(lang: str) -> str:
        return f"<span class='lie-try-label'>{t('lesson.try', lang)}</span>"

    def connect(self, fields: dict[str, gr.components.Component], then: dict | None = None) -> list:
        """A click on a "try this" sets the fields it names (the try of the visitor's language: a lesson may teach
        with a sentence in that language), then runs `then` (kwargs of an event: fn, inputs, outputs,
        concurrency_id...) if given. Returns the events, for a tab that needs to chain more."""
        events = []
        for i, (t, button) in enumerate(zip(self.lesson.tries, self.buttons)):
            unknown = set(t.values) - set(fields)
            if unknown:
                raise ValueError(f"lesson {self.lesson.name}, try {t.label!r}: no field named {sorted(unknown)}")
            keys = list(t.values)

            def values(i=i, keys=keys):
                chosen = load_lesson(self.name, language()).tries[i].values
                v = [chosen.get(k, self.lesson.tries[i].values[k]) for k in keys]
                return v if len(v) > 1 else v[0]

            event = button.click(values, None, [fields[k] for k in keys], queue=False, api_visibility="private")
            if then:
                event = event.then(**{"api_visibility": "private", **then})
            events.append(event)
        return events
