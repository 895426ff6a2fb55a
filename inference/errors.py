"""Errors a user can cause and read: each carries one clear sentence, shown as is in the UI and API."""


class InputError(ValueError):
    """The request itself is invalid (empty text, a parameter out of range, over a stated cap)."""


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the app keeps the model it had."""
