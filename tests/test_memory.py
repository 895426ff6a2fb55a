"""The Memory tab's inference: precision copies of the weights, the quantized KV cache, eviction policies and the
bytes each kind of layer holds; each checked against transformers itself (a model loaded in bfloat16, model(...,
labels=...).loss, a forward pass with an explicit attention mask, output_attentions) and against the tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.deadline import Deadline
from inference.errors import InputError
from inference.forward import forward_pass
from inference.kv_policies import _evicting_run, compare_policies, evaluate_policy, layer_kind_memory, sweep_budgets
from inference.model.kv import kv_shape
from inference.model.variants import available_precisions, cache_storage_bytes, parameter_bytes, precision_copy
from inference.precision import compare_kv_precision, compare_precisions

# 26 tokens for SmolLM2: short enough to run every policy one pass per token in seconds.
TEXT = ("The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid. "
        "The capital of Germany is")
NEW = 4  # greedy tokens in the precision runs


def ids_of(session, text=TEXT) -> list[int]:
    return session.tokenizer(text).input_ids


def loss_perplexity(model, ids, mask=None) -> float:
    """exp(mean negative log-likelihood) as transformers computes it (labels= shifts them inside)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), attention_mask=mask, labels=torch.tensor([ids]))
    return math.exp(out.loss.item())


def band_mask(n: int, allowed) -> torch.Tensor:
    """An additive 4D mask [1, 1, n, n]: 0 where allowed(query, key), the float minimum elsewhere."""
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    keep = (k <= q) & allowed(q, k)
    return torch.zeros(n, n).masked_fill(~keep, torch.finfo(torch.float32).min)[None, None]


@pytest.fixture(scope="module")
def precision(session):
    return compare_precisions(session, TEXT, ("float32", "bfloat16", "int8"), new_tokens=NEW, repeats=1)


# ---------------------------------------------------------------------------------------------------
# Weights


def test_reference_row_is_the_sessions_own_run(session, precision):
    ref = precision.rows[0]
    assert ref.name == "float32" and ref.is_reference
    assert (ref.top1_agreement, ref.mean_kl, ref.max_abs_dprob) == (1.0, 0.0, 0.0)
    assert ref.perplexity == pytest.approx(forward_pass(session, TEXT).perplexity, rel=1e-5)  # the Forward tab's
    assert ref.perplexity == pytest.approx(loss_perplexity(session.model, ids_of(session)), rel=1e-5)
    ids = ids_of(session)
    with torch.no_grad():
        greedy = session.model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False, top_k=None,
                                        top_p=None)[0, len(ids):].tolist()
    assert ref.greedy_ids == greedy


def test_weight_bytes_are_the_parameter_tensors(session, precision):
    unique = {id(p): p for p in session.model.parameters()}.values()  # the tied LM head once
    fp32 = sum(p.numel() * p.element_size() for p in unique)
    assert precision.row("float32").weight_bytes == fp32 == 4 * session.facts.num_parameters
    assert precision.row("bfloat16").weight_bytes == fp32 // 2
    with precision_copy(session, "int8") as (variant, info):
        inner = 0
        for p in {id(p): p for p in variant.model.parameters()}.values():
            names = p.__tensor_flatten__()[0] if type(p) not in (torch.Tensor, torch.nn.Parameter) else []
            inner += sum(getattr(p, n).numel() * getattr(p, n).element_size() for n in names) if names else \
                p.numel() * p.element_size()
        assert precision.row("int8").weight_bytes == inner == parameter_bytes(variant.model)
        assert info.quantized_layers == 7 * session.facts.num_layers  # q, k, v, o, gate, up, down; tied head kept
        # The tied LM head stays tied to the (float32) embedding: one matrix, not a second int8 copy.
        assert variant.model.get_output_embeddings().weight is variant.model.get_input_embeddings().weight
    assert precision.row("int8").weight_bytes < 0.45 * fp32


def test_bfloat16_row_equals_a_model_loaded_in_bfloat16(session, precision):
    from transformers import AutoModelForCausalLM

    from inference.model.loading import BUNDLED, converted_dir

    folder = converted_dir(BUNDLED[session.model_id].gguf_path())
    direct = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager").eval()
    ids = ids_of(session)
    row = precision.row("bfloat16")
    assert row.perplexity == pytest.approx(loss_perplexity(direct, ids), rel=2e-3)  # bf16 loss vs our fp32 log-softmax
    with torch.no_grad():
        greedy = direct.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False, top_k=None,
                                 top_p=None)[0, len(ids):].tolist()
    assert row.greedy_ids == greedy
    with precision_copy(session, "bfloat16") as (variant, _), torch.no_grad():
        ours = variant.model(input_ids=torch.tensor([ids])).logits
        theirs = direct(input_ids=torch.tensor([ids])).logits
        assert torch.equal(ours, theirs)  # the same model, bit for bit (RoPE's inv_freq stays float32 in both)
    assert 0 < row.mean_kl < 0.05 and 0.5 < row.top1_agreement <= 1 and row.speedup > 0


def test_copies_never_touch_the_shared_model(session):
    before = session.model.get_input_embeddings().weight[:4, :4].clone()
    with precision_copy(session, "bfloat16") as (variant, _):
        assert variant.model is not session.model and variant.lock is session.lock
        assert next(variant.model.parameters()).dtype == torch.bfloat16
    assert next(session.model.parameters()).dtype == torch.float32
    assert torch.equal(session.model.get_input_embeddings().weight[:4, :4], before)
    with pytest.raises(InputError, match="not a precision"):
        compare_precisions(session, TEXT, ("float8",))


@pytest.mark.slow
def test_int4_row(session, precision):
    if "int4" not in available_precisions(session):
        pytest.skip("torch has no int4 CPU kernel here")
    cmp = compare_precisions(session, TEXT, ("float32", "int4"), new_tokens=NEW, repeats=1)
    int4 = cmp.row("int4")
    assert int4.weight_bytes < 0.6 * precision.row("bfloat16").weight_bytes
    # Groups of 32 are GGUF Q4_1's blocks: int4 finds the file's levels again; only bfloat16 activations differ.
    assert int4.top1_agreement > 0.8 and int4.mean_kl < 0.05


# ---------------------------------------------------------------------------------------------------
# KV cache precision


def test_fp8_kv_cache_bytes_and_agreement(session):
    kvc = compare_kv_precision(session, TEXT, prefill_tokens=13, new_tokens=NEW)
    plain, fp8 = kvc.rows
    n = len(ids_of(session))
    assert plain.cache_bytes == n * 46_080 and plain.bytes_per_token == plain.formula_bytes_per_token == 46_080
    layers = session.facts.num_layers
    assert fp8.cache_bytes == n * 11_520 + layers * 2 * 4  # one byte per value, plus a float32 scale per K and V
    assert fp8.formula_bytes_per_token == 11_520
    # Decoding through the plain cache gives the Forward tab's perplexity; fp8 is close but not equal.
    assert plain.perplexity == pytest.approx(forward_pass(session, TEXT).perplexity, rel=1e-4)
    assert (plain.top1_agreement, plain.mean_kl) == (1.0, 0.0)
    assert 0 < fp8.mean_kl < 0.1 and 0.5 <= fp8.top1_agreement <= 1
    assert len(fp8.kl_per_position) == n - 13 and len(fp8.greedy_ids) == NEW
    assert fp8.perplexity == pytest.approx(plain.perplexity, rel=0.2)


# ---------------------------------------------------------------------------------------------------
# Eviction policies


def test_full_cache_and_large_budgets_give_the_forward_perplexity(session):
    full = evaluate_policy(session, TEXT, "full")
    n = len(ids_of(session))
    assert full.perplexity == pytest.approx(forward_pass(session, TEXT).perplexity, rel=1e-6)
    assert full.perplexity == pytest.approx(loss_perplexity(session.model, ids_of(session)), rel=1e-5)
    assert full.kept_positions == list(range(n)) and full.cache_bytes == n * 46_080
    for policy in ("window", "sinks", "heavy_hitters"):
        wide = evaluate_policy(session, TEXT, policy, budget=n, sinks=2)
        assert wide.perplexity == full.perplexity and wide.first_evicted_at is None  # the same one pass, to the bit
    # The attention sink, as the Attention tab measures it (mean over queries 1..n-1): from output_attentions.
    with torch.no_grad():
        attentions = session.model(input_ids=torch.tensor([ids_of(session)]), output_attentions=True).attentions
    expected = np.stack([a[0, :, 1:, 0].mean(-1).numpy() for a in attentions])
    np.testing.assert_allclose(full.first_token_attention, expected, atol=1e-5)


def test_window_equals_a_masked_forward_pass(session):
    n, w = len(ids_of(session)), 8
    run = evaluate_policy(session, TEXT, "window", budget=w)
    assert run.kept_positions == list(range(n - w, n)) and all(k == run.kept_positions for k in run.kept_by_layer)
    masked = loss_perplexity(session.model, ids_of(session), band_mask(n, lambda q, k: k > q - w))
    assert run.perplexity == pytest.approx(masked, rel=1e-4)
    assert run.cache_bytes == w * 46_080 == run.formula_bytes and run.first_evicted_at == w
    full = evaluate_policy(session, TEXT, "full")
    assert run.perplexity > 2 * full.perplexity  # the window lost the first token: the classic collapse


def test_sinks_keep_the_first_tokens_and_equal_their_mask(session):
    n, w, s = len(ids_of(session)), 8, 2
    run = evaluate_policy(session, TEXT, "sinks", budget=w, sinks=s)
    assert run.kept_positions == [0, 1, *range(n - (w - s), n)]
    masked = loss_perplexity(session.model, ids_of(session), band_mask(n, lambda q, k: (k > q - (w - s)) | (k < s)))
    assert run.perplexity == pytest.approx(masked, rel=1e-4)
    window = evaluate_policy(session, TEXT, "window", budget=w)
    assert run.perplexity < window.perplexity / 2  # sinks restore most of it
    assert run.first_evicted_at is None


def test_heavy_hitters_keep_the_most_attended_tokens(session):
    """After a prefill of B tokens, the first eviction keeps the recent R - 1 tokens and the B - R tokens with the
    most attention (summed over heads and queries, per layer) as output_attentions gives it."""
    ids = ids_of(session)
    b, r = 10, 4
    run = _evicting_run(session, ids[:b + 1], "heavy_hitters", b, 0, r, Deadline(None))
    with torch.no_grad():
        attentions = session.model(input_ids=torch.tensor([ids[:b]]), output_attentions=True).attentions
    for layer, weights in enumerate(attentions):
        scores = weights[0].sum(dim=(0, 1)).double()  # [b]: attention each key received
        recent = list(range(b - (r - 1), b))
        heavy = torch.topk(scores[: b - (r - 1)], b - r).indices.sort().values.tolist()
        assert run.kept_by_layer[layer] == [*heavy, *recent, b], layer
    assert run.cache_bytes == b * 46_080
    full_run = evaluate_policy(session, TEXT, "heavy_hitters", budget=8)
    assert len(full_run.kept_positions) >= 8 and all(len(k) == 8 for k in full_run.kept_by_layer)
    assert all(k[-4:] == list(range(len(ids) - 4, len(ids))) for k in full_run.kept_by_layer)  # the recent half


def test_policy_checks_deadline_and_sweep(session):
    with pytest.raises(InputError, match="budget"):
        evaluate_policy(session, TEXT, "window", budget=2)
    with pytest.raises(InputError, match="Sinks"):
        evaluate_policy(session, TEXT, "sinks", budget=8, sinks=8)
    with pytest.raises(InputError, match="not a policy"):
        evaluate_policy(session, TEXT, "lru")
    short = "The capital of France is Paris, and Rome is"  # 10 tokens
    cut = evaluate_policy(session, short, "window", budget=4, deadline=Deadline(0))
    assert cut.timed_out and len(cut.nll) == 4  # the first pass only: positions 0..3 predict tokens 1..4
    again = evaluate_policy(session, short, "window", budget=4, deadline=Deadline(None))
    assert not again.timed_out and len(again.nll) == len(ids_of(session, short)) - 1  # cut runs are never cached
    sweep = sweep_budgets(session, TEXT, sinks=2, budgets=(8, 64))
    assert sweep.budgets == [8]  # 64 >= the text's 26 tokens: nothing to evict
    assert sweep.runs["window"][0].perplexity == evaluate_policy(session, TEXT, "window", 8).perplexity
    comparison = compare_policies(session, TEXT, 8, 2)
    assert [r.policy for r in comparison.runs] == ["window", "sinks", "heavy_hitters"]
    assert comparison.to_dict()["runs"][1]["kept_positions"][:2] == [0, 1]


def test_an_evicting_cache_holds_its_bytes(session):
    run = evaluate_policy(session, TEXT, "sinks", budget=8, sinks=2)
    assert run.cache_bytes == 8 * kv_shape(session).bytes_per_token
    from inference.kv_policies import evicting_cache
    from inference.scoring import run_tokens

    cache = evicting_cache(session, "window", 4, 0, 0)
    run_tokens(session, ids_of(session)[:4], 0, cache)
    assert cache_storage_bytes(cache) == [4 * kv_shape(session).bytes_per_token_layer] * session.facts.num_layers


# ---------------------------------------------------------------------------------------------------
# Sliding-window layers


def test_smollm2_has_no_sliding_window_layers(session):
    with pytest.raises(InputError, match="no sliding-window layers"):
        layer_kind_memory(session, TEXT)


@pytest.mark.slow
def test_gemma_local_layers_stop_growing(gemma):
    m = layer_kind_memory(gemma, TEXT, 1024)
    per = kv_shape(gemma).bytes_per_token_layer
    assert (len(m.local_layers), len(m.global_layers), m.window) == (15, 3, 512)
    assert m.lengths == [256, 512, 768, 1024]
    assert m.global_bytes == [3 * n * per for n in m.lengths]
    assert m.local_bytes == [15 * min(n, 511) * per for n in m.lengths]  # capped at window - 1 from 512 on
    assert m.matches_formula
    from components.memory.figures import layer_kind_figure, layer_kind_summary

    assert len(layer_kind_figure(m).data) == 4  # local bars, global bars, formula marks, every layer global
    assert layer_kind_summary(m).startswith("At 1,024 tokens the 15 sliding-window layers hold 15.70 MB")
    with pytest.raises(InputError, match="QuantizedCache"):
        compare_kv_precision(gemma, TEXT)
