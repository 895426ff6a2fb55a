"""The Forward pass tab through the running app: the `forward_pass` and `surprisal` JSON endpoints
(gradio_client), the event functions, and the tab in headless Chromium: a click on an attention box leads to
the Attention tab, the lesson's "try this" buttons run, a shared link reproduces the view, the CSV downloads
hold the endpoints' numbers, and presenter mode hides the advanced panels."""

from __future__ import annotations

import csv
import json
import math
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError

from inference.forward import forward_pass
from inference.limits import FORWARD_EMBED_TOKENS, MAX_FORWARD_TOKENS

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


def _views(views) -> dict:
    from components.forward.events import RUN_OUTPUTS

    assert len(views) == len(RUN_OUTPUTS)
    return dict(zip(RUN_OUTPUTS, views))


def test_one_token_text_draws_and_says_there_is_no_perplexity(session):
    from components.forward.events import run_forward

    views = _views(run_forward("Hello", False, None))
    assert "— (one token)" in views["info"]
    assert "no perplexity" in views["surprisal"] and "No token is predicted" in views["surprising"]
    assert "Only one token" in views["cosine_alt"]


def test_lesson_states_the_models_numbers(session):
    from components.teaching import load_lesson, render_lesson

    lesson = load_lesson("forward")
    text = " ".join(render_lesson(lesson, session).split())  # line breaks of the Markdown source as spaces
    f = session.facts
    assert f"Then {f.num_layers} decoder layers run" in text and f"into {f.vocab_size:,} **logits**" in text
    assert f"({f.vocab_size:,} rows of {f.hidden_size} numbers)" in text and f"{f.num_heads} heads" in text
    assert [t.label for t in lesson.tries][0].startswith("Next token")


def test_lesson_claims_hold_for_the_model(session):
    """What the lesson says the tries show is what this model does."""
    from components.teaching import load_lesson

    tries = [t.values for t in load_lesson("forward").tries]
    normal, shuffled = (forward_pass(session, tries[1][k]) for k in ("text_a", "text_b"))
    assert shuffled.perplexity > 10 * normal.perplexity  # "many times higher"
    twice = forward_pass(session, tries[2]["text"])
    half = twice.n // 2  # the second copy: tokens half..n-1 (bits index i predicts token i + 1)
    first, second = twice.surprisal_bits[: half - 1], twice.surprisal_bits[half - 1:]
    assert np.median(second) < np.median(first) and (second < first.mean()).mean() > 0.5  # "most ... far fewer bits"
    france = forward_pass(session, tries[0]["text"])
    lens = france.lens_answer_probs
    assert lens[-1] > 0.5 * lens.max() and lens[:-2].max() < 0.1 * lens[-1]  # "only in the last layer or two"
    norms = france.hidden_norms  # [L+1, n]
    assert norms[-1, -1] > 10 * norms[0, -1]  # "the stream grows as layers add to it"
    assert norms[-1, 0] > norms[-1, 1:].max() and np.unravel_index(norms.argmax(), norms.shape)[1] == 0  # first token


def test_summaries_state_the_plotted_numbers(session):
    """Each figure's text alternative carries the numbers of the data it was drawn from."""
    from components.forward.events import RUN_OUTPUTS, prompt_comparison, run_forward
    from components.forward.figures import compare_summary

    views = _views(run_forward(TEXT, False, None))
    forward = forward_pass(session, TEXT)
    final = float(forward.lens_answer_probs[-1])
    assert f"“·Paris” first reaches 10% after layer 29 and ends at {final:.1%}" in views["lens_alt"]
    assert f"it goes from {forward.hidden_norms[0, -1]:,.1f} to {forward.hidden_norms[-1, -1]:,.1f}" in views["norms_alt"]
    assert "of the 5 token embeddings" in views["cosine_alt"] and "θ = 100,000" in views["rope_alt"]
    assert all(views[name] for name in RUN_OUTPUTS if name.endswith("_alt"))
    c = prompt_comparison(TEXT, "Q: What is the capital of France?\nA:")
    assert f"after A the top token is “·Paris” ({c['probs_a'].max():.1%})" in compare_summary(
        c["labels"], c["probs_a"], c["probs_b"])


def _luminance(rgb: str) -> float:
    channels = [int(c) / 255 for c in rgb[4:-1].split(",")]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_colours_are_colour_blind_safe_and_text_stays_readable():
    from components.forward import figures as fig

    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    assert {fig.ATTN_COLOUR, fig.MLP_COLOUR, fig.LENS_COLOUR, *fig.PROMPT_COLOURS} <= okabe_ito
    bits = np.linspace(0, 20, 81)
    lightness = [_luminance(fig.surprisal_colour(b)) for b in bits]
    assert all(a >= b for a, b in zip(lightness, lightness[1:]))  # "more surprising" reads in greyscale too
    for b, lum in zip(bits, lightness):  # the token's text on its colour: WCAG AA contrast (4.5:1) or better
        text_lum = {"#000": 0.0, "#fff": 1.0}[fig.surprisal_text_colour(b)]
        high, low = max(lum, text_lum), min(lum, text_lum)
        assert (high + 0.05) / (low + 0.05) >= 4.5, b
    figure = fig.updates_figure(["layer 0"], np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)), skip_first=True)
    assert figure.data[1].marker.pattern.shape == "/"  # MLP bars differ from attention bars by more than hue


def test_box_clicks_and_tab_links(session):
    from gradio import Error

    from components.forward.events import open_tab, pick_box, run_forward

    class Click:  # what the diagram's JS sends
        def __init__(self, key):
            self._data = {"key": key}

    state = run_forward(TEXT, False, None)[0]
    with pytest.raises(Error, match="Press Run"):
        pick_box(None, Click("embed"))
    with pytest.raises(Error, match="no box"):
        pick_box(state, Click("nonsense"))
    state, diagram, explain, key = pick_box(state, Click("layer.attention"))
    assert key == "layer.attention"  # the hidden field the shareable link reads
    # A link's box is drawn picked; one this model has not is dropped.
    assert 'fw-box selected kind-attention' in run_forward(TEXT, False, None, "layer.attention")[2]
    assert "selected" not in run_forward(TEXT, False, None, "layer.nonsense")[2]
    assert 'class="fw-box selected kind-attention"' in diagram and "9 heads of size 64" in explain
    assert 'data-tab="attention_tab">Open the Attention tab →</button>' in explain
    assert open_tab(state).selected == "attention_tab"
    state, _, explain, _ = pick_box(state, Click("logits"))
    assert open_tab(state).selected == "sampling_tab" and "49,152" in explain
    state, _, explain, _ = pick_box(state, Click("layer.input_layernorm"))
    assert "fw-link" not in explain and "RMSNorm" in explain
    with pytest.raises(Error, match="Pick a box"):
        open_tab(state)


def test_every_box_is_explained_with_its_link(session):
    from components.forward.events import diagram_of, pick_box, run_forward, shown_pass
    from components.forward.figures import box_links

    class Click:
        def __init__(self, key):
            self._data = {"key": key}

    state = run_forward(TEXT, False, None)[0]
    tops = diagram_of(shown_pass(state)).boxes
    boxes, links = [box for top in tops for box in top.walk()], box_links(tops)
    assert len(boxes) >= 20
    for box in boxes:
        state, diagram, explain, _ = pick_box(state, Click(box.key))
        assert f'data-key="{box.key}"' in diagram and len(explain) > 200, box.key
        assert ("fw-link" in explain) == bool(links[box.key]), box.key


def test_prompt_comparison_puts_both_distributions_on_one_chart(session):
    from components.forward.events import compare_prompts

    a, b = "The capital of France is", "Q: What is the capital of France?\nA:"
    figure, summary, note, download = compare_prompts(a, b)
    bars_a, bars_b = figure.data
    assert list(bars_a.y) == list(bars_b.y) and "·Paris" in bars_a.y
    paris = list(bars_a.y).index("·Paris")
    expected = float(np.exp(forward_pass(session, a).next_logprobs[7042]))  # 7042 = "·Paris"
    assert bars_a.x[paris] == pytest.approx(expected, abs=1e-4) and bars_b.x[paris] < bars_a.x[paris]
    assert "Top token after A: <b>·Paris</b>" in note and "after A the top token is “·Paris”" in summary
    with open(download.value["path"]) as f:  # the chart's bars as CSV, in the chart's order
        rows = list(csv.DictReader(f))
    assert [r["token"] for r in rows] == list(bars_a.y)
    assert float(rows[paris]["probability_after_a"]) == pytest.approx(expected, abs=1e-6)
    assert int(rows[paris]["id"]) == 7042


def _no_error_toast(page):
    assert page.locator(".toast-body.error, .toast-body.warning").count() == 0


def _download(page, elem_id: str) -> str:
    """Click a download button; the downloaded file's text."""
    with page.expect_download() as info:
        page.locator(f"#{elem_id}").click()
    with open(info.value.path(), encoding="utf-8") as f:
        return f.read()


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines()))


def _downloads_match_the_endpoints(page, client, text):
    """The CSV/JSON files of the view hold the same numbers as the JSON endpoints for the same text."""
    surprisal = client.predict(text=text, chat=False, api_name="/surprisal")
    rows = _csv(_download(page, "fw-download-surprisal"))
    assert [int(r["id"]) for r in rows] == surprisal["ids"] and [r["token"] for r in rows] == surprisal["tokens"]
    assert [int(r["position"]) for r in rows] == list(range(len(rows))) and rows[0]["surprisal_bits"] == ""
    bits = [float(r["surprisal_bits"]) for r in rows[1:]]
    np.testing.assert_allclose(bits, surprisal["surprisal_bits"][1:], atol=1e-4)
    np.testing.assert_allclose([float(r["probability"]) for r in rows[1:]], np.exp2(-np.array(bits)), rtol=1e-6)
    assert [r["top_prediction"] for r in rows[1:]] == surprisal["expected"][1:]
    assert 2 ** np.mean(bits) == pytest.approx(surprisal["perplexity"], rel=1e-5)

    forward = client.predict(text=text, chat=False, api_name="/forward_pass")
    rows = _csv(_download(page, "fw-download-residual"))
    n, layers = forward["num_tokens"], forward["num_layers"]
    assert len(rows) == (layers + 1) * n and rows[0]["stage"] == "embeddings" and rows[0]["layer"] == ""
    norms = np.array([float(r["residual_norm"]) for r in rows]).reshape(layers + 1, n)
    np.testing.assert_allclose(norms, forward["hidden_norms"], rtol=1e-4, atol=1e-3)
    attn = np.array([float(r["attention_update_norm"]) for r in rows[n:]]).reshape(layers, n)
    np.testing.assert_allclose(attn, forward["attn_update_norms"], rtol=1e-4, atol=1e-3)
    assert [int(r["layer"]) for r in rows[n::n]] == list(range(layers))

    lens = _csv(_download(page, "fw-download-lens"))
    assert len(lens) == layers + 1 and lens[-1]["final_answer"] == forward["next_token"][0]["token"]
    assert float(lens[-1]["final_answer_probability"]) == pytest.approx(forward["next_token"][0]["prob"], abs=1e-5)

    whole = json.loads(_download(page, "fw-download-json"))
    assert whole["text"] == text and whole["ids"] == forward["ids"] and whole["diagram"] == forward["diagram"]
    assert whole["surprisal"]["perplexity"] == surprisal["perplexity"]
    assert len(whole["embeddings"]["vectors"]) == min(n, FORWARD_EMBED_TOKENS)


@pytest.mark.browser
def test_forward_tab_in_the_browser(page, screenshot, client):
    """An example run, its downloads against the endpoints, bad input, and a box's link to the Attention tab (one
    page: every page load also runs every other tab's first view)."""
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
    _downloads_match_the_endpoints(page, client, "The cat sat on the mat because it was tired.")

    # Bad input: one token draws (without a perplexity); too long and empty get clear messages.
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


SHUFFLED = "market bread The to slowly milk man fresh old and walked buy the to."
TWICE = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."
LINK = {"tab": "forward", "text": "Hi", "chat": "1", "box": "layer.mlp",
        "text_a": "The quick brown fox jumps over the lazy dog.", "text_b": "The capital of France is",
        "prompt_a": "Q: What is the capital of France?\nA:", "prompt_b": "The capital of France is"}


@pytest.fixture
def linked_page(browser, app_url):
    """A page opened straight on a shared link (one page load: the link is the first thing it sees)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(f"{app_url}/?{urlencode(LINK)}")
    yield pg
    context.close()


@pytest.mark.browser
def test_shared_link_tries_and_presenter_mode(linked_page, screenshot, client):
    page = linked_page
    # The link opens this tab with its values: "Hi" in the chat template, the MLP box picked, both comparisons.
    page.wait_for_selector("#fw-diagram .fw-box.selected[data-key='layer.mlp']")
    assert page.get_by_role("tab", name="Forward pass").get_attribute("aria-selected") == "true"
    assert page.locator("#fw-text textarea").input_value() == "Hi"
    assert page.locator("#fw-chat input[type=checkbox]").is_checked()
    assert page.locator("#fw-prompt-a textarea").input_value() == LINK["prompt_a"]
    chat = client.predict(text="Hi", chat=True, api_name="/surprisal")
    page.wait_for_function(f"/^{len(chat['tokens'])}\\s*tokens/.test(document.querySelector('#fw-info').innerText)")
    assert "feed-forward network" in page.locator("#fw-explain").inner_text()
    for name in ("text_a", "text_b"):
        ppl = client.predict(text=LINK[name], chat=False, api_name="/surprisal")["perplexity"]
        page.wait_for_function(f"document.querySelector('#fw-pair').innerText.includes('perplexity {ppl:,.2f}')")
    top_a = client.predict(text=LINK["prompt_a"], chat=False, api_name="/forward_pass")["next_token"][0]
    page.wait_for_function("document.querySelector('#fw-prompt-note').innerText.includes("
                           f"'Top token after A: {top_a['token']}')")
    assert "30 decoder layers" in page.locator("#lesson-forward").inner_text()
    _no_error_toast(page)
    screenshot(page, "forward-shared-link")

    # Try "a sentence vs the same words shuffled": the main text and both comparison texts change.
    page.locator("#try-forward-1").click()
    shuffled = client.predict(text=SHUFFLED, chat=False, api_name="/surprisal")["perplexity"]
    page.wait_for_function(f"document.querySelector('#fw-pair').innerText.includes('perplexity {shuffled:,.2f}')")
    page.wait_for_function(f"document.querySelector('#fw-surprisal').innerText.includes('perplexity {shuffled:,.2f}')")
    assert page.locator("#fw-text-b textarea").input_value() == SHUFFLED
    assert not page.locator("#fw-chat input[type=checkbox]").is_checked()
    _no_error_toast(page)

    # Copy link: the URL carries the view as it is now (opening such a URL reproduces it: see above).
    page.locator("#share-forward").click()
    url_box = "#share-forward-url textarea, #share-forward-url input"
    page.wait_for_function(f"document.querySelector('{url_box}').value.includes('tab=forward')")
    url = page.locator(url_box).first.input_value()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {**LINK, "text": SHUFFLED, "chat": "0",
                     "text_a": "The old man walked slowly to the market to buy fresh bread and milk.", "text_b": SHUFFLED}

    # Try "a sentence said twice": its tokens and its perplexity as the endpoint computes it.
    page.locator("#try-forward-2").click()
    page.wait_for_function("/^20\\s*tokens/.test(document.querySelector('#fw-info').innerText)")
    assert page.locator("#fw-text textarea").input_value() == TWICE
    ppl = client.predict(text=TWICE, chat=False, api_name="/surprisal")["perplexity"]
    page.wait_for_function(f"document.querySelector('#fw-surprisal').innerText.includes('perplexity {ppl:,.2f}')")
    _no_error_toast(page)
    screenshot(page, "forward-try-said-twice")

    # Try "The capital of France is": the diagram's last box and the lens name the model's answer.
    page.locator("#try-forward-0").click()
    page.wait_for_function("/^5\\s*tokens/.test(document.querySelector('#fw-info').innerText)")
    top = client.predict(text="The capital of France is", chat=False, api_name="/forward_pass")["next_token"][0]
    page.wait_for_function(f"document.querySelector('#fw-lens-summary').innerText.includes('{top['token']}')")
    assert top["token"] in page.locator("#fw-diagram [data-key='softmax']").inner_text()
    _no_error_toast(page)

    # Presenter mode: the lesson and the main views stay, the advanced panels go.
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("document.body.classList.contains('lie-presenter')")
    assert page.locator("#fw-embeddings-section").is_hidden() and page.locator("#fw-norms").is_hidden()
    assert page.locator("#fw-download-surprisal").is_hidden()
    assert page.locator("#lesson-forward").is_visible() and page.locator("#fw-lens").is_visible()
    screenshot(page, "forward-presenter")
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("!document.body.classList.contains('lie-presenter')")
    assert page.locator("#fw-embeddings-section").is_visible()
