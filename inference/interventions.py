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

Every ablation of a text compares with one clean pass of it, run once and cached with the positional means of
every point an ablation can write (so a mean ablation costs one pass, like a zero ablation). Sweeps batch their
runs: the head sweep runs one pass per layer with one batch row per head (and one per block); the patching
sweep runs one pass per position with one batch row per layer, starting from the corrupted run's KV cache of
the positions before it (a patch at position p cannot change what came before p), so it only recomputes
positions p..n-1. The same numbers as one pass per run, up to float rounding (tested), in a fraction of the time.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .deadline import Deadline
from .errors import InputError, Message
from .limits import MAX_ABLATION_SPEC_CHARS, MAX_INTERVENTION_TOKENS, MAX_PATCH_TOKENS, MAX_TEXT_CHARS
from .model.hooks import hooks, resolve
from .model.run import last_logits_only, new_cache, prefix_cache
from .model.vocab import pieces
from .tokens import clean_text as _checked_text, tokenize

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

    @property
    def spec(self) -> str:
        """The text form `parse_ablation` reads back: 'L17H4, attn L3, mlp L0' ('' for no ablation)."""
        return ", ".join([f"L{l}H{h}" for l, h in self.heads] + [f"{k} L{l}" for k, l in self.blocks])

    def describe(self) -> str:
        parts = [f"L{l}H{h}" for l, h in self.heads] + [f"{k} block L{l}" for k, l in self.blocks]
        return f"{self.mode}-ablated: " + ", ".join(parts) if parts else "no ablation"

    def points(self) -> list[str]:
        """The hook points this ablation writes."""
        names = {f"blocks.{l}.attn.hook_z" for l, _ in self.heads}
        names |= {f"blocks.{l}.{_BLOCK_POINT[k]}" for k, l in self.blocks}
        return sorted(names)


_BLOCK_POINT = {"attn": "hook_attn_out", "mlp": "hook_mlp_out"}


def _shown(value, limit: int = 40) -> str:
    """A value as an error message quotes it: its repr, cut short (a request may send 300,000 characters)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _whole(value, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and low <= value <= high


def _layer(value, num_layers: int) -> int:
    if not _whole(value, 0, num_layers - 1):
        raise InputError("interventions.no_such_layer",
                         "Layer {value} does not exist: it must be a whole number from {low} to {high}.",
                         value=_shown(value), low=0, high=num_layers - 1)
    return int(value)


def _head(value, num_heads: int) -> int:
    if not _whole(value, 0, num_heads - 1):
        raise InputError("interventions.no_such_head",
                         "Head {value} does not exist: it must be a whole number from {low} to {high}.",
                         value=_shown(value), low=0, high=num_heads - 1)
    return int(value)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError("interventions.bad_mode", "mode must be one of {modes}; got {value}.",
                         modes=", ".join(MODES), value=_shown(mode))
    return mode


def check_ablation(session, heads=(), blocks=(), mode: str = "zero") -> Ablation:
    """An Ablation with every layer and head checked against the model (InputError says which is wrong)."""
    f = session.facts
    _check_mode(mode)
    checked_heads = []
    for item in heads or ():
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InputError("interventions.head_not_a_pair", "Each head is a pair [layer, head].")
        checked_heads.append((_layer(item[0], f.num_layers), _head(item[1], f.num_heads)))
    checked_blocks = []
    for item in blocks or ():
        if not isinstance(item, (list, tuple)) or len(item) != 2 or item[0] not in BLOCK_KINDS:
            raise InputError("interventions.block_not_a_pair", 'Each block is a pair ["attn" or "mlp", layer].')
        checked_blocks.append((item[0], _layer(item[1], f.num_layers)))
    return Ablation(tuple(dict.fromkeys(checked_heads)), tuple(dict.fromkeys(checked_blocks)), mode)


_HEAD_SPEC = re.compile(r"L\s*(\d+)\s*H\s*(\d+)", re.I)
_BLOCK_SPEC = re.compile(r"(attn|attention|mlp)\s*L?\s*(\d+)|L\s*(\d+)\s*(attn|attention|mlp)", re.I)


def parse_ablation(session, text: str, mode: str = "zero") -> Ablation:
    """The ablation a short text names, checked against the model: heads as `L17H4` (layer 17, head 4), whole
    blocks as `attn L3` or `mlp L0`, separated by commas or semicolons; case and spaces do not matter, and an
    empty text is no ablation. `Ablation.spec` writes the same form back, so it can travel in a link or from
    one tab to another:

        parse_ablation(s, "L17H4, L17H5; mlp L0", "mean").spec == "L17H4, L17H5, mlp L0"
    """
    text = "" if text is None else str(text)
    if len(text) > MAX_ABLATION_SPEC_CHARS:
        raise InputError("interventions.list_too_long",
                         "The list of heads and blocks is {chars:,} characters; at most {limit:,} are read.",
                         chars=len(text), limit=MAX_ABLATION_SPEC_CHARS)
    heads, blocks = [], []
    for item in re.split(r"[,;\n]", text):
        item = item.strip()
        if not item:
            continue
        if match := _HEAD_SPEC.fullmatch(item):
            heads.append((int(match[1]), int(match[2])))
        elif match := _BLOCK_SPEC.fullmatch(item):
            kind = (match[1] or match[4]).lower()
            blocks.append(("attn" if kind.startswith("att") else "mlp", int(match[2] or match[3])))
        else:
            raise InputError("interventions.not_a_head_or_block",
                             "'{item}' is not a head or a block: write a head as L17H4 (layer 17, head 4) and a "
                             "whole block as 'attn L3' or 'mlp L0', separated by commas.", item=item[:40])
    return check_ablation(session, heads, blocks, mode)


def prompt_means(session, ids: torch.Tensor, ablation: Ablation) -> dict[str, torch.Tensor]:
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
        mean = means.get(name)

        def write(t: torch.Tensor) -> torch.Tensor:  # z: [b, pos, heads, hd]; block outputs: [b, pos, d]
            t = t.clone()
            for row, a in enumerate(per_row or [ablation] * t.shape[0]):
                if name.endswith("hook_z"):
                    for h in (h for l, h in a.heads if l == layer):
                        t[row, :, h] = 0 if a.mode == "zero" else mean[h]
                elif any(l == layer and name.endswith(_BLOCK_POINT[k]) for k, l in a.blocks):
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
        means = prompt_means(session, ids, ablation)
    with hooks(session, write=writers(ablation, means)):
        yield


# ---------------------------------------------------------------------------------------------------
# The clean run, and one ablation: the next-token distribution before and after


@dataclass(eq=False)
class CleanRun:
    """The unablated pass over a text: its next-token distribution, and the mean over the prompt's positions of
    every point an ablation can write (what a mean ablation puts in)."""

    probs: np.ndarray = field(repr=False)  # [vocab] float32
    means: dict[str, torch.Tensor] = field(repr=False)  # hook_z: [heads, head_dim]; attn_out / mlp_out: [d]

    def retained_bytes(self) -> int:
        return self.probs.nbytes + sum(t.numel() * t.element_size() for t in self.means.values())


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
    seconds: float  # the ablated pass

    @property
    def ablated_token_id(self) -> int:
        return int(self.ablated_probs.argmax())

    def retained_bytes(self) -> int:
        return self.clean_probs.nbytes + self.ablated_probs.nbytes


def _ids(session, text: str, chat: bool, cap: int = MAX_INTERVENTION_TOKENS) -> torch.Tensor:
    view = tokenize(session, _checked_text(text), bool(chat))
    if len(view.ids) > cap and cap == MAX_PATCH_TOKENS:
        raise InputError("interventions.too_many_tokens_patching",
                         "The text is {tokens:,} tokens; patching takes at most {limit} tokens. Shorten it and try "
                         "again.", tokens=len(view.ids), limit=cap)
    if len(view.ids) > cap:
        raise InputError("interventions.too_many_tokens_ablation",
                         "The text is {tokens:,} tokens; ablation takes at most {limit} tokens. Shorten it and try "
                         "again.", tokens=len(view.ids), limit=cap)
    return torch.tensor([view.ids], device=session.device)


def _last_probs(session, ids: torch.Tensor, write: dict | None = None) -> torch.Tensor:
    """Next-token probabilities [batch, vocab] (float32) after the last position, with `write` hooks on."""
    with hooks(session, write=write or {}):
        logits = session.model(input_ids=ids, use_cache=False, **last_logits_only(session.model)).logits[:, -1]
    return torch.softmax(logits.float(), -1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (torch.log(p.clamp_min(1e-30)) - torch.log(q.clamp_min(1e-30)))).sum())


def _log_ratio(after: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    return torch.log(after.clamp_min(1e-30)) - torch.log(before.clamp_min(1e-30))


_ABLATABLE = ("blocks.*.attn.hook_z", "blocks.*.hook_attn_out", "blocks.*.hook_mlp_out")


def clean_run(session, text: str, chat: bool = False) -> CleanRun:
    """The unablated pass over a text (one pass, cached per text, shared by every ablation of it): its next-token
    distribution and the positional means of every writable point (observed on the fly, never copied whole)."""
    text, chat = _checked_text(text), bool(chat)

    def compute() -> CleanRun:
        ids = _ids(session, text, chat)
        means: dict[str, torch.Tensor] = {}

        def keep_mean(name: str):
            def observe(t: torch.Tensor) -> None:  # [1, pos, heads, head_dim] or [1, pos, d]
                means[name] = t[0].mean(0).detach().clone()

            return observe

        with session.lock, torch.inference_mode():
            observers = {name: keep_mean(name) for name in resolve(session, _ABLATABLE)}
            with hooks(session, observe=observers):
                logits = session.model(input_ids=ids, use_cache=False, **last_logits_only(session.model)).logits[0, -1]
            probs = torch.softmax(logits.float(), -1).cpu().numpy()
        return CleanRun(probs, means)

    return session.analysis("intervention_clean", (text, chat), compute)


def clean_probs(session, text: str, chat: bool = False) -> np.ndarray:
    """The unablated next-token distribution [vocab], cached per text (shared by every ablation of it)."""
    return clean_run(session, text, chat).probs


def ablate(session, text: str, heads=(), blocks=(), mode: str = "zero", chat: bool = False) -> AblationResult:
    """The next-token distribution with the given heads / blocks zero- or mean-ablated, beside the clean one.
    Cached per (text, ablation); one model pass once the text's clean run is cached."""
    text, chat = _checked_text(text), bool(chat)
    ablation = check_ablation(session, heads, blocks, mode)

    def compute() -> AblationResult:
        ids = _ids(session, text, chat)
        run = clean_run(session, text, chat)
        clean = torch.from_numpy(run.probs)
        means = run.means if ablation.mode == "mean" else {}
        started = time.perf_counter()
        if ablation.empty:
            after = clean.clone()
        else:
            with session.lock, torch.inference_mode():
                after = _last_probs(session, ids, writers(ablation, means))[0].cpu()
        seconds = time.perf_counter() - started
        top = int(clean.argmax())
        union = list(dict.fromkeys([*torch.topk(clean, TOP_N).indices.tolist(), *torch.topk(after, TOP_N).indices.tolist()]))
        union.sort(key=lambda i: -float(clean[i]))
        return AblationResult(
            ablation=ablation, tokens=pieces(session, ids[0].tolist()), clean_probs=clean.numpy(),
            ablated_probs=after.numpy(), top_ids=union, top_pieces=pieces(session, union), clean_token_id=top,
            delta_logprob=float(_log_ratio(after[top], clean[top])), kl=_kl(clean, after), seconds=seconds,
        )

    return session.analysis("ablate", (text, chat, ablation), compute)


# ---------------------------------------------------------------------------------------------------
# Every head (and block) of some layers, one at a time


@dataclass(eq=False)
class HeadSweep:
    """The effect of zero/mean-ablating each head alone, and each layer's attention and MLP block alone:
    [layers, heads] and [layers, 2] arrays (NaN where not run; block columns in BLOCK_KINDS order)."""

    layers: list[int]  # the layers swept
    clean_token_id: int
    clean_piece: str
    delta_logprob: np.ndarray  # [num_layers, num_heads]: change of log p(clean answer), nats
    kl: np.ndarray  # [num_layers, num_heads]: KL(clean || ablated), nats
    top_after: np.ndarray  # [num_layers, num_heads] int64: the top token with that head off (-1: not run)
    mode: str
    seconds: float
    timed_out: bool = False  # cut short by the request's time limit: not cached
    block_delta_logprob: np.ndarray | None = None  # [num_layers, 2]: attn block, MLP block (None: not swept)
    block_kl: np.ndarray | None = None  # [num_layers, 2]
    block_top_after: np.ndarray | None = None  # [num_layers, 2] int64
    names: dict[int, str] = field(default_factory=dict, repr=False)  # token id -> piece, for every top token

    @property
    def done(self) -> list[int]:
        """The layers that were run (all of `layers` unless the time limit cut the sweep short)."""
        return [l for l in self.layers if not np.isnan(self.kl[l]).all()]

    def retained_bytes(self) -> int:
        blocks = [a for a in (self.block_delta_logprob, self.block_kl, self.block_top_after) if a is not None]
        return self.delta_logprob.nbytes + self.kl.nbytes + self.top_after.nbytes + sum(a.nbytes for a in blocks)


def head_sweep(session, text: str, layers: Sequence[int] | None = None, mode: str = "zero", chat: bool = False,
               blocks: bool = True, deadline: Deadline | None = None,
               progress: Callable[[float, str], None] | None = None, resume: HeadSweep | None = None) -> HeadSweep:
    """Ablate every head of `layers` (default: all) in turn, and (blocks=True) each layer's attention and MLP
    block: one pass per layer, one batch row per head and per block. Cached per (text, layers, mode, blocks).

    A sweep the time limit cut short (`timed_out`) is not cached; hand it back as `resume` and the next call
    runs only the layers it had not reached (a `resume` of another sweep is ignored)."""
    text, chat = _checked_text(text), bool(chat)
    f = session.facts
    layers = sorted({_layer(l, f.num_layers) for l in (range(f.num_layers) if layers is None else layers)})
    if not layers:
        raise InputError("interventions.no_layers", "Name at least one layer to sweep.")
    _check_mode(mode)
    blocks = bool(blocks)

    def compute() -> HeadSweep:
        deadline_ = deadline or Deadline()
        ids = _ids(session, text, chat)
        run = clean_run(session, text, chat)
        clean = torch.from_numpy(run.probs)
        means = run.means if mode == "mean" else {}
        top = int(clean.argmax())
        shape = (f.num_layers, f.num_heads)
        delta, kl = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
        top_after = np.full(shape, -1, np.int64)
        block_shape = (f.num_layers, len(BLOCK_KINDS))
        b_delta, b_kl = np.full(block_shape, np.nan, np.float32), np.full(block_shape, np.nan, np.float32)
        b_top = np.full(block_shape, -1, np.int64)
        done, earlier = set(), 0.0
        if _continues(resume, layers, mode, top, shape, blocks):
            delta, kl, top_after = resume.delta_logprob.copy(), resume.kl.copy(), resume.top_after.copy()
            if blocks:
                b_delta, b_kl, b_top = resume.block_delta_logprob.copy(), resume.block_kl.copy(), resume.block_top_after.copy()
            done, earlier = set(resume.done), resume.seconds
        started = time.perf_counter()
        timed_out = False
        for i, layer in enumerate(layers):
            if layer in done:
                continue
            if deadline_.expired:
                timed_out = True
                break
            rows = [Ablation(((layer, h),), (), mode) for h in range(f.num_heads)]
            if blocks:
                rows += [Ablation((), ((kind, layer),), mode) for kind in BLOCK_KINDS]
            batch = ids.expand(len(rows), -1)  # [rows, n]: row h ablates head h, the last two the blocks
            with session.lock, torch.inference_mode():
                after = _last_probs(session, batch, writers(rows[0], means, rows=rows)).cpu()  # [rows, V]
            change = _log_ratio(after[:, top], clean[top]).numpy()
            divergence = [_kl(clean, row) for row in after]
            best = after.argmax(-1).numpy()
            h = f.num_heads
            delta[layer], kl[layer], top_after[layer] = change[:h], divergence[:h], best[:h]
            if blocks:
                b_delta[layer], b_kl[layer], b_top[layer] = change[h:], divergence[h:], best[h:]
            if progress:
                progress((i + 1) / len(layers), f"layer {layer}: {len(rows)} runs, one component off in each")
        seen = sorted({top, *(int(i) for i in top_after[top_after >= 0]), *(int(i) for i in b_top[b_top >= 0])})
        return HeadSweep(layers, top, pieces(session, [top])[0], delta, kl, top_after, mode,
                         earlier + time.perf_counter() - started, timed_out,
                         *((b_delta, b_kl, b_top) if blocks else (None, None, None)),
                         names=dict(zip(seen, pieces(session, seen))))

    return session.analysis("head_sweep", (text, chat, tuple(layers), mode, blocks), compute)


def _continues(resume: HeadSweep | None, layers: list[int], mode: str, top: int, shape: tuple, blocks: bool) -> bool:
    """`resume` is an unfinished run of this very sweep (same layers, mode, answer and shape)."""
    return (resume is not None and resume.layers == layers and resume.mode == mode and resume.clean_token_id == top
            and resume.delta_logprob.shape == shape and (resume.block_delta_logprob is not None) == blocks)


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
    effect: np.ndarray  # [layers, positions]: share of the logit-difference gap restored (NaN: not run)
    clean_prob: np.ndarray  # [layers, positions]: p(clean answer) in the patched run
    top_ids: np.ndarray  # [layers, positions, k]: the patched run's top tokens
    top_probs: np.ndarray  # [layers, positions, k]
    logit_diff_clean: float
    logit_diff_corrupt: float
    seconds: float
    timed_out: bool = False
    clean_answer_prob: float = float("nan")  # p(clean answer) in the clean run
    corrupt_answer_prob: float = float("nan")  # p(clean answer) in the corrupted run
    names: dict[int, str] = field(default_factory=dict, repr=False)  # token id -> piece, for every top token

    @property
    def done(self) -> list[int]:
        """The positions that were run (all unless the time limit cut the sweep short)."""
        return [p for p in range(self.effect.shape[1]) if not np.isnan(self.effect[:, p]).all()]

    def retained_bytes(self) -> int:
        return self.effect.nbytes + self.clean_prob.nbytes + self.top_ids.nbytes + self.top_probs.nbytes


@dataclass(eq=False)
class PromptPair:
    """The two prompts of a patching run as tokens, and why they cannot be patched (`problem`; None: they can).
    Tokenizing only: no model pass."""

    clean_ids: list[int]
    corrupt_ids: list[int]
    clean_pieces: list[str]
    corrupt_pieces: list[str]
    problem: Message | None  # str() of it is the English sentence

    @property
    def differing(self) -> list[int]:
        """Positions (of the shorter prompt) where the two prompts have different tokens."""
        return [p for p, (a, b) in enumerate(zip(self.clean_ids, self.corrupt_ids)) if a != b]


def prompt_pair(session, clean_text: str, corrupt_text: str, chat: bool = False) -> PromptPair:
    """Tokenize both prompts and check that they can be patched: the same number of tokens (patching copies
    position by position), different from each other, within MAX_PATCH_TOKENS."""
    clean = tokenize(session, _clean_prompt(clean_text), bool(chat))
    corrupt = tokenize(session, _corrupted_prompt(corrupt_text), bool(chat))
    problem = _pair_problem(len(clean.ids), len(corrupt.ids), clean.ids == corrupt.ids)
    return PromptPair(clean.ids, corrupt.ids, clean.pieces, corrupt.pieces, problem)


def _pair_problem(n: int, m: int, same: bool) -> Message | None:
    """Why prompts of n (clean) and m (corrupted) tokens cannot be patched; None: they can."""
    if max(n, m) > MAX_PATCH_TOKENS and n >= m:
        return Message("interventions.pair_too_long_clean",
                       "The clean prompt is {tokens:,} tokens; patching takes at most {limit} tokens per prompt. "
                       "Shorten both and try again.", {"tokens": n, "limit": MAX_PATCH_TOKENS})
    if max(n, m) > MAX_PATCH_TOKENS:
        return Message("interventions.pair_too_long_corrupted",
                       "The corrupted prompt is {tokens:,} tokens; patching takes at most {limit} tokens per prompt. "
                       "Shorten both and try again.", {"tokens": m, "limit": MAX_PATCH_TOKENS})
    # Which prompt is shorter, and by one token or more, decides the sentence (each its own key).
    if n < m and m - n == 1:
        return Message("interventions.pair_counts_clean_one",
                       "The clean prompt is {n} tokens and the corrupted one {m}: patching copies position by "
                       "position, so they must have the same number of tokens. Make the clean prompt {k} token "
                       "longer or the corrupted one shorter: swap the changed word for one that splits into as many "
                       "tokens as the word it replaces (the Tokenizer tab shows the split), or add or remove a short "
                       "word.", {"n": n, "m": m, "k": m - n})
    if n < m:
        return Message("interventions.pair_counts_clean_many",
                       "The clean prompt is {n} tokens and the corrupted one {m}: patching copies position by "
                       "position, so they must have the same number of tokens. Make the clean prompt {k} tokens "
                       "longer or the corrupted one shorter: swap the changed word for one that splits into as many "
                       "tokens as the word it replaces (the Tokenizer tab shows the split), or add or remove a short "
                       "word.", {"n": n, "m": m, "k": m - n})
    if n > m and n - m == 1:
        return Message("interventions.pair_counts_corrupted_one",
                       "The clean prompt is {n} tokens and the corrupted one {m}: patching copies position by "
                       "position, so they must have the same number of tokens. Make the corrupted prompt {k} token "
                       "longer or the clean one shorter: swap the changed word for one that splits into as many "
                       "tokens as the word it replaces (the Tokenizer tab shows the split), or add or remove a short "
                       "word.", {"n": n, "m": m, "k": n - m})
    if n > m:
        return Message("interventions.pair_counts_corrupted_many",
                       "The clean prompt is {n} tokens and the corrupted one {m}: patching copies position by "
                       "position, so they must have the same number of tokens. Make the corrupted prompt {k} tokens "
                       "longer or the clean one shorter: swap the changed word for one that splits into as many "
                       "tokens as the word it replaces (the Tokenizer tab shows the split), or add or remove a short "
                       "word.", {"n": n, "m": m, "k": n - m})
    if same:
        return Message("interventions.pair_same",
                       "The two prompts are the same token for token; they must differ in one detail (a name, a "
                       "place) for patching to have something to restore.")
    return None


def _clean_prompt(text: str | None) -> str:
    """The clean prompt, checked like any text but named in the sentence (each box its own key)."""
    if text is None or not str(text).strip():
        raise InputError("interventions.empty_clean", "The clean prompt is empty: type something first.")
    if len(str(text)) > MAX_TEXT_CHARS:
        raise InputError("interventions.clean_too_long",
                         "The clean prompt has {chars:,} characters; the limit is {limit:,}. Shorten it and try again.",
                         chars=len(str(text)), limit=MAX_TEXT_CHARS)
    return _checked_text(text, "prompt")


def _corrupted_prompt(text: str | None) -> str:
    if text is None or not str(text).strip():
        raise InputError("interventions.empty_corrupted", "The corrupted prompt is empty: type something first.")
    if len(str(text)) > MAX_TEXT_CHARS:
        raise InputError("interventions.corrupted_too_long",
                         "The corrupted prompt has {chars:,} characters; the limit is {limit:,}. Shorten it and try "
                         "again.", chars=len(str(text)), limit=MAX_TEXT_CHARS)
    return _checked_text(text, "prompt")


def _pair(session, clean_text: str, corrupt_text: str, chat: bool,
          same_allowed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    pair = prompt_pair(session, clean_text, corrupt_text, chat)
    if pair.problem and not (same_allowed and pair.clean_ids == pair.corrupt_ids):
        raise InputError(pair.problem)
    device = session.device
    return torch.tensor([pair.clean_ids], device=device), torch.tensor([pair.corrupt_ids], device=device)


def _check_site(site: str, allowed=SITES) -> str:
    if site not in allowed:
        raise InputError("interventions.bad_site", "site must be one of {sites}; got {value}.",
                         sites=", ".join(allowed), value=_shown(site))
    return site


def patched_logits(session, clean_text: str, corrupt_text: str, site: str, layer: int,
                   positions: Sequence[int], chat: bool = False) -> torch.Tensor:
    """The corrupted run's last-position logits [V] with the clean run's `site` activation of `layer` put in at
    `positions` (all of them at once). For checks and the cell view."""
    _check_site(site, (*SITES, "resid_post"))
    clean_ids, corrupt_ids = _pair(session, clean_text, corrupt_text, chat, same_allowed=True)
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


def patch_sweep(session, clean_text: str, corrupt_text: str, site: str = "resid_pre", chat: bool = False,
                deadline: Deadline | None = None, progress: Callable[[float, str], None] | None = None,
                resume: PatchSweep | None = None) -> PatchSweep:
    """Patch the clean run's `site` into the corrupted run at every (layer, position), one cell at a time.

    One pass per position p with one batch row per layer: positions before p are the corrupted run's (a patch
    at p cannot reach back), so the pass starts from the corrupted run's KV cache of positions 0..p-1 and runs
    only positions p..n-1, row l patching layer l at p. That is layers x n(n+1)/2 token-rows in all instead of
    layers x n^2. Cached per (texts, site); a sweep the time limit cut short, handed back as `resume`, continues
    where it stopped."""
    clean_text, corrupt_text, chat = _clean_prompt(clean_text), _corrupted_prompt(corrupt_text), bool(chat)
    _check_site(site)

    def compute() -> PatchSweep:
        deadline_ = deadline or Deadline()
        f = session.facts
        model = session.model
        clean_ids, corrupt_ids = _pair(session, clean_text, corrupt_text, chat)
        n, layers = clean_ids.shape[1], f.num_layers
        names = [f"blocks.{l}.{_SITE_POINT[site]}" for l in range(layers)]
        started = time.perf_counter()
        with session.lock, torch.inference_mode():
            with hooks(session, read=names, dtype=None, device=session.device) as rec:
                clean_logits = model(input_ids=clean_ids, use_cache=False, **last_logits_only(model)).logits[0, -1].float()
            corrupt_cache = new_cache(session)  # the corrupted run's keys and values: every pass starts from them
            corrupt_logits = model(input_ids=corrupt_ids, past_key_values=corrupt_cache, use_cache=True,
                                   **last_logits_only(model)).logits[0, -1].float()
        a, b = int(clean_logits.argmax()), int(corrupt_logits.argmax())
        if a == b:
            raise InputError("interventions.same_answer",
                             "Both prompts make the model answer '{answer}': patching measures how much of the clean "
                             "answer comes back, so the answers must differ. Change the detail.",
                             answer=pieces(session, [a])[0])
        ld_clean = float(clean_logits[a] - clean_logits[b])
        ld_corrupt = float(corrupt_logits[a] - corrupt_logits[b])
        effect = np.full((layers, n), np.nan, np.float32)
        prob = np.full((layers, n), np.nan, np.float32)
        top_ids = np.zeros((layers, n, 5), np.int64)
        top_probs = np.zeros((layers, n, 5), np.float32)
        clean_acts = [rec[name][0] for name in names]  # each [n, d]
        clean_pieces, corrupt_pieces = pieces(session, clean_ids[0].tolist()), pieces(session, corrupt_ids[0].tolist())
        done, earlier = set(), 0.0
        if (resume is not None and resume.site == site and resume.clean_tokens == clean_pieces
                and resume.corrupt_tokens == corrupt_pieces and resume.effect.shape == effect.shape
                and (resume.clean_token_id, resume.corrupt_token_id) == (a, b)):
            effect, prob = resume.effect.copy(), resume.clean_prob.copy()
            top_ids, top_probs = resume.top_ids.copy(), resume.top_probs.copy()
            done, earlier = set(resume.done), resume.seconds
        timed_out = False
        for position in range(n):
            if position in done:
                continue
            if deadline_.expired:
                timed_out = True
                break

            def put(t, layer, position=position):  # t: [layers rows, n - position, d]; row `layer` patches
                t = t.clone()
                t[layer, 0] = clean_acts[layer][position]
                return t

            write = {name: (lambda t, layer=layer: put(t, layer)) for layer, name in enumerate(names)}
            batch = corrupt_ids[:, position:].expand(layers, -1)  # [layers, n - position]
            with session.lock, torch.inference_mode(), hooks(session, write=write):
                cache = prefix_cache(session, corrupt_cache, position, layers)  # positions 0..position-1
                logits = model(input_ids=batch, past_key_values=cache, use_cache=cache is not None,
                               **last_logits_only(model)).logits[:, -1].float()  # [layers, V]
            ld = (logits[:, a] - logits[:, b]).cpu().numpy()
            effect[:, position] = (ld - ld_corrupt) / (ld_clean - ld_corrupt)
            p = torch.softmax(logits, -1)
            prob[:, position] = p[:, a].cpu().numpy()
            values, ids = p.topk(5, -1)
            top_ids[:, position], top_probs[:, position] = ids.cpu().numpy(), values.cpu().numpy()
            if progress:
                progress((position + 1) / n, f"position {position + 1} of {n}: patched at each of {layers} layers")
        seen = sorted({a, b, *(int(i) for i in np.unique(top_ids[:, [p for p in range(n) if not np.isnan(effect[0, p])]]))})
        return PatchSweep(
            site=site, clean_tokens=clean_pieces, corrupt_tokens=corrupt_pieces,
            clean_token_id=a, corrupt_token_id=b, clean_piece=pieces(session, [a])[0], corrupt_piece=pieces(session, [b])[0],
            effect=effect, clean_prob=prob, top_ids=top_ids, top_probs=top_probs, logit_diff_clean=ld_clean,
            logit_diff_corrupt=ld_corrupt, seconds=earlier + time.perf_counter() - started, timed_out=timed_out,
            clean_answer_prob=float(torch.softmax(clean_logits, -1)[a]),
            corrupt_answer_prob=float(torch.softmax(corrupt_logits, -1)[a]), names=dict(zip(seen, pieces(session, seen))),
        )

    return session.analysis("patch_sweep", (clean_text, corrupt_text, chat, site), compute)
