"""The recorded forward pass against transformers itself: parameter counts, perplexity = exp(loss), surprisal
from the model's own logits, the final norm and LM head reproducing the logits, the residual updates equal to
the blocks' own outputs, RoPE from the model's rotary module, and one model run per text."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

from components.forward.figures import box_links
from inference import forward as F
from inference.errors import InputError
from inference.attention import capture_attention
from inference.limits import FORWARD_EMBED_TOKENS, MAX_ATTENTION_TOKENS, MAX_FORWARD_TOKENS

TEXT = "The capital of France is Paris, and the capital of Germany is"


def _ids(s, text):
    return torch.tensor([F.forward_pass(s, text).tokens.ids], device=s.device)


def _reference(s, text):
    """The model's own outputs for the text: logits [n, V], loss, hidden states (transformers' last one is normed)."""
    ids = _ids(s, text)
    with s.lock, torch.no_grad():
        out = s.model(input_ids=ids, labels=ids, output_hidden_states=True, use_cache=False)
    return ids[0], out


# ---------------------------------------------------------------------------------------------------
# The diagram's parameters and shapes


def _check_diagram(s, forward):
    boxes = F.diagram(s, forward)
    assert F.diagram_params(boxes) == s.model.num_parameters()
    layers = next(b for b in boxes if b.kind == "layers")
    parts = F.anatomy(s)
    # One layer's boxes add up to that layer's parameters; the layer block holds all L layers.
    assert sum(c.params for c in layers.children) == parts.layer_params[0]
    assert layers.params == sum(p.numel() for p in s.model.get_submodule(parts.layers).parameters())
    for box in layers.children:
        if box.children:
            assert sum(c.params for c in box.children) == box.params
    # Weight shapes are the module's own.
    for box in (b for top in boxes for b in top.walk() if b.module):
        module = s.model.get_submodule(box.module)
        assert dict(box.weights) == {k: tuple(v.shape) for k, v in module.named_parameters(recurse=False)}
    return boxes, layers


def test_smollm2_diagram_sums_to_num_parameters(session):
    forward = F.forward_pass(session, TEXT)
    boxes, layers = _check_diagram(session, forward)
    n, d = forward.n, 576
    by_key = {b.key: b for top in boxes for b in top.walk()}
    assert session.model.num_parameters() == 134_515_008
    assert by_key["embed"].params == 49_152 * 576 and by_key["embed"].out_shape == (n, d)
    assert by_key["lm_head"].params == 0  # tied: the embedding matrix, counted once
    assert by_key["lm_head"].out_shape == (n, 49_152)
    assert layers.repeat == 30 and by_key["layer.self_attn.k_proj"].out_shape == (n, 192)  # 3 KV heads x 64
    assert by_key["layer.attn_weights"].out_shape == (9, n, n)
    assert by_key["layer.mlp.gate_proj"].out_shape == (n, 1536)
    # Llama order: norm -> attention -> residual add -> norm -> MLP -> residual add.
    assert [c.key for c in layers.children] == [
        "layer.input_layernorm", "layer.attention", "residual_attn", "layer.post_attention_layernorm", "layer.mlp",
        "residual_mlp"]
    links = box_links(boxes)  # which tab opens a box further: the UI's choice, not inference's
    assert links["layer.attention"] == "attention_tab" and links["logits"] == "sampling_tab"


def test_gemma_diagram_extra_norms_and_tied_embeddings(gemma):
    forward = F.forward_pass(gemma, "The capital of France is")
    boxes, layers = _check_diagram(gemma, forward)
    assert F.anatomy(gemma).tied and next(b for b in boxes if b.key == "lm_head").params == 0
    assert [c.key for c in layers.children] == [
        "layer.input_layernorm", "layer.attention", "layer.post_attention_layernorm", "residual_attn",
        "layer.pre_feedforward_layernorm", "layer.mlp", "layer.post_feedforward_layernorm", "residual_mlp"]
    attention = next(c for c in layers.children if c.key == "layer.attention")
    assert {"layer.self_attn.q_norm", "layer.self_attn.k_norm"} <= {c.key for c in attention.children}
    assert "sliding attention" in layers.detail and "full attention" in layers.detail
    scheme = F.positional_scheme(gemma)
    assert scheme.thetas == {"sliding_attention": 10_000.0, "full_attention": 1_000_000.0}
    assert scheme.layer_counts == {"sliding_attention": 15, "full_attention": 3}
    # Gemma scales its embeddings by sqrt(d) inside the embedding module: the heat strip shows what the layers get.
    ids = torch.tensor([forward.tokens.ids])
    with torch.no_grad():
        expected = gemma.model.get_input_embeddings()(ids)[0].float().numpy()
    np.testing.assert_allclose(forward.embeddings, expected[:FORWARD_EMBED_TOKENS], rtol=1e-5, atol=1e-5)


def test_learned_positions_where_the_model_has_them(tiny_gpt2):
    forward = F.forward_pass(tiny_gpt2, TEXT)
    boxes, layers = _check_diagram(tiny_gpt2, forward)
    assert [b.key for b in boxes][:4] == ["ids", "embed", "positions", "layers"]
    assert next(b for b in boxes if b.key == "positions").params == 128 * 32
    scheme = F.positional_scheme(tiny_gpt2)
    assert scheme.kind == "learned" and scheme.curves["mean cosine similarity"][0, 0] == pytest.approx(1.0)
    # GPT-2 is pre-norm too (ln_1 -> attn -> add -> ln_2 -> mlp -> add): the updates split the same way.
    assert forward.attn_update_norms is not None and forward.head_check < 1e-4
    _, out = _reference(tiny_gpt2, TEXT)
    assert forward.perplexity == pytest.approx(math.exp(out.loss.item()), rel=1e-4)


# ---------------------------------------------------------------------------------------------------
# Surprisal, perplexity and the logits


@pytest.mark.parametrize("text", [TEXT, "Colourless green ideas sleep furiously."])
def test_perplexity_equals_exp_of_the_models_loss(session, text):
    _, out = _reference(session, text)
    assert F.forward_pass(session, text).perplexity == pytest.approx(math.exp(out.loss.item()), rel=1e-4)


def test_surprisal_is_minus_log2_softmax_of_the_previous_logits(session):
    ids, out = _reference(session, TEXT)
    logprobs = torch.log_softmax(out.logits[0].float(), -1)  # [n, V]
    expected = -logprobs[:-1].gather(-1, ids[1:, None])[:, 0] / math.log(2)  # token i from position i-1
    forward = F.forward_pass(session, TEXT)
    np.testing.assert_allclose(forward.surprisal_bits, expected.numpy(), atol=2e-4)
    np.testing.assert_array_equal(forward.expected_ids, out.logits[0, :-1].argmax(-1).numpy())
    np.testing.assert_allclose(forward.next_logprobs, logprobs[-1].numpy(), atol=2e-4)
    most = forward.most_surprising(3)
    assert forward.surprisal_bits[most[0] - 1] == forward.surprisal_bits.max()


def test_final_norm_times_lm_head_gives_the_models_logits(session, gemma):
    for s in (session, gemma):
        ids, out = _reference(s, "The capital of France is")
        normed = out.hidden_states[-1][0]  # transformers hands back the last layer's state after the final norm
        logits = normed @ s.model.get_output_embeddings().weight.T  # [n, V]
        torch.testing.assert_close(logits, out.logits[0], atol=1e-4, rtol=1e-4)
        # Our pass: the last layer's raw output through the final norm and LM head is the model's last logits.
        forward = F.forward_pass(s, "The capital of France is")
        assert forward.head_check < 1e-4
        assert forward.lens_answer_probs[-1] == pytest.approx(
            torch.softmax(out.logits[0, -1].float(), -1).max().item(), abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# Residual stream


def _first_tensor(output) -> torch.Tensor:
    """A module's output tensor (attention returns a tuple; its first element is the output)."""
    return output[0] if isinstance(output, tuple) else output


def _block_outputs(s, text, attn_name, mlp_name):
    """Norms of what each layer's attention and MLP blocks add, read from hooks on those very modules."""
    parts = F.anatomy(s)
    caught = {"attn": [], "mlp": []}
    handles = []
    for block in s.model.get_submodule(parts.layers):
        for key, name in (("attn", attn_name), ("mlp", mlp_name)):
            handles.append(block.get_submodule(name).register_forward_hook(
                lambda m, a, o, key=key: caught[key].append(_first_tensor(o)[0].float().norm(dim=-1))))
    try:
        with torch.no_grad():
            out = s.model(input_ids=_ids(s, text), output_hidden_states=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(caught["attn"]).numpy(), torch.stack(caught["mlp"]).numpy(), out


def test_residual_updates_are_the_blocks_outputs(session, gemma):
    # Llama adds the attention and MLP outputs as they are; Gemma normalizes each before adding it.
    for s, attn_name, mlp_name in ((session, "self_attn", "mlp"),
                                   (gemma, "post_attention_layernorm", "post_feedforward_layernorm")):
        forward = F.forward_pass(s, TEXT)
        attn, mlp, out = _block_outputs(s, TEXT, attn_name, mlp_name)
        np.testing.assert_allclose(forward.attn_update_norms, attn, rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(forward.mlp_update_norms, mlp, rtol=1e-3, atol=1e-2)
        # Rows 0..L-1: the input of each layer, as transformers' hidden_states (whose last one is normed).
        inputs = torch.stack([h[0].float().norm(dim=-1) for h in out.hidden_states[:-1]]).numpy()
        np.testing.assert_allclose(forward.hidden_norms[:-1], inputs, rtol=1e-4, atol=1e-3)


def test_hidden_norms_are_the_attention_tabs_pass(session):
    text = "When Mary and John went to the store, John gave a drink to"
    assert capture_attention(session, text).hidden_norms is F.forward_pass(session, text).hidden_norms


# ---------------------------------------------------------------------------------------------------
# Positions


def test_rope_curve_comes_from_the_models_rotary_module(session):
    scheme = F.positional_scheme(session)
    assert scheme.kind == "rope" and scheme.thetas == {"all": 100_000.0} and scheme.rotary_dims == 64
    inv_freq = session.model.model.rotary_emb.inv_freq.double().numpy()  # [32]
    # q = k = ones: <R(t) q, k> / <q, k> = mean over the 32 rotated pairs of cos(t * inv_freq).
    curve = scheme.curves["θ = 100,000"]
    for i, t in enumerate(scheme.distances[:64]):  # one distance per bin up to 63
        assert curve[0, i] == pytest.approx(np.cos(t * inv_freq).mean(), abs=1e-4)
    assert scheme.wavelengths["all"][0] == pytest.approx(2 * math.pi, rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# One model run per text; bad input


@contextlib.contextmanager
def model_calls(s):
    """Tokens fed to each model call inside the block: n for a prefill of the text, 1 for a decode step."""
    sizes = []

    def hook(module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        sizes.append(ids.shape[-1])

    handle = s.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield sizes
    finally:
        handle.remove()


def test_one_model_run_per_text(session):
    from components.forward import layout as forward_tab

    text = "A text nobody has analysed yet: the forward pass runs once."
    with model_calls(session) as sizes:
        forward_tab.forward_pass_api(text)
        forward_tab.surprisal_api(text)
        forward_tab.run_forward(text, False, None)
        F.diagram(session, F.forward_pass(session, text))
    n = F.forward_pass(session, text).n
    assert sizes == [n, 1]  # one prefill of the text (with the Attention tab's one-token decode step)


@pytest.mark.parametrize("first", ["attention", "forward"])
def test_attention_and_forward_tabs_share_one_prefill(session, first):
    """Issue 9: whichever tab asks first runs the one prefill of the text; the other finds its analysis cached."""
    text = f"One prefill for two tabs, the {first} tab first; the other one reads the cache."
    analyses = {"attention": lambda: capture_attention(session, text), "forward": lambda: F.forward_pass(session, text)}
    second = "forward" if first == "attention" else "attention"
    with model_calls(session) as sizes:
        analyses[first]()
    with model_calls(session) as later:
        analyses[second]()
    maps, forward = capture_attention(session, text), F.forward_pass(session, text)
    assert sizes == [maps.n, 1]  # the prefill of all n tokens, then the attention's decode step (one token)
    assert later == []
    assert maps.lens is forward.lens and forward.shared_pass  # one recording: the lens computed once
    # Timings say what each analysis cost: the shared prefill and its own share of the work after it.
    assert 0 < forward.seconds <= maps.capture_seconds


def test_text_over_the_attention_cap_gets_a_forward_pass_of_its_own(session):
    text = "word " * (MAX_ATTENTION_TOKENS + 20)
    with model_calls(session) as sizes:
        forward = F.forward_pass(session, text)
    assert MAX_ATTENTION_TOKENS < forward.n <= MAX_FORWARD_TOKENS
    assert sizes == [forward.n] and not forward.shared_pass
    with pytest.raises(InputError, match=f"at most {MAX_ATTENTION_TOKENS}"):
        capture_attention(session, text)
    _, out = _reference(session, text)  # the forward-only pass (last logits only, LM head in chunks) is exact too
    assert forward.perplexity == pytest.approx(math.exp(out.loss.item()), rel=1e-4)


def test_bad_input(session):
    with pytest.raises(InputError, match="empty"):
        F.forward_pass(session, "   ")
    with pytest.raises(InputError, match=f"at most {MAX_FORWARD_TOKENS:,} tokens"):
        F.forward_pass(session, "word " * (MAX_FORWARD_TOKENS + 10))
    one = F.forward_pass(session, "Hello")
    assert one.n == 1 and one.perplexity is None and one.surprisal_bits.shape == (0,)
    assert F.diagram_params(F.diagram(session, one)) == session.model.num_parameters()
