"""The Attention tab through the running app: the `attention` JSON endpoint (gradio_client), the event
functions, and the tab in headless Chromium."""

from __future__ import annotations

import time

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from inference.attention import capture_attention

TEXT = "The capital of France is"


def test_attention_endpoint_returns_the_captured_weights(client, session):
    result = client.predict(text=TEXT, layer=3, head=4, chat=False, api_name="/attention")
    maps = capture_attention(session, TEXT)
    assert result["tokens"] == maps.tokens.pieces and result["ids"] == maps.tokens.ids
    assert (result["num_layers"], result["num_heads"], result["num_kv_heads"]) == (30, 9, 3)
    assert result["kv_head"] == 1 and result["heads_sharing_kv"] == [3, 4, 5]
    weights = np.array(result["weights"])
    np.testing.assert_allclose(weights, maps.pattern(3, 4), atol=1e-5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=2e-3)
    assert len(result["decode"]["row"]) == maps.n + 1 and result["decode"]["token"] == "·Paris"
    lens = result["logit_lens"]
    assert lens["final_token"] == "·Paris" and len(lens["layers"]) == 31
    assert lens["layers"][0]["layer"] == "embeddings" and lens["layers"][-1]["layer"] == "layer 29"
    last = lens["layers"][-1]
    assert last["top"][0]["token"] == "·Paris" and last["top"][0]["prob"] == pytest.approx(last["final_token_prob"])
    assert len(last["top"]) == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text=TEXT, layer=30, head=0), "Layer 30 does not exist: this model has 30 layers"),
        (dict(text=TEXT, layer=-1, head=0), "Layer -1 does not exist"),
        (dict(text=TEXT, layer=0, head=9), "Head 9 does not exist: each layer has 9 heads"),
        (dict(text="   ", layer=0, head=0), "empty"),
        (dict(text="word " * 600, layer=0, head=0), "at most 512 tokens"),
    ],
)
def test_attention_endpoint_bad_input(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, chat=False, api_name="/attention")


def test_switch_events_need_a_run_and_follow_the_model(session):
    from gradio import Error

    from components.attention_tab import show_head

    with pytest.raises(Error, match="Press Run"):
        show_head(None, 0, 0, False, None, "first")
    with pytest.raises(Error, match="press Run"):
        show_head({"model": "other/model", "text": TEXT, "chat": False}, 0, 0, False, None, "first")
    state = {"model": session.model_id, "text": TEXT, "chat": False}
    with pytest.raises(Error, match="Layer 31 does not exist"):
        show_head(state, 31, 0, False, None, "first")
    figure, note, focus, overview = show_head(state, 2, 7, False, 4, "entropy")
    assert "Layer 2, head 7" in figure.layout.title.text
    assert "KV head 2, shared with heads 6–8" in note
    assert "Token #4" in focus and 'data-layer="29"' in overview


def _heatmap_title(page) -> str:
    return page.locator("#att-heatmap .gtitle").first.text_content()


def _wait_title(page, expected: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#att-heatmap .gtitle') || {}).textContent?.startsWith(t)", arg=expected
    )


@pytest.mark.browser
def test_attention_tab_in_the_browser(page, screenshot):
    page.get_by_role("tab", name="Attention").click()
    page.wait_for_selector("#att-overview td[data-layer]")
    _wait_title(page, "Layer 0, head 0")

    # Run an example: the info line, the map and the lens follow it.
    page.get_by_role("button", name="Repeated text (induction heads)").click()
    page.wait_for_function("/^20\\s*tokens/.test(document.querySelector('#att-info').innerText)")
    page.wait_for_selector("#att-lens .js-plotly-plot")
    ticks = page.locator("#att-heatmap .yaxislayer-above .ytick text").all_text_contents()
    assert "·lazy" in ticks
    screenshot(page, "attention-example")

    # Move the layer slider with the keyboard: the heatmap shows the next layer.
    slider = page.locator("#att-layer input[type=range]")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    _wait_title(page, "Layer 3, head 0")
    screenshot(page, "attention-layer-3")

    # Click a head in the overview: the sliders and the heatmap open it.
    before = page.locator("#att-heatmap .heatmaplayer image").first.get_attribute("href")
    page.locator("#att-overview td[data-layer='5'][data-head='4']").click()
    _wait_title(page, "Layer 5, head 4")
    assert page.locator("#att-layer input[type=number]").input_value() == "5"
    assert page.locator("#att-head input[type=number]").input_value() == "4"
    assert page.locator("#att-overview td.selected").get_attribute("data-head") == "4"
    assert "KV head 1, shared with heads 3–5" in page.locator("#att-gqa").inner_text()
    after = page.locator("#att-heatmap .heatmaplayer image").first.get_attribute("href")
    assert before != after  # the drawn map itself changed, not only its title
    screenshot(page, "attention-head-5-4")

    # The layer's mean over heads, from the overview's last column.
    page.locator("#att-overview td[data-layer='5'][data-head='mean']").click()
    _wait_title(page, "Layer 5, mean over heads")
    assert page.locator("#att-mean input").is_checked()
    page.locator("#att-mean input").uncheck()  # back to the head the slider still holds
    _wait_title(page, "Layer 5, head 4")

    # Token focus on the decode step's new token.
    page.locator("#att-token input").click()
    page.get_by_role("option", name="(decode step)").click()
    page.wait_for_function("document.querySelector('#att-focus').innerText.includes('Token #20')")
    screenshot(page, "attention-focus-decode")


@pytest.mark.browser
def test_attention_tab_bad_input_in_the_browser(page, screenshot):
    page.get_by_role("tab", name="Attention").click()
    page.wait_for_selector("#att-overview td[data-layer]")
    page.locator("#att-text textarea").fill("word " * 600)
    page.locator("#att-run").click()
    page.get_by_text("at most 512 tokens").first.wait_for()
    time.sleep(0.5)  # let the message finish fading in
    screenshot(page, "attention-too-long")
    page.locator("#att-text textarea").fill("   ")
    page.locator("#att-run").click()
    page.get_by_text("is empty").first.wait_for()
