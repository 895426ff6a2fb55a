"""The request time limit (issue 7): long loops stop between passes, keep what they computed, say why,
and what they cut short is never served from the cache as if it were the full answer."""

from __future__ import annotations

from inference.beam import beam_search, run_beam_search
from inference.deadline import Deadline
from inference.generation import STOP_REASONS, generate
from inference.limits import REQUEST_SECONDS, describe
from inference.sampling import SamplingParams
from inference.timeline import context_sweep

PROMPT = "The capital of France is"


def test_deadline_counts_down():
    assert not Deadline(None).expired
    assert not Deadline(60).expired
    assert Deadline(0).expired
    assert Deadline().seconds == REQUEST_SECONDS
    assert any(str(REQUEST_SECONDS) in value for _, value in describe())


def test_generation_stops_at_the_time_limit_with_its_tokens(session):
    greedy = SamplingParams(temperature=0.0)
    full = generate(session, PROMPT, greedy, 8, chat=False, min_new_tokens=8)
    cut = generate(session, PROMPT, greedy, 8, chat=False, min_new_tokens=8, deadline=Deadline(0))
    assert cut.stop_reason == "time_limit" and "time limit" in STOP_REASONS["time_limit"]
    # One pass always runs (the limit is checked between passes); what it produced is the true prefix.
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)] and len(cut.token_ids) == 1
    assert full.stop_reason == "max_new_tokens"


def test_beam_search_stops_as_if_the_length_ended_there(session):
    cut = run_beam_search(session, PROMPT, 3, 12, deadline=Deadline(0))
    assert cut.timed_out and cut.num_steps == 1 and "time limit" in cut.stop_reason
    assert len(cut.finished) == 3 and all(h.length == 1 for h in cut.finished)
    # The cached search is the full one: a cut-short tree is not stored.
    session.cache.clear()
    full = beam_search(session, PROMPT, 3, 12)
    assert not full.timed_out and full.num_steps > 1
    again = beam_search(session, PROMPT, 3, 12)
    assert again is full


def test_sweep_returns_the_lengths_measured_before_the_limit(session):
    sweep = context_sweep(session, lengths=[16, 32], decode_steps=1, fresh=True, deadline=Deadline(0))
    assert sweep.timed_out and sweep.points == [] and sweep.lengths == []
    first = context_sweep(session, lengths=[16], decode_steps=1, fresh=True)
    assert not first.timed_out and [p.prompt_tokens for p in first.points] == [16]
    # The next request goes on from the cached points even with no time left for new ones.
    resumed = context_sweep(session, lengths=[16, 32], decode_steps=1, deadline=Deadline(0))
    assert resumed.timed_out and resumed.lengths == [16] and resumed.points[0] is first.points[0]
