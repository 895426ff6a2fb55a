"""The Prefill & decode tab through the app: its event functions and figures, the `timeline` JSON API
(gradio_client), and a real browser run (run, cache off, a small sweep, a refused sweep)."""

from __future__ import annotations

from dataclasses import asdict

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

from components import prefill_tab as tab
from components.figures import prefill as fig
from inference.generation import prompt_ids
from inference.limits import MAX_SWEEP_TOKENS
from inference.timeline import fit_growth

PROMPT = "What is the capital of France?"


# ---------------------------------------------------------------------------------------------------
# Event functions and figures


def test_run_draws_headline_timeline_and_kv(session):
    headline, timeline, kv_text, kv_plot = tab.on_run(PROMPT, True, 6, 0.0, 3, True)
    assert "TTFT" in headline and "TPOT" in headline and "Check: TTFT" in headline and "KV cache on" in headline
    phases = {trace.name for trace in timeline.data if trace.name}
    assert {"prefill pass", "decode pass", "sampling + bookkeeping"} <= phases
    assert "46,080 bytes per token" in kv_text and "✓ equal at every step" in kv_text and "3× less" in kv_text
    assert len(kv_plot.data) == 5  # measured, formula, MHA; per layer bars and formula
    assert len(timeline.to_json()) < 200_000  # small payload

    headline, timeline, kv_text, kv_plot = tab.on_run(PROMPT, True, 4, 0.0, 3, False)
    assert "KV cache OFF" in headline and "recompute pass" in {t.name for t in timeline.data}
    assert "KV cache <b>off</b>" in kv_text and not kv_plot.data


def test_compare_and_batch_events(session):
    text, plot = tab.on_compare(PROMPT, True, 5, 0.0, 1)
    assert "✓ identical tokens" in text and "faster with the cache" in text
    assert {t.name for t in plot.data} == {"KV cache on", "KV cache off"} and len(plot.data) == 4
    plot, text = tab.on_batch("Hi\nWhat is 2 + 2?", 3, True)
    assert "batch" in text and "tokens/s" in text and len(plot.data) == 2


def test_model_note_and_refusals_become_messages(session):
    out = tab.on_model()
    assert "46,080 bytes" in out[0] and len(out) == 13
    with pytest.raises(gr.Error, match="context length|up to"):
        tab.on_sweep(MAX_SWEEP_TOKENS * 4, False, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="max_new_tokens"):
        tab.on_run(PROMPT, True, 0, 0.0, 3, True)
    with pytest.raises(gr.Error, match="Without the KV cache"):
        tab.on_run(PROMPT, True, 256, 0.0, 3, False)


def _sweep_dict(n_points=5):
    """A sweep as `Sweep.to_dict()` returns it, with made-up numbers: the figures are pure functions."""
    points = []
    for i in range(n_points):
        n = 16 * 2 ** i
        prefill = 0.001 + 0.001 * n + 2e-5 * n * n
        core = 2e-5 * n * n + 0.0005
        points.append({"prompt_tokens": n, "prefill_s": prefill,
                       "split": {"attention_core_s": core, "projections_s": 0.3 * (prefill - core),
                                 "mlp_s": 0.6 * (prefill - core), "other_s": 0.1 * (prefill - core)},
                       "decode_s": 0.03 + 1e-6 * n, "decode_steps": 8, "kv_bytes": 46_080 * n,
                       "kv_formula_bytes": 46_080 * n,
                       "memory": {"kind": "rss", "baseline_bytes": 1e9, "peak_bytes": 1e9 + 4e5 * n,
                                  "increase_bytes": 1e3 * n * n},
                       "flops": {"linear": 2e8 * n, "attention": 69_120 * n * n}, "runs": 1,
                       "working_estimate_bytes": 108 * n * n})
    ns, ts = [p["prompt_tokens"] for p in points], [p["prefill_s"] for p in points]
    return {"model": "m", "device": "cpu", "lengths": ns, "points": points, "kv": {}, "seconds": 1.0,
            "linear": asdict(fit_growth(ns, ts, 1)), "quadratic": asdict(fit_growth(ns, ts, 2)), "cached": False,
            "max_sweep_tokens": MAX_SWEEP_TOKENS}


def test_sweep_figure_and_verdict_follow_the_numbers():
    sw = _sweep_dict()
    figure = fig.sweep_figure(sw)
    names = {t.name for t in figure.data}
    assert any(n.startswith("linear fit") for n in names) and any(n.startswith("quadratic fit") for n in names)
    assert len(figure.to_json()) < 100_000
    text = " ".join(fig.sweep_verdict(sw))
    assert "n² term is" in text and "rose" in text and "Faster than linear" in text and "quadratic part" in text
    # Flat per-token time and no quadratic term: the verdict must not claim growth.
    flat = _sweep_dict()
    for p in flat["points"]:
        p["prefill_s"] = 0.002 * p["prompt_tokens"]
        p["memory"]["increase_bytes"] = 1e4 * p["prompt_tokens"]
    ns = [p["prompt_tokens"] for p in flat["points"]]
    flat["quadratic"] = asdict(fit_growth(ns, [p["prefill_s"] for p in flat["points"]], 2))
    flat["quadratic"]["coefficients"][0] = -1e-12
    text = " ".join(fig.sweep_verdict(flat))
    assert "not positive" in text and "stayed about the same" in text and "No faster than n" in text
    html = fig.sweep_html(_sweep_dict(3) | {"linear": None, "quadratic": None})
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
