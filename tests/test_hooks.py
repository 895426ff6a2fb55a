"""Named hook points against plain `register_forward_hook`s on the model's own modules, on SmolLM2, Gemma 3 and
a tiny GPT-2: reading returns the tensor the module produced, in the documented shape, and changes nothing;
writing replaces it (zeroing one head's z equals zeroing the o_proj columns that read that head)."""

from __future__ import annotations

import pytest
import torch

from inference.errors import InputError
from inference.model.hooks import hooks, point_names

TEXT = "When Mary and John went to the store, John gave a drink to"


def _reference_sites(s):
    """name -> (module, "in" | "out", tuple index or None), written out per architecture by hand, not taken
    from the anatomy under test."""
    model = s.model
    gpt2 = hasattr(model, "transformer")
    if gpt2:
        blocks, embed, norm = model.transformer.h, model.transformer.wte, model.transformer.ln_f
    else:
        blocks, embed, norm = model.model.layers, model.model.embed_tokens, model.model.norm
    sites = {"hook_embed": (embed, "out", None), "ln_final.hook_normalized": (norm, "out", None),
             "hook_logits": (model.lm_head, "out", None)}
    for l, block in enumerate(blocks):
        p = f"blocks.{l}."
        sites[p + "hook_resid_pre"] = (block, "in", None)
        sites[p + "hook_resid_post"] = (block, "out", None)
        if gpt2:
            attn = block.attn
            sites[p + "attn.hook_z"] = (attn.c_proj, "in", None)
            sites[p + "hook_attn_out"] = (attn, "out", 0)
            sites[p + "hook_resid_mid"] = (block.ln_2, "in", None)
            sites[p + "hook_mlp_out"] = (block.mlp, "out", None)
        else:
            attn = block.self_attn
            sites[p + "attn.hook_z"] = (attn.o_proj, "in", None)
            if hasattr(block, "pre_feedforward_layernorm"):  # Gemma: norms after each block
                sites[p + "hook_attn_out"] = (block.post_attention_layernorm, "out", None)
                sites[p + "hook_resid_mid"] = (block.pre_feedforward_layernorm, "in", None)
                sites[p + "hook_mlp_out"] = (block.post_feedforward_layernorm, "out", None)
            else:
                sites[p + "hook_attn_out"] = (attn, "out", 0)
                sites[p + "hook_resid_mid"] = (block.post_attention_layernorm, "in", None)
                sites[p + "hook_mlp_out"] = (block.mlp, "out", None)
        sites[p + "attn.hook_pattern"] = (attn, "out", 1)
    return sites


def _plain_capture(s, ids):
    """Every reference site's tensor from plain forward hooks, and the logits."""
    caught, handles = {}, []
    for name, (module, where, index) in _reference_sites(s).items():
        def keep(value, name=name, index=index):
            tensor = value[index] if index is not None else (value[0] if isinstance(value, tuple) else value)
            caught[name] = tensor.detach().float().clone()
        if where == "in":
            handles.append(module.register_forward_pre_hook(lambda m, args, keep=keep: keep(args[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, keep=keep: keep(out)))
    try:
        with torch.no_grad():
            logits = s.model(input_ids=ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return caught, logits


def _ids(s):
    return s.tokenizer(TEXT, return_tensors="pt").input_ids.to(s.device)


@pytest.mark.parametrize("which", ["session", "gemma", "tiny_gpt2"])
def test_every_point_reads_what_the_module_produced_and_changes_nothing(which, request):
    s = request.getfixturevalue(which)
    ids = _ids(s)
    n, f = ids.shape[1], s.facts
    expected, plain_logits = _plain_capture(s, ids)
    names = point_names(s)
    assert set(names) == set(expected)
    with s.lock, torch.no_grad(), hooks(s, read=names) as rec:
        logits = s.model(input_ids=ids, use_cache=False).logits
    assert torch.equal(logits, plain_logits)  # reading every point at once: bit for bit
    shapes = {"hook_resid_pre": (1, n, f.hidden_size), "attn.hook_pattern": (1, f.num_heads, n, n),
              "attn.hook_z": (1, n, f.num_heads, f.head_dim), "hook_logits": (1, n, s.model.lm_head.out_features)}
    for name in names:
        got = rec[name]
        assert got.device.type == "cpu" and got.dtype == torch.float32
        want = expected[name]
        if name.endswith("attn.hook_z"):
            want = want.unflatten(-1, (f.num_heads, f.head_dim))
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)
        suffix = name.split(".", 2)[-1] if name.startswith("blocks.") else name
        assert tuple(got.shape) == shapes.get(suffix, (1, n, f.hidden_size)), name


def test_block_outputs_add_up_to_the_stream(session, gemma):
    for s in (session, gemma):
        with s.lock, torch.no_grad(), hooks(s, read=["blocks.*.hook_*"]) as rec:
            s.model(input_ids=_ids(s), use_cache=False)
        for l in (0, s.facts.num_layers - 1):
            p = f"blocks.{l}."
            torch.testing.assert_close(rec[p + "hook_resid_pre"] + rec[p + "hook_attn_out"], rec[p + "hook_resid_mid"])
            torch.testing.assert_close(rec[p + "hook_resid_mid"] + rec[p + "hook_mlp_out"], rec[p + "hook_resid_post"])


def test_decode_step_with_the_kv_cache(session):
    from inference.model.run import new_cache

    ids = _ids(session)
    n = ids.shape[1]
    cache = new_cache(session)
    with session.lock, torch.no_grad(), hooks(session, read=["blocks.2.attn.hook_pattern", "blocks.2.hook_resid_pre"]) as rec:
        out = session.model(input_ids=ids, past_key_values=cache, use_cache=True)
        step = out.logits[0, -1].argmax()
        session.model(input_ids=step.view(1, 1), past_key_values=cache, use_cache=True)
    prefill, decode = rec.calls("blocks.2.attn.hook_pattern")
    assert prefill.shape == (1, session.facts.num_heads, n, n)
    assert decode.shape == (1, session.facts.num_heads, 1, n + 1)  # one new query row over every cached key
    assert rec["blocks.2.hook_resid_pre"].shape == (1, 1, session.facts.hidden_size)


@pytest.mark.parametrize("which", ["session", "gemma"])
def test_writing_z_of_one_head_equals_zeroing_its_o_proj_columns(which, request):
    s = request.getfixturevalue(which)
    ids, layer, head = _ids(s), 2, 1
    hd = s.facts.head_dim

    def zero_head(z):  # [batch, pos, heads, head_dim]
        z = z.clone()
        z[:, :, head] = 0
        return z

    with s.lock, torch.no_grad():
        with hooks(s, write={f"blocks.{layer}.attn.hook_z": zero_head}):
            hooked = s.model(input_ids=ids, use_cache=False).logits
        weight = s.model.model.layers[layer].self_attn.o_proj.weight  # [d_model, heads * head_dim]
        saved = weight[:, head * hd:(head + 1) * hd].clone()
        weight[:, head * hd:(head + 1) * hd] = 0
        try:
            edited = s.model(input_ids=ids, use_cache=False).logits
        finally:
            weight[:, head * hd:(head + 1) * hd] = saved
    torch.testing.assert_close(hooked, edited, rtol=0, atol=1e-5)
    assert (hooked - edited).abs().max() < 1e-5


def test_identity_writes_change_nothing(session):
    ids = _ids(session)
    writable = [n for n in point_names(session) if not n.endswith(("hook_pattern", "hook_resid_mid"))]
    with session.lock, torch.no_grad():
        plain = session.model(input_ids=ids, use_cache=False).logits
        with hooks(session, write={n: (lambda t: t.clone()) for n in writable}):
            written = session.model(input_ids=ids, use_cache=False).logits
    assert torch.equal(plain, written)


def _hook_ids(model):
    return {(id(m), k) for m in model.modules() for k in (*m._forward_hooks, *m._forward_pre_hooks)}


def test_bad_names_and_read_only_points(session):
    before = _hook_ids(session.model)  # transformers may hold hooks of its own: compare, don't expect none
    with pytest.raises(InputError, match="not a hook point"):
        with hooks(session, read=["blocks.0.hook_nothing"]):
            pass
    with pytest.raises(InputError, match="no hook point"):
        with hooks(session, read=["blocks.99.hook_resid_pre"]):
            pass
    with pytest.raises(InputError, match="read but not written"):
        with hooks(session, write={"blocks.0.attn.hook_pattern": lambda t: t}):
            pass
    with pytest.raises(InputError, match="shape"):
        with session.lock, torch.no_grad(), hooks(session, write={"hook_embed": lambda t: t[:, :1]}):
            session.model(input_ids=_ids(session), use_cache=False)
    # No hook is left behind after an error.
    assert _hook_ids(session.model) == before
