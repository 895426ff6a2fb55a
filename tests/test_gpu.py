"""The GPU path: CUDA in bf16 when a GPU exists (skipped on CPU-only machines)."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_session_runs_on_cuda_in_bf16(session):
    assert session.device.type == "cuda"
    assert session.dtype == torch.bfloat16
    assert next(session.model.parameters()).dtype == torch.bfloat16


def test_greedy_generate_matches_transformers_on_gpu(session):
    from inference.generation import generate
    from inference.sampling import SamplingParams

    trace = generate(session, "The capital of France is", SamplingParams(temperature=0), 8, chat=False)
    ids = session.tokenizer("The capital of France is", return_tensors="pt").input_ids.to(session.device)
    with torch.no_grad():
        out = session.model.generate(ids, max_new_tokens=8, do_sample=False, top_k=None, top_p=None,
                                     temperature=None)
    assert trace.token_ids == out[0, ids.shape[1]:].tolist()[: len(trace.token_ids)]


def test_attention_capture_on_gpu(session):
    from inference.attention import capture_attention

    maps = capture_attention(session, "The cat sat on the mat")
    layer = maps.layer(0)
    assert layer.shape[0] == session.facts.num_heads
    assert abs(float(layer[0].sum(-1).mean()) - 1.0) < 1e-2
