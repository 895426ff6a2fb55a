"""Where a forward pass's time goes: the attention scores, the projections, the MLP, the rest.

    PassProfiler     forward hooks on each decoder layer's attention and MLP (as the model layer's anatomy
                     names them: Llama's self_attn / mlp, GPT-2's attn / mlp, Gemma's ...), timing each
    prefill_flops    what a prefill of n tokens costs in FLOPs: Linear work grows with n, attention with n²
"""

from __future__ import annotations

import threading
import time

from torch import nn

from .model.anatomy import anatomy
from .model.run import sync


def _is_projection(module: nn.Module) -> bool:
    """A weight matrix applied to every position: nn.Linear, or GPT-2's Conv1D (the same product, weight
    stored transposed)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def decoder_layers(session) -> list[nn.Module]:
    """The decoder layers (blocks), in order."""
    parts = anatomy(session)
    return [parts.module(session.model, p.block) for p in parts.layer_parts]


class PassProfiler:
    """Wall time inside each decoder layer's attention and MLP modules, with forward hooks on this model.

    attention core = the attention module minus its projections (Q/K/V/O, or GPT-2's fused c_attn and
    c_proj): QKᵀ, mask, softmax, x V (plus RoPE and reshapes). It is the part whose work grows with n² in a
    prefill. Only passes on the thread that opened the profiler are counted; the hooks are removed on exit.
    """

    def __init__(self, session):
        self.session = session
        self.device = session.device
        self.thread = threading.get_ident()
        self.totals = {"attention": 0.0, "projections": 0.0, "mlp": 0.0}
        self._starts: dict[int, float] = {}
        self._handles = []

    def parts(self) -> list[tuple[nn.Module, nn.Module | None]]:
        """(attention, MLP) of each decoder layer; the MLP is None where a layer has none the anatomy finds."""
        parts, model = anatomy(self.session), self.session.model
        return [(parts.module(model, p.attn), parts.module(model, p.mlp)) for p in parts.layer_parts]

    def _watch(self, module, bucket: str) -> None:
        def before(mod, args):
            if threading.get_ident() == self.thread:
                sync(self.device)
                self._starts[id(mod)] = time.perf_counter()

        def after(mod, args, output):
            start = self._starts.pop(id(mod), None)
            if start is not None:
                sync(self.device)
                self.totals[bucket] += time.perf_counter() - start

        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    def __enter__(self) -> "PassProfiler":
        for attention, mlp in self.parts():
            self._watch(attention, "attention")
            if mlp is not None:
                self._watch(mlp, "mlp")
            for child in attention.children():
                if _is_projection(child):
                    self._watch(child, "projections")
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self, pass_s: float) -> dict:
        """This pass's split (then reset): attention core, projections, MLP, and the rest (embeddings,
        norms, the LM head, the mask)."""
        t = self.totals
        split = {"attention_core_s": max(0.0, t["attention"] - t["projections"]), "projections_s": t["projections"],
                 "mlp_s": t["mlp"]}
        split["other_s"] = max(0.0, pass_s - sum(split.values()))
        self.totals = dict.fromkeys(t, 0.0)
        return split


def linear_flops_per_token(session) -> tuple[int, int]:
    """(FLOPs per token in the decoder layers' weight matrices, FLOPs of the LM head for one position):
    2 x in x out per matrix, read from the weights."""
    def compute() -> tuple[int, int]:
        layer_macs = sum(m.weight.numel() for layer in decoder_layers(session) for m in layer.modules()
                         if _is_projection(m))
        head = session.model.get_output_embeddings()
        head_macs = head.in_features * head.out_features if isinstance(head, nn.Linear) else 0
        return 2 * layer_macs, 2 * head_macs

    return session.analysis("prefill_linear_flops", (), compute)


def prefill_flops(session, n: int) -> dict:
    """FLOPs of a prefill of n tokens. Linear work grows with n; the attention scores QKᵀ and the weighted
    sum x V are 2 x heads x head_dim x n² each per layer: eager attention computes the whole n x n square
    and masks the upper half (only the last position goes through the LM head)."""
    f = session.facts
    per_token, head = linear_flops_per_token(session)
    attention = 4 * f.num_layers * f.num_heads * f.head_dim * n * n
    return {"linear": per_token * n + head, "attention": attention}


__all__ = ["PassProfiler", "decoder_layers", "linear_flops_per_token", "prefill_flops"]
