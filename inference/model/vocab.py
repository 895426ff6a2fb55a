"""The model's vocabulary as the app shows it: readable pieces of token ids, end-of-sequence and padding ids."""

from __future__ import annotations

from typing import Sequence

from ..tokens import readable_piece, token_to_bytes


def special_ids(tokenizer) -> set[int]:
    return set(tokenizer.all_special_ids)


def token_texts(session, ids: Sequence[int]) -> tuple[list[str], list[str]]:
    """(readable pieces, real texts) of single tokens, as the Tokenizer tab shows them: spaces as '·', a token
    holding part of a UTF-8 character as its bytes ‹E4 BD›, special tokens by name."""
    tokenizer = session.tokenizer
    special = special_ids(tokenizer)
    ids = [int(i) for i in ids]
    pieces, texts = [], []
    for i, token in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        token = token if token is not None else f"<{i}>"
        raw = token_to_bytes(tokenizer, token, i in special)
        piece, partial = readable_piece(raw, i in special)
        pieces.append(piece)
        texts.append(piece if (partial or i in special) else raw.decode("utf-8"))
    return pieces, texts


def pieces(session, ids: Sequence[int]) -> list[str]:
    """Readable pieces (spaces as '·') of token ids."""
    return token_texts(session, ids)[0]


def eos_ids(session) -> list[int]:
    """The tokens that end a run: generation_config's eos_token_id (one or a list), else the tokenizer's."""
    eos = getattr(session.model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = session.tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def pad_id(session) -> int:
    """The id that fills left padding in a batch: the tokenizer's pad token, else EOS (never attended to)."""
    tokenizer = session.tokenizer
    for candidate in (tokenizer.pad_token_id, *eos_ids(session), 0):
        if candidate is not None:
            return int(candidate)
    return 0
