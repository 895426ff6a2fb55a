"""Beam search downloads and endpoint data, pure: the tree as JSON data, the finished hypotheses as CSV rows."""

from __future__ import annotations

from inference.beam import BeamTree, to_dict

HYPOTHESES_CSV_HEADER = ["rank", "rank_by_raw_sum", "text", "tokens", "ends", "sum_logprob", "score", "token_ids"]


def tree_data(model_id: str, tree: BeamTree) -> dict:
    """The whole tree, as the `beam_search` endpoint returns it and the JSON download holds it."""
    return {"model": model_id, **to_dict(tree)}


def hypotheses_rows(tree: BeamTree) -> list[list]:
    """The finished hypotheses best first, for the CSV (token ids space-separated)."""
    by_raw = sorted(range(len(tree.finished)), key=lambda i: -tree.finished[i].sum_logprob)
    raw_rank = {i: r + 1 for r, i in enumerate(by_raw)}
    return [
        [i + 1, raw_rank[i], h.text, h.length, "EOS" if h.ends_with_eos else "max tokens", f"{h.sum_logprob:.6f}",
         f"{h.score:.6f}", " ".join(str(t) for t in h.token_ids)]
        for i, h in enumerate(tree.finished)
    ]
