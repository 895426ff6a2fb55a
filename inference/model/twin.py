"""A second model object on the session's own weights, with sdpa attention, for transformers' serving engine.

transformers' continuous batching (`generate_batch`, `init_continuous_batching`) needs sdpa or paged
attention: started on an eager model it switches that model to paged attention, and an ordinary forward pass
fails until it is switched back. The session's model must stay eager for every other tab (attention weights),
so the engine gets a twin: the module tree copied, every parameter and buffer shared (no weight is copied:
the twin costs a few hundred kB of Python objects, not another 0.5 GB), attention set to sdpa on the twin's
own config. Hooks on the session's modules are not carried over.
"""

from __future__ import annotations

import copy


def _build(session):
    model = session.model
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    with session.lock:  # no forward (and no hook of a running analysis) while the tree is copied
        twin = copy.deepcopy(model, shared)
    for module in twin.modules():  # hooks belong to the session's model, not to the twin
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    twin.set_attn_implementation("sdpa")
    return twin.eval()


def sdpa_twin(session):
    """The session's sdpa twin, made once and kept with the session's analyses (it holds no weights of its own)."""
    return session.analysis("sdpa_twin", (), lambda: _build(session))


def shares_weights(session, twin) -> bool:
    """Every parameter of the twin is the session's own tensor (nothing was copied)."""
    own = {p.data_ptr() for p in session.model.parameters()}
    return all(p.data_ptr() in own for p in twin.parameters())


__all__ = ["sdpa_twin", "shares_weights"]
