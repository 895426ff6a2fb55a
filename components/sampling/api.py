"""Sampling tab, the JSON endpoints: `next_token` (the stage table of one step), `generate` (a whole run) and
`compare` (two runs side by side). Each run may have a constraint (structured output) and an ablation."""

from __future__ import annotations

from inference.ablation_text import parse_ablation
from inference.compare import RunSpec, compare_runs
from inference.constrained import Constraint
from inference.errors import InputError
from inference.generation import check_lengths, inspect_step
from inference.limits import MAX_NEW_TOKENS
from inference.sampling import SamplingParams
from inference.serving import serve

from ..common import session, user_errors
from ..i18n import t


def _ablation(s, text: str | None, mode: str | None):
    ablation = parse_ablation(s, text, mode or "zero")
    return None if ablation.empty else ablation


@user_errors
def next_token_api(prompt: str, generated_ids: list[int] | None = None, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                   presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
                   chat: bool = True, min_new_tokens: int = 0, constraint_kind: str = "none", constraint: str = "",
                   ablation: str = "", ablation_mode: str = "zero", model: str | None = None) -> dict:
    """The stage table of one step: prompt + generated_ids so far + sampling parameters -> every active
    stage (survivors, entropy, top candidates with probability, rank and whether they survive), the
    uniform number of this step (the seed's stream) and the token it picks. No token is appended.
    constraint_kind none | choice | regex | json_schema with `constraint` the choices (one per line), the regex or
    the schema: the grammar's mask is the "constraint" stage (allowed_tokens, removed_mass). `ablation`: heads and
    blocks switched off in the forward pass ("L3H2, mlp L0"; ablation_mode zero | mean)."""
    s = session(model)
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    _, min_new = check_lengths(MAX_NEW_TOKENS, min_new_tokens)
    record, _, seed_used = inspect_step(s, prompt, params, generated_ids or [], chat=chat, min_new_tokens=min_new,
                                        constraint=Constraint.from_text(constraint_kind, constraint),
                                        ablation=_ablation(s, ablation, ablation_mode))
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
        "allowed_tokens": record.allowed_tokens,
        "removed_mass": record.removed_mass,
    }


@user_errors
def generate_api(prompt: str, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int | None = None, max_new_tokens: int = 32, chat: bool = True,
                 stop: list[str] | None = None, min_new_tokens: int = 0, constraint_kind: str = "none",
                 constraint: str = "", ablation: str = "", ablation_mode: str = "zero",
                 model: str | None = None) -> dict:
    """Generate with the sampling pipeline: prompt + parameters -> token ids, text, stop reason
    (eos, stop_sequence, max_new_tokens), time to first token and per output token, and per step the chosen
    token (probability, rank, the uniform number) with the top candidates of the final distribution.
    A constraint (constraint_kind none | choice | regex | json_schema, `constraint` its text) adds per step the
    tokens the grammar allowed and the model's probability it removed, and `valid` for the text; an ablation
    ("L3H2, mlp L0") runs every forward pass with those heads/blocks switched off. Requests that arrive together
    are decoded in one batch (`serving`: how many other requests shared its passes; a run with an ablation runs
    alone)."""
    s = session(model)
    params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                            frequency_penalty, seed)
    trace = serve(s, prompt, params, max_new_tokens, chat, stop or (), min_new_tokens=min_new_tokens,
                  constraint=Constraint.from_text(constraint_kind, constraint),
                  ablation=_ablation(s, ablation, ablation_mode))
    return {
        "model": s.model_id,
        **trace.to_dict(steps=False),
        "steps": [
            {
                "token_id": st.token_id, "piece": st.piece, "prob": st.chosen_prob, "rank": st.chosen_rank,
                "raw_prob": st.raw_prob, "draw": st.draw, "eos_blocked": st.eos_blocked,
                "allowed_tokens": st.allowed_tokens, "removed_mass": st.removed_mass,
                "top": [{"id": i, "piece": p, "prob": q} for i, p, q in st.final_top[:5]],
            }
            for st in trace.steps
        ],
    }


RUN_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
            "seed", "constraint_kind", "constraint", "ablation", "ablation_mode", "model")


def _spec(name: str, settings: dict | None, prompt: str, max_new_tokens: int, chat: bool, default_model):
    if settings is not None and not isinstance(settings, dict):  # e.g. a string: the API takes any JSON
        raise InputError(t("sampling.err_settings_not_object", run=name))
    settings = dict(settings or {})
    unknown = set(settings) - set(RUN_KEYS)
    if unknown:
        raise InputError(t("sampling.err_unknown_settings", run=name, unknown=sorted(unknown),
                           allowed=", ".join(RUN_KEYS)))
    s = session(settings.get("model") or default_model)
    params = SamplingParams(**{k: settings[k] for k in RUN_KEYS[:8] if k in settings})
    constraint = Constraint.from_text(settings.get("constraint_kind"), settings.get("constraint"))
    spec = RunSpec(prompt, params, max_new_tokens, bool(chat) and s.has_chat_template, constraint,
                   _ablation(s, settings.get("ablation"), settings.get("ablation_mode")))
    return spec, s


@user_errors
def compare_api(prompt: str, a: dict | None = None, b: dict | None = None, max_new_tokens: int = 32,
                chat: bool = True, model: str | None = None) -> dict:
    """Two runs of the same prompt side by side, generated together step by step: `a` and `b` are each run's
    settings ({"temperature": 0.3, "seed": 1, "constraint_kind": "regex", "constraint": "...", "ablation":
    "L3H2", "model": ...}; what a run does not name is the default). Returns both runs, what differs, the first
    position where their tokens differ (`first_divergence`, null if none), and per position each run's token
    with the probability the run gave to its own token and to the other run's (`rows`). Runs on two models with
    different tokenizers are aligned by characters (`aligned_by`)."""
    a_spec, a_session = _spec("a", a, prompt, max_new_tokens, chat, model)
    b_spec, b_session = _spec("b", b, prompt, max_new_tokens, chat, model)
    comparison = compare_runs(a_spec, b_spec, sessions=(a_session, b_session))
    return comparison.to_dict()
