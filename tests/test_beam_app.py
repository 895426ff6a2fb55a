"""Beam search tab in the app: the JSON endpoint, the event functions, and the animation in Chromium."""

from __future__ import annotations

import time

import pytest

from components import beam_tab
from inference.beam import beam_search

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


def test_events_step_through_the_cached_tree(session):
    request, summary, slider, fig, table, timer, button, playing = beam_tab.run_search(
        DEFAULT["prompt"], True, 4, 12, 1.0, "False")
    tree = beam_search(session, **DEFAULT)
    assert slider.maximum == tree.num_steps and "Stopped" in summary and len(table) == 4
    # Play at the last step starts over from the prompt; each tick shows one more step.
    timer, button, playing, slider, fig = beam_tab.play_pause(tree.num_steps, request, False)
    assert timer.active and playing and slider.value == 0 and button.value == beam_tab.PAUSE
    slider, fig, timer, button, playing = beam_tab.tick(0, request, True)
    assert slider.value == 1 and timer.active and playing
    slider, fig, timer, button, playing = beam_tab.tick(tree.num_steps - 1, request, True)
    assert slider.value == tree.num_steps and not timer.active and not playing and button.value == beam_tab.PLAY
    # Pause stops the timer.
    timer, button, playing, _, _ = beam_tab.play_pause(3, request, True)
    assert not timer.active and not playing


def test_comparison_rows(session):
    request = beam_tab._request(DEFAULT["prompt"], True, 4, 12, 1.0, "False")
    table = beam_tab.run_compare(request, 0)
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
