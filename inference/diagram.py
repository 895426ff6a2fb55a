"""The data-flow diagram of one forward pass: the model's anatomy with the shapes of this pass.

Read from the model itself: the parts come from the anatomy (`inference.model.anatomy`: embedding, layer stack,
final norm, LM head, positions, and each layer's attention, MLP and pre-MLP norm), parameter counts from the
weights (tied weights counted once, so the boxes sum to `model.num_parameters()`), the order of the modules
inside a layer and every activation shape from the calls the recorded prefill traced (`ForwardPass.calls`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from torch import nn

from .model.anatomy import ModelFacts, anatomy, is_norm, own_params, text_config
from .model.hooks import ModuleCall
from .model.vocab import pieces
from .positions import PositionScheme, positional_scheme

if TYPE_CHECKING:
    from .forward import ForwardPass


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

    def walk(self) -> Iterator["Box"]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class Diagram:
    """The diagram's boxes and what their explanations state besides the boxes' own numbers."""

    boxes: list[Box]
    facts: ModelFacts
    n: int  # tokens in this pass
    tied: bool  # the LM head reuses the embedding matrix
    positions: PositionScheme
    mid_reader: str | None  # module that reads the stream after the attention add (None: parallel blocks)
    first_child: str | None  # the layer's first module: it reads the stream as the layer receives it

    @property
    def params(self) -> int:
        return diagram_params(self.boxes)

    def find(self, key: str) -> Box | None:
        """The box (at any depth) with this key, or None."""
        return next((box for top in self.boxes for box in top.walk() if box.key == key), None)


def _weights(module: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((name, tuple(p.shape)) for name, p in own_params(module))


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
        children=children,
    )


def _attention_detail(facts: ModelFacts) -> str:
    heads, kv, head_dim = facts.num_heads, facts.num_kv_heads, facts.head_dim
    text = f"{heads} query heads × {head_dim}"
    if kv == heads:
        return text + f", {kv} key/value heads (one per query head)"
    return text + f", {kv} key/value head{'s' if kv > 1 else ''} (grouped-query: {heads // kv} query heads share each)"


def _child_kind(name: str, module: nn.Module, parent_kind: str) -> str:
    if is_norm(module):
        return "norm"
    if parent_kind == "attention":
        return "projection"
    if "act" in name.lower() or not own_params(module) and not list(module.children()):
        return "activation"
    return "projection" if parent_kind == "mlp" else "module"


def _direct_calls(calls_in_order: list[ModuleCall], parent: str) -> list[ModuleCall]:
    """The calls of `parent`'s own children, in the order they ran."""
    prefix = parent + "."
    return [c for c in calls_in_order if c.path.startswith(prefix) and "." not in c.path[len(prefix):]]


def _sub_boxes(model, block_path: str, kind: str, calls_in_order: list[ModuleCall], calls: dict[str, ModuleCall],
               facts: ModelFacts, rope: bool) -> tuple[Box, ...]:
    """The children of an attention or MLP block in the order they ran, with the steps that are not modules
    (RoPE rotation, the attention weights) placed where they happen: before the output projection."""
    boxes = []
    for call in _direct_calls(calls_in_order, block_path):
        name = call.path[len(block_path) + 1:]
        module = model.get_submodule(call.path)
        boxes.append(_module_box(model, call.path, calls, f"layer.{call.path.split('.0.', 1)[-1]}", name,
                                 _child_kind(name, module, kind)))
    if kind == "attention" and boxes:
        call = calls.get(block_path)
        n = call.in_shape[0] if call and call.in_shape else 0
        weights_shape = next((s for s in (call.extra_shapes if call else ()) if len(s) == 3), (facts.num_heads, n, n))
        virtual = []
        if rope:
            virtual.append(Box(key="layer.rope", title="rotate q and k (RoPE)", kind="rope",
                               in_shape=(facts.num_heads, n, facts.head_dim), out_shape=(facts.num_heads, n, facts.head_dim),
                               detail="by each token's position"))
        virtual.append(Box(key="layer.attn_weights", title="weights = softmax(q·kᵀ/√d)", kind="attn_weights",
                           in_shape=(facts.num_heads, n, facts.head_dim), out_shape=tuple(weights_shape),
                           detail="causal mask, softmax per row, then the weighted sum of the values"))
        boxes[-1:-1] = virtual  # the output projection runs last
    return tuple(boxes)


def _layer_detail(cfg, parts) -> str:
    layer_types = getattr(cfg, "layer_types", None)
    detail = f"{parts.num_layers} layers, {parts.layer_params[0]:,} parameters each"
    if len(set(parts.layer_params)) > 1:
        detail = f"{parts.num_layers} layers, {min(parts.layer_params):,}–{max(parts.layer_params):,} parameters each"
    if layer_types and len(set(layer_types)) > 1:
        counts = {t: layer_types.count(t) for t in dict.fromkeys(layer_types)}
        detail += "; " + ", ".join(f"{c} × {t.replace('_', ' ')}" for t, c in counts.items())
    return detail


def build_diagram(session, forward: "ForwardPass") -> Diagram:
    """The data-flow diagram of this pass, top to bottom: ids -> embedding -> (positions) -> L layers ->
    final norm -> LM head -> logits -> softmax. Shapes are those recorded during the pass."""
    model, facts, parts = session.model, session.facts, anatomy(session)
    cfg = text_config(model.config)
    calls = {c.path: c for c in forward.calls}
    lm_head = parts.module(model, parts.lm_head)
    n, d, vocab = forward.n, facts.hidden_size, lm_head.weight.shape[0]
    layer0 = parts.layer(0)
    positions = positional_scheme(session)

    boxes = [Box(key="ids", title="token ids", kind="ids", out_shape=(n,), detail=f"{n} tokens")]
    embed_detail = f"vocabulary {vocab:,} × {d}"
    scale = getattr(parts.module(model, parts.embed), "embed_scale", None)
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
    children: list[Box] = []
    rope = parts.rotary is not None
    for call in _direct_calls(forward.calls, layer0.block):
        name = call.path[len(layer0.block) + 1:]
        if call.path == layer0.pre_mlp_norm:
            children.append(Box(key="residual_attn", title="+ residual (attention added)", kind="residual",
                                in_shape=(n, d), out_shape=(n, d), detail="stream = stream + attention block"))
        if call.path == layer0.attn:
            children.append(_module_box(model, call.path, calls, "layer.attention", f"self-attention ({name})", "attention",
                                        detail=_attention_detail(facts),
                                        children=_sub_boxes(model, call.path, "attention", forward.calls, calls, facts, rope)))
        elif call.path == layer0.mlp:
            inter = facts.intermediate_size
            children.append(_module_box(model, call.path, calls, "layer.mlp", f"feed-forward MLP ({name})", "mlp",
                                        detail=f"{d} → {inter:,} → {d}",
                                        children=_sub_boxes(model, call.path, "mlp", forward.calls, calls, facts, rope)))
        else:
            module = model.get_submodule(call.path)
            children.append(_module_box(model, call.path, calls, f"layer.{name}", name, "norm" if is_norm(module) else "module"))
    children.append(Box(key="residual_mlp", title="+ residual (MLP added)", kind="residual", in_shape=(n, d), out_shape=(n, d),
                        detail="stream = stream + MLP block"))
    block_class = type(model.get_submodule(layer0.block)).__name__
    boxes.append(Box(key="layers", title=f"decoder layer × {parts.num_layers}", kind="layers", module=parts.layers,
                     module_class=block_class, in_shape=(n, d), out_shape=(n, d), params=parts.params["layers"],
                     detail=_layer_detail(cfg, parts), repeat=parts.num_layers, children=tuple(children)))
    if parts.final_norm:
        boxes.append(_module_box(model, parts.final_norm, calls, "final_norm", "final norm", "final_norm",
                                 params=parts.params["final_norm"]))
    head_detail = f"{d} → {vocab:,}" + (" · tied: reuses the embedding matrix" if parts.tied else "")
    head = _module_box(model, parts.lm_head, calls, "lm_head", "LM head", "lm_head", params=parts.params["lm_head"],
                       detail=head_detail)
    # The model was asked for the last positions' logits only; the same head ran on the other positions in
    # chunks (for the surprisal), so all n positions went through it.
    boxes.append(dataclasses.replace(head, in_shape=(n, d), out_shape=(n, vocab)))
    if parts.params["other"]:
        boxes.append(Box(key="other", title="other parameters", kind="module", params=parts.params["other"],
                         detail=", ".join(parts.other_modules[:4])))
    boxes.append(Box(key="logits", title="logits", kind="logits", out_shape=(n, vocab),
                     detail=f"one score per vocabulary entry at each of the {n} positions"))
    top_ids, top_probs = forward.top_next(1)
    boxes.append(Box(key="softmax", title="softmax → next token", kind="softmax", in_shape=(vocab,), out_shape=(vocab,),
                     detail=f"last position: '{pieces(session, top_ids)[0]}' p = {top_probs[0]:.2f}"))
    return Diagram(boxes=boxes, facts=facts, n=n, tied=parts.tied, positions=positions,
                   mid_reader=layer0.pre_mlp_norm, first_child=children[0].module or None)


def diagram(session, forward: "ForwardPass") -> list[Box]:
    """The diagram's boxes (see build_diagram)."""
    return build_diagram(session, forward).boxes


def diagram_params(boxes: list[Box]) -> int:
    """Parameters of the top-level boxes: equals model.num_parameters() (tied weights counted once)."""
    return sum(box.params for box in boxes)
