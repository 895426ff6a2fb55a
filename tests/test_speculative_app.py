"""The Speculative decoding tab through the app: its event functions and figures, the `speculative` JSON endpoint
(gradio_client), the lesson, and a browser run of each drafter from its "try this" button."""

from __future__ import annotations

import html
import json

import gradio as gr
import pytest
from gradio_client.exceptions import AppError

from components.speculative import events as ev
from components.speculative import figures as fig
from components.speculative import layout as tab
from components.teaching import load_lesson
from inference.sampling import SamplingParams
from inference.speculative import Drafter, RuleView, SpecStep, SpeculativeTrace
from conftest import assert_no_error

EDIT = ("Repeat this sentence word for word: The red boat sailed slowly across the quiet lake while two children "
        "counted the fish.")


def test_run_event_draws_every_view(session):
    (headline, passes, passes_alt, steps, acceptance, acceptance_alt, speedup, speedup_alt, selector, rule, rule_alt,
     trace, download, seed) = ev.on_run(EDIT, True, "prompt_lookup", 7, 4, 10, 0.0, 7)
    n = len(trace.token_ids)
    assert "Identical tokens to plain greedy decoding" in headline and 'id="spd-speedup"' in headline
    assert passes_alt.startswith(f"{n} tokens in {trace.target_passes} target pass")
    assert steps.count("<tr>") == len(trace.steps) + 1 and "spd-acc" in steps and "spd-tgt" in steps
    assert acceptance_alt.startswith(f"{trace.accepted} of {trace.proposed} draft token")
    assert "Speculative:" in speedup_alt and "plain decoding of the same" in speedup_alt
    assert speedup.layout.title.text.endswith(fig.passes_line(trace))
    assert {t.name for t in passes.data} >= {"accepted draft tokens", "plain decode pass"}
    assert selector.visible is False and "Greedy" in rule_alt and seed == 7
    with open(download.value["path"], encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["token_ids"] == trace.token_ids and saved["same_as_plain"] is True
    assert all(len(f.to_json()) < 200_000 for f in (passes, acceptance, speedup))


def test_sampling_run_shows_the_rule_for_a_step(session):
    out = ev.on_run("Write one sentence about the sea.", True, "early_exit", 16, 3, 6, 0.8, 7)
    headline, selector, rule, rule_alt, trace, seed = out[0], out[8], out[9], out[10], out[11], out[13]
    assert seed == 7 and trace.sampling and "exactly the target's distribution" in html.unescape(headline)
    assert selector.visible is True
    assert {t.name.split(":")[0] for t in rule.data} >= {"p", "q"}
    assert "min(1, p/q)" in rule.layout.title.text or "bonus" in rule.layout.title.text
    for index in fig.rule_steps(trace):
        figure, summary = ev.on_rule_step(trace, index + 1)
        assert summary.startswith(f"Step {index + 1}")


@pytest.mark.slow
def test_sweep_and_comparison_events(session):
    # The server's time limit per request holds here too: on a busy machine a sweep stops early and says so.
    plot, summary, table = ev.on_sweep(EDIT, True, "prompt_lookup", 7, 8, 0.0, 7)
    assert summary.startswith(("Best k on this machine", "No k beats plain decoding"))
    assert table.count("<tr>") == 9 or "Stopped early (time limit)" in summary  # header + k = 1..8
    assert "Every k gave exactly the tokens of plain greedy decoding" in summary
    assert any(t.name and t.name.startswith("best k") for t in plot.data)
    plot, summary, table = ev.on_compare(EDIT, True, ["prompt_lookup", "early_exit"], 2, 3, 8, 0.0, 7)
    assert "prompt lookup" in summary and "All gave exactly the tokens of plain greedy decoding" in summary
    assert table.count("<tr>") == 3 and "early exit" in summary


def test_model_switch_and_refusals(session):
    assert len(ev.on_model()) == 22
    with pytest.raises(gr.Error, match="num_draft_tokens"):
        ev.on_run(EDIT, True, "prompt_lookup", 7, 0, 10, 0.0, 7)
    with pytest.raises(gr.Error, match="Draft models on this server"):
        ev.on_run(EDIT, True, "someone/other-model", 7, 4, 10, 0.0, 7)
    assert ev.drafter_spec("early_exit", 5) == "early_exit:5" and ev.drafter_spec("prompt_lookup", 5) == "prompt_lookup"


def _made_up_trace(sampling: bool) -> SpeculativeTrace:
    """A record built by hand (figures are pure): a token that looks like markup must be escaped."""
    rule = RuleView(position=1, outcome="rejected", token_ids=[5, 6, 7], pieces=["<b>", "x", "y"], p=[0.5, 0.3, 0.2],
                    q=[0.1, 0.8, 0.1], residual=[0.8, 0.0, 0.2], residual_mass=0.5, draft_token=6, chosen_token=5)
    steps = [SpecStep(0, 0, [5, 6, 7], 1, 5, ["<b>", "x", "y"], "<b>", [0.9, 0.3, 0.1], [0.8, 0.8, 0.1],
                      [1.0, 0.375, 1.0] if sampling else [], rule if sampling else None, drafter_passes=3,
                      target_passes=1),
             SpecStep(1, 2, [], 0, 7, [], "<i>", target_passes=1)]
    return SpeculativeTrace(prompt="<script>", chat=False, model_id="m", drafter=Drafter("x", "model", "<drafter>"),
                            generator="G", num_draft_tokens=3, max_new_tokens=3,
                            params=SamplingParams(temperature=0.7 if sampling else 0.0), seed=1 if sampling else None,
                            prompt_ids=[1], token_ids=[5, 5, 7], pieces=["<b>", "<b>", "<i>"], text="<script>x",
                            steps=steps, target_passes=2, drafter_passes=3, seconds=1.0, stop_reason="max_new_tokens",
                            plain_token_ids=[5, 5, 7], plain_text="", plain_passes=3, plain_seconds=1.5)


def test_figures_are_pure_and_escape_what_they_show():
    for sampling in (False, True):
        t = _made_up_trace(sampling)
        shown = fig.headline_html(t) + fig.steps_html(t)
        assert "<script>" not in shown and "&lt;script&gt;" in shown and "&lt;b&gt;" in shown and "<drafter>" not in shown
        assert fig.passes_line(t) == "3 tokens in 2 target passes instead of 3"
        assert "1.50× faster" in fig.speedup_summary(t)
        assert fig.acceptance_summary(t).startswith("1 of 3 draft tokens accepted (33%) over 2 steps")
        fig.passes_figure(t), fig.acceptance_figure(t), fig.speedup_figure(t)
    t = _made_up_trace(True)
    assert fig.default_rule_step(t) == 0
    assert "0.375" not in fig.rule_summary(t, 0) and "kept with probability 0.38" in fig.rule_summary(t, 0)
    assert len(fig.rule_figure(t, 0).data) == 3  # p, q, residual


def test_the_lesson_tries_fit_the_tab():
    lesson = load_lesson("speculative")
    assert 2 <= len(lesson.tries) <= 4 and len(lesson.body) > 300
    fields = {"prompt", "chat", "drafter", "layers", "num_draft_tokens", "max_new_tokens", "temperature", "seed"}
    drafters = {value for _, value in ev.drafter_choices()}
    for t in lesson.tries:
        assert set(t.values) <= fields and t.values["drafter"] in drafters, t.label
    kinds = [t.values["drafter"] for t in lesson.tries]
    assert "prompt_lookup" in kinds and "early_exit" in kinds and any("/" in k for k in kinds)
    assert any(t.values.get("temperature", 0) > 0 for t in lesson.tries)
    assert {e["drafter"] for e in tab.EXAMPLES} <= drafters


def test_speculative_endpoint(client):
    out = client.predict(prompt=EDIT, drafter="prompt_lookup", num_draft_tokens=4, max_new_tokens=8,
                         api_name="/speculative")
    assert out["same_as_plain"] is True and out["candidate_generator"] == "PromptLookupCandidateGenerator"
    assert sum(s["accepted"] + 1 for s in out["steps"]) == len(out["token_ids"])
    assert len(out["token_ids"]) == 8 or out["stop_reason"] == "eos"
    assert out["target_passes"] == len(out["steps"]) and out["speedup"] > 0
    with pytest.raises(AppError, match="num_draft_tokens"):
        client.predict(prompt=EDIT, drafter="prompt_lookup", num_draft_tokens=9, api_name="/speculative")
    with pytest.raises(AppError, match="early exit|Early exit"):
        client.predict(prompt=EDIT, drafter="early_exit:99", api_name="/speculative")


@pytest.mark.browser
def test_each_drafter_from_its_try_button(page, screenshot):
    page.get_by_role("tab", name="Speculative decoding").click()
    page.wait_for_selector("#spd-model-note .lie-note")
    lesson = load_lesson("speculative")
    generators = {"prompt_lookup": "PromptLookupCandidateGenerator", "early_exit": "EarlyExitCandidateGenerator"}
    for i, t in enumerate(lesson.tries):
        page.click(f"#try-speculative-{i}")
        # Each try's run names its k and the candidate generator transformers picked (consecutive tries differ).
        generator = generators.get(t.values["drafter"], "AssistedCandidateGenerator")
        page.wait_for_selector(f"#spd-headline:has-text('k = {t.values['num_draft_tokens']}; {generator}')",
                               timeout=240_000)
        page.wait_for_selector("#spd-steps table")
        page.wait_for_selector("#spd-speedup-plot .js-plotly-plot")
        page.wait_for_selector("#spd-passes-plot .js-plotly-plot")
        assert "target passes" in page.locator("#spd-headline").inner_text()
        if t.values.get("temperature", 0) > 0:
            page.wait_for_selector("#spd-rule-plot .js-plotly-plot")
            assert "exactly the target's distribution" in page.locator("#spd-headline").inner_text()
        else:
            assert "Identical tokens to plain greedy decoding" in page.locator("#spd-headline").inner_text()
        assert_no_error(page)
        screenshot(page, f"speculative-try-{i}")
