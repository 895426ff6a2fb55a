"""Safe to host: the host's allow-list and size caps (checked before anything loads), the teacher's lock, the
memory budget of loaded models, and converted weights that are verified before they are trusted."""

from __future__ import annotations

import ctypes
import gc
import json
import shutil
import struct
import threading
from dataclasses import replace

import psutil
import pytest
import torch

from inference.errors import ModelLoadError
from inference.model import loading, policy
from inference.model.session import SessionPool
from inference.session import DEFAULT_MODEL, GEMMA_MODEL

PROMPT = "The capital of France is"


@pytest.fixture
def host():
    """Each test sets its own host policy; the default comes back afterwards."""
    before = policy.current()
    yield policy
    policy.configure(before)


def test_allow_list_and_lock(host):
    host.configure(policy.HostPolicy())
    assert host.admit(None) == DEFAULT_MODEL
    assert host.admit(GEMMA_MODEL) == GEMMA_MODEL
    with pytest.raises(ModelLoadError, match="offers only"):
        host.admit("someone/huge-model")
    host.configure(replace(host.current(), allow_any=True))
    assert host.admit("someone/huge-model") == "someone/huge-model"
    with pytest.raises(ModelLoadError, match="not a Hugging Face model id"):
        host.admit("<img src=x>")
    host.configure(replace(host.current(), locked=True))
    with pytest.raises(ModelLoadError, match="teacher"):
        host.admit(GEMMA_MODEL)
    host.configure(replace(host.current(), teacher_key="s3cret", locked=False))
    with pytest.raises(ModelLoadError, match="teacher key"):
        host.set_class_model(GEMMA_MODEL, "guess")
    assert host.set_class_model(GEMMA_MODEL, "s3cret").class_model == GEMMA_MODEL
    assert host.current().locked and host.admit(None) == GEMMA_MODEL


def _fake_repository(folder, params: int, config: dict | None = None):
    """A local model folder whose safetensors header declares `params` float32 parameters (the data is not
    there: the check must not need it)."""
    folder.mkdir()
    rows = params // 1000
    header = json.dumps({"w": {"dtype": "F32", "shape": [rows, 1000], "data_offsets": [0, rows * 1000 * 4]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    return folder


def test_size_check_refuses_before_loading(tmp_path, host):
    huge = _fake_repository(tmp_path / "huge", 70_000_000_000)
    with pytest.raises(ModelLoadError, match=r"70\.00B parameters.*cap is 1\.0B"):
        host.check_repository(str(huge), online=False)
    small = _fake_repository(tmp_path / "small", 5_000_000)
    assert host.check_repository(str(small), online=False).parameters == 5_000_000
    remote = _fake_repository(tmp_path / "remote", 1000, {"model_type": "x", "auto_map": {"AutoModel": "m.M"}})
    with pytest.raises(ModelLoadError, match="remote code"):
        host.check_repository(str(remote), online=False)
    # Through the pool: refused with the same sentence, nothing loaded.
    pool = SessionPool()
    with pytest.raises(ModelLoadError, match="70.00B"):
        pool.get(str(huge))
    assert pool.loaded() == []


def test_offline_hub_check_respects_hf_hub_offline(monkeypatch):
    calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading.socket, "create_connection", lambda *a, **k: calls.append(a))
    assert loading.hub_online() is False and calls == []


@pytest.mark.slow
def test_pool_unloads_the_least_recently_used_idle_model(session):
    """Budget for one of the two bundled models: loading the second unloads the first (nobody runs it);
    a model mid-request is never unloaded; RSS grows by at most the budget plus a stated margin."""
    gc.collect()
    loading_rss = psutil.Process().memory_info().rss
    smol_bytes = session.weight_bytes()
    pool = SessionPool(budget_bytes=int(smol_bytes * 2.5))  # SmolLM2 fits; SmolLM2 + Gemma (3x) does not
    first = pool.get(DEFAULT_MODEL)
    running, done = threading.Event(), threading.Event()

    def request():  # another visitor's request holds the model's lock meanwhile
        with first.lock:
            running.set()
            done.wait(60)

    worker = threading.Thread(target=request)
    worker.start()
    running.wait(10)
    try:
        pool.get(GEMMA_MODEL)  # over the budget, but SmolLM2 is mid-request: it stays
        assert pool.loaded() == [DEFAULT_MODEL, GEMMA_MODEL]
    finally:
        done.set()
        worker.join()
    assert pool.evict(keep=GEMMA_MODEL) == [DEFAULT_MODEL]
    assert pool.loaded() == [GEMMA_MODEL]
    del first
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, as a long-running server's allocator would
    margin = 400 * 2**20  # the allocator keeps freed pages, tokenizers, Python objects
    grown = psutil.Process().memory_info().rss - loading_rss
    assert grown < pool.budget_bytes + margin, f"RSS grew {grown / 2**20:.0f} MB"
    again = pool.get(DEFAULT_MODEL)  # asked for again: loaded again, and Gemma (least recent, idle) goes
    assert pool.loaded() == [DEFAULT_MODEL]
    assert again.model_id == DEFAULT_MODEL


# ---------------------------------------------------------------------------------------------------
# Converted weights that cannot be trusted are converted again


def _paris(s) -> float:
    ids = s.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        probs = torch.softmax(s.model(ids).logits[0, -1].float(), -1)
    top = int(probs.argmax())
    assert s.tokenizer.decode([top]) == " Paris"
    return float(probs[top])


def _load():
    from inference.session import load_session

    return load_session(DEFAULT_MODEL)


@pytest.mark.slow
def test_damaged_cache_is_converted_again(tmp_path, monkeypatch, session, caplog):
    reference = _paris(session)
    cache = tmp_path / "cache"
    gguf = loading.BUNDLED[DEFAULT_MODEL].gguf_path()
    shutil.copytree(loading.converted_dir(gguf), loading.converted_dir(gguf, cache))
    monkeypatch.setenv("LIE_CACHE_DIR", str(cache))
    monkeypatch.setattr(loading, "fallback_cache_dir", lambda: tmp_path / "fallback")
    weights = loading.converted_dir(gguf) / "model.safetensors"
    assert weights.parent.parent.parent == cache

    # Truncated to half.
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    s = _load()
    assert "cannot be trusted" in caplog.text and "converted on first load" in s.source
    assert _paris(s) == pytest.approx(reference, abs=1e-5)

    # A start killed while saving left its temp folder behind: the next start removes it.
    stale = weights.parent.parent / ".tmp-999999999-abcd"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1024)
    s = _load()
    assert not stale.exists() and "from cache" in s.source
    assert _paris(s) == pytest.approx(reference, abs=1e-5)

    # 64 MB overwritten in place (same size: the load itself would succeed, with NaN probabilities), in the
    # fallback folder of a cache that cannot be written (nor created): found, converted again, and saved there.
    # One conversion checks both (each costs ~25 s on 2 cores).
    fallback = loading.converted_dir(gguf, tmp_path / "fallback")
    shutil.copytree(loading.converted_dir(gguf), fallback)
    with open(fallback / "model.safetensors", "r+b") as f:
        f.seek(100 * 2**20)
        f.write(b"\xff" * 64 * 2**20)
    caplog.clear()
    monkeypatch.setenv("LIE_CACHE_DIR", "/proc/llm-inference-explorer-cache")
    s = _load()
    assert "does not match its checksum" in caplog.text and "converted on first load" in s.source
    assert _paris(s) == pytest.approx(reference, abs=1e-5)
    s = _load()  # the fallback's fresh copy is trusted
    assert "from cache" in s.source


def test_read_only_cache_still_assembles_gemma(tmp_path, monkeypatch):
    bundled = loading.BUNDLED[GEMMA_MODEL]
    if not bundled.installed():
        pytest.skip("the Gemma 3 270M package is not installed")
    monkeypatch.setenv("LIE_CACHE_DIR", "/proc/llm-inference-explorer-cache")
    monkeypatch.setattr(loading, "fallback_cache_dir", lambda: tmp_path / "fallback")
    path = bundled.gguf_path()
    assert path.parent == tmp_path / "fallback" / "gguf" and path.stat().st_size > 100 * 2**20
