"""Speculative decoding (inference.speculative) on the real model, checked against transformers itself.

Greedy: every drafter returns exactly the tokens of plain greedy decoding and of transformers' generate() with the
same assistant; the per-step record adds up and its accepted counts are the ones transformers' candidate generator
was told. Sampling: a seed reproduces, and over many seeds the first token's distribution is the target's own
(chi-square test). Universal assisted decoding (SmolLM2 drafting for Gemma 3 270M) never alters the shared model.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers.generation.candidate_generator import AssistedCandidateGenerator, PromptLookupCandidateGenerator

from inference.deadline import Deadline
from inference.errors import InputError
from inference.limits import MAX_DRAFT_TOKENS, MAX_SPEC_NEW_TOKENS
from inference.sampling import SamplingParams
from inference.speculative import (chi_square, first_token_distribution, resolve_drafter, speculative_generate,
                                   sweep_draft_tokens)
from inference.tokens import tokenize

EDIT = ("Repeat this sentence word for word: The red boat sailed slowly across the quiet lake while two children "
        "counted the fish.")
QUESTION = "What is the capital of France?"
K = 4
NEW = 12


def reference_generate(session, prompt: str, drafter: str, k: int, new: int, chat: bool = True) -> list[int]:
    """transformers' generate() with the same assistant, configured the documented way (the drafter model's own
    generation_config, constant schedule, no confidence stop), outside our code."""
    model = session.model
    ids = torch.tensor([tokenize(session, prompt, chat).ids])
    kwargs = dict(do_sample=False, max_new_tokens=new, attention_mask=torch.ones_like(ids), pad_token_id=2)
    config = model.generation_config
    saved = (config.num_assistant_tokens, config.num_assistant_tokens_schedule, config.assistant_confidence_threshold)
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = k, "constant"
    config.assistant_confidence_threshold = 0.0
    try:
        with session.lock, torch.inference_mode():
            if drafter == "prompt_lookup":
                out = model.generate(ids, prompt_lookup_num_tokens=k, **kwargs)
            elif drafter.startswith("early_exit:"):
                out = model.generate(ids, assistant_early_exit=int(drafter.split(":")[1]), **kwargs)
            else:  # the model drafting for itself
                out = model.generate(ids, assistant_model=model, **kwargs)
    finally:
        config.num_assistant_tokens, config.num_assistant_tokens_schedule, config.assistant_confidence_threshold = saved
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture
def told(monkeypatch):
    """Every num_matches transformers passes to a candidate generator's update_candidate_strategy (class level,
    under our instance-level observation)."""
    seen: list[int] = []
    for cls in (PromptLookupCandidateGenerator, AssistedCandidateGenerator):
        original = cls.update_candidate_strategy

        def spy(self, input_ids, scores, num_matches, _original=original):
            seen.append(int(num_matches))
            return _original(self, input_ids, scores, num_matches)

        monkeypatch.setattr(cls, "update_candidate_strategy", spy)
    return seen


def check_bookkeeping(t, told: list[int]) -> None:
    assert sum(s.accepted + 1 for s in t.steps) == len(t.token_ids)
    assert t.target_passes == len(t.steps)
    assert [s.accepted for s in t.steps] == told
    assert [tok for s in t.steps for tok in s.tokens] == t.token_ids
    for s in t.steps:
        assert 0 <= s.accepted <= len(s.proposed) <= K
        assert s.proposed[: s.accepted] == t.token_ids[s.start: s.start + s.accepted]


@pytest.mark.parametrize("drafter,prompt", [
    ("prompt_lookup", EDIT),  # most of each step accepted
    ("early_exit:2", QUESTION),  # nothing accepted
    ("self", QUESTION),  # the target drafting for itself: everything accepted
])
def test_greedy_is_plain_greedy_for_every_drafter(session, told, drafter, prompt):
    drafter = session.model_id if drafter == "self" else drafter
    t = speculative_generate(session, prompt, drafter, K, NEW)
    check_bookkeeping(t, told)  # before the reference run below adds its own calls
    assert t.same_as_plain is True and t.plain_token_ids == t.token_ids
    assert t.token_ids == reference_generate(session, prompt, drafter, K, NEW)
    assert t.plain_passes == len(t.token_ids) and t.seconds > 0 and t.plain_seconds > 0
    if drafter == "prompt_lookup":
        assert t.generator == "PromptLookupCandidateGenerator" and t.drafter_passes == 0
        assert t.acceptance_rate > 0.5 and t.target_passes < len(t.token_ids)
    elif drafter.startswith("early_exit"):
        assert t.generator == "EarlyExitCandidateGenerator" and t.accepted == 0
        assert t.drafter_passes == t.proposed  # one early-exit pass per draft token
        assert all(not s.bonus for s in t.steps)
    else:
        # Every draft is accepted; only the step that reaches the end-of-sequence token is cut there by transformers
        # (the EOS draft is kept as the step's last token, so num_matches counts one less).
        assert t.generator == "AssistedCandidateGenerator" and t.acceptance_rate > 0.8
        assert all(s.accepted == len(s.proposed) or s.cut for s in t.steps)
        assert any(s.bonus for s in t.steps) and t.target_passes < len(t.token_ids)


def test_sampling_reproduces_with_a_seed_and_records_the_rule(session):
    params = SamplingParams(temperature=0.9, top_k=20, seed=11)
    before = torch.random.get_rng_state()
    a = speculative_generate(session, QUESTION, "early_exit:16", 3, 8, params, measure_plain=False)
    b = speculative_generate(session, QUESTION, "early_exit:16", 3, 8, params, measure_plain=False)
    assert torch.equal(before, torch.random.get_rng_state())  # the global generator is put back
    assert a.token_ids == b.token_ids and a.seed == 11
    assert [s.accepted for s in a.steps] == [s.accepted for s in b.steps]
    assert sum(s.accepted + 1 for s in a.steps) == len(a.token_ids)
    ruled = [s for s in a.steps if s.rule is not None]
    assert ruled
    for s in ruled:
        assert len(s.accept_prob) == len(s.proposed)
        assert all(ap == pytest.approx(min(1.0, p / q)) for ap, p, q in zip(s.accept_prob, s.p_draft, s.q_draft))
        r = s.rule
        assert r.position == s.accepted and r.chosen_token == s.target_token
        assert r.chosen_token in r.token_ids and len(r.p) == len(r.token_ids)
        if r.outcome == "rejected":
            assert r.draft_token == s.proposed[s.accepted] and 0 < r.residual_mass <= 1 + 1e-5
            # the token drawn after a rejection comes from max(p - q, 0): it has residual mass
            assert r.residual[r.token_ids.index(r.chosen_token)] > 0


@pytest.mark.slow
def test_speculative_sampling_keeps_the_first_token_distribution(session):
    """Over 120 seeds, the first token of speculative sampling (drafter: the first 4 layers, k = 1) against the
    target's own distribution: Pearson's chi-square must not reject at significance 0.001. The drafter's own
    proposals, sampled from q, are rejected by the same test: it has the power to see a wrong distribution."""
    prompt, params = "My favourite colour is", dict(temperature=1.0, top_k=4)
    p = first_token_distribution(session, prompt, SamplingParams(**params), chat=False)
    assert len(p) == 4 and min(p.values()) > 0.1
    first, drafted = Counter(), Counter()
    for seed in range(120):
        t = speculative_generate(session, prompt, "early_exit:4", 1, 2, SamplingParams(**params, seed=seed), chat=False,
                                 measure_plain=False)
        first[t.token_ids[0]] += 1
        drafted[t.steps[0].proposed[0]] += 1
    stat, dof, p_value = chi_square(first, p)
    assert p_value > 0.001, (stat, dof, first, p)
    assert chi_square(drafted, p)[2] < 0.001, drafted


def test_deadline_and_sweep(session):
    t = speculative_generate(session, EDIT, "prompt_lookup", K, 16, deadline=Deadline(0))
    assert t.stop_reason == "time_limit" and len(t.steps) == 1 and t.timed_out
    sw = sweep_draft_tokens(session, EDIT, "prompt_lookup", 8, ks=(1, 3), deadline=Deadline(None))
    assert [p.num_draft_tokens for p in sw.points] == [1, 3] and len(sw.plain_seconds) == 3
    assert all(p.same_as_plain for p in sw.points) and all(p.speedup > 0 for p in sw.points)
    assert sw.best in sw.points and sw.to_dict()["best_num_draft_tokens"] in (1, 3)
    cut = sweep_draft_tokens(session, EDIT, "prompt_lookup", 8, deadline=Deadline(0))
    assert cut.stop_reason == "time_limit" and not cut.points


@pytest.mark.parametrize("call,message", [
    (dict(drafter="early_exit:0"), "between 1 and 29"),
    (dict(drafter="early_exit:30"), "between 1 and 29"),
    (dict(drafter=""), "Name a drafter"),
    (dict(num_draft_tokens=0), "num_draft_tokens"),
    (dict(num_draft_tokens=MAX_DRAFT_TOKENS + 1), "num_draft_tokens"),
    (dict(max_new_tokens=MAX_SPEC_NEW_TOKENS + 1), "max_new_tokens"),
    (dict(params=SamplingParams(temperature=0.7, presence_penalty=0.5)), "Presence and frequency"),
])
def test_bad_input_is_one_sentence(session, call, message):
    with pytest.raises(InputError, match=message):
        speculative_generate(session, QUESTION, **{"drafter": "prompt_lookup", **call})


def test_drafters_are_resolved_by_kind(session):
    assert resolve_drafter(session, "prompt_lookup").kind == "prompt_lookup"
    exit_ = resolve_drafter(session, " early_exit:7 ")
    assert (exit_.kind, exit_.layers, exit_.spec) == ("early_exit", 7, "early_exit:7")
    assert resolve_drafter(session, session.model_id).kind == "model"


@pytest.mark.slow
def test_universal_assisted_decoding_leaves_the_shared_model_alone(session, gemma):
    """SmolLM2 drafting for Gemma 3 270M (different tokenizers): greedy equals plain greedy; sampling (transformers
    prunes the drafter's LM head) runs on a private copy, and the shared SmolLM2 session is unchanged."""
    head = session.model.get_output_embeddings()
    t = speculative_generate(gemma, "The capital of France is", session.model_id, 3, 8, chat=False)
    assert t.drafter.kind == "universal" and t.generator == "AssistedCandidateGeneratorDifferentTokenizers"
    assert t.same_as_plain is True and sum(s.accepted + 1 for s in t.steps) == len(t.token_ids)
    assert t.drafter_passes > 0
    params = SamplingParams(temperature=0.8, top_k=20, seed=3)
    a = speculative_generate(gemma, "The capital of France is", session.model_id, 3, 8, params, chat=False,
                             measure_plain=False)
    b = speculative_generate(gemma, "The capital of France is", session.model_id, 3, 8, params, chat=False,
                             measure_plain=False)
    assert a.generator == "UniversalSpeculativeDecodingGenerator" and a.token_ids == b.token_ids
    assert session.model.get_output_embeddings() is head and head.weight.shape[0] == session.facts.vocab_size
    assert session.model.generation_config.num_assistant_tokens is None
