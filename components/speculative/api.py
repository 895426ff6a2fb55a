"""Speculative decoding tab, the JSON endpoints (`speculative`, `speculative_sweep`, `speculative_compare`) and the
host's rule for draft models.

Parameter names follow the Python API (`inference.speculative.speculative_generate`); every endpoint takes an
optional `model` (the target, from the host's allow-list) and returns plain dicts.
"""

from __future__ import annotations

from inference.errors import ModelLoadError
from inference.model import policy
from inference.sampling import SamplingParams
from inference.session import validate_model_id
from inference.speculative import (EARLY_EXIT, PROMPT_LOOKUP, compare_drafters, speculative_generate,
                                   sweep_draft_tokens)

from ..common import session, user_errors
from ..i18n import t


def draft_models() -> list[str]:
    """Model ids offered as drafters: the host's allow-list (the class model first)."""
    current = policy.current()
    return list(dict.fromkeys([current.class_model, *current.allowed]))


def admit_drafter(drafter: str | None) -> str:
    """The drafter a visitor may use: prompt lookup and early exit always; a draft model from the host's
    allow-list (or any hub id where the host allows any, size-checked when it loads), else one clear sentence (in
    the visitor's language; an API call reads English).
    A drafter is not the visitor's model, so the teacher's lock (one target for the class) does not forbid it."""
    spec = (drafter or "").strip()
    if spec == PROMPT_LOOKUP or spec.startswith(EARLY_EXIT):
        return spec
    if spec in draft_models():
        return spec
    if policy.current().allow_any and spec:
        return validate_model_id(spec)
    raise ModelLoadError(t("speculative.error_drafter", models=", ".join(draft_models()),
                           name=spec[:80] or t("speculative.error_empty_name")))


def sampling_params(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, seed=None) -> SamplingParams:
    """Temperature 0 (or empty) is greedy; an empty seed lets the run pick one (and report it)."""
    return SamplingParams(temperature=0.0 if temperature is None else temperature, top_k=top_k or 0,
                          top_p=1.0 if top_p is None else top_p, min_p=min_p or 0.0,
                          repetition_penalty=repetition_penalty or 1.0,
                          seed=None if seed is None or seed == "" else seed)


@user_errors
def speculative_api(prompt: str, drafter: str = PROMPT_LOOKUP, num_draft_tokens: int = 4, max_new_tokens: int = 64,
                    temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                    repetition_penalty: float = 1.0, seed: int | None = None, chat: bool = True,
                    model: str | None = None) -> dict:
    """Speculative decoding through transformers' assisted generation, every step recorded. drafter:
    "prompt_lookup", "early_exit:<layers>" or a draft model id. Returns the tokens and text; per step the draft
    token ids (proposed), how many were accepted and the target's own token; target and drafter passes; wall time
    and tokens/s; plain decoding of the same tokens in the same request (plain_seconds, plain_token_ids), the
    speedup, the acceptance rate and, when greedy, whether the tokens equal plain decoding's (same_as_plain)."""
    params = sampling_params(temperature, top_k, top_p, min_p, repetition_penalty, seed)
    s = session(model)
    return speculative_generate(s, prompt, admit_drafter(drafter), num_draft_tokens, max_new_tokens, params,
                                chat).to_dict()


@user_errors
def speculative_sweep_api(prompt: str, drafter: str = PROMPT_LOOKUP, max_new_tokens: int = 32,
                          temperature: float = 0.0, seed: int | None = None, chat: bool = True,
                          model: str | None = None) -> dict:
    """Speedup and acceptance rate for 1..8 draft tokens on one prompt, against plain decoding timed before, in the
    middle and after; the best number of draft tokens on this machine."""
    s = session(model)
    return sweep_draft_tokens(s, prompt, admit_drafter(drafter), max_new_tokens, sampling_params(temperature, seed=seed),
                              chat).to_dict()


@user_errors
def speculative_compare_api(prompt: str, drafters: list[str] | None = None, num_draft_tokens: int = 4,
                            max_new_tokens: int = 32, temperature: float = 0.0, seed: int | None = None,
                            chat: bool = True, model: str | None = None) -> dict:
    """Several drafters on the same prompt and settings (default: prompt lookup and early exit at a quarter of the
    layers): acceptance rate, passes, time and speedup of each."""
    s = session(model)
    drafters = drafters or [PROMPT_LOOKUP, f"{EARLY_EXIT}:{max(1, s.facts.num_layers // 4)}"]
    return compare_drafters(s, prompt, [admit_drafter(d) for d in drafters], num_draft_tokens, max_new_tokens,
                            sampling_params(temperature, seed=seed), chat).to_dict()
