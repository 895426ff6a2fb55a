"""Beam search tab, the JSON endpoint `beam_search`: the whole tree of the real search."""

from __future__ import annotations

from inference.beam import beam_search

from ..common import session, user_errors
from .exports import tree_data


@user_errors
def beam_search_api(prompt: str, num_beams: int = 4, max_new_tokens: int = 16, length_penalty: float = 1.0,
                    early_stopping: str = "false", chat: bool = False, model: str | None = None) -> dict:
    """Run beam search (transformers' algorithm) on the loaded model and return the whole tree.

    early_stopping: "true", "false" or "never". Returns the ranked finished hypotheses (text, token_ids, score =
    sum_logprob / length**length_penalty), every candidate node (parent, step, token, logprob, cum_logprob,
    status kept/pruned/finished, rank) and the edges (parent id, child id)."""
    s = session(model)
    tree = beam_search(s, prompt, num_beams, max_new_tokens, length_penalty, early_stopping, chat)
    return tree_data(s.model_id, tree)
