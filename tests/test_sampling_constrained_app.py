"""The Sampling tab's constraint (structured output), ablation and compare view through the app: the event
functions, the lesson's tries and what the lesson claims about them, the JSON endpoints, and a real browser."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urlparse

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

from components.sampling import events as ev
from components.sampling.figures import REMOVED_BUCKETS
from components.teaching import load_lesson
from conftest import assert_no_error

pytest.importorskip("xgrammar")
LESSON = load_lesson("structured")  # the Sampling tab's second lesson
TRIES = {t.label.split(":")[0]: t.values for t in LESSON.tries}
JSON_TRY, YESNO_TRY, DATE_TRY, COMPARE_TRY = (TRIES["JSON"], TRIES["Yes or no"],
                                              TRIES["A date, by regular expression"], TRIES["Compare two temperatures"])


def try_controls(values: dict) -> list:
    defaults = {"stop": "", "guess": "", "constraint_kind": "none", "constraint": "", "ablation": "",
                "ablation_mode": "zero"}
    return [values.get(name, defaults.get(name, False)) for name in ev.CONTROL_NAMES]


def b_controls(values: dict) -> list:
    return [values[name] for name in ev.COMPARE_NAMES]


def named(out) -> dict:
    return dict(zip(ev.VIEW_NAMES, out))


def last(values: dict) -> dict:
    return named(list(ev.try_to_end(*try_controls(values)))[-1])


# ---------------------------------------------------------------------------------------------------
# Event functions, and what the lesson says about its tries


def test_the_lesson_tries_set_known_fields():
    assert len(LESSON.tries) == 4
    for t in LESSON.tries:
        assert set(t.values) <= set(ev.CONTROL_NAMES) | set(ev.COMPARE_NAMES) | {"compare"}


def test_the_json_try_gives_valid_json_with_the_mask_shown_as_a_stage(session):
    out = last(JSON_TRY)
    run = out["state"].run
    assert run.stop_reason == "eos" and run.constraint.kind == "json_schema"
    assert "✔ The text is a complete, valid output" in out["status"]
    assert "Constraint: the grammar allowed" in out["status"] and "constraint (grammar mask)" in out["table"]
    assert "probability the constraint removed" in out["text"] and REMOVED_BUCKETS[-1][1] in out["text"]
    assert "removed" in out["waterfall_alt"]
    # The stage view of an earlier step: the grammar rebuilt from that step's prefix.
    first = named(ev.on_show_step(gr.EventData(None, {"step": 0}), out["state"], *try_controls(JSON_TRY)))
    assert "Step 1" in first["status"] and "removed" in first["table"]


def test_what_the_lesson_says_about_yes_no_and_the_date(session):
    yes_no = last(YESNO_TRY)["state"].run
    first = yes_no.tokens[0]
    assert first.removed_mass > 0.9 and yes_no.stop_reason == "eos"
    record, trace = yes_no.inspect(session, 0, ev.Controls.of(try_controls(YESNO_TRY)).read())
    raw = record.stages[0]
    favourite = record.pieces[max(range(len(raw.probs)), key=raw.probs.__getitem__)]
    assert favourite[:1].isupper()  # the model wanted a capital letter
    date = last(DATE_TRY)["state"].run
    text = ev.run_text(date)
    assert date.tokens[0].removed_mass > 0.9 and re.fullmatch(DATE_TRY["constraint"], text) and text != "1969-07-20"


def test_the_compare_try_parts_two_temperatures_and_the_cold_run_is_surer(session):
    values = [*try_controls(COMPARE_TRY), *b_controls(COMPARE_TRY)]
    tokens, status, figure, summary, on, box = ev.on_compare(*values)
    assert on is True and "temperature: A 0.3 · B 1.2" in status and "first difference" in tokens
    assert "They agree on the first" in summary and "part at position" in summary  # both start alike
    own = {trace.name: trace.y for trace in figure.data if trace.name.endswith("its own token")}
    a, b = own["A: its own token"], own["B: its own token"]
    assert sum(a) / len(a) > sum(b) / len(b)


def test_b_without_the_constraint_reports_whether_the_free_text_was_valid(session):
    values = dict(YESNO_TRY, max_new_tokens=6)
    b = ev.b_without_constraint(*try_controls(values))
    assert b[ev.COMPARE_NAMES.index("b_constraint")] is False and b[ev.COMPARE_NAMES.index("b_temperature")] == 0.0
    tokens, status, *_ = ev.on_compare(*try_controls(values), *b)
    assert "A is **valid**" in status and "B is **" in status and "removed (A)" in tokens


def test_an_ablated_run_is_marked_everywhere(session):
    values = dict(YESNO_TRY, constraint_kind="none", constraint="", ablation="L3H2, L5H1", max_new_tokens=3)
    out = named(ev.on_step(None, *try_controls(values)))
    assert "✂ ablated: L3H2, L5H1" in out["text"] and "✂ ablated: L3H2, L5H1" in out["status"]
    assert out["state"].run.ablation.heads == ((3, 2), (5, 1))


@pytest.mark.parametrize("change, message", [
    (dict(constraint_kind="regex", constraint="a(b"), "The regular expression cannot be used"),
    (dict(constraint_kind="json_schema", constraint="{"), "The JSON schema is not valid JSON"),
    (dict(ablation="L99H0"), "Layer 99 does not exist"),
    (dict(ablation="head five"), "'head five' is not a head or a block"),
    (dict(min_new_tokens=2), "cannot be combined with a constraint"),
])
def test_a_bad_constraint_or_ablation_gives_one_clear_message(session, change, message):
    with pytest.raises(gr.Error, match=re.escape(message)):
        ev.on_step(None, *try_controls(dict(YESNO_TRY, **change)))


# ---------------------------------------------------------------------------------------------------
# JSON endpoints


def test_the_endpoints_take_a_constraint_an_ablation_and_compare(client, session):
    out = client.predict(prompt=YESNO_TRY["prompt"], temperature=0, max_new_tokens=4, constraint_kind="choice",
                         constraint="yes\nno", api_name="/generate")
    assert out["valid"] is True and out["text"] in ("yes", "no") and out["constraint"]["kind"] == "choice"
    assert out["steps"][0]["removed_mass"] > 0.9 and out["steps"][0]["allowed_tokens"] >= 2
    step = client.predict(prompt=YESNO_TRY["prompt"], temperature=0, constraint_kind="choice", constraint="yes\nno",
                          ablation="L3H2", api_name="/next_token")
    assert [s["name"] for s in step["stages"]] == ["raw", "constraint", "greedy"] and step["removed_mass"] > 0.5
    c = client.predict(prompt="Tell me a joke.", a={"temperature": 1.0, "seed": 3}, b={"temperature": 1.0, "seed": 3},
                       max_new_tokens=3, api_name="/compare")
    assert c["first_divergence"] is None and c["aligned_by"] == "token" and len(c["rows"]) == 3
    with pytest.raises(AppError, match="The regular expression cannot be used"):
        client.predict(prompt="Hi", constraint_kind="regex", constraint="a(b", api_name="/generate")
    with pytest.raises(AppError, match="unknown settings"):
        client.predict(prompt="Hi", a={"temprature": 1}, api_name="/compare")


# ---------------------------------------------------------------------------------------------------
# Browser


@pytest.mark.browser
def test_a_link_compares_a_constrained_run_and_the_json_try_shows_the_mask(page, app_url, screenshot):
    """One browser test (the event functions above cover the rest): a shared link opens a constrained run
    compared with the same run without the constraint, its share link keeps both; the JSON try then fills
    the stage table with the grammar's mask and the text is JSON."""
    link = dict(tab="sampling", prompt=YESNO_TRY["prompt"], chat=1, seed=42, temperature=0, max_new_tokens=4,
                constraint_kind="choice", constraint="yes\nno", compare=1, b_temperature=0, b_seed=42,
                b_constraint=0, steps=2)
    page.goto(f"{app_url}/?{urlencode(link)}")
    page.wait_for_selector("#smp-compare-tokens table.smp-cmp", timeout=120_000)
    assert page.locator("#smp-constraint textarea, #smp-constraint input").first.input_value() == "yes\nno"
    status = page.locator("#smp-compare-status").inner_text()
    assert "A is valid" in status and "constraint: A one of" in status
    assert page.locator("#smp-compare-tokens").inner_text().count("removed (A)") == 1
    assert_no_error(page)
    page.locator("#smp-compare-box").scroll_into_view_if_needed()
    screenshot(page, "sampling-compare-with-without-constraint")
    page.locator("#share-sampling").click()
    page.wait_for_function("() => document.querySelector('#share-sampling-url input, #share-sampling-url textarea')"
                           ".value.includes('compare=1')")
    query = parse_qs(urlparse(page.locator("#share-sampling-url textarea, #share-sampling-url input").first
                              .input_value()).query)
    assert query["constraint_kind"] == ["choice"] and query["b_constraint"] in (["0"], ["false"], ["False"])

    # The JSON try of the lesson: the grammar's mask as a stage, the text valid JSON.
    page.locator("#lesson-structured").get_by_text("Lesson: Structured output").click()  # open its accordion
    labels = [t.label for t in LESSON.tries]
    page.locator(f"#try-structured-{labels.index(next(l for l in labels if l.startswith('JSON')))}").click()
    page.wait_for_selector("#smp-status:has-text('valid output (JSON matching')", timeout=120_000)  # not yes/no's
    assert page.locator("#smp-constraint-kind input[value='json_schema']").is_checked()
    assert "constraint (grammar mask)" in page.locator("#smp-table").inner_text()
    assert re.fullmatch(r'\{"name": ".*", "age": \d+\}', page.locator("#smp-text .smp-text").inner_text()
                        .replace("■ ended: the model chose its end-of-sequence token", "").replace("<|im_end|>", "")
                        .strip())
    assert_no_error(page)
    page.locator("#smp-text").scroll_into_view_if_needed()
    screenshot(page, "sampling-constraint-json")
