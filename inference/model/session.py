"""One cached, instrumented model session per model, shared by every tab and every user.

A `ModelSession` holds a loaded model and tokenizer (`loading.load_model`), the lock that serializes model
calls, and the analysis cache: analyses of the same (model, text) are computed once and shared by every tab.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from ..errors import ModelLoadError
from ..limits import ANALYSIS_CACHE_BYTES, MODEL_MEMORY_BUDGET
from .anatomy import ModelFacts, read_facts
from . import policy
from .loading import BUNDLED, DEFAULT_MODEL, converted_dir, hub_online, load_model, validate_model_id

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
    _weight_bytes: int | None = field(default=None, repr=False)

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

    def weight_bytes(self) -> int:
        """Bytes of the model's parameters and buffers (tied weights counted once)."""
        seen, total = set(), 0
        for t in [*self.model.parameters(), *self.model.buffers()]:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    def memory_bytes(self) -> int:
        """What holding this session costs: its weights and its cached analyses."""
        if self._weight_bytes is None:
            self._weight_bytes = self.weight_bytes()
        return self._weight_bytes + self.cache.retained_bytes()

    def busy(self) -> bool:
        """A request is running on this model now (another thread holds its lock)."""
        if self.lock.acquire(blocking=False):
            self.lock.release()
            return False
        return True

    def analysis(self, kind: str, key: tuple, compute: Callable[[], Any]) -> Any:
        return self.cache.get_or_compute(kind, key, compute)



def load_session(model_id: str) -> ModelSession:
    """Load a model into a new session (not cached; use get_session). A repository that is not bundled is
    size-checked against the host's caps before anything is downloaded (policy.check_repository)."""
    bundled = BUNDLED.get(model_id)
    if not (bundled and bundled.installed()):
        policy.check_repository(model_id, online=os.path.isdir(model_id) or hub_online())
    model, tokenizer, device, dtype, source, seconds = load_model(model_id)
    return ModelSession(model_id=model_id, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                        facts=read_facts(model), source=source, load_seconds=seconds)


# ---------------------------------------------------------------------------------------------------
# The shared sessions

class SessionPool:
    """Loaded sessions, least recently used first, within a memory budget (weights + cached analyses).

    Beyond the budget the least recently used session that nobody is running is dropped (the one just asked
    for and any mid-request are kept: a visitor never loses the model under a running request); asking for
    it again loads it again. Two visitors asking for the same new model load it once."""

    def __init__(self, budget_bytes: int = MODEL_MEMORY_BUDGET):
        self.budget_bytes = budget_bytes
        self._sessions: OrderedDict[str, ModelSession] = OrderedDict()
        self._lock = threading.Lock()  # guards the dict only; never held while a model loads
        self._loading: dict[str, threading.Lock] = {}

    def __contains__(self, model_id: str) -> bool:
        with self._lock:
            return model_id in self._sessions

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def peek(self, model_id: str) -> ModelSession | None:
        with self._lock:
            return self._sessions.get(model_id)

    def memory_bytes(self) -> int:
        with self._lock:
            return sum(s.memory_bytes() for s in self._sessions.values())

    def get(self, model_id: str) -> ModelSession:
        with self._lock:
            if model_id in self._sessions:
                self._sessions.move_to_end(model_id)
                return self._sessions[model_id]
            loading = self._loading.setdefault(model_id, threading.Lock())
        with loading:
            with self._lock:
                if model_id in self._sessions:
                    return self._sessions[model_id]
            session = load_session(model_id)
            with self._lock:
                self._sessions[model_id] = session
            self.evict(keep=model_id)
            return session

    def evict(self, keep: str) -> list[str]:
        """Drop idle sessions, least recently used first, while all of them hold more than the budget."""
        dropped = []
        with self._lock:
            while sum(s.memory_bytes() for s in self._sessions.values()) > self.budget_bytes:
                idle = [mid for mid, s in self._sessions.items() if mid != keep and not s.busy()]
                if not idle:
                    break
                del self._sessions[idle[0]]
                dropped.append(idle[0])
        for mid in dropped:
            log.info("unloaded %s to stay within the models' memory budget (%d MB)", mid, self.budget_bytes >> 20)
        if dropped:
            gc.collect()
        return dropped


_pool = SessionPool()


def is_loaded(model_id: str) -> bool:
    return model_id in _pool


def loaded_models() -> list[str]:
    """Model ids held in memory now, least recently used first."""
    return _pool.loaded()


def get_session(model: str | None = None) -> ModelSession:
    """The session for `model` (default: the host's default model), loaded once and then cached; models
    beyond the memory budget are unloaded least recently used first (SessionPool). Visitors' choices pass
    `policy.admit` first (components do that)."""
    return _pool.get((model or policy.current().class_model).strip())


def current_session() -> ModelSession:
    """The session of the host's default model (the class model), which new visitors get."""
    return get_session(policy.current().class_model)


def switch_model(model_id: str) -> ModelSession:
    """Load `model_id` and make it the host's default for new visitors (app start, `--model`). Visitors never
    call this: their choice is their own (components.common). On failure the default stays."""
    model_id = (model_id or "").strip() or DEFAULT_MODEL
    if model_id not in BUNDLED and not os.path.isdir(model_id):
        model_id = validate_model_id(model_id)
    session = get_session(model_id)
    policy.configure(replace(policy.current(), class_model=model_id))
    return session


def offline_models() -> dict[str, str]:
    """Bundled models installed on this machine: model id -> label."""
    return {mid: b.label for mid, b in BUNDLED.items() if b.installed()}


_tokenizers: dict[str, Any] = {}
_tokenizers_lock = threading.Lock()


def get_tokenizer(model_id: str):
    """A bundled model's tokenizer alone (for comparing tokenizers) without loading its weights.

    Uses the loaded session's tokenizer when there is one; converting a GGUF vocabulary is slow (~5 s for
    49k entries, longer for Gemma's 262k), so the converted tokenizer is saved beside the converted weights.
    """
    from transformers import AutoTokenizer

    loaded = _pool.peek(model_id)
    if loaded is not None:
        return loaded.tokenizer
    with _tokenizers_lock:
        if model_id in _tokenizers:
            return _tokenizers[model_id]
    bundled = BUNDLED.get(model_id)
    if bundled is None or not bundled.installed():
        raise ModelLoadError("model.session.not_installed", "{model} is not installed on this machine.", model=model_id)
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
    with _tokenizers_lock:
        _tokenizers[model_id] = tokenizer
    return tokenizer
