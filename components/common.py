"""What every tab shares: the current model session, error handling, the model-call concurrency group."""

from __future__ import annotations

import functools
import html
import logging
from pathlib import Path

import gradio as gr
import torch

from inference.errors import InputError, ModelLoadError
from inference.session import current_session

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Every event that runs the model joins this group, so model calls queue one after another instead of
# fighting over the 2 CPU cores (see README: concurrency).
MODEL_CONCURRENCY = "model"
# A visitor's small per-tab state (ids, step, parameters) is dropped an hour after its last change, so a
# class of thirty leaves nothing behind.
STATE_TTL_S = 3600


def session():
    """The shared session of the model currently loaded (switching model swaps it for every tab)."""
    return current_session()


def model_changed(demo):
    """The event that fires when the shared model is swapped (or a visitor's page learns of a swap):
    tabs add it to their triggers to redraw for the new model."""
    return demo.model_facts.change


def user_errors(fn):
    """Turn errors into one clear sentence in the UI (gr.Error) and the API; never a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (InputError, ModelLoadError) as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except torch.OutOfMemoryError:
            log.exception("%s ran out of memory", fn.__name__)
            raise gr.Error(
                "The model ran out of memory on this request; try a shorter prompt or fewer tokens. "
                "The app is still running.", print_exception=False,
            ) from None
        except Exception as exc:  # a bug or an unexpected failure: log it, tell the user plainly
            log.exception("%s failed", fn.__name__)
            raise gr.Error(
                f"Something went wrong ({type(exc).__name__}); the app is still running. Try again or change the input.",
                print_exception=False,
            ) from None

    return wrapper


def note(text: str) -> str:
    """A small explanatory note as HTML."""
    return f'<div class="lie-note">{html.escape(text)}</div>'
