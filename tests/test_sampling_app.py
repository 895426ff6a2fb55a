"""The Sampling tab through the app: its event functions, the JSON API (gradio_client) and a real browser."""

from __future__ import annotations

import time
from unittest import mock

import gradio as gr
import pytest
import torch
from gradio_client.exceptions import AppError

from components import sampling_tab as tab
from inference import generation
from inference.generation import prompt_ids
from inference.limits import MAX_NEW_TOKENS

PROMPT = "What is the capital of France?"
# temperature, top_k, top_p, min_p, repetition, presence, frequency
VALUES = [0.8, 40, 0.9, 0.0, 1.1, 0.0, 0.0]


def controls(prompt=PROMPT, chat=True, seed=7, values=VALUES, max_new=12, min_new=0, stop=""):
    return [prompt, chat, seed, *values, max_new, min_new, stop]


def model_logits(session, prompt, chat=True):
    ids = torch.tensor([prompt_ids(session, prompt, chat)], device=session.device)
    with session.lock, torch.inference_mode():
        return session.model(ids).logits[0, -1].float()


# ---------------------------------------------------------------------------------------------------
# Event functions, called as Gradio calls them


def test_step_rerender_branch_and_show_step(session):
    out = tab.on_reset(*controls())
    state = out[-1]
    assert state["ids"] == [] and state["view"] == 0 and state["seed"] == 7
    for _ in range(3):
        out = tab.on_step(state, *controls())
        state = out[-1]
    assert len(state["ids"]) == 3 and state["view"] == 2
    html_text, status, waterfall, table, draw, whatif, _ = out
    assert html_text.count('class="smp-tok') == 4  # three tokens and the 'next' cursor
    assert "Step 3" in status and "u = " in status
    assert len(waterfall.data) == len(state and tab.PARAMS and ["raw", "repetition", "temperature", "top_k", "top_p"])
    assert len(draw.data) == 4  # bars + CDF, histogram + expected counts
    assert "top-k" in table and "tokens left" in table

    # A slider moves: the pipeline is re-applied to the stored logits, the model does not run.
    with mock.patch.object(generation, "forward_last", side_effect=AssertionError("the model ran")):
        hotter = tab.on_rerender(state, *controls(values=[1.8, 40, 0.9, 0.0, 1.1, 0.0, 0.0]))
    assert hotter[-1]["ids"] == state["ids"] and "s / 1.8" in hotter[3]

    # What-if at step 2: take the second-best candidate there; later tokens are dropped.
    viewed = tab.on_show_step(state, *controls(), evt=gr.EventData(None, {"step": 1}))
    assert viewed[-1]["view"] == 1 and "Step 2" in viewed[1]
    choices = viewed[5]["choices"] if isinstance(viewed[5], dict) else viewed[5].choices
    alternative = [value for _, value in choices if value != state["ids"][1]][0]
    branched = tab.on_branch(viewed[-1], alternative, *controls())
    new_state = branched[-1]
    assert new_state["ids"] == [state["ids"][0], alternative] and new_state["forced"] == [False, True]
    assert "Branched" in branched[1] and "whatif" in branched[0]


def test_generate_to_end_streams_and_stops_with_a_reason(session):
    state = tab.on_reset(*controls(values=[0, 0, 1.0, 0.0, 1.0, 0.0, 0.0], max_new=40))[-1]
    outputs = list(tab.generate_to_end(state, *controls(values=[0, 0, 1.0, 0.0, 1.0, 0.0, 0.0], max_new=40)))
    final = outputs[-1]
    state = final[-1]
    assert state["stop"] in ("eos", "max_new_tokens") and state["view"] == len(state["ids"]) - 1
    # Greedy: the same tokens transformers' generate gives.
    ids = torch.tensor([prompt_ids(session, PROMPT)])
    with session.lock, torch.inference_mode():
        expected = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=40,
                                          pad_token_id=2)[0, ids.shape[1]:].tolist()
    assert state["ids"] == expected
    assert "ended" in final[0] and "time to first token" in final[1]


def test_stop_sequence_and_min_new_tokens_in_the_ui(session):
    greedy = [0, 0, 1.0, 0.0, 1.0, 0.0, 0.0]
    state = tab.on_reset(*controls(values=greedy))[-1]
    for _ in range(12):
        out = tab.on_step(state, *controls(values=greedy, stop="Paris"))
        state = out[-1]
        if state["stop"]:
            break
    assert state["stop"] == "stop_sequence" and state["stop_seq"] == "Paris"
    assert "stop sequence" in out[0]
    blocked = tab.on_reset(*controls(values=greedy, min_new=5))
    assert "EOS blocked (min new tokens)" in blocked[3]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(values=[-0.5, 40, 0.9, 0.0, 1.1, 0.0, 0.0]), "temperature must be in [0, 10]"),
        (dict(values=[0.8, 40, 0.0, 0.0, 1.1, 0.0, 0.0]), "top_p must be in (0, 1]"),
        (dict(values=[0.8, -3, 0.9, 0.0, 1.1, 0.0, 0.0]), "top_k must be between 0"),
        (dict(values=[0.8, 40, 0.9, 0.0, 0.0, 0.0, 0.0]), "repetition_penalty must be in (0, 10]"),
        (dict(values=[0.8, 40, 0.9, 0.0, 1.1, 3.0, 0.0]), "presence_penalty must be in [-2, 2]"),
        (dict(max_new=MAX_NEW_TOKENS + 1), f"the limit is {MAX_NEW_TOKENS}"),
        (dict(max_new=5, min_new=9), "min_new_tokens (9) cannot be larger"),
        (dict(stop="a\nb\nc\nd\ne"), "At most 4 stop sequences"),
        (dict(prompt="  "), "empty"),
    ],
)
def test_bad_input_in_the_ui_gives_one_clear_message(session, change, message):
    with pytest.raises(gr.Error) as info:
        tab.on_step(None, *controls(**change))
    assert message in str(info.value)


# ---------------------------------------------------------------------------------------------------
# JSON endpoints


def test_next_token_endpoint_gives_the_stage_table(client, session):
    result = client.predict(prompt=PROMPT, generated_ids=[], temperature=0.7, top_k=5, seed=1, api_name="/next_token")
    assert result["model"] == session.model_id and result["step"] == 0 and result["seed"] == 1
    assert [s["name"] for s in result["stages"]] == ["raw", "temperature", "top_k"]
    assert result["stages"][-1]["survivors"] == 5
    logits = model_logits(session, PROMPT)
    raw = {c["id"]: c["prob"] for c in result["stages"][0]["candidates"]}
    probs = torch.softmax(logits, -1)
    for token, p in raw.items():
        assert p == pytest.approx(float(probs[token]), abs=1e-5)
    chosen = result["chosen"]
    assert chosen["id"] in torch.topk(logits, 5).indices.tolist() and 0 <= result["draw"] < 1
    # A later step: the stage table after two given tokens; greedy picks the arg-max.
    greedy = client.predict(prompt=PROMPT, generated_ids=[504, 3575], temperature=0, api_name="/next_token")
    assert greedy["step"] == 2 and greedy["draw"] is None and greedy["chosen"]["rank"] == 1


def test_generate_endpoint_equals_model_generate(client, session):
    result = client.predict(prompt=PROMPT, temperature=0, max_new_tokens=10, api_name="/generate")
    ids = torch.tensor([prompt_ids(session, PROMPT)])
    with session.lock, torch.inference_mode():
        expected = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                                          pad_token_id=2)[0, ids.shape[1]:].tolist()
    assert result["token_ids"] == expected[: len(result["token_ids"])]
    assert result["stop_reason"] in ("eos", "max_new_tokens") and result["ttft_s"] > 0
    assert len(result["steps"]) == len(result["token_ids"]) and len(result["steps"][0]["top"]) <= 5
    stopped = client.predict(prompt=PROMPT, temperature=0, max_new_tokens=20, stop=["Paris"], api_name="/generate")
    assert stopped["stop_reason"] == "stop_sequence" and "Paris" in stopped["text"]
    seeded = [client.predict(prompt=PROMPT, temperature=1.2, seed=9, max_new_tokens=6, api_name="/generate")["token_ids"]
              for _ in range(2)]
    assert seeded[0] == seeded[1]


@pytest.mark.parametrize(
    "endpoint, kwargs, message",
    [
        ("/next_token", dict(temperature=-1), "temperature"),
        ("/next_token", dict(top_p=1.5), "top_p"),
        ("/next_token", dict(top_k=-1), "top_k"),
        ("/next_token", dict(frequency_penalty=9), "frequency_penalty"),
        ("/next_token", dict(generated_ids=[10**9]), "Token ids must be between"),
        ("/generate", dict(max_new_tokens=10_000), "max_new_tokens"),
        ("/generate", dict(repetition_penalty=-1), "repetition_penalty"),
        ("/generate", dict(stop=["x" * 500]), "stop sequence"),
    ],
)
def test_bad_api_input_gets_a_clear_message_and_the_server_keeps_serving(client, endpoint, kwargs, message):
    started = time.perf_counter()
    with pytest.raises(AppError, match=message):
        client.predict(prompt=PROMPT, api_name=endpoint, **kwargs)
    assert time.perf_counter() - started < 10
    assert client.predict(prompt=PROMPT, temperature=0, api_name="/next_token")["chosen"]["rank"] == 1


# ---------------------------------------------------------------------------------------------------
# Browser


def _token_count(page) -> int:
    return page.locator("#smp-text .smp-tok:not(.smp-next)").count()


@pytest.mark.browser
def test_sampling_tab_in_the_browser(page, screenshot):
    page.get_by_role("tab", name="Sampling").click()
    page.wait_for_selector("#smp-text .smp-next")
    page.wait_for_selector("#smp-waterfall .js-plotly-plot")

    for n in range(1, 4):  # step three times
        page.locator("#smp-step").click()
        page.wait_for_function(f"document.querySelectorAll('#smp-text .smp-tok:not(.smp-next)').length >= {n}")
    page.wait_for_selector("#smp-status:has-text('Step 3')")
    assert _token_count(page) == 3
    screenshot(page, "sampling-three-steps")

    # Drag the temperature slider: the same step, the distribution re-drawn (no new token).
    slider = page.locator("#smp-temperature input[type=range]")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.85, y, steps=5)
    page.mouse.up()
    page.wait_for_function("() => /s \\/ 1\\.[6-9]/.test(document.querySelector('#smp-table').innerText)")
    assert _token_count(page) == 3
    screenshot(page, "sampling-temperature-dragged")

    # Go back to step 2 by clicking its token, pick another candidate there, and branch.
    page.locator("#smp-text [data-step='1']").click()
    page.wait_for_selector("#smp-status:has-text('Step 2')")
    options = page.locator("#smp-whatif label")
    options.nth(1).click()
    page.locator("#smp-branch").click()
    page.wait_for_selector("#smp-text .smp-tok.whatif")
    page.wait_for_selector("#smp-status:has-text('Branched')")
    assert _token_count(page) == 2
    screenshot(page, "sampling-what-if")

    # Play steps on a timer until Pause.
    page.locator("#smp-play").click()
    page.wait_for_selector("#smp-play:has-text('Pause')")
    page.wait_for_function("document.querySelectorAll('#smp-text .smp-tok:not(.smp-next)').length >= 4")
    page.locator("#smp-play").click()
    page.wait_for_selector("#smp-play:has-text('Play')")
    assert _token_count(page) >= 4

    page.locator("#smp-generate").click()
    page.wait_for_selector("#smp-text .smp-end", timeout=180_000)
    screenshot(page, "sampling-generated-to-end")

    # A bad value: a clear message, and the tab keeps working.
    page.locator("#smp-max-new input").fill("999")
    page.locator("#smp-step").click()
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for()
    assert "256" in toast.inner_text()


# ---------------------------------------------------------------------------------------------------
# Figures (pure functions of a step record)


def _record(session, **params):
    from inference.generation import inspect_step
    from inference.sampling import SamplingParams

    record, _, _ = inspect_step(session, PROMPT, SamplingParams(seed=3, **params), [], samples=100)
    return record


def test_waterfall_has_one_panel_per_stage_and_greys_removed_tokens(session):
    from components.figures.sampling import REMOVED, waterfall_figure

    record = _record(session, temperature=0.7, top_k=3)
    fig = waterfall_figure(record)
    assert len(fig.data) == len(record.stages) == 3
    top_k = fig.data[-1]
    assert list(top_k.marker.color).count(REMOVED) == len(record.candidates) - 3
    assert "removed" in top_k.text and "3 left" in fig.layout.annotations[-1].text
    assert len(fig.to_json()) < 60_000  # a small payload, never the vocabulary


def test_draw_figure_marks_u_and_the_histogram_counts_100(session):
    from components.figures.sampling import draw_figure

    record = _record(session, temperature=1.0)
    fig = draw_figure(record, greedy=False)
    assert any(shape.y0 == record.draw for shape in fig.layout.shapes)
    assert sum(c for _, _, c, _ in record.samples) == 100
    greedy = draw_figure(_record(session, temperature=0), greedy=True)
    assert not greedy.layout.shapes and "temperature 0" in greedy.layout.annotations[0].text


def test_generated_text_is_escaped_clickable_and_coloured():
    from components.figures.sampling import PROB_BUCKETS, _unique_labels, generated_html

    out = generated_html(["<b>x</b>", " a\n"], [0.01, 0.9], 1, forced=[False, True], pending=True)
    assert "&lt;b&gt;" in out and "<b>x" not in out
    assert 'data-step="0"' in out and 'data-step="2"' in out  # two tokens and the next step
    assert PROB_BUCKETS[0][1] in out and PROB_BUCKETS[-1][1] in out and "whatif" in out
    assert _unique_labels(["<b>", "a", "a"], [1, 2, 3]) == ["&lt;b&gt;", "a  #2", "a  #3"]
