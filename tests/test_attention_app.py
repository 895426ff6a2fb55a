"""The Attention tab through the running app: the `attention` JSON endpoint (gradio_client), the event
functions, the teaching layer (lesson tries, shared links, CSV downloads, text alternatives, presenter mode),
and the tab in headless Chromium."""

from __future__ import annotations

import csv
import time
from urllib.parse import parse_qsl, quote

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from components.attention.figures import attention_summary, attention_table, lens_summary, overview_summary
from components.teaching import load_lesson
from inference.attention import capture_attention
from conftest import assert_no_error

TEXT = "The capital of France is"
REPEATED = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."


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

    from components.attention.layout import show_head

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


# ---------------------------------------------------------------------------------------------------
# Teaching layer: text alternatives and downloads (pure functions), then the browser


def test_text_alternatives_state_the_data(session):
    maps = capture_attention(session, REPEATED)
    pieces = maps.tokens.pieces
    weights, decode = maps.pattern(17, 4), maps.decode.row(17, 4)
    text = attention_summary(weights, pieces, "Layer 17, head 4", decode, maps.decode.piece)
    # The induction head of the lesson's first try: the second copy looks one token past the first copy.
    q, k = 17, 8  # #17 ·lazy looks at #8 ·dog, the token that followed ·lazy the first time
    assert f"#{q} ·lazy → #{k} ·dog ({weights[q, k]:.2f})" in text and weights[q, k] > 0.5
    assert f"{weights[2:, 0].mean():.0%} of its weight on the first token" in text
    label, unit = "attention to the previous token", "weight"
    values = maps.summaries["previous"]
    grid = overview_summary(values, label, unit)
    assert f"highest in layer {values.max(1).argmax()}" in grid and f"({values.max():.2f})" in grid
    lens = capture_attention(session, TEXT).lens
    col = lens.column(4)
    line = lens_summary(lens.layer_names, [layer[col] for layer in lens.top_pieces], lens.answer_pieces[col],
                        lens.answer_probs[:, col], "#4 ·is")
    assert line.startswith("Logit lens after #4 ·is: the model's answer ·Paris") and "from layer 29 on" in line


def test_attention_table_rows_sum_to_one(session):
    maps = capture_attention(session, TEXT)
    header, rows = attention_table(maps.pattern(3, 4), maps.tokens.pieces, maps.decode.row(3, 4), maps.decode.piece)
    n = maps.n
    assert header[0] == "query \\ key" and header[1:] == [f"#{i} {p}" for i, p in enumerate(maps.tokens.pieces)] + [
        f"#{n} ·Paris (decode step)"]
    matrix = np.array([[float(x) for x in row[1:]] for row in rows])  # [n+1, n+1]
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=2e-3)
    np.testing.assert_allclose(matrix[:n, :n], maps.pattern(3, 4), atol=1e-6)
    assert np.all(np.triu(matrix, 1) == 0)  # the causal mask; the decode row sees every key


@pytest.mark.browser
def test_lesson_tries_and_presenter_mode(page, screenshot):
    page.get_by_role("tab", name="Attention").click()
    page.wait_for_selector("#lesson-attention .lie-lesson-body")
    _wait_title(page, "Layer 0, head 0")
    tries = load_lesson("attention").tries
    expected = ["Layer 17, head 4", "Layer 16, head 0", "Layer 20, mean over heads"]
    for i, (t, title) in enumerate(zip(tries, expected)):
        page.locator(f"#try-attention-{i}").click()
        _wait_title(page, title)
        page.wait_for_function("t => document.querySelector('#att-text textarea').value === t", arg=t.values["text"])
        page.wait_for_function("t => document.querySelector('#att-heatmap-summary').innerText.startsWith(t)", arg=title)
        assert_no_error(page)
        if i == 0:
            assert "#17 ·lazy → #8 ·dog" in page.locator("#att-heatmap-summary").inner_text()
            screenshot(page, "attention-try-induction")
    # Every figure can be saved as a PNG from plotly's own toolbar (shown on hover).
    page.locator("#att-heatmap .js-plotly-plot").hover()
    assert page.locator("#att-heatmap [data-title='Download plot as a PNG']").count() == 1
    # The lens of the last try: Paris appears only in the last layers.
    assert "·Paris" in page.locator("#att-lens-summary").inner_text()
    assert page.locator("#att-mean input").is_checked()

    # Presenter mode hides the advanced panels (downloads, the lens table) and keeps the lesson and the map.
    assert page.locator("#att-map-csv-row").is_visible()
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("document.body.classList.contains('lie-presenter')")
    assert not page.locator("#att-map-csv-row").is_visible()
    assert not page.locator("#att-lens-table-box").is_visible()
    assert page.locator("#att-heatmap").is_visible() and page.locator("#lesson-attention").is_visible()
    screenshot(page, "attention-presenter")


@pytest.mark.browser
def test_shared_link_reproduces_the_view_and_downloads_match_the_api(page, app_url, client, screenshot):
    query = (f"?tab=attention&text={quote(REPEATED)}&chat=0&layer=17&head=5&mean=0&metric=entropy&token=12")
    page.goto(app_url + "/" + query)
    _wait_title(page, "Layer 17, head 5")
    assert page.locator("#att-text textarea").input_value() == REPEATED
    assert page.locator("#att-layer input[type=number]").input_value() == "17"
    assert page.locator("#att-head input[type=number]").input_value() == "5"
    assert page.locator("#att-metric input[value=entropy]").is_checked()
    assert page.locator("#att-overview td.selected").get_attribute("data-layer") == "17"
    page.wait_for_function("document.querySelector('#att-focus').innerText.includes('Token #12 ·brown')")
    assert "#12 ·brown" in page.locator("#att-token input").input_value()
    assert "after #12 ·brown" in page.locator("#att-lens-summary").inner_text()
    assert_no_error(page)
    screenshot(page, "attention-shared-link")

    # Copy link gives back the same query.
    page.locator("#share-attention").click()
    page.wait_for_function("() => (document.querySelector('#share-attention-url textarea, #share-attention-url input')"
                           " || {}).value?.startsWith('http')")
    link = page.locator("#share-attention-url textarea, #share-attention-url input").first.input_value()
    shared = dict(parse_qsl(link.split("?", 1)[1]))
    assert shared == {"tab": "attention", "text": REPEATED, "chat": "0", "layer": "17", "head": "5", "mean": "0",
                      "metric": "entropy", "token": "12"}

    # The map of the shown head as CSV: rows sum to 1 and equal the endpoint's weights.
    api = client.predict(text=REPEATED, layer=17, head=5, chat=False, api_name="/attention")
    assert page.locator("#att-map-csv").is_disabled()
    page.locator("#att-map-csv-prepare").click()
    page.wait_for_function("!document.querySelector('#att-map-csv').disabled")
    with page.expect_download() as download:
        page.locator("#att-map-csv").click()
    assert download.value.suggested_filename == "attention-layer17-head5.csv"
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    n = len(api["tokens"])
    assert [r[0] for r in rows[1:]] == [f"#{i} {p}" for i, p in enumerate(api["tokens"])] + [
        f"#{n} {api['decode']['token']} (decode step)"]
    matrix = np.array([[float(x) for x in r[1:]] for r in rows[1:]])  # [n+1, n+1]
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=2e-3)
    np.testing.assert_allclose(matrix[:n, :n], np.array(api["weights"]), atol=1e-5)
    np.testing.assert_allclose(matrix[n], np.array(api["decode"]["row"]), atol=1e-5)

    # A head switch empties the download, so a file always holds the map on screen.
    page.locator("#att-overview td[data-layer='3'][data-head='1']").click()
    _wait_title(page, "Layer 3, head 1")
    page.wait_for_function("document.querySelector('#att-map-csv').disabled")

    # The logit lens as CSV: the last position's rows equal the endpoint's lens.
    with page.expect_download() as download:
        page.locator("#att-lens-csv").click()
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        lens_rows = list(csv.DictReader(f))
    last = [r for r in lens_rows if int(r["position"]) == n - 1]
    for layer in api["logit_lens"]["layers"]:
        mine = [r for r in last if r["layer"] == layer["layer"]]
        assert [r["guess"] for r in mine] == [t["token"] for t in layer["top"]]
        np.testing.assert_allclose([float(r["prob"]) for r in mine], [t["prob"] for t in layer["top"]], atol=1e-5)
        assert float(mine[0]["p_final_answer"]) == pytest.approx(layer["final_token_prob"], abs=1e-5)
