"""Generation on the real bundled model, checked against transformers' model.generate itself."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from inference.errors import InputError
from inference.generation import (
    Generation,
    LogitsStore,
    eos_ids,
    forward_last,
    generate,
    inspect_step,
    logits_store,
    new_cache,
    prompt_ids,
    stream_generate,
    uniform_at,
)
from inference.sampling import SamplingParams, draw_token
from inference.sampling_run import SamplingRun, Settings

PROMPT = "Write one sentence about the sea."
GREEDY = SamplingParams(temperature=0)


def hf_generate(session, prompt, chat=True, **kwargs) -> list[int]:
    """transformers' own generate on the same prompt ids; only the new tokens."""
    ids = torch.tensor([prompt_ids(session, prompt, chat)], device=session.device)
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=eos_ids(session)[0],
                                     **kwargs)
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def greedy_run(session):
    return generate(session, PROMPT, GREEDY, 20)


def test_greedy_equals_model_generate(session, greedy_run):
    expected = hf_generate(session, PROMPT, do_sample=False, max_new_tokens=20)
    assert greedy_run.token_ids == expected
    assert greedy_run.stop_reason == "max_new_tokens"
    assert greedy_run.text == session.tokenizer.decode(expected, skip_special_tokens=True)


def test_greedy_with_repetition_penalty_and_min_new_tokens_equals_model_generate(session):
    # A short answer: EOS comes early, so min_new_tokens must block it for a while.
    prompt = "Reply with one word: yes or no?"
    natural = generate(session, prompt, GREEDY, 30)
    assert natural.stop_reason == "eos"
    min_new = len(natural.token_ids) + 3
    params = SamplingParams(temperature=0, repetition_penalty=1.3)
    ours = generate(session, prompt, params, min_new + 4, min_new_tokens=min_new)
    expected = hf_generate(session, prompt, do_sample=False, repetition_penalty=1.3, max_new_tokens=min_new + 4,
                           min_new_tokens=min_new)
    assert ours.token_ids == expected
    assert all(s.eos_blocked for s in ours.steps[:min_new]) and not any(s.eos_blocked for s in ours.steps[min_new:])
    assert eos_ids(session)[0] not in ours.token_ids[:min_new]
    # Without the penalty (EOS is in the chat template, so the penalty also hits it), EOS would have won
    # at the step where the natural run ended: the record says how much probability the block took away.
    blocked = generate(session, prompt, GREEDY, min_new, min_new_tokens=min_new)
    assert blocked.token_ids[: len(natural.token_ids) - 1] == natural.token_ids[:-1]
    assert blocked.steps[len(natural.token_ids) - 1].eos_blocked_prob > 0.3


def test_use_cache_false_gives_the_same_tokens(session, greedy_run):
    uncached = generate(session, PROMPT, GREEDY, 12, use_cache=False)
    assert uncached.token_ids == greedy_run.token_ids[:12]
    assert {s.phase for s in uncached.steps} == {"recompute"} and all(s.cache_len == 0 for s in uncached.steps)


def test_eos_stops_at_the_right_token(session):
    prompt = "Reply with one word: yes or no?"
    run = generate(session, prompt, GREEDY, 64)
    assert run.stop_reason == "eos" and len(run.token_ids) < 64
    assert run.token_ids[-1] in eos_ids(session) and run.steps[-1].stop_reason == "eos"
    assert run.token_ids == hf_generate(session, prompt, do_sample=False, max_new_tokens=64)
    assert session.tokenizer.eos_token not in run.text  # special tokens are not part of the text


def test_stop_sequence_equals_transformers_stop_strings(session, greedy_run):
    stop = greedy_run.text.split()[3]  # a word the greedy run writes
    ours = generate(session, PROMPT, GREEDY, 20, stop=[stop])
    expected = hf_generate(session, PROMPT, do_sample=False, max_new_tokens=20, stop_strings=[stop],
                           tokenizer=session.tokenizer)
    assert ours.token_ids == expected
    assert ours.stop_reason == "stop_sequence" and ours.stop_sequence == stop
    assert stop in ours.text and stop not in session.tokenizer.decode(ours.token_ids[:-1])


def test_the_same_seed_repeats_another_seed_differs(session):
    params = dict(temperature=1.5, top_k=0)
    a = generate(session, PROMPT, SamplingParams(**params, seed=11), 12)
    b = generate(session, PROMPT, SamplingParams(**params, seed=11), 12)
    c = generate(session, PROMPT, SamplingParams(**params, seed=12), 12)
    assert a.token_ids == b.token_ids and [s.draw for s in a.steps] == [s.draw for s in b.steps]
    assert a.token_ids != c.token_ids
    assert [s.draw for s in a.steps] == [uniform_at(11, i) for i in range(12)]
    # No seed: one is picked and reported, so the run can be repeated.
    d = generate(session, PROMPT, SamplingParams(**params), 6)
    assert generate(session, PROMPT, SamplingParams(**params, seed=d.seed), 6).token_ids == d.token_ids


def test_seeded_sampling_equals_model_generate_on_the_same_random_stream(session):
    """transformers draws with torch.multinomial (an exponential race on the global generator), we draw
    by inverse CDF with a uniform number from our own generator. To compare the whole sampled run with
    model.generate(do_sample=True), transformers' draw is replaced by the same inverse-CDF draw fed by the
    global generator's uniform numbers; seeded identically, both streams give the same u at every step."""
    params = SamplingParams(temperature=0.9, top_k=40, top_p=0.92, min_p=0.02, repetition_penalty=1.15, seed=1234)
    ours = generate(session, PROMPT, params, 16)

    def inverse_cdf_multinomial(probs, num_samples, replacement=False, *, generator=None):
        assert num_samples == 1 and probs.shape[0] == 1
        u = float(torch.rand(1, generator=generator))
        return torch.tensor([[draw_token(probs[0], u).token_id]], device=probs.device)

    torch.manual_seed(params.seed)
    with mock.patch("torch.multinomial", inverse_cdf_multinomial):
        expected = hf_generate(session, PROMPT, do_sample=True, max_new_tokens=16, temperature=0.9, top_k=40,
                               top_p=0.92, min_p=0.02, repetition_penalty=1.15)
    assert ours.token_ids == expected


def test_step_records_hold_timings_cache_lengths_and_small_summaries(session, greedy_run):
    n_prompt = len(greedy_run.prompt_ids)
    first, second = greedy_run.steps[0], greedy_run.steps[1]
    assert (first.phase, first.tokens_in_pass, first.cache_len) == ("prefill", n_prompt, n_prompt)
    assert (second.phase, second.tokens_in_pass, second.cache_len) == ("decode", 1, n_prompt + 1)
    assert greedy_run.steps[-1].cache_len == n_prompt + 19  # the last token is never fed back
    assert all(s.forward_s > 0 and s.step_s >= s.forward_s for s in greedy_run.steps)
    assert greedy_run.ttft_s >= first.forward_s and greedy_run.tpot_s > 0 and greedy_run.prefill_s == first.forward_s
    for s in greedy_run.steps:
        assert s.chosen_rank == 1 and s.chosen_prob == 1.0 and s.draw is None  # greedy
        assert s.raw_rank == 1 and 0 < s.raw_prob <= 1
        assert len(s.candidates) <= 40 and all(len(st.probs) == len(s.candidates) for st in s.stages)
        assert [st.name for st in s.stages] == ["raw", "greedy"] and s.stages[-1].survivors == 1
    d = greedy_run.to_dict()
    assert d["token_ids"] == greedy_run.token_ids and len(d["steps"]) == 20


def test_streaming_yields_each_step_in_order(session, greedy_run):
    steps = list(stream_generate(session, PROMPT, GREEDY, 5))
    assert [s.index for s in steps] == [0, 1, 2, 3, 4]
    assert [s.token_id for s in steps] == greedy_run.token_ids[:5]
    assert steps[-1].stop_reason == "max_new_tokens" and all(s.stop_reason is None for s in steps[:-1])


def test_inspect_step_agrees_with_generate_and_reuses_stored_logits(session):
    params = SamplingParams(temperature=0.8, top_p=0.9, seed=3)
    run = Generation(session, PROMPT, params, 4, keep_logits=True)
    steps = list(run)
    for i, step in enumerate(steps):
        record, trace, seed = inspect_step(session, PROMPT, params, run.generated[:i], samples=100)
        assert seed == 3 and record.token_id == step.token_id and record.draw == step.draw
        assert record.phase == "stored"  # the run kept its logits: no model call
        assert sum(c for _, _, c, _ in record.samples) == 100
    # A slider change re-applies the pipeline to the same stored logits.
    hotter, _, _ = inspect_step(session, PROMPT, SamplingParams(temperature=1.5, seed=3), run.generated[:2])
    assert hotter.phase == "stored" and hotter.stages[-1].entropy_bits > steps[2].stages[-1].entropy_bits


def test_branch_prefix_continues_with_the_same_random_stream(session, greedy_run):
    params = SamplingParams(temperature=0.7, seed=5)
    base = generate(session, PROMPT, params, 6)
    branch_token = base.steps[2].candidates[1] if base.steps[2].candidates[0] == base.token_ids[2] else base.steps[2].candidates[0]
    prefix = base.token_ids[:2] + [branch_token]
    branch = generate(session, PROMPT, params, 6, prefix_ids=prefix)
    assert len(branch.token_ids) == 3  # only the new tokens after the prefix are in this run
    assert [s.draw for s in branch.steps] == [uniform_at(5, i) for i in range(3, 6)]
    assert branch.steps[0].phase == "prefill" and branch.steps[0].tokens_in_pass == len(base.prompt_ids) + 3


def test_cached_step_logits_match_an_uncached_forward(session):
    ids = prompt_ids(session, PROMPT)
    cache = new_cache(session)
    forward_last(session, ids[:-1], cache)
    cached, _ = forward_last(session, ids[-1:], cache)
    full, _ = forward_last(session, ids)
    assert torch.allclose(cached, full, atol=1e-4)


def test_logits_store_is_bounded(session):
    store = LogitsStore(max_entries=3)
    for i in range(10):
        store.put((i,), torch.zeros(4))
    assert len(store) == 3 and store.get((0,)) is None and store.get((9,)) is not None
    assert logits_store(session) is logits_store(session)  # one shared store per model


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=10_000), "max_new_tokens"),
        (dict(max_new_tokens=5, min_new_tokens=6), "min_new_tokens"),
        (dict(max_new_tokens=5, stop=["a", "b", "c", "d", "e"]), "stop"),
        (dict(max_new_tokens=5, stop=["x" * 500]), "stop"),
        (dict(max_new_tokens=5, prompt="   "), "empty"),
    ],
)
def test_bad_generation_arguments(session, kwargs, words):
    kwargs = {"prompt": PROMPT, **kwargs}
    with pytest.raises(InputError) as info:
        generate(session, kwargs.pop("prompt"), GREEDY, **kwargs)
    assert words in str(info.value)


def test_a_run_driven_by_hand_agrees_with_generate(session):
    """Steps (exact prefix), running on (KV cache), what-if and going back: the same tokens and draws as one
    `generate` with the seed, and the run ends by generate's own stop rule."""
    params = SamplingParams(temperature=0.9, top_k=40, seed=21)
    settings = Settings(params, max_new_tokens=6)
    full = generate(session, PROMPT, params, 6)
    run = SamplingRun.start(session, PROMPT, seed=21)
    for _ in range(2):
        run.step(session, settings)
    assert run.token_ids == full.token_ids[:2] and [t.draw for t in run.tokens] == [s.draw for s in full.steps[:2]]
    steps, trace = run.run_on(session, settings)
    assert [r.token_id for r in steps] == full.token_ids[2:] and trace.steps[0].phase == "prefill"
    assert run.token_ids == full.token_ids and run.stop_reason == full.stop_reason and run.done
    with pytest.raises(RuntimeError):
        run.step(session, settings)
    other = next(c for c in full.steps[1].candidates if c != full.token_ids[1])
    run.branch(session, 1, other, settings)
    assert run.token_ids == [full.token_ids[0], other] and run.tokens[1].forced and not run.done
    run.truncate(1)
    assert run.token_ids == full.token_ids[:1] and not run.done
