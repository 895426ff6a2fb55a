"""The Forward pass tab through the running app: the `forward_pass` and `surprisal` JSON endpoints
(gradio_client), the event functions, and the tab in headless Chromium (a click on an attention box leads to
the Attention tab)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError

from inference.forward import forward_pass
from inference.limits import MAX_FORWARD_TOKENS

TEXT = "The capital of France is"


def test_forward_pass_endpoint(client, session):
    result = client.predict(text=TEXT, chat=False, api_name="/forward_pass")
    forward = forward_pass(session, TEXT)
    assert result["tokens"] == forward.tokens.pieces and result["num_layers"] == 30
    assert result["diagram_parameters"] == result["num_parameters"] == session.model.num_parameters()
    keys = [box["key"] for box in result["diagram"]]
    assert keys == ["ids", "embed", "positions", "layers", "final_norm", "lm_head", "logits", "softmax"]
    assert result["positions"]["kind"] == "rope" and result["positions"]["thetas"] == {"all": 100000.0}
    norms = np.array(result["hidden_norms"])
    assert norms.shape == (31, forward.n) and np.array(result["attn_update_norms"]).shape == (30, forward.n)
    np.testing.assert_allclose(norms, forward.hidden_norms, rtol=1e-3, atol=1e-3)
    assert result["next_token"][0]["token"] == "·Paris" and result["logit_lens"]["top_tokens"][-1] == "·Paris"
    assert result["max_tokens"] == MAX_FORWARD_TOKENS


def test_surprisal_endpoint_matches_the_models_loss(client, session):
    text = "The quick brown fox jumps over the lazy dog."
    result = client.predict(text=text, chat=False, api_name="/surprisal")
    ids = torch.tensor([result["ids"]])
    with torch.no_grad():
        loss = session.model(input_ids=ids, labels=ids).loss.item()
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert result["surprisal_bits"][0] is None and len(result["surprisal_bits"]) == len(result["tokens"])
    assert result["mean_bits"] == pytest.approx(math.log2(result["perplexity"]), rel=1e-4)
    worst = result["most_surprising"][0]
    assert worst["bits"] == pytest.approx(max(b for b in result["surprisal_bits"] if b is not None), abs=1e-4)


def test_chat_text_runs_in_the_template(client, session):
    result = client.predict(text="Hi", chat=True, api_name="/surprisal")
    assert result["tokens"][0] == "<|im_start|>" and result["num_predicted"] == len(result["tokens"]) - 1


@pytest.mark.parametrize(
    "endpoint, text, message",
    [
        ("/forward_pass", "   ", "empty"),
        ("/surprisal", "", "empty"),
        ("/surprisal", "Hello", "single token: perplexity needs at least two tokens"),
        ("/forward_pass", "word " * (MAX_FORWARD_TOKENS + 5), f"at most {MAX_FORWARD_TOKENS:,} tokens"),
    ],
)
def test_endpoints_bad_input(client, endpoint, text, message):
    with pytest.raises(AppError, match=message):
        client.predict(text=text, chat=False, api_name=endpoint)


def test_one_token_text_draws_and_says_there_is_no_perplexity(session):
    from components.forward_tab import run_forward

    views = run_forward("Hello", False, None)
    assert "— (one token)" in views[1]
    assert "no perplexity" in views[11] and "No token is predicted" in views[12]


def test_box_clicks_and_tab_links(session):
    from gradio import Error

    from components.forward_tab import open_tab, pick_box, run_forward

    class Click:  # what the diagram's JS sends
        def __init__(self, key):
            self._data = {"key": key}

    state = run_forward(TEXT, False, None)[0]
    with pytest.raises(Error, match="Press Run"):
        pick_box(None, Click("embed"))
    with pytest.raises(Error, match="no box"):
        pick_box(state, Click("nonsense"))
    state, diagram, explain = pick_box(state, Click("layer.attention"))
    assert 'class="fw-box selected kind-attention"' in diagram and "9 heads of size 64" in explain
    assert 'data-tab="attention_tab">Open the Attention tab →</button>' in explain
    assert open_tab(state).selected == "attention_tab"
    state, _, explain = pick_box(state, Click("logits"))
    assert open_tab(state).selected == "sampling_tab" and "49,152" in explain
    state, _, explain = pick_box(state, Click("layer.input_layernorm"))
    assert "fw-link" not in explain and "RMSNorm" in explain
    with pytest.raises(Error, match="Pick a box"):
        open_tab(state)


def test_every_box_is_explained_with_its_link(session):
    from components.forward_tab import _boxes, _pass, pick_box, run_forward

    class Click:
        def __init__(self, key):
            self._data = {"key": key}

    state = run_forward(TEXT, False, None)[0]

    def walk(boxes):
        for box in boxes:
            yield box
            yield from walk(box["children"])

    boxes = list(walk(_boxes(_pass(state))))
    assert len(boxes) >= 20
    for box in boxes:
        state, diagram, explain = pick_box(state, Click(box["key"]))
        assert f'data-key="{box["key"]}"' in diagram and len(explain) > 200, box["key"]
        assert ("fw-link" in explain) == bool(box["link"]), box["key"]


def test_prompt_comparison_puts_both_distributions_on_one_chart(session):
    from components.forward_tab import compare_prompts

    a, b = "The capital of France is", "Q: What is the capital of France?\nA:"
    figure, note = compare_prompts(a, b)
    bars_a, bars_b = figure.data
    assert list(bars_a.y) == list(bars_b.y) and "·Paris" in bars_a.y
    paris = list(bars_a.y).index("·Paris")
    expected = float(np.exp(forward_pass(session, a).next_logprobs[7042]))  # 7042 = "·Paris"
    assert bars_a.x[paris] == pytest.approx(expected, abs=1e-4) and bars_b.x[paris] < bars_a.x[paris]
    assert "Top token after A: <b>·Paris</b>" in note


@pytest.mark.browser
def test_forward_tab_in_the_browser(page, screenshot):
    page.get_by_role("tab", name="Forward pass").click()
    page.wait_for_selector("#fw-diagram [data-key='layer.attention']")

    # Run an example: the info line, the diagram's shapes and the surprisal follow it.
    page.get_by_role("button", name="Who was tired?").click()
    page.wait_for_function("/^11\\s*tokens/.test(document.querySelector('#fw-info').innerText)")
    page.wait_for_function("document.querySelector('#fw-diagram').innerText.includes('[11 × 576]')")
    assert "134,515,008" in page.locator("#fw-diagram .fw-total").inner_text()
    page.wait_for_selector("#fw-surprisal .fw-tok")
    page.wait_for_selector("#fw-prompt-chart .js-plotly-plot")
    screenshot(page, "forward-example")

    # Click the attention box: it is explained, and its link lands on the Attention tab.
    page.locator("#fw-diagram [data-key='layer.attention'] .fw-head").click()
    page.wait_for_selector("#fw-diagram .fw-box.selected[data-key='layer.attention']")
    assert "Self-attention" in page.locator("#fw-explain").inner_text()
    page.locator("#fw-open").wait_for(state="visible")
    page.locator("#fw-diagram").scroll_into_view_if_needed()
    screenshot(page, "forward-attention-box")
    page.locator("#fw-open").click()
    page.wait_for_selector("#att-overview td[data-layer]")
    assert page.get_by_role("tab", name="Attention").get_attribute("aria-selected") == "true"
    screenshot(page, "forward-landed-on-attention")


@pytest.mark.browser
def test_forward_tab_bad_input_in_the_browser(page, screenshot):
    page.get_by_role("tab", name="Forward pass").click()
    page.wait_for_selector("#fw-diagram [data-key='layer.attention']")
    text = page.locator("#fw-text textarea")
    text.fill("Hello")
    page.locator("#fw-run").click()
    page.wait_for_function("document.querySelector('#fw-surprisal').innerText.includes('no perplexity')")
    text.fill("word " * (MAX_FORWARD_TOKENS + 5))
    page.locator("#fw-run").click()
    page.get_by_text(f"at most {MAX_FORWARD_TOKENS:,} tokens").first.wait_for()
    time.sleep(0.5)  # let the message finish fading in
    screenshot(page, "forward-too-long")
    text.fill("  ")
    page.locator("#fw-run").click()
    page.get_by_text("is empty").first.wait_for()
