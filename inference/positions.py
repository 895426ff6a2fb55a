"""How the model knows where a token is: its positional scheme, read from its config and modules, with a curve
of what position does to attention (RoPE) or how alike the position vectors are (learned positions).

RoPE: the model's own rotary module makes the cos/sin tables and its modeling module's `apply_rotary_pos_emb`
rotates a query and a key; the curve is their score against the distance between them. Computed once per model.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .limits import ROPE_CURVE_POINTS
from .model.anatomy import anatomy, text_config


@dataclass(frozen=True)
class PositionScheme:
    """How the model knows where a token is, read from its config and modules."""

    kind: str  # "rope", "learned" or "none"
    summary: str  # one line, e.g. "RoPE, theta = 100,000 on 64 dimensions"
    context_length: int
    thetas: dict[str, float]  # layer type ("all" when one) -> RoPE base theta
    layer_counts: dict[str, int]  # layer type -> layers of that type
    rotary_dims: int  # dimensions of each head that RoPE rotates (0 for learned positions)
    wavelengths: dict[str, tuple[float, float]]  # layer type -> (fastest, slowest) wavelength in tokens
    distances: np.ndarray  # [P] int64: first distance of each bin of the curve (one distance per bin up to 63)
    curves: dict[str, np.ndarray]  # name -> [3, P] float32: mean, min, max over the bin of q·k(t) / q·k(0)


def _curve_bins(limit: int) -> list[tuple[int, int]]:
    """Distance bins [start, end) for the curve: one per distance up to 63, then log-spaced up to `limit`."""
    edges = np.unique(np.concatenate([np.arange(0, min(64, limit)),
                                      np.geomspace(64, max(limit, 65), ROPE_CURVE_POINTS).astype(np.int64)]))
    edges = [int(e) for e in edges if e < limit] + [limit]
    return list(zip(edges[:-1], edges[1:]))


def _binned(values: np.ndarray, bins: list[tuple[int, int]]) -> np.ndarray:
    """values [limit] -> [3, bins]: mean, min and max of each bin (the curve and its band of ripples)."""
    return np.array([[values[a:b].mean(), values[a:b].min(), values[a:b].max()] for a, b in bins],
                    dtype=np.float32).T


def _rotary_tables(rotary: nn.Module, positions: torch.Tensor, layer_type: str | None):
    """cos, sin [P, rot_dim] from the model's own rotary module at the given positions (its first argument
    only sets the dtype and device)."""
    probe = torch.zeros(1, 1, 1, dtype=torch.float32, device=positions.device)
    extra = (layer_type,) if layer_type is not None else ()
    cos, sin = rotary(probe, positions[None], *extra)  # each [1, P, rot_dim]
    return cos[0].float(), sin[0].float()


def _rotate(session, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [P, dim] by position with the model's own apply_rotary_pos_emb (from its modeling module)."""
    attn = session.model.get_submodule(anatomy(session).layer(0).attn)
    apply = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if apply is None:  # the textbook rotation: pairs (i, i + dim/2) turned by angle position * inv_freq
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rotated * sin
    q, _ = apply(x[None, None], x[None, None], cos[None], sin[None])  # [1, 1, P, dim]
    return q[0, 0]


def _rope_scheme(session, rotary: nn.Module, context: int) -> PositionScheme:
    model, facts = session.model, session.facts
    cfg = text_config(model.config)
    layer_types = list(getattr(cfg, "layer_types", None) or [])
    rope_params = getattr(cfg, "rope_parameters", None) or {}
    per_type = isinstance(rope_params, dict) and layer_types and all(t in rope_params for t in set(layer_types))
    types = list(dict.fromkeys(layer_types)) if per_type else [None]
    bins = _curve_bins(context)
    distances = np.array([a for a, _ in bins], dtype=np.int64)
    positions = torch.arange(context, device=session.device)  # every distance: the ripples are fast
    thetas, counts, wavelengths, curves = {}, {}, {}, {}
    rot_dims = 0
    for layer_type in types:
        name = layer_type or "all"
        params = rope_params[layer_type] if per_type else rope_params
        theta = (params or {}).get("rope_theta") or getattr(cfg, "rope_theta", None)
        inv_freq = getattr(rotary, f"{layer_type}_inv_freq" if layer_type else "inv_freq")  # [rot_dim / 2]
        rot_dims = 2 * inv_freq.numel()
        cos, sin = _rotary_tables(rotary, positions, layer_type)  # [P, rot_dim]
        # q = k = the all-ones vector (the RoPE paper's long-term decay): key at position 0, query at distance t,
        # so their score is <R(t) q, R(0) k>, divided by the score at distance 0.
        ones = torch.ones(context, cos.shape[-1], device=cos.device)
        q = _rotate(session, ones, cos, sin)  # [P, rot_dim]
        k0 = q[0]  # position 0: no rotation
        score = (q * k0).sum(-1)
        curves[f"θ = {theta:,.0f}" + (f" ({name.replace('_', ' ')} layers)" if layer_type else "")] = \
            _binned((score / score[0]).cpu().numpy(), bins)
        thetas[name] = float(theta) if theta else float("nan")
        counts[name] = layer_types.count(layer_type) if layer_type else facts.num_layers
        wave = (2 * math.pi / inv_freq.float()).cpu().numpy()
        wavelengths[name] = (float(wave.min()), float(wave.max()))
    theta_text = " and ".join(f"θ = {t:,.0f}" + (f" on {counts[k]} {k.replace('_', ' ')} layers" if k != "all" else "")
                              for k, t in thetas.items())
    summary = f"RoPE, {theta_text}; rotates {rot_dims} of {facts.head_dim} dims per head"
    return PositionScheme("rope", summary, context, thetas, counts, rot_dims, wavelengths, distances, curves)


def _learned_scheme(session, module: nn.Module, context: int) -> PositionScheme:
    table = module.weight.detach().float()  # [positions, d]
    unit = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bins = _curve_bins(table.shape[0])
    distances = np.array([a for a, _ in bins], dtype=np.int64)
    # Mean cosine similarity of the position vectors t apart: how alike the model keeps nearby positions.
    curve = np.array([1.0 if t == 0 else float((unit[:-t] * unit[t:]).sum(-1).mean()) for t in distances])
    summary = f"learned position embeddings: one vector per position, {table.shape[0]:,} positions"
    return PositionScheme("learned", summary, context, {}, {}, 0, {}, distances,
                          {"mean cosine similarity": np.stack([curve, curve, curve]).astype(np.float32)})


def positional_scheme(session) -> PositionScheme:
    """The model's positional scheme with its distance curve, computed once per model."""

    def compute() -> PositionScheme:
        parts = anatomy(session)
        model = session.model
        context = session.facts.context_length or 2048
        with session.lock, torch.no_grad():
            if parts.rotary:
                return _rope_scheme(session, model.get_submodule(parts.rotary), context)
            if parts.position_embed:
                return _learned_scheme(session, model.get_submodule(parts.position_embed), context)
        return PositionScheme("none", "no explicit positions (the causal mask alone tells order)", context, {}, {}, 0,
                              {}, np.zeros(0, np.int64), {})

    return session.analysis("forward_positions", (), compute)
