"""The sampling pipeline against transformers' own logits processors (no model needed)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from inference.errors import InputError
from inference.sampling import (
    SamplingParams,
    apply_top_k,
    draw_token,
    entropy_bits,
    process_logits,
    sample_counts,
    summarize,
)


def transformers_pipeline(params: SamplingParams, min_new: tuple[int, int, list[int]] | None = None) -> LogitsProcessorList:
    """The processors generate(do_sample=True) builds for these parameters, in its order
    (transformers 5.23 `_get_logits_processor`): repetition, min new tokens, then the warpers."""
    procs = LogitsProcessorList()
    if params.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if min_new is not None:
        prompt_len, min_new_tokens, eos = min_new
        procs.append(MinNewTokensLengthLogitsProcessor(prompt_len, min_new_tokens, eos))
    if params.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k != 0:
        procs.append(TopKLogitsWarper(top_k=params.top_k, min_tokens_to_keep=1))
    if params.top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p=params.top_p, min_tokens_to_keep=1))
    procs.append(MinPLogitsWarper(min_p=params.min_p, min_tokens_to_keep=1))
    return procs


def random_case(rng: random.Random, vocab: int):
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    scale = rng.choice([0.5, 2.0, 5.0])
    logits = torch.randn(vocab, generator=gen) * scale
    if rng.random() < 0.3:  # exact ties, which top-k and top-p must treat like transformers does
        logits = torch.round(logits)
    prompt = [rng.randrange(vocab) for _ in range(rng.randrange(0, 40))]
    generated = [rng.randrange(vocab) for _ in range(rng.randrange(0, 40))]
    params = SamplingParams(
        temperature=rng.choice([1.0, 0.2, 0.7, 1.3, 3.0]),
        top_k=rng.choice([0, 1, 2, 7, 50, vocab + 10]),
        top_p=rng.choice([1.0, 0.999, 0.9, 0.5, 0.05]),
        min_p=rng.choice([0.0, 0.01, 0.1, 0.5]),
        repetition_penalty=rng.choice([1.0, 1.2, 1.5, 0.8]),
    )
    return logits, prompt, generated, params


def test_pipeline_equals_transformers_processors_on_random_mixes():
    rng = random.Random(0)
    checked = 0
    for vocab in (50, 1000, 49152):
        for _ in range(150 if vocab < 49152 else 40):
            logits, prompt, generated, params = random_case(rng, vocab)
            context = torch.tensor([prompt + generated], dtype=torch.long).reshape(1, -1)
            expected = transformers_pipeline(params)(context, logits[None].clone())[0]  # [V]
            trace = process_logits(logits, prompt, generated, params)
            assert torch.equal(trace.stages[-1][1], expected), params
            assert torch.allclose(trace.probs, torch.softmax(expected, -1), atol=0, rtol=0)
            checked += 1
    assert checked == 340


def test_min_new_tokens_block_equals_transformers():
    rng = random.Random(1)
    for _ in range(30):
        logits, prompt, generated, params = random_case(rng, 300)
        eos = [2, 7]
        context = torch.tensor([prompt + generated], dtype=torch.long).reshape(1, -1)
        procs = transformers_pipeline(params, (len(prompt), len(generated) + 1, torch.tensor(eos)))
        expected = procs(context, logits[None].clone())[0]
        trace = process_logits(logits, prompt, generated, params, blocked_ids=eos)
        assert "min_new_tokens" in trace.names
        assert torch.equal(trace.stages[-1][1], expected)
        assert float(trace.probs[eos].sum()) == 0.0


def test_stage_order_and_names():
    params = SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2,
                            presence_penalty=0.5, frequency_penalty=0.1)
    trace = process_logits(torch.randn(100), [1, 2], [3], params, blocked_ids=[0])
    assert trace.names == ["raw", "repetition_penalty", "presence_frequency", "min_new_tokens", "temperature",
                           "top_k", "top_p", "min_p"]
    # Stages that are off are not recorded.
    assert process_logits(torch.randn(100), [], [], SamplingParams()).names == ["raw"]


def test_input_logits_are_not_modified():
    logits = torch.randn(500)
    before = logits.clone()
    process_logits(logits, [1, 2, 3], [4, 4], SamplingParams(temperature=0.5, top_k=3, repetition_penalty=1.3,
                                                             presence_penalty=1.0, frequency_penalty=1.0))
    assert torch.equal(logits, before)


def test_presence_frequency_hand_example_from_design():
    # prompt [1,2], generated [3,3,4], presence 0.5, frequency 0.25 -> [0, 0, 0, -1.0, -0.75, 0]
    raw = torch.tensor([0.3, -1.0, 2.0, 1.5, -0.2, 0.0])
    trace = process_logits(raw, [1, 2], [3, 3, 4], SamplingParams(presence_penalty=0.5, frequency_penalty=0.25))
    name, adjusted = trace.stages[1]
    assert name == "presence_frequency"
    assert torch.allclose(adjusted - raw, torch.tensor([0, 0, 0, -1.0, -0.75, 0]))


def test_repetition_penalty_once_per_token_both_signs():
    raw = torch.tensor([2.0, -2.0, 1.0, 4.0])
    trace = process_logits(raw, [0, 0, 1], [1, 0], SamplingParams(repetition_penalty=2.0))
    assert trace.stages[1][1].tolist() == [1.0, -4.0, 1.0, 4.0]  # /θ when positive, *θ when negative, once


def test_top_k_keeps_boundary_ties():
    out = apply_top_k(torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0]), 2)
    assert torch.isfinite(out).tolist() == [True, True, True, True, False]
    trace = process_logits(torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0]), [], [], SamplingParams(top_k=2))
    assert int(torch.isfinite(trace.stages[-1][1]).sum()) == 4


def test_filters_keep_at_least_one_token():
    logits = torch.tensor([5.0, 1.0, 0.0, -1.0])
    for params in (SamplingParams(top_p=0.01), SamplingParams(min_p=1.0), SamplingParams(top_k=1)):
        trace = process_logits(logits, [], [], params)
        assert float(trace.probs[0]) == 1.0


def test_temperature_zero_is_greedy_after_penalties():
    raw = torch.tensor([1.0, 3.0, 2.9, -1.0])
    trace = process_logits(raw, [1], [], SamplingParams(temperature=0, repetition_penalty=1.2, top_k=3))
    assert trace.names == ["raw", "repetition_penalty", "greedy"]
    assert trace.probs.tolist() == [0.0, 0.0, 1.0, 0.0]  # token 1 was penalized to 2.5 < 2.9
    assert draw_token(trace.probs, None).token_id == 2


def test_draw_is_inverse_cdf_in_probability_order():
    probs = torch.tensor([0.2, 0.5, 0.0, 0.3])
    # CDF order: token 1 (0.5), token 3 (0.3), token 0 (0.2)
    assert draw_token(probs, 0.1).token_id == 1
    assert draw_token(probs, 0.6).token_id == 3
    d = draw_token(probs, 0.95)
    assert (d.token_id, d.rank) == (0, 3)
    assert d.cdf_low == pytest.approx(0.8) and d.cdf_high == pytest.approx(1.0)
    assert draw_token(probs, 0.999999).token_id != 2  # a filtered token is never drawn
    ties = draw_token(torch.tensor([0.25, 0.25, 0.25, 0.25]), 0.3)
    assert (ties.token_id, ties.rank) == (1, 2)  # ties: lower id first


def test_sample_counts_reproducible_and_follow_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1, 0.0])
    a, b = sample_counts(probs, 1000, 5), sample_counts(probs, 1000, 5)
    assert a == b and sum(a.values()) == 1000 and 3 not in a
    assert 600 < a[0] < 800


def test_summary_is_small_and_consistent():
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(0)) * 3
    params = SamplingParams(temperature=0.8, top_k=20, top_p=0.9)
    trace = process_logits(logits, [], [], params)
    ids, stages = summarize(trace, top_n=10, extra_ids=[123])
    assert 10 <= len(ids) <= 60 and 123 in ids
    assert [s.name for s in stages] == trace.names
    raw, topk = stages[0], stages[2]
    assert raw.survivors == 49152 and topk.survivors == 20
    assert raw.ranks[ids.index(int(torch.argmax(logits)))] == 1
    assert topk.kept[ids.index(123)] is (bool(torch.isfinite(trace.stages[2][1][123])))
    assert stages[-1].entropy_bits == pytest.approx(entropy_bits(trace.probs))
    assert entropy_bits(torch.tensor([0.25] * 4)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(min_p=1.2), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(repetition_penalty=50), "repetition_penalty"),
        (dict(presence_penalty=3), "presence_penalty"),
        (dict(frequency_penalty=-2.5), "frequency_penalty"),
        (dict(seed=-1), "seed"),
        (dict(temperature="hot"), "temperature"),
    ],
)
def test_bad_parameters_raise_one_clear_sentence(kwargs, words):
    with pytest.raises(InputError) as info:
        SamplingParams(**kwargs)
    message = str(info.value)
    assert words in message and message.endswith(".") and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_whole_number_floats_are_accepted():
    params = SamplingParams(top_k=3.0, seed=7.0)
    assert params.top_k == 3 and isinstance(params.top_k, int) and params.seed == 7
