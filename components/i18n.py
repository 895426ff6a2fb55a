"""The learner's language: the page in English, 中文, Nederlands, فارسی (right to left) or తెలుగు.

Translation happens on the server, per visitor, because Gradio's own `gr.I18n` follows only the browser's
locale among the languages Gradio itself ships (Telugu is not one of them, and it cannot be switched from a
picker). The pieces:

- The message catalogue: `assets/i18n/<lang>/*.yaml` (app.yaml for the page, one file per tab), flat mappings of
  key -> text with `{name}` placeholders
  (Python format fields), so numbers are filled in when the text is shown, never typed into it. `t(key, **values)`
  reads it in this visitor's language.
- The visitor's language: picked by the header's language picker, or on page load from the link's `lang=`, the
  language this browser chose before (a `gr.BrowserState`), or the request's Accept-Language; kept server-side per
  browser session, like the visitor's model (`components.common.PerVisitor`).
- `Texts`, the page's registry of translated components: each registers how it reads in a given language; one
  event re-labels all of them when the visitor's language changes. Components are built in English, so an English
  page needs no update at all.
- Lessons and the guided tour live in `assets/lessons/<lang>/` (see `components.teaching`).
"""

from __future__ import annotations

import functools
import inspect
import string
from pathlib import Path
from typing import Callable

import gradio as gr
import yaml

from inference.errors import Message

from .common import PerVisitor

CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "assets" / "i18n"
# Each language by its own name, as the picker shows it.
LANGUAGES = {"en": "English", "zh": "中文", "nl": "Nederlands", "fa": "فارسی", "te": "తెలుగు"}
DEFAULT = "en"
RTL = frozenset({"fa"})
# Accept-Language tags that name one of ours by another code (zh-CN, zh-Hans, fa-IR, ...: the first part decides).
ALIASES = {"zh": "zh", "nl": "nl", "fa": "fa", "te": "te", "en": "en", "per": "fa", "chi": "zh", "dut": "nl",
           "tel": "te"}


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    """Every assets/i18n/<lang>/*.yaml in one mapping. `lang` is one of LANGUAGES (checked here), never a user's
    path. A tab's file (<tab>.yaml) holds only keys that begin with "<tab>.", so two files never define one key."""
    if lang not in LANGUAGES:
        raise ValueError(f"no language {lang!r}")
    merged: dict[str, str] = {}
    for path in sorted((CATALOGUE_DIR / lang).glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        for key, text in data.items():
            key = str(key)
            if path.stem != "app" and not key.startswith(f"{path.stem}."):  # inference.yaml: inference.<key>
                raise ValueError(f"{path}: key {key!r} must begin with {path.stem!r}.")
            if key in merged:
                raise ValueError(f"{path}: key {key!r} is defined twice")
            merged[key] = str(text)
    return merged


def placeholders(text: str) -> set[str]:
    """The {name} fields of a catalogue text (what every language's text must also have)."""
    return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(text) if field}


def known(lang: str | None) -> str | None:
    """`lang` if it names one of our languages (a tag such as zh-CN or fa-IR counts by its first part)."""
    if not lang:
        return None
    head = str(lang).strip().lower().replace("_", "-").split("-")[0]
    return ALIASES.get(head)


def from_accept_language(header: str | None) -> str | None:
    """The best of our languages in an Accept-Language header ("fa-IR,fa;q=0.9,en;q=0.8"), or None."""
    ranked = []
    for i, part in enumerate((header or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            q = 0.0
        if q > 0 and (lang := known(tag)):
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def page_language(query: dict[str, str], remembered: str | None, accept_language: str | None) -> str:
    """A page's language: the link's lang=, else this browser's earlier choice, else its Accept-Language."""
    return known(query.get("lang")) or known(remembered) or from_accept_language(accept_language) or DEFAULT


_visitor_languages = PerVisitor()


def language() -> str:
    """This visitor's language: the one their page set, else what the request asks for (a link's lang=, the
    browser's Accept-Language: a page's first events may run before its language is set), else English (an API
    call, a test)."""
    chosen = _visitor_languages.get()
    if chosen is not None:
        return chosen
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    if request is None:
        return DEFAULT
    try:
        query = dict(request.query_params)
        accept = request.headers.get("accept-language")
    except Exception:  # a request without a page behind it (e.g. a bare API call)
        return DEFAULT
    return page_language(query, None, accept)


def set_language(lang: str) -> str:
    lang = known(lang) or DEFAULT
    _visitor_languages.set(lang)
    return lang


def t(key: str, lang: str | None = None, **values) -> str:
    """The catalogue's text for `key` in `lang` (default: this visitor's), its {fields} filled from `values`.
    An unknown key is a bug (KeyError); a language missing a key falls back to English (the test forbids it)."""
    lang = lang or language()
    text = catalogue(lang).get(key)
    if text is None:
        text = catalogue(DEFAULT)[key]
    return text.format(**values) if values else text


def message(msg: Message, lang: str | None = None) -> str:
    """A sentence from `inference` (an error's `.message`) in `lang` (default: this visitor's): the catalogue's
    text for its key, filled with its fields; English (as raised) for English, or for a sentence without a key."""
    lang = lang or language()
    text = catalogue(lang).get(f"inference.{msg.key}") if msg.key and lang != DEFAULT else None
    if text is None:
        return str(msg)
    try:  # a field may itself be a Message (e.g. a constraint's description): in the same language
        return text.format(**{k: message(v, lang) if isinstance(v, Message) else v for k, v in msg.fields.items()})
    except (KeyError, IndexError, ValueError):  # a translation that breaks its fields (the test forbids it): English
        return str(msg)


def direction(lang: str) -> str:
    return "rtl" if lang in RTL else "ltr"


class T(str):
    """A catalogue key where a component argument takes text: `Texts.make` shows it in English at build time and
    registers it for translation (a str subclass, so it can stand where Gradio expects text)."""


class Texts:
    """The page's translated components: each registers how to read it in a language; `updates(lang)` gives one
    update per component, in registration order, for the event that re-labels the page."""

    def __init__(self):
        self.components: list = []
        self._readers: list[Callable[[str], object]] = []
        # A tab's gr.State that holds the language: its .change redraws results on screen (set in a queued event).
        self.states: list = []
        self._state_readers: list[Callable[[str], object]] = []

    def add(self, component, read: Callable[[str], object]):
        """`read(lang)` -> the component's update in that language. Returns the component."""
        stateful = isinstance(component, gr.State)
        (self.states if stateful else self.components).append(component)
        (self._state_readers if stateful else self._readers).append(read)
        return component

    def label(self, component, key: str, **values):
        """A component whose label is catalogue text `key`."""
        return self.add(component, lambda lang: gr.update(label=t(key, lang, **values)))

    def value(self, component, key: str, **values):
        """A component (a Button, a Markdown, an HTML) whose value is catalogue text `key`."""
        return self.add(component, lambda lang: gr.update(value=t(key, lang, **values)))

    def make(self, cls, *args, **kwargs):
        """`cls(*args, **kwargs)` with every `T(key)` argument (label, info, placeholder, value, the first positional
        argument, the display side of `choices`) shown in English now and translated on a language change; a
        Markdown also turns right to left for a right-to-left language."""
        if args and isinstance(args[0], T):  # the first parameter: `value` of a Button, `label` of an Accordion
            first = next(name for name in inspect.signature(cls.__init__).parameters if name != "self")
            kwargs[first], args = args[0], args[1:]
        keys = {name: v for name, v in kwargs.items() if isinstance(v, T)}
        choices = kwargs.get("choices")
        choice_keys = None
        if choices and any(isinstance(c, tuple) and isinstance(c[0], T) for c in choices):
            choice_keys = [(c[0], c[1]) if isinstance(c, tuple) else (c, c) for c in choices]
        english = {name: t(key, DEFAULT) for name, key in keys.items()}
        if choice_keys:
            english["choices"] = [(t(k, DEFAULT) if isinstance(k, T) else k, v) for k, v in choice_keys]
        component = cls(*args, **{**kwargs, **english})
        markdown = isinstance(component, gr.Markdown)

        def read(lang: str):
            update = {name: t(key, lang) for name, key in keys.items()}
            if choice_keys:
                update["choices"] = [(t(k, lang) if isinstance(k, T) else k, v) for k, v in choice_keys]
            if markdown:
                update["rtl"] = lang in RTL
            return gr.update(**update)

        return self.add(component, read)

    def markdown(self, key: str, **values) -> gr.Markdown:
        """A Markdown of catalogue text `key` with its {fields} filled from `values` (a `T` key carries none); right
        to left for a right-to-left language, as `make` makes it."""
        return self.add(gr.Markdown(t(key, DEFAULT, **values)),
                        lambda lang: gr.update(value=t(key, lang, **values), rtl=lang in RTL))

    def updates(self, lang: str) -> list:
        return [read(lang) for read in self._readers]

    def state_updates(self, lang: str) -> list:
        return [read(lang) for read in self._state_readers]


# Sets the page's direction and language for the browser (the picker's value is a language code), so Persian
# reads right to left; the style sheet keeps token chips, code and plots left to right inside it.
DIRECTION_JS = """(lang) => {
  const rtl = %s;
  document.documentElement.setAttribute('dir', rtl.includes(lang) ? 'rtl' : 'ltr');
  document.documentElement.setAttribute('lang', lang || 'en');
  return lang;
}""" % sorted(RTL)


def build_picker() -> gr.Dropdown:
    """The language picker (in the header): each language by its own name."""
    return gr.Dropdown(choices=[(name, code) for code, name in LANGUAGES.items()], value=DEFAULT,
                       label="Language · 语言 · Taal · زبان · భాష", elem_id="lie-lang", min_width=160,  # not translated: all
                       filterable=False)


def wire(demo, picker: gr.Dropdown, texts: Texts) -> None:
    """Page load picks the language (the link, then this browser's last choice, then Accept-Language); a change of
    the picker (by the visitor or by the load) re-labels every registered component and is remembered."""
    remembered = gr.BrowserState(None, storage_key="lie-language")

    def on_load(stored, request: gr.Request):
        from .share import page_query

        query = page_query(request)[0] if request else {}
        accept = request.headers.get("accept-language") if request else None
        return set_language(page_language(query, stored, accept))

    def on_change(lang):
        lang = set_language(lang)
        return [lang, *texts.updates(lang)]

    demo.language = picker  # the language's change event: what follows the language besides `texts`
    demo.load(on_load, remembered, picker, api_visibility="private", queue=False)
    # Progress hidden: the relabel is instant, and its outputs (every tab among them) must not join the components whose
    # loading status the page keeps (see app.limit_progress_targets).
    relabel = picker.change(on_change, picker, [remembered, *texts.components], queue=False, api_visibility="private",
                            show_progress="hidden")
    # `language_applied`: the page has its new language and direction (for steps that read them in the browser).
    demo.language_applied = relabel.then(None, picker, None, js=DIRECTION_JS, queue=False)
    # Then the tabs redraw the results on screen (their language States' .change), after the labels: Gradio fires a
    # gr.State's .change only after a queued event.
    demo.language_applied.then(lambda lang: texts.state_updates(set_language(lang)), picker, texts.states,
                               api_visibility="private", show_progress="hidden")
