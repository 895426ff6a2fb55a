"""The KV cache's size: what the formula predicts and what the cache tensors hold.

    bytes = 2 (K and V) x layers x KV heads x head dim x bytes per element x tokens

Layers with sliding-window attention (Gemma 3: 5 of every 6) keep only their last `window - 1` tokens
(transformers' DynamicSlidingWindowLayer), so their share stops growing there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .anatomy import layer_windows


@dataclass
class KVShape:
    """The numbers of the formula, from the model's config and the dtype it runs in."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    bytes_per_element: int
    dtype: str
    layer_windows: list[int | None]  # None: the layer keeps every token

    @property
    def bytes_per_token_layer(self) -> int:  # K and V of one token in one layer
        return 2 * self.num_kv_heads * self.head_dim * self.bytes_per_element

    @property
    def bytes_per_token(self) -> int:  # every layer, while no sliding window is full
        return self.num_layers * self.bytes_per_token_layer

    @property
    def mha_bytes_per_token(self) -> int:  # the same model with one KV head per query head
        return 2 * self.num_layers * self.num_heads * self.head_dim * self.bytes_per_element

    @property
    def gqa_factor(self) -> float:
        return self.num_heads / self.num_kv_heads

    @property
    def windowed(self) -> bool:
        return any(w is not None for w in self.layer_windows)

    def layer_tokens(self, tokens: int) -> list[int]:
        return [tokens if w is None else min(tokens, w - 1) for w in self.layer_windows]

    def layer_bytes(self, tokens: int) -> list[int]:
        return [t * self.bytes_per_token_layer for t in self.layer_tokens(tokens)]

    def bytes_for(self, tokens: int) -> int:
        return sum(self.layer_bytes(tokens))

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_per_token": self.bytes_per_token, "bytes_per_token_layer": self.bytes_per_token_layer,
                "mha_bytes_per_token": self.mha_bytes_per_token, "gqa_factor": self.gqa_factor}


def kv_shape(session, dtype: torch.dtype | None = None) -> KVShape:
    """The formula's numbers for the loaded model (in `dtype`, default the dtype it runs in)."""
    facts = session.facts
    dtype = dtype or session.dtype
    element = torch.empty((), dtype=dtype).element_size()
    return KVShape(facts.num_layers, facts.num_heads, facts.num_kv_heads, facts.head_dim, element,
                   str(dtype).removeprefix("torch."), layer_windows(session))


def cache_layer_bytes(cache) -> list[int]:
    """Bytes held by each layer's key and value tensors in a cache, read from the tensors."""
    if cache is None:
        return []
    sizes = []
    for layer in getattr(cache, "layers", []):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or not getattr(layer, "is_initialized", True):
            sizes.append(0)
            continue
        sizes.append(keys.numel() * keys.element_size() + values.numel() * values.element_size())
    return sizes
