"""The Tokenizer tab's JSON endpoint (same names and parameters as the Python API)."""

from __future__ import annotations

from inference.tokens import to_dict, tokenize

from ..common import session, user_errors


@user_errors
def tokenize_api(text: str, chat: bool = False, model: str | None = None) -> dict:
    """Tokenize text with the loaded model's tokenizer (chat=True wraps it in the chat template).

    Returns ids, readable pieces, special-token flags, character offsets, bytes and counts."""
    s = session(model)
    return {"model": s.model_id, **to_dict(tokenize(s, text, chat))}
