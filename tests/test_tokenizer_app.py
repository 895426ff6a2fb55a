"""The Tokenizer tab through the launched app: the JSON API (gradio_client) and a real browser."""

import time

import pytest
from gradio_client.exceptions import AppError

from inference.limits import MAX_TEXT_CHARS


def test_tokenize_endpoint_returns_the_real_ids(client, session):
    result = client.predict("The capital of France is", False, api_name="/tokenize")
    assert result["ids"] == session.tokenizer("The capital of France is").input_ids
    assert result["num_tokens"] == len(result["ids"]) == len(result["pieces"]) == len(result["special"])
    assert result["model"] == session.model_id


def test_tokenize_endpoint_chat(client, session):
    result = client.predict("Hi", True, api_name="/tokenize")
    expected = session.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert result["ids"] == list(expected["input_ids"])
    assert result["special"].count(True) == 5


@pytest.mark.parametrize(
    "text, message",
    [("", "empty"), ("x" * 200_000, f"{MAX_TEXT_CHARS:,}"), ("\x00\x07\x1b[31m\ufffe\U0010ffff", None)],
)
def test_bad_input_gets_a_clear_message_and_the_server_keeps_serving(client, text, message):
    started = time.perf_counter()
    if message is None:  # binary garbage is still text: it tokenizes
        assert client.predict(text, False, api_name="/tokenize")["num_tokens"] > 0
    else:
        with pytest.raises(AppError, match=message):
            client.predict(text, False, api_name="/tokenize")
    assert time.perf_counter() - started < 10
    assert client.predict("still alive", False, api_name="/tokenize")["num_tokens"] == 2


@pytest.mark.browser
def test_tokenizer_tab_in_the_browser(page, screenshot):
    # The tab opens on the default example, already tokenized.
    page.wait_for_selector("#tok-chips .lie-tok")
    page.get_by_role("button", name="Chinese", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#tok-chips .lie-tok')].some(e => e.classList.contains('partial'))"
    )
    chips = page.locator("#tok-chips .lie-tok")
    assert chips.count() > 5
    assert "id " in chips.first.get_attribute("title")
    screenshot(page, "tokenizer-chinese")

    page.locator("#tok-chat input[type=checkbox]").check()
    page.wait_for_selector("#tok-chips .lie-tok.special")
    assert "<|im_start|>" in page.locator("#tok-chips").inner_text()
    screenshot(page, "tokenizer-chat")

    page.locator("#tok-text textarea").fill("")
    page.locator("#tok-run").click()
    page.wait_for_selector(".toast-body, [data-testid='toast-body']")
    assert "empty" in page.locator(".toast-body, [data-testid='toast-body']").first.inner_text()
    screenshot(page, "tokenizer-empty-error")
