"""The Prefill & decode tab through the app: its event functions and figures, the `timeline` JSON API
(gradio_client), a real browser run (run, cache off, a small sweep, a refused sweep), and the teaching layer
(lesson tries, a shared link, CSV downloads checked against the API, text alternatives, presenter mode)."""

from __future__ import annotations

import csv
from dataclasses import replace
from urllib.parse import parse_qsl, quote

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

from components.prefill import events as tab
from components.prefill import figures as fig
from components.teaching import load_lesson
from inference.generation import prompt_ids
from inference.limits import MAX_SWEEP_TOKENS
from inference.model.kv import KVShape
from inference.timeline import Sweep, SweepPoint, fit_growth
from conftest import assert_no_error

PROMPT = "What is the capital of France?"


# ---------------------------------------------------------------------------------------------------
# Event functions and figures


def test_run_draws_headline_timeline_and_kv(session):
    headline, timeline, timeline_alt, kv_text, kv_plot, kv_alt, download, seed = tab.on_run(PROMPT, True, 6, 0.0, 3,
                                                                                            True)
    assert seed == 3 and timeline_alt.startswith("6 passes: one prefill of ")
    assert "46,080 bytes per token" in kv_alt and "equal to the formula at every pass" in kv_alt
    with open(download.value["path"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["phase"] for r in rows] == ["prefill"] + ["decode"] * 5
    assert [int(r["kv_bytes"]) for r in rows] == [46_080 * int(r["cache_len"]) for r in rows]
    assert "TTFT" in headline and "TPOT" in headline and "Check: TTFT" in headline and "KV cache on" in headline
    phases = {trace.name for trace in timeline.data if trace.name}
    assert {"prefill pass", "decode pass", "sampling + bookkeeping"} <= phases
    assert "46,080 bytes per token" in kv_text and "✓ equal at every step" in kv_text and "3× less" in kv_text
    assert len(kv_plot.data) == 5  # measured, formula, MHA; per layer bars and formula
    assert len(timeline.to_json()) < 200_000  # small payload

    headline, timeline, timeline_alt, kv_text, kv_plot, kv_alt, download, seed = tab.on_run(PROMPT, True, 4, 0.0, 3,
                                                                                            False)
    assert timeline_alt.startswith("KV cache off: 4 passes") and kv_alt.startswith("KV cache off")
    assert "KV cache OFF" in headline and "recompute pass" in {t.name for t in timeline.data}
    assert "KV cache <b>off</b>" in kv_text and not kv_plot.data


def test_compare_and_batch_events(session):
    text, plot, alt, download, seed = tab.on_compare(PROMPT, True, 5, 0.0, 1)
    assert seed == 1 and "identical tokens" in alt and "slower" in alt
    with open(download.value["path"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["kv_cache"] for r in rows] == ["on"] * 5 + ["off"] * 5
    assert [r["token_id"] for r in rows[:5]] == [r["token_id"] for r in rows[5:]]
    assert "✓ identical tokens" in text and "faster with the cache" in text
    assert {t.name for t in plot.data} == {"KV cache on", "KV cache off"} and len(plot.data) == 4
    plot, alt, text, download = tab.on_batch("Hi\nWhat is 2 + 2?", 3, True)
    assert "batch" in text and "tokens/s" in text and len(plot.data) == 2
    assert alt.startswith("2 prompts × 3 new tokens")
    with open(download.value["path"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["batch", "prompt 1 alone", "prompt 2 alone"]


def test_model_note_and_refusals_become_messages(session):
    out = tab.on_model()
    assert "46,080 bytes" in out[0] and len(out) == 23
    with pytest.raises(gr.Error, match="context length|up to"):
        tab.on_sweep(MAX_SWEEP_TOKENS * 4, False, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="max_new_tokens"):
        tab.on_run(PROMPT, True, 0, 0.0, 3, True)
    with pytest.raises(gr.Error, match="Without the KV cache"):
        tab.on_run(PROMPT, True, 256, 0.0, 3, False)


def _sweep(n_points=5):
    """A `Sweep` with made-up numbers (SmolLM2's KV shape): the figures are pure functions of it."""
    points = []
    for i in range(n_points):
        n = 16 * 2 ** i
        prefill = 0.001 + 0.001 * n + 2e-5 * n * n
        core = 2e-5 * n * n + 0.0005
        points.append(SweepPoint(prompt_tokens=n, prefill_s=prefill,
                                 split={"attention_core_s": core, "projections_s": 0.3 * (prefill - core),
                                        "mlp_s": 0.6 * (prefill - core), "other_s": 0.1 * (prefill - core)},
                                 decode_s=0.03 + 1e-6 * n, decode_steps=8, kv_bytes=46_080 * n,
                                 kv_formula_bytes=46_080 * n,
                                 memory={"kind": "rss", "baseline_bytes": 1e9, "peak_bytes": 1e9 + 4e5 * n,
                                         "increase_bytes": 1e3 * n * n},
                                 flops={"linear": 2e8 * n, "attention": 69_120 * n * n}, runs=1,
                                 working_estimate_bytes=108 * n * n))
    ns, ts = [p.prompt_tokens for p in points], [p.prefill_s for p in points]
    kv = KVShape(30, 9, 3, 64, 4, "float32", [None] * 30)
    return Sweep(model="m", device="cpu", lengths=ns, points=points, kv=kv, linear=fit_growth(ns, ts, 1),
                 quadratic=fit_growth(ns, ts, 2), seconds=1.0, cached=False)


def test_sweep_figure_and_verdict_follow_the_numbers():
    sw = _sweep()
    figure = fig.sweep_figure(sw)
    names = {t.name for t in figure.data}
    assert any(n.startswith("linear fit") for n in names) and any(n.startswith("quadratic fit") for n in names)
    assert len(figure.to_json()) < 100_000
    text = " ".join(fig.sweep_verdict(sw))
    assert "n² term is" in text and "rose" in text and "Faster than linear" in text and "quadratic part" in text
    # The words come from the findings inference draws from the numbers.
    found = sw.findings
    assert found.fit_n2_share > 0 and not found.fit_overstates and found.attention_trend == "grows"
    assert found.per_token_trend == "rose" and found.memory_superlinear and found.decode_trend == "flat"
    # Flat per-token time and no quadratic term: the verdict must not claim growth.
    flat = _sweep()
    for p in flat.points:
        p.prefill_s = 0.002 * p.prompt_tokens
        p.memory["increase_bytes"] = 1e4 * p.prompt_tokens
    ns = [p.prompt_tokens for p in flat.points]
    flat.quadratic = fit_growth(ns, [p.prefill_s for p in flat.points], 2)
    flat.quadratic.coefficients[0] = -1e-12
    text = " ".join(fig.sweep_verdict(flat))
    assert "not positive" in text and "stayed about the same" in text and "No faster than n" in text
    html = fig.sweep_html(replace(_sweep(3), linear=None, quadratic=None))
    assert "needs at least 4" in html and html.count("<tr>") == 4


# ---------------------------------------------------------------------------------------------------
# JSON API


def test_timeline_api(client, session):
    out = client.predict(prompt=PROMPT, temperature=0.0, max_new_tokens=5, chat=True, use_cache=True,
                         api_name="/timeline")
    n = len(prompt_ids(session, PROMPT))
    steps = out["steps"]
    assert [s["index"] for s in steps] == list(range(len(steps))) and steps[0]["phase"] == "prefill"
    assert steps[0]["tokens_in_pass"] == n and all(s["tokens_in_pass"] == 1 for s in steps[1:])
    assert [s["cache_bytes"] for s in steps] == [46_080 * s["cache_len"] for s in steps]
    m = out["metrics"]
    assert m["ttft_s"] > 0 and m["total_s"] >= m["ttft_s"] and out["kv"]["matches"]
    assert out["kv"]["bytes_per_token"] == 46_080 and out["memory"]["peak_bytes"] > 0
    off = client.predict(prompt=PROMPT, max_new_tokens=3, temperature=0.0, use_cache=False, api_name="/timeline")
    assert off["token_ids"] == out["token_ids"][:3] and off["steps"][-1]["tokens_in_pass"] == n + 2
    with pytest.raises(AppError, match="max_new_tokens"):
        client.predict(prompt=PROMPT, max_new_tokens=0, api_name="/timeline")
    with pytest.raises(AppError, match="up to"):
        client.predict(max_tokens=MAX_SWEEP_TOKENS * 2, api_name="/context_sweep")


# ---------------------------------------------------------------------------------------------------
# Browser


@pytest.mark.browser
def test_browser_run_cache_off_and_sweep(page, screenshot):
    page.get_by_role("tab", name="Prefill & decode").click()
    page.wait_for_selector("#pfd-model-note .lie-note")
    page.click("#pfd-run")
    page.wait_for_selector("#pfd-ttft")
    page.wait_for_selector("#pfd-timeline .js-plotly-plot")
    page.wait_for_selector("#pfd-kv-verdict:has-text('equal at every step')")
    screenshot(page, "prefill-run")

    page.click("#pfd-cache input")  # KV cache off
    page.click("#pfd-run")
    page.wait_for_selector("#pfd-headline:has-text('KV cache OFF')")
    page.wait_for_selector("#pfd-timeline .js-plotly-plot")
    assert "recompute" in page.locator("#pfd-timeline").inner_text()
    screenshot(page, "prefill-cache-off")

    box = page.locator("#pfd-sweep-max input")
    box.fill("32")
    box.press("Enter")
    page.click("#pfd-sweep-run")
    page.wait_for_selector("#pfd-sweep-table", timeout=240_000)
    page.wait_for_selector("#pfd-sweep-plot .js-plotly-plot")
    assert page.locator("#pfd-sweep-table tbody tr").count() == 2  # 16 and 32 tokens
    screenshot(page, "prefill-sweep")

    box.fill(str(MAX_SWEEP_TOKENS * 2))
    box.press("Enter")
    page.click("#pfd-sweep-run")
    page.get_by_text("beyond that cap", exact=False).first.wait_for()
    # The message is a toast fixed to the window: a window-sized screenshot shows it where a person sees it.
    path = screenshot(page, "prefill-sweep-refused")
    page.screenshot(path=str(path), full_page=False)


# ---------------------------------------------------------------------------------------------------
# Teaching layer


def test_sweep_summary_and_table_follow_the_numbers():
    sw = _sweep()
    text = fig.sweep_summary(sw)
    first, last = sw.points[0], sw.points[-1]
    assert text.startswith(f"Prefill took {fig.ms(first.prefill_s)} at 16 tokens and "
                           f"{fig.ms(last.prefill_s)} at 256")
    assert "time limit" not in text and "time limit" in fig.sweep_summary(replace(sw, timed_out=True))
    header, rows = fig.sweep_table(sw)
    assert [r[0] for r in rows] == [16, 32, 64, 128, 256] and len(header) == len(rows[0])
    share = [float(r[header.index("attention_scores_share")]) for r in rows]
    assert share == pytest.approx([p.split["attention_core_s"] / p.prefill_s for p in sw.points], abs=1e-4)


def test_lesson_tries_name_the_tabs_fields():
    tries = load_lesson("prefill").tries
    assert [t.values.get("use_cache") for t in tries[:2]] == [True, False]
    assert tries[2].values == {"max_tokens": 512}


@pytest.mark.browser
def test_lesson_tries_and_presenter_mode(page, screenshot):
    page.get_by_role("tab", name="Prefill & decode").click()
    page.wait_for_selector("#lesson-prefill .lie-lesson-body")
    assert "46,080 bytes per token" in page.locator("#lesson-prefill").inner_text()
    page.locator("#try-prefill-0").click()
    page.wait_for_selector("#pfd-headline:has-text('KV cache on')")
    assert page.locator("#pfd-max-new input").input_value() == "24"
    page.wait_for_function("/^\\d+ passes: one prefill of \\d+ prompt tokens/.test("
                           "document.querySelector('#pfd-timeline-summary').innerText)")
    assert_no_error(page)
    page.locator("#pfd-timeline .js-plotly-plot").hover()  # plotly's own PNG button shows on hover
    assert page.locator("#pfd-timeline [data-title='Download plot as a PNG']").count() == 1

    page.locator("#try-prefill-1").click()
    page.wait_for_selector("#pfd-headline:has-text('KV cache OFF')")
    assert not page.locator("#pfd-cache input").is_checked()
    page.wait_for_selector("#pfd-compare-summary-alt:has-text('identical tokens')")
    assert "without it" in page.locator("#pfd-compare-summary-alt").inner_text()
    assert_no_error(page)
    screenshot(page, "prefill-try-cache-off")

    # The sweep try: 16 to 512 tokens (the lengths an earlier sweep measured are reused).
    page.locator("#try-prefill-2").click()
    page.wait_for_function("document.querySelectorAll('#pfd-sweep-table tbody tr').length === 6", timeout=240_000)
    assert page.locator("#pfd-sweep-max input").input_value() == "512"
    assert "at 512" in page.locator("#pfd-sweep-summary").inner_text()
    assert_no_error(page)
    screenshot(page, "prefill-try-sweep")

    # Presenter mode keeps the lesson, the controls the lesson uses and the figures; hides seed and downloads.
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("document.body.classList.contains('lie-presenter')")
    assert not page.locator("#pfd-seed").is_visible() and not page.locator("#pfd-timeline-csv").is_visible()
    assert page.locator("#pfd-cache").is_visible() and page.locator("#pfd-timeline").is_visible()
    screenshot(page, "prefill-presenter")


@pytest.mark.browser
def test_shared_link_reproduces_the_run_and_the_csv_matches_the_api(page, app_url, client, screenshot):
    prompt = "Once upon a time"
    page.goto(f"{app_url}/?tab=prefill&prompt={quote(prompt)}&chat=0&max_new_tokens=6&temperature=0.8&seed=11"
              "&use_cache=1&max_tokens=32")
    page.wait_for_selector("#pfd-ttft")
    assert page.locator("#pfd-prompt textarea").input_value() == prompt
    assert not page.locator("#pfd-chat input").is_checked() and page.locator("#pfd-cache input").is_checked()
    assert page.locator("#pfd-seed input").input_value() == "11"
    assert page.locator("#pfd-temperature input[type=number]").input_value() == "0.8"
    # The link's sweep runs too (16 and 32 tokens).
    page.wait_for_function("document.querySelectorAll('#pfd-sweep-table tbody tr').length === 2", timeout=120_000)
    assert page.locator("#pfd-sweep-max input").input_value() == "32"
    assert_no_error(page)
    screenshot(page, "prefill-shared-link")

    # The timeline CSV: its passes are the endpoint's passes for the same parameters (times differ, run to run).
    api = client.predict(prompt=prompt, temperature=0.8, seed=11, max_new_tokens=6, chat=False, use_cache=True,
                         api_name="/timeline")
    with page.expect_download() as download:
        page.locator("#pfd-timeline-csv").click()
    assert download.value.suggested_filename == "prefill-decode-timeline.csv"
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(api["steps"])
    for row, step in zip(rows, api["steps"]):
        assert (int(row["pass"]), row["phase"], int(row["tokens_in_pass"]), int(row["cache_len"]), int(row["token_id"]),
                row["token"], int(row["kv_bytes"])) == (step["index"], step["phase"], step["tokens_in_pass"],
                                                       step["cache_len"], step["token_id"], step["piece"],
                                                       step["cache_bytes"])
        assert 0 < float(row["forward_ms"]) <= float(row["time_ms"])
    assert api["text"] in page.locator("#pfd-headline .pfd-text").inner_text()

    # Copy link gives back the same view.
    page.locator("#share-prefill").click()
    page.wait_for_function("() => (document.querySelector('#share-prefill-url textarea, #share-prefill-url input')"
                           " || {}).value?.startsWith('http')")
    link = page.locator("#share-prefill-url textarea, #share-prefill-url input").first.input_value()
    assert dict(parse_qsl(link.split("?", 1)[1])) == {
        "tab": "prefill", "prompt": prompt, "chat": "0", "max_new_tokens": "6", "temperature": "0.8", "seed": "11",
        "use_cache": "1", "max_tokens": "32"}

    # The sweep as CSV: one row per length.
    with page.expect_download() as download:
        page.locator("#pfd-sweep-csv").click()
    with open(download.value.path(), encoding="utf-8", newline="") as f:
        sweep = list(csv.DictReader(f))
    assert [int(r["prompt_tokens"]) for r in sweep] == [16, 32]
    assert [int(r["kv_bytes"]) for r in sweep] == [46_080 * 16, 46_080 * 32]
