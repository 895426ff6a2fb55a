"""Prefill & decode tab: what measuring costs, and the numbers the tab shows for the default model.

    .venv/bin/python -m bench timeline

The overhead target compares the tab's measured run (`inference.timing.timeline`: the Sampling tab's
Generation, step records, KV-cache bytes read after every pass, the peak-memory reading) with a bare
`model.generate` producing the same greedy tokens. On a shared 2-core machine wall time swings by 2x
between runs as other programs come and go, so the target is checked on the process's CPU time with one
torch thread (extra work is extra CPU time; being descheduled is not); the wall-clock ratio at the default
thread count is reported beside it.
"""

from __future__ import annotations

import time

import torch

from bench.common import Result, check

PROMPT = "Tell me a short story about a robot who learns to paint."
NEW_TOKENS = 16
REPEAT = 7


def fastest_interleaved(ours, theirs, repeat: int = REPEAT, clock=time.perf_counter) -> tuple[float, float]:
    """The fastest of `repeat` runs of each, alternated: on a shared CPU the fastest run is the one least
    disturbed by other programs, and alternating spreads load drift over both."""
    ours(), theirs()
    a, b = [], []
    for _ in range(repeat):
        start = clock(); ours(); a.append(clock() - start)  # noqa: E702
        start = clock(); theirs(); b.append(clock() - start)  # noqa: E702
    return min(a), min(b)


def one_thread_cpu(ours, theirs) -> tuple[float, float]:
    """Process CPU time of each with one torch thread (no thread waits for a descheduled sibling)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fastest_interleaved(ours, theirs, repeat=5, clock=time.process_time)
    finally:
        torch.set_num_threads(threads)


def run() -> list[Result]:
    from inference.generation import generate, prompt_ids
    from inference.sampling import SamplingParams
    from inference.batch import batch_throughput
    from inference.sweep import context_sweep
    from inference.timing import timeline

    from inference.session import get_session

    s = get_session()
    greedy = SamplingParams(temperature=0.0, seed=0)
    ids = torch.tensor([prompt_ids(s, PROMPT, True)], device=s.device)
    tokens = {}

    def ours():
        tl = timeline(s, PROMPT, greedy, NEW_TOKENS, chat=True, min_new_tokens=NEW_TOKENS)
        tokens["ours"] = tl.token_ids
        tokens["timeline"] = tl

    def bare():
        with s.lock, torch.inference_mode():
            out = s.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS,
                                   min_new_tokens=NEW_TOKENS, pad_token_id=s.tokenizer.eos_token_id)
        tokens["bare"] = out[0, ids.shape[1]:].tolist()

    def plain_generation():
        generate(s, PROMPT, greedy, NEW_TOKENS, chat=True, min_new_tokens=NEW_TOKENS)

    results = []
    c_ours, c_bare = one_thread_cpu(ours, bare)
    assert tokens["ours"] == tokens["bare"], "the timeline run and model.generate disagree"
    results.append(check(f"timeline / bare model.generate, CPU time, 1 thread ({NEW_TOKENS} same greedy tokens)",
                         c_ours / c_bare, "ratio", 1.10))
    t_ours, t_bare = fastest_interleaved(ours, bare)
    results.append(check("timeline / bare model.generate, wall time, default threads (noisy here)", t_ours / t_bare,
                         "ratio"))
    c_ours, c_gen = one_thread_cpu(ours, plain_generation)
    results.append(check("timeline / plain generate(), CPU time (cost of the cache and memory readings)",
                         c_ours / c_gen, "ratio"))

    m = tokens["timeline"].metrics
    results.append(check(f"TTFT, {m.prompt_tokens}-token prompt (ms)", m.ttft_s * 1e3, "ms"))
    results.append(check("TPOT mean (ms)", m.tpot_mean_s * 1e3, "ms"))
    results.append(check("decode tokens/s", m.decode_tokens_per_s, "tok/s"))
    results.append(check("KV bytes per token (measured)", tokens["timeline"].steps[-1].cache_bytes
                         / tokens["timeline"].steps[-1].cache_len, "B"))

    sweep = context_sweep(s, 128, fresh=True)
    for p in sweep.points:
        results.append(check(f"prefill {p.prompt_tokens} tokens (ms)", p.prefill_s * 1e3, "ms"))
    results.append(check("context sweep 16..128 tokens (s)", sweep.seconds, "s"))

    batch = batch_throughput(s, ["What is the capital of France?", "Name three colours.", "Write a line about the sea.",
                                 "What is 12 times 12?"], 16)
    results.append(check("batch of 4 vs one at a time (throughput ratio)", batch.to_dict()["speedup"], "ratio"))
    return results
