"""Speculative decoding tab, the event handlers: a run, the sampling rule's step, the k sweep, the drafter comparison
and a model switch. Each returns its views in the order of the *_OUTPUTS lists the layout wires."""

from __future__ import annotations

import gradio as gr

from inference.speculative import EARLY_EXIT, PROMPT_LOOKUP, compare_drafters, speculative_generate, sweep_draft_tokens

from ..common import note, session, user_errors
from ..export import json_file
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


def drafter_choices() -> list[tuple[str, str]]:
    """The menu: (label, value). Early exit's layers come from the slider."""
    return ([("prompt lookup (n-grams from the text so far)", PROMPT_LOOKUP),
             ("early exit (the target's first layers + its LM head)", EARLY_EXIT)]
            + [(f"draft model: {m}", m) for m in draft_models()])


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


@user_errors
def on_run(prompt, chat, drafter, layers, num_draft_tokens, max_new_tokens, temperature, seed):
    s = session()
    params = sampling_params(temperature, seed=seed)
    t = speculative_generate(s, prompt, admit_drafter(drafter_spec(drafter, layers)), num_draft_tokens,
                             max_new_tokens, params, _chat(chat))
    step = default_rule_step(t)
    ruled = rule_steps(t)
    selector = gr.Slider(minimum=1, maximum=max(2, len(t.steps)), value=(step or 0) + 1, step=1, visible=bool(ruled),
                         label=f"step to show (steps with the rule: {len(ruled)} of {len(t.steps)})")
    download = gr.DownloadButton(value=json_file("speculative-run", t.to_dict()), interactive=True)
    return (headline_html(t), passes_figure(t), passes_summary(t), steps_html(t), acceptance_figure(t),
            acceptance_summary(t), speedup_figure(t), speedup_summary(t), selector, rule_figure(t, step),
            rule_summary(t, step), t, download, t.seed if t.seed is not None else seed)


def on_rule_step(trace, step):
    """Another step in the sampling rule's figure (no model call: the run's record)."""
    if trace is None:
        return gr.skip(), gr.skip()
    index = int(step or 1) - 1
    return rule_figure(trace, index), rule_summary(trace, index)


# ---------------------------------------------------------------------------------------------------
# The k sweep and the drafters side by side


@user_errors
def on_sweep(prompt, chat, drafter, layers, max_new_tokens, temperature, seed):
    sw = sweep_draft_tokens(session(), prompt, admit_drafter(drafter_spec(drafter, layers)), max_new_tokens,
                            sampling_params(temperature, seed=seed), _chat(chat))
    return sweep_figure(sw), sweep_summary(sw), sweep_html(sw)


@user_errors
def on_compare(prompt, chat, drafters, layers, num_draft_tokens, max_new_tokens, temperature, seed):
    specs = [admit_drafter(drafter_spec(d, layers)) for d in (drafters or [])]
    cmp = compare_drafters(session(), prompt, specs, num_draft_tokens, max_new_tokens,
                           sampling_params(temperature, seed=seed), _chat(chat))
    return compare_figure(cmp), compare_summary(cmp), compare_html(cmp)


# ---------------------------------------------------------------------------------------------------
# Page load and a model switch


def model_note() -> str:
    s = session()
    chat = "" if s.has_chat_template else " It has no chat template: prompts run as plain text."
    return note(f"Target: {s.label}, {s.facts.num_layers} layers. Early exit drafts with its first k layers and its "
                f"LM head; a draft model with another tokenizer goes through universal assisted decoding.{chat}")


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
