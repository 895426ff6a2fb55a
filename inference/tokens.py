"""Text -> tokens, exactly as the model receives them, with pieces a person can read.

A token is a string of bytes. Byte-level BPE tokenizers (GPT-2, SmolLM2) spell those bytes with
printable stand-ins ("Ġ" for a space); SentencePiece tokenizers (Gemma) use "▁" for a space and
"<0xE4>" pieces for raw bytes. We recover each token's real bytes, show spaces and newlines with
visible marks, and flag tokens whose bytes are only part of a UTF-8 character (a Chinese character
or an emoji split across two tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InputError, Message
from .limits import MAX_TEXT_CHARS, MAX_TOKENIZE_TOKENS

BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
VISIBLE = {" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"}


@dataclass(frozen=True)
class TokenView:
    """One tokenized text. All lists have one entry per token."""

    text: str  # the text the model receives (the full chat-template text when chat=True)
    chat: bool
    ids: list[int]
    pieces: list[str]  # readable display of each token
    special: list[bool]  # control tokens (<|im_start|>, <bos>, ...) rather than text
    offsets: list[tuple[int, int]]  # character span of each token in `text`
    token_bytes: list[bytes]
    partial: list[bool]  # bytes are an incomplete UTF-8 character (the rest is in a neighbour)

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def num_chars(self) -> int:
        return len(self.text)

    @property
    def chars_per_token(self) -> float:
        return self.num_chars / self.num_tokens if self.ids else 0.0


# What a text box holds decides the sentence (a word in a field would stay English in a translation).
EMPTY = {"text": Message("tokens.empty_text", "The text is empty: type something first."),
         "prompt": Message("tokens.empty_prompt", "The prompt is empty: type something first.")}


def clean_text(text: str | None, what: str = "text") -> str:
    """Reject empty or oversized text; replace lone surrogates (invalid Unicode) with U+FFFD. `what` is "text" or
    "prompt", the name of the box in the sentence."""
    if text is None or not str(text).strip():
        raise InputError(EMPTY[what])
    text = str(text)
    if len(text) > MAX_TEXT_CHARS:
        if what == "prompt":
            raise InputError("tokens.prompt_too_long", "The prompt has {chars:,} characters; the limit is {limit:,}. "
                             "Shorten it and try again.", chars=len(text), limit=MAX_TEXT_CHARS)
        raise InputError("tokens.text_too_long", "The text has {chars:,} characters; the limit is {limit:,}. "
                         "Shorten it and try again.", chars=len(text), limit=MAX_TEXT_CHARS)
    # Strings from JSON may hold lone surrogates, which the Rust tokenizer cannot take.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's reversible map of the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    byte_values, chars = printable[:], printable[:]
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + len(chars) - len(printable))
    return {chr(c): b for b, c in zip(byte_values, chars)}


BYTE_DECODER = _gpt2_byte_decoder()


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def token_to_bytes(tokenizer, token: str, special: bool) -> bytes:
    """The real bytes a vocabulary entry stands for."""
    if special:
        return token.encode("utf-8")
    if _is_byte_level(tokenizer) and all(ch in BYTE_DECODER for ch in token):
        return bytes(BYTE_DECODER[ch] for ch in token)
    match = BYTE_PIECE.match(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace("▁", " ").encode("utf-8")


def readable_piece(raw: bytes, special: bool) -> tuple[str, bool]:
    """Display text of a token and whether it is an incomplete UTF-8 character."""
    if special:
        return raw.decode("utf-8"), False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "‹" + " ".join(f"{b:02X}" for b in raw) + "›", True
    return "".join(VISIBLE.get(ch, ch) for ch in text), False


def chat_text(tokenizer, text: str, model_label: str | None = None) -> str:
    """The full text the chat template produces for one user message, ready for the assistant's reply."""
    if not getattr(tokenizer, "chat_template", None):
        if model_label is None:
            raise InputError("tokens.no_chat_template_this",
                             "This model has no chat template (it is a base model): turn 'as chat' off to see the "
                             "plain text.")
        raise InputError("tokens.no_chat_template",
                         "{model} has no chat template (it is a base model): turn 'as chat' off to see the plain "
                         "text.", model=model_label)
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def tokenize(session, text: str, chat: bool = False) -> TokenView:
    """Tokenize `text` as the model receives it: with the model's own special tokens, or wrapped in its
    chat template (chat=True). Cached per (model, text, chat)."""
    text = clean_text(text)
    chat = bool(chat)
    return session.analysis(
        "tokens", (text, chat), lambda: tokenize_with(session.tokenizer, text, chat, session.label)
    )


def tokenize_with(tokenizer, text: str, chat: bool = False, model_label: str | None = None) -> TokenView:
    """Tokenize with any tokenizer (no model needed): the tokenizer comparison uses this directly."""
    text = clean_text(text)
    if chat:
        text = chat_text(tokenizer, text, model_label)
        # The template already spells out every special token; adding BOS again would double it.
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    else:
        encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    if len(ids) > MAX_TOKENIZE_TOKENS:
        raise InputError("tokens.too_many_tokens",
                         "The text is {tokens:,} tokens; the limit is {limit:,}. Shorten it and try again.",
                         tokens=len(ids), limit=MAX_TOKENIZE_TOKENS)
    special_ids = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)
    }
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special = [i in special_ids for i in ids]
    token_bytes = [token_to_bytes(tokenizer, t, s) for t, s in zip(tokens, special)]
    readable = [readable_piece(b, s) for b, s in zip(token_bytes, special)]
    return TokenView(
        text=text,
        chat=chat,
        ids=ids,
        pieces=[r[0] for r in readable],
        special=special,
        offsets=[tuple(o) for o in encoding["offset_mapping"]],
        token_bytes=token_bytes,
        partial=[r[1] for r in readable],
    )


def to_dict(view: TokenView) -> dict:
    """JSON-ready form of a TokenView (the `tokenize` API endpoint)."""
    return {
        "text": view.text,
        "chat": view.chat,
        "ids": view.ids,
        "pieces": view.pieces,
        "special": view.special,
        "offsets": [list(o) for o in view.offsets],
        "bytes_hex": [b.hex() for b in view.token_bytes],
        "partial": view.partial,
        "num_tokens": view.num_tokens,
        "num_chars": view.num_chars,
        "chars_per_token": round(view.chars_per_token, 3),
    }
