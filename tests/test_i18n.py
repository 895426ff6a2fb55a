"""The learner's language: the catalogue and the lessons exist in every language with the same placeholders,
lessons are still filled from the model in every language, and the page follows the language (Persian right to
left) in the browser."""

from __future__ import annotations

import re

import pytest
import yaml

import app
from components import i18n
from components.teaching import LESSONS_DIR, PLACEHOLDER, load_lesson, load_yaml, lesson_names, render_lesson
from conftest import assert_no_error

OTHERS = [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT]


@pytest.mark.parametrize("lang", OTHERS)
def test_catalogue_has_every_key_with_the_same_placeholders(lang):
    # inference.yaml translates inference's messages, whose English is in the code (test below)
    files = sorted(p.name for p in (i18n.CATALOGUE_DIR / lang).glob("*.yaml") if p.name != "inference.yaml")
    assert files == sorted(p.name for p in (i18n.CATALOGUE_DIR / "en").glob("*.yaml"))
    english = i18n.catalogue("en")
    other = {k: v for k, v in i18n.catalogue(lang).items() if not k.startswith("inference.")}
    assert set(other) == set(english), f"missing {sorted(set(english) - set(other))}, extra {sorted(set(other) - set(english))}"
    for key, text in english.items():
        assert i18n.placeholders(other[key]) == i18n.placeholders(text), (lang, key)
        assert other[key].strip(), (lang, key)


def _box_fields(node) -> list[tuple[str, set[str]]]:
    """(key path, {placeholders}) of every text in forward_boxes.yaml (its values may be nested mappings)."""
    if isinstance(node, dict):
        return [(f"{k}.{path}" if path else str(k), fields) for k, v in node.items() for path, fields in _box_fields(v)]
    return [("", i18n.placeholders(str(node)))]


def _tags(html: str) -> list[str]:
    return sorted(re.findall(r"</?[a-z]+", html))


@pytest.mark.parametrize("lang", OTHERS)
def test_every_lesson_exists_in_every_language_with_the_same_facts_and_tries(lang, session):
    assert sorted(p.name for p in (LESSONS_DIR / lang).iterdir()) == sorted(p.name for p in (LESSONS_DIR / "en").iterdir())
    for name in lesson_names():
        english, other = load_lesson(name, "en"), load_lesson(name, lang)
        assert other.title.strip() and other.title != english.title, (lang, name)
        assert set(PLACEHOLDER.findall(other.body)) == set(PLACEHOLDER.findall(english.body)), (lang, name)
        assert len(other.tries) == len(english.tries), (lang, name)
        for mine, theirs in zip(other.tries, english.tries):
            assert set(mine.values) == set(theirs.values), (lang, name, mine.label)
        rendered = render_lesson(other, session)  # every {{fact}} filled from the loaded model
        assert "{{" not in rendered, (lang, name)
        if "{{model}}" in english.body:
            assert session.label in rendered, (lang, name)
    tour, english_tour = load_yaml("tour.yaml", lang)["steps"], load_yaml("tour.yaml", "en")["steps"]
    assert [s["tab"] for s in tour] == [s["tab"] for s in english_tour]
    assert all(s["title"].strip() and s["text"].strip() for s in tour)
    boxes, english_boxes = load_yaml("forward_boxes.yaml", lang), load_yaml("forward_boxes.yaml", "en")
    assert _box_fields(boxes) == _box_fields(english_boxes)
    flat = dict(_box_fields(boxes))
    assert len(flat) == len(dict(_box_fields(english_boxes)))


def test_box_texts_keep_their_html_tags():
    def texts(node, out):
        if isinstance(node, dict):
            for v in node.values():
                texts(v, out)
        else:
            out.append(str(node))
        return out

    english = texts(load_yaml("forward_boxes.yaml", "en"), [])
    for lang in OTHERS:
        assert [_tags(t) for t in texts(load_yaml("forward_boxes.yaml", lang), [])] == [_tags(t) for t in english], lang


def test_no_fact_of_the_model_is_typed_into_a_translation():
    """The model's numbers reach every language's lesson only through placeholders (filled from the model)."""
    for name in lesson_names():
        for lang in OTHERS:
            text = (LESSONS_DIR / lang / f"{name}.md").read_text(encoding="utf-8")
            for typed in ("49,152", "49152", "46,080", "46080", "SmolLM2"):
                assert typed not in text or typed in (LESSONS_DIR / "en" / f"{name}.md").read_text(), (lang, name, typed)


def test_the_page_language_comes_from_the_link_then_the_browser_then_accept_language():
    assert i18n.page_language({"lang": "fa"}, "te", "zh-CN,zh;q=0.9") == "fa"
    assert i18n.page_language({}, "te", "zh-CN,zh;q=0.9") == "te"
    assert i18n.page_language({}, None, "de-DE,de;q=0.9,zh-CN;q=0.8,en;q=0.5") == "zh"
    assert i18n.page_language({}, None, "te-IN") == "te"
    assert i18n.page_language({"lang": "<script>"}, "../../etc", "xx") == "en"  # unknown values are ignored
    assert i18n.from_accept_language("en;q=0.2, nl;q=0.9") == "nl"
    assert i18n.from_accept_language("fa;q=abc, nl") == "nl"


def test_an_api_call_and_a_new_visitor_read_english():
    assert i18n.language() == "en"
    assert i18n.t("lesson.heading", title="x") == "Lesson: x"
    assert i18n.t("lesson.heading", "fa", title="x") != "Lesson: x"


# ---------------------------------------------------------------------------------------------------
# In the browser


def _open(browser, url, locale="en-US"):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, locale=locale)
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#lie-model-facts")
    return ctx, page


def _wait_language(page, lang):
    page.wait_for_function(f"document.documentElement.lang === '{lang}'")
    title = load_lesson("tokenizer", lang).title
    page.locator("#lesson-tokenizer").get_by_text(title, exact=False).first.wait_for()


@pytest.mark.browser
def test_a_persian_link_opens_right_to_left_with_token_chips_left_to_right(browser, app_url, screenshot):
    ctx, page = _open(browser, f"{app_url}/?lang=fa")
    try:
        _wait_language(page, "fa")
        assert page.evaluate("document.documentElement.dir") == "rtl"
        assert page.get_by_role("tab", name=i18n.t("tab.tokenizer", "fa")).is_visible()
        assert i18n.t("facts.parameters", "fa") in page.locator("#lie-model-facts").inner_text()
        page.locator("#tok-text textarea, #tok-text input").first.fill("The capital of France is")
        chips = page.locator(".lie-tokens").first
        chips.wait_for()
        assert chips.evaluate("e => getComputedStyle(e).direction") == "ltr"
        body = page.locator("#lesson-tokenizer .lie-lesson-body").first
        assert body.evaluate("e => getComputedStyle(e).direction") == "rtl"
        # The guided tour reads Persian too.
        page.locator("#lie-tour-start").click()
        page.wait_for_selector(f"#lie-tour-text:has-text('{app.tour('fa')[0]['title']}')")
        assert_no_error(page)
        screenshot(page, "language-fa")
    finally:
        ctx.close()


@pytest.mark.browser
def test_the_picker_changes_the_language_and_the_browser_remembers_it(browser, app_url, screenshot):
    ctx, page = _open(browser, app_url, locale="te-IN")  # Accept-Language: Telugu
    try:
        _wait_language(page, "te")
        screenshot(page, "language-te")
        # A result on screen follows the switch (redrawn from its run): the attention map's text alternative.
        page.get_by_role("tab", name=i18n.t("tab.attention", "te")).click()
        page.locator("#att-run").click()
        summary = "document.querySelector('#att-heatmap-summary').innerText"
        page.wait_for_function(f"/[\\u0C00-\\u0C7F]/.test({summary})")  # Telugu
        page.locator("#lie-lang input").click()
        page.get_by_role("option", name="中文").click()
        page.wait_for_function(f"/[\\u4E00-\\u9FFF]/.test({summary})")  # Chinese, without a new run
        page.get_by_role("tab", name=i18n.t("tab.tokenizer", "zh")).click()
        _wait_language(page, "zh")
        assert page.evaluate("document.documentElement.dir") == "ltr"
        assert page.get_by_role("tab", name=i18n.t("tab.sampling", "zh")).is_visible()
        screenshot(page, "language-zh")
        # A copied link carries the language; the same browser opens the app in Chinese without one.
        page.get_by_role("tab", name=i18n.t("tab.sampling", "zh")).click()
        page.locator("#share-sampling").click()
        page.wait_for_function("document.querySelector('#share-sampling-url textarea, #share-sampling-url input')"
                               ".value.includes('lang=zh')")
        page.goto(app_url)
        _wait_language(page, "zh")
        page.locator("#lie-lang input").click()
        page.get_by_role("option", name="English").click()
        _wait_language(page, "en")
        assert page.get_by_role("tab", name="Tokenizer").is_visible()
        assert_no_error(page)
    finally:
        ctx.close()


def test_translations_are_valid_yaml_front_matter():
    for lang in i18n.LANGUAGES:
        for path in (LESSONS_DIR / lang).glob("*.md"):
            front = path.read_text(encoding="utf-8").split("---\n")[1]
            assert isinstance(yaml.safe_load(front), dict), path


# ---------------------------------------------------------------------------------------------------
# No text shown to a user bypasses the catalogue


import ast  # noqa: E402
from pathlib import Path  # noqa: E402

COMPONENTS = Path(__file__).resolve().parent.parent / "components"
# Keyword arguments whose text a user reads: component labels and hints, figure titles, axis titles, legends.
TEXT_KEYWORDS = {"label", "info", "placeholder", "title", "xaxis_title", "yaxis_title", "legend_title_text",
                 "title_text", "name"}
# Calls whose first argument a user reads.
TEXT_CALLS = {"Button", "Markdown", "HTML", "Accordion", "Tab", "Info", "Warning", "Error", "InputError", "ModelLoadError", "note"}
ALLOWED = "# not translated:"  # a line marked so keeps its literal (say why: a model name, code, a unit)
TABS = sorted(p.name for p in COMPONENTS.iterdir() if p.is_dir() and (p / "layout.py").exists())


def _has_words(node) -> bool:
    """A string literal (or f-string) with at least two letters in a row: words a user reads."""
    parts = [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else \
        [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)] \
        if isinstance(node, ast.JoinedStr) else []
    return any(re.search(r"[A-Za-z]{2}", p) for p in parts)


def literals(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        texts = [kw.value for kw in node.keywords if kw.arg in TEXT_KEYWORDS]
        if name in TEXT_CALLS and node.args:
            texts.append(node.args[0])
        for text in texts:
            if _has_words(text) and ALLOWED not in lines[text.lineno - 1]:
                found.append(f"{path.relative_to(COMPONENTS)}:{text.lineno}: {lines[text.lineno - 1].strip()[:90]}")
    return found


@pytest.mark.parametrize("tab", TABS)
def test_no_user_facing_literal_in_a_tab(tab):
    found = [f for path in sorted((COMPONENTS / tab).glob("*.py")) for f in literals(path)]
    assert not found, f"{len(found)} texts bypass the catalogue:\n" + "\n".join(found[:40])


def test_no_user_facing_literal_in_the_page_shell():
    found = [f for path in [COMPONENTS / "header.py", COMPONENTS / "teaching.py", COMPONENTS / "i18n.py"]
             for f in literals(path)]
    assert not found, "\n".join(found)


INFERENCE = COMPONENTS.parent / "inference"
MESSAGE_CALLS = {"InputError", "ModelLoadError", "Message"}
KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


def name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def inference_messages() -> tuple[dict[str, str], list[str]]:
    """Every sentence `inference` can show a user, from its source: {key: English text}, and the problems found
    (a raise without a key, an f-string for text, fields that differ from the text's)."""
    messages, problems = {}, []
    for path in sorted(INFERENCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and name(node) in MESSAGE_CALLS) or path.name == "errors.py":
                continue
            where = f"{path.relative_to(INFERENCE)}:{node.lineno}"
            args = node.args
            if len(args) == 1 and not isinstance(args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                continue  # a Message made elsewhere (and checked there)
            if not (len(args) >= 2 and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in args[:2])
                    and KEY.match(args[0].value)):
                problems.append(f"{where}: give a key and a plain English text with {{fields}}")
                continue
            key, english = args[0].value, args[1].value
            if messages.get(key, english) != english:
                problems.append(f"{where}: key {key} has two texts")
            messages[key] = english
            given = {kw.arg for kw in node.keywords}
            if len(args) == 3:  # Message(key, english, {"field": value, ...})
                given = {k.value for k in args[2].keys} if isinstance(args[2], ast.Dict) else {None}
            elif not node.keywords and name(node) == "Message":  # a template, `.filled(...)` where it is raised
                given = {None}
            if None not in given and given != i18n.placeholders(english):
                problems.append(f"{where}: fields {sorted(given)} but the text has {sorted(i18n.placeholders(english))}")
    return messages, problems


def test_every_sentence_inference_raises_has_a_key_and_its_fields():
    messages, problems = inference_messages()
    assert not problems, f"{len(problems)} messages:\n" + "\n".join(problems[:60])
    assert len(messages) > 100


@pytest.mark.parametrize("lang", OTHERS)
def test_every_inference_message_is_translated_with_the_same_fields(lang):
    messages, _ = inference_messages()
    translated = {k.removeprefix("inference."): v for k, v in i18n.catalogue(lang).items() if k.startswith("inference.")}
    assert set(translated) == set(messages), (f"missing {sorted(set(messages) - set(translated))[:20]}, "
                                              f"extra {sorted(set(translated) - set(messages))[:20]}")
    for key, english in messages.items():
        assert i18n.placeholders(translated[key]) == i18n.placeholders(english), (lang, key)


def test_an_error_reaches_the_page_in_the_visitors_language_and_the_api_in_english():
    from inference.errors import InputError
    from inference.tokens import clean_text

    with pytest.raises(InputError) as caught:
        clean_text("   ")
    english = str(caught.value)
    assert i18n.message(caught.value.message, "en") == english
    for lang in OTHERS:
        shown = i18n.message(caught.value.message, lang)
        assert shown != english and shown.strip(), lang
    with pytest.raises(InputError) as caught:
        clean_text("x" * 10**6)
    persian = i18n.message(caught.value.message, "fa")
    assert f"{10**6:,}" in persian  # the measured number is filled in, in every language


OVERFLOW_JS = """() => {
  const page = document.documentElement;
  const wide = page.scrollWidth > page.clientWidth + 1;
  // Buttons whose text does not fit them (cut off rather than wrapped).
  const cut = [...document.querySelectorAll('button')].filter(b => b.offsetParent !== null
      && b.scrollWidth > b.clientWidth + 2 && getComputedStyle(b).overflow === 'hidden').map(b => b.innerText.slice(0, 40));
  return {wide, cut};
}"""


@pytest.mark.browser
def test_every_tab_renders_in_every_language_without_overflow(browser, app_url, screenshot):
    """One page, switched by the picker from language to language (a page load costs more than the visit):
    every tab in every language, with no horizontal overflow and no cut-off button; a screenshot of each."""
    first, *rest = OTHERS
    ctx, page = _open(browser, f"{app_url}/?lang={first}")
    try:
        for lang in OTHERS:
            if lang != first:
                page.locator("#lie-lang input").click()
                page.get_by_role("option", name=i18n.LANGUAGES[lang]).click()
            page.wait_for_function(f"document.documentElement.lang === '{lang}'")  # each tab's lesson below
            for name in app.TAB_NAMES:
                page.get_by_role("tab", name=i18n.t(f"tab.{name}", lang)).click()
                lesson = page.locator(f"#lesson-{name}")
                lesson.get_by_text(load_lesson(name, lang).title, exact=False).first.wait_for()
                found = page.evaluate(OVERFLOW_JS)
                assert not found["wide"], f"{lang}/{name}: the page is wider than the window"
                assert not found["cut"], f"{lang}/{name}: buttons cut off: {found['cut']}"
                screenshot(page, f"language-{lang}-{name}", full_page=False)  # the top of the tab: fast
        assert_no_error(page)
    finally:
        ctx.close()
