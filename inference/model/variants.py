"""Copies of the loaded model at another precision, and the bytes that weights and caches really hold.

The shared session's model is never changed. A precision copy is built beside it, wrapped as a session of its
own (same tokenizer, same lock: one model call at a time) and dropped when the `with` block ends, so at most one
copy is alive at a time:

    float32, bfloat16, float16   every parameter cast; buffers left as they are. `from_pretrained(dtype=...)` keeps
                                 RoPE's inv_freq in float32 too; casting it as well (`model.to(bfloat16)`) changes
                                 the rotation angles, which moved SmolLM2's logits by up to 1.7 in our measurement.
    int8                         torchao `Int8WeightOnlyConfig`: int8 weights with one float32 scale per output row;
                                 activations stay float32 (weight-only).
    int4                         torchao `PrototypeInt4WeightOnlyConfig`: two 4-bit weights per byte, one scale and
                                 zero point per group of 32 inputs, run by torch's CPU kernel
                                 `_weight_int4pack_mm_for_cpu` on a bfloat16 copy (the kernel's fast path: with
                                 float32 activations a 58-token prefill of SmolLM2 took 40 s here instead of 0.7 s).
                                 Groups of 32 are GGUF Q4_1's blocks: on weights de-quantized from it, each group's
                                 16 levels are exactly the block's, so int4 adds no error of its own. CPU only.

Both quantized variants quantize every linear layer except an LM head tied to the embedding: quantizing it would
untie it, keeping a float32 embedding and a second, int8 copy of the same matrix. The embedding is a lookup, not a
matmul: it stays float32 (torchao's weight-only configs quantize nn.Linear).

Bytes are read from the tensors: a quantized weight is a tensor subclass whose `numel() * element_size()` is the
size of the float tensor it stands for, so its inner tensors (data, scales, zero points) are counted instead.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
from typing import Iterator

import torch
from torch import nn

from ..errors import InputError
from .anatomy import anatomy, layer_windows
from .session import AnalysisCache, ModelSession

FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZED = ("int8", "int4")
PRECISIONS = (*FLOAT_DTYPES, *QUANTIZED)
# The dtype a copy computes in: int8 keeps float32 activations (weight-only: only the weights change); torch's int4
# CPU kernel is built for 16-bit activations.
COMPUTE_DTYPES = {**FLOAT_DTYPES, "int8": torch.float32, "int4": torch.bfloat16}
INT4_GROUP = 32  # inputs per int4 group (torchao takes 32 to 256); GGUF's 4-bit blocks hold 32 weights too

DESCRIPTIONS = {
    "float32": "32-bit float, 4 bytes per weight",
    "bfloat16": "bfloat16: 8 exponent bits like float32, 7 mantissa bits",
    "float16": "float16: 5 exponent bits, 10 mantissa bits",
    "int8": "int8 weights, a float32 scale per output row (torchao Int8WeightOnlyConfig); activations float32",
    "int4": (f"int4 weights, two per byte, a bfloat16 scale and zero point per {INT4_GROUP} inputs (torchao "
             "PrototypeInt4WeightOnlyConfig, torch's int4 CPU kernel); activations and embedding bfloat16"),
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds: its own storage, or the sum of the inner tensors of a quantized tensor subclass."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None and type(t) not in (torch.Tensor, nn.Parameter):
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, name)) for name in names if getattr(t, name, None) is not None)
    return t.numel() * t.element_size()


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters, each counted once (a tied LM head adds nothing)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += tensor_bytes(p)
    return total


def int4_available(session) -> bool:
    """torch's int4 CPU matmul exists here and the model runs on the CPU."""
    return session.device.type == "cpu" and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def available_precisions(session) -> list[str]:
    return [p for p in PRECISIONS if p != "int4" or int4_available(session)]


def _cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A deep copy with every parameter cast to `dtype` (buffers copied as they are). The cast parameters are
    handed to deepcopy through its memo, so no full-precision copy is made on the way; a tied weight is one
    Parameter, so the copy stays tied."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to(dtype=dtype, copy=True), requires_grad=False)
    return copy.deepcopy(model, memo)


def _quantize(session, model: nn.Module, name: str) -> tuple[int, int]:
    """Quantize the copy's linear layers in place (not a tied LM head); returns (quantized, left as they were):
    torchao skips a layer whose input size is not a multiple of the group size."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    parts = anatomy(session)
    skip = parts.lm_head if parts.tied else None
    wanted = [fqn for fqn, m in model.named_modules() if isinstance(m, nn.Linear) and fqn != skip]
    if name == "int8":
        config = Int8WeightOnlyConfig(set_inductor_config=False)  # no global torch.compile settings changed
    else:
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        config = PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP, set_inductor_config=False)
    quantize_(model, config, filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and fqn != skip)
    done = sum(type(model.get_submodule(fqn).weight) not in (torch.Tensor, nn.Parameter) for fqn in wanted)
    return done, len(wanted) - done


@dataclasses.dataclass(frozen=True)
class CopyInfo:
    """What a precision copy is: its name, the dtype its activations run in, and what was quantized."""

    name: str
    compute_dtype: str
    quantized_layers: int = 0
    skipped_layers: int = 0
    description: str = ""


@contextlib.contextmanager
def precision_copy(session, name: str) -> Iterator[tuple[ModelSession, CopyInfo]]:
    """A copy of the session's model at precision `name` (see PRECISIONS), as a session of its own that shares the
    lock and the tokenizer; freed when the block ends. The shared model is never touched."""
    if name not in PRECISIONS:
        raise InputError("model.variants.unknown_precision", "'{name}' is not a precision; choose from {choices}.",
                         name=str(name)[:40], choices=", ".join(PRECISIONS))
    if name == "int4" and not int4_available(session):
        raise InputError("model.variants.int4_unavailable",
                         "int4 weights need torch's int4 CPU kernel and a model on the CPU; not available here.")
    dtype = COMPUTE_DTYPES[name]
    # Copied under the lock: a request registers its hooks on the shared model for the pass it runs while holding
    # the lock, so no other request's hook is copied along (transformers' own output-capturing hooks are).
    with session.lock:
        model = _cast_copy(session.model, dtype).eval()
    done = skipped = 0
    if name in QUANTIZED:
        done, skipped = _quantize(session, model, name)
    variant = dataclasses.replace(session, model_id=f"{session.model_id} ({name})", model=model, dtype=dtype,
                                  cache=AnalysisCache(max_entries=8), _weight_bytes=None)
    info = CopyInfo(name, dtype_name(dtype), done, skipped, DESCRIPTIONS[name])
    try:
        yield variant, info
    finally:
        variant.model = None
        del model, variant
        gc.collect()


# ---------------------------------------------------------------------------------------------------
# Caches: quantized caches and the bytes a cache holds


def kv_quantization_backends() -> dict[str, bool]:
    """transformers' QuantizedCache backends and whether each can run here: fp8 is pure torch; quanto and hqq
    need their packages."""
    from transformers.utils import is_hqq_available, is_optimum_quanto_available

    return {"fp8": hasattr(torch, "float8_e4m3fn"), "quanto": is_optimum_quanto_available(), "hqq": is_hqq_available()}


def quantized_cache(session, backend: str = "fp8"):
    """An empty transformers QuantizedCache for this model. It supports only models whose layers all use full
    attention (Gemma 3's sliding-window layers are refused)."""
    from transformers import QuantizedCache

    if any(w is not None for w in layer_windows(session)):
        raise InputError("model.variants.sliding_window", "{model} has sliding-window layers; transformers' "
                         "QuantizedCache supports only models whose layers all use full attention, so the KV-cache "
                         "precision comparison is not available for it.", model=session.label)
    if not kv_quantization_backends().get(backend):
        raise InputError("model.variants.backend_missing",
                         "The {backend} backend of QuantizedCache is not installed here.", backend=backend)
    return QuantizedCache(backend, config=session.model.config)


def cache_storage_bytes(cache) -> list[int]:
    """Bytes each layer of a cache holds, read from its tensors: keys and values, plus the quantized states of a
    QuantizedCache layer (its 8-bit data and scales; the full-precision keys/values it keeps may be empty)."""

    def held(value) -> int:
        if isinstance(value, torch.Tensor):
            return tensor_bytes(value)
        if isinstance(value, (tuple, list)):
            return sum(held(v) for v in value)
        if isinstance(value, dict):
            return sum(held(v) for v in value.values())
        return 0

    sizes = []
    for layer in getattr(cache, "layers", []):
        if not getattr(layer, "is_initialized", True):
            sizes.append(0)
            continue
        sizes.append(sum(held(getattr(layer, attr, None))
                         for attr in ("keys", "values", "_quantized_keys", "_quantized_values")))
    return sizes
