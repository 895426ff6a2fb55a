"""LLM Inference Explorer: a visual teaching app that opens up a real language model while it works.

    python app.py [--model ID] [--models ID,ID] [--allow-any-model] [--max-model-params N] [--max-model-gb G]
                  [--lock] [--teacher-key KEY] [--lesson QUERY] [--lock-settings] [--port 7860]

Every flag has an environment variable (LIE_MODEL, LIE_MODELS, ...: see `host_policy`), for a Space's settings.
The server address comes from Gradio's own settings (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT), so a
Hugging Face Space and a laptop both work unchanged.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import os
from pathlib import Path

# Nothing leaves the machine: Gradio's usage analytics would contact its analytics host at start.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from components import header, i18n
from components.common import GENERATION_CONCURRENCY, GENERATION_CONCURRENCY_LIMIT
from components.prefill import api as prefill_api, events as prefill_events
from components.sampling import api as sampling_api, events as sampling_events
from components.attention import layout as attention_tab
from components.beam import layout as beam_tab
from components.forward import layout as forward_tab
from components.interventions import layout as interventions_tab
from components.memory import layout as memory_tab
from components.prefill import layout as prefill_tab
from components.sampling import layout as sampling_tab
from components.serving import layout as serving_tab
from components.speculative import layout as speculative_tab
from components.tokenizer import layout as tokenizer_tab
from components.share import page_query, tab_from_query
from components.teaching import load_yaml
from inference import limits
from inference.model import policy
from inference.session import current_session, offline_models, switch_model

ASSETS = Path(__file__).parent / "assets"
# Lesson order (the Hugging Face course's outline): tokens, attention, sampling, beam search, cost, serving.
TABS = [tokenizer_tab, forward_tab, attention_tab, interventions_tab, sampling_tab, beam_tab, prefill_tab,
        speculative_tab, memory_tab, serving_tab]
# Layout blocks that hold other components (see limit_progress_targets).
CONTAINERS = (gr.Tabs, gr.Tab, gr.Accordion, gr.Column, gr.Row, gr.Group)
TAB_NAMES = [tab.__name__.split(".")[1] for tab in TABS]  # components.<name>.layout; the tab id is <name>_tab

def tour(lang: str = i18n.DEFAULT) -> list[dict]:
    """The guided tour's stops in `lang` (assets/lessons/<lang>/tour.yaml)."""
    return load_yaml("tour.yaml", lang)["steps"]


# Presenter mode is a class on <body> (see assets/style.css): larger type, high contrast, advanced controls
# hidden. It stays on the page (no server round trip) and `?presenter=1` turns it on from a link. The button's
# label follows the page's language (the <html lang> that components.i18n sets).
PRESENTER_LABELS = {lang: [i18n.t("toolbar.presenter", lang), i18n.t("toolbar.presenter_leave", lang)]
                    for lang in i18n.LANGUAGES}
PRESENTER_JS = """(on) => {
  on = (on === undefined) ? !document.body.classList.contains('lie-presenter') : on;
  document.body.classList.toggle('lie-presenter', on);
  // Plotly sizes a figure to its container only on a window resize: tell it the layout changed.
  setTimeout(() => window.dispatchEvent(new Event('resize')), 50);
  const labels = %s;
  return (labels[document.documentElement.lang] || labels.en)[on ? 1 : 0];
}""" % json.dumps(PRESENTER_LABELS, ensure_ascii=False)
# The toggle with no argument flips the mode; on page load the link decides; a new language keeps the mode.
PRESENTER_TOGGLE_JS = "() => (" + PRESENTER_JS + ")()"
PRESENTER_FROM_URL_JS = ("() => (" + PRESENTER_JS + ")(new URLSearchParams(window.location.search).get('presenter') "
                         "=== '1')")
PRESENTER_SAME_JS = "() => (" + PRESENTER_JS + ")(document.body.classList.contains('lie-presenter'))"


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="LLM Inference Explorer", analytics_enabled=False) as demo:
        texts = demo.texts = i18n.Texts()  # what each translated component reads in a language
        en = i18n.DEFAULT
        shown, wire_header = header.build(texts)
        demo.model_shown = shown  # tabs listen to its change event: see components.common.model_changed
        with gr.Row(elem_id="lie-toolbar"):
            tour_start = texts.value(gr.Button(i18n.t("toolbar.tour", en), variant="primary", size="sm",
                                               elem_id="lie-tour-start", scale=0, min_width=230), "toolbar.tour")
            presenter = gr.Button(i18n.t("toolbar.presenter", en), size="sm", elem_id="lie-presenter-toggle", scale=0,
                                  min_width=200)
        with gr.Group(visible=False, elem_id="lie-tour") as tour_panel:
            tour_text = gr.Markdown(elem_id="lie-tour-text")
            with gr.Row():
                tour_back = texts.value(gr.Button(i18n.t("tour.back", en), size="sm", elem_id="lie-tour-back"),
                                        "tour.back")
                tour_next = gr.Button(i18n.t("tour.next", en), size="sm", variant="primary", elem_id="lie-tour-next")
                tour_end = texts.value(gr.Button(i18n.t("tour.end", en), size="sm", elem_id="lie-tour-end"), "tour.end")
        with gr.Tabs(elem_id="lie-tabs") as tabs:
            demo.tabs = tabs  # a tab can switch to another by returning gr.Tabs(selected=<tab module name>)
            for name, tab in zip(TAB_NAMES, TABS):
                with texts.label(gr.Tab(i18n.t(f"tab.{name}", en), id=f"{name}_tab"), f"tab.{name}"):
                    tab.build(demo)
        with texts.label(gr.Accordion(i18n.t("limits.heading", en), open=False, elem_id="lie-limits"),
                         "limits.heading"):
            texts.add(gr.HTML(limits_html()), limits_html)
        tour_step = gr.State(-1)  # -1: the tour is closed
        wire_header(demo)  # each visitor sees their own model: the class model until they pick another
        # A shared link opens its tab (each tab applies its own values: components.share).
        demo.load(open_linked_tab, None, tabs, api_visibility="private", queue=False)
        demo.load(None, None, presenter, js=PRESENTER_FROM_URL_JS)
        presenter.click(None, None, presenter, js=PRESENTER_TOGGLE_JS)
        demo.language_applied.then(None, None, presenter, js=PRESENTER_SAME_JS, queue=False)
        # An open tour follows the language too (its text and its Next/Finish button).
        demo.language.change(lambda i: tour_view(i) if i >= 0 else [gr.skip()] * 6, tour_step,
                             [tour_step, tour_panel, tour_text, tabs, tour_back, tour_next], queue=False,
                             api_visibility="private")

        tour_outputs = [tour_step, tour_panel, tour_text, tabs, tour_back, tour_next]
        tour_start.click(lambda: tour_view(0), None, tour_outputs, api_visibility="private", queue=False)
        tour_next.click(lambda i: tour_view(i + 1), tour_step, tour_outputs, api_visibility="private", queue=False)
        tour_back.click(lambda i: tour_view(i - 1), tour_step, tour_outputs, api_visibility="private", queue=False)
        tour_end.click(lambda: (-1, gr.Group(visible=False)), None, [tour_step, tour_panel], api_visibility="private",
                       queue=False)
    demo.queue(max_size=limits.QUEUE_SIZE, default_concurrency_limit=1)
    serve_generations_together(demo)
    limit_progress_targets(demo)
    explain_full_queue(demo._queue)
    return demo


# The handlers that run a whole generation through the model's batcher (inference.serving).
BATCHED_HANDLERS = (sampling_api.generate_api, sampling_events.generate_to_end, sampling_events.try_to_end,
                    prefill_api.timeline_api, prefill_events.on_run)


def limit_progress_targets(demo) -> None:
    """Show an event's progress only where it can be seen: on its outputs that are not layout containers (a tab, an
    accordion, a column), and nowhere for an event whose progress is hidden.

    Gradio's page keeps the loading status of every component any event has ever had as a progress target, and on
    each status change of any event it finds each of them in the page's tree and re-reads its data (for a container,
    the data of everything inside it). Outputs such as the tabs (a shared link opening its tab, the language
    relabelling every tab's title) made every later event walk the whole page: after a visit to every tab, a language
    switch kept the browser busy for ~40 s (measured in headless Chromium on 2 cores)."""
    for fn in demo.fns.values():
        if fn.show_progress_on is None:
            fn.show_progress_on = [] if fn.show_progress == "hidden" else \
                [o for o in fn.outputs if not isinstance(o, CONTAINERS)]


def serve_generations_together(demo) -> list[str]:
    """Move the events of whole generations from the one-at-a-time model group to the generation group, where
    up to a batch's worth run at once: they only submit rows to the model's batcher and wait for their tokens,
    while the batcher runs one pass at a time for all of them. Every other model call stays one at a time.
    Returns the api names (or handler names) moved."""
    moved = []
    for fn in demo.fns.values():
        if getattr(fn, "fn", None) in BATCHED_HANDLERS:
            fn.concurrency_id = GENERATION_CONCURRENCY
            fn.concurrency_limit = GENERATION_CONCURRENCY_LIMIT
            moved.append(fn.api_name or fn.fn.__name__)
    return moved


def queue_full_message(waiting: int, mean_s: float) -> str:
    wait = f"about {max(1, round(waiting * mean_s / 60))} min" if mean_s else "a minute"
    return (f"The server is busy: {waiting} requests are already waiting, the most it keeps. Nothing was run; "
            f"try again in {wait}.")


def explain_full_queue(queue) -> None:
    """Say how long the queue is and when to retry when it is full (from the queue's own mean time per request).

    Gradio answers a full queue with HTTP 503, and both its page and its Python client then show a fixed line
    ("This application is currently busy"), whatever the server said. Its validation answer (422) is the one
    whose message reaches the page (shown above the event's first input) and the client, so a full queue answers
    with that. Wraps the queue's `push`, the one place Gradio decides it."""
    push = queue.push

    async def push_or_explain(body, request, username):
        ok, detail, state = await push(body, request, username)
        if state == "queue_full":
            times = [t.avg_time for t in queue.process_time_per_fn.values() if t.count]
            message = queue_full_message(len(queue), sum(times) / len(times) if times else 0.0)
            return ok, [{"__type__": "validate", "is_valid": False, "message": message,
                         "parameter_name": "queue"}], "validator_error"
        return ok, detail, state

    queue.push = push_or_explain


def open_linked_tab(request: gr.Request):
    return tab_from_query(page_query(request)[0], TAB_NAMES) if request else gr.skip()


def tour_view(step: int):
    """The tour at `step` (clamped; past the last step it closes) in the visitor's language: its text, its tab,
    and the buttons."""
    lang = i18n.language()
    stops = tour(lang)
    if step >= len(stops):
        return -1, gr.Group(visible=False), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    step = max(0, step)
    stop = stops[step]
    heading = i18n.t("tour.heading", lang, step=step + 1, steps=len(stops), tab=i18n.t(f"tab.{stop['tab']}", lang))
    text = f"**{heading}**\n\n### {stop['title']}\n\n{stop['text']}"
    last = step == len(stops) - 1
    return (step, gr.Group(visible=True), gr.Markdown(text, rtl=lang in i18n.RTL), gr.Tabs(selected=f"{stop['tab']}_tab"),
            gr.Button(interactive=step > 0), gr.Button(value=i18n.t("tour.finish" if last else "tour.next", lang)))


def limits_html(lang: str = i18n.DEFAULT) -> str:
    """Every cap and the host's rules, in `lang` (the values filled from inference.limits and the policy)."""
    caps = [*limits.caps(), *policy.current().caps()]
    rows = "".join(f"<tr><td>{html.escape(i18n.t(f'limits.{c.key}', lang))}</td>"
                   f"<td>{html.escape(i18n.t(f'limits.{c.key}.value', lang, **c.fields))}</td></tr>" for c in caps)
    note = i18n.t("limits.note", lang, rows=limits.MAX_BATCH_ROWS)
    return f"<table class='lie-limits'>{rows}</table><p class='lie-note'>{html.escape(note)}</p>"


def configure_threads() -> None:
    """One model call at a time, using every core: measured on 2 cores, two 128-token passes run in
    1.5 s one after the other with 2 threads each, but 3.0 s side by side (oversubscribed)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cores)


def launch_kwargs() -> dict:
    """theme and css go to launch() in Gradio 6."""
    return dict(
        # Soft's own fonts, with the shipped Telugu font (assets/fonts, used only for Telugu characters) before the
        # system's: a page in any language can show తెలుగు, e.g. the language picker's label.
        theme=gr.themes.Soft(primary_hue="blue", font=(gr.themes.LocalFont("Montserrat", weights=(400, 700)),
                                                       "Noto Sans Telugu", "ui-sans-serif", "system-ui", "sans-serif")),
        # Relative to the page (the style sheet is inlined), so a proxy's path prefix is kept.
        css=(ASSETS / "style.css").read_text().replace("{{fonts}}", f"gradio_api/file={ASSETS / 'fonts'}"),
        allowed_paths=[str(ASSETS)],
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def host_policy(args) -> policy.HostPolicy:
    """The host's rules from flags, else environment variables (a Space sets those), else safe defaults:
    the bundled models only, no typed ids, 1B parameters at most, no lock."""
    installed = tuple(offline_models()) or tuple(policy.BUNDLED)
    models = args.models or os.environ.get("LIE_MODELS", "")
    allowed = tuple(m.strip() for m in models.split(",") if m.strip()) or installed
    class_model = args.model or os.environ.get("LIE_MODEL") or allowed[0]
    gb = args.max_model_gb or float(os.environ.get("LIE_MAX_MODEL_GB", 0) or 0)
    return policy.HostPolicy(
        class_model=class_model,
        allowed=tuple(dict.fromkeys([class_model, *allowed])),
        allow_any=args.allow_any_model or _env_flag("LIE_ALLOW_ANY_MODEL"),
        max_params=args.max_model_params or int(os.environ.get("LIE_MAX_MODEL_PARAMS", 0) or limits.MAX_MODEL_PARAMS),
        max_bytes=int(gb * 2**30) if gb else limits.MAX_MODEL_BYTES,
        locked=args.lock or _env_flag("LIE_LOCK"),
        teacher_key=args.teacher_key or os.environ.get("LIE_TEACHER_KEY") or None,
        lesson_query=(args.lesson or os.environ.get("LIE_LESSON", "")).lstrip("?"),
        lock_settings=args.lock_settings or _env_flag("LIE_LOCK_SETTINGS"),
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="the model every visitor starts on: a bundled id, an allowed hub "
                        "id or a local folder (env LIE_MODEL; default: the bundled SmolLM2)")
    parser.add_argument("--models", default=None, help="comma-separated allow-list of models visitors may pick "
                        "(env LIE_MODELS; default: the bundled offline models)")
    parser.add_argument("--allow-any-model", action="store_true", help="let visitors type any hub id, size-checked "
                        "before download (env LIE_ALLOW_ANY_MODEL=1; off by default)")
    parser.add_argument("--max-model-params", type=int, default=None, help="largest model visitors may load, in "
                        f"parameters (env LIE_MAX_MODEL_PARAMS; default {limits.MAX_MODEL_PARAMS:,})")
    parser.add_argument("--max-model-gb", type=float, default=None, help="largest download, GB of weights "
                        f"(env LIE_MAX_MODEL_GB; default {limits.MAX_MODEL_BYTES / 2**30:g})")
    parser.add_argument("--lock", action="store_true", help="the teacher's lock: every visitor uses --model "
                        "(env LIE_LOCK=1)")
    parser.add_argument("--teacher-key", default=None, help="a key the teacher enters in the page to set the model "
                        "for the whole class (prefer env LIE_TEACHER_KEY: a flag shows in the process list)")
    parser.add_argument("--lesson", default=None, help="a shared-link query every page opens with, e.g. "
                        "'tab=sampling&temperature=0.7' (env LIE_LESSON)")
    parser.add_argument("--lock-settings", action="store_true", help="students cannot change the --lesson values "
                        "(env LIE_LOCK_SETTINGS=1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_threads()
    host = policy.configure(host_policy(args))
    session = switch_model(host.class_model)  # load before serving: the first visitor should not wait for it
    logging.info("model %s on %s, loaded in %.1f s (%s)", session.model_id, session.device, session.load_seconds, session.source)
    build_demo().launch(server_port=args.port, **launch_kwargs())


if __name__ == "__main__":
    main()
