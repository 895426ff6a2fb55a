"""Memory tab: the precision speed table, the eviction policies' run time, and what our instrumentation costs
against plain transformers measured alternately in the same run.

    .venv/bin/python -m bench memory
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from bench.common import Result, check, interleaved

TEXT = json.loads((Path(__file__).resolve().parent.parent / "assets" / "examples" / "memory.json").read_text())["texts"]
LESSON_TEXT = next(iter(TEXT.values()))  # ~300 tokens


def run() -> list[Result]:
    from inference.deadline import Deadline
    from inference.kv_policies import evaluate_policy
    from inference.precision import available_precisions, compare_kv_precision, compare_precisions
    from inference.session import get_session

    s = get_session()
    results = []
    ids = s.tokenizer(LESSON_TEXT).input_ids
    n = len(ids)

    # The precision table on the lesson text (every precision this machine runs), as the tab measures it.
    s.cache.clear()
    started = time.perf_counter()
    cmp = compare_precisions(s, LESSON_TEXT, available_precisions(s), deadline=Deadline(None))
    results.append(check(f"precision table, {len(cmp.rows)} precisions, {n} tokens (s)", time.perf_counter() - started, "s"))
    for row in cmp.rows:
        results.append(check(f"{row.name}: weights (MB)", row.weight_bytes / 1e6, "MB"))
        results.append(check(f"{row.name}: ms per decode token", row.ms_per_token, "ms"))
        results.append(check(f"{row.name}: speed vs {cmp.reference} measured alternately", row.speedup, "ratio"))
        results.append(check(f"{row.name}: mean KL from {cmp.reference} (nats)", row.mean_kl, "nats"))

    # Our timed greedy loop (one forward pass per token on a DynamicCache) against model.generate, same tokens.
    from inference.precision import _greedy_timed

    prompt = torch.tensor([ids])

    def ours():
        _greedy_timed(s, ids, 16)

    def theirs():
        with s.lock, torch.inference_mode():
            s.model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False, top_k=None, top_p=None)

    a, b = interleaved(ours, theirs, repeat=3)
    results.append(check("timed greedy loop / model.generate (16 tokens)", a / b, "ratio", 1.10))

    # A policy run: the evicting cache, one decode pass per token, against plain decoding of the same tokens on a
    # DynamicCache (transformers alone: no hooks, no eviction).
    budget = 32

    def policy():
        s.cache.clear()
        evaluate_policy(s, LESSON_TEXT, "window", budget, deadline=Deadline(None))

    def plain():
        from transformers import DynamicCache

        cache = DynamicCache(config=s.model.config)
        with s.lock, torch.inference_mode():
            s.model(input_ids=torch.tensor([ids[:budget]]), past_key_values=cache, use_cache=True)
            for i in range(budget, n):
                s.model(input_ids=torch.tensor([[ids[i]]]), past_key_values=cache, use_cache=True)

    a, b = interleaved(policy, plain, repeat=2)
    results.append(check(f"window policy run, budget {budget}, {n} tokens (s)", a, "s"))
    results.append(check("window policy run / plain cached decoding of the same tokens", a / b, "ratio", 1.25))
    for name in ("sinks", "heavy_hitters"):
        s.cache.clear()
        started = time.perf_counter()
        evaluate_policy(s, LESSON_TEXT, name, budget, 4, deadline=Deadline(None))
        results.append(check(f"{name} policy run, budget {budget} (s)", time.perf_counter() - started, "s"))

    # The fp8 KV cache: bytes per token from the tensors, and its decode pass against the plain cache's.
    s.cache.clear()
    kvc = compare_kv_precision(s, LESSON_TEXT, deadline=Deadline(None))
    plain_row, fp8 = kvc.rows
    results.append(check("KV cache bytes per token, plain (float32)", plain_row.bytes_per_token, "B"))
    results.append(check("KV cache bytes per token, fp8 (measured)", fp8.bytes_per_token, "B"))
    results.append(check("fp8 cache decode pass / plain cache decode pass", fp8.ms_per_token / plain_row.ms_per_token,
                         "ratio"))
    return results
