"""Two runs side by side: the same prompt under two settings, or on two models, aligned position by position.

    a = RunSpec("Tell me a joke", SamplingParams(temperature=0.3, seed=1))
    b = RunSpec("Tell me a joke", SamplingParams(temperature=1.2, seed=1))
    c = compare_runs(a, b)
    c.first_divergence      # the first position where the runs' tokens differ (None: identical runs)
    c.rows[i].a.own         # run A's probability of its own token at position i ...
    c.rows[i].a.other       # ... and of run B's token there

Settings that can differ: anything in SamplingParams (temperature, penalties, filters, seed), a constraint
(structured output) on one side, an ablation on one side, or the model (`RunSpec.model`).

Both runs are generated together, one step of A then one step of B, so at every position both whole
distributions are at hand: `a.other` is read from A's distribution at that step, which is conditioned on A's
own prefix (after the divergence, not B's). `own`/`other` are the final distribution each run drew from
(after its whole pipeline); `own_raw`/`other_raw` the model's own softmax before any stage.

When the two models' tokenizers differ (SmolLM2 and Gemma), a token position means something else in each run:
the texts are then aligned by characters (the first differing character), each row is simply the i-th token of
each run, and the cross probabilities are left out (`aligned_by == "character"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .ablation_text import parse_ablation
from .constrained import Constraint, Validity, check, validity
from .deadline import Deadline
from .errors import InputError
from .generation import Generation, GenerationTrace, StepRecord
from .interventions import Ablation
from .limits import MAX_COMPARE_NEW_TOKENS
from .model.session import get_session
from .sampling import LogitsTrace, SamplingParams

PARAM_NAMES = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
               "frequency_penalty", "seed")


@dataclass(frozen=True)
class RunSpec:
    """One side of a comparison. `ablation`: an Ablation, or its text ("L3H2, mlp L0", read with
    `ablation_mode`); `model`: a model id (None: the default model, or the session passed to compare_runs)."""

    prompt: str
    params: SamplingParams
    max_new_tokens: int = 32
    chat: bool = True
    constraint: Constraint | None = None
    ablation: Ablation | str | None = None
    ablation_mode: str = "zero"
    model: str | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Side:
    """One run at one position: its token, and the probabilities it gave to its own and the other's token."""

    token_id: int
    piece: str  # readable (· for a space, ↵ for a newline)
    text: str
    own: float  # the run's final distribution (what it drew from), its own token
    own_raw: float  # the model's own softmax, its own token
    other: float | None = None  # the run's final distribution, the other run's token (None: no other token)
    other_raw: float | None = None
    removed_mass: float | None = None  # with a constraint: the model's probability the grammar removed


@dataclass(frozen=True)
class CompareRow:
    position: int  # 0 = the first new token
    a: Side | None  # None once run A has ended
    b: Side | None

    @property
    def same(self) -> bool:
        return self.a is not None and self.b is not None and self.a.token_id == self.b.token_id


@dataclass
class Comparison:
    """Two runs of the same prompt, position by position, and where they part."""

    a_spec: RunSpec
    b_spec: RunSpec
    a: GenerationTrace
    b: GenerationTrace
    a_model: str
    b_model: str
    aligned_by: str  # "token" (same tokenizer) | "character"
    rows: list[CompareRow]
    first_divergence: int | None  # the first row whose tokens differ (by characters: the row of A's token
    #                                holding the first differing character); None: the runs are identical
    divergence_char: int | None  # the character offset of the first difference in the texts
    differences: list[tuple[str, str, str]]  # (setting, A's value, B's value): what the two runs change
    constraint: Constraint | None = None  # the constraint the texts are checked against (A's, else B's)
    a_valid: Validity | None = None
    b_valid: Validity | None = None
    timed_out: bool = False

    @property
    def a_text(self) -> str:
        return "".join(s.text for s in self.a.steps)

    @property
    def b_text(self) -> str:
        return "".join(s.text for s in self.b.steps)

    def to_dict(self) -> dict:
        def side(s: Side | None):
            return None if s is None else {"id": s.token_id, "piece": s.piece, "text": s.text, "own": s.own,
                                           "own_raw": s.own_raw, "other": s.other, "other_raw": s.other_raw,
                                           "removed_mass": s.removed_mass}

        def valid(v: Validity | None):
            return None if v is None else {"valid": v.exact, "valid_trimmed": v.trimmed}

        return {
            "a": {"model": self.a_model, **self.a.to_dict(steps=False), "validity": valid(self.a_valid)},
            "b": {"model": self.b_model, **self.b.to_dict(steps=False), "validity": valid(self.b_valid)},
            "aligned_by": self.aligned_by,
            "first_divergence": self.first_divergence,
            "divergence_char": self.divergence_char,
            "differences": [{"setting": n, "a": x, "b": y} for n, x, y in self.differences],
            "rows": [{"position": r.position, "same": r.same, "a": side(r.a), "b": side(r.b)} for r in self.rows],
            "timed_out": self.timed_out,
        }


# ---------------------------------------------------------------------------------------------------


def same_vocabulary(session_a, session_b) -> bool:
    """Token ids mean the same text in both models (the same session, or identical vocabularies)."""
    if session_a is session_b:
        return True
    ta, tb = session_a.tokenizer, session_b.tokenizer
    return len(ta) == len(tb) and ta.get_vocab() == tb.get_vocab()


def differences(a: RunSpec, b: RunSpec, a_model: str, b_model: str) -> list[tuple[str, str, str]]:
    """The settings in which the two runs differ, as (name, A's value, B's value) in words."""
    out = []
    if a_model != b_model:
        out.append(("model", a_model, b_model))
    for name in PARAM_NAMES:
        x, y = getattr(a.params, name), getattr(b.params, name)
        if x != y:
            out.append((name.replace("_", " "), f"{x:g}" if isinstance(x, float) else str(x),
                        f"{y:g}" if isinstance(y, float) else str(y)))
    if a.constraint != b.constraint:
        out.append(("constraint", a.constraint.describe() if a.constraint else "none",
                    b.constraint.describe() if b.constraint else "none"))
    if a.ablation != b.ablation:
        out.append(("ablation", a.ablation.describe() if a.ablation else "none",
                    b.ablation.describe() if b.ablation else "none"))
    for name in ("prompt", "chat", "max_new_tokens"):
        if getattr(a, name) != getattr(b, name):
            out.append((name.replace("_", " "), str(getattr(a, name)), str(getattr(b, name))))
    return out


def _resolve(spec: RunSpec, session) -> RunSpec:
    """The spec with its ablation read and checked against its model, and its lengths checked."""
    if not 1 <= int(spec.max_new_tokens) <= MAX_COMPARE_NEW_TOKENS:
        raise InputError("compare.new_tokens_range", "A compared run may have 1 to {limit} new tokens; got {value}.",
                         limit=MAX_COMPARE_NEW_TOKENS, value=spec.max_new_tokens)
    ablation = spec.ablation
    if isinstance(ablation, str):
        ablation = parse_ablation(session, ablation, spec.ablation_mode)
    if ablation is not None and ablation.empty:
        ablation = None
    check(session, spec.constraint)
    return RunSpec(spec.prompt, spec.params, int(spec.max_new_tokens), bool(spec.chat), spec.constraint, ablation,
                   spec.ablation_mode, spec.model, tuple(spec.stop))


def _side(record: StepRecord, trace: LogitsTrace, other: StepRecord | None, cross: bool) -> Side:
    other_p = other_raw = None
    if other is not None and cross:
        other_p = float(trace.probs[other.token_id])
        other_raw = float(trace.stage_probs()[0][other.token_id])
    return Side(record.token_id, record.piece, record.text, record.chosen_prob, record.raw_prob, other_p, other_raw,
                record.removed_mass)


def _first_difference(x: str, y: str) -> int | None:
    for i, (p, q) in enumerate(zip(x, y)):
        if p != q:
            return i
    return None if len(x) == len(y) else min(len(x), len(y))


def compare_runs(run_a_spec: RunSpec, run_b_spec: RunSpec, *, sessions: Sequence | None = None,
                 deadline: Deadline | None = None) -> Comparison:
    """Generate both runs together, step by step, and align them (see the module's docstring).
    `sessions`: the two runs' model sessions (default: get_session(spec.model) for each)."""
    session_a, session_b = sessions or (get_session(run_a_spec.model), get_session(run_b_spec.model))
    a, b = _resolve(run_a_spec, session_a), _resolve(run_b_spec, session_b)
    deadline = deadline or Deadline()
    by_token = same_vocabulary(session_a, session_b)

    def start(spec: RunSpec, session) -> Generation:
        return Generation(session, spec.prompt, spec.params, spec.max_new_tokens, spec.chat, spec.stop,
                          deadline=deadline, constraint=spec.constraint, ablation=spec.ablation)

    run_a, run_b = start(a, session_a), start(b, session_b)
    rows = []
    while not (run_a.done and run_b.done):
        ra = run_a.step() if not run_a.done else None
        ta = run_a.last_trace
        rb = run_b.step() if not run_b.done else None
        tb = run_b.last_trace
        rows.append(CompareRow(
            position=len(rows),
            a=None if ra is None else _side(ra, ta, rb, by_token),
            b=None if rb is None else _side(rb, tb, ra, by_token),
        ))
    comparison = Comparison(
        a_spec=a, b_spec=b, a=run_a.trace, b=run_b.trace, a_model=session_a.model_id, b_model=session_b.model_id,
        aligned_by="token" if by_token else "character", rows=rows, first_divergence=None, divergence_char=None,
        differences=differences(a, b, session_a.model_id, session_b.model_id),
        timed_out="time_limit" in (run_a.trace.stop_reason, run_b.trace.stop_reason),
    )
    comparison.divergence_char = _first_difference(comparison.a_text, comparison.b_text)
    if by_token:
        comparison.first_divergence = next((r.position for r in rows if not r.same), None)
    elif comparison.divergence_char is not None:
        ends, total = [], 0
        for s in run_a.trace.steps:
            total += len(s.text)
            ends.append(total)
        comparison.first_divergence = next((i for i, end in enumerate(ends) if end > comparison.divergence_char),
                                           len(ends))
    constraint = a.constraint or b.constraint
    if constraint is not None:  # both texts checked by the grammar of the side that has it (text, not tokens)
        judge = session_a if a.constraint else session_b
        comparison.constraint = constraint
        comparison.a_valid = validity(judge, constraint, run_a.trace.text)
        comparison.b_valid = validity(judge, constraint, run_b.trace.text)
    return comparison


__all__ = ["CompareRow", "Comparison", "RunSpec", "Side", "compare_runs", "same_vocabulary"]
