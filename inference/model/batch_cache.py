"""Several requests' KV caches held as one batch: rows left-padded to a common width, joined and dropped
between forward passes (what a server needs to decode many requests in one pass).

    keys/values of every layer   [rows, kv_heads, width, head_dim]
    attention mask               [rows, width]   1 = a real token of that row, 0 = padding on its left

Every row ends at the same column (its newest token), so one decode pass appends one column for all rows.
A row that joins is padded on the left up to the batch's width (or the batch is padded up to the row's);
a row that leaves is dropped (`index_select` on every layer), and columns that only padding uses any more
are cut off on the left. This padding is the waste a paged KV cache (vLLM, transformers' continuous
batching) avoids: there each row holds only its own blocks.

A row can also start from another request's prefix (`from_rows`, `row_cache`): the keys and values of a prompt's
first tokens do not depend on what follows, so a prompt that begins like an earlier one (the chat template's
system prompt, the question the whole class types) prefills only the rest.

Sliding-window layers (Gemma 3) trim their cache to the window by column count, so a padded batch is only
exact while every row's whole context fits in the window: `fits_window` says whether a request does.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .anatomy import layer_windows


def fits_window(session, tokens: int) -> bool:
    """A request whose context will reach `tokens` tokens can share a padded batch: the model has no
    sliding-window layers, or the whole context stays inside the smallest window."""
    windows = [w for w in layer_windows(session) if w]
    return not windows or tokens <= min(windows) - 1


def _layers(cache):
    return [layer for layer in cache.layers if getattr(layer, "is_initialized", True) and layer.keys is not None]


def width(cache) -> int:
    """Columns (token slots, padding included) each row holds."""
    layers = _layers(cache)
    return int(layers[0].keys.shape[-2]) if layers else 0


def rows(cache) -> int:
    layers = _layers(cache)
    return int(layers[0].keys.shape[0]) if layers else 0


def pad_left(cache, columns: int) -> None:
    """Add `columns` empty slots on the left of every row (in place)."""
    if columns <= 0:
        return
    for layer in _layers(cache):
        layer.keys = F.pad(layer.keys, (0, 0, columns, 0))  # [rows, heads, width + columns, head_dim]
        layer.values = F.pad(layer.values, (0, 0, columns, 0))
        if hasattr(layer, "cumulative_length"):  # sliding-window layers count the tokens they have seen
            layer.cumulative_length += columns


def append_rows(cache, other) -> None:
    """Put the rows of `other` below those of `cache` (in place); both must have the same width."""
    for layer, extra in zip(_layers(cache), _layers(other)):
        layer.keys = torch.cat([layer.keys, extra.keys], dim=0)  # [rows + extra rows, heads, width, head_dim]
        layer.values = torch.cat([layer.values, extra.values], dim=0)


def keep_rows(cache, index: Sequence[int]) -> None:
    """Keep only the rows in `index`, in that order (in place)."""
    idx = torch.tensor(list(index), dtype=torch.long)
    for layer in _layers(cache):
        layer.batch_select_indices(idx.to(layer.keys.device))


def cut_left(cache, columns: int) -> None:
    """Drop the `columns` leftmost slots of every row (padding nobody uses any more), in place."""
    if columns <= 0:
        return
    for layer in _layers(cache):
        layer.keys = layer.keys[..., columns:, :]
        layer.values = layer.values[..., columns:, :]
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length -= columns


def row_layer_bytes(cache, tokens: int) -> list[int]:
    """Per layer, the bytes one row's own `tokens` newest slots hold in keys and values (from the tensors' shapes
    and element size; the padding on its left not counted)."""
    sizes = []
    for layer in _layers(cache):
        keys, values = layer.keys, layer.values  # [rows, heads, width, head_dim]
        n = min(tokens, keys.shape[-2])
        sizes.append(n * (keys.shape[1] * keys.shape[3] * keys.element_size()
                          + values.shape[1] * values.shape[3] * values.element_size()))
    return sizes


def from_rows(session, pieces: Sequence[tuple[object | None, int]], width: int):
    """A new cache of `len(pieces)` rows and `width` columns: row i holds the first `n` tokens of the one-row
    cache `c` of pieces[i] = (c, n), right-aligned (padding on its left); (None, 0) is a row of padding only.
    Keys and values depend only on their own token and the tokens before it (causal attention, RoPE applied
    before caching), so the first n columns of a longer context's cache are exactly the cache of its first n
    tokens: a prompt's prefix can be taken from another request that began the same way."""
    from .run import new_cache

    cache = new_cache(session)
    if width == 0:
        return cache
    source = next(c for c, n in pieces if c is not None and n)
    for index, layer in enumerate(cache.layers):
        like = source.layers[index].keys  # [1, heads, n, head_dim]
        keys, values = [], []
        for piece, n in pieces:
            if piece is None or n == 0:
                keys.append(like.new_zeros(1, like.shape[1], width, like.shape[3]))
                values.append(keys[-1].clone())
            else:
                keys.append(F.pad(piece.layers[index].keys[..., :n, :], (0, 0, width - n, 0)))
                values.append(F.pad(piece.layers[index].values[..., :n, :], (0, 0, width - n, 0)))
        k, v = torch.cat(keys, dim=0), torch.cat(values, dim=0)  # [rows, heads, width, head_dim]
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = width
    return cache


def row_cache(session, cache, row: int, columns: torch.Tensor):
    """One row of a batch cache as a one-row cache of its own tokens only (the given columns, in order): what a
    later request with the same start can reuse."""
    from .run import new_cache

    out = new_cache(session)
    for layer, source in zip(out.layers, _layers(cache)):
        k = source.keys[row:row + 1].index_select(-2, columns)  # [1, heads, n, head_dim]
        v = source.values[row:row + 1].index_select(-2, columns)
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
        if hasattr(layer, "cumulative_length"):
            layer.cumulative_length = k.shape[-2]
    return out


def total_bytes(cache) -> int:
    """Bytes all rows hold, padding included."""
    return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in _layers(cache))


__all__ = ["append_rows", "cut_left", "fits_window", "from_rows", "row_cache", "keep_rows", "pad_left", "row_layer_bytes", "rows", "total_bytes",
           "width"]
