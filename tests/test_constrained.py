"""Constrained decoding (structured output) on the real bundled model, checked against transformers' own
generate() with xgrammar's transformers logits processor, and against the model's plain softmax."""

from __future__ import annotations

import json
import re
from unittest import mock

import pytest
import torch

from inference import constrained
from inference.constrained import DATE_REGEX, PERSON_SCHEMA, PRESETS, YES_NO, Constraint, GrammarState, compiled, matches
from inference.errors import InputError
from inference.generation import eos_ids, generate, inspect_step, prompt_ids
from inference.sampling import SamplingParams
from inference.sampling_run import SamplingRun, Settings

xgr = pytest.importorskip("xgrammar")
GREEDY = SamplingParams(temperature=0)
PERSON = Constraint("json_schema", PERSON_SCHEMA)
DATE = Constraint("regex", DATE_REGEX)
YESNO = Constraint("choice", YES_NO)
CASES = [  # (prompt, constraint, max new tokens): each ends at EOS well within its budget
    ("Describe a person as JSON with a name and an age.", PERSON, 24),
    ("When did the first person walk on the moon? Answer with the date.", DATE, 14),
    ("Is the sky blue? Answer yes or no.", YESNO, 4),
]


def hf_constrained(session, prompt, constraint, max_new_tokens, **kwargs) -> list[int]:
    """transformers' generate with xgrammar's own logits processor (a new one per call: it is stateful)."""
    ids = torch.tensor([prompt_ids(session, prompt, True)], device=session.device)
    processor = xgr.contrib.hf.LogitsProcessor(compiled(session, constraint))
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=eos_ids(session)[0],
                                     max_new_tokens=max_new_tokens, logits_processor=[processor], **kwargs)
    return out[0, ids.shape[1]:].tolist()


def is_valid(constraint: Constraint, text: str) -> bool:
    """The check an app would make, without the grammar library."""
    if constraint.kind == "choice":
        return text in constraint.spec
    if constraint.kind == "regex":
        return re.fullmatch(constraint.spec, text) is not None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    schema = json.loads(constraint.spec)
    return (isinstance(value, dict) and set(value) == set(schema["properties"]) and isinstance(value["name"], str)
            and len(value["name"]) <= 40 and isinstance(value["age"], int) and not isinstance(value["age"], bool)
            and 0 <= value["age"] <= 150)


@pytest.fixture(scope="module")
def runs(session):
    return {c.kind: generate(session, prompt, GREEDY, n, constraint=c) for prompt, c, n in CASES}


# ---------------------------------------------------------------------------------------------------
# The specs


@pytest.mark.parametrize("kind, spec, message", [
    ("grammar", "x", "must be one of choice, regex, json_schema"),
    ("choice", "\n \n", "at least one choice"),
    ("choice", [str(i) for i in range(40)], "At most 32 choices"),
    ("regex", "", "non-empty"),
    ("json_schema", "{", "not valid JSON: Expecting property name"),
    ("json_schema", "[1, 2]", "must be a JSON object"),
])
def test_a_bad_spec_gets_one_clear_sentence(kind, spec, message):
    with pytest.raises(InputError, match=re.escape(message)):
        Constraint(kind, spec)


@pytest.mark.parametrize("constraint, message", [
    (Constraint("regex", "a(b"), "The regular expression cannot be used: Regex parsing error at position 4: The "
                                 "parenthesis is not closed."),
    (Constraint("json_schema", '{"type": "foo"}'), 'The JSON schema cannot be used: Unsupported type "foo".'),
])
def test_a_grammar_the_library_refuses_gets_its_sentence_without_the_cpp_location(session, constraint, message):
    with pytest.raises(InputError) as info:
        GrammarState(session, constraint)
    assert str(info.value) == message


def test_specs_are_normalised_so_equal_constraints_are_equal():
    assert Constraint("choice", "yes\n no \n\nyes") == Constraint("choice", ["yes", "no"]) == YESNO
    assert Constraint("json_schema", json.dumps(PERSON_SCHEMA)) == PERSON
    assert Constraint.from_text("none", "anything") is None and Constraint.from_text("", "") is None
    assert Constraint.from_text("choice", "yes\nno").text == "yes\nno"
    with pytest.raises(InputError, match="Type the regular expression"):
        Constraint.from_text("regex", "  ")


def test_without_the_library_the_constraint_says_so_in_one_sentence(session):
    with mock.patch.object(constrained, "_library", return_value=ImportError("No module named 'xgrammar'")):
        reason = str(constrained.unavailable_reason())  # a Message: its English
        assert reason.startswith("Constrained decoding is not available on this server") and reason.count(".") <= 2
        with pytest.raises(InputError, match="not available on this server"):
            GrammarState(session, YESNO)


# ---------------------------------------------------------------------------------------------------
# Against transformers and the model


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c.kind for _, c, _ in CASES])
def test_greedy_constrained_equals_model_generate_with_the_xgrammar_processor(session, runs, case):
    prompt, constraint, n = CASES[case]
    ours = runs[constraint.kind]
    assert ours.token_ids == hf_constrained(session, prompt, constraint, n, do_sample=False)
    assert ours.stop_reason == "eos" and ours.valid is True and is_valid(constraint, ours.text)
    assert [s.stages[1].name for s in ours.steps] == ["constraint"] * len(ours.steps)


def test_removed_mass_is_one_minus_the_models_probability_over_the_allowed_tokens(session, runs):
    run = runs["json_schema"]
    ids = torch.tensor([run.prompt_ids + run.token_ids], device=session.device)
    with session.lock, torch.inference_mode():
        logits = session.model(ids).logits[0, len(run.prompt_ids) - 1: -1].float()  # [new, V]: a plain forward
    probs = torch.softmax(logits, -1).double()
    matcher = xgr.GrammarMatcher(compiled(session, PERSON))  # the library alone, not our GrammarState
    bitmask = xgr.allocate_token_bitmask(1, session.facts.vocab_size)
    for i, step in enumerate(run.steps):
        matcher.fill_next_token_bitmask(bitmask)
        allowed = torch.zeros(session.facts.vocab_size)
        xgr.apply_token_bitmask_inplace(allowed, bitmask[0])
        allowed = torch.isfinite(allowed)
        assert step.allowed_tokens == int(allowed.sum())
        assert step.removed_mass == pytest.approx(1 - float(probs[i][allowed].sum()), abs=1e-4)
        assert step.stages[1].survivors == step.allowed_tokens
        assert matcher.accept_token(step.token_id)
    # The honest cost: the model wanted something else before the JSON began.
    assert run.steps[0].removed_mass > 0.5


def test_the_constraint_stage_masks_exactly_the_tokens_of_xgrammars_bitmask(session, runs):
    """The stage's -inf pattern is the library's bitmask, bit for bit (unpacked here by hand: bit i%32 of word
    i//32), and the tokens it allows keep their logits unchanged."""
    run, k = runs["json_schema"], 3  # the grammar three tokens into the JSON
    _, trace, _ = inspect_step(session, CASES[0][0], GREEDY, run.token_ids[:k], constraint=PERSON)
    matcher = xgr.GrammarMatcher(compiled(session, PERSON))
    assert all(matcher.accept_token(t) for t in run.token_ids[:k])
    bitmask = xgr.allocate_token_bitmask(1, session.facts.vocab_size)  # [1, ceil(V/32)] int32
    matcher.fill_next_token_bitmask(bitmask)
    ids = torch.arange(session.facts.vocab_size)
    allowed = ((bitmask[0][ids // 32] >> (ids % 32)) & 1).bool()  # [V]
    stages = dict(trace.stages)
    before = trace.stages[trace.names.index("constraint") - 1][1]
    assert torch.equal(torch.isfinite(stages["constraint"]), allowed) and 1 < int(allowed.sum()) < len(ids)
    assert torch.equal(stages["constraint"][allowed], before[allowed])


def test_the_mask_sits_where_transformers_puts_a_logits_processor(session):
    """After the repetition penalty and min new tokens, before temperature and the filters, as
    GenerationMixin._get_logits_processor orders a user's processor: the same order in our stages."""
    from transformers import GenerationConfig

    processor = xgr.contrib.hf.LogitsProcessor(compiled(session, YESNO))
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.2,
                              min_new_tokens=2, eos_token_id=eos_ids(session))
    config._eos_token_tensor = torch.tensor(eos_ids(session))
    order = [type(p).__name__ for p in session.model._get_logits_processor(
        config, input_ids_seq_length=4, logits_processor=[processor], device="cpu")]
    assert order.index("RepetitionPenaltyLogitsProcessor") < order.index("MinNewTokensLengthLogitsProcessor") \
        < order.index("LogitsProcessor") < order.index("TemperatureLogitsWarper") < order.index("TopKLogitsWarper")
    params = SamplingParams(temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.2, seed=1)
    record, _, _ = inspect_step(session, "Is the sky blue? Answer yes or no.", params, constraint=YESNO)
    assert [s.name for s in record.stages] == ["raw", "repetition_penalty", "constraint", "temperature", "top_k",
                                                "top_p"]


def test_a_sampled_constrained_run_is_valid(session):
    run = generate(session, CASES[1][0], SamplingParams(temperature=1.0, top_p=0.95, seed=5), 14, constraint=DATE)
    assert run.valid and re.fullmatch(DATE_REGEX, run.text)
    assert all(s.stages[-1].survivors <= s.allowed_tokens for s in run.steps)  # the filters work on what is left


# ---------------------------------------------------------------------------------------------------
# Stepping, branching, validity


def test_stepping_rebuilds_the_grammar_from_the_prefix_and_branches_only_where_it_allows(session, runs):
    prompt, constraint, _ = CASES[0]
    run = SamplingRun.start(session, prompt, True, 3, constraint=constraint)
    settings = Settings(GREEDY, max_new_tokens=24)
    for _ in range(3):
        run.step(session, settings)
    assert run.token_ids == runs["json_schema"].token_ids[:3]
    record, _ = run.inspect(session, 1, settings)  # an earlier step again: the grammar after one token
    assert record.token_id == run.token_ids[1] and record.removed_mass == pytest.approx(
        runs["json_schema"].steps[1].removed_mass, abs=1e-5)
    forbidden = session.tokenizer.encode("Hello")[0]
    with pytest.raises(InputError, match="is not allowed by the constraint"):
        run.branch(session, 2, forbidden, settings)
    with pytest.raises(InputError, match="cannot be combined with a constraint"):
        run.step(session, Settings(GREEDY, max_new_tokens=24, min_new_tokens=2))


def test_matches_checks_a_whole_text(session):
    assert matches(session, YESNO, "yes") and not matches(session, YESNO, "Yes") and not matches(session, YESNO, "ye")
    assert matches(session, DATE, "1969-07-20") and not matches(session, DATE, "1969-19-20")
    assert matches(session, PERSON, '{"name": "Ada", "age": 36}') and not matches(session, PERSON, '{"name": "Ada"}')
    assert constrained.validity(session, YESNO, " no\n").describe() == "valid once the spaces around it are trimmed"
    assert set(PRESETS.values()) == {YESNO, DATE, PERSON}


PROMPTS = [
    ("Describe a person as JSON with a name and an age.", PERSON),
    ("Give me a fictional character as JSON.", PERSON),
    ("Invent a scientist and return her as JSON.", PERSON),
    ("Return a JSON object for a child named Tom.", PERSON),
    ("Who wrote Hamlet? Reply in JSON with name and age at death.", PERSON),
    ("A pirate captain, as JSON.", PERSON),
    ("Make up a customer record in JSON.", PERSON),
    ("Is water wet? Answer yes or no.", YESNO),
    ("Is 7 a prime number? Answer yes or no.", YESNO),
    ("Can fish fly? Answer yes or no.", YESNO),
    ("Is Paris in Germany?", YESNO),
    ("Do you like music?", YESNO),
    ("Is the Earth flat? yes or no", YESNO),
    ("Should I take an umbrella if it rains?", YESNO),
    ("When did World War II end? Give the date.", DATE),
    ("What is the date of Christmas in 2024?", DATE),
    ("When was the Eiffel Tower opened?", DATE),
    ("Give today's date.", DATE),
    ("When did the Berlin Wall fall?", DATE),
    ("Write the date of New Year's Day 2000.", DATE),
]


@pytest.mark.slow
def test_every_constrained_output_is_valid_on_20_prompts(session):
    """20 prompts, greedy and sampled (temperature 1) in turn: every run ends at EOS and its text parses
    (json.loads with the schema's fields and bounds / re.fullmatch / one of the choices), checked without
    the grammar library. One run per prompt keeps the test short; greedy equality with transformers and
    sampled validity are also checked above."""
    for i, (prompt, constraint) in enumerate(PROMPTS):
        params = GREEDY if i % 2 == 0 else SamplingParams(temperature=1.0, seed=i)
        run = generate(session, prompt, params, 64, constraint=constraint, top_n=1)
        assert run.stop_reason == "eos" and run.valid, (prompt, params, run.text)
        assert is_valid(constraint, run.text), (prompt, params, run.text)
