"""Named hook points: read or write the activations of any forward pass, named where they live.

Names follow TransformerLens; shapes keep the batch dimension first:

    hook_embed                   [batch, pos, d_model]   the token embedding's output (Gemma scales it inside)
    blocks.{l}.hook_resid_pre    [batch, pos, d_model]   the residual stream entering layer l
    blocks.{l}.attn.hook_pattern [batch, heads, q, k]    softmax(q·kᵀ/√d + mask): eager attention's weights (read only)
    blocks.{l}.attn.hook_z       [batch, pos, heads, head_dim]  each query head's output, before the output projection
    blocks.{l}.hook_attn_out     [batch, pos, d_model]   what the attention block adds to the stream
    blocks.{l}.hook_resid_mid    [batch, pos, d_model]   the stream after the attention add (read only)
    blocks.{l}.hook_mlp_out      [batch, pos, d_model]   what the MLP block adds to the stream
    blocks.{l}.hook_resid_post   [batch, pos, d_model]   the stream leaving layer l
    ln_final.hook_normalized     [batch, pos, d_model]   after the final norm
    hook_logits                  [batch, pos, vocab]     the LM head's output (only the positions the model was
                                                         asked for: see run.last_logits_only)

In a decode step with the KV cache, `pos` is 1 and a pattern row covers every cached key. For Gemma, "what a
block adds" is the output of the norm that follows the block (post_attention_layernorm,
post_feedforward_layernorm). `resid_mid` and `pattern` are read only: the layer keeps its own reference to
the stream (the second residual add), and the weights are used inside the attention function.

    with hooks(session, read=["blocks.*.hook_resid_pre"], write={"blocks.3.attn.hook_z": zero_head_2}) as rec:
        session.model(input_ids=ids)
    rec["blocks.0.hook_resid_pre"]  # float32 on the CPU, [1, n, d_model]

Plain `register_forward_hook` / `register_forward_pre_hook` on the model's own modules underneath (the
anatomy says which module is which). Reading copies the tensor (to the CPU, at the dtype asked for) and never
changes it, so outputs are bit for bit those of an unhooked pass. Writing replaces the tensor with what the
function returns (same shape), cast to the model's dtype and device.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from ..errors import InputError
from .anatomy import Anatomy, anatomy, is_dropout

Writer = Callable[[torch.Tensor], torch.Tensor]
Observer = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class PointKind:
    """One kind of hook point: its name pattern (with {l} for the layer), shape and whether it can be written."""

    template: str
    shape: str
    writable: bool
    meaning: str


POINT_KINDS = (
    PointKind("hook_embed", "[batch, pos, d_model]", True, "the token embedding's output"),
    PointKind("blocks.{l}.hook_resid_pre", "[batch, pos, d_model]", True, "the residual stream entering the layer"),
    PointKind("blocks.{l}.attn.hook_pattern", "[batch, heads, q, k]", False, "the attention weights of every head"),
    PointKind("blocks.{l}.attn.hook_z", "[batch, pos, heads, head_dim]", True, "each head's output before o_proj"),
    PointKind("blocks.{l}.hook_attn_out", "[batch, pos, d_model]", True, "what the attention block adds to the stream"),
    PointKind("blocks.{l}.hook_resid_mid", "[batch, pos, d_model]", False, "the stream after the attention add"),
    PointKind("blocks.{l}.hook_mlp_out", "[batch, pos, d_model]", True, "what the MLP block adds to the stream"),
    PointKind("blocks.{l}.hook_resid_post", "[batch, pos, d_model]", True, "the residual stream leaving the layer"),
    PointKind("ln_final.hook_normalized", "[batch, pos, d_model]", True, "the stream after the final norm"),
    PointKind("hook_logits", "[batch, pos, vocab]", True, "the LM head's output"),
)
_KIND_BY_SUFFIX = {k.template.split("}.", 1)[-1]: k for k in POINT_KINDS}
_LAYER_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


def point_names(session) -> list[str]:
    """Every hook point of the loaded model, in the order a forward pass reaches them (read once per model)."""
    return list(session.analysis("hook_point_names", (), lambda: _point_names(session)))


def _point_names(session) -> tuple[str, ...]:
    parts = anatomy(session)
    names = ["hook_embed"]
    for layer in range(parts.num_layers):
        names += [k.template.format(l=layer) for k in POINT_KINDS if "{l}" in k.template
                  and _available(parts, layer, k.template)]
    names += [n for n in ("ln_final.hook_normalized", "hook_logits") if n != "ln_final.hook_normalized" or parts.final_norm]
    return tuple(names)


def _available(parts: Anatomy, layer: int, template: str) -> bool:
    lp = parts.layer(layer)
    if template.endswith("hook_z"):
        return lp.o_proj is not None
    if template.endswith("hook_resid_mid"):
        return lp.pre_mlp_norm is not None
    if template.endswith("hook_mlp_out"):
        return lp.mlp_out is not None
    return True


def kind_of(name: str) -> PointKind:
    match = _LAYER_NAME.match(name)
    kind = _KIND_BY_SUFFIX.get(match.group(2)) if match else _KIND_BY_SUFFIX.get(name)
    if kind is None:
        raise InputError("model.hooks.not_a_point", "'{name}' is not a hook point; they are named like {examples}, ...",
                         name=name[:80], examples=", ".join(k.template for k in POINT_KINDS[:4]))
    return kind


def resolve(session, patterns: Iterable[str]) -> list[str]:
    """Hook point names from names or glob patterns ('blocks.*.hook_resid_pre'), checked against the model."""
    names = point_names(session)
    known = set(names)  # a few hundred names: rebuilt per call, but the list itself is cached
    out: list[str] = []
    for pattern in patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)] if any(c in pattern for c in "*?[") else (
            [pattern] if pattern in known else [])
        if not matched:
            kind_of(pattern)  # a clear message for a malformed name
            raise InputError("model.hooks.no_such_point",
                             "This model has no hook point '{name}' (it has {layers} layers, numbered from 0).",
                             name=pattern[:80], layers=anatomy(session).num_layers)
        out += [n for n in matched if n not in out]
    return out


# ---------------------------------------------------------------------------------------------------
# Where each point lives: a module, whether its input or output, and how to find the tensor in it


@dataclass(frozen=True)
class _Site:
    module: str  # dotted path
    on_input: bool  # a pre-hook (the module's first input) or a forward hook (its output)
    item: int | None  # the output is a tuple: which element (None: the output is the tensor)
    heads: int = 0  # hook_z: split the last dimension into heads


def _site(session, name: str) -> _Site:
    parts = anatomy(session)
    if name == "hook_embed":
        return _Site(parts.embed, False, None)
    if name == "ln_final.hook_normalized":
        return _Site(parts.final_norm, False, None)
    if name == "hook_logits":
        return _Site(parts.lm_head, False, None)
    match = _LAYER_NAME.match(name)
    lp = parts.layer(int(match.group(1)))
    suffix = match.group(2)
    if suffix == "hook_resid_pre":
        return _Site(lp.block, True, None)
    if suffix == "hook_resid_post":
        return _Site(lp.block, False, 0)
    if suffix == "attn.hook_pattern":
        return _Site(lp.attn, False, 1)
    if suffix == "attn.hook_z":
        return _Site(lp.o_proj, True, None, heads=session.facts.num_heads)
    if suffix == "hook_attn_out":
        return _Site(lp.attn_out, False, 0)
    if suffix == "hook_resid_mid":
        return _Site(lp.pre_mlp_norm, True, None)
    if suffix == "hook_mlp_out":
        return _Site(lp.mlp_out, False, 0)
    raise InputError("model.hooks.unknown_point", "'{name}' is not a hook point.", name=name)


def _pick(value, item: int | None) -> torch.Tensor | None:
    """The tensor at a site: the value itself, or element `item` of a tuple output (a bare tensor output
    counts as element 0: decoder layers return a tensor in transformers 5, a tuple elsewhere)."""
    if isinstance(value, torch.Tensor):
        return value if item in (None, 0) else None
    if isinstance(value, (tuple, list)) and item is not None and len(value) > item:
        return value[item]
    return None


def _put(value, item: int | None, new: torch.Tensor):
    if isinstance(value, torch.Tensor) or item is None:
        return new
    items = list(value)
    items[item] = new
    return type(value)(items) if isinstance(value, tuple) else items


class Recording(Mapping):
    """What the read points held, per name: one tensor per module call (a prefill and each decode step are
    separate calls). `rec[name]` is the last call's tensor."""

    def __init__(self):
        self._values: dict[str, list[torch.Tensor]] = defaultdict(list)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._values:
            raise KeyError(f"{name} was not read (or the pass never reached it)")
        return self._values[name][-1]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def calls(self, name: str) -> list[torch.Tensor]:
        return list(self._values.get(name, []))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self._values.values() for t in ts)


@contextlib.contextmanager
def hooks(session, read: Iterable[str] = (), write: Mapping[str, Writer] | None = None,
          observe: Mapping[str, Observer] | None = None, dtype: torch.dtype | None = torch.float32,
          device: str | torch.device = "cpu") -> Iterator[Recording]:
    """Hook points active for every forward pass run inside the block (prefill or decode, cache or not).

    read: names or glob patterns; each call's tensor is copied to `device` at `dtype` (None: the model's).
    write: name -> function(tensor) -> replacement of the same shape; only writable points.
    observe: name -> function(tensor): sees the live tensor (no copy), e.g. to keep a norm instead of [pos, d].
    At one point the writer runs first: readers and observers see what flows on.
    """
    write = dict(write or {})
    observe = dict(observe or {})
    for name in write:
        if not kind_of(name).writable:
            raise InputError("model.hooks.read_only", "{name} can be read but not written.", name=name)
    wanted: dict[str, dict] = {}
    for name in resolve(session, read):
        wanted.setdefault(name, {})["read"] = True
    for name, fn in write.items():
        wanted.setdefault(resolve(session, [name])[0], {})["write"] = fn
    for name, fn in observe.items():
        for resolved in resolve(session, [name]):
            wanted.setdefault(resolved, {}).setdefault("observe", []).append(fn)

    rec = Recording()
    model = session.model
    handles = []
    for name, what in wanted.items():
        site = _site(session, name)
        module = model.get_submodule(site.module)
        handles.append(_register(module, site, name, what, rec, dtype, device))
    try:
        yield rec
    finally:
        for handle in handles:
            handle.remove()


def _register(module: nn.Module, site: _Site, name: str, what: dict, rec: Recording, dtype, device):
    writer: Writer | None = what.get("write")
    observers: list[Observer] = what.get("observe", [])
    reading = what.get("read", False)

    def visit(tensor: torch.Tensor) -> torch.Tensor | None:
        """Write, then observe and read; returns the replacement (None when unchanged)."""
        view = tensor.unflatten(-1, (site.heads, -1)) if site.heads else tensor  # hook_z: [b, pos, heads, hd]
        replaced = None
        if writer is not None:
            new = writer(view)
            if tuple(new.shape) != tuple(view.shape):
                raise InputError("model.hooks.wrong_shape", "The replacement for {name} has shape {shape}; it must be "
                                 "{expected}.", name=name, shape=tuple(new.shape), expected=tuple(view.shape))
            view = new.to(dtype=tensor.dtype, device=tensor.device)
            replaced = view.flatten(-2) if site.heads else view
        for fn in observers:
            fn(view)
        if reading:
            rec._values[name].append(view.detach().to(device=device, dtype=dtype or view.dtype, copy=True))
        return replaced

    if site.on_input:
        def pre_hook(mod, args, kwargs):
            if args:
                new = visit(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))  # hidden_states
            new = visit(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(mod, args, output):
        tensor = _pick(output, site.item)
        if tensor is None:
            raise InputError("model.hooks.no_weights",
                             "{name} is empty: this model computed attention without returning its weights "
                             "(it must be loaded with attn_implementation='eager').", name=name)
        new = visit(tensor)
        return None if new is None else _put(output, site.item, new)

    return module.register_forward_hook(post_hook)


# ---------------------------------------------------------------------------------------------------
# Module calls: the shapes the diagram shows


@dataclass(frozen=True)
class ModuleCall:
    """One module call as the hooks saw it, in call order."""

    path: str  # dotted path in the model
    kind: str  # the module's class name
    in_shape: tuple[int, ...]  # first input, batch dimension dropped
    out_shape: tuple[int, ...]  # first output, batch dimension dropped
    extra_shapes: tuple[tuple[int, ...], ...] = ()  # further tensor outputs (the attention weights)


def _shape(t: torch.Tensor | None) -> tuple[int, ...]:
    """A tensor's shape without the batch dimension (position tables such as RoPE's cos keep theirs)."""
    if t is None:
        return ()
    return tuple(t.shape[1:]) if t.dim() > 1 else tuple(t.shape)


@contextlib.contextmanager
def trace_calls(session, paths: Iterable[str]) -> Iterator[list[ModuleCall]]:
    """The first call of each module in `paths` (dropout skipped), with its input and output shapes, in the
    order the pass ran them."""
    model = session.model
    calls: list[ModuleCall] = []
    open_calls: dict[str, int] = {}
    handles = []
    for path in paths:
        module = model.get_submodule(path)
        if is_dropout(module):
            continue

        def opened(module, args, kwargs, path=path):
            if path not in open_calls and all(c.path != path for c in calls):
                x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
                open_calls[path] = len(calls)
                calls.append(ModuleCall(path, type(module).__name__, _shape(x), ()))

        def closed(module, args, kwargs, output, path=path):
            index = open_calls.pop(path, None)
            if index is None:
                return
            tensors = [output] if isinstance(output, torch.Tensor) else [
                t for t in (output if isinstance(output, (tuple, list)) else ()) if isinstance(t, torch.Tensor)]
            call = calls[index]
            calls[index] = ModuleCall(call.path, call.kind, call.in_shape, _shape(tensors[0] if tensors else None),
                                      tuple(_shape(t) for t in tensors[1:]))

        handles.append(module.register_forward_pre_hook(opened, with_kwargs=True))
        handles.append(module.register_forward_hook(closed, with_kwargs=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
