"""Attention patterns kept small: one layer's weights as an fp16 lower triangle, one number per head, and the
decode step's single new row per layer.

All layers of a 512-token prompt in fp32 would be 30 x 9 x 512 x 512 x 4 bytes = 283 MB for SmolLM2. The causal
mask makes the upper triangle always 0, so a layer is kept as its lower triangle (diagonal included) in fp16:
[heads, n(n+1)/2], a quarter of the fp32 square.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

# Per-head summaries shown in the layer x head overview: name -> (label, unit). Each is a mean over the
# query positions 1..n-1 (query 0 can only look at itself, which says nothing about the head).
SUMMARIES = {
    "first": ("attention to the first token (the 'sink')", "weight"),
    "previous": ("attention to the previous token", "weight"),
    "entropy": ("entropy: how spread out each row is", "bits"),
    "distance": ("mean distance looked back", "tokens"),
}


def head_summaries(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """weights [heads, n, n] -> {SUMMARIES name: [heads]}, each a mean over queries 1..n-1."""
    n = weights.shape[-1]
    queries = slice(1, None) if n > 1 else slice(None)
    rows = weights[:, queries]  # [heads, q, n]
    positions = torch.arange(n, dtype=weights.dtype, device=weights.device)
    back = (positions[:, None] - positions[None, :]).clamp_min(0)[queries]  # [q, n]: how far back key j is
    entropy = -(rows * torch.log2(rows.clamp_min(1e-30))).sum(-1)  # [heads, q]
    previous = weights.diagonal(offset=-1, dim1=1, dim2=2) if n > 1 else torch.zeros_like(weights[:, :, 0])
    return {
        "first": rows[..., 0].mean(-1),
        "previous": previous.mean(-1),
        "entropy": entropy.mean(-1),
        "distance": (rows * back).sum(-1).mean(-1),
    }


@functools.lru_cache(maxsize=8)
def _tril(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the lower triangle (diagonal included) of an n x n map."""
    return np.tril_indices(n)


def packed_bytes(heads: int, n: int) -> int:
    """Bytes of one packed layer: heads x n(n+1)/2 fp16 numbers."""
    return heads * n * (n + 1) // 2 * 2


def pack_tensor(weights: torch.Tensor) -> np.ndarray:
    """[heads, n, n] (any dtype, any device) -> [heads, n(n+1)/2] float16: the lower triangle, read where the
    weights are (only the kept half is copied to the CPU)."""
    rows, cols = (torch.from_numpy(i).to(weights.device) for i in _tril(weights.shape[-1]))
    return weights[:, rows, cols].float().to(torch.float16).cpu().numpy()


def pack(weights: np.ndarray) -> np.ndarray:
    """[heads, n, n] -> [heads, n(n+1)/2] float16: the causal mask makes the upper triangle always 0."""
    rows, cols = _tril(weights.shape[-1])
    return weights[:, rows, cols].astype(np.float16)


def unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """[heads, n(n+1)/2] float16 -> [heads, n, n] float32 with zeros above the diagonal."""
    rows, cols = _tril(n)
    out = np.zeros((packed.shape[0], n, n), dtype=np.float32)
    out[:, rows, cols] = packed
    return out


@dataclass(frozen=True)
class DecodeStep:
    """One decode step after the prefill: the next greedy token queries the n cached keys and itself."""

    token_id: int
    piece: str
    prob: float  # its probability under the model's distribution at the last prompt position
    cached_keys: int  # keys per layer in the KV cache after prefill (= prompt length n)
    rows: np.ndarray = field(repr=False)  # [L, heads, n+1] float16: the new query's attention row per layer

    def row(self, layer: int, head: int | None = None) -> np.ndarray:
        """float32 [n+1]: one head's decode row, or the mean over heads (head=None)."""
        rows = self.rows[layer].astype(np.float32)  # [heads, n+1]
        return rows.mean(0) if head is None else rows[head]
