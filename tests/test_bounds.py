"""Every value a link or a request can set is bounded: every numeric control has a range, a link value outside
it is refused with a warning (never passed on), and such a link leaves a working page."""

from __future__ import annotations

import gradio as gr
import pytest

from components.share import LINK_FIELDS, values_from_query

from conftest import assert_no_error


@pytest.fixture(scope="module")
def demo(session):
    import app

    return app.build_demo()


def _numeric(demo):
    return [b for b in demo.blocks.values() if isinstance(b, (gr.Number, gr.Slider))]


def test_every_numeric_control_has_a_range(demo):
    unbounded = [(b.elem_id or b.label) for b in _numeric(demo)
                 if getattr(b, "minimum", None) is None or getattr(b, "maximum", None) is None]
    assert not unbounded, f"controls without a minimum or maximum: {unbounded}"


def test_links_with_values_outside_a_range_are_refused(demo):
    checked = 0
    for tab, fields in LINK_FIELDS.items():
        for key, component in fields.items():
            if not isinstance(component, (gr.Number, gr.Slider)) or component.maximum is None:
                continue  # an unbounded control fails the test above
            for bad in (component.maximum + 1, component.minimum - 1, 2**64, "1e309", "nan", "x"):
                updates, rejected = values_from_query(tab, fields, {"tab": tab, key: str(bad)})
                assert rejected == [key], (tab, key, bad)
                assert all(u == gr.skip() for u in updates)
                checked += 1
    assert checked > 60


@pytest.mark.browser
def test_a_link_with_a_huge_seed_leaves_a_working_page(browser, app_url, screenshot):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{app_url}/?tab=beam&seed=18446744073709551616&num_beams=99")
        toast = page.locator(".toast-body, [data-testid='toast-body']").first
        toast.wait_for()
        text = toast.inner_text()
        assert "does not fit" in text and "seed" in text and "num_beams" in text
        page.wait_for_selector("#lie-model-facts .lie-facts")
        assert "Connection to the server was lost" not in page.locator("body").inner_text()
        screenshot(page, "link-out-of-range")
    finally:
        context.close()
