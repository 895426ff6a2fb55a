"""Speculative decoding, watched from outside transformers' own assisted generation.

Decode is slow because every new token is one full forward pass that mostly reads the weights. A cheap
*drafter* guesses `k` tokens; the *target* model scores all of them in ONE pass (the verification pass); the
longest prefix it agrees with is kept, and at the first disagreement the target's own token replaces the draft
token (when all `k` are kept, the same pass gives one more token for free: the bonus token). Every step
therefore adds `accepted + 1` tokens for one target pass.

Nothing here re-implements the algorithm. `speculative_generate` calls `model.generate(...)` with the drafter's
own switch and observes the run through the candidate generator transformers builds for it:

    "prompt_lookup"     generate(prompt_lookup_num_tokens=k)  PromptLookupCandidateGenerator: n-gram matches in
                        the text so far (no model at all; shines when the answer repeats the prompt)
    "early_exit:<l>"    generate(assistant_early_exit=l)      EarlyExitCandidateGenerator: the target's first l
                        layers + its final norm and LM head (untrained for that: most drafts are rejected)
    <model id>          generate(assistant_model=...)         AssistedCandidateGenerator (same tokenizer), or with
                        tokenizer= / assistant_tokenizer= for a model with another tokenizer: transformers'
                        universal assisted decoding (AssistedCandidateGeneratorDifferentTokenizers when greedy,
                        UniversalSpeculativeDecodingGenerator when sampling)

`_assisted_decoding` asks the generator for candidates (`get_candidates`), runs the verification pass, picks the
accepted tokens and tells the generator how many matched (`update_candidate_strategy(input_ids, scores,
num_matches)`). Wrapping those two calls on the generator instance (for this one call: `_get_candidate_generator`
is wrapped on the model instance under the session lock) gives each step's draft, its accepted count, the
target's token and the processed logits of the verification pass. A forward pre-hook counts the passes of each
model. With sampling and a drafter that returns logits, transformers applies the rule of the speculative
sampling paper (`_speculative_sampling`): accept draft token x with probability min(1, p(x)/q(x)), else draw from
normalise(max(p - q, 0)); p and q of each step are read from the same logits (the verification pass's processed
scores and the drafter's candidate logits), so the view shows the numbers the rule used.

Greedy speculative decoding returns exactly the tokens of plain greedy decoding; with sampling, the output has
exactly the target's distribution (not the same tokens for a seed: the random numbers are used differently).
"""

from __future__ import annotations

import contextlib
import copy
import math
import secrets
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch

from .deadline import Deadline
from .errors import InputError
from .limits import (
    MAX_DRAFT_TOKENS,
    MAX_PROMPT_TOKENS,
    MAX_SEED,
    MAX_SPEC_COMPARE_DRAFTERS,
    MAX_SPEC_NEW_TOKENS,
    MAX_SPEC_SWEEP_NEW_TOKENS,
    MAX_SPEC_SWEEP_PASSES,
    REQUEST_SECONDS,
    SPEC_PRIVATE_DRAFTERS,
    SPEC_RULE_TOKENS,
)
from .model.session import get_session
from .model.vocab import eos_ids, pad_id, token_texts
from .sampling import SamplingParams, _whole
from .tokens import tokenize

PROMPT_LOOKUP = "prompt_lookup"
EARLY_EXIT = "early_exit"
# transformers' default n-gram size for prompt lookup (generation_config.max_matching_ngram_size or 2).
NGRAM_SIZE = 2
STOP_REASONS = {
    "eos": "the model chose its end-of-sequence token",
    "max_new_tokens": "max new tokens reached",
    "time_limit": f"the server's time limit of {REQUEST_SECONDS} s per request was reached",
    "pass_budget": f"the budget of {MAX_SPEC_SWEEP_PASSES:,} forward passes per request was reached",
}

# transformers samples with torch's global generator (torch.multinomial and torch.rand_like without a generator
# argument, in `_speculative_sampling` and in the drafter's own generate). A seeded run seeds that generator right
# before the call; this lock keeps any other seeded run (another model's session has another lock) from drawing
# in between, so a seed always gives the same tokens. `torch.random.fork_rng` puts the global state back after.
_GLOBAL_RNG = threading.Lock()


# ---------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Drafter:
    """What proposes the draft tokens. `spec` is the string the API takes."""

    spec: str  # "prompt_lookup" | "early_exit:<layers>" | a model id
    kind: str  # "prompt_lookup" | "early_exit" | "model" (same tokenizer) | "universal" (another tokenizer)
    label: str
    layers: int | None = None  # early exit: the first `layers` layers of the target
    model_id: str | None = None  # a draft model

    @property
    def has_logits(self) -> bool:
        """Whether the drafter gives probabilities q (then sampling uses the min(1, p/q) rule)."""
        return self.kind != PROMPT_LOOKUP


@dataclass
class RuleView:
    """The speculative sampling rule at the position where a step decided (the first rejected draft token, or the
    bonus position): the target's distribution p, the drafter's q and the residual max(p - q, 0) normalised,
    on the few tokens that matter (the most likely under p or q, the draft token, the token chosen)."""

    position: int  # within the step: 0 = the first draft token's position
    outcome: str  # "rejected" (the token was drawn from the residual) | "bonus" (all accepted: drawn from p)
    token_ids: list[int]
    pieces: list[str]
    p: list[float]
    q: list[float]
    residual: list[float]  # empty at a bonus position
    residual_mass: float  # sum(max(p - q, 0)) before normalising = the chance a draft from q is rejected here
    draft_token: int | None  # the rejected draft token (None at a bonus position)
    chosen_token: int  # the target's token at this position


@dataclass
class SpecStep:
    """One speculative step: the drafter's proposal, one verification pass of the target, what was kept."""

    index: int
    start: int  # position of the step's first token among the generated tokens
    proposed: list[int]  # the draft tokens (target vocabulary)
    accepted: int  # leading draft tokens kept: the `num_matches` transformers gave the candidate generator
    target_token: int  # the target's own token: replaces the first rejected draft token, or the bonus token
    proposed_pieces: list[str] = field(default_factory=list)
    target_piece: str = ""
    p_draft: list[float] = field(default_factory=list)  # the target's probability of each draft token
    q_draft: list[float] = field(default_factory=list)  # the drafter's (when it gives logits)
    accept_prob: list[float] = field(default_factory=list)  # min(1, p/q) per draft token (sampling with logits)
    rule: RuleView | None = None  # sampling with a drafter that gives logits
    drafter_passes: int = 0
    target_passes: int = 0
    draft_s: float = 0.0  # the drafter's proposal
    verify_s: float = 0.0  # the verification pass and the choice of tokens
    cut: bool = False  # transformers cut the step short (an end-of-sequence token or max new tokens)

    @property
    def tokens(self) -> list[int]:
        """The tokens this step added: the accepted drafts, then the target's token."""
        return self.proposed[: self.accepted] + [self.target_token]

    @property
    def bonus(self) -> bool:
        return bool(self.proposed) and self.accepted == len(self.proposed) and not self.cut

    def to_dict(self) -> dict:
        out = asdict(self)
        out["tokens"] = self.tokens
        out["bonus"] = self.bonus
        return out


@dataclass
class SpeculativeTrace:
    """A speculative run, step by step, and the plain decoding of the same tokens measured in the same call."""

    prompt: str
    chat: bool
    model_id: str
    drafter: Drafter
    generator: str  # the class transformers picked, e.g. "PromptLookupCandidateGenerator"
    num_draft_tokens: int
    max_new_tokens: int
    params: SamplingParams
    seed: int | None  # the seed used (sampling); None when greedy
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    text: str = ""
    steps: list[SpecStep] = field(default_factory=list)
    target_passes: int = 0
    drafter_passes: int = 0
    seconds: float = 0.0
    stop_reason: str = ""
    plain_token_ids: list[int] | None = None  # plain decoding: model.generate without a drafter
    plain_text: str | None = None
    plain_passes: int | None = None
    plain_seconds: float | None = None

    @property
    def sampling(self) -> bool:
        return not self.params.greedy

    @property
    def proposed(self) -> int:
        return sum(len(s.proposed) for s in self.steps)

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.steps)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted draft tokens / proposed draft tokens (None when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else None

    @property
    def tokens_per_pass(self) -> float:
        return len(self.token_ids) / self.target_passes if self.target_passes else 0.0

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds else 0.0

    @property
    def plain_tokens_per_s(self) -> float | None:
        return len(self.token_ids) / self.plain_seconds if self.plain_seconds else None

    @property
    def speedup(self) -> float | None:
        """Plain decoding time / speculative time, for the same number of tokens in the same call (> 1: faster)."""
        return self.plain_seconds / self.seconds if self.plain_seconds and self.seconds else None

    @property
    def same_as_plain(self) -> bool | None:
        """Greedy: whether the tokens equal plain greedy decoding's (they must). None when sampling."""
        if self.sampling or self.plain_token_ids is None:
            return None
        return self.plain_token_ids == self.token_ids

    @property
    def timed_out(self) -> bool:
        return self.stop_reason in ("time_limit", "pass_budget")

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt, "chat": self.chat, "model": self.model_id,
            "drafter": self.drafter.spec, "drafter_kind": self.drafter.kind, "drafter_label": self.drafter.label,
            "candidate_generator": self.generator, "num_draft_tokens": self.num_draft_tokens,
            "max_new_tokens": self.max_new_tokens, "params": {**self.params.to_dict(), "seed": self.seed},
            "sampling": self.sampling, "prompt_ids": self.prompt_ids, "token_ids": self.token_ids,
            "pieces": self.pieces, "text": self.text, "stop_reason": self.stop_reason,
            "steps": [s.to_dict() for s in self.steps],
            "target_passes": self.target_passes, "drafter_passes": self.drafter_passes,
            "proposed": self.proposed, "accepted": self.accepted, "acceptance_rate": self.acceptance_rate,
            "tokens_per_pass": self.tokens_per_pass, "seconds": self.seconds, "tokens_per_s": self.tokens_per_s,
            "plain_token_ids": self.plain_token_ids, "plain_text": self.plain_text,
            "plain_passes": self.plain_passes, "plain_seconds": self.plain_seconds,
            "plain_tokens_per_s": self.plain_tokens_per_s, "speedup": self.speedup,
            "same_as_plain": self.same_as_plain,
        }


# ---------------------------------------------------------------------------------------------------
# Inputs


def _same_vocabulary(a, b) -> bool:
    """Whether two tokenizers map the same strings to the same ids (transformers itself only compares sizes)."""
    if a is b:
        return True
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


def resolve_drafter(session, drafter: str) -> Drafter:
    """The drafter named by `drafter`, checked against the target; a model drafter is loaded (shared session)."""
    spec = (drafter or "").strip()
    if not spec:
        raise InputError("speculative.no_drafter", "Name a drafter: 'prompt_lookup', 'early_exit:<layers>' or a model id.")
    if spec == PROMPT_LOOKUP:
        return Drafter(spec, PROMPT_LOOKUP, f"prompt lookup ({NGRAM_SIZE}-gram matches in the text so far)")
    if spec.startswith(EARLY_EXIT):
        layers_text = spec[len(EARLY_EXIT):].lstrip(":").strip()
        total = session.facts.num_layers
        if not layers_text.isdigit() or not 1 <= int(layers_text) < total:
            raise InputError("speculative.early_exit_layers",
                             "Early exit needs a number of layers between 1 and {high} (the model has {total}), "
                             "e.g. 'early_exit:{example}'.", high=total - 1, total=total, example=max(1, total // 4))
        layers = int(layers_text)
        return Drafter(f"{EARLY_EXIT}:{layers}", EARLY_EXIT, f"early exit: the first {layers} of {total} layers + "
                       "the LM head", layers=layers)
    drafter_session = get_session(spec)
    same = _same_vocabulary(session.tokenizer, drafter_session.tokenizer)
    if not same and session.facts.vocab_size == drafter_session.facts.vocab_size:
        # generate() would take equal sizes for one tokenizer and feed the drafter's ids to the target as they are.
        raise InputError("speculative.other_vocabulary",
                         "{drafter} has a vocabulary of the same size as {model} but other tokens; transformers would "
                         "mix up their ids. Pick another drafter.", drafter=spec, model=session.model_id)
    kind = "model" if same else "universal"
    how = "same tokenizer" if same else "another tokenizer: universal assisted decoding"
    name = drafter_session.label + (" (the target itself)" if drafter_session is session else "")
    return Drafter(drafter_session.model_id, kind, f"{name}, {how}", model_id=drafter_session.model_id)


def check_draft_tokens(num_draft_tokens) -> int:
    return _whole("num_draft_tokens", num_draft_tokens, 1, MAX_DRAFT_TOKENS)


def _check_params(params: SamplingParams | None) -> SamplingParams:
    params = params if params is not None else SamplingParams(temperature=0.0)
    if not isinstance(params, SamplingParams):
        raise TypeError("params must be a SamplingParams")
    if params.presence_penalty or params.frequency_penalty:
        raise InputError("speculative.no_penalties",
                         "Presence and frequency penalties are not part of transformers' generate(), which runs "
                         "speculative decoding here; set them to 0.")
    return params


def _prompt_ids(session, prompt: str, chat: bool) -> list[int]:
    ids = list(tokenize(session, prompt, chat).ids)
    if len(ids) > MAX_PROMPT_TOKENS:
        raise InputError("speculative.prompt_too_long",
                         "The prompt is {tokens:,} tokens; the limit is {limit:,}. Shorten it and try again.",
                         tokens=len(ids), limit=MAX_PROMPT_TOKENS)
    return ids


def _check_length(session, prompt_ids: Sequence[int], max_new_tokens, cap: int) -> int:
    max_new = _whole("max_new_tokens", max_new_tokens, 1, cap)
    context = session.facts.context_length or 0
    if context and len(prompt_ids) + max_new > context:
        raise InputError("speculative.beyond_context",
                         "The prompt ({tokens:,} tokens) plus {new} new tokens exceeds the model's context length of "
                         "{context:,} tokens.", tokens=len(prompt_ids), new=max_new, context=context)
    return max_new


def _pick_seed(params: SamplingParams) -> int | None:
    if params.greedy:
        return None
    return params.seed if params.seed is not None else secrets.randbelow(MAX_SEED + 1)


def _sampling_kwargs(session, params: SamplingParams) -> dict:
    """generate() settings for `params`, every one passed explicitly: generate() applies top_k=50 when top_k is not
    passed, and temperature 0 (greedy in this app) is refused when sampling, so it maps to do_sample=False."""
    kwargs = dict(pad_token_id=pad_id(session), repetition_penalty=params.repetition_penalty)
    if params.greedy:
        return dict(kwargs, do_sample=False)
    return dict(kwargs, do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                min_p=params.min_p or None)


# ---------------------------------------------------------------------------------------------------
# The drafter's models and settings


# A drafter with another tokenizer, when sampling, gets its LM head pruned and its input embedding wrapped IN PLACE
# by transformers (AssistantToTargetTranslator, cached per tokenizer pair): that must never happen to a shared
# session's model. It runs on a private copy of the drafter (and of both tokenizers, the translator cache's keys),
# kept for the next run; one copy at a time.
_private: dict[tuple[str, str], tuple] = {}
_private_lock = threading.Lock()


def _private_drafter(target, drafter_session) -> tuple:
    """(model, target tokenizer, drafter tokenizer): private copies for universal speculative sampling."""
    key = (target.model_id, drafter_session.model_id)
    with _private_lock:
        if key not in _private:
            while len(_private) >= SPEC_PRIVATE_DRAFTERS:  # a copy holds the drafter's weights again
                _private.pop(next(iter(_private)))
            from transformers.generation.candidate_generator import AssistantVocabTranslatorCache

            with drafter_session.lock:
                model = copy.deepcopy(drafter_session.model).eval()
            target_tokenizer, drafter_tokenizer = copy.deepcopy(target.tokenizer), copy.deepcopy(drafter_session.tokenizer)
            # The pruned LM head keeps the drafter's tokens in the order its get_vocab() lists them, and a fast
            # tokenizer lists them in a hash order that changes from process to process: in id order, a seed gives
            # the same tokens in every process, not only within one.
            vocab = dict(sorted(drafter_tokenizer.get_vocab().items(), key=lambda item: item[1]))
            drafter_tokenizer.get_vocab = lambda: dict(vocab)
            # The translator prunes the LM head when it is made, and the new nn.Linear's initialisation draws from
            # torch's global generator: made here, as generate() would make it (same cache, same arguments), it
            # cannot shift the random numbers of the first seeded run.
            with torch.random.fork_rng(devices=[]):
                AssistantVocabTranslatorCache.get_translator(target_tokenizer, drafter_tokenizer, target.facts.vocab_size,
                                                             assistant_model=model, assistant_prune_lm_head=True)
            _private[key] = (model, target_tokenizer, drafter_tokenizer)
        return _private[key]


@contextlib.contextmanager
def _draft_settings(model, k: int) -> Iterator[None]:
    """The drafter's generation settings for one call: exactly k draft tokens per step (num_assistant_tokens with
    the "constant" schedule, no confidence stop). transformers reads them from the drafter model's own
    generation_config (for early exit: the target's), so they are set there under the lock and put back after."""
    config = model.generation_config
    names = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
    saved = {name: getattr(config, name, None) for name in names}
    config.num_assistant_tokens, config.num_assistant_tokens_schedule = k, "constant"
    config.assistant_confidence_threshold = 0.0  # 0 switches the drafter's early stop off
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(config, name, value)


def _fork_rng(session):
    """Fork torch's global generator for the call (CPU, and the session's GPU if any) and restore it after."""
    device = torch.device(session.device)
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


@contextlib.contextmanager
def _locks(*sessions) -> Iterator[None]:
    """Hold several sessions' locks, always in the same order (by model id), so two runs never deadlock."""
    with contextlib.ExitStack() as stack:
        for s in sorted({id(s): s for s in sessions}.values(), key=lambda s: s.model_id):
            stack.enter_context(s.lock)
        yield


# ---------------------------------------------------------------------------------------------------
# Watching a run


class _Budget:
    """A stopping criterion checked after every step (between passes): the request's deadline, and a cap on the
    forward passes counted so far. generate() cannot be stopped inside a pass."""

    def __init__(self, deadline: Deadline, counts: "_Watch", max_passes: int | None):
        self.deadline, self.counts, self.max_passes = deadline, counts, max_passes
        self.reason: str | None = None

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        if self.deadline.expired:
            self.reason = "time_limit"
        elif self.max_passes is not None and self.counts.passes_total() >= self.max_passes:
            self.reason = "pass_budget"
        return torch.full((input_ids.shape[0],), self.reason is not None, dtype=torch.bool, device=input_ids.device)


class _Watch:
    """Records the steps of one `generate()` call from the candidate generator's two calls, and counts passes."""

    def __init__(self, target_model, drafter_model, prompt_len: int, keep_rule: bool, passes_before: int = 0):
        self.target_model, self.drafter_model = target_model, drafter_model
        self.prompt_len = prompt_len
        self.keep_rule = keep_rule  # sampling with a drafter that gives logits: record p and q
        self.passes_before = passes_before  # passes of earlier runs in the same request (the budget counts all)
        self.steps: list[SpecStep] = []
        self.generator = ""
        self.drafting = False
        self.target_passes = 0
        self.drafter_passes = 0
        self._pending: tuple | None = None

    def passes_total(self) -> int:
        return self.passes_before + self.target_passes + self.drafter_passes

    # forward pre-hook on the target (and on a separate drafter): a call while drafting is a drafter pass
    def _count(self, module, args, kwargs):
        if self.drafting:
            self.drafter_passes += 1
        else:
            self.target_passes += 1

    def wrap(self, make_generator):
        """`model._get_candidate_generator`, returning the generator with its two calls observed."""

        def observed(*args, **kwargs):
            generator = make_generator(*args, **kwargs)
            self.generator = type(generator).__name__
            get_candidates, update = generator.get_candidates, generator.update_candidate_strategy

            def watched_get_candidates(input_ids, **kw):
                start, before = time.perf_counter(), self.drafter_passes
                self.drafting = True
                try:
                    candidate_ids, candidate_logits = get_candidates(input_ids, **kw)
                finally:
                    self.drafting = False
                cur_len = input_ids.shape[1]
                proposed = candidate_ids[0, cur_len:].tolist()  # [candidate_length]
                self._pending = (cur_len, proposed, candidate_logits, self.drafter_passes - before,
                                 time.perf_counter() - start, time.perf_counter(), self.target_passes)
                return candidate_ids, candidate_logits

            def watched_update(input_ids, scores, num_matches):
                self._record(input_ids, scores, int(num_matches))
                return update(input_ids, scores, num_matches)

            generator.get_candidates = watched_get_candidates
            generator.update_candidate_strategy = watched_update
            return generator

        return observed

    def _record(self, input_ids: torch.Tensor, scores: torch.Tensor, num_matches: int) -> None:
        cur_len, proposed, candidate_logits, drafter_passes, draft_s, drafted_at, target_before = self._pending
        new = input_ids[0, cur_len:].tolist()  # the tokens this step added: num_matches + 1
        step = SpecStep(index=len(self.steps), start=cur_len - self.prompt_len, proposed=proposed,
                        accepted=num_matches, target_token=new[-1], drafter_passes=drafter_passes,
                        target_passes=self.target_passes - target_before, draft_s=draft_s,
                        verify_s=time.perf_counter() - drafted_at)
        # transformers cuts a step at an end-of-sequence token or at max new tokens; the last token kept may then
        # be an accepted draft token rather than one the target chose in place of a draft.
        step.cut = num_matches < len(proposed) and new[-1] == proposed[num_matches]
        if proposed:
            # scores: [1, candidate_length + 1, V], the verification pass's logits after the logits processors
            # (what the target samples from, or takes the argmax of).
            logp = scores[0, : len(proposed)].float().log_softmax(-1)  # [L, V]
            draft = torch.tensor(proposed, device=logp.device)  # [L]
            rows = torch.arange(len(proposed), device=logp.device)
            step.p_draft = logp[rows, draft].exp().tolist()
            if candidate_logits is not None:
                logq = candidate_logits[0].float().log_softmax(-1)  # [L, V]
                step.q_draft = logq[rows, draft.to(logq.device)].exp().tolist()
                if self.keep_rule:
                    step.accept_prob = [min(1.0, p / q) if q > 0 else 1.0 for p, q in zip(step.p_draft, step.q_draft)]
                    step.rule = _rule_view(scores[0], candidate_logits[0], proposed, num_matches, new[-1], step.cut)
        self.steps.append(step)

    @contextlib.contextmanager
    def attached(self) -> Iterator["_Watch"]:
        models = [self.target_model] + ([self.drafter_model] if self.drafter_model is not self.target_model else [])
        handles = [m.register_forward_pre_hook(self._count, with_kwargs=True) for m in models]
        # An instance attribute shadows the class's method for this call only (the session lock is held).
        self.target_model._get_candidate_generator = self.wrap(self.target_model._get_candidate_generator)
        try:
            yield self
        finally:
            del self.target_model._get_candidate_generator
            for handle in handles:
                handle.remove()


def _rule_view(scores: torch.Tensor, candidate_logits: torch.Tensor, proposed: list[int], n: int, chosen: int,
               cut: bool) -> RuleView | None:
    """p, q and the residual at the position where the step decided (n = accepted draft tokens)."""
    if cut:
        return None
    p = scores[n].float().softmax(-1)  # [V] the target's distribution at the decision position
    rejected = n < len(proposed)
    q = candidate_logits[min(n, len(proposed) - 1)].float().softmax(-1).to(p.device) if rejected else None  # [V]
    residual = None
    mass = 0.0
    if rejected:
        residual = (p - q).clamp(min=0)  # [V] max(p - q, 0)
        mass = float(residual.sum())
        residual = residual / mass if mass > 0 else residual
    half = SPEC_RULE_TOKENS // 2
    wanted = torch.topk(p, half).indices.tolist()
    if q is not None:
        wanted += torch.topk(q, half).indices.tolist()
    wanted += ([proposed[n]] if rejected else []) + [chosen]
    ids = list(dict.fromkeys(wanted))
    ids.sort(key=lambda i: -float(p[i]))
    index = torch.tensor(ids, device=p.device)
    return RuleView(
        position=n, outcome="rejected" if rejected else "bonus", token_ids=ids, pieces=[],
        p=p[index].tolist(), q=q[index].tolist() if q is not None else [],
        residual=residual[index].tolist() if residual is not None else [], residual_mass=mass,
        draft_token=proposed[n] if rejected else None, chosen_token=chosen)


def _name_tokens(session, trace: SpeculativeTrace) -> None:
    """Readable pieces for everything the views show (after the run: nothing of this is timed)."""
    ids = list(trace.token_ids)
    for step in trace.steps:
        ids += step.proposed + [step.target_token] + (step.rule.token_ids if step.rule else [])
    unique = list(dict.fromkeys(ids))
    piece_of = dict(zip(unique, token_texts(session, unique)[0]))
    trace.pieces = [piece_of[i] for i in trace.token_ids]
    for step in trace.steps:
        step.proposed_pieces = [piece_of[i] for i in step.proposed]
        step.target_piece = piece_of[step.target_token]
        if step.rule:
            step.rule.pieces = [piece_of[i] for i in step.rule.token_ids]


# ---------------------------------------------------------------------------------------------------
# Runs


def _generate_kwargs(session, drafter: Drafter, k: int, sampling: bool) -> tuple[dict, object, list]:
    """(generate() kwargs selecting the drafter, the drafter's model, the sessions whose locks the run holds)."""
    target = session.model
    if drafter.kind == PROMPT_LOOKUP:
        return dict(prompt_lookup_num_tokens=k), target, [session]
    if drafter.kind == EARLY_EXIT:
        return dict(assistant_early_exit=drafter.layers), target, [session]
    drafter_session = get_session(drafter.model_id)
    if drafter.kind == "model":
        return dict(assistant_model=drafter_session.model), drafter_session.model, [session, drafter_session]
    if sampling:  # UniversalSpeculativeDecodingGenerator changes its drafter: a private copy
        model, target_tokenizer, drafter_tokenizer = _private_drafter(session, drafter_session)
        return (dict(assistant_model=model, tokenizer=target_tokenizer, assistant_tokenizer=drafter_tokenizer), model,
                [session, drafter_session])
    return (dict(assistant_model=drafter_session.model, tokenizer=session.tokenizer,
                 assistant_tokenizer=drafter_session.tokenizer), drafter_session.model, [session, drafter_session])


def _speculate(session, prompt: str, chat: bool, prompt_ids: list[int], drafter: Drafter, k: int, max_new: int,
               params: SamplingParams, seed: int | None, deadline: Deadline, max_passes: int | None = None,
               passes_before: int = 0) -> SpeculativeTrace:
    """One speculative generate() call, observed."""
    from transformers import StoppingCriteriaList

    sampling = not params.greedy
    kwargs, drafter_model, sessions = _generate_kwargs(session, drafter, k, sampling)
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=session.device)  # [1, n]
    watch = _Watch(session.model, drafter_model, len(prompt_ids), keep_rule=sampling and drafter.has_logits,
                   passes_before=passes_before)
    budget = _Budget(deadline, watch, max_passes)
    settings = _draft_settings(drafter_model, k) if drafter.kind != PROMPT_LOOKUP else contextlib.nullcontext()
    rng = _GLOBAL_RNG if sampling else contextlib.nullcontext()
    with rng, _locks(*sessions), settings, watch.attached(), torch.inference_mode(), _fork_rng(session):
        if seed is not None:
            torch.manual_seed(seed)
        start = time.perf_counter()
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                                     stopping_criteria=StoppingCriteriaList([budget]),
                                     **_sampling_kwargs(session, params), **kwargs)
        seconds = time.perf_counter() - start
    tokens = out[0, len(prompt_ids):].tolist()
    trace = SpeculativeTrace(prompt=prompt, chat=chat, model_id=session.model_id, drafter=drafter,
                             generator=watch.generator, num_draft_tokens=k, max_new_tokens=max_new, params=params,
                             seed=seed, prompt_ids=list(prompt_ids), token_ids=tokens, steps=watch.steps,
                             target_passes=watch.target_passes, drafter_passes=watch.drafter_passes, seconds=seconds)
    trace.text = session.tokenizer.decode(tokens, skip_special_tokens=True)
    if budget.reason:
        trace.stop_reason = budget.reason
    elif tokens and tokens[-1] in set(eos_ids(session)):
        trace.stop_reason = "eos"
    else:
        trace.stop_reason = "max_new_tokens"
    _name_tokens(session, trace)
    return trace


def plain_decode(session, prompt_ids: Sequence[int], num_tokens: int, params: SamplingParams,
                 seed: int | None) -> tuple[list[int], float, int]:
    """Plain decoding with transformers (no drafter): (tokens, seconds, forward passes). Greedy stops where greedy
    stops (the same tokens as a correct speculative run); sampling makes exactly `num_tokens` tokens, so both
    runs do the same work."""
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=session.device)  # [1, n]
    passes = [0]
    extra = {} if params.greedy else dict(min_new_tokens=num_tokens)
    rng = _GLOBAL_RNG if seed is not None else contextlib.nullcontext()
    with rng, session.lock, torch.inference_mode(), _fork_rng(session):
        handle = session.model.register_forward_pre_hook(lambda *a: passes.__setitem__(0, passes[0] + 1))
        try:
            if seed is not None:
                torch.manual_seed(seed)
            start = time.perf_counter()
            out = session.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=num_tokens,
                                         **_sampling_kwargs(session, params), **extra)
            seconds = time.perf_counter() - start
        finally:
            handle.remove()
    return out[0, ids.shape[1]:].tolist(), seconds, passes[0]


def _with_plain(session, trace: SpeculativeTrace) -> SpeculativeTrace:
    n = max(1, len(trace.token_ids))
    tokens, seconds, passes = plain_decode(session, trace.prompt_ids, n, trace.params, trace.seed)
    trace.plain_token_ids, trace.plain_seconds, trace.plain_passes = tokens, seconds, passes
    trace.plain_text = session.tokenizer.decode(tokens, skip_special_tokens=True)
    return trace


def speculative_generate(session, prompt: str, drafter: str = PROMPT_LOOKUP, num_draft_tokens: int = 4,
                         max_new_tokens: int = 64, params: SamplingParams | None = None, chat: bool = True, *,
                         measure_plain: bool = True, deadline: Deadline | None = None) -> SpeculativeTrace:
    """Speculative decoding with transformers' assisted generation, every step recorded.

    drafter: "prompt_lookup", "early_exit:<layers>" or a model id (same tokenizer: assisted decoding; another
    tokenizer: universal assisted decoding). num_draft_tokens: 1..8 draft tokens per step. params: temperature 0
    is greedy (the default); presence/frequency penalties are refused (generate() has none). With
    measure_plain the same number of tokens is then decoded plainly in the same call (`plain_seconds`,
    `plain_token_ids`); greedy runs must give identical tokens (`same_as_plain`).

        t = speculative_generate(s, "Repeat: the cat sat on the mat.", "prompt_lookup", 4, 32)
        t.token_ids, t.text, t.steps[0].proposed, t.steps[0].accepted, t.target_passes, t.speedup
    """
    params = _check_params(params)
    k = check_draft_tokens(num_draft_tokens)
    d = resolve_drafter(session, drafter)
    ids = _prompt_ids(session, prompt, chat)
    max_new = _check_length(session, ids, max_new_tokens, MAX_SPEC_NEW_TOKENS)
    trace = _speculate(session, prompt, bool(chat), ids, d, k, max_new, params, _pick_seed(params),
                       deadline or Deadline())
    return _with_plain(session, trace) if measure_plain else trace


# ---------------------------------------------------------------------------------------------------
# Sweeps: the number of draft tokens, and the drafters side by side


@dataclass
class SweepPoint:
    num_draft_tokens: int
    seconds: float
    tokens: int
    target_passes: int
    drafter_passes: int
    proposed: int
    accepted: int
    same_as_plain: bool | None
    speedup: float | None = None  # plain decoding's time per token (median of the request) / this run's

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None

    def to_dict(self) -> dict:
        return {**asdict(self), "acceptance_rate": self.acceptance_rate}


class _PlainReference:
    """Plain decoding of the prompt, timed several times in one request (before, between and after the
    speculative runs, so drift in the machine's load hits both sides); the median time per token is the
    reference. Greedy: plain decoding's tokens, which every speculative run must reproduce. Sampling: exactly
    max_new tokens (end-of-sequence blocked), the same work per token."""

    def __init__(self, session, ids: list[int], max_new: int, params: SamplingParams, seed: int | None):
        self.args = (session, ids, max_new, params, seed)
        self.seconds: list[float] = []
        self.token_ids: list[int] = []
        self.passes = 0

    def measure(self) -> None:
        self.token_ids, seconds, passes = plain_decode(*self.args)
        self.seconds.append(seconds)
        self.passes += passes

    @property
    def per_token(self) -> float | None:
        return statistics.median(self.seconds) / len(self.token_ids) if self.seconds and self.token_ids else None

    def speedup(self, seconds: float, tokens: int) -> float | None:
        per_token = self.per_token
        return per_token / (seconds / tokens) if per_token and seconds and tokens else None


@dataclass
class DraftSweep:
    """Speculative decoding of one prompt with k = 1..8 draft tokens, against plain decoding timed in between."""

    prompt: str
    model_id: str
    drafter: Drafter
    params: SamplingParams
    seed: int | None
    max_new_tokens: int
    points: list[SweepPoint] = field(default_factory=list)
    plain_seconds: list[float] = field(default_factory=list)  # each plain run (before, in the middle, after)
    plain_tokens: int = 0
    stop_reason: str = "done"  # or "time_limit" / "pass_budget": the points measured so far

    @property
    def plain_median(self) -> float | None:
        return statistics.median(self.plain_seconds) if self.plain_seconds else None

    @property
    def best(self) -> SweepPoint | None:
        scored = [p for p in self.points if p.speedup is not None]
        return max(scored, key=lambda p: p.speedup) if scored else None

    @property
    def timed_out(self) -> bool:
        return self.stop_reason != "done"

    def to_dict(self) -> dict:
        best = self.best
        return {"prompt": self.prompt, "model": self.model_id, "drafter": self.drafter.spec,
                "drafter_label": self.drafter.label, "params": {**self.params.to_dict(), "seed": self.seed},
                "max_new_tokens": self.max_new_tokens, "points": [p.to_dict() for p in self.points],
                "plain_seconds": self.plain_seconds, "plain_median_s": self.plain_median,
                "plain_tokens": self.plain_tokens, "best_num_draft_tokens": best.num_draft_tokens if best else None,
                "best_speedup": best.speedup if best else None, "stop_reason": self.stop_reason}


def _sweep_inputs(session, prompt, params, chat, max_new_tokens):
    params = _check_params(params)
    ids = _prompt_ids(session, prompt, chat)
    max_new = _check_length(session, ids, max_new_tokens, MAX_SPEC_SWEEP_NEW_TOKENS)
    return params, ids, max_new, _pick_seed(params)


def _stopped(deadline: Deadline, passes: int) -> str | None:
    if deadline.expired:
        return "time_limit"
    return "pass_budget" if passes >= MAX_SPEC_SWEEP_PASSES else None


def sweep_draft_tokens(session, prompt: str, drafter: str = PROMPT_LOOKUP, max_new_tokens: int = 32,
                       params: SamplingParams | None = None, chat: bool = True,
                       ks: Sequence[int] = tuple(range(1, MAX_DRAFT_TOKENS + 1)),
                       deadline: Deadline | None = None) -> DraftSweep:
    """Speedup and acceptance rate for each number of draft tokens in `ks`, on one prompt.

    Plain decoding is timed before the first k, in the middle and after the last (see _PlainReference). The
    request's deadline and a cap on all forward passes (MAX_SPEC_SWEEP_PASSES) are checked between passes; a
    sweep cut short keeps the points it finished."""
    params, ids, max_new, seed = _sweep_inputs(session, prompt, params, chat, max_new_tokens)
    ks = [check_draft_tokens(k) for k in ks]
    d = resolve_drafter(session, drafter)
    deadline = deadline or Deadline()
    sweep = DraftSweep(prompt, session.model_id, d, params, seed, max_new)
    plain = _PlainReference(session, ids, max_new, params, seed)
    plain.measure()
    spec_passes = 0
    for i, k in enumerate(ks):
        if i == len(ks) // 2 and not deadline.expired:
            plain.measure()
        passes = plain.passes + spec_passes
        if reason := _stopped(deadline, passes):
            sweep.stop_reason = reason
            break
        t = _speculate(session, prompt, bool(chat), ids, d, k, max_new, params, seed, deadline,
                       max_passes=MAX_SPEC_SWEEP_PASSES, passes_before=passes)
        spec_passes += t.target_passes + t.drafter_passes
        if t.timed_out:
            sweep.stop_reason = t.stop_reason
            break
        sweep.points.append(SweepPoint(k, t.seconds, len(t.token_ids), t.target_passes, t.drafter_passes, t.proposed,
                                       t.accepted, t.token_ids == plain.token_ids if params.greedy else None))
    if sweep.points and not deadline.expired:
        plain.measure()
    for point in sweep.points:
        point.speedup = plain.speedup(point.seconds, point.tokens)
    sweep.plain_seconds, sweep.plain_tokens = plain.seconds, len(plain.token_ids)
    return sweep


@dataclass
class DrafterComparison:
    """Several drafters on one prompt with the same k, against plain decoding timed before and after."""

    prompt: str
    model_id: str
    num_draft_tokens: int
    params: SamplingParams
    seed: int | None
    runs: list[SpeculativeTrace] = field(default_factory=list)
    plain_seconds: list[float] = field(default_factory=list)
    plain_tokens: int = 0
    stop_reason: str = "done"

    @property
    def timed_out(self) -> bool:
        return self.stop_reason != "done"

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "model": self.model_id, "num_draft_tokens": self.num_draft_tokens,
                "params": {**self.params.to_dict(), "seed": self.seed}, "plain_seconds": self.plain_seconds,
                "plain_tokens": self.plain_tokens, "stop_reason": self.stop_reason,
                "runs": [{k: v for k, v in t.to_dict().items() if k != "steps"} for t in self.runs]}


def compare_drafters(session, prompt: str, drafters: Sequence[str], num_draft_tokens: int = 4,
                     max_new_tokens: int = 32, params: SamplingParams | None = None, chat: bool = True,
                     deadline: Deadline | None = None) -> DrafterComparison:
    """Each drafter on the same prompt and settings: acceptance rate, passes, time, and speedup against plain
    decoding timed before and after (each run's `plain_seconds` is that median time per token times its tokens:
    the same tokens as plain decoding when greedy)."""
    params, ids, max_new, seed = _sweep_inputs(session, prompt, params, chat, max_new_tokens)
    k = check_draft_tokens(num_draft_tokens)
    specs = list(dict.fromkeys(d.strip() for d in drafters if d and d.strip()))
    if not 1 <= len(specs) <= MAX_SPEC_COMPARE_DRAFTERS:
        raise InputError("speculative.compare_count", "Compare between 1 and {limit} drafters; got {count}.",
                         limit=MAX_SPEC_COMPARE_DRAFTERS, count=len(specs))
    resolved = [resolve_drafter(session, d) for d in specs]
    deadline = deadline or Deadline()
    cmp = DrafterComparison(prompt, session.model_id, k, params, seed)
    plain = _PlainReference(session, ids, max_new, params, seed)
    plain.measure()
    passes = plain.passes
    for d in resolved:
        if reason := _stopped(deadline, passes):
            cmp.stop_reason = reason
            break
        t = _speculate(session, prompt, bool(chat), ids, d, k, max_new, params, seed, deadline,
                       max_passes=MAX_SPEC_SWEEP_PASSES, passes_before=passes)
        passes += t.target_passes + t.drafter_passes
        if t.timed_out:
            cmp.stop_reason = t.stop_reason
            break
        cmp.runs.append(t)
    if cmp.runs and not deadline.expired:
        plain.measure()
    for t in cmp.runs:
        t.plain_token_ids, t.plain_passes = plain.token_ids, len(plain.token_ids)
        t.plain_text = session.tokenizer.decode(plain.token_ids, skip_special_tokens=True)
        t.plain_seconds = plain.per_token * len(t.token_ids) if plain.per_token else None
    cmp.plain_seconds, cmp.plain_tokens = plain.seconds, len(plain.token_ids)
    return cmp


# ---------------------------------------------------------------------------------------------------
# The sampling check: the first token's distribution


def first_token_distribution(session, prompt: str, params: SamplingParams, chat: bool = True) -> dict[int, float]:
    """The target's own distribution of the first new token under `params` (transformers' logits processors), as
    {token id: probability} for tokens with probability > 0: what speculative sampling must reproduce."""
    params = _check_params(params)
    ids = torch.tensor([_prompt_ids(session, prompt, chat)], dtype=torch.long, device=session.device)
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, output_scores=True,
                                     return_dict_in_generate=True, **_sampling_kwargs(session, params))
    probs = out.scores[0][0].float().softmax(-1)  # [V] after the processors: what the first draw uses
    nonzero = probs.nonzero().flatten().tolist()
    return {i: float(probs[i]) for i in nonzero}


def chi_square(counts: dict[int, int], probs: dict[int, float], min_expected: float = 5.0) -> tuple[float, int, float]:
    """Pearson's chi-square of observed counts against probabilities: (statistic, degrees of freedom, p-value).
    Tokens expected fewer than `min_expected` times are pooled into one cell, as the test requires; a token
    observed outside `probs` lands in the pooled cell too (its expected count there is the pool's)."""
    n = sum(counts.values())
    cells, pool_obs, pool_exp = [], 0, 0.0
    for token, p in probs.items():
        expected = n * p
        if expected >= min_expected:
            cells.append((counts.get(token, 0), expected))
        else:
            pool_obs += counts.get(token, 0)
            pool_exp += expected
    pool_obs += sum(c for t, c in counts.items() if t not in probs)
    if pool_exp > 0 or pool_obs:
        cells.append((pool_obs, max(pool_exp, 1e-12)))
    stat = sum((o - e) ** 2 / e for o, e in cells)
    dof = max(1, len(cells) - 1)
    # Upper tail of the chi-square distribution: the regularised upper incomplete gamma Q(dof/2, x/2).
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                            torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, dof, p_value if math.isfinite(p_value) else 0.0
