"""Inside one forward pass: the path from token ids to logits, with the loaded model's real modules and sizes.

One prefill pass over a text, with forward hooks on the model's own modules, gives (TransformerLens names):

    hook_embed               [n, d]     the token embedding lookup (Gemma scales it by sqrt(d) inside)
    blocks.{l}.resid_pre     [n, d]     the residual stream entering layer l (norm kept, per token)
    blocks.{l}.resid_mid     [n, d]     after the attention block was added: the input of the first step
                                        after attention that reads the stream (found in the pass, not by name)
    blocks.{l}.resid_post    [n, d]     after the MLP block was added (the layer's output)
    ln_final.hook_normalized [n, d]     after the final norm: x the LM head -> logits [n, vocab]

We keep only what the views need: per-token norms of the stream and of each block's update
(resid_mid - resid_pre is what attention added, resid_post - resid_mid what the MLP added), the first
tokens' embeddings, the residual stream at the last position per layer (a logit lens), the surprisal of
every token (-log2 p of it given the ones before, from the previous position's logits) and the full
next-token distribution at the last position.

The logits of all positions are [n, vocab] (1 GB for 1,024 tokens of Gemma's 262k vocabulary), so the pass
asks the model for the last position's logits only (`logits_to_keep=1`) and runs the model's own LM head on
the captured final-norm output a chunk of positions at a time. The model's logits at the last position must
equal ours (`head_check`, shown in the UI).

The diagram is read from the model itself: modules found by walking `named_modules()` (embedding, layer
stack, final norm, LM head, positions), parameter counts from the weights (tied weights counted once, so
the boxes sum to `model.num_parameters()`), the order of the modules inside a layer and every activation
shape recorded by the hooks during the same pass.

`ForwardPass` is cached per (model, text, chat) as `session.analysis("forward", (text, chat))`. One model
run per text serves both this tab and the Attention tab: for a text within the Attention tab's cap
(MAX_ATTENTION_TOKENS) the ForwardPass is recorded during the attention capture's prefill
(`attention.capture_attention(...).forward`, `shared_pass=True`), whichever tab asks first; only longer texts
(up to MAX_FORWARD_TOKENS, no attention maps) get a pass of their own here (`_run`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .limits import (FORWARD_EMBED_TOKENS, FORWARD_LOGIT_CHUNK, MAX_ATTENTION_TOKENS, MAX_FORWARD_TOKENS,
                     ROPE_CURVE_POINTS)
from .tokens import TokenView, clean_text, readable_piece, token_to_bytes, tokenize

LOG2E = 1.0 / math.log(2.0)


# ---------------------------------------------------------------------------------------------------
# The model's anatomy: which module plays which part, read from the modules and the config


def text_config(config):
    """Multimodal configs keep the language model's numbers in `text_config`."""
    return getattr(config, "text_config", None) or config


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _is_dropout(module: nn.Module) -> bool:
    return "dropout" in type(module).__name__.lower()


def _own_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(module.named_parameters(recurse=False))


@dataclass(frozen=True)
class Anatomy:
    """Where each part of the forward pass lives in this model (dotted module paths) and what it weighs."""

    architecture: str
    paths: dict[int, str]  # id(module) -> dotted path, for every module
    embed: str  # token embedding
    layers: str  # the ModuleList of decoder layers
    num_layers: int
    final_norm: str | None
    lm_head: str
    tied: bool  # the LM head reuses the embedding matrix
    position_embed: str | None  # learned position embeddings (GPT-2's wpe), if any
    rotary: str | None  # the rotary embedding module (RoPE), if any
    params: dict[str, int]  # part ("embed", "position_embed", "layers", "final_norm", "lm_head", "other") -> count
    layer_params: list[int]  # parameters of each layer
    other_modules: list[str]  # modules with parameters outside every part (counted under "other")
    num_parameters: int  # model.num_parameters(): unique parameters

    def module(self, model: nn.Module, path: str | None) -> nn.Module | None:
        return None if path is None else model.get_submodule(path)


def _find_layers(model: nn.Module, num_layers: int) -> str:
    """The decoder stack: the ModuleList of num_hidden_layers blocks holding the most parameters."""
    best, best_count = None, -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            count = sum(p.numel() for p in module.parameters())
            if count > best_count:
                best, best_count = name, count
    if best is None:
        raise InputError(f"{type(model).__name__} has no stack of {num_layers} layers this tab can follow.")
    return best


def read_anatomy(model: nn.Module) -> Anatomy:
    """Walk the model's modules once: the parts of the forward pass and their parameter counts.

    Every parameter is counted once (by identity), in this order: embedding, learned positions, layers,
    final norm, LM head (0 when tied to the embedding), then anything left as "other"; the parts therefore
    sum to model.num_parameters()."""
    cfg = text_config(model.config)
    paths = {id(m): name for name, m in model.named_modules()}
    embed_module = model.get_input_embeddings()
    head_module = model.get_output_embeddings()
    embed, lm_head = paths[id(embed_module)], paths[id(head_module)]
    num_layers = int(cfg.num_hidden_layers)
    layers = _find_layers(model, num_layers)
    decoder = layers.rsplit(".", 1)[0] if "." in layers else ""
    decoder_module = model.get_submodule(decoder) if decoder else model

    final_norm = position_embed = rotary = None
    for name, child in decoder_module.named_children():
        full = f"{decoder}.{name}" if decoder else name
        if child is embed_module or full == layers:
            continue
        if _is_norm(child) and _own_params(child):
            final_norm = full  # the last norm beside the layer stack is the final one
        elif isinstance(child, nn.Embedding):
            position_embed = full
        elif "rotary" in name.lower() or "rotary" in type(child).__name__.lower():
            rotary = full

    seen: set[int] = set()

    def take(module: nn.Module | None) -> int:
        """Parameters of a module not counted yet (a tied LM head adds none)."""
        if module is None:
            return 0
        total = 0
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    params = {"embed": take(embed_module)}
    params["position_embed"] = take(model.get_submodule(position_embed) if position_embed else None)
    layer_params = [take(block) for block in model.get_submodule(layers)]
    params["layers"] = sum(layer_params)
    params["final_norm"] = take(model.get_submodule(final_norm) if final_norm else None)
    params["lm_head"] = take(head_module)
    other_modules, other = [], 0  # anything the parts above did not hold (none in Llama, Gemma or GPT-2)
    for name, module in model.named_modules():
        fresh = [p for _, p in _own_params(module) if id(p) not in seen]
        if fresh:
            other_modules.append(name)
            seen.update(id(p) for p in fresh)
            other += sum(p.numel() for p in fresh)
    params["other"] = other
    return Anatomy(
        architecture=type(model).__name__,
        paths=paths,
        embed=embed,
        layers=layers,
        num_layers=num_layers,
        final_norm=final_norm,
        lm_head=lm_head,
        tied=head_module.weight is embed_module.weight,
        position_embed=position_embed,
        rotary=rotary,
        params=params,
        layer_params=layer_params,
        other_modules=other_modules,
        num_parameters=model.num_parameters(),
    )


def anatomy(session) -> Anatomy:
    """The loaded model's anatomy, read once per model."""
    return session.analysis("forward_anatomy", (), lambda: read_anatomy(session.model))


def _attention_child(layer: nn.Module) -> str | None:
    for name, child in layer.named_children():
        if "attn" in name.lower() or "attention" in type(child).__name__.lower():
            return name
    return None


def _mlp_child(layer: nn.Module) -> str | None:
    for name, child in layer.named_children():
        kind = type(child).__name__.lower()
        if name.lower() in ("mlp", "feed_forward", "ffn") or "mlp" in kind or "feedforward" in kind:
            return name
    return None


def logits_from_normed(session, normed: torch.Tensor) -> torch.Tensor:
    """The model's LM head on final-norm output (and Gemma 2's logit soft-cap when configured).

    normed [..., d] -> logits [..., vocab], as *ForCausalLM.forward computes them."""
    model = session.model
    logits = model.get_output_embeddings()(normed)
    cap = getattr(text_config(model.config), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def head_logits(session, hidden: torch.Tensor) -> torch.Tensor:
    """Final norm then LM head on a raw residual-stream state: [..., d] -> [..., vocab]."""
    parts = anatomy(session)
    norm = parts.module(session.model, parts.final_norm)
    return logits_from_normed(session, norm(hidden) if norm is not None else hidden)


# ---------------------------------------------------------------------------------------------------
# Plain data of one pass


@dataclass(frozen=True)
class ModuleCall:
    """One module call in layer 0 (or a top-level part) as the hooks saw it, in call order."""

    path: str  # dotted path in the model
    kind: str  # the module's class name
    in_shape: tuple[int, ...]  # first input, batch dimension dropped
    out_shape: tuple[int, ...]  # first output, batch dimension dropped
    extra_shapes: tuple[tuple[int, ...], ...] = ()  # further tensor outputs (the attention weights)


@dataclass(eq=False)
class ForwardPass:
    """What one forward pass over a text shows: norms per layer, surprisal per token, the last position's
    next-token distribution, the first tokens' embeddings, and the module calls with their real shapes."""

    tokens: TokenView
    num_layers: int
    hidden_norms: np.ndarray  # [L+1, n] float32: |resid_pre| of each layer, last row |resid_post| of layer L-1
    attn_update_norms: np.ndarray | None  # [L, n] float32: |resid_mid - resid_pre|; None without a pre-MLP norm
    mlp_update_norms: np.ndarray | None  # [L, n] float32: |resid_post - resid_mid|
    layer_update_norms: np.ndarray  # [L, n] float32: |resid_post - resid_pre|
    embeddings: np.ndarray  # [min(n, FORWARD_EMBED_TOKENS), d] float32: the embedding lookup's output
    surprisal_bits: np.ndarray  # [n-1] float32: -log2 p(token i | tokens < i) for i = 1..n-1
    expected_ids: np.ndarray  # [n-1] int64: the model's top guess at each of those positions
    expected_probs: np.ndarray  # [n-1] float32: its probability
    entropy_bits: np.ndarray  # [n-1] float32: entropy of each of those distributions
    next_logprobs: np.ndarray = field(repr=False)  # [vocab] float32: log p of the token after the text
    lens_top_ids: np.ndarray = field(repr=False)  # [L+1] int64: top guess at the last position after each layer
    lens_answer_probs: np.ndarray = field(repr=False)  # [L+1] float32: p of the model's final answer there
    calls: list[ModuleCall] = field(default_factory=list, repr=False)
    mid_reader: str | None = None  # the layer child that reads the stream after the attention add (None: parallel)
    head_check: float = 0.0  # max |model logits - lm_head(final_norm(last layer output))| at the last position
    seconds: float = 0.0  # the prefill model call and the reduction of what it recorded into this object
    shared_pass: bool = False  # True: recorded in the Attention tab's capture (one prefill for both tabs)

    @property
    def n(self) -> int:
        return len(self.tokens.ids)

    @property
    def num_predicted(self) -> int:
        """Tokens the model predicts from earlier ones: all but the first."""
        return self.n - 1

    @property
    def mean_bits(self) -> float | None:
        return float(self.surprisal_bits.mean()) if self.num_predicted else None

    @property
    def perplexity(self) -> float | None:
        """2 ** (mean surprisal in bits) = exp(mean negative log-likelihood in nats); None for one token."""
        return float(2.0 ** self.surprisal_bits.astype(np.float64).mean()) if self.num_predicted else None

    def most_surprising(self, k: int) -> list[int]:
        """Token positions (1..n-1) with the highest surprisal, highest first."""
        order = np.argsort(-self.surprisal_bits, kind="stable")[:k]
        return [int(i) + 1 for i in order]

    def top_next(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most likely next tokens after the text: ids [k], probabilities [k]."""
        ids = np.argsort(-self.next_logprobs, kind="stable")[:k]
        return ids, np.exp(self.next_logprobs[ids].astype(np.float64)).astype(np.float32)

    def retained_bytes(self) -> int:
        arrays = [self.hidden_norms, self.attn_update_norms, self.mlp_update_norms, self.layer_update_norms,
                  self.embeddings, self.surprisal_bits, self.expected_ids, self.expected_probs, self.entropy_bits,
                  self.next_logprobs, self.lens_top_ids, self.lens_answer_probs]
        return sum(a.nbytes for a in arrays if a is not None)


# ---------------------------------------------------------------------------------------------------
# The pass


def _first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _shape(t: torch.Tensor | None) -> tuple[int, ...]:
    """A tensor's shape without the batch dimension (position tables such as RoPE's cos keep theirs)."""
    if t is None:
        return ()
    return tuple(t.shape[1:]) if t.dim() > 1 else tuple(t.shape)


@dataclass
class _Recorder:
    """Hook state while the pass runs; `finish` turns it into arrays. Every tensor is reduced in the hook
    (norms, a last-position row) so no [n, d] activation is held past its layer, except the final norm's
    output that the surprisal needs."""

    num_layers: int
    embed_rows: int
    resid_pre: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [n, d] (until the layer ends)
    resid_mid: dict[int, torch.Tensor] = field(default_factory=dict)
    produced: dict[int, list] = field(default_factory=dict)  # layer -> tensors its children returned (until it ends)
    after_attention: set = field(default_factory=set)  # layers whose attention block has run
    mid_reader: str | None = None  # layer 0's child that read the stream after the attention add
    hidden_norms: list = field(default_factory=list)  # L+1 x [n]
    attn_norms: list = field(default_factory=list)  # L x [n]
    mlp_norms: list = field(default_factory=list)
    layer_norms: list = field(default_factory=list)
    last_rows: list = field(default_factory=list)  # L+1 x [d]: the stream at the last position
    embeddings: torch.Tensor | None = None
    normed: torch.Tensor | None = None  # [n, d] final-norm output
    calls: list = field(default_factory=list)  # ModuleCall in call order
    _open: dict = field(default_factory=dict)  # path -> index in calls (pre-hook fired, output pending)


def _register(model: nn.Module, parts: Anatomy, rec: _Recorder) -> list:
    """Hooks on the model's own modules; returns their handles (remove them when the pass is done)."""
    handles = []
    layers = model.get_submodule(parts.layers)

    def layer_input(index):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]  # [1, n, d]
            rec.resid_pre[index] = x[0]
            rec.produced[index] = [x]
            if index == 0:
                rec.hidden_norms.append(x[0].float().norm(dim=-1))
                rec.last_rows.append(x[0, -1].detach().clone())
        return hook

    def child_input(index, name):
        def hook(module, args, kwargs):
            # The first child after attention whose input no child produced is reading the stream itself: the
            # residual add happened just before it (Llama: post_attention_layernorm; Gemma:
            # pre_feedforward_layernorm, as its post_attention_layernorm reads the attention output).
            if index not in rec.after_attention or index in rec.resid_mid:
                return
            x = _first_tensor(args) if args else _first_tensor(list(kwargs.values()))
            if x is None or any(x.data_ptr() == t.data_ptr() for t in rec.produced[index]):
                return  # a block's own output (a post-norm), or the layer input (a parallel block)
            mid = x[0]  # [n, d]: the stream after the attention block was added
            rec.resid_mid[index] = mid
            rec.attn_norms.append((mid.float() - rec.resid_pre[index].float()).norm(dim=-1))
            if index == 0:
                rec.mid_reader = name
        return hook

    def child_output(index, attention):
        def hook(module, args, output):
            produced = _first_tensor(output)
            if produced is not None:  # held until the layer ends, so its memory cannot be reused meanwhile
                rec.produced[index].append(produced)
            if attention:
                rec.after_attention.add(index)
        return hook

    def layer_output(index):
        def hook(module, args, kwargs, output):
            out = _first_tensor(output)[0]  # [n, d]
            pre = rec.resid_pre.pop(index).float()
            rec.produced.pop(index, None)
            mid = rec.resid_mid.pop(index, None)
            if mid is not None:
                rec.mlp_norms.append((out.float() - mid.float()).norm(dim=-1))
            rec.layer_norms.append((out.float() - pre).norm(dim=-1))
            rec.hidden_norms.append(out.float().norm(dim=-1))
            rec.last_rows.append(out[-1].detach().clone())
        return hook

    for index, block in enumerate(layers):
        handles.append(block.register_forward_pre_hook(layer_input(index), with_kwargs=True))
        handles.append(block.register_forward_hook(layer_output(index), with_kwargs=True))
        attention = _attention_child(block)
        for name, child in block.named_children():
            if _is_dropout(child):
                continue
            handles.append(child.register_forward_pre_hook(child_input(index, name), with_kwargs=True))
            handles.append(child.register_forward_hook(child_output(index, name == attention)))

    def embed_output(module, args, output):
        rec.embeddings = output[0, : rec.embed_rows].detach().float().clone()  # [E, d]

    def norm_output(module, args, output):
        rec.normed = output[0]  # [n, d]

    handles.append(model.get_input_embeddings().register_forward_hook(embed_output))
    if parts.final_norm:
        handles.append(model.get_submodule(parts.final_norm).register_forward_hook(norm_output))

    # Call order and shapes: the top-level parts and every module of layer 0 (first call of each only).
    top = [p for p in (parts.embed, parts.position_embed, parts.rotary, parts.final_norm, parts.lm_head) if p]
    layer0 = f"{parts.layers}.0"
    inside = [f"{layer0}.{name}" if name else layer0 for name, _ in layers[0].named_modules()]
    for full in top + inside:
        module = model.get_submodule(full)
        if _is_dropout(module):
            continue

        def opened(module, args, kwargs, full=full):
            if full not in rec._open and all(c.path != full for c in rec.calls):
                x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
                rec._open[full] = len(rec.calls)
                rec.calls.append(ModuleCall(full, type(module).__name__, _shape(x), ()))

        def closed(module, args, kwargs, output, full=full):
            index = rec._open.pop(full, None)
            if index is None:
                return
            tensors = [output] if isinstance(output, torch.Tensor) else [
                t for t in (output if isinstance(output, (tuple, list)) else ()) if isinstance(t, torch.Tensor)]
            call = rec.calls[index]
            rec.calls[index] = ModuleCall(call.path, call.kind, call.in_shape, _shape(tensors[0] if tensors else None),
                                          tuple(_shape(t) for t in tensors[1:]))

        handles.append(module.register_forward_pre_hook(opened, with_kwargs=True))
        handles.append(module.register_forward_hook(closed, with_kwargs=True))
    return handles


@contextlib.contextmanager
def record_forward(session, view: TokenView) -> Iterator[_Recorder]:
    """Hooks that record a ForwardPass's data during ONE prefill run over `view.ids` inside the block; call
    `finish_forward` after it. The hooks only read tensors, so the Attention tab's capture wraps its own
    prefill in this (one pass, both analyses). The hooks are gone when the block exits, before any decode
    step."""
    parts = anatomy(session)
    rec = _Recorder(num_layers=parts.num_layers, embed_rows=min(len(view.ids), FORWARD_EMBED_TOKENS))
    handles = _register(session.model, parts, rec)
    try:
        yield rec
    finally:
        for handle in handles:
            handle.remove()


def _token_stats(session, normed: torch.Tensor, ids: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Surprisal (bits), top guess and entropy at positions 0..n-2 for the tokens 1..n-1, from the model's
    LM head applied to the final-norm output a chunk of positions at a time (all logits at once would be
    [n, vocab]). Returns surprisal [n-1], expected ids [n-1], expected probs [n-1], entropy [n-1]."""
    vocab = session.model.get_output_embeddings().weight.shape[0]
    chunk = max(1, FORWARD_LOGIT_CHUNK // vocab)
    targets = ids[1:]  # [n-1]: each position predicts the next token
    out = [[], [], [], []]
    for start in range(0, len(targets), chunk):
        logits = logits_from_normed(session, normed[start:start + chunk]).float()  # [c, V]
        logprobs = torch.log_softmax(logits, -1)  # [c, V]
        target = targets[start:start + chunk]
        out[0].append(-logprobs.gather(-1, target[:, None])[:, 0] * LOG2E)  # [c] bits
        best, best_id = logprobs.max(-1)  # [c]
        out[1].append(best_id)
        out[2].append(best.exp())
        out[3].append(-(logprobs.exp() * logprobs).sum(-1) * LOG2E)  # [c] bits
    arrays = [torch.cat(o).cpu().numpy() if o else np.zeros(0) for o in out]
    return (arrays[0].astype(np.float32), arrays[1].astype(np.int64), arrays[2].astype(np.float32),
            arrays[3].astype(np.float32))


def finish_forward(session, view: TokenView, rec: _Recorder, last_logits: torch.Tensor, seconds: float) -> ForwardPass:
    """Turn what the hooks recorded (and the model's own last-position logits [V]) into a ForwardPass."""
    ids = torch.tensor(view.ids, device=session.device)  # [n]
    normed = rec.normed
    if normed is None:  # a model without a final norm: the last layer's output goes to the head as is
        raise InputError("This model has no final norm this tab can find.")
    with torch.no_grad():
        surprisal, expected_ids, expected_probs, entropy = _token_stats(session, normed[:-1], ids)
        # The logit lens at the last position: final norm + LM head on the stream after each layer.
        rows = torch.stack(rec.last_rows)  # [L+1, d]
        lens = torch.log_softmax(head_logits(session, rows).float(), -1)  # [L+1, V]
        ours = logits_from_normed(session, normed[-1]).float()  # [V]
        check = float((ours - last_logits.float()).abs().max())
    answer = int(last_logits.argmax())
    stack = lambda rows: torch.stack(rows).cpu().numpy().astype(np.float32)  # noqa: E731
    complete = len(rec.attn_norms) == rec.num_layers and len(rec.mlp_norms) == rec.num_layers
    return ForwardPass(
        tokens=view,
        num_layers=rec.num_layers,
        hidden_norms=stack(rec.hidden_norms),
        attn_update_norms=stack(rec.attn_norms) if complete else None,
        mlp_update_norms=stack(rec.mlp_norms) if complete else None,
        layer_update_norms=stack(rec.layer_norms),
        embeddings=rec.embeddings.cpu().numpy().astype(np.float32),
        surprisal_bits=surprisal,
        expected_ids=expected_ids,
        expected_probs=expected_probs,
        entropy_bits=entropy,
        next_logprobs=torch.log_softmax(last_logits.float(), -1).cpu().numpy().astype(np.float32),
        lens_top_ids=lens.argmax(-1).cpu().numpy().astype(np.int64),
        lens_answer_probs=lens[:, answer].exp().cpu().numpy().astype(np.float32),
        calls=list(rec.calls),
        mid_reader=rec.mid_reader,
        head_check=check,
        seconds=seconds,
    )


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def last_logits_only(model, k: int) -> dict:
    """Model kwargs asking for the logits of the last k positions only (`logits_to_keep`, where the model
    takes it): all n positions would be [n, vocab]. Callers read `out.logits[0, -k:]`, right either way."""
    return {"logits_to_keep": k} if _accepts(model.forward, "logits_to_keep") else {}


def _run(session, view: TokenView) -> ForwardPass:
    """This tab's own pass, for texts longer than the Attention tab's cap (shorter ones share its pass)."""
    n = len(view.ids)
    if n > MAX_FORWARD_TOKENS:
        raise InputError(
            f"The text is {n:,} tokens; the Forward pass tab takes at most {MAX_FORWARD_TOKENS:,} tokens. "
            "Shorten it and try again."
        )
    model = session.model
    ids = torch.tensor([view.ids], device=session.device)  # [1, n]
    started = time.perf_counter()
    with session.lock, torch.no_grad():
        with record_forward(session, view) as rec:
            out = model(input_ids=ids, use_cache=False, **last_logits_only(model, 1))
        forward = finish_forward(session, view, rec, out.logits[0, -1], 0.0)
    forward.seconds = time.perf_counter() - started
    return forward


def forward_pass(session, text: str, chat: bool = False) -> ForwardPass:
    """One forward pass over `text` (in the chat template when chat=True), recorded; cached per (model,
    text, chat) so every view of the tab and both JSON endpoints share it. Within the Attention tab's cap
    it is the attention capture's pass (run now, or found in the cache): one model run per text."""
    text = clean_text(text)
    chat = bool(chat)

    def compute() -> ForwardPass:
        view = tokenize(session, text, chat)
        if len(view.ids) <= MAX_ATTENTION_TOKENS:
            from .attention import capture_attention  # imported here: attention.py imports this module

            return capture_attention(session, text, chat).forward
        return _run(session, view)

    return session.analysis("forward", (text, chat), compute)


def pieces(session, ids) -> list[str]:
    """Readable pieces (spaces as '·') of token ids, as the Tokenizer tab shows them."""
    tokenizer = session.tokenizer
    special = set(tokenizer.all_special_ids)
    out = []
    for i, token in zip(ids, tokenizer.convert_ids_to_tokens([int(i) for i in ids])):
        out.append(readable_piece(token_to_bytes(tokenizer, token, int(i) in special), int(i) in special)[0])
    return out


# ---------------------------------------------------------------------------------------------------
# The diagram: the anatomy with this pass's shapes


@dataclass(frozen=True)
class Box:
    """One box of the data-flow diagram. `params` counts each parameter once (the layer block: all layers)."""

    key: str  # stable id the UI sends back on a click
    title: str
    kind: str  # ids, embedding, positions, layers, norm, attention, projection, rope, attn_weights, residual,
    #            mlp, activation, final_norm, lm_head, logits, softmax
    module: str = ""  # dotted path of the module ("" for a step that is not a module: residual add, softmax)
    module_class: str = ""
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    weights: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (name, shape) of the module's own weights
    params: int = 0
    detail: str = ""  # one line of real numbers (heads, sizes, theta)
    repeat: int = 1  # the layer block stands for this many layers
    children: tuple["Box", ...] = ()
    link: str | None = None  # the tab that opens this further

    def walk(self) -> Iterator["Box"]:
        yield self
        for child in self.children:
            yield from child.walk()


LINKS = {"ids": "tokenizer_tab", "attention": "attention_tab", "attn_weights": "attention_tab", "rope": "attention_tab",
         "logits": "sampling_tab", "softmax": "sampling_tab", "lm_head": "sampling_tab"}


def _weights(module: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((name, tuple(p.shape)) for name, p in _own_params(module))


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _module_box(model, path: str, calls: dict[str, ModuleCall], key: str, title: str, kind: str,
                params: int | None = None, detail: str = "", children: tuple = ()) -> Box:
    module = model.get_submodule(path)
    call = calls.get(path)
    return Box(
        key=key, title=title, kind=kind, module=path, module_class=type(module).__name__,
        in_shape=call.in_shape if call else (), out_shape=call.out_shape if call else (),
        weights=_weights(module), params=_count(module) if params is None else params, detail=detail,
        children=children, link=LINKS.get(kind),
    )


def _attention_detail(cfg, facts) -> str:
    heads, kv, head_dim = facts.num_heads, facts.num_kv_heads, facts.head_dim
    text = f"{heads} query heads × {head_dim}"
    if kv == heads:
        return text + f", {kv} key/value heads (one per query head)"
    return text + f", {kv} key/value head{'s' if kv > 1 else ''} (grouped-query: {heads // kv} query heads share each)"


def _child_kind(name: str, module: nn.Module, parent_kind: str) -> str:
    if _is_norm(module):
        return "norm"
    if parent_kind == "attention":
        return "projection"
    if "act" in name.lower() or not _own_params(module) and not list(module.children()):
        return "activation"
    return "projection" if parent_kind == "mlp" else "module"


def _sub_boxes(model, block_path: str, kind: str, calls_in_order: list[ModuleCall], calls: dict[str, ModuleCall],
               facts, rope: bool) -> tuple[Box, ...]:
    """The children of an attention or MLP block in the order they ran, with the steps that are not modules
    (RoPE rotation, the attention weights) placed where they happen: before the output projection."""
    prefix = block_path + "."
    direct = [c for c in calls_in_order if c.path.startswith(prefix) and "." not in c.path[len(prefix):]]
    boxes = []
    for call in direct:
        name = call.path[len(prefix):]
        module = model.get_submodule(call.path)
        box = _module_box(model, call.path, calls, f"layer.{call.path.split('.0.', 1)[-1]}", name,
                          _child_kind(name, module, kind))
        if kind == "attention":  # q/k/v/o and q/k norms: the Attention tab shows what they produce
            box = dataclasses.replace(box, link=LINKS["attention"])
        boxes.append(box)
    if kind == "attention" and boxes:
        call = calls.get(block_path)
        n = call.in_shape[0] if call and call.in_shape else 0
        weights_shape = next((s for s in (call.extra_shapes if call else ()) if len(s) == 3), (facts.num_heads, n, n))
        virtual = []
        if rope:
            virtual.append(Box(key="layer.rope", title="rotate q and k (RoPE)", kind="rope",
                               in_shape=(facts.num_heads, n, facts.head_dim), out_shape=(facts.num_heads, n, facts.head_dim),
                               detail="by each token's position", link=LINKS["rope"]))
        virtual.append(Box(key="layer.attn_weights", title="weights = softmax(q·kᵀ/√d)", kind="attn_weights",
                           in_shape=(facts.num_heads, n, facts.head_dim), out_shape=tuple(weights_shape),
                           detail="causal mask, softmax per row, then the weighted sum of the values",
                           link=LINKS["attn_weights"]))
        boxes[-1:-1] = virtual  # the output projection runs last
    return tuple(boxes)


def diagram(session, forward: ForwardPass) -> list[Box]:
    """The data-flow diagram of this pass, top to bottom: ids -> embedding -> (positions) -> L layers ->
    final norm -> LM head -> logits -> softmax. Shapes are those recorded during the pass."""
    model, facts, parts = session.model, session.facts, anatomy(session)
    cfg = text_config(model.config)
    calls = {c.path: c for c in forward.calls}
    n, d, vocab = forward.n, facts.hidden_size, model.get_output_embeddings().weight.shape[0]
    layer0 = f"{parts.layers}.0"
    block = model.get_submodule(layer0)
    attn_name, mlp_name = _attention_child(block), _mlp_child(block)
    positions = positional_scheme(session)

    boxes = [Box(key="ids", title="token ids", kind="ids", out_shape=(n,), detail=f"{n} tokens", link=LINKS["ids"])]
    embed_detail = f"vocabulary {vocab:,} × {d}"
    scale = getattr(model.get_input_embeddings(), "embed_scale", None)
    if scale is not None:
        embed_detail += f", scaled by √{d} = {float(scale):.2f}"
    boxes.append(_module_box(model, parts.embed, calls, "embed", "token embedding", "embedding",
                             params=parts.params["embed"], detail=embed_detail))
    if parts.position_embed:
        boxes.append(_module_box(model, parts.position_embed, calls, "positions", "position embedding (learned)",
                                 "positions", params=parts.params["position_embed"],
                                 detail=f"one learned vector per position, {positions.context_length:,} positions"))
    elif parts.rotary:
        rope_box = _module_box(model, parts.rotary, calls, "positions", "rotary position embedding (RoPE)", "positions",
                               params=0, detail=positions.summary + " · makes cos/sin tables for the attention layers")
        boxes.append(dataclasses.replace(rope_box, in_shape=()))  # its input only lends the dtype and device

    # One layer, drawn in the order its modules ran; the residual adds sit where the stream is updated.
    ordered = [c for c in forward.calls if c.path.startswith(layer0 + ".") and "." not in c.path[len(layer0) + 1:]]
    children: list[Box] = []
    rope = parts.rotary is not None
    for call in ordered:
        name = call.path[len(layer0) + 1:]
        module = model.get_submodule(call.path)
        if name == forward.mid_reader:
            children.append(Box(key="residual_attn", title="+ residual (attention added)", kind="residual",
                                in_shape=(n, d), out_shape=(n, d), detail="stream = stream + attention block"))
        if name == attn_name:
            children.append(_module_box(model, call.path, calls, "layer.attention", f"self-attention ({name})", "attention",
                                        detail=_attention_detail(cfg, facts),
                                        children=_sub_boxes(model, call.path, "attention", forward.calls, calls, facts, rope)))
        elif name == mlp_name:
            inter = facts.intermediate_size
            children.append(_module_box(model, call.path, calls, "layer.mlp", f"feed-forward MLP ({name})", "mlp",
                                        detail=f"{d} → {inter:,} → {d}",
                                        children=_sub_boxes(model, call.path, "mlp", forward.calls, calls, facts, rope)))
        else:
            children.append(_module_box(model, call.path, calls, f"layer.{name}", name, "norm" if _is_norm(module) else "module"))
    children.append(Box(key="residual_mlp", title="+ residual (MLP added)", kind="residual", in_shape=(n, d), out_shape=(n, d),
                        detail="stream = stream + MLP block"))
    layer_types = getattr(cfg, "layer_types", None)
    detail = f"{parts.num_layers} layers, {parts.layer_params[0]:,} parameters each"
    if len(set(parts.layer_params)) > 1:
        detail = f"{parts.num_layers} layers, {min(parts.layer_params):,}–{max(parts.layer_params):,} parameters each"
    if layer_types and len(set(layer_types)) > 1:
        counts = {t: layer_types.count(t) for t in dict.fromkeys(layer_types)}
        detail += "; " + ", ".join(f"{c} × {t.replace('_', ' ')}" for t, c in counts.items())
    boxes.append(Box(key="layers", title=f"decoder layer × {parts.num_layers}", kind="layers", module=parts.layers,
                     module_class=type(block).__name__, in_shape=(n, d), out_shape=(n, d), params=parts.params["layers"],
                     detail=detail, repeat=parts.num_layers, children=tuple(children)))
    if parts.final_norm:
        boxes.append(_module_box(model, parts.final_norm, calls, "final_norm", "final norm", "final_norm",
                                 params=parts.params["final_norm"]))
    head_detail = f"{d} → {vocab:,}" + (" · tied: reuses the embedding matrix" if parts.tied else "")
    head = _module_box(model, parts.lm_head, calls, "lm_head", "LM head", "lm_head", params=parts.params["lm_head"],
                       detail=head_detail)
    # The model was asked for the last position's logits only; the same head ran on the other positions in
    # chunks (for the surprisal), so all n positions went through it.
    boxes.append(dataclasses.replace(head, in_shape=(n, d), out_shape=(n, vocab)))
    if parts.params["other"]:
        boxes.append(Box(key="other", title="other parameters", kind="module", params=parts.params["other"],
                         detail=", ".join(parts.other_modules[:4])))
    boxes.append(Box(key="logits", title="logits", kind="logits", out_shape=(n, vocab),
                     detail=f"one score per vocabulary entry at each of the {n} positions", link=LINKS["logits"]))
    top_ids, top_probs = forward.top_next(1)
    boxes.append(Box(key="softmax", title="softmax → next token", kind="softmax", in_shape=(vocab,), out_shape=(vocab,),
                     detail=f"last position: '{pieces(session, top_ids)[0]}' p = {top_probs[0]:.2f}", link=LINKS["softmax"]))
    return boxes


def diagram_params(boxes: list[Box]) -> int:
    """Parameters of the top-level boxes: equals model.num_parameters() (tied weights counted once)."""
    return sum(box.params for box in boxes)


# ---------------------------------------------------------------------------------------------------
# Positions


@dataclass(frozen=True)
class PositionScheme:
    """How the model knows where a token is, read from its config and modules."""

    kind: str  # "rope", "learned" or "none"
    summary: str  # one line, e.g. "RoPE, theta = 100,000 on 64 dimensions"
    context_length: int
    thetas: dict[str, float]  # layer type ("all" when one) -> RoPE base theta
    layer_counts: dict[str, int]  # layer type -> layers of that type
    rotary_dims: int  # dimensions of each head that RoPE rotates (0 for learned positions)
    wavelengths: dict[str, tuple[float, float]]  # layer type -> (fastest, slowest) wavelength in tokens
    distances: np.ndarray  # [P] int64: first distance of each bin of the curve (one distance per bin up to 63)
    curves: dict[str, np.ndarray]  # name -> [3, P] float32: mean, min, max over the bin of q·k(t) / q·k(0)


def _curve_bins(limit: int) -> list[tuple[int, int]]:
    """Distance bins [start, end) for the curve: one per distance up to 63, then log-spaced up to `limit`."""
    edges = np.unique(np.concatenate([np.arange(0, min(64, limit)),
                                      np.geomspace(64, max(limit, 65), ROPE_CURVE_POINTS).astype(np.int64)]))
    edges = [int(e) for e in edges if e < limit] + [limit]
    return list(zip(edges[:-1], edges[1:]))


def _binned(values: np.ndarray, bins: list[tuple[int, int]]) -> np.ndarray:
    """values [limit] -> [3, bins]: mean, min and max of each bin (the curve and its band of ripples)."""
    return np.array([[values[a:b].mean(), values[a:b].min(), values[a:b].max()] for a, b in bins],
                    dtype=np.float32).T


def _rotary_tables(rotary: nn.Module, positions: torch.Tensor, layer_type: str | None):
    """cos, sin [P, rot_dim] from the model's own rotary module at the given positions (its first argument
    only sets the dtype and device)."""
    probe = torch.zeros(1, 1, 1, dtype=torch.float32, device=positions.device)
    extra = (layer_type,) if layer_type is not None else ()
    cos, sin = rotary(probe, positions[None], *extra)  # each [1, P, rot_dim]
    return cos[0].float(), sin[0].float()


def _rotate(session, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [P, dim] by position with the model's own apply_rotary_pos_emb (from its modeling module)."""
    block = session.model.get_submodule(anatomy(session).layers)[0]
    attn = getattr(block, _attention_child(block) or "", block)
    apply = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if apply is None:  # the textbook rotation: pairs (i, i + dim/2) turned by angle position * inv_freq
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
        return x * cos + rotated * sin
    q, _ = apply(x[None, None], x[None, None], cos[None], sin[None])  # [1, 1, P, dim]
    return q[0, 0]


def _rope_scheme(session, rotary: nn.Module, context: int) -> PositionScheme:
    model, facts = session.model, session.facts
    cfg = text_config(model.config)
    layer_types = list(getattr(cfg, "layer_types", None) or [])
    rope_params = getattr(cfg, "rope_parameters", None) or {}
    per_type = isinstance(rope_params, dict) and layer_types and all(t in rope_params for t in set(layer_types))
    types = list(dict.fromkeys(layer_types)) if per_type else [None]
    bins = _curve_bins(context)
    distances = np.array([a for a, _ in bins], dtype=np.int64)
    positions = torch.arange(context, device=session.device)  # every distance: the ripples are fast
    thetas, counts, wavelengths, curves = {}, {}, {}, {}
    rot_dims = 0
    for layer_type in types:
        name = layer_type or "all"
        params = rope_params[layer_type] if per_type else rope_params
        theta = (params or {}).get("rope_theta") or getattr(cfg, "rope_theta", None)
        inv_freq = getattr(rotary, f"{layer_type}_inv_freq" if layer_type else "inv_freq")  # [rot_dim / 2]
        rot_dims = 2 * inv_freq.numel()
        cos, sin = _rotary_tables(rotary, positions, layer_type)  # [P, rot_dim]
        # q = k = the all-ones vector (the RoPE paper's long-term decay): key at position 0, query at distance t,
        # so their score is <R(t) q, R(0) k>, divided by the score at distance 0.
        ones = torch.ones(context, cos.shape[-1], device=cos.device)
        q = _rotate(session, ones, cos, sin)  # [P, rot_dim]
        k0 = q[0]  # position 0: no rotation
        score = (q * k0).sum(-1)
        curves[f"θ = {theta:,.0f}" + (f" ({name.replace('_', ' ')} layers)" if layer_type else "")] = \
            _binned((score / score[0]).cpu().numpy(), bins)
        thetas[name] = float(theta) if theta else float("nan")
        counts[name] = layer_types.count(layer_type) if layer_type else facts.num_layers
        wave = (2 * math.pi / inv_freq.float()).cpu().numpy()
        wavelengths[name] = (float(wave.min()), float(wave.max()))
    theta_text = " and ".join(f"θ = {t:,.0f}" + (f" on {counts[k]} {k.replace('_', ' ')} layers" if k != "all" else "")
                              for k, t in thetas.items())
    summary = f"RoPE, {theta_text}; rotates {rot_dims} of {facts.head_dim} dims per head"
    return PositionScheme("rope", summary, context, thetas, counts, rot_dims, wavelengths, distances, curves)


def _learned_scheme(session, module: nn.Module, context: int) -> PositionScheme:
    table = module.weight.detach().float()  # [positions, d]
    unit = table / table.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bins = _curve_bins(table.shape[0])
    distances = np.array([a for a, _ in bins], dtype=np.int64)
    # Mean cosine similarity of the position vectors t apart: how alike the model keeps nearby positions.
    curve = np.array([1.0 if t == 0 else float((unit[:-t] * unit[t:]).sum(-1).mean()) for t in distances])
    summary = f"learned position embeddings: one vector per position, {table.shape[0]:,} positions"
    return PositionScheme("learned", summary, context, {}, {}, 0, {}, distances,
                          {"mean cosine similarity": np.stack([curve, curve, curve]).astype(np.float32)})


def positional_scheme(session) -> PositionScheme:
    """The model's positional scheme with its distance curve, computed once per model."""

    def compute() -> PositionScheme:
        parts = anatomy(session)
        model = session.model
        context = session.facts.context_length or 2048
        with session.lock, torch.no_grad():
            if parts.rotary:
                return _rope_scheme(session, model.get_submodule(parts.rotary), context)
            if parts.position_embed:
                return _learned_scheme(session, model.get_submodule(parts.position_embed), context)
        return PositionScheme("none", "no explicit positions (the causal mask alone tells order)", context, {}, {}, 0,
                              {}, np.zeros(0, np.int64), {})

    return session.analysis("forward_positions", (), compute)
