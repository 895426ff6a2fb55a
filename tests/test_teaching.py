"""The teaching layer (issue 8): lessons state the loaded model's true numbers, the guided tour walks the
tabs in lesson order, presenter mode, shareable links and downloads."""

from __future__ import annotations

import csv
import re
from urllib.parse import parse_qsl

import gradio as gr
import pytest

import app
from components import share
from components.export import csv_file, json_file
from components.teaching import load_lesson, lesson_facts, lesson_names, render_lesson
from inference.timeline import kv_shape

TAB_LESSONS = {"tokenizer", "forward", "attention", "interventions", "sampling", "beam", "prefill"}
# Claims a lesson may make about the model, and the fact each must equal.
CLAIMS = {
    r"(\d[\d,]*) (?:decoder |transformer )?layers": lambda f, kv: f.num_layers,
    r"(\d[\d,]*) (?:query |attention )?heads": lambda f, kv: f.num_heads,
    r"(\d[\d,]*) (?:KV|key-value|key/value) heads": lambda f, kv: f.num_kv_heads,
    r"(\d[\d,]*) bytes per token": lambda f, kv: kv.bytes_per_token,
    r"vocabulary of (\d[\d,]*)": lambda f, kv: f.vocab_size,
    r"(\d[\d,]*) (?:vocabulary )?entries": lambda f, kv: f.vocab_size,
}


def _claims(text: str) -> list[tuple[str, int]]:
    return [(pattern, int(m.group(1).replace(",", ""))) for pattern in CLAIMS for m in re.finditer(pattern, text)]


def test_every_tab_has_a_lesson_with_things_to_try():
    assert TAB_LESSONS <= set(lesson_names())
    for name in TAB_LESSONS:
        lesson = load_lesson(name)
        assert lesson.title and len(lesson.body) > 300, name
        assert 2 <= len(lesson.tries) <= 4, f"{name}: {len(lesson.tries)} tries"


def test_lessons_state_the_models_true_numbers(session):
    facts, kv = session.facts, kv_shape(session)
    seen = set()
    for name in lesson_names():
        lesson = load_lesson(name)
        # Numbers about the model are placeholders filled from the model, never typed into the text.
        assert not _claims(lesson.body), f"{name}: a model number typed by hand: {_claims(lesson.body)}"
        text = render_lesson(lesson, session)
        assert "{{" not in text, name
        for pattern, value in _claims(text):
            assert value == CLAIMS[pattern](facts, kv), f"{name}: {pattern} says {value}"
            seen.add(pattern)
    # The default model's facts, as the issue states them.
    assert (facts.num_layers, facts.num_heads, facts.num_kv_heads, facts.vocab_size) == (30, 9, 3, 49_152)
    assert lesson_facts(session)["kv_bytes_per_token"] == "46,080"
    assert {r"(\d[\d,]*) (?:decoder |transformer )?layers", r"(\d[\d,]*) bytes per token"} <= seen, seen
    assert any("heads" in p for p in seen), seen


def test_tour_walks_the_tabs_in_lesson_order():
    tabs = [stop["tab"] for stop in app.tour()]
    assert set(tabs) == set(app.TAB_NAMES)
    # The course's order: tokens, the forward pass, attention, sampling, beam search, prefill and decode.
    assert [t for i, t in enumerate(tabs) if i == 0 or tabs[i - 1] != t] == app.TAB_NAMES
    step, panel, text, selected, back, nxt = app.tour_view(0)
    assert step == 0 and panel.visible and selected.selected == "tokenizer_tab" and not back.interactive
    last = app.tour_view(len(app.tour()) - 1)
    assert last[5].value.startswith("Finish")
    closed = app.tour_view(len(app.tour()))
    assert closed[1].visible is False


def test_share_values_are_checked_against_their_component():
    slider = gr.Slider(0, 2, step=0.05)
    whole = gr.Slider(0, 200, step=1)
    number = gr.Number(precision=0, minimum=0, maximum=10)
    box = gr.Checkbox()
    radio = gr.Radio(choices=[("first token", "sink"), ("previous", "previous")])
    assert share.decode(slider, "0.7") == 0.7
    assert share.decode(whole, "40") == 40 and isinstance(share.decode(whole, "40"), int)
    assert share.decode(number, "7") == 7
    assert share.decode(box, "1") is True and share.decode(box, "false") is False
    assert share.decode(radio, "previous") == "previous"
    assert share.decode(gr.Textbox(), "a=b&c") == "a=b&c"
    for component, raw in [(slider, "3"), (slider, "nan"), (slider, "inf"), (whole, "2.5"), (number, "-1"),
                           (box, "maybe"), (radio, "other"), (slider, "x"), (gr.Textbox(), "a" * 30_000)]:
        with pytest.raises(ValueError):
            share.decode(component, raw)


def test_a_shared_query_round_trips():
    fields = {"prompt": gr.Textbox(), "temperature": gr.Slider(0, 2, step=0.05), "chat": gr.Checkbox(),
              "top_k": gr.Slider(0, 200, step=1)}
    query = share.query_for("sampling", list(fields), ["Hi & bye = ?\n", 0.7, False, 40])
    parsed = dict(parse_qsl(query))
    assert parsed["tab"] == "sampling"
    updates, rejected = share.values_from_query("sampling", fields, parsed)
    assert updates == ["Hi & bye = ?\n", 0.7, False, 40] and rejected == []
    other, _ = share.values_from_query("beam", fields, parsed)
    assert all(isinstance(u, type(gr.skip())) for u in other)
    bad, rejected = share.values_from_query("sampling", fields, {**parsed, "temperature": "99"})
    assert rejected == ["temperature"] and bad[1] == gr.skip()
    with pytest.raises(ValueError):
        share.share_link(None, "x", {"tab": gr.Textbox()})


def test_exports_use_fixed_names_only():
    path = csv_file("tokens", ["#", "piece"], [[0, "a,b"], [1, "ü\n"]])
    assert path.endswith("/tokens.csv")
    with open(path, encoding="utf-8", newline="") as f:
        assert list(csv.reader(f)) == [["#", "piece"], ["0", "a,b"], ["1", "ü\n"]]
    assert json_file("tree", {"a": [1, 2]}).endswith("/tree.json")
    for bad in ("../x", "a/b", "", "X"):
        with pytest.raises(ValueError):
            csv_file(bad, ["a"], [])


# --- In the browser -------------------------------------------------------------------------------------


@pytest.mark.browser
def test_guided_tour_end_to_end(page, screenshot):
    page.locator("#lie-tour-start").click()
    titles = dict(zip(app.TAB_NAMES, (tab.TITLE for tab in app.TABS)))
    for i, stop in enumerate(app.tour()):
        page.wait_for_selector(f"#lie-tour-text:has-text('step {i + 1} of {len(app.tour())}')")
        assert stop["title"] in page.locator("#lie-tour-text").inner_text()
        selected = page.locator("#lie-tabs [role=tab][aria-selected=true]")
        page.wait_for_function("t => document.querySelector('#lie-tabs [role=tab][aria-selected=true]')"
                               ".innerText.trim() === t", arg=titles[stop["tab"]])
        assert selected.inner_text().strip() == titles[stop["tab"]]
        if i == 3:
            screenshot(page, "tour-step-4")
            page.locator("#lie-tour-back").click()
            page.wait_for_selector(f"#lie-tour-text:has-text('step {i} of')")
        page.locator("#lie-tour-next").click()
        if i == 3:
            page.wait_for_selector(f"#lie-tour-text:has-text('step {i + 1} of')")
            page.locator("#lie-tour-next").click()
    page.wait_for_selector("#lie-tour", state="hidden")


@pytest.mark.browser
def test_presenter_mode_and_a_shared_link(browser, app_url, screenshot):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        pg.goto(app_url + "/?tab=tokenizer&text=Hello+world%2C+tokens%21&chat=1&presenter=1")
        pg.wait_for_selector("#tok-chips .lie-tok.special")
        assert pg.locator("#tok-text textarea").input_value() == "Hello world, tokens!"
        assert pg.locator("#tok-chat input[type=checkbox]").is_checked()
        assert "<|im_start|>" in pg.locator("#tok-chips").inner_text()
        assert pg.evaluate("document.body.classList.contains('lie-presenter')")
        assert not pg.locator("#lie-limits").is_visible()
        font = pg.evaluate("parseFloat(getComputedStyle(document.querySelector('.gradio-container')).zoom)")
        assert font > 1.1
        screenshot(pg, "presenter-tokenizer")
        pg.locator("#lie-presenter-toggle").click()
        pg.wait_for_function("!document.body.classList.contains('lie-presenter')")
        assert pg.locator("#lie-limits").is_visible()

        pg.locator("#share-tokenizer").click()
        url_box = pg.locator("#share-tokenizer-url textarea, #share-tokenizer-url input").first
        pg.wait_for_function("() => { const e = document.querySelector('#share-tokenizer-url textarea, "
                             "#share-tokenizer-url input'); return e && e.value.startsWith('http'); }")
        link = url_box.input_value()
        assert link.startswith(app_url) and "tab=tokenizer" in link and "chat=1" in link
        parsed = dict(parse_qsl(link.split("?", 1)[1]))
        assert parsed["text"] == "Hello world, tokens!"

        pg.get_by_text("Token table").click()
        with pg.expect_download() as download:
            pg.locator("#tok-download").click()
        with open(download.value.path(), encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        from inference.session import current_session
        from inference.tokens import tokenize

        view = tokenize(current_session(), "Hello world, tokens!", chat=True)
        assert [int(r["id"]) for r in rows] == view.ids
        assert download.value.suggested_filename == "tokens.csv"
    finally:
        context.close()


@pytest.mark.browser
def test_a_bad_link_value_is_refused_with_a_message(page, app_url, screenshot):
    page.goto(app_url + "/?tab=tokenizer&chat=maybe&text=Fine")
    page.wait_for_selector("text=does not fit this app")
    assert page.locator("#tok-text textarea").input_value() == "Fine"
    assert not page.locator("#tok-chat input[type=checkbox]").is_checked()


@pytest.mark.browser
def test_a_figure_downloads_as_png_with_plotlys_button(page):
    page.wait_for_selector("#tok-languages .js-plotly-plot")
    page.locator("#tok-languages .js-plotly-plot").hover()
    with page.expect_download() as download:
        page.locator("#tok-languages .modebar-btn[data-title='Download plot as a PNG']").click()
    with open(download.value.path(), "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    summary = page.locator("#tok-languages-summary").inner_text()
    assert "tokens in English" in summary  # the figure's one-line text alternative
