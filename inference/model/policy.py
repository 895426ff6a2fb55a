"""What the host lets visitors load: an allow-list, size caps checked before any download, a teacher's lock.

A public Space or a classroom server must not let one visitor make it download a 70B model, nor change the
model for everyone else. The host sets a `HostPolicy` once at start (app.py flags); every model a visitor or an
API call asks for goes through `admit` first, and every hub repository through `check_repository` before a
single weight byte is fetched (its safetensors headers and config are read: a few KB).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from ..errors import Message, ModelLoadError
from ..limits import MAX_MODEL_BYTES, MAX_MODEL_PARAMS
from .loading import BUNDLED, DEFAULT_MODEL, HUB_ID, cache_dir, validate_model_id

# Bytes one parameter takes once loaded: fp32 on a CPU, bf16 on a GPU (session.pick_device); checks use fp32
# to stay on the safe side.
BYTES_PER_PARAM_LOADED = 4
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class HostPolicy:
    """The host's rules. `class_model` is the model every visitor sees; `locked` keeps visitors on it."""

    class_model: str = DEFAULT_MODEL
    allowed: tuple[str, ...] = field(default_factory=lambda: tuple(BUNDLED))
    allow_any: bool = False  # visitors may type any hub id (within the caps)
    max_params: int = MAX_MODEL_PARAMS
    max_bytes: int = MAX_MODEL_BYTES
    locked: bool = False  # the teacher's lock: one model for every visitor
    teacher_key: str | None = None  # entered once in the UI to change the class model
    lesson_query: str = ""  # a shared-link query every page opens with (the teacher's lesson settings)
    lock_settings: bool = False  # the fields in lesson_query cannot be changed by students

    def caps(self) -> list:
        """The rules, as limits.Limit rows for the limits panel."""
        from ..limits import Limit

        rows = [Limit("allowed_any", "Models visitors may load", "any Hugging Face id (size-checked)") if self.allow_any
                else Limit("allowed", "Models visitors may load", "{models}", dict(models=", ".join(self.allowed))),
                Limit("largest", "Largest model", "{params:,.1f}B parameters, {gb:,.1f} GB of weights",
                      dict(params=self.max_params / 1e9, gb=self.max_bytes / 2**30))]
        if self.locked:
            rows.append(Limit("lock", "Teacher's lock", "every visitor uses {model}", dict(model=self.class_model)))
        if self.lesson_query:
            rows.append(Limit("lesson_locked" if self.lock_settings else "lesson", "Lesson settings",
                              "set by the teacher and locked" if self.lock_settings else "set by the teacher"))
        return rows

    def describe(self) -> list[tuple[str, str]]:
        """The rules in English words."""
        return [cap.english() for cap in self.caps()]


_policy = HostPolicy()

# Also raised by the page's header, which checks the key before it loads the class model.
WRONG_TEACHER_KEY = Message("model.policy.wrong_teacher_key",
                            "That is not the teacher key set by the host of this server.")


def configure(policy: HostPolicy) -> HostPolicy:
    global _policy
    _policy = policy
    return policy


def current() -> HostPolicy:
    return _policy


def set_class_model(model_id: str, key: str | None) -> HostPolicy:
    """The teacher changes the model for the whole class (needs the host's teacher key)."""
    policy = current()
    if not policy.teacher_key or key != policy.teacher_key:
        raise ModelLoadError(WRONG_TEACHER_KEY)
    return configure(replace(policy, class_model=model_id, locked=True))


def admit(model_id: str | None) -> str:
    """The model a visitor may use: their choice if the policy allows it, else a ModelLoadError saying why.
    None or "" means the class model."""
    policy = current()
    if model_id is not None and not isinstance(model_id, str):  # the API takes any JSON
        raise ModelLoadError("model.policy.id_not_text", "A model id is text, such as {example}.",
                             example=policy.class_model)
    model_id = (model_id or "").strip() or policy.class_model
    if policy.locked and model_id != policy.class_model:
        raise ModelLoadError("model.policy.locked", "The teacher has set this server to {model} for everyone; the "
                             "model cannot be changed here.", model=policy.class_model)
    if model_id in policy.allowed or model_id == policy.class_model:
        return model_id
    if not policy.allow_any:
        raise ModelLoadError("model.policy.not_allowed", "This server offers only {models}; its host has not allowed "
                             "other models.", models=", ".join(policy.allowed))
    return validate_model_id(model_id)


# ---------------------------------------------------------------------------------------------------
# Size checks before any download


@dataclass(frozen=True)
class RepositorySize:
    parameters: int
    weight_bytes: int  # as stored (on disk / to download)
    source: str  # where the numbers came from


def _local_size(folder: Path) -> RepositorySize:
    from huggingface_hub import get_local_safetensors_metadata

    meta = get_local_safetensors_metadata(folder)
    return _size_of(meta, f"safetensors headers in {folder.name}")


def _size_of(meta, source: str) -> RepositorySize:
    params = sum(meta.parameter_count.values())
    stored = sum(count * DTYPE_BYTES.get(dtype, 4) for dtype, count in meta.parameter_count.items())
    return RepositorySize(params, stored, source)


def _hub_size(repo: str, revision: str | None) -> RepositorySize:
    from huggingface_hub import get_safetensors_metadata, model_info

    try:
        return _size_of(get_safetensors_metadata(repo, revision=revision), "the repository's safetensors headers")
    except Exception:  # no safetensors (e.g. only .bin files): the file sizes say what a download would be
        info = model_info(repo, revision=revision, files_metadata=True)
        weights = sum(s.size or 0 for s in info.siblings or []
                      if s.rfilename.endswith((".bin", ".safetensors", ".pt", ".pth", ".gguf")))
        return RepositorySize(weights // 2, weights, "the repository's file sizes (parameters estimated at 2 bytes)")


def _needs_remote_code(config: dict) -> bool:
    """A config with an `auto_map` points at classes in the repository's own Python files."""
    return bool(config.get("auto_map"))


def check_repository(model_id: str, online: bool, policy: HostPolicy | None = None) -> RepositorySize | None:
    """Refuse, before downloading anything, a repository over the host's caps, one that would not fit the free
    memory or disk, or one that needs remote code. Returns the size it read (None offline: nothing can be
    downloaded then, and a cached model was checked when it came)."""
    policy = policy or current()
    local = Path(model_id)
    if local.is_dir():
        config = json.loads((local / "config.json").read_text()) if (local / "config.json").exists() else {}
        size = _local_size(local) if any(local.glob("*.safetensors")) else None
        need_disk = 0
    elif not online:
        return None
    else:
        from huggingface_hub import hf_hub_download

        match = HUB_ID.match(model_id)
        repo, revision = match["repo"], match["revision"]
        try:
            config = json.loads(Path(hf_hub_download(repo, "config.json", revision=revision)).read_text())
        except Exception as exc:
            raise ModelLoadError("model.policy.cannot_check", "{repo} could not be checked: it does not exist on the "
                                 "Hugging Face Hub, is gated, or has no config.json.", repo=repo) from exc
        size = _hub_size(repo, revision)
        need_disk = size.weight_bytes
    if _needs_remote_code(config):
        raise ModelLoadError("model.policy.remote_code", "{model} needs code from its repository to run "
                             "(trust_remote_code); this app never runs remote code.", model=model_id)
    if size is None:
        return None
    if size.parameters > policy.max_params or size.weight_bytes > policy.max_bytes:
        raise ModelLoadError("model.policy.over_cap",
                             "{model} has {params:,.2f}B parameters ({gb:,.1f} GB of weights); this server's cap is "
                             "{max_params:,.1f}B parameters and {max_gb:,.1f} GB.",
                             model=model_id, params=size.parameters / 1e9, gb=size.weight_bytes / 2**30,
                             max_params=policy.max_params / 1e9, max_gb=policy.max_bytes / 2**30)
    loaded = size.parameters * BYTES_PER_PARAM_LOADED
    free_memory = psutil.virtual_memory().available
    if loaded > free_memory:
        raise ModelLoadError("model.policy.memory", "{model} needs about {gb:,.1f} GB of memory once loaded; this "
                             "server has {free_gb:,.1f} GB free.", model=model_id, gb=loaded / 2**30,
                             free_gb=free_memory / 2**30)
    if need_disk:
        target = Path(os.environ.get("HF_HOME") or cache_dir())
        target = target if target.exists() else target.parent
        free_disk = shutil.disk_usage(target if target.exists() else Path.home()).free
        if need_disk > free_disk:
            raise ModelLoadError("model.policy.disk", "{model} is {gb:,.1f} GB to download; the server's disk has "
                                 "{free_gb:,.1f} GB free.", model=model_id, gb=need_disk / 2**30,
                                 free_gb=free_disk / 2**30)
    return size
