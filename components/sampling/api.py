"""Sampling tab, the JSON endpoints: `next_token` (the stage table of one step) and `generate` (a whole run)."""

from __future__ import annotations

from inference.generation import check_lengths, inspect_step
from inference.limits import MAX_NEW_TOKENS
from inference.sampling import SamplingParams
from inference.serving import serve

from ..common import session, user_errors


@user_errors
def next_token_api(prompt: str, generated_ids: list[int] | None = None, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                   presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
                   chat: bool = True, min_new_tokens: int = 0, model: str | None = None) -> dict:
    """The stage table of one step: prompt + generated_ids so far + sampling parameters -> every active
    stage (survivors, entropy, top candidates with probability, rank and whether they survive), the
    uniform number of this step (the seed's stream) and the token it picks. No token is appended."""
    s = session(model)
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    _, min_new = check_lengths(MAX_NEW_TOKENS, min_new_tokens)
    record, _, seed_used = inspect_step(s, prompt, params, generated_ids or [], chat=chat, min_new_tokens=min_new)
    return {
        "model": s.model_id,
        "seed": seed_used,
        "step": record.index,
        "stages": [
            {
                "name": st.name, "label": st.label, "survivors": st.survivors,
                "entropy_bits": st.entropy_bits, "top_prob": st.top_prob,
                "candidates": [
                    {"id": c, "piece": p, "prob": q, "rank": r, "kept": k}
                    for c, p, q, r, k in zip(record.candidates, record.pieces, st.probs, st.ranks, st.kept)
                ],
            }
            for st in record.stages
        ],
        "draw": record.draw,
        "chosen": {"id": record.token_id, "piece": record.piece, "text": record.text, "prob": record.chosen_prob,
                   "rank": record.chosen_rank, "raw_prob": record.raw_prob},
        "eos_blocked": record.eos_blocked,
    }


@user_errors
def generate_api(prompt: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int | None = None, max_new_tokens: int = 32, chat: bool = True,
                 stop: list[str] | None = None, min_new_tokens: int = 0, model: str | None = None) -> dict:
    """Generate with the sampling pipeline: prompt + parameters -> token ids, text, stop reason
    (eos, stop_sequence, max_new_tokens), time to first token and per output token, and per step the chosen
    token (probability, rank, the uniform number) with the top candidates of the final distribution. Requests that
    arrive together are decoded in one batch (`serving`: how many other requests shared its passes)."""
    s = session(model)
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    trace = serve(s, prompt, params, max_new_tokens, chat, stop or (), min_new_tokens=min_new_tokens)
    return {
        "model": s.model_id,
        **trace.to_dict(steps=False),
        "steps": [
            {
                "token_id": st.token_id, "piece": st.piece, "prob": st.chosen_prob, "rank": st.chosen_rank,
                "raw_prob": st.raw_prob, "draw": st.draw, "eos_blocked": st.eos_blocked,
                "top": [{"id": i, "piece": p, "prob": q} for i, p, q in st.final_top[:5]],
            }
            for st in trace.steps
        ],
    }
