"""Attention capture, decode step and logit lens on the real bundled model, checked against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.attention import SUMMARIES, capture_attention
from inference.errors import InputError
from inference.model.run import head_logits
from inference.limits import LENS_MAX_POSITIONS, LENS_TOP_K, MAX_ATTENTION_TOKENS
from inference.tokens import tokenize

TEXT = "The cat sat on the mat because it was tired"
FRANCE = "The capital of France is"
FP16 = 5e-4  # fp16 storage: weights lie in [0, 1], so the absolute error is below 2**-11


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _tol(session) -> float:
    """fp16 storage on the fp32 CPU model; a bf16 GPU model itself differs by ~1e-2 between two paths."""
    return FP16 if session.dtype == torch.float32 else 1e-2


def _reference(session, ids: list[int], **kwargs):
    """The model's own outputs, by a plain call (no cache, nothing of ours in between)."""
    with session.lock, torch.no_grad():
        return session.model(torch.tensor([ids], device=session.device), use_cache=False, **kwargs)


@pytest.fixture(scope="module")
def maps(session):
    return capture_attention(session, TEXT)


@pytest.fixture(scope="module")
def reference(session, maps):
    return _reference(session, maps.tokens.ids, output_attentions=True)


def test_weights_equal_output_attentions_for_every_layer(session, maps, reference):
    assert maps.num_layers == len(reference.attentions) == 30
    assert maps.num_heads == 9 and maps.n == len(maps.tokens.ids)
    for layer, expected in enumerate(reference.attentions):
        got = maps.layer(layer)
        assert got.dtype == np.float32 and got.shape == (9, maps.n, maps.n)
        np.testing.assert_allclose(got, _np(expected[0]), atol=_tol(session), rtol=0)


def test_rows_sum_to_one_and_the_causal_mask_is_zero(maps):
    upper = np.triu(np.ones((maps.n, maps.n), dtype=bool), k=1)
    for layer in range(maps.num_layers):
        weights = maps.layer(layer)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=2e-3)
        assert (weights[:, upper] == 0).all()
        assert (weights >= 0).all()
    np.testing.assert_allclose(maps.pattern(5), maps.layer(5).mean(0))


def test_query_row_is_a_row_of_the_map(maps):
    weights = maps.layer(7)
    for query in (0, 3, maps.n - 1):
        np.testing.assert_array_equal(maps.query_row(7, query, 2), weights[2, query, : query + 1])
        np.testing.assert_allclose(maps.query_row(7, query), weights[:, query, : query + 1].mean(0), rtol=1e-6)
    with pytest.raises(InputError, match="Token 10 does not exist"):
        maps.query_row(7, maps.n)


def test_decode_row_equals_last_row_of_the_full_map(session, maps):
    """The decode step (one query over the KV cache) sees what a full pass over prompt+token sees last."""
    token = maps.decode.token_id
    full = _reference(session, maps.tokens.ids + [token], output_attentions=True)
    assert maps.decode.cached_keys == maps.n
    for layer, expected in enumerate(full.attentions):  # each [1, heads, n+1, n+1]
        np.testing.assert_allclose(maps.decode.rows[layer].astype(np.float32), _np(expected[0, :, -1]),
                                   atol=_tol(session), rtol=0)
    np.testing.assert_allclose(maps.decode.row(3, 4), _np(full.attentions[3][0, 4, -1]), atol=_tol(session))


def test_decode_token_is_the_greedy_next_token(session, maps):
    ids = torch.tensor([maps.tokens.ids], device=session.device)
    with session.lock, torch.no_grad():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)
    assert maps.decode.token_id == int(out[0, -1])


def test_logit_lens_last_layer_is_the_models_distribution(session):
    maps = capture_attention(session, FRANCE)
    lens = maps.lens
    logits = _reference(session, maps.tokens.ids).logits[0].float().cpu()  # [n, V]
    probs = torch.softmax(logits, -1)
    assert lens.positions == list(range(maps.n))  # short prompt: every position is covered
    assert lens.top_ids.shape == (maps.num_layers + 1, maps.n, LENS_TOP_K)
    for column, position in enumerate(lens.positions):
        values, ids = probs[position].topk(LENS_TOP_K)
        assert lens.top_ids[-1, column].tolist() == ids.tolist()
        np.testing.assert_allclose(lens.top_probs[-1, column], values.numpy(), atol=1e-5)
        assert lens.answer_ids[column] == int(ids[0])
        np.testing.assert_allclose(lens.answer_probs[-1, column], float(values[0]), atol=1e-5)
    # " Paris" is the answer and it rises through the last layers.
    assert lens.answer_pieces[-1] == "·Paris"
    rise = lens.answer_probs[:, -1]
    assert rise[-1] > 0.5 and rise[-1] > rise[-2] > rise[-4] and rise[0] < 1e-3


def test_lens_head_on_the_raw_last_layer_gives_the_models_logits(session):
    """The lens (final norm + LM head) applied to the last layer's own output reproduces the logits, so
    the same function applied to earlier layers is the model's own read-out."""
    raw = {}
    layer = session.model.model.layers[-1]
    handle = layer.register_forward_hook(lambda module, args, output: raw.setdefault("h", output))
    try:
        ids = tokenize(session, FRANCE).ids
        out = _reference(session, ids)
    finally:
        handle.remove()
    with torch.no_grad():
        np.testing.assert_allclose(_np(head_logits(session, raw["h"])), _np(out.logits), atol=1e-4)
    maps = capture_attention(session, FRANCE)
    np.testing.assert_allclose(maps.hidden_norms[-1], _np(raw["h"][0].float().norm(dim=-1)), rtol=1e-5)
    assert maps.hidden_norms.shape == (maps.num_layers + 1, maps.n)


def test_lens_covers_only_the_last_positions(session):
    maps = capture_attention(session, "one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen seventeen eighteen")
    assert maps.n > LENS_MAX_POSITIONS
    assert maps.lens.positions == list(range(maps.n - LENS_MAX_POSITIONS, maps.n))
    with pytest.raises(InputError, match="last 16 positions"):
        maps.lens.column(0)


def test_grouped_query_heads(session, maps):
    """SmolLM2: 9 query heads read 3 KV heads, as transformers' repeat_kv groups them (h // 3)."""
    config = session.model.config
    assert maps.num_kv_heads == config.num_key_value_heads == 3
    assert maps.heads_sharing(4) == [3, 4, 5] and maps.kv_head(8) == 2 and maps.kv_head(0) == 0
    attention = session.model.model.layers[0].self_attn
    assert attention.num_key_value_groups == maps.queries_per_kv_head == 3


def test_head_summaries_describe_the_maps(maps):
    assert set(maps.summaries) == set(SUMMARIES)
    for layer in (0, 14, 29):
        weights = maps.layer(layer)  # [heads, n, n]
        np.testing.assert_allclose(maps.summaries["first"][layer], weights[:, 1:, 0].mean(-1), atol=1e-3)
        previous = np.stack([weights[:, i, i - 1] for i in range(1, maps.n)], -1).mean(-1)
        np.testing.assert_allclose(maps.summaries["previous"][layer], previous, atol=1e-3)
        assert (maps.summaries["entropy"][layer] >= 0).all()
        assert (maps.summaries["distance"][layer] <= maps.n).all()


def test_cached_and_switching_runs_no_model(session, maps):
    calls = []
    handle = session.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        assert capture_attention(session, TEXT) is maps
        for layer in range(maps.num_layers):
            maps.pattern(layer, layer % 9)
            maps.pattern(layer)
    finally:
        handle.remove()
    assert calls == []
    assert capture_attention(session, TEXT, chat=True) is not maps


def test_chat_tokens_are_the_chat_template(session):
    maps = capture_attention(session, "Hi", chat=True)
    expected = session.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert maps.tokens.ids == list(expected["input_ids"])


def test_memory_budget_drops_layers_and_brings_them_back(session, maps, reference):
    """Over the budget, layers are dropped and recaptured exactly when viewed; memory stays under it."""
    extras = maps.retained_bytes() - maps.held_bytes()
    per_layer = maps.layer_bytes()
    budget = extras + 3 * per_layer
    small = capture_attention(session, TEXT, budget=budget)
    assert small.resident_layers() == [0, 1, 2]
    assert small.retained_bytes() <= budget
    for layer in (29, 12, 2):  # least recently viewed go first: 29 drops 0, 12 drops 1, 2 is still held
        np.testing.assert_allclose(small.layer(layer), _np(reference.attentions[layer][0]), atol=_tol(session))
        assert small.retained_bytes() <= budget
    assert small.recaptures == 2  # 29 and 12 came back by a model pass
    assert small.resident_layers() == [2, 12, 29]


def test_fp16_lower_triangle_storage_is_compact(maps):
    n, heads = maps.n, maps.num_heads
    assert maps.packed(0).dtype == np.float16
    assert maps.packed(0).nbytes == maps.layer_bytes() == heads * n * (n + 1) // 2 * 2  # half of an fp16 square, a quarter of fp32


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text_is_refused(session, text):
    with pytest.raises(InputError, match="empty"):
        capture_attention(session, text)


def test_prompt_over_the_cap_is_refused_before_any_model_call(session):
    calls = []
    handle = session.model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(InputError, match=f"at most {MAX_ATTENTION_TOKENS}"):
            capture_attention(session, "word " * (MAX_ATTENTION_TOKENS + 10))
    finally:
        handle.remove()
    assert calls == []


@pytest.mark.parametrize("layer", [-1, 30, 2.5, True, "3"])
def test_layer_out_of_range(maps, layer):
    with pytest.raises(InputError, match="Layer .* does not exist: this model has 30 layers, numbered 0 to 29"):
        maps.layer(layer)


@pytest.mark.parametrize("head", [-1, 9, 100])
def test_head_out_of_range(maps, head):
    with pytest.raises(InputError, match="Head .* does not exist: each layer has 9 heads, numbered 0 to 8"):
        maps.pattern(0, head)


def test_gemma_local_layers_are_marked_as_its_config_says(gemma, session):
    from components.attention.events import _overview
    from components.attention.exports import attention_data

    maps = capture_attention(gemma, "The cat sat on the mat.")
    cfg = gemma.model.config.get_text_config()
    expected = [cfg.sliding_window if t == "sliding_attention" else None for t in cfg.layer_types]
    assert maps.windows == expected and any(expected) and not all(expected)  # interleaved local and global
    grid, _ = _overview(maps, "entropy", 0, None)
    local_rows = [i for i, w in enumerate(expected) if w]
    assert grid.count('class="lie-att-local"') == len(local_rows)
    assert f">{local_rows[0]} local</th>" in grid and f"last {cfg.sliding_window} tokens" in grid
    assert attention_data(maps, local_rows[0], 0)["sliding_window"] == cfg.sliding_window
    assert attention_data(maps, expected.index(None), 0)["sliding_window"] is None
    plain, _ = _overview(capture_attention(session, "The cat sat on the mat."), "entropy", 0, None)
    assert "lie-att-local" not in plain  # SmolLM2 attends globally everywhere
