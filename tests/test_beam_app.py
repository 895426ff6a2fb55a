"""Beam search tab in the app: the JSON endpoint, the event functions, and in Chromium the animation, the
lesson's tries, a shared link, the downloads, predict then reveal, presenter mode."""

from __future__ import annotations

import csv
import json
import time
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

import gradio as gr

from components.beam import events as beam_events
from components.beam.figures import step_figure_summary
from components.teaching import load_lesson
from inference.beam import beam_search
from conftest import assert_no_error

# The tab's default search (also what the page runs on load), so the app tests share one cached tree.
DEFAULT = dict(prompt="What is 2+2?", num_beams=4, max_new_tokens=12, length_penalty=1.0, early_stopping=False,
               chat=True)


def test_api_returns_the_tree_and_ranked_hypotheses(client, session):
    data = client.predict(prompt=DEFAULT["prompt"], num_beams=4, max_new_tokens=12, length_penalty=1.0,
                          early_stopping="false", chat=True, api_name="/beam_search")
    tree = beam_search(session, **DEFAULT)
    assert data["model"] == session.model_id
    assert [h["token_ids"] for h in data["hypotheses"]] == [h.token_ids for h in tree.finished]
    assert [h["score"] for h in data["hypotheses"]] == pytest.approx([h.score for h in tree.finished], abs=1e-5)
    assert len(data["nodes"]) == len(tree.nodes) and len(data["edges"]) == len(tree.nodes) - 1
    node = data["nodes"][1]
    assert {"parent", "step", "token", "logprob", "cum_logprob", "status", "rank", "score"} <= set(node)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(num_beams=0), "num_beams must be a whole number between 1 and 8"),
        (dict(num_beams=100), "num_beams must be a whole number between 1 and 8"),
        (dict(max_new_tokens=-5), "max_new_tokens must be a whole number between 1 and 64"),
        (dict(prompt=""), "The prompt is empty"),
        (dict(early_stopping="sometimes"), "early_stopping must be"),
    ],
)
def test_api_bad_input_is_one_clear_sentence(client, kwargs, words):
    args = dict(prompt="Hello", num_beams=2, max_new_tokens=4, length_penalty=1.0, early_stopping="false",
                chat=False)
    args.update(kwargs)
    with pytest.raises(Exception) as err:
        client.predict(**args, api_name="/beam_search")
    assert words in str(err.value)
    assert "Traceback" not in str(err.value)


def named(out) -> dict:
    return dict(zip(beam_events.VIEW_NAMES, out))


def frame(out) -> dict:
    return dict(zip(beam_events.FRAME_NAMES, out))


def test_events_step_through_the_cached_tree(session):
    out = named(beam_events.run_search(DEFAULT["prompt"], True, 4, 12, 1.0, "False"))
    request = out["request"]
    tree = beam_search(session, **DEFAULT)
    assert out["step"].maximum == tree.num_steps and "Stopped" in out["summary"] and len(out["table"]) == 4
    assert out["tree_alt"] == step_figure_summary(tree, tree.num_steps) and "finished hypotheses" in out["tree_alt"]
    # Play at the last step starts over from the prompt; each tick shows one more step.
    f = frame(beam_events.play_pause(tree.num_steps, request, False))
    assert f["timer"].active and f["playing"] and f["step"].value == 0 and f["play"].value == beam_events.PAUSE
    assert f["tree_alt"].startswith("The prompt")
    f = frame(beam_events.tick(0, request, True))
    assert f["step"].value == 1 and f["timer"].active and f["playing"] and f["tree_alt"].startswith("Step 1 of")
    f = frame(beam_events.tick(tree.num_steps - 1, request, True))
    assert f["step"].value == tree.num_steps and not f["timer"].active and not f["playing"]
    assert f["play"].value == beam_events.PLAY
    # Pause stops the timer.
    f = frame(beam_events.play_pause(3, request, True))
    assert not f["timer"].active and not f["playing"]


def test_predict_first_hides_the_tree_and_results_until_reveal(session):
    hidden = named(beam_events.run_search(DEFAULT["prompt"], True, 4, 12, 1.0, "False", True))
    assert hidden["hidden"] is True and hidden["tree"] is None and hidden["summary"] == "" and hidden["tree_alt"] == ""
    assert hidden["table"].empty and hidden["results"].visible is False and "Reveal" in hidden["hidden_note"].value
    assert hidden["tree_json"].value is None and hidden["hypotheses_csv"].value is None
    assert beam_events.run_compare(hidden["request"], 0, True).empty
    # Frames stay hidden too.
    assert beam_events.show_step(3, hidden["request"], True) == (gr.skip(), gr.skip())
    shown = named(beam_events.reveal(hidden["request"], True))
    tree = beam_search(session, **DEFAULT)
    assert shown["hidden"] is False and shown["tree"] is not None and tree.finished[0].text in shown["summary"]


def test_downloads_equal_the_endpoint(client, session):
    out = named(beam_events.run_search(DEFAULT["prompt"], True, 4, 12, 1.0, "False"))
    api = client.predict(prompt=DEFAULT["prompt"], num_beams=4, max_new_tokens=12, length_penalty=1.0,
                         early_stopping="false", chat=True, api_name="/beam_search")
    with open(path_of(out["tree_json"]), encoding="utf-8") as f:
        assert json.load(f) == api
    with open(path_of(out["hypotheses_csv"]), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["text"] for r in rows] == [h["text"] for h in api["hypotheses"]]
    assert [float(r["score"]) for r in rows] == pytest.approx([h["score"] for h in api["hypotheses"]], abs=1e-6)


def path_of(button) -> str:
    return button.value["path"] if isinstance(button.value, dict) else button.value


FIELDS = {"prompt", "chat", "num_beams", "max_new_tokens", "length_penalty", "early_stopping", "seed", "predict"}


def test_the_length_penalty_tries_crown_different_answers(session):
    """What the lesson's first two tries show on the default model: at 0.5 a shorter answer wins, at 2 a
    longer one (both finished on EOS), and the raw sums alone would rank them the other way at 2."""
    tries = [t.values for t in load_lesson("beam").tries]
    assert len(tries) == 3 and all(set(v) <= FIELDS for v in tries)
    short, long = (beam_search(session, v["prompt"], v["num_beams"], v["max_new_tokens"], v["length_penalty"],
                               v["early_stopping"], v["chat"]).finished[0] for v in tries[:2])
    assert short.text != long.text and short.length < long.length
    assert short.sum_logprob > long.sum_logprob  # the raw sum prefers the short one


def test_comparison_rows(session):
    request = beam_events.search_request(DEFAULT["prompt"], True, 4, 12, 1.0, "False")
    table = beam_events.run_compare(request, 0)
    assert len(table) == 3 and table["method"].iloc[1] == "greedy" and "sampled" in table["method"].iloc[2]


NODES_JS = """() => {
  const gd = document.querySelector('#beam-tree .js-plotly-plot');
  if (!gd || !gd.data) return -1;
  return gd.data.reduce((a, t) => a + (t.mode && t.mode.includes('markers') ? t.x.length : 0), 0);
}"""


@pytest.mark.browser
def test_play_animates_the_tree(page, screenshot):
    page.get_by_role("tab", name="Beam search").click()
    page.wait_for_selector("#beam-tree .js-plotly-plot .main-svg")
    page.wait_for_function("() => document.querySelector('#beam-summary').innerText.includes('Stopped')")
    page.wait_for_function(f"({NODES_JS})() > 1")
    screenshot(page, "beam_start")
    page.click("#beam-play")  # at the last step: starts over from the prompt
    page.wait_for_function(f"({NODES_JS})() === 1")
    first = page.evaluate(NODES_JS)
    counts = [first]
    deadline = time.time() + 45
    while time.time() < deadline and len(set(counts)) < 3:  # a few ticks, each adding a step
        time.sleep(0.5)
        counts.append(page.evaluate(NODES_JS))
    assert max(counts) > first and len(set(counts)) >= 3, counts
    page.wait_for_function("() => document.querySelector('#beam-play').innerText.includes('Play')", timeout=90_000)
    assert page.evaluate(NODES_JS) > max(counts[:2])
    assert "done" in page.locator("#beam-tree .gtitle").first.text_content()
    screenshot(page, "beam_end")


def _open_tab(page) -> None:
    page.get_by_role("tab", name="Beam search").click()
    page.wait_for_selector("#beam-tree .js-plotly-plot .main-svg")
    page.wait_for_function("() => document.querySelector('#beam-summary').innerText.includes('Stopped')")


SEARCH_DONE = """(best) => {
  const alt = document.querySelector('#beam-tree-alt');
  return alt && alt.innerText.includes('Done') && alt.innerText.includes('the best, “' + best + '”');
}"""


@pytest.mark.browser
def test_the_lesson_tries_run(page, screenshot, session):
    _open_tab(page)
    for i, t in enumerate(load_lesson("beam").tries):
        v = t.values
        best = beam_search(session, v["prompt"], v["num_beams"], v["max_new_tokens"], v["length_penalty"],
                           v["early_stopping"], v["chat"]).finished[0]
        page.locator(f"#try-beam-{i}").click()
        # The view shows the search of the try's settings: its best answer, scored with its length penalty.
        page.wait_for_function(SEARCH_DONE, arg=" ".join(best.text.split()), timeout=120_000)
        assert page.locator("#beam-prompt textarea").input_value() == v["prompt"]
        assert f"^{v['length_penalty']:g}" in page.locator("#beam-tree-alt").inner_text()
        assert_no_error(page)
        if i == 1:
            screenshot(page, "beam-try-length-penalty-2")


@pytest.mark.browser
def test_a_shared_link_shows_the_same_search_and_downloads_match(page, app_url, client, screenshot):
    link = dict(tab="beam", prompt="The capital of France is", chat=0, num_beams=3, max_new_tokens=8,
                length_penalty=0.5, early_stopping="True", seed=5)
    page.goto(f"{app_url}/?{urlencode(link)}")
    page.wait_for_selector("#beam-tree-alt:has-text('Done')")
    assert page.locator("#beam-prompt textarea").input_value() == "The capital of France is"
    assert page.locator("#beam-seed input").input_value() == "5"
    assert not page.locator("#beam-chat input").is_checked()
    api = client.predict(prompt="The capital of France is", num_beams=3, max_new_tokens=8, length_penalty=0.5,
                         early_stopping="true", chat=False, api_name="/beam_search")
    assert " ".join(api["hypotheses"][0]["text"].split()) in " ".join(page.locator("#beam-summary").inner_text().split())
    page.wait_for_selector("#beam-compare:has-text('seed 5')")
    screenshot(page, "beam-shared-link")

    with page.expect_download() as info:
        page.locator("#beam-tree-json").click()
    tree = json.loads(open(info.value.path(), encoding="utf-8").read())
    assert tree == api and {n["status"] for n in tree["nodes"]} >= {"root", "kept", "pruned", "finished"}
    assert all({"step", "beam", "token", "score", "status", "parent"} <= set(n) for n in tree["nodes"])
    with page.expect_download() as info:
        page.locator("#beam-hyp-csv").click()
    rows = list(csv.DictReader(open(info.value.path(), newline="", encoding="utf-8")))
    assert [[int(t) for t in r["token_ids"].split()] for r in rows] == [h["token_ids"] for h in api["hypotheses"]]
    assert [float(r["score"]) for r in rows] == pytest.approx([h["score"] for h in api["hypotheses"]], abs=1e-6)

    page.locator("#share-beam").click()
    page.wait_for_function("() => document.querySelector('#share-beam-url textarea, #share-beam-url input')"
                           ".value.includes('tab=beam')")
    query = parse_qs(urlparse(page.locator("#share-beam-url textarea, #share-beam-url input").first
                              .input_value()).query)
    assert query["prompt"] == ["The capital of France is"] and query["num_beams"] == ["3"]
    assert query["length_penalty"] == ["0.5"] and query["early_stopping"] == ["True"] and query["seed"] == ["5"]


@pytest.mark.browser
def test_predict_first_then_reveal_and_presenter_mode(page, session, screenshot):
    _open_tab(page)
    best = beam_search(session, **DEFAULT).finished[0].text.strip()
    page.locator("#beam-predict input").check()
    page.wait_for_selector("#beam-hidden:has-text('Make your guess')")
    page.locator("#beam-run").click()
    page.wait_for_selector("#beam-hidden:has-text('Make your guess')")
    # Nothing of the search is in the page: no tree, no table, no answer text (even hidden).
    assert page.locator("#beam-tree .js-plotly-plot").count() == 0
    results = page.evaluate("() => { const r = document.querySelector('#beam-results'); return r ? r.textContent : ''; }")
    assert best not in results and best not in page.locator("#beam-hidden").inner_text()
    screenshot(page, "beam-predict-hidden")
    page.locator("#beam-reveal").click()
    page.wait_for_selector("#beam-tree .js-plotly-plot .main-svg")
    page.wait_for_function("(b) => document.querySelector('#beam-tree-alt').innerText.includes(b)",
                           arg=" ".join(best.split()))
    assert page.locator("#beam-hidden").is_hidden()
    page.wait_for_selector("#beam-compare:has-text('greedy')")
    screenshot(page, "beam-predict-revealed")

    assert page.locator("#beam-early-stopping").is_visible()
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("() => document.body.classList.contains('lie-presenter')")
    assert page.locator("#beam-early-stopping").is_hidden() and page.locator("#beam-tree-json").is_hidden()
    assert page.locator("#beam-length-penalty").is_visible() and page.locator("#beam-reveal").is_visible()
    screenshot(page, "beam-presenter")
