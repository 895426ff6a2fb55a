"""A change of language redraws the results on screen, without a model pass, in the five tabs that keep their run
for the page: Prefill & decode, Memory, Speculative decoding, Attention and Beam search.

Each test runs the tab's handlers once in English (the smallest inputs), then calls the tab's `on_language` (what
the page's language event calls) with what the page kept, in Persian and in Chinese: every view redrawn is in that
language, equals what the tab's pure figure builders draw in it, and no module of any model ran meanwhile. Before
any run the redraw leaves every view as it is. What takes minutes on a busy machine is made cheaper, as the redraw
reads the records only, whichever model and settings made them: Memory's analyses run on the small random GPT-2 of
conftest, the context sweep measures one length, and Speculative decoding's sweep and comparison (many timed
generations) are records made from the tab's own run."""

from __future__ import annotations

import contextlib
import functools
import json
import re

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import torch

from components.attention import events as att
from components.beam import events as beam
from components.beam import figures as beam_fig
from components.i18n import t
from components.memory import events as mem
from components.prefill import events as pfd
from components.speculative import events as spd
from components.speculative import figures as spd_fig
from inference.attention import capture_attention
from inference.speculative import DrafterComparison, DraftSweep, SweepPoint

SKIP = gr.skip()
# A language's own script: a view redrawn in it shows some of it.
SCRIPTS = {"fa": re.compile("[\u0600-\u06ff]"), "zh": re.compile("[\u4e00-\u9fff]")}
LANGS = ("fa", "zh")


def no_progress(*args, **kwargs) -> None:
    """A progress bar that shows nothing (a handler called outside Gradio)."""


def text_of(view) -> str:
    """A view as text, to compare and to read its script."""
    if isinstance(view, go.Figure):
        return json.dumps(view.to_plotly_json(), ensure_ascii=False, default=str, sort_keys=True)
    if isinstance(view, pd.DataFrame):
        return " | ".join(map(str, view.columns)) + "\n" + view.to_string()
    if isinstance(view, dict):
        return json.dumps(view, ensure_ascii=False, default=str, sort_keys=True)
    return str(view)


def assert_in_language(redrawn, english, lang: str, expected=None) -> None:
    """Each redrawn view is in `lang`, differs from the English one, and (given) equals what the builders draw."""
    assert len(redrawn) == len(english)
    for i, (new, old) in enumerate(zip(redrawn, english)):
        assert SCRIPTS[lang].search(text_of(new)), f"view {i} is not in {lang}: {text_of(new)[:300]}"
        assert text_of(new) != text_of(old), f"view {i} did not change"
    if expected is not None:
        assert [text_of(v) for v in redrawn] == [text_of(v) for v in expected]


@contextlib.contextmanager
def no_model_pass(session=None):
    """Counts every call of any torch module (any model, any layer) and, given a session, its analysis cache's
    misses: the redraw inside must make neither."""
    calls = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda module, args: calls.append(module))
    misses = session.cache.misses if session is not None else 0
    try:
        yield
    finally:
        handle.remove()
    assert not calls, f"{len(calls)} module calls during a redraw (first: {type(calls[0]).__name__})"
    if session is not None:
        assert session.cache.misses == misses, "the redraw computed an analysis again"


# ---------------------------------------------------------------------------------------------------
# Prefill & decode


def test_prefill_redraws_every_section(session, monkeypatch):
    assert pfd.on_language("fa", None, None, None, None) == (SKIP,) * 15
    *run_out, run = pfd.run_kept("Hi", False, 2, 0.0, 3, True)
    *compare_out, compare = pfd.compare_kept("Hi", False, 2, 0.0, 3)
    *batch_out, batch = pfd.batch_kept("Hi\nYes", 2, False)
    # The shortest sweep (one length), one decode step per point rather than eight.
    monkeypatch.setattr(pfd, "context_sweep", functools.partial(pfd.context_sweep, decode_steps=1))
    *sweep_out, sweep = pfd.sweep_kept(16, False, progress=no_progress)
    english = (*run_out[:6], *compare_out[:3], *sweep_out[:3], *batch_out[:3])

    # English: exactly the views the buttons drew (the same builders).
    assert [text_of(v) for v in pfd.on_language("en", run, compare, sweep, batch)] == [text_of(v) for v in english]
    for lang in LANGS:
        with no_model_pass():
            out = pfd.on_language(lang, run, compare, sweep, batch)
        expected = (*pfd.run_views(run, lang), *pfd.compare_views(compare, lang), *pfd.sweep_views(sweep, lang),
                    *pfd.batch_views(batch, lang))
        assert_in_language(out, english, lang, expected)
        assert out[1].layout.annotations[1].text == t("prefill.tl_wall", lang)  # the timeline's second panel

    # Only what has run is redrawn: the compare section alone.
    out = pfd.on_language("fa", None, compare, None, None)
    assert out[:6] == (SKIP,) * 6 and out[9:] == (SKIP,) * 6 and SKIP not in out[6:9]
    assert pfd.forget() == (None,) * 4


# ---------------------------------------------------------------------------------------------------
# Memory

MEMORY_TEXT = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen."


def test_memory_redraws_every_section(tiny_gpt2, monkeypatch):
    assert mem.on_language("fa", *(None,) * len(mem.SECTIONS)) == (SKIP,) * len(mem.ALL_OUTPUTS)
    monkeypatch.setattr(mem, "session", lambda: tiny_gpt2)
    runs = {"precision": lambda: mem.precision_kept(MEMORY_TEXT, ["float32"], progress=None),
            "kv_cache": lambda: mem.kv_precision_kept(MEMORY_TEXT),
            "policies": lambda: mem.policies_kept(MEMORY_TEXT, 4, 1, progress=None),
            "sweep": lambda: mem.sweep_kept(MEMORY_TEXT, 1, progress=None),
            "layers": lambda: mem.layers_kept(MEMORY_TEXT, 512)}
    english, kept = {}, {}
    for section, run in runs.items():
        *outputs, kept[section] = run()
        english.update(zip(mem.OUTPUTS[section], outputs))
    assert kept["layers"] is False  # the small GPT-2 has no sliding-window layers: the note says so
    analyses = [kept[name] for name in mem.SECTIONS]
    redrawn = [name for name in mem.ALL_OUTPUTS if not name.endswith("_csv") and name != "layers_plot"]

    out = dict(zip(mem.ALL_OUTPUTS, mem.on_language("en", *analyses)))
    assert [text_of(out[name]) for name in redrawn] == [text_of(english[name]) for name in redrawn]
    for lang in LANGS:
        with no_model_pass():
            out = dict(zip(mem.ALL_OUTPUTS, mem.on_language(lang, *analyses)))
        assert out["precision_csv"] == SKIP and out["policies_csv"] == SKIP  # downloads: English headers, kept
        expected = {}
        for section in mem.SECTIONS:
            expected.update(zip(mem.OUTPUTS[section], mem.VIEWS[section](kept[section], lang)))
        assert_in_language([out[name] for name in redrawn], [english[name] for name in redrawn], lang,
                           [expected[name] for name in redrawn])
        assert out["kept_plot"].layout.xaxis.title.text == t("memory.axis.position", lang)
        assert out["layers_alt"] == mem.layers_text(lang)

    # A "try this" or a link keeps its section's analysis (in that section's slot), the others as they are.
    out = mem.run_section_kept("sweep", MEMORY_TEXT, ["float32"], 4, 1, 512)  # cached: no new run
    kept_out = out[len(mem.ALL_OUTPUTS):]
    assert kept_out[mem.SECTIONS.index("sweep")] == kept["sweep"]
    assert all(v == SKIP for i, v in enumerate(kept_out) if i != mem.SECTIONS.index("sweep"))
    assert mem.linked_section("sweep", MEMORY_TEXT, [], 4, 1, 512, None) == (SKIP,) * len(out)
    assert mem.forget() == (None,) * len(mem.SECTIONS)


# ---------------------------------------------------------------------------------------------------
# Speculative decoding

PROMPT = "Repeat: the red boat. Repeat: the red boat."


def test_speculative_redraws_the_run_at_its_rule_step_and_the_sweeps(session, monkeypatch):
    assert spd.on_language("fa", None, 1, None, None) == (SKIP,) * len(spd.LANGUAGE_OUTPUTS)
    # Sampling with an early-exit drafter: the sampling rule has a view at each step.
    out = spd.on_run(PROMPT, False, "early_exit", 1, 2, 3, 0.8, 7)
    trace = out[11]
    ruled = spd_fig.rule_steps(trace)
    assert len(ruled) >= 2
    step = ruled[-1] + 1  # the visitor moved the selector off the run's default step
    assert step - 1 != spd_fig.default_rule_step(trace)
    rule_out = spd.on_rule_step(trace, step)
    # The sweep and the comparison time many generations (minutes on a busy machine): their handlers run here on
    # records made from this run, as `inference.speculative` would return them.
    monkeypatch.setattr(spd, "sweep_draft_tokens", lambda session, prompt, drafter, max_new, params, chat: DraftSweep(
        prompt, session.model_id, trace.drafter, params, 7, max_new, plain_seconds=[0.30, 0.32], plain_tokens=3,
        points=[SweepPoint(1, 0.25, 3, 2, 2, 2, 1, None, 1.25), SweepPoint(2, 0.35, 3, 2, 4, 4, 1, None, 0.9)]))
    monkeypatch.setattr(spd, "compare_drafters", lambda session, prompt, drafters, k, max_new, params, chat:
                        DrafterComparison(prompt, session.model_id, k, params, 7, runs=[trace],
                                          plain_seconds=[0.30, 0.32], plain_tokens=3))
    *sweep_out, sweep = spd.sweep_kept(PROMPT, False, "early_exit", 1, 3, 0.8, 7)
    *compare_out, compare = spd.compare_kept(PROMPT, False, ["early_exit"], 1, 2, 3, 0.8, 7)
    english = (*out[:8], out[8], *rule_out, *sweep_out, *compare_out)

    for lang in LANGS:
        with no_model_pass():
            redrawn = spd.on_language(lang, trace, step, sweep, compare)
        views = spd.run_views(trace, step - 1, lang)
        expected = (*views[:8], gr.update(label=t("speculative.rule_step_count", lang, ruled=len(ruled),
                                                  steps=len(trace.steps))), *views[8:],
                    *spd.sweep_views(sweep, lang), *spd.compare_views(compare, lang))
        assert_in_language(redrawn, english, lang, expected)
        assert "value" not in redrawn[8]  # the selector keeps its step
    # The English redraw is the run's own drawing, at the step on view.
    en = spd.on_language("en", trace, step, sweep, compare)
    assert [text_of(v) for v in en[9:]] == [text_of(v) for v in (*rule_out, *sweep_out, *compare_out)]
    assert [text_of(v) for v in en[:8]] == [text_of(v) for v in out[:8]]
    # The run alone: the sweep and the comparison stay as they are.
    assert spd.on_language("fa", trace, step, None, None)[11:] == (SKIP,) * 6
    assert spd.forget() == (None, None)


# ---------------------------------------------------------------------------------------------------
# Attention


def test_attention_redraws_the_chosen_layer_head_and_token(session):
    assert att.on_language("fa", None, False, 1, 2, False, None, "first") == (SKIP,) * len(att.LANGUAGE_OUTPUTS)
    (state, _layer, _head, token_choices, token, info, heatmap, heatmap_alt, note, focus, grid, grid_alt, lens_fig,
     lens_alt, lens_html, _lens_csv, _map_csv) = att.run_attention("The cat sat", False, 1, 2, False, "first")
    # The visitor then focuses the first token (the views it changes, in English).
    focus, lens_fig, lens_alt, lens_html, _pick = att.show_token(state, 1, 2, False, 0)
    maps = capture_attention(session, "The cat sat", False)  # the tab's cached analysis
    english = (token_choices, info, heatmap, heatmap_alt, note, focus, grid, grid_alt, lens_fig, lens_alt, lens_html)
    assert [text_of(v) for v in att.on_language("en", state, False, 1, 2, False, 0, "first")[1:]] == \
        [text_of(v) for v in english[1:]]
    for lang in LANGS:
        with no_model_pass(session):
            out = att.on_language(lang, state, False, 1, 2, False, 0, "first")
        assert_in_language(out, english, lang)
        what = t("attention.what_head", lang, layer=1, local="", head=2)
        assert out[2].layout.title.text == t("attention.heatmap_title", lang, what=what)
        decode = (t("attention.token_decode_step", lang, index=maps.n, piece=maps.decode.piece), maps.n)
        assert out[0]["value"] == 0 and out[0]["choices"][-1] == decode  # the focused token stays
    # The layer's mean over heads, as the visitor switched to it.
    out = att.on_language("fa", state, False, 1, 2, True, 0, "first")
    assert out[2].layout.title.text == t("attention.heatmap_title", "fa",
                                         what=t("attention.what_mean", "fa", layer=1, local=""))
    # A model switch since the run: its own run follows, nothing to redraw.
    moved = {**state, "model": "other/model"}
    assert att.on_language("fa", moved, False, 1, 2, False, 0, "first") == (SKIP,) * len(att.LANGUAGE_OUTPUTS)


# ---------------------------------------------------------------------------------------------------
# Beam search


def test_beam_redraws_the_step_on_view_and_the_comparison(session):
    assert beam.on_language("fa", None, False, 0, False, None) == (SKIP,) * len(beam.LANGUAGE_NAMES)
    views = dict(zip(beam.VIEW_NAMES, beam.run_search("Hi", False, 2, 3, 1.0, "False")))
    request = views["request"]
    compare, compared = beam.compare_kept(request, 0)
    tree = beam.tree_of(request)
    step = 1  # the visitor stepped back to the first step
    tree_fig, tree_alt = beam.show_step(step, request)
    english = (views["summary"], tree_fig, tree_alt, views["table"], compare)
    en = beam.on_language("en", request, False, step, False, compared)
    assert en[4] == SKIP and [text_of(v) for i, v in enumerate(en) if i != 4] == [text_of(v) for v in english]
    for lang in LANGS:
        with no_model_pass(session):
            out = beam.on_language(lang, request, False, step, False, compared)
        assert out[4] == SKIP  # not playing: the page's labels show Play
        redrawn = [v for i, v in enumerate(out) if i != 4]
        expected = (beam_fig.summary_html(tree, lang), beam_fig.step_figure(tree, step, lang=lang),
                    beam_fig.step_figure_summary(tree, step, lang), beam_fig.hypotheses_table(tree, lang),
                    beam_fig.comparison_table(tree, compared[2], 0, lang))
        assert_in_language(redrawn, english, lang, expected)
        assert t("beam.col_rank", lang) in out[3].columns
    # Playing: the button keeps its Pause face; hidden (predict first): nothing shows, nothing is redrawn.
    assert beam.on_language("fa", request, False, step, True, compared)[4].value == t("beam.pause", "fa")
    assert beam.on_language("fa", request, True, step, False, compared) == (SKIP,) * len(beam.LANGUAGE_NAMES)
    # A comparison of another search (a new search's comparison has not come back yet) is left as it is.
    other = ({**request, "num_beams": 3}, *compared[1:])
    assert beam.on_language("fa", request, False, step, False, other)[5] == SKIP
