"""The Memory tab through the app: its event functions and figures, the `precision`, `kv_precision` and
`kv_policies` JSON endpoints (gradio_client), and a browser run of every view from a shared link."""

from __future__ import annotations

import csv
from urllib.parse import quote

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

from components.memory import events as ev
from components.memory.layout import build  # noqa: F401  (the tab builds: its lesson's tries name its fields)
from components.teaching import load_lesson, render_lesson
from inference.forward import forward_pass
from inference.limits import MAX_KV_EVAL_TOKENS
from conftest import assert_no_error
from test_memory import TEXT

DTYPES = ["float32", "bfloat16"]


def _rows(download) -> list[dict]:
    with open(download.value["path"], encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_precision_and_kv_views(session):
    table, plot, alt, download = ev.on_precision(TEXT, DTYPES)
    assert "<b>float32</b>" in table and "<b>bfloat16</b>" in table and "✓" in table  # bytes = parameters x 4
    assert alt.startswith("SmolLM2-135M-Instruct on 26 tokens: float32 538.06 MB") and "bfloat16 269.03 MB" in alt
    assert {t.name for t in plot.data} == set(DTYPES) and len(plot.data) == 4  # two panels, a point each
    rows = _rows(download)
    assert [r["precision"] for r in rows] == DTYPES and int(rows[0]["weight_bytes"]) == 538_060_032
    assert len(plot.to_json()) < 30_000

    table, plot, alt = ev.on_kv_precision(TEXT)
    assert "plain (float32)" in table and "46,080" in table and "fp8 holds" in alt
    assert len(plot.data) == 3  # measured bars, formula marks, the KL line


def test_policy_views(session):
    table, kept, kept_alt, first, first_alt, alt, download = ev.on_policies(TEXT, 8, 2)
    assert "sliding window (8 tokens)" in table and "sinks + window (StreamingLLM) (8 tokens, 2 sinks)" in table
    assert "positions 18–25" in kept_alt and "positions 0–1, 20–25" in kept_alt
    assert len(kept.data[0].z) == 4 and len(kept.data[0].z[0]) == 26  # four caches x 26 positions
    assert len(first.data[0].y) == 30 and "of their attention on the first token" in first_alt
    assert alt.startswith("Full cache: perplexity")
    rows = _rows(download)
    assert [r["policy"] for r in rows] == ["full", "window", "sinks", "heavy_hitters"]
    assert float(rows[0]["perplexity"]) == pytest.approx(forward_pass(session, TEXT).perplexity, rel=1e-6)

    plot, alt = ev.on_sweep(TEXT, 2)
    assert "at 16" in alt and len(plot.data) == 4  # three policies and the full cache
    plot, alt = ev.on_layers(TEXT, 1024)
    assert plot is None and "has no sliding-window layers" in alt

    views = ev.run_section("policies", TEXT, DTYPES, 8, 2, 1024)
    assert len(views) == len(ev.ALL_OUTPUTS) and "sliding window (8 tokens)" in views[ev.ALL_OUTPUTS.index("policies_html")]
    assert views[ev.ALL_OUTPUTS.index("precision_html")] == gr.skip()  # the other sections stay as they are
    assert len(ev.on_model()) == 5 + len(ev.ALL_OUTPUTS)


def test_bad_input_becomes_one_message(session):
    with pytest.raises(gr.Error, match="at least one precision"):
        ev.on_precision(TEXT, [])
    with pytest.raises(gr.Error, match="budget must be"):
        ev.on_policies(TEXT, 2, 0)
    with pytest.raises(gr.Error, match=f"at most {MAX_KV_EVAL_TOKENS}"):
        ev.on_kv_precision("word " * (MAX_KV_EVAL_TOKENS + 10))
    with pytest.raises(gr.Error, match="shorter than every budget"):
        ev.on_sweep("Hello there, friend.", 2)


def test_lesson_states_the_models_numbers(session):
    lesson = load_lesson("memory")
    text = render_lesson(lesson, session)
    assert "46,080 bytes per token" in text and "30 layers" in text
    assert 2 <= len(lesson.tries) <= 4 and {t.values["section"] for t in lesson.tries} <= set(ev.SECTIONS)


def test_json_endpoints(client, session):
    out = client.predict(TEXT, "float32,bfloat16", api_name="/precision")
    assert [r["name"] for r in out["rows"]] == DTYPES and out["rows"][0]["mean_kl"] == 0
    assert out["rows"][0]["perplexity"] == pytest.approx(forward_pass(session, TEXT).perplexity, rel=1e-5)
    assert "GGUF" in out["source_note"]
    out = client.predict(TEXT, 8, 2, "window,sinks", "", api_name="/kv_policies")
    assert [r["policy"] for r in out["runs"]] == ["window", "sinks"]
    assert out["runs"][1]["kept_positions"] == [0, 1, *range(20, 26)] and out["runs"][0]["cache_bytes"] == 8 * 46_080
    sweep = client.predict(TEXT, 8, 2, "window", "8,16", api_name="/kv_policies")
    assert sweep["budgets"] == [8, 16] and len(sweep["perplexity"]["window"]) == 2
    out = client.predict(TEXT, "fp8", api_name="/kv_precision")
    assert [r["name"] for r in out["rows"]] == ["plain (float32)", "fp8"] and out["rows"][0]["bytes_per_token"] == 46_080
    with pytest.raises(AppError, match="budget must be"):
        client.predict(TEXT, 1, 0, "window", "", api_name="/kv_policies")
    with pytest.raises(AppError, match="whole numbers"):
        client.predict(TEXT, 8, 0, "window", "8,x", api_name="/kv_policies")
    with pytest.raises(AppError, match="not a policy"):
        client.predict(TEXT, 8, 0, "lru", "", api_name="/kv_policies")
    with pytest.raises(AppError, match="not a precision"):
        client.predict(TEXT, "float8", api_name="/precision")


@pytest.mark.browser
def test_memory_tab_in_the_browser(page, app_url, screenshot):
    """A shared link opens the tab and runs its section; then each other view from its button."""
    page.goto(f"{app_url}/?tab=memory&text={quote(TEXT)}&budget=8&sinks=2&dtypes=float32,bfloat16&section=policies")
    page.wait_for_selector("#mem-policies-table table", timeout=180_000)
    page.wait_for_selector("#mem-kept-plot .js-plotly-plot")
    page.wait_for_selector("#mem-first-plot .js-plotly-plot")
    assert "positions 0–1, 20–25" in page.locator("#mem-kept-summary").inner_text()
    assert page.locator("#mem-text textarea").input_value() == TEXT
    assert "has no sliding-window layers" in page.locator("#mem-layers-note").inner_text()
    assert not page.locator("#mem-layers-run").is_visible()
    screenshot(page, "memory-policies")

    page.click("#mem-precision-run")
    page.wait_for_selector("#mem-precision-table table", timeout=180_000)
    assert page.locator("#mem-precision-table table.mem-main tbody tr").count() == 2
    page.wait_for_selector("#mem-precision-plot .js-plotly-plot")
    page.click("#mem-kv-run")
    page.wait_for_selector("#mem-kv-table table", timeout=180_000)
    page.wait_for_selector("#mem-kv-plot .js-plotly-plot")
    page.click("#mem-sweep-run")
    page.wait_for_selector("#mem-sweep-plot .js-plotly-plot", timeout=180_000)
    assert "at 16" in page.locator("#mem-sweep-summary").inner_text()
    assert_no_error(page)
    screenshot(page, "memory-tab")

    page.locator("#share-memory").click()
    page.wait_for_function("() => { const e = document.querySelector('#share-memory-url textarea, "
                           "#share-memory-url input'); return e && e.value.includes('section=sweep'); }")


@pytest.mark.browser
@pytest.mark.slow
def test_gemma_layer_kinds_in_the_browser(page, gemma, screenshot):
    """With Gemma 3 picked, the tab names its local layers and measures what each kind of layer holds."""
    from inference.session import GEMMA_MODEL

    page.locator("#lie-model-choice input").click()
    page.get_by_role("option", name="Gemma 3 270M (base)").click()
    page.locator("#lie-model-load").click()
    page.wait_for_function(f"() => document.querySelector('#lie-model-facts .lie-facts').dataset.model === "
                           f"'{GEMMA_MODEL}'", timeout=240_000)
    page.get_by_role("tab", name="Memory").click()
    page.wait_for_selector("#mem-layers-note:has-text('15 of 18 layers use a sliding window of 512 tokens')")
    page.wait_for_selector("#mem-layers-run", state="visible")
    page.click("#mem-layers-run")
    page.wait_for_selector("#mem-layers-plot .js-plotly-plot", timeout=180_000)
    summary = page.locator("#mem-layers-summary").inner_text()
    assert "At 1,024 tokens the 15 sliding-window layers hold 15.70 MB" in summary and "equal the formula" in summary
    assert_no_error(page)
    screenshot(page, "memory-gemma-layers")
