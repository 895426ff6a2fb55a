"""How a Hugging Face causal LM is put together: which module plays which part, read from the model itself.

This is the one place that walks `named_modules()`; every other module asks it. It knows Llama-style models
(SmolLM2), Gemma 3 (extra norms around each block: the "sandwich"), GPT-2 (learned positions, fused qkv,
Conv1D) and anything built the same way: an embedding, a ModuleList of `num_hidden_layers` decoder layers,
each with an attention child and an MLP child, a final norm and an LM head.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import InputError


def text_config(config):
    """Multimodal configs keep the language model's numbers in `text_config`."""
    return getattr(config, "text_config", None) or config


def is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def is_dropout(module: nn.Module) -> bool:
    return "dropout" in type(module).__name__.lower()


def own_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(module.named_parameters(recurse=False))


# ---------------------------------------------------------------------------------------------------
# Facts: the numbers the header and the lessons state


@dataclass(frozen=True)
class ModelFacts:
    """What the header and the lessons state about the loaded model, read from its config and weights."""

    architecture: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    context_length: int
    num_parameters: int

    @property
    def kv_bytes_per_token_fp32(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 4


def read_facts(model) -> ModelFacts:
    cfg = text_config(model.config)
    heads = cfg.num_attention_heads
    return ModelFacts(
        architecture=type(model).__name__,
        num_layers=cfg.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        hidden_size=cfg.hidden_size,
        intermediate_size=getattr(cfg, "intermediate_size", 0) or getattr(cfg, "n_inner", 0) or 0,
        vocab_size=cfg.vocab_size,
        context_length=getattr(cfg, "max_position_embeddings", 0) or 0,
        num_parameters=model.num_parameters(),
    )


# ---------------------------------------------------------------------------------------------------
# One decoder layer's parts


ATTENTION_OUT_NAMES = ("o_proj", "c_proj", "out_proj", "dense", "o")


def attention_child(layer: nn.Module) -> str | None:
    for name, child in layer.named_children():
        if "attn" in name.lower() or "attention" in type(child).__name__.lower():
            return name
    return None


def mlp_child(layer: nn.Module) -> str | None:
    for name, child in layer.named_children():
        kind = type(child).__name__.lower()
        if name.lower() in ("mlp", "feed_forward", "ffn") or "mlp" in kind or "feedforward" in kind:
            return name
    return None


@dataclass(frozen=True)
class LayerParts:
    """Dotted paths of one decoder layer's parts. `attn_out` / `mlp_out` name the module whose output is what
    the block adds to the residual stream: the block itself, or the norm after it where the model has one
    (Gemma's post_attention_layernorm / post_feedforward_layernorm)."""

    block: str
    attn: str
    mlp: str | None
    o_proj: str | None  # the attention's output projection: its input holds every head's output (hook_z)
    attn_out: str
    mlp_out: str | None
    pre_mlp_norm: str | None  # reads the stream after the attention add (resid_mid); None for parallel blocks


def _layer_parts(model: nn.Module, path: str) -> LayerParts:
    layer = model.get_submodule(path)
    attn_name, mlp_name = attention_child(layer), mlp_child(layer)
    if attn_name is None:
        raise InputError("model.anatomy.no_attention_block", "{module} has no attention block this app can follow.",
                         module=type(layer).__name__)
    attn = getattr(layer, attn_name)
    o_proj = next((f"{path}.{attn_name}.{n}" for n in ATTENTION_OUT_NAMES if hasattr(attn, n)), None)
    children = dict(layer.named_children())
    # Gemma 2/3 wrap each block in norms: post_attention_layernorm normalises the attention OUTPUT there
    # (Llama's post_attention_layernorm is the pre-MLP norm of the stream); pre_feedforward_layernorm reads
    # the stream.
    sandwich = "pre_feedforward_layernorm" in children and "post_feedforward_layernorm" in children
    norms = [n for n, c in children.items() if is_norm(c) and own_params(c)]
    if sandwich:
        attn_out = f"{path}.post_attention_layernorm"
        mlp_out = f"{path}.post_feedforward_layernorm"
        pre_mlp = f"{path}.pre_feedforward_layernorm"
    else:
        attn_out = f"{path}.{attn_name}"
        mlp_out = f"{path}.{mlp_name}" if mlp_name else None
        # The second norm of a sequential layer (Llama's post_attention_layernorm, GPT-2's ln_2) reads the
        # stream after the attention add. With one norm the blocks run in parallel on the same input.
        pre_mlp = f"{path}.{norms[1]}" if len(norms) >= 2 else None
    return LayerParts(
        block=path, attn=f"{path}.{attn_name}", mlp=f"{path}.{mlp_name}" if mlp_name else None, o_proj=o_proj,
        attn_out=attn_out, mlp_out=mlp_out, pre_mlp_norm=pre_mlp,
    )


# ---------------------------------------------------------------------------------------------------
# The whole model


@dataclass(frozen=True)
class Anatomy:
    """Where each part of the forward pass lives in this model (dotted module paths) and what it weighs."""

    architecture: str
    paths: dict[int, str]  # id(module) -> dotted path, for every module
    embed: str  # token embedding
    layers: str  # the ModuleList of decoder layers
    num_layers: int
    layer_parts: tuple[LayerParts, ...]
    final_norm: str | None
    lm_head: str
    tied: bool  # the LM head reuses the embedding matrix
    position_embed: str | None  # learned position embeddings (GPT-2's wpe), if any
    rotary: str | None  # the rotary embedding module (RoPE), if any
    params: dict[str, int]  # part ("embed", "position_embed", "layers", "final_norm", "lm_head", "other") -> count
    layer_params: list[int]  # parameters of each layer
    other_modules: list[str]  # modules with parameters outside every part (counted under "other")
    num_parameters: int  # model.num_parameters(): unique parameters
    logit_softcap: float | None  # Gemma 2's final tanh cap on the logits, applied after the LM head

    def module(self, model: nn.Module, path: str | None) -> nn.Module | None:
        return None if path is None else model.get_submodule(path)

    def layer(self, index: int) -> LayerParts:
        return self.layer_parts[index]


def _find_layers(model: nn.Module, num_layers: int) -> str:
    """The decoder stack: the ModuleList of num_hidden_layers blocks holding the most parameters."""
    best, best_count = None, -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            count = sum(p.numel() for p in module.parameters())
            if count > best_count:
                best, best_count = name, count
    if best is None:
        raise InputError("model.anatomy.no_layer_stack",
                         "{module} has no stack of {layers} layers this app can follow.",
                         module=type(model).__name__, layers=num_layers)
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
        if is_norm(child) and own_params(child):
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
        fresh = [p for _, p in own_params(module) if id(p) not in seen]
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
        layer_parts=tuple(_layer_parts(model, f"{layers}.{i}") for i in range(num_layers)),
        final_norm=final_norm,
        lm_head=lm_head,
        tied=head_module.weight is embed_module.weight,
        position_embed=position_embed,
        rotary=rotary,
        params=params,
        layer_params=layer_params,
        other_modules=other_modules,
        num_parameters=model.num_parameters(),
        logit_softcap=getattr(cfg, "final_logit_softcapping", None) or None,
    )


def anatomy(session) -> Anatomy:
    """The loaded model's anatomy, read once per model."""
    return session.analysis("model_anatomy", (), lambda: read_anatomy(session.model))


def layer_windows(session) -> list[int | None]:
    """Per layer, the sliding-window length of its attention, or None for full (global) attention.
    Gemma 3 makes 5 of every 6 layers local (window 512); SmolLM2 has none."""
    cfg = text_config(session.model.config)
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * session.facts.num_layers
    return [window if (t == "sliding_attention" and window) else None for t in types][: session.facts.num_layers]
