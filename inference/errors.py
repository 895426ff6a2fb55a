"""Errors a user can cause and read: each carries one clear sentence, shown in the UI and the API.

A sentence is a `Message`: a catalogue key, its English text with {fields}, and the fields' values (numbers, ids,
code names, what the user typed; never an English word, which would stay English in a translation). `str()` of
the error is the English sentence, which the API answers; the page shows the catalogue's text for the key in the
visitor's language (`components.i18n.message`, catalogue files `assets/i18n/<lang>/inference.yaml`). The English
text lives here, at the raise, so the code reads as before; `tests/test_i18n.py` collects every key from the
source and checks each language has it with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field


MAX_QUOTED = 120  # characters of a text field a sentence shows


@dataclass(frozen=True)
class Message:
    """A sentence for the user, translatable: `key` names it in the catalogue, `english` is its text in English."""

    key: str
    english: str
    fields: dict = field(default_factory=dict)

    def __post_init__(self):
        # A field may quote what a user sent: a sentence quotes the start of it, never a whole pasted book.
        cut = {k: v[:MAX_QUOTED] + "…" if isinstance(v, str) and len(v) > MAX_QUOTED else v
               for k, v in self.fields.items()}
        object.__setattr__(self, "fields", cut)

    def filled(self, **fields) -> "Message":
        """This sentence (a template made without its fields) with its fields' values."""
        return Message(self.key, self.english, fields)

    def __str__(self) -> str:
        return self.english.format(**self.fields) if self.key else self.english


class _Explained(Exception):
    def __init__(self, key: str | Message, english: str | None = None, /, **fields):
        if isinstance(key, Message):
            self.message = key
        elif english is None:  # a sentence without a key: shown as is, in English (the test allows none in inference/)
            self.message = Message("", str(key))
        else:
            self.message = Message(key, english, fields)
        super().__init__(str(self.message))


class InputError(_Explained, ValueError):
    """The request itself is invalid (empty text, a parameter out of range, over a stated cap)."""


class ModelLoadError(_Explained, RuntimeError):
    """A model could not be loaded; the app keeps the model it had."""
