"""Change the model and watch: switch off heads or blocks (ablation), copy one run into another (patching).

Both write through the model layer's hook points (`inference.model.hooks`), so what they change is named
where it lives:

    ablate a head         blocks.{l}.attn.hook_z[:, :, h]   the head's output before o_proj -> 0 or its mean
    ablate a block        blocks.{l}.hook_attn_out / blocks.{l}.hook_mlp_out   what the block adds -> 0 or mean
    patch (causal trace)  blocks.{l}.hook_{site}[:, p]      the corrupted run gets the clean run's activation

Zero ablation removes a component's contribution; mean ablation replaces it by its average over the prompt's
positions, which keeps the typical size of what flows on and removes only what depends on the token (the
less destructive test). Neither is a full explanation: a large effect says the model uses the component for
this prompt, not what it computes.

Activation patching (the ROME paper's causal tracing): two prompts with the same number of tokens that differ
in one detail ("The Eiffel Tower is in the city of" / "The Colosseum is in the city of"). Run the corrupted one,
but at one layer and one position put in the clean run's activation, and measure how much of the clean answer
comes back: the share of the logit-difference gap restored, (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt),
LD = logit(clean answer) - logit(corrupt answer); 1 = fully restored, 0 = no effect.

Sweeps run one forward pass per layer with one batch row per head (or per position): the same numbers as one
pass per head, up to float rounding (tested), in a fraction of the time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .deadline import Deadline
from .errors import InputError
from .limits import MAX_INTERVENTION_TOKENS, MAX_PATCH_TOKENS
from .model.hooks import hooks
from .model.run import last_logits_only
from .model.vocab import pieces
from .tokens import clean_text, tokenize

MODES = ("zero", "mean")
BLOCK_KINDS = ("attn", "mlp")
SITES = ("resid_pre", "attn_out", "mlp_out")
_SITE_POINT = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out",
               "resid_post": "hook_resid_post"}
TOP_N = 10


# ---------------------------------------------------------------------------------------------------
# What to ablate


@dataclass(frozen=True)
class Ablation:
    """Heads (layer, head) and whole blocks ("attn" | "mlp", layer) to switch off, zeroed or mean-replaced."""

    heads: tuple[tuple[int, int], ...] = ()
    blocks: tuple[tuple[str, int], ...] = ()
    mode: str = "zero"

    @property
    def empty(self) -> bool:
        return not self.heads and not self.blocks

    def describe(self) -> str:
        parts = [f"L{l}H{h}" for l, h in self.heads] + [f"{k} block L{l}" for k, l in self.blocks]
        return f"{self.mode}-ablated: " + ", ".join(parts) if parts else "no ablation"

    def points(self) -> list[str]:
        """The hook points this ablation writes."""
        names = {f"blocks.{l}.attn.hook_z" for l, _ in self.heads}
        names |= {f"blocks.{l}.hook_{'attn_out' if k == 'attn' else 'mlp_out'}" for k, l in self.blocks}
        return sorted(names)


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{name} {value!r} does not exist: it must be a whole number from {low} to {high}.")
    return int(value)


def check_ablation(session, heads=(), blocks=(), mode: str = "zero") -> Ablation:
    """An Ablation with every layer and head checked against the model (InputError says which is wrong)."""
    f = session.facts
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")
    checked_heads = []
    for item in heads or ():
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InputError("Each head is a pair [layer, head].")
        checked_heads.append((_whole(item[0], "Layer", 0, f.num_layers - 1), _whole(item[1], "Head", 0, f.num_heads - 1)))
    checked_blocks = []
    for item in blocks or ():
        if not isinstance(item, (list, tuple)) or len(item) != 2 or item[0] not in BLOCK_KINDS:
            raise InputError('Each block is a pair ["attn" or "mlp", layer].')
        checked_blocks.append((item[0], _whole(item[1], "Layer", 0, f.num_layers - 1)))
    return Ablation(tuple(dict.fromkeys(checked_heads)), tuple(dict.fromkeys(checked_blocks)), mode)


def _means(session, ids: torch.Tensor, ablation: Ablation) -> dict[str, torch.Tensor]:
    """Mean over the prompt's positions of every point the ablation writes (mean mode): name -> [..., d]."""
    if ablation.mode != "mean" or ablation.empty:
        return {}
    with hooks(session, read=ablation.points(), dtype=None, device=session.device) as rec:
        session.model(input_ids=ids, use_cache=False, **last_logits_only(session.model))
    return {name: rec[name][0].mean(0) for name in ablation.points()}  # [heads, head_dim] or [d]


def writers(ablation: Ablation, means: dict[str, torch.Tensor] | None = None,
            rows: Sequence[Ablation] | None = None) -> dict[str, Callable]:
    """Hook-point writers that apply `ablation` to every batch row, or `rows[i]` to batch row i."""
    means = means or {}
    per_row = list(rows) if rows is not None else None
    names = sorted({n for a in (per_row or [ablation]) for n in a.points()})

    def make(name: str):
        layer = int(name.split(".")[1])

        def write(t: torch.Tensor) -> torch.Tensor:  # z: [b, pos, heads, hd]; block outputs: [b, pos, d]
            t = t.clone()
            for row, a in enumerate(per_row or [ablation] * t.shape[0]):
                mean = means.get(name)
                if name.endswith("hook_z"):
                    for h in (h for l, h in a.heads if l == layer):
                        t[row, :, h] = 0 if a.mode == "zero" else mean[h]
                elif any(l == layer and name.endswith(f"hook_{'attn_out' if k == 'attn' else 'mlp_out'}")
                         for k, l in a.blocks):
                    t[row] = 0 if a.mode == "zero" else mean
            return t

        return write

    return {name: make(name) for name in names}


@contextlib.contextmanager
def ablated(session, ablation: Ablation, prompt_ids: Sequence[int]) -> Iterator[None]:
    """Every forward pass inside the block runs with `ablation` on (prefill and decode steps alike); mean
    ablation uses the prompt's means, computed once here. Hold the session lock around it."""
    if ablation.empty:
        yield
        return
    ids = torch.tensor([list(prompt_ids)], device=session.device)
    with torch.inference_mode():
        means = _means(session, ids, ablation)
    with hooks(session, write=writers(ablation, means)):
        yield


# ---------------------------------------------------------------------------------------------------
# One ablation: the next-token distribution before and after


@dataclass(eq=False)
class AblationResult:
    """The next-token distribution after the text, clean and with the ablation on."""

    ablation: Ablation
    tokens: list[str]  # the prompt's readable pieces
    clean_probs: np.ndarray = field(repr=False)  # [vocab] float32
    ablated_probs: np.ndarray = field(repr=False)  # [vocab] float32
    top_ids: list[int]  # union of both runs' top tokens, by clean probability
    top_pieces: list[str]
    clean_token_id: int  # the clean run's top token
    delta_logprob: float  # log p_ablated(clean top) - log p_clean(clean top), nats
    kl: float  # KL(clean || ablated), nats
    seconds: float  # the ablated pass (and the means pass in mean mode)

    @property
    def ablated_token_id(self) -> int:
        return int(self.ablated_probs.argmax())

    def retained_bytes(self) -> int:
        return self.clean_probs.nbytes + self.ablated_probs.nbytes


def _ids(session, text: str, chat: bool, cap: int = MAX_INTERVENTION_TOKENS) -> torch.Tensor:
    view = tokenize(session, clean_text(text), bool(chat))
    if len(view.ids) > cap:
        raise InputError(f"The text is {len(view.ids):,} tokens; {'patching' if cap == MAX_PATCH_TOKENS else 'ablation'} "
                         f"takes at most {cap} tokens. Shorten it and try again.")
    return torch.tensor([view.ids], device=session.device)


def _last_probs(session, ids: torch.Tensor, write: dict | None = None) -> torch.Tensor:
    """Next-token probabilities [batch, vocab] (float32) after the last position, with `write` hooks on."""
    with hooks(session, write=write or {}):
        logits = session.model(input_ids=ids, use_cache=False, **last_logits_only(session.model)).logits[:, -1]
    return torch.softmax(logits.float(), -1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (torch.log(p.clamp_min(1e-30)) - torch.log(q.clamp_min(1e-30)))).sum())


def clean_probs(session, text: str, chat: bool = False) -> np.ndarray:
    """The unablated next-token distribution [vocab], cached per text (shared by every ablation of it)."""
    text, chat = clean_text(text), bool(chat)

    def compute() -> np.ndarray:
        ids = _ids(session, text, chat)
        with session.lock, torch.inference_mode():
            return _last_probs(session, ids)[0].cpu().numpy()

    return session.analysis("intervention_clean", (text, chat), compute)


def ablate(session, text: str, heads=(), blocks=(), mode: str = "zero", chat: bool = False) -> AblationResult:
    """The next-token distribution with the given heads / blocks zero- or mean-ablated, beside the clean one.
    Cached per (text, ablation)."""
    text, chat = clean_text(text), bool(chat)
    ablation = check_ablation(session, heads, blocks, mode)

    def compute() -> AblationResult:
        ids = _ids(session, text, chat)
        clean = torch.from_numpy(clean_probs(session, text, chat))
        started = time.perf_counter()
        with session.lock, torch.inference_mode():
            means = _means(session, ids, ablation)
            after = _last_probs(session, ids, writers(ablation, means))[0].cpu()
        seconds = time.perf_counter() - started
        top = int(clean.argmax())
        union = list(dict.fromkeys([*torch.topk(clean, TOP_N).indices.tolist(), *torch.topk(after, TOP_N).indices.tolist()]))
        union.sort(key=lambda i: -float(clean[i]))
        return AblationResult(
            ablation=ablation, tokens=pieces(session, ids[0].tolist()), clean_probs=clean.numpy(),
            ablated_probs=after.numpy(), top_ids=union, top_pieces=pieces(session, union), clean_token_id=top,
            delta_logprob=float(torch.log(after[top].clamp_min(1e-30)) - torch.log(clean[top].clamp_min(1e-30))),
            kl=_kl(clean, after), seconds=seconds,
        )

    return session.analysis("ablate", (text, chat, ablation), compute)


# ---------------------------------------------------------------------------------------------------
# Every head of some layers, one at a time


@dataclass(eq=False)
class HeadSweep:
    """The effect of zero/mean-ablating each head alone: [layers, heads] arrays (NaN where not run)."""

    layers: list[int]  # the layers swept
    clean_token_id: int
    clean_piece: str
    delta_logprob: np.ndarray  # [num_layers, num_heads]: change of log p(clean answer), nats
    kl: np.ndarray  # [num_layers, num_heads]: KL(clean || ablated), nats
    top_after: np.ndarray  # [num_layers, num_heads] int64: the top token with that head off
    mode: str
    seconds: float
    timed_out: bool = False  # cut short by the request's time limit: not cached

    def retained_bytes(self) -> int:
        return self.delta_logprob.nbytes + self.kl.nbytes + self.top_after.nbytes


def head_sweep(session, text: str, layers: Sequence[int] | None = None, mode: str = "zero", chat: bool = False,
               deadline: Deadline | None = None, progress: Callable[[float, str], None] | None = None) -> HeadSweep:
    """Ablate every head of `layers` (default: all) in turn: one pass per layer, one batch row per head."""
    text, chat = clean_text(text), bool(chat)
    f = session.facts
    layers = sorted({_whole(l, "Layer", 0, f.num_layers - 1) for l in (range(f.num_layers) if layers is None else layers)})
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}.")

    def compute() -> HeadSweep:
        deadline_ = deadline or Deadline()
        ids = _ids(session, text, chat)
        clean = torch.from_numpy(clean_probs(session, text, chat))
        top = int(clean.argmax())
        shape = (f.num_layers, f.num_heads)
        delta, kl = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
        top_after = np.full(shape, -1, np.int64)
        started = time.perf_counter()
        timed_out = False
        batch = ids.expand(f.num_heads, -1)  # [heads, n]: row h ablates head h
        for i, layer in enumerate(layers):
            if deadline_.expired:
                timed_out = True
                break
            rows = [Ablation(((layer, h),), (), mode) for h in range(f.num_heads)]
            with session.lock, torch.inference_mode():
                means = _means(session, ids, Ablation(tuple((layer, h) for h in range(f.num_heads)), (), mode))
                after = _last_probs(session, batch, writers(rows[0], means, rows=rows)).cpu()  # [heads, V]
            delta[layer] = (torch.log(after[:, top].clamp_min(1e-30)) - torch.log(clean[top].clamp_min(1e-30))).numpy()
            kl[layer] = [_kl(clean, row) for row in after]
            top_after[layer] = after.argmax(-1).numpy()
            if progress:
                progress((i + 1) / len(layers), f"layer {layer}: {f.num_heads} heads ablated")
        return HeadSweep(layers, top, pieces(session, [top])[0], delta, kl, top_after, mode,
                         time.perf_counter() - started, timed_out)

    return session.analysis("head_sweep", (text, chat, tuple(layers), mode), compute)


# ---------------------------------------------------------------------------------------------------
# Activation patching


@dataclass(eq=False)
class PatchSweep:
    """Causal tracing of one site over every layer and position of the corrupted prompt."""

    site: str
    clean_tokens: list[str]
    corrupt_tokens: list[str]
    clean_token_id: int  # the clean run's answer
    corrupt_token_id: int  # the corrupted run's answer
    clean_piece: str
    corrupt_piece: str
    effect: np.ndarray  # [layers, positions]: share of the logit-difference gap restored
    clean_prob: np.ndarray  # [layers, positions]: p(clean answer) in the patched run
    top_ids: np.ndarray  # [layers, positions, k]: the patched run's top tokens
    top_probs: np.ndarray  # [layers, positions, k]
    logit_diff_clean: float
    logit_diff_corrupt: float
    seconds: float
    timed_out: bool = False

    def retained_bytes(self) -> int:
        return self.effect.nbytes + self.clean_prob.nbytes + self.top_ids.nbytes + self.top_probs.nbytes


def _pair(session, clean_text_: str, corrupt_text: str, chat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    clean_ids = _ids(session, clean_text_, chat, MAX_PATCH_TOKENS)
    corrupt_ids = _ids(session, corrupt_text, chat, MAX_PATCH_TOKENS)
    n, m = clean_ids.shape[1], corrupt_ids.shape[1]
    if n != m:
        raise InputError(f"The clean prompt is {n} tokens and the corrupted one {m}: patching copies position by "
                         "position, so they must have the same number of tokens. Change a word for one that is "
                         "also a single token (the Tokenizer tab shows the split), or add or remove a word.")
    return clean_ids, corrupt_ids


def _check_site(site: str, allowed=SITES) -> str:
    if site not in allowed:
        raise InputError(f"site must be one of {', '.join(allowed)}; got {site!r}.")
    return site


def patched_logits(session, clean_text_: str, corrupt_text: str, site: str, layer: int,
                   positions: Sequence[int], chat: bool = False) -> torch.Tensor:
    """The corrupted run's last-position logits [V] with the clean run's `site` activation of `layer` put in at
    `positions` (all of them at once). For checks and the cell view."""
    _check_site(site, (*SITES, "resid_post"))
    clean_ids, corrupt_ids = _pair(session, clean_text_, corrupt_text, chat)
    name = f"blocks.{layer}.{_SITE_POINT[site]}"
    with session.lock, torch.inference_mode():
        with hooks(session, read=[name], dtype=None, device=session.device) as rec:
            session.model(input_ids=clean_ids, use_cache=False, **last_logits_only(session.model))
        clean_act = rec[name]  # [1, n, d]
        index = list(positions)

        def put(t):
            t = t.clone()
            t[:, index] = clean_act[:, index]
            return t

        with hooks(session, write={name: put}):
            out = session.model(input_ids=corrupt_ids, use_cache=False, **last_logits_only(session.model))
    return out.logits[0, -1].float()


def patch_sweep(session, clean_text_: str, corrupt_text: str, site: str = "resid_pre", chat: bool = False,
                deadline: Deadline | None = None, progress: Callable[[float, str], None] | None = None) -> PatchSweep:
    """Patch the clean run's `site` into the corrupted run at every (layer, position), one position at a time:
    one pass per layer with one batch row per position. Cached per (texts, site)."""
    clean_text_, corrupt_text, chat = clean_text(clean_text_, "clean prompt"), clean_text(corrupt_text, "corrupted prompt"), bool(chat)
    _check_site(site)

    def compute() -> PatchSweep:
        deadline_ = deadline or Deadline()
        f = session.facts
        clean_ids, corrupt_ids = _pair(session, clean_text_, corrupt_text, chat)
        n = clean_ids.shape[1]
        names = [f"blocks.{l}.{_SITE_POINT[site]}" for l in range(f.num_layers)]
        started = time.perf_counter()
        with session.lock, torch.inference_mode():
            with hooks(session, read=names, dtype=None, device=session.device) as rec:
                clean_logits = session.model(input_ids=clean_ids, use_cache=False,
                                             **last_logits_only(session.model)).logits[0, -1].float()
            corrupt_logits = session.model(input_ids=corrupt_ids, use_cache=False,
                                           **last_logits_only(session.model)).logits[0, -1].float()
        a, b = int(clean_logits.argmax()), int(corrupt_logits.argmax())
        if a == b:
            raise InputError(f"Both prompts make the model answer '{pieces(session, [a])[0]}': patching measures how "
                             "much of the clean answer comes back, so the answers must differ. Change the detail.")
        ld_clean = float(clean_logits[a] - clean_logits[b])
        ld_corrupt = float(corrupt_logits[a] - corrupt_logits[b])
        effect = np.full((f.num_layers, n), np.nan, np.float32)
        prob = np.full((f.num_layers, n), np.nan, np.float32)
        top_ids = np.zeros((f.num_layers, n, 5), np.int64)
        top_probs = np.zeros((f.num_layers, n, 5), np.float32)
        batch = corrupt_ids.expand(n, -1)  # [n, n]: row p patches position p
        rows = torch.arange(n)
        timed_out = False
        for layer, name in enumerate(names):
            if deadline_.expired:
                timed_out = True
                break
            clean_act = rec[name][0]  # [n, d]

            def put(t, clean_act=clean_act):  # t: [n rows, n positions, d]
                t = t.clone()
                t[rows, rows] = clean_act[rows]
                return t

            with session.lock, torch.inference_mode(), hooks(session, write={name: put}):
                logits = session.model(input_ids=batch, use_cache=False,
                                       **last_logits_only(session.model)).logits[:, -1].float()  # [n, V]
            ld = (logits[:, a] - logits[:, b]).cpu().numpy()
            effect[layer] = (ld - ld_corrupt) / (ld_clean - ld_corrupt)
            p = torch.softmax(logits, -1)
            prob[layer] = p[:, a].cpu().numpy()
            values, ids = p.topk(5, -1)
            top_ids[layer], top_probs[layer] = ids.cpu().numpy(), values.cpu().numpy()
            if progress:
                progress((layer + 1) / f.num_layers, f"layer {layer}: {n} positions patched")
        return PatchSweep(
            site=site, clean_tokens=pieces(session, clean_ids[0].tolist()), corrupt_tokens=pieces(session, corrupt_ids[0].tolist()),
            clean_token_id=a, corrupt_token_id=b, clean_piece=pieces(session, [a])[0], corrupt_piece=pieces(session, [b])[0],
            effect=effect, clean_prob=prob, top_ids=top_ids, top_probs=top_probs, logit_diff_clean=ld_clean,
            logit_diff_corrupt=ld_corrupt, seconds=time.perf_counter() - started, timed_out=timed_out,
        )

    return session.analysis("patch_sweep", (clean_text_, corrupt_text, chat, site), compute)
