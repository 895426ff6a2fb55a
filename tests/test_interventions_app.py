"""The Interventions tab through the running app: the `ablate`, `head_sweep` and `patch` JSON endpoints
(gradio_client), the event functions (the hand-offs from the Attention and Forward tabs, the token check, clicks
on the grids), the text alternatives, and the tab in headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradio_client.exceptions import AppError

from inference.deadline import Deadline
from inference.interventions import ablate, patch_sweep
from conftest import assert_no_error

TEXT = "apple river mountain seven blue window. apple river mountain seven blue"
CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"
LONGER = "The big Colosseum of Rome is in the city of"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread (see tests/test_interventions.py: on a loaded shared CPU two threads wait on each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Click:
    """What a grid's click bridge sends: the cell's column (x) and row (y)."""

    def __init__(self, x, y):
        self._data = {"x": x, "y": y}


# ---------------------------------------------------------------------------------------------------
# JSON endpoints


def test_ablate_endpoint_matches_the_python_api(client, session):
    result = client.predict(text=TEXT, heads=[[17, 4], [17, 5]], blocks=[["mlp", 3]], mode="mean", chat=False,
                            api_name="/ablate")
    mine = ablate(session, TEXT, heads=[(17, 4), (17, 5)], blocks=[("mlp", 3)], mode="mean")
    assert result["ablation"] == "L17H4, L17H5, mlp L3" and result["mode"] == "mean"
    assert result["clean_token"] == "·window" and result["delta_logprob"] == pytest.approx(mine.delta_logprob, abs=1e-5)
    assert result["kl"] == pytest.approx(mine.kl, abs=1e-5)
    top = {row["id"]: row for row in result["top"]}
    assert top[mine.clean_token_id]["clean_prob"] == pytest.approx(float(mine.clean_probs[mine.clean_token_id]), abs=1e-5)
    assert top[mine.clean_token_id]["ablated_prob"] == pytest.approx(float(mine.ablated_probs[mine.clean_token_id]),
                                                                     abs=1e-5)


def test_patch_and_sweep_endpoints(client, session):
    result = client.predict(clean_text=CLEAN, corrupt_text=CORRUPT, site="resid_pre", chat=False, api_name="/patch")
    sweep = patch_sweep(session, clean_text=CLEAN, corrupt_text=CORRUPT)  # the endpoint's names, as keywords
    assert (result["clean_token"], result["corrupt_token"]) == ("·Paris", "·Rome")
    effect = np.array(result["effect"], dtype=float)
    assert effect.shape == (30, 9) and np.allclose(effect, sweep.effect, atol=1e-5)
    grid = client.predict(text=TEXT, layers=[16], mode="zero", chat=False, api_name="/head_sweep")
    assert grid["layers"] == [16] and grid["blocks"] == ["attn", "mlp"]
    assert grid["delta_logprob"][15] == [None] * 9  # not swept
    assert grid["delta_logprob"][16][0] < -1  # layer 16, head 0: the copying prompt's most needed head
    with pytest.raises(AppError, match="The clean prompt is 9 tokens and the corrupted one 12"):
        client.predict(clean_text=CLEAN, corrupt_text=LONGER, site="resid_pre", chat=False, api_name="/patch")
    with pytest.raises(AppError, match="Head 9 does not exist"):
        client.predict(text=TEXT, heads=[[0, 9]], blocks=None, mode="zero", chat=False, api_name="/ablate")


# ---------------------------------------------------------------------------------------------------
# Event functions and text alternatives


def test_ablation_view_and_picker(session):
    from components.interventions.events import add_attn, add_head, add_mlp, run_ablation

    spec, figure, summary, info = run_ablation(TEXT, False, "l17h4, L17H5;L18H6", "zero")
    assert spec == "L17H4, L17H5, L18H6"  # written back in its plain form
    result = ablate(session, TEXT, heads=[(17, 4), (17, 5), (18, 6)])
    before, after = figure.data
    assert before.name.startswith("before") and after.name.startswith("after")
    i = list(before.y).index("·window")
    assert before.x[i] == pytest.approx(float(result.clean_probs[result.clean_token_id]))
    assert after.x[i] == pytest.approx(float(result.ablated_probs[result.clean_token_id]))
    assert summary.startswith("With L17H4, L17H5, L18H6 switched off (zero ablation), p(·window) goes from 43% to 3.8%")
    assert "zero-ablated: L17H4, L17H5, L18H6" in info  # clearly marked
    assert add_head("L17H4", 3, 2) == "L17H4, L3H2" and add_attn("", 5) == "attn L5" and add_mlp("mlp L0", 0) == "mlp L0"


def test_sweep_click_opens_that_run(session):
    from components.interventions.events import pick_sweep_cell, run_sweep

    state, figure, summary, download = run_sweep(TEXT, False, "zero", 16, 17, "delta", None, progress=lambda *a, **k: None)
    assert state["layers"] == [16, 17] and state["partial"] is None
    assert list(figure.layout.xaxis.ticktext) == [f"H{h}" for h in range(9)] + ["attn", "mlp"]
    assert summary.startswith("Switching off one component at a time (zero ablation, 2 of 2 layers), the answer "
                              "·window loses most without head L16H0")
    figure, text, chat, mode, spec, layer, head = pick_sweep_cell(state, "kl", Click(0, 16))
    assert (text, spec, layer, head) == (TEXT, "L16H0", 16, 0) and figure.layout.shapes[-1].y0 == 15.5 and list(figure.layout.yaxis.ticktext) == ["L16", "L17"]
    assert pick_sweep_cell(state, "delta", Click(10, 17))[4] == "mlp L17"
    from gradio import Error

    with pytest.raises(Error, match="a layer the sweep ran"):
        pick_sweep_cell(state, "delta", Click(0, 3))


def test_patching_view_cell_click_and_token_check(session):
    from components.interventions.events import check_pair, pick_patch_cell, run_patch

    out = run_patch(CLEAN, CORRUPT, False, "resid_pre", "effect", None, progress=lambda *a, **k: None)
    state, figure, summary, pair, cell = out[:5]
    assert summary.startswith("Clean answer ·Paris (p 66%), corrupted answer ·Rome")
    assert "restores the most at layer 4, position #2 iffel→osse (100% of the gap)" in summary
    assert "<b>·Paris</b>" in figure.layout.title.text and "<b>·Rome</b>" in figure.layout.title.text
    assert "#2<br><b>iffel</b><br><b>/osse</b>" in figure.layout.xaxis.ticktext
    assert "Layer 4, position #2" in cell and "int-row int-clean" in cell
    figure, cell, layer, position = pick_patch_cell(state, "prob", Click(8, 29))
    assert (layer, position) == (29, 8) and "Layer 29, position #8 ·of" in cell
    # Token counts that differ: one sentence in place, with the fix, and no run.
    out = run_patch(CLEAN, LONGER, False, "resid_pre", "effect", None, progress=lambda *a, **k: None)
    assert out[0] is None and out[1] is None
    assert "The clean prompt is 9 tokens and the corrupted one 12" in out[3] and "Make the clean prompt 3 tokens longer" in out[3]
    assert "corrupted (12)" in check_pair(CLEAN, LONGER, False) and "is empty" in check_pair(CLEAN, "  ", False)


def test_hand_offs_from_the_attention_and_forward_tabs(session):
    from gradio import Error

    from components.forward.events import pick_box, run_forward
    from components.interventions.events import from_attention, from_forward

    tabs, text, chat, spec, layer, head = from_attention(TEXT, False, 17, 4, False)
    assert tabs.selected == "interventions_tab" and (text, spec, layer, head) == (TEXT, "L17H4", 17, 4)
    assert from_attention(TEXT, False, 17, 4, True)[3] == "attn L17"  # the layer's mean over heads: the whole block

    class Box:
        def __init__(self, key):
            self._data = {"key": key}

    state = run_forward("The capital of France is", False, None)[0]
    state, _, explain, _ = pick_box(state, Box("layer.mlp"))
    assert 'class="fw-ablate"' in explain and "Ablate this block (layer 0)" in explain
    assert from_forward(state)[3] == "mlp L0"
    state, _, explain, _ = pick_box(state, Box("layer.attention"))
    assert from_forward(state)[3] == "attn L0" and 'class="fw-ablate"' in explain
    state, _, explain, _ = pick_box(state, Box("layer.input_layernorm"))
    assert "fw-ablate" not in explain
    with pytest.raises(Error, match="attention or the MLP block"):
        from_forward(state)


# ---------------------------------------------------------------------------------------------------
# In the browser


def _cell_xy(page, plot: str, x: int, y: int) -> tuple[float, float]:
    """Viewport coordinates of the centre of heatmap cell (x, y) in the plotly figure inside #plot (scrolled into view)."""
    page.evaluate("""([plot, x, y]) => {
          const gd = document.querySelector('#' + plot + ' .js-plotly-plot');
          const ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
          window.scrollBy(0, box.top + ya._offset + ya.l2p(y) - window.innerHeight / 2);
        }""", [plot, x, y])
    return page.evaluate(
        """([plot, x, y]) => {
          const gd = document.querySelector('#' + plot + ' .js-plotly-plot');
          const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
          return [box.left + xa._offset + xa.l2p(x), box.top + ya._offset + ya.l2p(y)];
        }""", [plot, x, y])


@pytest.mark.browser
def test_ablate_from_the_attention_tab_then_patch_from_a_try_this_button(page, session, screenshot):
    """The one browser test of the tab: a head ablated from the Attention tab shows its before/after bars; the
    lesson's patching button draws the heatmap with both answers named; a click on a cell opens that run; prompts
    of different lengths get their sentence as they are typed."""
    ablate(session, "The capital of France is", heads=[(17, 4)])  # cached: the click shows it at once
    patch_sweep(session, CLEAN, CORRUPT, deadline=Deadline(None))
    page.get_by_role("tab", name="Attention", exact=True).click()
    page.wait_for_selector("#att-overview td[data-layer]")
    page.locator("#att-overview td[data-layer='17'][data-head='4']").click()
    page.wait_for_function("(document.querySelector('#att-heatmap .gtitle') || {}).textContent?.startsWith('Layer 17, head 4')")
    page.locator("#att-ablate").click()
    page.wait_for_function("[...document.querySelectorAll('[role=tab][aria-selected=true]')]"
                           ".some(e => e.innerText.trim() === 'Interventions')")
    page.wait_for_function("document.querySelector('#int-bars-summary').innerText.startsWith("
                           "'With L17H4 switched off (zero ablation), p(·Paris)')")
    assert page.locator("#int-spec textarea, #int-spec input").first.input_value() == "L17H4"
    assert page.locator("#int-text textarea").input_value() == "The capital of France is"
    assert page.locator("#int-bars .trace.bars").count() == 2  # before and after, side by side
    assert "zero-ablated: L17H4" in page.locator("#int-info").inner_text()

    page.get_by_role("button", name="Patching: the Eiffel Tower or the Colosseum?").click()
    page.wait_for_function("document.querySelector('#int-patch-summary').innerText.startsWith('Clean answer ·Paris')")
    assert "corrupted answer ·Rome" in page.locator("#int-patch-summary").inner_text()
    # Plotly draws the grid after the summary's text lands: wait for its tick labels.
    page.wait_for_function("[...document.querySelectorAll('#int-patch-grid .xtick text')]"
                           ".some(e => e.textContent.includes('iffel'))")
    ticks = page.locator("#int-patch-grid .xtick text").all_text_contents()
    assert any("iffel" in t for t in ticks) and any("·city" in t for t in ticks)
    assert "Layer 4, position #2" in page.locator("#int-cell").inner_text()  # the cell that restores most, opened
    # A click on a cell of the heatmap opens that patched run's top tokens.
    page.wait_for_function("(document.querySelector('#int-patch-grid .js-plotly-plot') || {})._ev?.__lieBound")
    x, y = _cell_xy(page, "int-patch-grid", 8, 29)
    page.mouse.click(x, y)
    page.wait_for_function("document.querySelector('#int-cell').innerText.includes('Layer 29, position #8')")
    assert page.locator("#int-cell-layer input[type=number]").input_value() == "29"
    assert_no_error(page)
    screenshot(page, "interventions")

    # Prompts of different lengths: the sentence appears as they are typed.
    box = page.locator("#int-corrupt textarea, #int-corrupt input").first
    box.fill(LONGER[:-1])
    box.type(LONGER[-1])  # typed, as a person does: the check runs on each keystroke
    page.wait_for_function("document.querySelector('#int-pair').innerText.includes('the corrupted one 12')")
