"""Two runs side by side (inference.compare) on the real model: identical settings never part, a seeded pair
repeats, the divergence is the first differing token, and the runs are the ones generate() makes."""

from __future__ import annotations

import pytest
import torch

from inference.compare import RunSpec, compare_runs
from inference.generation import eos_ids, generate, prompt_ids
from inference.interventions import ablated, check_ablation
from inference.sampling import SamplingParams

PROMPT = "Tell me a joke."


def spec(temperature=1.0, seed=1, n=6, **kwargs) -> RunSpec:
    return RunSpec(PROMPT, SamplingParams(temperature=temperature, seed=seed), n, **kwargs)


@pytest.fixture(scope="module")
def two_temperatures(session):
    return compare_runs(spec(0.3), spec(1.2))


def test_two_identical_settings_never_part(session):
    c = compare_runs(spec(1.0, seed=4, n=5), spec(1.0, seed=4, n=5))
    assert c.first_divergence is None and c.divergence_char is None and not c.differences
    assert all(r.same and r.a.own == r.b.own and r.a.other == r.a.own for r in c.rows)


def test_a_seeded_pair_repeats_and_each_run_is_what_generate_makes(session, two_temperatures):
    again = compare_runs(spec(0.3), spec(1.2))
    assert again.rows == two_temperatures.rows and again.first_divergence == two_temperatures.first_divergence
    alone = generate(session, PROMPT, SamplingParams(temperature=1.2, seed=1), 6)
    assert alone.token_ids == two_temperatures.b.token_ids  # generated together, yet the same run


def test_the_divergence_is_the_first_differing_token_and_the_cross_probabilities_are_the_runs_own(session,
                                                                                                 two_temperatures):
    c = two_temperatures
    a, b = c.a.token_ids, c.b.token_ids
    first = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert c.first_divergence == first and c.differences == [("temperature", "0.3", "1.2")]
    row = c.rows[first]
    assert row.a.token_id == a[first] and row.b.token_id == b[first] and not row.same
    # A's probability of B's token comes from A's own distribution at that step (nothing recomputed).
    step = c.a.steps[first]
    if b[first] in step.candidates:
        k = step.candidates.index(b[first])
        assert row.a.other == pytest.approx(step.stages[-1].probs[k], abs=1e-7)
    assert row.a.own == step.chosen_prob and row.a.own_raw == step.raw_prob
    # The colder run is surer of its own tokens.
    assert sum(r.a.own for r in c.rows) > sum(r.b.own for r in c.rows)
    assert c.to_dict()["first_divergence"] == first and len(c.to_dict()["rows"]) == len(c.rows)


def test_with_and_without_an_ablation_greedy_equals_model_generate_under_ablated(session):
    ablation = check_ablation(session, heads=[(3, 2), (5, 1)], blocks=[("mlp", 1)])
    greedy = dict(temperature=0.0, n=6)
    c = compare_runs(spec(**greedy), spec(**greedy, ablation="L3H2, L5H1, mlp L1"))
    assert c.b_spec.ablation == ablation and c.differences[0][0] == "ablation"
    ids = torch.tensor([prompt_ids(session, PROMPT)], device=session.device)
    with session.lock, torch.inference_mode(), ablated(session, ablation, ids[0].tolist()):
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                                     pad_token_id=eos_ids(session)[0])
    assert c.b.token_ids == out[0, ids.shape[1]:].tolist() != c.a.token_ids
