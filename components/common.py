"""What every tab shares: each visitor's model session, error handling, the model-call concurrency group."""

from __future__ import annotations

import functools
import html
import logging
import threading
import time
from pathlib import Path

import gradio as gr
import torch

from inference.errors import InputError, ModelLoadError
from inference.limits import MAX_BATCH_ROWS
from inference.model import policy
from inference.model.session import ModelSession, get_session, is_loaded

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Every event that runs the model joins this group, so model calls queue one after another instead of
# fighting over the 2 CPU cores (see README: concurrency).
MODEL_CONCURRENCY = "model"
# Whole generations (Sampling's Generate to end and /generate, Prefill & decode runs and /timeline) join this
# group instead: they must reach the model's batcher together to be decoded in one batch (inference.serving),
# which runs their passes one at a time itself, so this group may run as many as the batch has rows.
GENERATION_CONCURRENCY = "generation"
GENERATION_CONCURRENCY_LIMIT = MAX_BATCH_ROWS
# A visitor's small per-tab state (ids, step, parameters) is dropped an hour after its last change, so a
# class of thirty leaves nothing behind.
STATE_TTL_S = 3600


class PerVisitor:
    """One small value per browser session (e.g. the model id, never the model; the language), kept server-side
    and dropped after STATE_TTL_S without use. Gradio sets the request of the running event in a context
    variable, so every handler reads its visitor's value without wiring a state input into every event."""

    def __init__(self):
        self._values: dict[str, tuple[object, float]] = {}
        self._lock = threading.Lock()

    def get(self, default=None):
        key = _visitor()
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (_, seen) in self._values.items() if now - seen > STATE_TTL_S]:
                del self._values[stale]
            held = self._values.get(key)
            if held is None:
                return default
            self._values[key] = (held[0], now)
            return held[0]

    def set(self, value) -> None:
        key = _visitor()
        if key is not None:
            with self._lock:
                self._values[key] = (value, time.monotonic())


def _visitor() -> str | None:
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    return getattr(request, "session_hash", None) if request is not None else None


_visitor_models = PerVisitor()


def visitor_model() -> str:
    """The model this visitor chose (the class model until they choose, and always under the teacher's lock)."""
    chosen = _visitor_models.get()
    current = policy.current()
    if chosen is None or (current.locked and chosen != current.class_model):
        return current.class_model
    return chosen


def set_visitor_model(model_id: str) -> None:
    _visitor_models.set(model_id)


def session(model: str | None = None) -> ModelSession:
    """This visitor's model session, or `model` when an API call names one (checked against the host's
    policy). A model the server unloaded to make room is loaded again, and the visitor is told why it waits."""
    model_id = policy.admit(model) if model else visitor_model()
    if not is_loaded(model_id) and _visitor() is not None:
        from .i18n import t  # i18n keeps its per-visitor language with PerVisitor, defined here

        gr.Info(html.escape(t("header.reloading", model=model_id)))
    return get_session(model_id)


def model_changed(demo):
    """The event that fires when this visitor's model changes (their own pick, or the teacher's): tabs add it to
    their triggers to redraw for the new model. It fires in that visitor's page only."""
    return demo.model_shown.change


def user_errors(fn):
    """Turn errors into one clear sentence in the UI (gr.Error) and the API; never a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (InputError, ModelLoadError) as exc:
            raise gr.Error(error_text(exc), print_exception=False) from None
        except torch.OutOfMemoryError:
            from .i18n import t  # i18n keeps its per-visitor language with PerVisitor, defined here

            log.exception("%s ran out of memory", fn.__name__)
            raise gr.Error(t("errors.oom"), print_exception=False) from None
        except Exception as exc:  # a bug or an unexpected failure: log it, tell the user plainly
            from .i18n import t

            log.exception("%s failed", fn.__name__)
            raise gr.Error(html.escape(t("errors.unexpected", kind=type(exc).__name__)), print_exception=False) from None

    return wrapper


def error_text(exc: InputError | ModelLoadError) -> str:
    """An error's sentence in this visitor's language, escaped: toasts render HTML and a message may quote what the
    user typed."""
    from .i18n import message  # i18n keeps its per-visitor language with PerVisitor, defined here

    return html.escape(message(exc.message), quote=False)


def note(text: str) -> str:
    """A small explanatory note as HTML."""
    return f'<div class="lie-note">{html.escape(text)}</div>'
