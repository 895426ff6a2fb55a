"""Interventions tab, the JSON endpoints (gr.api): `ablate`, `head_sweep` and `patch`, with the parameters of the
Python API (inference.interventions) plus the optional `model`. They read the same cached analyses as the tab."""

from __future__ import annotations

from inference.interventions import ablate, head_sweep, patch_sweep

from ..common import session, user_errors
from .exports import ablation_data, patch_data, sweep_data


@user_errors
def ablate_api(text: str, heads: list | None = None, blocks: list | None = None, mode: str = "zero",
               chat: bool = False, model: str | None = None) -> dict:
    """The next-token distribution with heads ([[layer, head], ...]) and whole blocks ([["attn" or "mlp", layer],
    ...]) zero- or mean-ablated (mode "zero" | "mean"), beside the clean one: the top tokens with both
    probabilities, the change of log p of the clean top token (nats) and KL(clean || ablated)."""
    s = session(model)
    return {"model": s.model_id, **ablation_data(ablate(s, text, heads or (), blocks or (), mode, chat))}


@user_errors
def head_sweep_api(text: str, layers: list, mode: str = "zero", chat: bool = False,
                   model: str | None = None) -> dict:
    """Every head of `layers` ablated alone, and each layer's attention and MLP block: Δ log p of the answer and
    KL per [layer][head]. One pass per layer; cut short (timed_out) at the request's time limit. `layers` has no
    default: all 30 layers of SmolLM2 took 90 s on a busy 2-core CPU, so a caller asks for that on purpose."""
    s = session(model)
    return {"model": s.model_id, **sweep_data(head_sweep(s, text, layers, mode, chat))}


@user_errors
def patch_api(clean_text: str, corrupt_text: str, site: str = "resid_pre", chat: bool = False,
              model: str | None = None) -> dict:
    """Activation patching (causal tracing): the clean run's `site` ("resid_pre" | "attn_out" | "mlp_out") put into
    the corrupted run at one layer and position at a time; per [layer][position], the share of the logit-difference
    gap restored and p(clean answer). Both prompts must have the same number of tokens."""
    s = session(model)
    return {"model": s.model_id, **patch_data(patch_sweep(s, clean_text, corrupt_text, site, chat))}
