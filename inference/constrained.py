"""Structured output: a grammar masks every token that cannot continue a valid output, one more pipeline stage.

    constraint = Constraint("json_schema", {"type": "object", "properties": {...}})
    state = GrammarState(session, constraint, generated_ids)   # the grammar after the tokens so far
    masked = state.apply(logits)        # logits [V] with every forbidden token at -inf
    state.allowed                       # bool [V]: the tokens the grammar allows next
    state.accept(token_id)              # move on by one token

Kinds of constraint:
    choice       exactly one of a list of strings ("yes" / "no")
    regex        text that fully matches a regular expression (a date: \\d{4}-\\d{2}-\\d{2})
    json_schema  a JSON value that matches a JSON schema ({"name": string, "age": integer})

All grammar logic is xgrammar's (0.2.8, pinned in the Makefile): it compiles a constraint against the model's
vocabulary once (`GrammarCompiler`), a `GrammarMatcher` follows the tokens generated so far and fills a bitmask
of the tokens allowed next, and `apply_token_bitmask_inplace` sets the others to -inf. That is exactly what its
transformers processor (`xgrammar.contrib.hf.LogitsProcessor`, passed as `generate(logits_processor=[...])`)
does at each step; the processor keeps that matcher as hidden state for one linear run, so the app uses the
matcher itself: stepping back, branching and re-viewing an old step rebuild the state from the step's prefix
(accepting a few dozen tokens takes microseconds). Tests check that greedy constrained generation equals
`model.generate(logits_processor=[xgrammar's processor])` token for token.

Where the mask sits in the pipeline: see `sampling.py` (after the penalties and min new tokens, before
temperature and the filters: where transformers puts a user's logits processor).

The library is optional at import time: on a server without it, `unavailable_reason()` says so in one sentence
and a constraint raises that sentence as an InputError.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import InputError, Message
from .limits import MAX_CHOICE_CHARS, MAX_CHOICES, MAX_CONSTRAINT_CHARS, MAX_JSON_WHITESPACE
from .model.vocab import eos_ids

KINDS = ("choice", "regex", "json_schema")

# Presets the Sampling tab offers (and the lesson uses): a yes/no answer, a date, a person.
YES_NO = ("yes", "no")
DATE_REGEX = r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"  # YYYY-MM-DD with a real month and day
# Bounded, as a real app would: without the bounds a sampled run can write digits or letters until it runs out
# of tokens (measured: '"age": 21336538220860086748827638...' at temperature 1).
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
    "required": ["name", "age"],
}


# ---------------------------------------------------------------------------------------------------
# The library, imported on first use (guarded: a server may lack it)


@functools.cache
def _library():
    """The xgrammar module, or the ImportError that says why there is none."""
    try:
        import xgrammar

        return xgrammar
    except Exception as exc:  # ImportError, or a broken binary dependency (apache-tvm-ffi)
        return exc


def unavailable_reason() -> Message | None:
    """None when constrained decoding works here, else one sentence saying why not (`str()` is its English)."""
    lib = _library()
    if isinstance(lib, Exception):
        return Message("constrained.unavailable", "Constrained decoding is not available on this server: the xgrammar "
                       "package is not installed ({error}); `make setup` installs it.", {"error": type(lib).__name__})
    return None


def _xgr():
    reason = unavailable_reason()
    if reason:
        raise InputError(reason)
    return _library()


# ---------------------------------------------------------------------------------------------------
# What to constrain to


@dataclass(frozen=True)
class Constraint:
    """A constraint on the generated text: `kind` one of KINDS, `spec` the choices / the regex / the schema.

    The spec is stored normalised (a tuple of choices, the regex, the schema as JSON text), so equal
    constraints compare and hash equal; checks raise one clear InputError sentence."""

    kind: str
    spec: Any

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError("constrained.bad_kind", "The constraint kind must be one of {kinds}; got {kind!r}.",
                             kinds=", ".join(KINDS), kind=str(self.kind)[:40])  # quote what was typed, not all of it
        object.__setattr__(self, "spec", _normalise(self.kind, self.spec))

    @classmethod
    def from_text(cls, kind: str | None, text: str | None) -> "Constraint | None":
        """From the UI or the API: kind "none" (or empty) means no constraint; choices are typed one per line."""
        kind = (kind or "none").strip()
        if kind == "none":
            return None
        if kind in KINDS and not (text or "").strip():
            raise InputError(EMPTY[kind])
        return cls(kind, text)  # an unknown kind: the sentence that names the kinds

    @property
    def text(self) -> str:
        """The spec as typed in the UI's box (choices one per line), for a link or a form."""
        return "\n".join(self.spec) if self.kind == "choice" else self.spec

    def shown(self) -> str:
        """The spec as a description quotes it: the choices as JSON strings, the regex, the schema (shortened)."""
        if self.kind == "choice":
            return " / ".join(json.dumps(c, ensure_ascii=False) for c in self.spec)
        if self.kind == "regex":
            return self.spec
        return self.spec if len(self.spec) <= 100 else self.spec[:99] + "…"

    def description(self) -> Message:
        """What the constraint allows, in words: a Message (the page shows it in the visitor's language)."""
        if self.kind == "choice":
            return Message("constrained.describe_choice", "one of {choices}", {"choices": self.shown()})
        if self.kind == "regex":
            return Message("constrained.describe_regex", "text matching /{regex}/", {"regex": self.shown()})
        return Message("constrained.describe_schema", "JSON matching the schema {schema}", {"schema": self.shown()})

    def describe(self) -> str:
        """The description in English (the API's words)."""
        return str(self.description())


# The box is empty: the sentence names what to type (a word in a field would stay English in a translation).
EMPTY = {
    "choice": Message("constrained.empty_choice", "Type the list of choices for the constraint, or set it to none."),
    "regex": Message("constrained.empty_regex", "Type the regular expression for the constraint, or set it to none."),
    "json_schema": Message("constrained.empty_json_schema",
                           "Type the JSON schema for the constraint, or set it to none."),
}


def _normalise(kind: str, spec: Any) -> Any:
    if kind == "choice":
        if isinstance(spec, str):
            spec = spec.splitlines()
        if not isinstance(spec, (list, tuple)) or not all(isinstance(c, str) for c in spec):
            raise InputError("constrained.choices_not_strings",
                             "The choices must be a list of strings (in the app: one choice per line).")
        choices = tuple(dict.fromkeys(c.strip() for c in spec if c.strip()))
        if not choices:
            raise InputError("constrained.no_choice", "Give at least one choice (one per line).")
        if len(choices) > MAX_CHOICES:
            raise InputError("constrained.too_many_choices", "At most {limit} choices are allowed; got {count}.",
                             limit=MAX_CHOICES, count=len(choices))
        if any(len(c) > MAX_CHOICE_CHARS for c in choices):
            raise InputError("constrained.choice_too_long", "A choice may have at most {limit} characters.",
                             limit=MAX_CHOICE_CHARS)
        return choices
    if kind == "regex":
        if not isinstance(spec, str) or not spec:
            raise InputError("constrained.regex_empty", "The regular expression must be a non-empty string.")
        if len(spec) > MAX_CONSTRAINT_CHARS:
            raise InputError("constrained.regex_too_long",
                             "The regular expression may have at most {limit:,} characters.", limit=MAX_CONSTRAINT_CHARS)
        return spec
    # json_schema: a dict, or its JSON text
    if isinstance(spec, str):
        if len(spec) > MAX_CONSTRAINT_CHARS:
            raise InputError("constrained.schema_too_long", "The JSON schema may have at most {limit:,} characters.",
                             limit=MAX_CONSTRAINT_CHARS)
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise InputError("constrained.schema_not_json",
                             "The JSON schema is not valid JSON: {error} (line {line}, column {column}).",
                             error=exc.msg, line=exc.lineno, column=exc.colno) from None
    if not isinstance(spec, dict):
        raise InputError("constrained.schema_not_object",
                         'The JSON schema must be a JSON object, such as {{"type": "object", "properties": {{...}}}}.')
    text = json.dumps(spec, ensure_ascii=False)  # key order kept: it is the order the fields are generated in
    if len(text) > MAX_CONSTRAINT_CHARS:
        raise InputError("constrained.schema_too_long", "The JSON schema may have at most {limit:,} characters.",
                         limit=MAX_CONSTRAINT_CHARS)
    return text


PRESETS = {
    "yes / no": Constraint("choice", YES_NO),
    "a date (YYYY-MM-DD)": Constraint("regex", DATE_REGEX),
    "a person (JSON)": Constraint("json_schema", PERSON_SCHEMA),
}


# ---------------------------------------------------------------------------------------------------
# Compiling against a model's vocabulary


class Grammars:
    """One model's grammar compiler (its vocabulary read once); the compiler caches what it compiled."""

    def __init__(self, session):
        xgr = _xgr()
        # vocab_size must be the model's (its logits' width), which may exceed the tokenizer's (padding);
        # the stop tokens are the ones the app stops at, so the grammar ends exactly where a run ends.
        self.info = xgr.TokenizerInfo.from_huggingface(session.tokenizer, vocab_size=session.facts.vocab_size,
                                                       stop_token_ids=eos_ids(session))
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_limit_bytes=32 * 2**20)

    def compile(self, constraint: Constraint):
        try:
            if constraint.kind == "choice":  # JSON string literals are valid EBNF string literals
                ebnf = "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in constraint.spec)
                return self.compiler.compile_grammar(ebnf)
            if constraint.kind == "regex":
                return self.compiler.compile_regex(constraint.spec)
            return self.compiler.compile_json_schema(constraint.spec, any_whitespace=True,
                                                     max_whitespace_cnt=MAX_JSON_WHITESPACE)
        except (RuntimeError, ValueError, TypeError) as exc:
            error = _library_message(exc)  # xgrammar's own words (English)
            if constraint.kind == "choice":
                raise InputError("constrained.unusable_choice", "The list of choices cannot be used: {error}",
                                 error=error) from None
            if constraint.kind == "regex":
                raise InputError("constrained.unusable_regex", "The regular expression cannot be used: {error}",
                                 error=error) from None
            raise InputError("constrained.unusable_json_schema", "The JSON schema cannot be used: {error}",
                             error=error) from None

    def retained_bytes(self) -> int:
        return int(self.compiler.get_cache_size_bytes())


def _library_message(exc: Exception) -> str:
    """xgrammar's error, without its C++ file and line: `[12:00:00] /project/cpp/x.cc:83: Check failed: ...`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", text)
    text = re.sub(r"^Check failed: \(.*?\) is false:\s*", "", text)
    text = text.split(" The JSON string is:")[0].strip()
    return text if text.endswith(".") else text + "."


def grammars(session) -> Grammars:
    return session.analysis("grammars", (), lambda: Grammars(session))


def compiled(session, constraint: Constraint):
    """The constraint compiled for this model's vocabulary (xgrammar's CompiledGrammar; cached by the compiler).
    Also what a test hands to `xgrammar.contrib.hf.LogitsProcessor`."""
    return grammars(session).compile(constraint)


def check(session, constraint: Constraint | None) -> None:
    """Compile once up front, so a bad regex or schema fails with its sentence before the model runs."""
    if constraint is not None:
        compiled(session, constraint)


# ---------------------------------------------------------------------------------------------------
# The grammar at one step


class GrammarState:
    """Where the grammar stands after some generated tokens: the mask of the next step, and its record."""

    def __init__(self, session, constraint: Constraint, tokens: Sequence[int] = ()):
        xgr = _xgr()
        self.constraint = constraint
        self.vocab_size = session.facts.vocab_size
        self._xgr = xgr
        self._matcher = xgr.GrammarMatcher(compiled(session, constraint))
        self._bitmask = None  # [1, ceil(V/32)] int32, filled lazily for the current step
        self._allowed = None
        self.session = session
        for i, token in enumerate(tokens):
            if not self._matcher.accept_token(int(token)):
                raise InputError(self._stuck(i + 1, token))

    def _fill(self):
        if self._bitmask is None:
            self._bitmask = self._xgr.allocate_token_bitmask(1, self.vocab_size)
            self._matcher.fill_next_token_bitmask(self._bitmask)
        return self._bitmask

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [V] with every token the grammar forbids here set to -inf (a copy; the input is kept)."""
        out = logits.clone()
        self._xgr.apply_token_bitmask_inplace(out, self._fill()[0].to(out.device), vocab_size=self.vocab_size)
        return out

    @property
    def allowed(self) -> torch.Tensor:
        """bool [V]: the tokens the grammar allows as the next token."""
        if self._allowed is None:
            self._allowed = torch.isfinite(self.apply(torch.zeros(self.vocab_size)))
        return self._allowed

    def accepts(self, token: int) -> bool:
        return bool(self.allowed[int(token)])

    def accept(self, token: int) -> None:
        """Move on by one token (after the draw); a token the grammar forbids is an InputError."""
        if not self._matcher.accept_token(int(token)):
            raise InputError(self.refusal(token))
        self._bitmask = self._allowed = None

    def _stuck(self, n: int, token: int) -> Message:
        """Token n of the text so far broke the grammar (one sentence per kind: what the constraint allows)."""
        piece, shown = _piece(self.session, token), self.constraint.shown()
        if self.constraint.kind == "choice":
            return Message("constrained.stuck_choice", "Token {n} of the text so far ({piece}) is not allowed by the "
                           "constraint (one of {choices}); it cannot go on from there.",
                           {"n": n, "piece": piece, "choices": shown})
        if self.constraint.kind == "regex":
            return Message("constrained.stuck_regex", "Token {n} of the text so far ({piece}) is not allowed by the "
                           "constraint (text matching /{regex}/); it cannot go on from there.",
                           {"n": n, "piece": piece, "regex": shown})
        return Message("constrained.stuck_json_schema", "Token {n} of the text so far ({piece}) is not allowed by the "
                       "constraint (JSON matching the schema {schema}); it cannot go on from there.",
                       {"n": n, "piece": piece, "schema": shown})

    def refusal(self, token: int) -> Message:
        """Why `token` cannot come next (one sentence per kind: what the constraint allows); `str()` is English."""
        piece, shown = _piece(self.session, token), self.constraint.shown()
        if self.constraint.kind == "choice":
            return Message("constrained.refused_choice", "The token {piece} is not allowed by the constraint (one of "
                           "{choices}) here; pick a token it allows (one that is not greyed out).",
                           {"piece": piece, "choices": shown})
        if self.constraint.kind == "regex":
            return Message("constrained.refused_regex", "The token {piece} is not allowed by the constraint (text "
                           "matching /{regex}/) here; pick a token it allows (one that is not greyed out).",
                           {"piece": piece, "regex": shown})
        return Message("constrained.refused_json_schema", "The token {piece} is not allowed by the constraint (JSON "
                       "matching the schema {schema}) here; pick a token it allows (one that is not greyed out).",
                       {"piece": piece, "schema": shown})

    @property
    def complete(self) -> bool:
        """The text so far is a whole valid output (the grammar could end here)."""
        return self._matcher.is_completed() or self._matcher.is_terminated()


def _piece(session, token) -> str:
    return repr(session.tokenizer.decode([int(token)]))


# ---------------------------------------------------------------------------------------------------
# Is a text valid?


def matches(session, constraint: Constraint, text: str) -> bool:
    """The text, exactly as it is, is a complete output the constraint allows (the grammar's own check, on
    the text's bytes: any tokenization of the same text counts)."""
    matcher = _xgr().GrammarMatcher(compiled(session, constraint))
    return bool(text) and matcher.accept_string(text) and matcher.is_completed()


@dataclass(frozen=True)
class Validity:
    """Whether a text is a valid output: as it is, or once the spaces and newlines around it are trimmed."""

    exact: bool
    trimmed: bool

    def describe(self) -> str:
        if self.exact:
            return "valid"
        return "valid once the spaces around it are trimmed" if self.trimmed else "not valid"


def validity(session, constraint: Constraint, text: str) -> Validity:
    exact = matches(session, constraint, text)
    return Validity(exact, exact or (text.strip() != text and matches(session, constraint, text.strip())))
