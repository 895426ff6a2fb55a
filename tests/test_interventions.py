"""Ablation and activation patching against independent edits of the model: zeroing a head equals zeroing the
o_proj columns that read it (a weight edit), mean ablation equals a hand-made replacement, patching the clean
run into itself or everywhere at layer 0 gives the clean logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.deadline import Deadline
from inference.errors import InputError
from inference.interventions import Ablation, ablate, ablated, head_sweep, patch_sweep, patched_logits

TEXT = "The capital of France is"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for these tests: on a shared, loaded CPU two threads mostly wait for each other
    (measured at load 6 on 2 cores: a 20-token pass took 0.12 CPU-s with one thread, 0.9 with two). The numbers
    compared do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"


def _ids(s, text):
    return s.tokenizer(text, return_tensors="pt").input_ids.to(s.device)


def _logits(s, ids):
    """Last-position logits, asked for alone as the interventions ask (the LM head on one row: a [n, V] product
    would round differently in the last bit)."""
    with s.lock, torch.no_grad():
        return s.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()


def _o_proj(s, layer):
    """The o_proj of one layer, found by hand for this test (not through the anatomy under test)."""
    return s.model.model.layers[layer].self_attn.o_proj


@pytest.mark.parametrize("which", ["session", "gemma"])
def test_zero_ablating_a_head_equals_zeroing_its_o_proj_columns(which, request):
    s = request.getfixturevalue(which)
    ids, layer, head, hd = _ids(s, TEXT), 1, 2, s.facts.head_dim
    with s.lock, torch.no_grad(), ablated(s, Ablation(((layer, head),)), ids[0].tolist()):
        hooked = s.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
    weight = _o_proj(s, layer).weight  # [d_model, heads * head_dim]: columns h*hd..(h+1)*hd read head h
    saved = weight[:, head * hd:(head + 1) * hd].clone()
    with torch.no_grad():
        weight[:, head * hd:(head + 1) * hd] = 0
    try:
        edited = _logits(s, ids)
    finally:
        with torch.no_grad():
            weight[:, head * hd:(head + 1) * hd] = saved
    assert (hooked - edited).abs().max() < 1e-5
    # The endpoint's distribution is the same pass's softmax.
    result = ablate(s, TEXT, heads=[(layer, head)])
    np.testing.assert_allclose(result.ablated_probs, torch.softmax(edited, -1).numpy(), atol=1e-6)


def test_ablating_nothing_is_the_clean_run_bit_for_bit(session):
    ids = _ids(session, TEXT)
    with session.lock, torch.no_grad(), ablated(session, Ablation(), ids[0].tolist()):
        hooked = session.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
    assert torch.equal(hooked, _logits(session, ids))
    result = ablate(session, TEXT)
    assert np.array_equal(result.clean_probs, result.ablated_probs) and result.kl == 0


def test_mean_ablation_equals_the_positional_mean_put_in_by_hand(session):
    ids, layer, head, hd = _ids(session, TEXT), 2, 5, session.facts.head_dim
    o_proj = _o_proj(session, layer)
    seen = {}
    handle = o_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("z", args[0].clone()))
    _logits(session, ids)
    handle.remove()
    mean = seen["z"][0, :, head * hd:(head + 1) * hd].mean(0)  # [hd]: the head's output averaged over positions

    def replace(module, args):
        z = args[0].clone()
        z[:, :, head * hd:(head + 1) * hd] = mean
        return (z,)

    handle = o_proj.register_forward_pre_hook(replace)
    try:
        by_hand = torch.softmax(_logits(session, ids), -1)
    finally:
        handle.remove()
    result = ablate(session, TEXT, heads=[(layer, head)], mode="mean")
    np.testing.assert_allclose(result.ablated_probs, by_hand.numpy(), atol=1e-6)


def test_zero_ablating_a_block_removes_what_it_adds(session):
    """Zeroing the MLP output of layer 0 equals a plain hook that zeroes that module's output."""
    ids = _ids(session, TEXT)
    handle = session.model.model.layers[0].mlp.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    try:
        by_hand = torch.softmax(_logits(session, ids), -1)
    finally:
        handle.remove()
    result = ablate(session, TEXT, blocks=[("mlp", 0)])
    np.testing.assert_allclose(result.ablated_probs, by_hand.numpy(), atol=1e-6)
    assert result.kl > 1.0 and result.delta_logprob < 0  # the first MLP matters for this answer


def test_head_sweep_rows_equal_single_ablations(session):
    sweep = head_sweep(session, TEXT, layers=[0])
    for head in (0, 4, 8):
        single = ablate(session, TEXT, heads=[(0, head)])
        assert sweep.delta_logprob[0, head] == pytest.approx(single.delta_logprob, abs=1e-4)
        assert sweep.kl[0, head] == pytest.approx(single.kl, abs=1e-4)
    assert np.isnan(sweep.kl[1]).all()  # layers not swept stay empty


def test_patching_sanity(session):
    clean, corrupt = _logits(session, _ids(session, CLEAN)), _logits(session, _ids(session, CORRUPT))
    n = _ids(session, CLEAN).shape[1]
    last = session.facts.num_layers - 1
    # The clean stream everywhere at layer 0: the clean run, exactly.
    assert torch.equal(patched_logits(session, CLEAN, CORRUPT, "resid_pre", 0, range(n)), clean)
    # The clean stream leaving the last layer at the last position: the clean answer's logits, exactly.
    assert torch.equal(patched_logits(session, CLEAN, CORRUPT, "resid_post", last, [n - 1]), clean)
    # The corrupted run patched into itself: nothing changes.
    assert torch.equal(patched_logits(session, CORRUPT, CORRUPT, "attn_out", 5, range(n)), corrupt)


def test_patch_sweep_restores_the_clean_answer_where_the_detail_is(session):
    sweep = patch_sweep(session, CLEAN, CORRUPT, site="resid_pre", deadline=Deadline(None))  # a loaded CI machine
    assert (sweep.clean_piece, sweep.corrupt_piece) == ("·Paris", "·Rome")
    n = len(sweep.clean_tokens)
    assert sweep.effect.shape == (session.facts.num_layers, n) and not sweep.timed_out
    # Layer 0, every position but the subject's: nothing to restore (those tokens are the same in both prompts).
    same = [p for p in range(n) if sweep.clean_tokens[p] == sweep.corrupt_tokens[p]]
    assert np.abs(sweep.effect[0, same]).max() < 1e-3
    # A single cell equals the patched run computed on its own.
    layer, position = 3, int(np.nanargmax(sweep.effect[3]))
    one = patched_logits(session, CLEAN, CORRUPT, "resid_pre", layer, [position])
    assert float(torch.softmax(one, -1)[sweep.clean_token_id]) == pytest.approx(sweep.clean_prob[layer, position], abs=1e-4)
    assert sweep.effect.max() > 0.5  # the subject's position carries the answer in early layers


def test_bad_requests(session):
    with pytest.raises(InputError, match="same number of tokens"):
        patch_sweep(session, CLEAN, "The big Colosseum of Rome is in the city of")
    with pytest.raises(InputError, match="must differ"):
        patch_sweep(session, CLEAN, CLEAN)
    with pytest.raises(InputError, match="Layer 99"):
        ablate(session, TEXT, heads=[(99, 0)])
    with pytest.raises(InputError, match="Head 9"):
        ablate(session, TEXT, heads=[(0, 9)])
    with pytest.raises(InputError, match="block"):
        ablate(session, TEXT, blocks=[("ffn", 0)])
    with pytest.raises(InputError, match="mode"):
        ablate(session, TEXT, heads=[(0, 0)], mode="half")


# ---------------------------------------------------------------------------------------------------
# The text form of an ablation, the block columns of the sweep, unfinished sweeps that continue


def test_parse_ablation_reads_heads_and_blocks_and_writes_them_back(session):
    from inference.interventions import parse_ablation

    a = parse_ablation(session, " l17h4; L 17 H 5,MLP L0, attn3 , L2 attention\n", "mean")
    assert a == Ablation(((17, 4), (17, 5)), (("mlp", 0), ("attn", 3), ("attn", 2)), "mean")
    assert a.spec == "L17H4, L17H5, mlp L0, attn L3, attn L2"
    assert parse_ablation(session, a.spec, "mean") == a  # the text form round-trips
    assert parse_ablation(session, "L1H1, L1H1").heads == ((1, 1),)  # duplicates once
    assert parse_ablation(session, "").empty and parse_ablation(session, "  ,; ").empty
    with pytest.raises(InputError, match="'head 4' is not a head or a block"):
        parse_ablation(session, "L17H4, head 4")
    with pytest.raises(InputError, match="Head 9 does not exist"):
        parse_ablation(session, "L17H9")
    with pytest.raises(InputError, match="Layer 30 does not exist"):
        parse_ablation(session, "mlp L30")
    with pytest.raises(InputError, match="mode"):
        parse_ablation(session, "L0H0", "half")
    with pytest.raises(InputError, match="at most 2,000"):
        parse_ablation(session, "L0H0, " * 400)


def test_sweep_block_columns_equal_single_block_ablations(session):
    sweep = head_sweep(session, TEXT, layers=[0], mode="mean")
    for column, kind in enumerate(("attn", "mlp")):
        single = ablate(session, TEXT, blocks=[(kind, 0)], mode="mean")
        assert sweep.block_delta_logprob[0, column] == pytest.approx(single.delta_logprob, abs=1e-4)
        assert sweep.block_kl[0, column] == pytest.approx(single.kl, abs=1e-4)
    assert sweep.names[sweep.clean_token_id] == "·Paris" and sweep.done == [0]


class _StopAfter:
    """A deadline that expires after `checks` looks (one per layer or position): a sweep cut short on purpose."""

    def __init__(self, checks: int):
        self.left = checks

    @property
    def expired(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_a_sweep_cut_short_continues_where_it_stopped(session):
    layers = [2, 3, 4]
    part = head_sweep(session, TEXT, layers=layers, mode="zero", deadline=_StopAfter(1))
    assert part.timed_out and part.done == [2] and np.isnan(part.kl[3]).all()
    rest = head_sweep(session, TEXT, layers=layers, mode="zero", resume=part)
    assert not rest.timed_out and rest.done == layers
    np.testing.assert_array_equal(rest.delta_logprob[2], part.delta_logprob[2])  # kept, not run again
    assert rest.delta_logprob[4, 1] == pytest.approx(ablate(session, TEXT, heads=[(4, 1)]).delta_logprob, abs=1e-4)
    # A resume of another sweep is ignored: the sweep starts over.
    other = head_sweep(session, TEXT, layers=[5], mode="zero", resume=part)
    assert other.done == [5]


def test_a_patching_sweep_cut_short_continues_where_it_stopped(session):
    clean, corrupt = "The capital of France is", "The capital of Italy is"  # 5 tokens: a short sweep
    part = patch_sweep(session, clean, corrupt, site="mlp_out", deadline=_StopAfter(2))
    assert part.timed_out and part.done == [0, 1]
    full = patch_sweep(session, clean, corrupt, site="mlp_out", deadline=Deadline(None), resume=part)
    assert not full.timed_out and full.done == [0, 1, 2, 3, 4] and (full.clean_piece, full.corrupt_piece) == ("·Paris", "·Rome")
    np.testing.assert_array_equal(full.effect[:, :2], part.effect[:, :2])  # kept, not run again
    one = patched_logits(session, clean, corrupt, "mlp_out", 0, [3])
    assert float(torch.softmax(one, -1)[full.clean_token_id]) == pytest.approx(full.clean_prob[0, 3], abs=1e-4)


def test_prompt_pairs_say_what_stops_them(session):
    from inference.interventions import prompt_pair

    pair = prompt_pair(session, CLEAN, CORRUPT)
    assert pair.problem is None and pair.differing == [1, 2, 3] and len(pair.clean_pieces) == 9
    longer = prompt_pair(session, CLEAN, "The big Colosseum of Rome is in the city of")
    assert str(longer.problem).startswith("The clean prompt is 9 tokens and the corrupted one 12")
    assert "Make the clean prompt 3 tokens longer" in str(longer.problem)
    assert longer.problem.key == "interventions.pair_counts_clean_many"  # a Message: the page shows it translated
    assert "must differ" in str(prompt_pair(session, CLEAN, CLEAN).problem)
    assert "at most 32 tokens" in str(prompt_pair(session, CLEAN, "word " * 40).problem)


def test_patching_from_the_kv_cache_on_gemma_with_sliding_window_layers(gemma):
    """Gemma 3 keeps 5 of every 6 layers in sliding-window caches: the sweep's passes start from a copy of the
    corrupted run's cache of those layers too, and each cell still equals its own full patched pass."""
    clean, corrupt = "Paris is the capital of", "Rome is the capital of"  # 6 tokens with Gemma's <bos>
    sweep = patch_sweep(gemma, clean, corrupt, site="resid_pre", deadline=Deadline(None))
    assert (sweep.clean_piece, sweep.corrupt_piece) == ("·France", "·Italy")
    assert sweep.effect.shape == (gemma.facts.num_layers, len(sweep.clean_tokens))
    for layer, position in [(0, 1), (9, 1), (17, len(sweep.clean_tokens) - 1)]:
        one = patched_logits(gemma, clean, corrupt, "resid_pre", layer, [position])
        assert float(torch.softmax(one, -1)[sweep.clean_token_id]) == pytest.approx(sweep.clean_prob[layer, position],
                                                                                    abs=1e-4)
    assert sweep.effect[0, 1] == pytest.approx(1.0, abs=1e-3)  # the whole detail, before any layer: all restored
