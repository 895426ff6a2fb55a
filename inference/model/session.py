"""One cached, instrumented model session per model, shared by every tab and every user.

A `ModelSession` holds a loaded model and tokenizer (`loading.load_model`), the lock that serializes model
calls, and the analysis cache: analyses of the same (model, text) are computed once and shared by every tab.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import ModelLoadError
from ..limits import ANALYSIS_CACHE_BYTES
from .anatomy import ModelFacts, read_facts
from .loading import BUNDLED, DEFAULT_MODEL, converted_dir, load_model, validate_model_id

log = logging.getLogger(__name__)


def _retained_bytes(value: Any) -> int:
    """Memory an analysis holds, when it can tell (`retained_bytes()`); small results count as 0."""
    measure = getattr(value, "retained_bytes", None)
    return int(measure()) if callable(measure) else 0


class AnalysisCache:
    """Analyses computed once per (kind, key) and shared by all tabs; least recently used go first once
    there are more than `max_entries` or they hold more than `max_bytes` (attention maps are big)."""

    def __init__(self, max_entries: int = 48, max_bytes: int = ANALYSIS_CACHE_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()  # key -> (value, bytes)
        self._lock = threading.Lock()
        self._in_flight: dict[tuple, threading.RLock] = {}
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, kind: str, key: tuple, compute: Callable[[], Any]) -> Any:
        full_key = (kind, *key)
        with self._lock:
            if full_key in self._items:
                self._items.move_to_end(full_key)
                self.hits += 1
                return self._items[full_key][0]
            # Two users asking for the same new analysis at once: the second waits for the first's result.
            in_flight = self._in_flight.setdefault(full_key, threading.RLock())
        with in_flight:
            with self._lock:
                if full_key in self._items:
                    self.hits += 1
                    return self._items[full_key][0]
            try:
                value = compute()  # outside the cache lock: model calls take the session lock
            finally:
                with self._lock:
                    self._in_flight.pop(full_key, None)
            with self._lock:
                self.misses += 1
                if getattr(value, "timed_out", False):  # cut short by a request's time limit: not the answer
                    return value
                self._items[full_key] = (value, _retained_bytes(value))
                self._items.move_to_end(full_key)
                while len(self._items) > 1 and (
                    len(self._items) > self.max_entries or self.retained_bytes() > self.max_bytes
                ):
                    self._items.popitem(last=False)
        return value

    def retained_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(eq=False)
class ModelSession:
    """A loaded model and tokenizer, the lock that serializes model calls, and the analysis cache."""

    model_id: str
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    facts: ModelFacts
    source: str  # how it was loaded, for the header ("bundled GGUF, cached safetensors", "hub")
    load_seconds: float
    lock: threading.RLock = field(default_factory=threading.RLock)
    cache: AnalysisCache = field(default_factory=AnalysisCache)

    @property
    def label(self) -> str:
        bundled = BUNDLED.get(self.model_id)
        return bundled.label if bundled else self.model_id

    @property
    def anatomy(self):
        """Where each part of the forward pass lives in this model (read once, cached)."""
        from .anatomy import anatomy

        return anatomy(self)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def analysis(self, kind: str, key: tuple, compute: Callable[[], Any]) -> Any:
        return self.cache.get_or_compute(kind, key, compute)



def load_session(model_id: str) -> ModelSession:
    """Load a model into a new session (not cached; use get_session)."""
    model, tokenizer, device, dtype, source, seconds = load_model(model_id)
    return ModelSession(model_id=model_id, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                        facts=read_facts(model), source=source, load_seconds=seconds)


# ---------------------------------------------------------------------------------------------------
# The shared sessions

MAX_SESSIONS = 2  # models held in memory at once: the current one and the one asked for
_sessions: OrderedDict[str, ModelSession] = OrderedDict()
_sessions_lock = threading.Lock()  # guards the dict only; never held while a model loads
_loading_locks: dict[str, threading.Lock] = {}  # one per model: two users asking for it load it once
_current_id = DEFAULT_MODEL


def get_session(model: str | None = None) -> ModelSession:
    """The session for `model` (default: the embedded default model), loaded once and then cached."""
    model_id = (model or DEFAULT_MODEL).strip()
    with _sessions_lock:
        if model_id in _sessions:
            _sessions.move_to_end(model_id)
            return _sessions[model_id]
        loading = _loading_locks.setdefault(model_id, threading.Lock())
    with loading:
        with _sessions_lock:
            if model_id in _sessions:
                return _sessions[model_id]
        session = load_session(model_id)
        with _sessions_lock:
            _sessions[model_id] = session
            for old in [k for k in _sessions if k not in (model_id, _current_id)]:
                if len(_sessions) <= MAX_SESSIONS:
                    break
                del _sessions[old]
        return session


def current_session() -> ModelSession:
    """The session every tab uses now (the default until a user switches model)."""
    return get_session(_current_id)


def switch_model(model_id: str) -> ModelSession:
    """Load `model_id` and make it the shared current model. On failure the current model stays."""
    global _current_id
    model_id = (model_id or "").strip() or DEFAULT_MODEL
    if model_id not in BUNDLED:
        model_id = validate_model_id(model_id)
    session = get_session(model_id)
    _current_id = model_id
    return session


def offline_models() -> dict[str, str]:
    """Bundled models installed on this machine: model id -> label."""
    return {mid: b.label for mid, b in BUNDLED.items() if b.installed()}


_tokenizers: dict[str, Any] = {}


def get_tokenizer(model_id: str):
    """A bundled model's tokenizer alone (for comparing tokenizers) without loading its weights.

    Uses the loaded session's tokenizer when there is one; converting a GGUF vocabulary is slow (~5 s for
    49k entries, longer for Gemma's 262k), so the converted tokenizer is saved beside the converted weights.
    """
    from transformers import AutoTokenizer

    with _sessions_lock:
        if model_id in _sessions:
            return _sessions[model_id].tokenizer
        if model_id in _tokenizers:
            return _tokenizers[model_id]
    bundled = BUNDLED.get(model_id)
    if bundled is None or not bundled.installed():
        raise ModelLoadError(f"{model_id} is not installed on this machine.")
    gguf = bundled.gguf_path()
    folder = converted_dir(gguf)
    tokenizer_dir = folder if (folder / "config.json").exists() else folder.with_name(folder.name + "-tokenizer")
    if (tokenizer_dir / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        try:
            tokenizer.save_pretrained(tokenizer_dir)
        except OSError as exc:
            log.warning("could not cache tokenizer in %s: %s", tokenizer_dir, exc)
    with _sessions_lock:
        _tokenizers[model_id] = tokenizer
    return tokenizer
