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

from .common import MODEL_CONCURRENCY, session, set_visitor_model, user_errors, visitor_model

OTHER = "Other (type a Hugging Face id)"
# How often a page asks whether the teacher changed the class model (no model work: a dictionary lookup).
CLASS_CHECK_S = 10


def model_facts_html(session: ModelSession) -> str:
    """One line of facts about the loaded model, read from the model itself."""
    f = session.facts
    params = f"{f.num_parameters / 1e6:,.0f}M" if f.num_parameters < 1e9 else f"{f.num_parameters / 1e9:,.2f}B"
    gqa = f" ({f.num_kv_heads} KV head{'s' if f.num_kv_heads > 1 else ''})" if f.num_kv_heads != f.num_heads else ""
    dtype = str(session.dtype).replace("torch.", "")
    items = [
        ("Model", session.label),
        ("Parameters", params),
        ("Layers × heads", f"{f.num_layers} × {f.num_heads}{gqa}"),
        ("Device", f"{session.device.type.upper()}"),
        ("Dtype", dtype),
        ("Context", f"{f.context_length:,} tokens"),
        ("Vocabulary", f"{f.vocab_size:,}"),
    ]
    cells = "".join(
        f'<span class="lie-fact"><span class="lie-fact-k">{html.escape(k)}</span> '
        f'<span class="lie-fact-v">{html.escape(v)}</span></span>'
        for k, v in items
    )
    # data-model lets a page (and a test) tell which model this visitor is on.
    return (f'<div class="lie-facts" role="status" aria-label="Loaded model" data-model="{html.escape(session.model_id)}">'
            f'{cells}</div>')


def choices() -> list[tuple[str, str]]:
    """The models this server offers: the allow-list (bundled ones by name), and a free id only if allowed."""
    host = policy.current()
    labels = offline_models()
    ids = list(dict.fromkeys([host.class_model, *host.allowed]))
    offered = [(labels.get(mid, mid), mid) for mid in ids if mid in labels or mid not in policy.BUNDLED]
    return offered + ([(OTHER, OTHER)] if host.allow_any and not host.locked else [])


def picker_state(model_id: str, **kwargs):
    """The picker for a visitor on `model_id`: its value, and whether it can be changed."""
    host = policy.current()
    values = [v for _, v in choices()]
    label = "Model (chosen by the teacher)" if host.locked else "Model"
    return gr.Dropdown(choices=choices(), value=model_id if model_id in values else OTHER, label=label,
                       interactive=not host.locked, **kwargs)


@user_errors
def load_model(choice: str, typed_id: str, progress=gr.Progress()):
    """This visitor switches model; nobody else's view changes."""
    model_id = (typed_id or "").strip() if choice == OTHER else choice
    model_id = policy.admit(model_id or None)
    progress(0.1, desc=f"Loading {model_id} (the first load of a model can take a minute)")
    s = get_session(model_id)
    set_visitor_model(model_id)
    gr.Info(f"Loaded {html.escape(s.label)} in {s.load_seconds:.1f} s for you; other visitors keep their own model.")
    return model_facts_html(s), model_id


@user_errors
def set_class_model(choice: str, typed_id: str, key: str, progress=gr.Progress()):
    """The teacher sets (and locks) the model for every visitor."""
    model_id = (typed_id or "").strip() if choice == OTHER else choice
    if not model_id or model_id == OTHER:
        raise ModelLoadError("Pick the model for the class first.")
    host = policy.current()
    if not host.teacher_key or key != host.teacher_key:
        raise ModelLoadError("That is not the teacher key set by the host of this server.")
    progress(0.1, desc=f"Loading {model_id} for the class")
    s = get_session(model_id)
    policy.set_class_model(model_id, key)
    gr.Info(f"Every visitor now uses {html.escape(s.label)}; their pages follow within {CLASS_CHECK_S} s.")
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


def build():
    """Render the header; must be called inside the Blocks context. Returns (facts, wire): `wire(demo)` hooks
    up the page-load and class-following events once the tabs exist."""
    s = get_session(policy.current().class_model)
    host = policy.current()
    with gr.Row(elem_id="lie-header", equal_height=True):
        with gr.Column(scale=4):
            gr.HTML("<h1 class='lie-title'>LLM Inference Explorer</h1>")
            facts = gr.HTML(model_facts_html(s), elem_id="lie-model-facts")
        with gr.Column(scale=2, min_width=260):
            choice = picker_state(s.model_id, elem_id="lie-model-choice")
            typed = gr.Textbox(
                label="Hugging Face model id", placeholder="owner/name, e.g. HuggingFaceTB/SmolLM2-360M-Instruct",
                visible=False, max_length=200, elem_id="lie-model-id",
            )
            load = gr.Button("Load model", size="sm", elem_id="lie-model-load", interactive=not host.locked)
            if host.teacher_key:
                with gr.Accordion("Teacher", open=False, elem_id="lie-teacher"):
                    key = gr.Textbox(label="Teacher key", type="password", max_length=200, elem_id="lie-teacher-key")
                    for_class = gr.Button("Use this model for the whole class", size="sm", elem_id="lie-teacher-set")
    shown = gr.State(s.model_id)  # the model this page shows: the class check compares against it
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

    return facts, wire
