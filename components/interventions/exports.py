"""Interventions tab, the exports: the inference results (AblationResult, HeadSweep, PatchSweep) as JSON-ready data
for the `ablate`, `head_sweep` and `patch` endpoints, and as the rows of the CSV downloads. Pure: no gradio, no
model call. NaN (a cell the time limit left unrun) becomes null."""

from __future__ import annotations

import math

import numpy as np

from inference.interventions import BLOCK_KINDS, AblationResult, HeadSweep, PatchSweep

from .figures import ablation_rows, sweep_columns, sweep_values


def _num(x, digits: int = 6):
    x = float(x)
    return None if math.isnan(x) else round(x, digits)


def _grid(values: np.ndarray, digits: int = 6) -> list[list]:
    return [[_num(v, digits) for v in row] for row in values]


def ablation_data(result: AblationResult) -> dict:
    """One ablation: what was switched off, the answer before and after, Δ log p, KL and the top tokens."""
    names = dict(zip(result.top_ids, result.top_pieces))
    return {
        "ablation": result.ablation.spec,
        "heads": [list(h) for h in result.ablation.heads],
        "blocks": [list(b) for b in result.ablation.blocks],
        "mode": result.ablation.mode,
        "tokens": list(result.tokens),
        "clean_token": names.get(result.clean_token_id),
        "clean_token_id": result.clean_token_id,
        "ablated_token_id": result.ablated_token_id,
        "ablated_token": names.get(result.ablated_token_id),
        "delta_logprob": _num(result.delta_logprob),
        "kl": _num(result.kl),
        "top": [{"token": piece, "id": token_id, "clean_prob": _num(before), "ablated_prob": _num(after)}
                for token_id, piece, before, after in ablation_rows(result, k=len(result.top_ids))],
        "seconds": round(result.seconds, 4),
    }


def sweep_data(sweep: HeadSweep) -> dict:
    """The head sweep: Δ log p and KL per [layer][head] (and per [layer][attn, mlp] block), null where not run."""
    data = {
        "mode": sweep.mode,
        "layers": list(sweep.layers),
        "clean_token": sweep.clean_piece,
        "clean_token_id": sweep.clean_token_id,
        "delta_logprob": _grid(sweep.delta_logprob),
        "kl": _grid(sweep.kl),
        "top_after": [[sweep.names.get(int(i)) if i >= 0 else None for i in row] for row in sweep.top_after],
        "seconds": round(sweep.seconds, 3),
        "timed_out": sweep.timed_out,
    }
    if sweep.block_delta_logprob is not None:
        data["blocks"] = list(BLOCK_KINDS)
        data["block_delta_logprob"] = _grid(sweep.block_delta_logprob)
        data["block_kl"] = _grid(sweep.block_kl)
    return data


def patch_data(sweep: PatchSweep) -> dict:
    """The patching sweep: the two answers and, per [layer][position], the share of the gap restored and p(clean)."""
    return {
        "site": sweep.site,
        "clean_tokens": list(sweep.clean_tokens),
        "corrupt_tokens": list(sweep.corrupt_tokens),
        "clean_token": sweep.clean_piece,
        "corrupt_token": sweep.corrupt_piece,
        "clean_token_id": sweep.clean_token_id,
        "corrupt_token_id": sweep.corrupt_token_id,
        "logit_diff_clean": _num(sweep.logit_diff_clean),
        "logit_diff_corrupt": _num(sweep.logit_diff_corrupt),
        "clean_answer_prob": _num(sweep.clean_answer_prob),
        "corrupt_answer_prob": _num(sweep.corrupt_answer_prob),
        "effect": _grid(sweep.effect),
        "clean_prob": _grid(sweep.clean_prob),
        "seconds": round(sweep.seconds, 3),
        "timed_out": sweep.timed_out,
    }


SWEEP_HEADER = ["layer", "component", "delta_logprob", "kl", "top_token_after"]
PATCH_HEADER = ["layer", "position", "clean_token", "corrupt_token", "share_restored", "p_clean_answer", "top_token"]


def sweep_rows(sweep: HeadSweep) -> list[list]:
    """One CSV row per (layer, component) that was run."""
    delta, kl = sweep_values(sweep, "delta"), sweep_values(sweep, "kl")
    tops = sweep.top_after if sweep.block_top_after is None else np.concatenate([sweep.top_after, sweep.block_top_after], 1)
    return [[l, name, f"{delta[l, c]:.6f}", f"{kl[l, c]:.6f}", sweep.names.get(int(tops[l, c]), "")]
            for l in sweep.done for c, name in enumerate(sweep_columns(sweep))]


def patch_rows(sweep: PatchSweep) -> list[list]:
    """One CSV row per (layer, position) that was run."""
    return [[l, p, sweep.clean_tokens[p], sweep.corrupt_tokens[p], f"{sweep.effect[l, p]:.6f}",
             f"{sweep.clean_prob[l, p]:.6f}", sweep.names.get(int(sweep.top_ids[l, p, 0]), "")]
            for l in range(sweep.effect.shape[0]) for p in sweep.done]
