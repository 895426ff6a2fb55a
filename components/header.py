"""The page header: what model is loaded (its real facts) and the picker that swaps it for every tab."""

from __future__ import annotations

import html

import gradio as gr

from inference.session import ModelSession, current_session, offline_models, switch_model

from .common import MODEL_CONCURRENCY, user_errors

OTHER = "Other (type a Hugging Face id)"


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
    return f'<div class="lie-facts" role="status" aria-label="Loaded model">{cells}</div>'


def _choices() -> list[tuple[str, str]]:
    return [(label, mid) for mid, label in offline_models().items()] + [(OTHER, OTHER)]


@user_errors
def load_model(choice: str, typed_id: str, progress=gr.Progress()):
    model_id = (typed_id or "").strip() if choice == OTHER else choice
    progress(0.1, desc=f"Loading {model_id or 'model'} (the first load of a model can take a minute)")
    session = switch_model(model_id)
    gr.Info(f"Loaded {session.label} in {session.load_seconds:.1f} s. Every tab now uses it.")
    return model_facts_html(session)


def build() -> None:
    """Render the header; must be called inside the Blocks context."""
    session = current_session()
    with gr.Row(elem_id="lie-header", equal_height=True):
        with gr.Column(scale=4):
            gr.HTML("<h1 class='lie-title'>LLM Inference Explorer</h1>")
            facts = gr.HTML(model_facts_html(session), elem_id="lie-model-facts")
        with gr.Column(scale=2, min_width=260):
            choice = gr.Dropdown(
                choices=_choices(), value=session.model_id if session.model_id in offline_models() else OTHER,
                label="Model", elem_id="lie-model-choice",
            )
            typed = gr.Textbox(
                label="Hugging Face model id", placeholder="owner/name, e.g. HuggingFaceTB/SmolLM2-360M-Instruct",
                visible=choice.value == OTHER, max_length=200, elem_id="lie-model-id",
            )
            load = gr.Button("Load model", size="sm", elem_id="lie-model-load")
    choice.change(lambda c: gr.update(visible=c == OTHER), choice, typed, api_visibility="private", queue=False)
    gr.on(
        [load.click, typed.submit], load_model, [choice, typed], facts,
        concurrency_id=MODEL_CONCURRENCY, api_visibility="private",
    )
    # A new visitor sees the model that is loaded now, not the one loaded when the page was built.
    return facts
