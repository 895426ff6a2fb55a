"""inference.timeline on the real bundled SmolLM2: the KV cache against transformers' own cache, cache on/off,
the step records, the headline metrics, the sweep, batching, and the refusals."""

from __future__ import annotations

import math
import time
from unittest import mock

import pytest
import torch

from inference import sweep as sweep_mod
from inference.errors import InputError
from inference.generation import prompt_ids
from inference.limits import MAX_SWEEP_TOKENS
from inference.model.vocab import pad_id
from inference.sampling import SamplingParams
from inference.timeline import (
    PassProfiler,
    batch_throughput,
    compare_cache,
    context_sweep,
    kv_shape,
    prefill_flops,
    prompt_of_length,
    timeline,
)

PROMPT = "What is the capital of France?"
NEW = 10
GREEDY = SamplingParams(temperature=0.0, seed=1)


@pytest.fixture(scope="module")
def greedy(session):
    """Ten greedy tokens with the cache (EOS blocked so the count is fixed)."""
    return timeline(session, PROMPT, GREEDY, NEW, chat=True, min_new_tokens=NEW)


@pytest.fixture(scope="module")
def comparison(session):
    """A sampled run (seeded) with the cache on and off."""
    return compare_cache(session, PROMPT, SamplingParams(temperature=0.8, top_k=40, seed=5), 8, chat=True)


def reference_tokens(session, prompt, new, chat=True, min_new=0):
    ids = torch.tensor([prompt_ids(session, prompt, chat)], device=session.device)
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                     min_new_tokens=min_new, pad_token_id=session.tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


# ---------------------------------------------------------------------------------------------------
# KV cache


def test_kv_bytes_per_token_is_46080_and_matches_transformers_cache(session, greedy):
    if session.dtype != torch.float32:
        pytest.skip("the 46,080 figure is for float32 (CPU)")
    kv = kv_shape(session)
    assert (kv.num_layers, kv.num_kv_heads, kv.head_dim, kv.bytes_per_element) == (30, 3, 64, 4)
    assert kv.bytes_per_token == 2 * 30 * 3 * 64 * 4 == 46_080 == session.facts.kv_bytes_per_token_fp32
    assert kv.mha_bytes_per_token == 3 * 46_080  # 9 query heads would each need their own K and V
    # transformers' own cache after a plain forward pass of the prompt holds exactly that many bytes per token.
    ids = torch.tensor([prompt_ids(session, PROMPT)], device=session.device)
    with session.lock, torch.inference_mode():
        cache = session.model(ids, use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == 46_080 * ids.shape[1]
    # Every step of the measured run: bytes read from the run's cache tensors = formula x tokens then cached.
    for step in greedy.steps:
        assert step.cache_bytes == 46_080 * step.cache_len
    out = greedy.to_dict()["kv"]
    assert out["matches"] and out["bytes"] == out["formula_bytes"] == 46_080 * greedy.steps[-1].cache_len
    assert out["layer_bytes"] == [46_080 // 30 * greedy.steps[-1].cache_len] * 30


# ---------------------------------------------------------------------------------------------------
# Step records and metrics


def test_steps_are_complete_and_ordered(session, greedy):
    n = len(prompt_ids(session, PROMPT))
    steps = greedy.steps
    assert [s.index for s in steps] == list(range(NEW)) and len(greedy.token_ids) == NEW
    assert [s.phase for s in steps] == ["prefill"] + ["decode"] * (NEW - 1)
    assert [s.tokens_in_pass for s in steps] == [n] + [1] * (NEW - 1)
    assert [s.cache_len for s in steps] == [n + i for i in range(NEW)]
    assert [s.token_id for s in steps] == greedy.token_ids
    assert steps[0].start_s == 0.0
    for before, after in zip(steps, steps[1:]):
        assert after.start_s >= before.start_s + before.step_s - 1e-9
    for s in steps:
        assert 0 < s.forward_s and 0 < s.sampling_s and s.forward_s + s.sampling_s <= s.step_s + 1e-9
    # The same tokens transformers' greedy generate gives (EOS blocked the same way).
    assert greedy.token_ids == reference_tokens(session, PROMPT, NEW, min_new=NEW)


def test_metrics_are_positive_and_consistent(greedy):
    m = greedy.metrics
    assert m.new_tokens == NEW and all(v > 0 for v in (m.ttft_s, m.prefill_s, m.first_draw_s, m.tpot_mean_s,
                                                       m.total_s, m.tokens_per_s, m.decode_tokens_per_s))
    # TTFT = prefill + first draw (+ a fraction of a millisecond of bookkeeping).
    assert m.prefill_s + m.first_draw_s <= m.ttft_s <= m.prefill_s + m.first_draw_s + max(0.01, 0.1 * m.ttft_s)
    assert m.ttft_s == pytest.approx(greedy.steps[0].step_s, abs=1e-6)
    # TTFT + TPOT x (N - 1) = total, and TPOT is the mean of the later steps (their gaps included).
    assert m.ttft_s + m.tpot_mean_s * (NEW - 1) == pytest.approx(m.total_s, rel=1e-9)
    assert m.tpot_mean_s == pytest.approx(sum(s.step_s for s in greedy.steps[1:]) / (NEW - 1), rel=0.05)
    assert m.tpot_p50_s <= m.tpot_p90_s
    assert m.tokens_per_s == pytest.approx(NEW / m.total_s) and m.decode_tokens_per_s == pytest.approx(1 / m.tpot_mean_s)
    mem = greedy.memory
    assert mem["peak_bytes"] >= mem["baseline_bytes"] > 0 and greedy.weights_bytes > 100e6


# ---------------------------------------------------------------------------------------------------
# Cache on vs off


def test_cache_off_gives_identical_tokens_and_recomputes(session, comparison):
    on, off = comparison.on, comparison.off
    assert comparison.identical and on.token_ids == off.token_ids and on.seed == off.seed == 5
    n = len(prompt_ids(session, PROMPT))
    assert [s.phase for s in off.steps] == ["recompute"] * len(off.steps)
    assert [s.tokens_in_pass for s in off.steps] == [n + i for i in range(len(off.steps))]
    assert all(s.cache_bytes == 0 and s.cache_len == 0 for s in off.steps)
    assert comparison.speedup_total > 0 and comparison.speedup_last_step > 0
    out = comparison.to_dict()
    assert out["off"]["kv"]["bytes"] == 0 and out["on"]["kv"]["matches"]


def test_cache_off_is_capped(session):
    with pytest.raises(InputError, match="Without the KV cache.*limit is"):
        timeline(session, PROMPT, GREEDY, 256, use_cache=False)


# ---------------------------------------------------------------------------------------------------
# Context-length sweep


def _hook_ids(session) -> list[set]:
    """Hook ids on every layer's attention and MLP (transformers installs its own capture hooks on
    self_attn once attentions are requested, so compare before and after instead of expecting none)."""
    return [set(attn._forward_hooks) | set(attn._forward_pre_hooks) | set(mlp._forward_hooks)
            | set(mlp._forward_pre_hooks) for attn, mlp in PassProfiler(session).parts()]


def test_small_sweep_measures_each_length_and_is_cached(session):
    lengths = (16, 32, 48)
    calls = []
    hooks_before = _hook_ids(session)
    sweep = context_sweep(session, lengths=lengths, decode_steps=2, fresh=True,
                          progress=lambda i, total, n: calls.append((i, total, n)))
    assert [p.prompt_tokens for p in sweep.points] == list(lengths)
    assert calls[0] == (0, 3, 16) and calls[-1][0] == 3
    kv = kv_shape(session)
    for p in sweep.points:
        assert p.kv_bytes == p.kv_formula_bytes == kv.bytes_per_token * p.prompt_tokens
        assert p.prefill_s > 0 and p.decode_s > 0 and p.decode_steps == 2
        inside = p.split["attention_core_s"] + p.split["projections_s"] + p.split["mlp_s"]
        assert inside <= p.prefill_s * 1.05 and sum(p.split.values()) >= p.prefill_s * (1 - 1e-9)
        assert all(v >= 0 for v in p.split.values()) and p.split["mlp_s"] > 0 and p.split["projections_s"] > 0
        f = session.facts
        assert p.flops["attention"] == 4 * f.num_layers * f.num_heads * f.head_dim * p.prompt_tokens ** 2
    assert sweep.linear is None and sweep.quadratic is None  # 3 points: no fit claimed
    # Cached per model: the same request does not run the model again.
    with mock.patch.object(sweep_mod, "measure_point", side_effect=AssertionError("the model ran")):
        again = context_sweep(session, lengths=lengths, decode_steps=2)
    assert again.cached and [p.prefill_s for p in again.points] == [p.prefill_s for p in sweep.points]
    # The profiler's hooks are gone after the sweep.
    assert _hook_ids(session) == hooks_before


def test_profiler_finds_the_layers_of_a_gpt2(tiny_gpt2):
    """The profiler asks the model layer where each layer's attention and MLP are: on GPT-2 (attn / mlp, fused
    Conv1D projections) it times every layer, and its FLOP count reads the Conv1D weights."""
    model = tiny_gpt2.model
    profiler = PassProfiler(tiny_gpt2)
    assert profiler.parts() == [(block.attn, block.mlp) for block in model.transformer.h]
    ids = torch.tensor([list(range(10, 30))])  # [1, 20]
    hooks = lambda: [(set(m._forward_hooks), set(m._forward_pre_hooks)) for m in model.modules()]  # noqa: E731
    before = hooks()
    with torch.inference_mode(), profiler:
        start = time.perf_counter()
        model(ids)
        split = profiler.take(time.perf_counter() - start)
    assert split["projections_s"] > 0 and split["mlp_s"] > 0 and split["attention_core_s"] > 0
    assert hooks() == before  # the profiler's hooks are gone
    d, layers, vocab = 32, 2, model.config.vocab_size
    # GPT-2's decoder layer holds 12 d² weights: c_attn 3d², attn c_proj d², c_fc 4d², mlp c_proj 4d².
    assert prefill_flops(tiny_gpt2, 20)["linear"] == 2 * layers * 12 * d * d * 20 + 2 * d * vocab


def test_flops_and_prompt_lengths(session):
    f = session.facts
    linear = prefill_flops(session, 100)["linear"]
    # 2 x the Linear weights of the decoder layers per token (q, k, v, o, gate, up, down), + the LM head once.
    per_layer = f.hidden_size * (f.num_heads + 2 * f.num_kv_heads) * f.head_dim + f.num_heads * f.head_dim * f.hidden_size \
        + 3 * f.hidden_size * f.intermediate_size
    assert linear == 2 * f.num_layers * per_layer * 100 + 2 * f.hidden_size * f.vocab_size
    for n in (16, 100, 257):
        assert len(session.tokenizer(prompt_of_length(session, n)).input_ids) == n


def test_sweep_refusals(session, monkeypatch):
    context = session.facts.context_length
    with pytest.raises(InputError, match="context length"):
        context_sweep(session, lengths=[16, context])
    with pytest.raises(InputError, match=f"up to {MAX_SWEEP_TOKENS:,} tokens"):
        context_sweep(session, MAX_SWEEP_TOKENS * 2)
    with pytest.raises(InputError, match="at most"):
        context_sweep(session, lengths=list(range(16, 16 + 8 * 20, 8)))
    with pytest.raises(InputError, match="at least"):
        context_sweep(session, lengths=[2])
    with pytest.raises(InputError, match="whole number"):
        context_sweep(session, "lots")
    monkeypatch.setattr(sweep_mod, "MAX_SWEEP_WORKING_BYTES", 10_000_000)
    with pytest.raises(InputError, match="memory cap"):
        context_sweep(session, 512)


# ---------------------------------------------------------------------------------------------------
# Batch throughput


def test_batch_matches_transformers_and_one_at_a_time(session):
    prompts = ["Hi", "Name three colours of the rainbow, please."]
    new = 4
    result = batch_throughput(session, prompts, new, chat=True)
    assert result.identical and result.batched.batch_size == 2 and len(result.batched.decode_s) == new - 1
    # transformers' batched generate with the same left padding and mask, EOS blocked the same way.
    rows = [prompt_ids(session, p, True) for p in prompts]
    width = max(map(len, rows))
    pad = pad_id(session)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                                     min_new_tokens=new, pad_token_id=pad)
    assert result.batched.token_ids == out[:, width:].tolist()
    d = result.to_dict()
    assert d["speedup"] > 0 and math.isclose(d["single_total_s"], sum(r["total_s"] for r in d["single"]))


def test_batch_refusals(session):
    with pytest.raises(InputError, match="at least one prompt"):
        batch_throughput(session, ["  "], 4)
    with pytest.raises(InputError, match="At most"):
        batch_throughput(session, ["a"] * 9, 4)
    with pytest.raises(InputError, match="between 1 and"):
        batch_throughput(session, ["a"], 0)
