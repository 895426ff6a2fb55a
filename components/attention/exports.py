"""Attention tab, the exports: the cached analysis (`inference.attention.AttentionMaps`) as JSON-ready data (the
`attention` endpoint) and as the rows of the CSV downloads (the shown map, the logit lens). Pure: no gradio, no
model call (a dropped layer comes back by one model pass inside `maps.pattern`)."""

from __future__ import annotations

import numpy as np

from inference.attention import AttentionMaps

from .figures import attention_table, lens_table


def attention_data(maps: AttentionMaps, layer: int, head: int) -> dict:
    """One layer and head as data: the weights, the decode step's row, the KV-head group and the logit lens at the
    last position (top guesses after every layer)."""
    lens, last = maps.lens, maps.lens.column(maps.n - 1)
    return {
        "tokens": list(maps.tokens.pieces),
        "ids": list(maps.tokens.ids),
        "num_layers": maps.num_layers,
        "num_heads": maps.num_heads,
        "num_kv_heads": maps.num_kv_heads,
        "layer": layer,
        "head": head,
        "sliding_window": maps.windows[layer] if layer < len(maps.windows) else None,  # None: global attention
        "kv_head": maps.kv_head(head),
        "heads_sharing_kv": maps.heads_sharing(head),
        "weights": np.round(maps.pattern(layer, head), 5).tolist(),
        "decode": {
            "token": maps.decode.piece,
            "id": maps.decode.token_id,
            "prob": round(maps.decode.prob, 5),
            "cached_keys": maps.decode.cached_keys,
            "row": np.round(maps.decode.row(layer, head), 5).tolist(),
        },
        "logit_lens": {
            "position": maps.n - 1,
            "final_token": lens.answer_pieces[last],
            "layers": [
                {
                    "layer": name,
                    "final_token_prob": round(float(lens.answer_probs[r, last]), 6),
                    "top": [
                        {"token": p, "id": int(i), "prob": round(float(q), 6)}
                        for p, i, q in zip(lens.top_pieces[r][last], lens.top_ids[r, last], lens.top_probs[r, last])
                    ],
                }
                for r, name in enumerate(lens.layer_names)
            ],
        },
    }



def map_rows(maps: AttentionMaps, layer: int, head: int | None) -> tuple[list[str], list[list]]:
    """The map of one head (or the layer's mean, head None) with the decode step's row: header and rows."""
    return attention_table(maps.pattern(layer, head), maps.tokens.pieces, maps.decode.row(layer, head),
                           maps.decode.piece)


def lens_rows(maps: AttentionMaps) -> tuple[list[str], list[list]]:
    """Every layer's top guesses at every position the lens covers: header and rows."""
    lens = maps.lens
    return lens_table(lens.layer_names, lens.positions, [maps.tokens.pieces[p] for p in lens.positions],
                      lens.top_pieces, lens.top_ids, lens.top_probs, lens.answer_pieces, lens.answer_probs)
