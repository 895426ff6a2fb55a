"""The Sampling tab through the app: its event functions, the JSON API (gradio_client) and a real browser
(steps, what-if, play, the lesson's tries, a shared link, the CSV downloads, predict then reveal)."""

from __future__ import annotations

import csv
import html
import time
from unittest import mock
from urllib.parse import parse_qs, urlencode, urlparse

import gradio as gr
import pytest
import torch
from gradio_client.exceptions import AppError

from components.sampling import events as ev
from components.teaching import load_lesson
from inference import generation
from inference.generation import prompt_ids
from inference.limits import MAX_NEW_TOKENS
from conftest import assert_no_error

PROMPT = "What is the capital of France?"
# temperature, top_k, top_p, min_p, repetition, presence, frequency
VALUES = [0.8, 40, 0.9, 0.0, 1.1, 0.0, 0.0]
GREEDY = [0, 0, 1.0, 0.0, 1.0, 0.0, 0.0]


def controls(prompt=PROMPT, chat=True, seed=7, values=VALUES, max_new=12, min_new=0, stop="", predict=False,
             guess="", kind="none", constraint="", ablation="", mode="zero"):
    return [prompt, chat, seed, *values, max_new, min_new, stop, predict, guess, kind, constraint, ablation, mode]


def named(out) -> dict:
    """An event's outputs by view name."""
    return dict(zip(ev.VIEW_NAMES, out))


def download_path(button) -> str:
    value = button.value
    return value["path"] if isinstance(value, dict) else value


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def shown(text: str) -> str:
    """A token's text as the generated-text view writes it."""
    return html.escape(text).replace("\n", "↵<br>")


def model_logits(session, prompt, chat=True):
    ids = torch.tensor([prompt_ids(session, prompt, chat)], device=session.device)
    with session.lock, torch.inference_mode():
        return session.model(ids).logits[0, -1].float()


# ---------------------------------------------------------------------------------------------------
# Event functions, called as Gradio calls them


def test_step_rerender_branch_and_show_step(session):
    out = named(ev.on_reset(*controls()))
    state = out["state"]
    assert state.run.token_ids == [] and state.view == 0 and state.run.seed == 7
    for _ in range(3):
        out = named(ev.on_step(state, *controls()))
        state = out["state"]
    assert len(state.run.tokens) == 3 and state.view == 2 and out["steps"] == 3
    assert out["text"].count('class="smp-tok') == 4  # three tokens and the 'next' cursor
    assert "Step 3" in out["status"] and "u = " in out["status"]
    assert len(out["waterfall"].data) == 5  # raw, repetition, temperature, top_k, top_p
    assert len(out["draw"].data) == 4  # bars + CDF, histogram + expected counts
    assert "top-k" in out["table"] and "tokens left" in out["table"]
    # The text alternatives carry the figures' real numbers.
    assert "49,152 possible tokens" in out["waterfall_alt"]
    assert "repetition penalty, temperature, top-k, top-p" in out["waterfall_alt"]
    assert f"u = {state.run.tokens[2].draw:.3f}" in out["draw_alt"] and "In 100 draws" in out["draw_alt"]

    # A slider moves: the pipeline is re-applied to the stored logits, the model does not run.
    with mock.patch.object(generation, "forward_last", side_effect=AssertionError("the model ran")):
        hotter = named(ev.on_rerender(state, *controls(values=[1.8, 40, 0.9, 0.0, 1.1, 0.0, 0.0])))
    assert hotter["state"].run.token_ids == state.run.token_ids and "s / 1.8" in hotter["table"]

    # What-if at step 2: take the second-best candidate there; later tokens are dropped.
    viewed = named(ev.on_show_step(gr.EventData(None, {"step": 1}), state, *controls()))
    assert viewed["state"].view == 1 and "Step 2" in viewed["status"]
    whatif = viewed["whatif"]
    choices = whatif["choices"] if isinstance(whatif, dict) else whatif.choices
    alternative = [value for _, value in choices if value != state.run.token_ids[1]][0]
    branched = named(ev.on_branch(viewed["state"], alternative, *controls()))
    new_state = branched["state"]
    assert new_state.run.token_ids == [state.run.token_ids[0], alternative]
    assert [t.forced for t in new_state.run.tokens] == [False, True]
    assert "Branched" in branched["status"] and "whatif" in branched["text"]


def test_an_empty_seed_box_gets_the_seed_used(session):
    out = named(ev.on_reset(*controls(seed=None)))
    assert out["seed"] == out["state"].run.seed and isinstance(out["seed"], int)
    # The box now holds it: the next step continues the same run and leaves the box as it is.
    stepped = named(ev.on_step(out["state"], *controls(seed=out["seed"])))
    assert stepped["state"].run.seed == out["seed"] and len(stepped["state"].run.tokens) == 1
    assert not isinstance(stepped["seed"], int)  # gr.skip(): nothing written


def test_predict_first_hides_the_draw_until_reveal(session):
    state = named(ev.on_reset(*controls()))["state"]
    hidden = named(ev.on_step(state, *controls(predict=True)))
    token = hidden["state"].run.tokens[-1].text
    assert hidden["state"].hidden and hidden["steps"] == 1
    # Nothing of the drawn token or its distribution goes to the page: a "?" and the note only.
    assert 'class="smp-secret"' in hidden["text"] and "smp-tok" not in hidden["text"].split("smp-legend")[0]
    assert hidden["status"] == "" and hidden["waterfall"] is None and hidden["draw"] is None
    assert hidden["table"] == "" and hidden["waterfall_alt"] == "" and hidden["draw_alt"] == ""
    assert "Make your guess" in hidden["hidden_note"].value and hidden["panels"].visible is False
    assert hidden["stage_csv"].value is None and hidden["trace_csv"].value is None
    # A slider moved while hidden: still hidden.
    assert named(ev.on_rerender(hidden["state"], *controls(predict=True)))["waterfall"] is None
    # Reveal: the token, the views, and where the guess stands in the distribution.
    revealed = named(ev.on_reveal(hidden["state"], *controls(predict=True, guess=token.strip() or token)))
    assert not revealed["state"].hidden and shown(token) in revealed["text"]
    assert "Your guess" in revealed["status"] and "the draw took it" in revealed["status"]
    assert revealed["waterfall"] is not None and revealed["panels"].visible is True
    # A guess the pipeline removed (top-k 40 keeps 40 tokens): p = 0, and the model's own rank.
    unlikely = named(ev.on_reveal(hidden["state"], *controls(guess="zebra")))
    assert "removed by the pipeline (p = 0)" in unlikely["status"]


def test_stage_csv_equals_the_next_token_endpoint(client, session):
    out = named(ev.on_reset(*controls(seed=11, values=[0.7, 5, 1.0, 0.0, 1.0, 0.0, 0.0])))
    rows = read_csv(download_path(out["stage_csv"]))
    api = client.predict(prompt=PROMPT, generated_ids=[], temperature=0.7, top_k=5, seed=11, api_name="/next_token")
    expected = [(st["name"], c["id"], c["piece"], c["rank"], c["kept"], c["prob"])
                for st in api["stages"] for c in st["candidates"]]
    got = [(r["stage"], int(r["id"]), r["token"], int(r["rank"]) if r["rank"] else None, r["kept"] == "1",
            float(r["probability"])) for r in rows]
    assert [g[:5] for g in got] == [e[:5] for e in expected]
    assert [g[5] for g in got] == pytest.approx([e[5] for e in expected], abs=1e-6)


def test_generate_to_end_streams_and_stops_with_a_reason(session):
    state = named(ev.on_reset(*controls(values=GREEDY, max_new=40)))["state"]
    outputs = list(ev.generate_to_end(state, *controls(values=GREEDY, max_new=40)))
    final = named(outputs[-1])
    state = final["state"]
    assert state.run.stop_reason in ("eos", "max_new_tokens") and state.view == len(state.run.tokens) - 1
    # Greedy: the same tokens transformers' generate gives.
    ids = torch.tensor([prompt_ids(session, PROMPT)])
    with session.lock, torch.inference_mode():
        expected = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=40,
                                          pad_token_id=2)[0, ids.shape[1]:].tolist()
    assert state.run.token_ids == expected
    assert "ended" in final["text"] and "time to first token" in final["status"]
    trace = read_csv(download_path(final["trace_csv"]))
    assert [int(r["id"]) for r in trace] == expected and {r["how"] for r in trace} == {"greedy"}


def test_stop_sequence_and_min_new_tokens_in_the_ui(session):
    state = named(ev.on_reset(*controls(values=GREEDY)))["state"]
    for _ in range(12):
        out = named(ev.on_step(state, *controls(values=GREEDY, stop="Paris")))
        state = out["state"]
        if state.run.stop_reason:
            break
    assert state.run.stop_reason == "stop_sequence" and state.run.stop_sequence == "Paris"
    assert "stop sequence" in out["text"]
    blocked = named(ev.on_reset(*controls(values=GREEDY, min_new=5)))
    assert "EOS blocked (min new tokens)" in blocked["table"]
    # A newline typed as \n in the stop box (as a lesson's link sets it) is a newline.
    assert ev.parse_stop("\\n\\n") == ["\n\n"] and ev.parse_stop("a\nb") == ["a", "b"]


def test_the_lesson_tries_set_known_fields_and_say_what_happens(session):
    """The lesson's tries: the first stops at a blank line (a \\n\\n stop sequence), the third breaks a loop."""
    lesson = load_lesson("sampling")
    assert len(lesson.tries) == 3  # the constraint and compare tries: lesson "structured"
    values = [t.values for t in lesson.tries]
    assert values[0]["stop"] == "\\n\\n" and ev.parse_stop(values[0]["stop"]) == ["\n\n"]
    for v in values:
        assert set(v) <= set(ev.CONTROL_NAMES) | set(ev.COMPARE_NAMES) | {"compare"}
    # What the lesson claims about the default model, measured.
    greedy = list(ev.try_to_end(*try_controls(values[0])))
    assert named(greedy[-1])["state"].run.stop_reason == "stop_sequence"
    looped = dict(values[2], repetition_penalty=1.0)
    unbroken = [t.text for t in named(list(ev.try_to_end(*try_controls(looped)))[-1])["state"].run.tokens]
    broken = [t.text for t in named(list(ev.try_to_end(*try_controls(values[2])))[-1])["state"].run.tokens]
    assert _repeats("".join(unbroken)) > _repeats("".join(broken))


def try_controls(values: dict) -> list:
    return [values.get(name, "" if name in ("stop", "guess") else False) for name in ev.CONTROL_NAMES]


def _repeats(text: str) -> int:
    """How many sentences occur more than once (a loop writes the same one again and again)."""
    sentences = [s.strip() for s in text.replace("\n", ".").split(".") if s.strip()]
    return len(sentences) - len(set(sentences))


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
        ev.on_step(None, *controls(**change))
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
# ---------------------------------------------------------------------------------------------------
# Browser


def _token_count(page) -> int:
    return page.locator("#smp-text .smp-tok:not(.smp-next)").count()


def _open_tab(page) -> None:
    page.get_by_role("tab", name="Sampling").click()
    page.wait_for_selector("#smp-text .smp-next")
    page.wait_for_selector("#smp-waterfall .js-plotly-plot")


@pytest.mark.browser
def test_sampling_tab_in_the_browser(page, screenshot):
    _open_tab(page)
    for n in range(1, 4):  # step three times
        page.locator("#smp-step").click()
        page.wait_for_function(f"document.querySelectorAll('#smp-text .smp-tok:not(.smp-next)').length >= {n}")
    page.wait_for_selector("#smp-status:has-text('Step 3')")
    assert _token_count(page) == 3
    assert "possible tokens" in page.locator("#smp-waterfall-alt").inner_text()
    screenshot(page, "sampling-three-steps")

    # Drag the temperature slider: the same step, the distribution re-drawn (no new token).
    slider = page.locator("#smp-temperature input[type=range]")
    slider.scroll_into_view_if_needed()  # the mouse works in viewport coordinates
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

    page.locator("#smp-max-new input").fill("12")  # a short run: this machine's 2 cores are shared
    page.locator("#smp-generate").click()
    page.wait_for_selector("#smp-text .smp-end", timeout=180_000)
    screenshot(page, "sampling-generated-to-end")

    # A bad value: a clear message, and the tab keeps working.
    page.locator("#smp-max-new input").fill("999")
    page.locator("#smp-step").click()
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    toast.wait_for()
    assert "256" in toast.inner_text()


RUN_DONE = """([prev, seed]) => {
  const text = document.querySelector('#smp-text').innerText;
  const status = document.querySelector('#smp-status').innerText;
  return text !== prev && status.includes('This run:') && status.includes('seed ' + seed + ' ');
}"""


@pytest.mark.browser
def test_the_lesson_tries_run(page, screenshot):
    _open_tab(page)
    lesson = load_lesson("sampling")
    for i, t in enumerate(lesson.tries):
        before = page.locator("#smp-text").inner_text()
        page.locator(f"#try-sampling-{i}").click()
        page.wait_for_function(RUN_DONE, arg=[before, t.values["seed"]], timeout=120_000)
        assert page.locator("#smp-prompt textarea").input_value() == t.values["prompt"]
        assert page.locator("#smp-stop textarea").input_value() == t.values["stop"]
        assert f"seed {t.values['seed']}" in page.locator("#smp-status").inner_text()
        assert_no_error(page)
        if i == 0:  # greedy with the \n\n stop sequence: it stops at the blank line
            assert "a stop sequence appeared" in page.locator("#smp-text").inner_text()
            screenshot(page, "sampling-try-greedy-stop")
            # Its link carries the stop box as typed (backslash n), which the box reads back as a newline.
            page.locator("#share-sampling").click()
            page.wait_for_function("() => document.querySelector('#share-sampling-url input, "
                                   "#share-sampling-url textarea').value.includes('stop=')")
            url = page.locator("#share-sampling-url textarea, #share-sampling-url input").first.input_value()
            assert parse_qs(urlparse(url).query)["stop"] == ["\\n\\n"]


@pytest.mark.browser
def test_a_shared_link_replays_the_seeded_tokens_and_downloads_match_the_api(page, app_url, client, screenshot):
    link = dict(tab="sampling", prompt="Once upon a time", chat=0, seed=1234, temperature=0.9, top_k=50, top_p=0.95,
                min_p=0, repetition_penalty=1.0, presence_penalty=0, frequency_penalty=0, max_new_tokens=20,
                min_new_tokens=0, steps=6)
    page.goto(f"{app_url}/?{urlencode(link)}")
    page.wait_for_selector("#smp-status:has-text('6 token(s) generated')")
    assert page.locator("#smp-prompt textarea").input_value() == "Once upon a time"
    assert page.locator("#smp-seed input").input_value() == "1234"
    assert not page.locator("#smp-chat input").is_checked()
    api = client.predict(prompt="Once upon a time", temperature=0.9, top_k=50, top_p=0.95, seed=1234,
                         max_new_tokens=20, chat=False, api_name="/generate")
    assert _token_count(page) == 6
    screenshot(page, "sampling-shared-link")

    # The generated tokens as CSV: the same tokens, probabilities and uniform numbers as /generate.
    with page.expect_download() as info:
        page.locator("#smp-trace-csv").click()
    trace = read_csv(info.value.path())
    assert [int(r["id"]) for r in trace] == api["token_ids"][:6]
    assert [float(r["probability"]) for r in trace] == pytest.approx([s["prob"] for s in api["steps"][:6]], abs=1e-6)
    assert [float(r["u"]) for r in trace] == pytest.approx([s["draw"] for s in api["steps"][:6]], abs=1e-7)
    # The stage table of the step on view (the 6th) as CSV: what /next_token says for that step.
    with page.expect_download() as info:
        page.locator("#smp-stage-csv").click()
    stages = read_csv(info.value.path())
    step = client.predict(prompt="Once upon a time", generated_ids=api["token_ids"][:5], temperature=0.9, top_k=50,
                          top_p=0.95, seed=1234, chat=False, api_name="/next_token")
    assert step["chosen"]["id"] == api["token_ids"][5]
    expected = [(st["name"], c["id"], c["kept"]) for st in step["stages"] for c in st["candidates"]]
    assert [(r["stage"], int(r["id"]), r["kept"] == "1") for r in stages] == expected
    assert [float(r["probability"]) for r in stages] == pytest.approx(
        [c["prob"] for st in step["stages"] for c in st["candidates"]], abs=1e-6)

    # Copy link: the view's values round-trip.
    page.locator("#share-sampling").click()
    page.wait_for_function("() => document.querySelector('#share-sampling-url input, #share-sampling-url textarea')"
                           ".value.includes('tab=sampling')")
    query = parse_qs(urlparse(page.locator("#share-sampling-url textarea, #share-sampling-url input").first
                              .input_value()).query)
    assert query["prompt"] == ["Once upon a time"] and query["seed"] == ["1234"] and query["steps"] == ["6"]
    assert query["temperature"] == ["0.9"] and query["top_k"] == ["50"] and query["chat"] == ["0"]

    # An emptied seed box gets a new random seed, and the link carries it.
    page.locator("#smp-seed input").fill("")
    page.locator("#smp-seed input").blur()
    page.wait_for_function("() => { const v = document.querySelector('#smp-seed input').value;"
                           " return v !== '' && v !== '1234'; }")
    seed = page.locator("#smp-seed input").input_value()
    page.wait_for_selector(f"#smp-status:has-text('seed {seed}')")
    page.locator("#share-sampling").click()
    page.wait_for_function("(s) => document.querySelector('#share-sampling-url input, #share-sampling-url textarea')"
                           ".value.includes('seed=' + s)", arg=seed)


@pytest.mark.browser
def test_predict_first_then_reveal_and_presenter_mode(page, client, screenshot):
    _open_tab(page)
    page.locator("#smp-predict input").check()
    page.wait_for_selector("#smp-hidden:has-text('Make your guess')")
    page.locator("#smp-step").click()
    page.wait_for_selector("#smp-text .smp-secret")
    # The token the class must guess: the default example's first draw (seed 42), from the endpoint.
    default = tab_default()
    chosen = client.predict(prompt=default["prompt"], generated_ids=[], chat=default["chat"], seed=42,
                            **{k: default[k] for k in ev.PARAMS}, api_name="/next_token")["chosen"]
    secret = chosen["text"].strip()
    assert secret
    tokens = page.locator("#smp-text .smp-text").inner_text()
    assert secret not in tokens and "?" in tokens
    assert page.locator("#smp-panels").is_hidden() and page.locator("#smp-status").inner_text().strip() == ""
    assert page.locator("#smp-waterfall .js-plotly-plot").count() == 0 or not page.locator("#smp-waterfall").is_visible()
    screenshot(page, "sampling-predict-hidden")

    page.locator("#smp-guess textarea, #smp-guess input").first.fill(secret)
    page.locator("#smp-reveal").click()
    page.wait_for_selector("#smp-status:has-text('Your guess')")
    page.wait_for_selector("#smp-waterfall .js-plotly-plot")
    assert secret in page.locator("#smp-text .smp-text").inner_text()
    assert "the draw took it" in page.locator("#smp-status").inner_text()
    assert page.locator("#smp-hidden").is_hidden()
    screenshot(page, "sampling-predict-revealed")

    # Presenter mode hides the advanced controls (presence/frequency penalties, what-if, downloads).
    assert page.locator("#smp-presence").is_visible()
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("() => document.body.classList.contains('lie-presenter')")
    assert page.locator("#smp-presence").is_hidden() and page.locator("#smp-whatif").is_hidden()
    assert page.locator("#smp-temperature").is_visible() and page.locator("#smp-reveal").is_visible()
    screenshot(page, "sampling-presenter")
    page.locator("#lie-presenter-toggle").click()
    page.wait_for_function("() => !document.body.classList.contains('lie-presenter')")


def tab_default() -> dict:
    from components.sampling import layout as sampling_tab

    return sampling_tab.DEFAULT


# ---------------------------------------------------------------------------------------------------
# Figures (pure functions of a step record)


def _record(session, **params):
    from inference.generation import inspect_step
    from inference.sampling import SamplingParams

    record, _, _ = inspect_step(session, PROMPT, SamplingParams(seed=3, **params), [], samples=100)
    return record


def test_waterfall_has_one_panel_per_stage_and_greys_removed_tokens(session):
    from components.sampling.figures import REMOVED, waterfall_figure

    record = _record(session, temperature=0.7, top_k=3)
    fig = waterfall_figure(record)
    assert len(fig.data) == len(record.stages) == 3
    top_k = fig.data[-1]
    assert list(top_k.marker.color).count(REMOVED) == len(record.candidates) - 3
    assert "removed" in top_k.text and "3 left" in fig.layout.annotations[-1].text
    assert len(fig.to_json()) < 60_000  # a small payload, never the vocabulary


def test_draw_figure_marks_u_and_the_histogram_counts_100(session):
    from components.sampling.figures import draw_figure

    record = _record(session, temperature=1.0)
    fig = draw_figure(record, greedy=False)
    assert any(shape.y0 == record.draw for shape in fig.layout.shapes)
    assert sum(c for _, _, c, _ in record.samples) == 100
    greedy = draw_figure(_record(session, temperature=0), greedy=True)
    assert not greedy.layout.shapes and "temperature 0" in greedy.layout.annotations[0].text


def test_generated_text_is_escaped_clickable_and_coloured():
    from components.sampling.figures import PROB_BUCKETS, _unique_labels, generated_html
    from inference.sampling_run import ChosenToken

    tokens = [ChosenToken(token_id=1, piece="<b>x</b>", text="<b>x</b>", prob=0.5, raw_prob=0.01, rank=1, draw=0.3),
              ChosenToken(token_id=2, piece="·a↵", text=" a\n", prob=0.5, raw_prob=0.9, rank=1, draw=0.6,
                          forced=True)]
    out = generated_html(tokens, 1, pending=True)
    assert "&lt;b&gt;" in out and "<b>x" not in out
    assert 'data-step="0"' in out and 'data-step="2"' in out  # two tokens and the next step
    assert PROB_BUCKETS[0][1] in out and PROB_BUCKETS[-1][1] in out and "whatif" in out
    assert _unique_labels(["<b>", "a", "a"], [1, 2, 3]) == ["&lt;b&gt;", "a  #2", "a  #3"]
