"""Speculative decoding tab, the event handlers: a run, the sampling rule's step, the k sweep, the drafter comparison
and a model switch. Each returns its views in the order of the *_OUTPUTS lists the layout wires."""

from __future__ import annotations

import gradio as gr

from inference.speculative import EARLY_EXIT, PROMPT_LOOKUP, compare_drafters, speculative_generate, sweep_draft_tokens

from ..common import note, session, user_errors
from ..export import json_file
from ..i18n import DEFAULT, language, t
from .api import admit_drafter, draft_models, sampling_params
from .figures import (acceptance_figure, acceptance_summary, compare_figure, compare_html, compare_summary,
                      default_rule_step, headline_html, passes_figure, passes_summary, rule_figure, rule_steps,
                      rule_summary, speedup_figure, speedup_summary, steps_html, sweep_figure, sweep_html,
                      sweep_summary)

RUN_OUTPUTS = ("headline", "passes", "passes_alt", "steps", "acceptance", "acceptance_alt", "speedup", "speedup_alt",
               "rule_step", "rule", "rule_alt", "trace", "download", "seed")


def drafter_spec(drafter: str | None, layers) -> str:
    """The API's drafter string from the menu and the layers slider ("early_exit" -> "early_exit:<layers>")."""
    if (drafter or "").strip() == EARLY_EXIT:
        return f"{EARLY_EXIT}:{int(layers or 1)}"
    return drafter or ""


def drafter_choices(lang: str = DEFAULT) -> list[tuple[str, str]]:
    """The menu: (label in `lang`, value). Early exit's layers come from the slider."""
    return ([(t("speculative.choice_prompt_lookup", lang), PROMPT_LOOKUP),
             (t("speculative.choice_early_exit", lang), EARLY_EXIT)]
            + [(t("speculative.choice_model", lang, model=m), m) for m in draft_models()])


def _chat(chat) -> bool:
    """The chat template only where the model has one (Gemma 3 270M, a base model, has none)."""
    return bool(chat) and session().has_chat_template


def default_layers() -> int:
    return max(1, session().facts.num_layers // 4)


def max_layers() -> int:
    """Early exit keeps at least one layer out (the drafter is the first k of the target's layers)."""
    return max(1, session().facts.num_layers - 1)


# ---------------------------------------------------------------------------------------------------
# A run


def _rule_step_label(trace, lang: str) -> str:
    return t("speculative.rule_step_count", lang, ruled=len(rule_steps(trace)), steps=len(trace.steps))


def run_views(trace, step: int | None, lang: str) -> tuple:
    """A run's views in `lang` (RUN_OUTPUTS from the headline to the rule's text alternative, the step selector
    apart), the sampling rule's figure at step index `step`."""
    return (headline_html(trace, lang), passes_figure(trace, lang), passes_summary(trace, lang),
            steps_html(trace, lang), acceptance_figure(trace, lang), acceptance_summary(trace, lang),
            speedup_figure(trace, lang), speedup_summary(trace, lang), rule_figure(trace, step, lang),
            rule_summary(trace, step, lang))


@user_errors
def on_run(prompt, chat, drafter, layers, num_draft_tokens, max_new_tokens, temperature, seed):
    s = session()
    lang = language()
    params = sampling_params(temperature, seed=seed)
    trace = speculative_generate(s, prompt, admit_drafter(drafter_spec(drafter, layers)), num_draft_tokens,
                                 max_new_tokens, params, _chat(chat))
    step = default_rule_step(trace)
    ruled = rule_steps(trace)
    selector = gr.Slider(minimum=1, maximum=max(2, len(trace.steps)), value=(step or 0) + 1, step=1,
                         visible=bool(ruled), label=_rule_step_label(trace, lang))
    download = gr.DownloadButton(value=json_file("speculative-run", trace.to_dict()), interactive=True)
    views = run_views(trace, step, lang)
    return (*views[:8], selector, *views[8:], trace, download, trace.seed if trace.seed is not None else seed)


def on_rule_step(trace, step):
    """Another step in the sampling rule's figure (no model call: the run's record)."""
    if trace is None:
        return gr.skip(), gr.skip()
    index = int(step or 1) - 1
    lang = language()
    return rule_figure(trace, index, lang), rule_summary(trace, index, lang)


# ---------------------------------------------------------------------------------------------------
# The k sweep and the drafters side by side (`*_kept`: the views, then the record, kept for the page)


def sweep_views(sw, lang: str) -> tuple:
    return sweep_figure(sw, lang), sweep_summary(sw, lang), sweep_html(sw, lang)


def compare_views(cmp, lang: str) -> tuple:
    return compare_figure(cmp, lang), compare_summary(cmp, lang), compare_html(cmp, lang)


def _sweep(prompt, chat, drafter, layers, max_new_tokens, temperature, seed):
    return sweep_draft_tokens(session(), prompt, admit_drafter(drafter_spec(drafter, layers)), max_new_tokens,
                              sampling_params(temperature, seed=seed), _chat(chat))


def _compare(prompt, chat, drafters, layers, num_draft_tokens, max_new_tokens, temperature, seed):
    specs = [admit_drafter(drafter_spec(d, layers)) for d in (drafters or [])]
    return compare_drafters(session(), prompt, specs, num_draft_tokens, max_new_tokens,
                            sampling_params(temperature, seed=seed), _chat(chat))


@user_errors
def on_sweep(prompt, chat, drafter, layers, max_new_tokens, temperature, seed):
    return sweep_views(_sweep(prompt, chat, drafter, layers, max_new_tokens, temperature, seed), language())


@user_errors
def sweep_kept(prompt, chat, drafter, layers, max_new_tokens, temperature, seed):
    sw = _sweep(prompt, chat, drafter, layers, max_new_tokens, temperature, seed)
    return (*sweep_views(sw, language()), sw)


@user_errors
def on_compare(prompt, chat, drafters, layers, num_draft_tokens, max_new_tokens, temperature, seed):
    cmp = _compare(prompt, chat, drafters, layers, num_draft_tokens, max_new_tokens, temperature, seed)
    return compare_views(cmp, language())


@user_errors
def compare_kept(prompt, chat, drafters, layers, num_draft_tokens, max_new_tokens, temperature, seed):
    cmp = _compare(prompt, chat, drafters, layers, num_draft_tokens, max_new_tokens, temperature, seed)
    return (*compare_views(cmp, language()), cmp)


# ---------------------------------------------------------------------------------------------------
# A change of language: the records on screen redrawn (no model pass)

# What `on_language` redraws, in this order (the layout wires the same names).
LANGUAGE_OUTPUTS = ("headline", "passes", "passes_alt", "steps", "acceptance", "acceptance_alt", "speedup",
                    "speedup_alt", "rule_step", "rule", "rule_alt", "sweep", "sweep_alt", "sweep_table", "compare",
                    "compare_alt", "compare_table")


def on_language(lang, trace, step, sweep, compare):
    """A new language: the run, the sweep and the comparison on screen redrawn in it from their records (kept for
    the page), the sampling rule at the step the selector shows; what has not run yet is left as it is."""
    if trace is None:
        run = (gr.skip(),) * 11
    else:
        index = int(step or 1) - 1 if rule_steps(trace) else default_rule_step(trace)
        views = run_views(trace, index, lang)
        run = (*views[:8], gr.update(label=_rule_step_label(trace, lang)), *views[8:])  # the selector keeps its step
    skip = (gr.skip(),) * 3
    return (*run, *(sweep_views(sweep, lang) if sweep is not None else skip),
            *(compare_views(compare, lang) if compare is not None else skip))


def forget():
    """A new model: the kept sweep and comparison go with their views (the run's record is cleared by on_model)."""
    return None, None


# ---------------------------------------------------------------------------------------------------
# The tab's first view and a model switch


def model_note(lang: str | None = None) -> str:
    """The target model in one note, in `lang` (default: the visitor's)."""
    s = session()
    chat = "" if s.has_chat_template else t("speculative.model_note_no_chat", lang)
    return note(t("speculative.model_note", lang, model=s.label, layers=s.facts.num_layers) + chat)


def layers_slider(value=None) -> gr.Slider:
    top = max_layers()
    value = default_layers() if value is None else min(max(1, int(value)), top)
    return gr.Slider(minimum=1, maximum=top, value=value, step=1)


def on_page(chat, layers):
    """After a link's values are applied: the note and the layer range for this visitor's model."""
    return model_note(), layers_slider(layers), bool(chat) and session().has_chat_template


def on_model():
    """A new model: its note, its layer range, the chat box; earlier results go."""
    s = session()
    empty_run = ("", None, "", "", None, "", None, "", gr.Slider(visible=False), None, "", None,
                 gr.DownloadButton(value=None, interactive=False))
    return (model_note(), layers_slider(), gr.Checkbox(value=s.has_chat_template), *empty_run,
            None, "", "", None, "", "")
