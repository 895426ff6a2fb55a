"""A generation run driven by hand: draw one token, go back to an earlier step, take another candidate there
(what-if), or run on to the end with the KV cache.

    run = SamplingRun.start(session, "Tell me a joke", chat=True, seed=42)
    settings = Settings(SamplingParams(temperature=0.8, top_k=40), max_new_tokens=48)
    run.step(session, settings)              # one token, from the exact prefix (or its stored logits)
    record, trace = run.inspect(session, 0, settings)   # step 1 again under these settings: no new token
    run.branch(session, 0, other_id, settings)          # what-if: step 1 becomes other_id, the rest is dropped
    steps, trace = run.run_on(session, settings)        # on to the end with the KV cache:
    for record in steps: ...                            # each token joins the run as it is yielded

The settings can change between two steps (a slider moved); the seed belongs to the run, so token i always
uses the i-th uniform number of the seed's stream, as `generate` does: a seed repeats a run exactly, and
stepping, branching and running on agree token for token. A step recomputes the next token's logits from
the prompt and the tokens so far in one forward pass, unless the session's logits store still holds them.
When the run ends is decided by `generation.stop_reason`, the rule `generate` stops by.

A run may have a constraint (structured output: the grammar's mask is a stage of every step, its state
rebuilt from the step's prefix) and an ablation (on every forward pass). Both belong to the run, like its
prompt and seed: changing either starts a new run.

The run is plain data (no session, no tensors, one small `ChosenToken` per step), so it can live in a
visitor's state; the methods that run the model take the session.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Iterator, Sequence

from .constrained import Constraint, check
from .generation import (
    STOP_REASONS,
    Generation,
    GenerationTrace,
    StepRecord,
    check_lengths,
    check_stop,
    inspect_step,
    pick_seed,
    prompt_ids,
    stop_reason,
)
from .interventions import Ablation
from .limits import MAX_NEW_TOKENS
from .model.vocab import token_texts
from .sampling import LogitsTrace, SamplingParams


@dataclass(frozen=True)
class Settings:
    """What may change between two steps of a run: the pipeline's knobs and the run's limits."""

    params: SamplingParams  # its seed is not used: the run has its own
    max_new_tokens: int = MAX_NEW_TOKENS
    min_new_tokens: int = 0  # EOS is blocked until this many tokens
    stop: tuple[str, ...] = ()  # stop sequences

    @classmethod
    def checked(cls, params: SamplingParams, max_new_tokens, min_new_tokens=0, stop=()) -> "Settings":
        """Validated limits and stop sequences (one clear InputError sentence on the first bad value)."""
        max_new, min_new = check_lengths(max_new_tokens, min_new_tokens)
        return cls(params, max_new, min_new, check_stop(stop))


@dataclass(frozen=True)
class ChosenToken:
    """One token of the run: what it is, how likely the model and the pipeline found it, how it was chosen."""

    token_id: int
    piece: str  # readable (· for a space, ↵ for a newline)
    text: str  # the token's real text
    prob: float  # in the final distribution it was drawn from
    raw_prob: float  # the model's own probability (softmax of the raw logits)
    rank: int  # in the final distribution, 1 = most likely
    draw: float | None  # the uniform number; None when greedy
    forced: bool = False  # picked by the user (what-if), not by the draw
    eos_blocked: bool = False  # EOS was blocked at this step (min new tokens)
    removed_mass: float | None = None  # with a constraint: the model's probability the grammar removed here
    allowed_tokens: int | None = None  # with a constraint: tokens the grammar allowed here

    @classmethod
    def of(cls, record: StepRecord) -> "ChosenToken":
        return cls(record.token_id, record.piece, record.text, record.chosen_prob, record.raw_prob,
                   record.chosen_rank, record.draw, record.forced, record.eos_blocked, record.removed_mass,
                   record.allowed_tokens)

    @property
    def how(self) -> str:
        return "what-if" if self.forced else ("greedy" if self.draw is None else "drawn")


@dataclass
class SamplingRun:
    """A run of one prompt and seed on one model, one ChosenToken per generated token."""

    model_id: str
    prompt: str
    chat: bool
    seed: int
    prompt_ids: list[int]
    tokens: list[ChosenToken] = field(default_factory=list)
    stop_reason: str | None = None  # None while the run can go on (see generation.STOP_REASONS)
    stop_sequence: str | None = None  # the stop sequence that matched
    constraint: Constraint | None = None  # structured output: the grammar's mask in every step
    ablation: Ablation | None = None  # on every forward pass of the run

    @classmethod
    def start(cls, session, prompt: str, chat: bool = True, seed: int | None = None,
              constraint: Constraint | None = None, ablation: Ablation | None = None) -> "SamplingRun":
        """A run with nothing generated yet. Checks the prompt (and compiles the constraint, so a bad one fails
        here); no seed picks a random one (kept, so the run can be repeated)."""
        ids = prompt_ids(session, prompt, chat)
        check(session, constraint)
        ablation = None if ablation is None or ablation.empty else ablation
        return cls(session.model_id, prompt, bool(chat), pick_seed(SamplingParams(seed=seed)), ids,
                   constraint=constraint, ablation=ablation)

    @property
    def token_ids(self) -> list[int]:
        return [t.token_id for t in self.tokens]

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def why_stopped(self) -> str | None:
        """Why the run ended, in words (the stop sequence quoted); None while it can go on."""
        if not self.done:
            return None
        reason = STOP_REASONS.get(self.stop_reason, self.stop_reason)
        return reason + (f" ({self.stop_sequence!r})" if self.stop_reason == "stop_sequence" else "")

    def params(self, settings: Settings) -> SamplingParams:
        """The settings' pipeline with this run's seed."""
        return replace(settings.params, seed=self.seed)

    # -----------------------------------------------------------------------------------------------
    # Looking at a step (no token is added)

    def inspect(self, session, step: int, settings: Settings, *, samples: int = 0, extra_ids: Sequence[int] = (),
                forced: int | None = None) -> tuple[StepRecord, LogitsTrace]:
        """Step `step` (0 = the first new token) under `settings`: the pipeline on the logits after the
        tokens before it, and where the step's uniform number lands (or `forced`, a token taken instead).
        `samples` draws for the histogram; `extra_ids` candidates to include in the record."""
        record, trace, _ = inspect_step(session, self.prompt, self.params(settings), self.token_ids[:step],
                                        chat=self.chat, min_new_tokens=settings.min_new_tokens, samples=samples,
                                        extra_ids=extra_ids, forced=forced, constraint=self.constraint,
                                        ablation=self.ablation)
        return record, trace

    # -----------------------------------------------------------------------------------------------
    # Changing the run

    def step(self, session, settings: Settings) -> StepRecord:
        """Draw the next token with `settings` and add it."""
        if self.done:
            raise RuntimeError(f"the run has stopped ({self.stop_reason})")
        record, _ = self.inspect(session, len(self.tokens), settings)
        self._add(session, record, settings)
        return record

    def truncate(self, step: int) -> None:
        """Go back: drop the tokens from `step` on (the run can go on again)."""
        del self.tokens[step:]
        self.stop_reason = self.stop_sequence = None

    def branch(self, session, step: int, token_id: int, settings: Settings) -> StepRecord:
        """What-if: at `step` take `token_id` instead, dropping the tokens after it (a token the run's
        constraint forbids there is refused, and the run is left as it was)."""
        record, _ = self.inspect(session, step, settings, forced=int(token_id))
        self.truncate(step)
        record.forced = True  # chosen by the user, even where the draw agrees
        self._add(session, record, settings)
        return record

    def run_on(self, session, settings: Settings,
               limit: int | None = None) -> tuple[Iterator[StepRecord], GenerationTrace]:
        """Go on with the KV cache from the tokens so far (at most `limit` more tokens): the new steps, each
        added to the run as it is yielded, and the trace of those passes (timings; filled as they run)."""
        generation = Generation(session, self.prompt, self.params(settings), settings.max_new_tokens, self.chat,
                                settings.stop, min_new_tokens=settings.min_new_tokens, prefix_ids=self.token_ids,
                                keep_logits=True, constraint=self.constraint, ablation=self.ablation)

        def steps() -> Iterator[StepRecord]:
            for record in generation if limit is None else islice(generation, limit):
                self.tokens.append(ChosenToken.of(record))
                yield record
            self.stop_reason, self.stop_sequence = generation.trace.stop_reason, generation.trace.stop_sequence

        return steps(), generation.trace

    def _add(self, session, record: StepRecord, settings: Settings) -> None:
        self.tokens.append(ChosenToken.of(record))
        self.stop_reason, self.stop_sequence = stop_reason(session, self.prompt_ids, self.token_ids, settings.stop,
                                                           settings.max_new_tokens)


# ---------------------------------------------------------------------------------------------------
# Predict, then reveal: where a guessed word stands in a step's distribution


@dataclass(frozen=True)
class Guess:
    """A guessed word read as the model's next token: its first token's place in a step's distributions."""

    text: str  # as typed
    token_id: int  # the first token of the reading that counts
    piece: str
    prob: float  # after the pipeline (0: removed)
    rank: int  # after the pipeline, 1 = most likely (meaningful when prob > 0)
    raw_prob: float  # the model's own probability
    raw_rank: int
    drawn: bool  # the draw took this token
    num_tokens: int  # tokens of the reading: only the first one matters


def place_guess(session, trace: LogitsTrace, record: StepRecord, guess: str) -> Guess | None:
    """Where a guess stands in the step of `record` (None for an empty guess). It is tokenized as typed and
    with a leading space (a word inside a sentence usually starts with one); the reading that is the drawn
    token, else the likelier one, counts."""
    guess = (guess or "").strip("\n")
    if not guess.strip():
        return None
    final = trace.probs  # [V]
    raw = trace.stage_probs()[0]  # [V]
    readings = [guess] if guess.startswith(" ") else [guess, " " + guess]
    best = None
    for text in readings:
        ids = session.tokenizer.encode(text, add_special_tokens=False)
        if ids:  # the drawn token first (a hit is a hit), then the likelier reading
            key = (ids[0] == record.token_id, float(final[ids[0]]), float(raw[ids[0]]))
            if best is None or key > best[0]:
                best = (key, ids)
    if best is None:
        return None
    (drawn, p, q), ids = best
    token = ids[0]
    return Guess(text=guess, token_id=token, piece=token_texts(session, [token])[0][0], prob=p,
                 rank=1 + int((final > p).sum()), raw_prob=q, raw_rank=1 + int((raw > q).sum()), drawn=drawn,
                 num_tokens=len(ids))

