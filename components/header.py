"""The page header: the visitor's model (its real facts) and the picker that changes it for this visitor only.

Under the teacher's lock the picker shows the teacher's choice and cannot be changed; a teacher who knows the
host's key can set the model for the whole class.
"""

from __future__ import annotations

import html

import gradio as gr

from inference.errors import ModelLoadError
from inference.model import policy
from inference.model.session import ModelSession, get_session, offline_models

from . import i18n
from .common import MODEL_CONCURRENCY, session, set_visitor_model, user_errors, visitor_model
from .i18n import t

OTHER = "Other (type a Hugging Face id)"  # the picker's value for a typed id (its label is translated)
# How often a page asks whether the teacher changed the class model (no model work: a dictionary lookup).
CLASS_CHECK_S = 10


def model_facts_html(session: ModelSession, lang: str | None = None) -> str:
    """One line of facts about the loaded model, read from the model itself, in `lang` (default: the visitor's)."""
    lang = lang or i18n.language()
    f = session.facts
    params = f"{f.num_parameters / 1e6:,.0f}M" if f.num_parameters < 1e9 else f"{f.num_parameters / 1e9:,.2f}B"
    kv = t("facts.kv_heads", lang, n=f.num_kv_heads) if f.num_kv_heads > 1 else t("facts.kv_head", lang)
    gqa = f" ({kv})" if f.num_kv_heads != f.num_heads else ""
    dtype = str(session.dtype).replace("torch.", "")
    items = [
        ("facts.model", session.label),
        ("facts.parameters", params),
        ("facts.layers_heads", f"{f.num_layers} × {f.num_heads}{gqa}"),
        ("facts.device", f"{session.device.type.upper()}"),
        ("facts.dtype", dtype),
        ("facts.context", t("facts.context_value", lang, n=f"{f.context_length:,}")),
        ("facts.vocabulary", f"{f.vocab_size:,}"),
    ]
    cells = "".join(
        f'<span class="lie-fact"><span class="lie-fact-k">{html.escape(t(k, lang))}</span> '
        f'<bdi class="lie-fact-v">{html.escape(v)}</bdi></span>'
        for k, v in items
    )
    # data-model lets a page (and a test) tell which model this visitor is on.
    return (f'<div class="lie-facts" role="status" aria-label="{html.escape(t("facts.aria", lang))}" '
            f'data-model="{html.escape(session.model_id)}">{cells}</div>')


def choices(lang: str | None = None) -> list[tuple[str, str]]:
    """The models this server offers: the allow-list (bundled ones by name), and a free id only if allowed."""
    host = policy.current()
    labels = offline_models()
    ids = list(dict.fromkeys([host.class_model, *host.allowed]))
    offered = [(labels.get(mid, mid), mid) for mid in ids if mid in labels or mid not in policy.BUNDLED]
    return offered + ([(t("header.other", lang), OTHER)] if host.allow_any and not host.locked else [])


def picker_state(model_id: str, lang: str | None = None, **kwargs):
    """The picker for a visitor on `model_id`: its value, and whether it can be changed."""
    host = policy.current()
    offered = choices(lang)
    values = [v for _, v in offered]
    label = t("header.picker_locked" if host.locked else "header.picker", lang)
    return gr.Dropdown(choices=offered, value=model_id if model_id in values else OTHER, label=label,
                       interactive=not host.locked, **kwargs)


@user_errors
def load_model(choice: str, typed_id: str, progress=gr.Progress()):
    """This visitor switches model; nobody else's view changes."""
    model_id = (typed_id or "").strip() if choice == OTHER else choice
    model_id = policy.admit(model_id or None)
    progress(0.1, desc=t("header.loading", model=model_id))
    s = get_session(model_id)
    set_visitor_model(model_id)
    gr.Info(html.escape(t("header.loaded", model=s.label, seconds=f"{s.load_seconds:.1f}")))
    return model_facts_html(s), model_id


@user_errors
def set_class_model(choice: str, typed_id: str, key: str, progress=gr.Progress()):
    """The teacher sets (and locks) the model for every visitor."""
    model_id = (typed_id or "").strip() if choice == OTHER else choice
    if not model_id or model_id == OTHER:
        raise gr.Error(html.escape(t("header.pick_class_model")), print_exception=False)
    host = policy.current()
    if not host.teacher_key or key != host.teacher_key:
        raise ModelLoadError(policy.WRONG_TEACHER_KEY)
    progress(0.1, desc=t("header.class_loading", model=model_id))
    s = get_session(model_id)
    policy.set_class_model(model_id, key)
    gr.Info(html.escape(t("header.class_set", model=s.label, seconds=CLASS_CHECK_S)))
    return model_facts_html(s), model_id, picker_state(model_id), ""


def on_page_load():
    """A new page: this visitor's model (the class model for a new visitor), the picker and its button."""
    s = session()
    return model_facts_html(s), s.model_id, picker_state(s.model_id), gr.Button(interactive=not policy.current().locked)


def follow_class(shown: str):
    """A page on a model the visitor may no longer use (the teacher locked another) follows the teacher."""
    model_id = visitor_model()
    if model_id == shown:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return (model_facts_html(session()), model_id, picker_state(model_id),
            gr.Button(interactive=not policy.current().locked))


def build(texts: i18n.Texts):
    """Render the header; must be called inside the Blocks context. Returns (shown, wire): `shown` holds the model
    this page shows (its change event is the visitor's model change); `wire(demo)` hooks up the page-load,
    class-following and language events once the tabs exist."""
    s = get_session(policy.current().class_model)
    host = policy.current()
    en = i18n.DEFAULT
    with gr.Row(elem_id="lie-header", equal_height=True):
        with gr.Column(scale=4):
            gr.HTML("<h1 class='lie-title'>LLM Inference Explorer</h1>")  # not translated: the app's name
            facts = gr.HTML(model_facts_html(s, en), elem_id="lie-model-facts")
        with gr.Column(scale=2, min_width=260):
            with gr.Row():
                choice = picker_state(s.model_id, en, elem_id="lie-model-choice", scale=3)
                language = i18n.build_picker()
            typed = texts.add(gr.Textbox(
                label=t("header.typed_id", en), placeholder=t("header.typed_id_hint", en),
                visible=False, max_length=200, elem_id="lie-model-id",
            ), lambda lang: gr.update(label=t("header.typed_id", lang), placeholder=t("header.typed_id_hint", lang)))
            load = texts.value(gr.Button(t("header.load", en), size="sm", elem_id="lie-model-load",
                                         interactive=not host.locked), "header.load")
            if host.teacher_key:
                with texts.label(gr.Accordion(t("header.teacher", en), open=False, elem_id="lie-teacher"),
                                 "header.teacher"):
                    key = texts.label(gr.Textbox(label=t("header.teacher_key", en), type="password", max_length=200,
                                                 elem_id="lie-teacher-key"), "header.teacher_key")
                    for_class = texts.value(gr.Button(t("header.teacher_set", en), size="sm",
                                                      elem_id="lie-teacher-set"), "header.teacher_set")
    shown = gr.State(s.model_id)  # the model this page shows: the class check compares against it
    texts.add(facts, lambda lang: model_facts_html(session(), lang))
    texts.add(choice, lambda lang: picker_state(visitor_model(), lang))
    choice.change(lambda c: gr.update(visible=c == OTHER), choice, typed, api_visibility="private", queue=False)
    gr.on([load.click, typed.submit], load_model, [choice, typed], [facts, shown],
          concurrency_id=MODEL_CONCURRENCY, api_visibility="private")
    if host.teacher_key:
        for_class.click(set_class_model, [choice, typed, key], [facts, shown, choice, key],
                        concurrency_id=MODEL_CONCURRENCY, api_visibility="private")

    def wire(demo):
        demo.load(on_page_load, None, [facts, shown, choice, load], api_visibility="private", queue=False)
        gr.Timer(CLASS_CHECK_S).tick(follow_class, shown, [facts, shown, choice, load], api_visibility="private",
                                     queue=False, show_progress="hidden")
        i18n.wire(demo, language, texts)

    return shown, wire
