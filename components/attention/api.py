"""Attention tab, the JSON endpoint `attention` (gr.api; parameters `text`, `layer`, `head`, `chat` as the other
endpoints name them). It reads the one cached recorded prefill of the text."""

from __future__ import annotations

from inference.attention import capture_attention

from ..common import session, user_errors
from .exports import attention_data


@user_errors
def attention_api(text: str, layer: int = 0, head: int = 0, chat: bool = False, model: str | None = None) -> dict:
    """Attention weights of one layer and head for a prompt (chat=True wraps it in the chat template).

    Returns the tokens, the weight matrix (rows = queries, columns = keys; the causal mask makes the upper
    triangle 0), the decode step's new row for the same head, which query heads share its KV head, and the
    logit lens at the last position (top-5 guesses after every layer)."""
    s = session(model)
    maps = capture_attention(s, text, chat)
    return {"model": s.model_id, **attention_data(maps, maps.check_layer(layer), maps.check_head(head))}
