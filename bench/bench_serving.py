"""Serving benchmarks: many users generating at once, batched by the model's batcher vs one after another.

1. Throughput of 1, 4, 16 and 30 concurrent greedy requests (16 new tokens each, different prompts, as a class
   types them): served together through `inference.serving` (each request in its own thread, as Gradio runs
   them) vs the same requests one after another with plain transformers (`model.generate`, greedy), and vs
   transformers' own continuous batching (`generate_batch` on the sdpa twin), all in one run. Reported as ratios
   (serialized time / batched time = the throughput gain; ours / generate_batch), in wall time and in process CPU
   time: on a machine shared with other jobs wall time swings, CPU time much less. Every batched request must give
   model.generate's tokens (greedy).
2. The 30-user burst against one user alone: all 30 answers back / one answer (the classroom target: <= 5).
3. Memory of the batch: the most KV-cache bytes the batch held (padding included).
4. Sampled requests: how many of 100 seeds give a different token sequence batched than alone (a row's logits can
   differ from the solo pass's in the last float bits, which can move a draw that lands on a boundary).
5. Through the app: 30 gradio_client users in another process (their sessions open, as a class's pages are) send
   /generate at once to the real app; all answers back / one user alone through the same server (the classroom
   target, <= 5), three bursts. The clients' process shares the server's cores, which a class's browsers do not.
6. The Serving view: transformers' continuous-batching engine vs a static batch vs one at a time on a burst of
   10 requests of different lengths (throughput ratios from wall time).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, check, free_port  # noqa: E402
from inference.generation import generate, prompt_ids  # noqa: E402
from inference.model.twin import sdpa_twin  # noqa: E402
from inference.sampling import SamplingParams  # noqa: E402
from inference.serving import batcher_of, serve  # noqa: E402
from inference.session import get_session  # noqa: E402

# LIE_BENCH_QUICK=1: small settings (1 and 4 users, 8 tokens, 10 seeds, a 4-request burst) to check the bench runs.
QUICK = os.environ.get("LIE_BENCH_QUICK") == "1"
NEW_TOKENS = 8 if QUICK else 16
USERS = (1, 4) if QUICK else (1, 4, 16, 30)
SEEDS = 10 if QUICK else 100
GREEDY = SamplingParams(temperature=0)
SUBJECTS = ["cats", "dogs", "the sea", "rain", "music", "trees", "the moon", "bread", "winter", "trains", "bees",
            "clouds", "rivers", "books", "snow", "coffee", "birds", "mountains", "the sun", "apples", "chess", "robots",
            "stars", "gardens", "boats", "tea", "owls", "deserts", "cities", "friends"]
PROMPTS = [f"Write one sentence about {s}." for s in SUBJECTS]
BURST = [("What is the capital of France?", 6), ("Write a short poem about the sea.", 24), ("Name three colours.", 10),
         ("Explain in one paragraph why the sky is blue, as if to a ten-year-old who loves science.", 24),
         ("Say hello.", 4), ("List four animals that live in the ocean and one fact about each.", 20),
         ("What is 12 times 12?", 8), ("Give me a title for a story about a robot who learns to paint.", 12),
         ("Translate 'good morning' into French.", 6),
         ("Describe a rainy afternoon in a small town, with sounds and smells.", 24)]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def serialized(session, prompts):
    """Every request alone, one after another, with plain transformers (model.generate, greedy): token ids each."""
    import torch

    rows = [prompt_ids(session, p) for p in prompts]
    w, c = _clock()
    out = []
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row])
            gen = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                         pad_token_id=session.tokenizer.pad_token_id)
            out.append(gen[0, len(row):].tolist())
    return out, time.perf_counter() - w, time.process_time() - c


def engine(session, prompts):
    """The same requests through transformers' continuous batching (`generate_batch`, explicit cache size)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    twin = sdpa_twin(session)
    rows = [prompt_ids(session, p) for p in prompts]
    config = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                              eos_token_id=session.tokenizer.eos_token_id, pad_token_id=session.tokenizer.pad_token_id)
    blocks = sum(-(-(len(r) + NEW_TOKENS) // 16) for r in rows) + 4
    w, c = _clock()
    out = twin.generate_batch(rows, generation_config=config, progress_bar=False,
                              continuous_batching_config=ContinuousBatchingConfig(
                                  num_blocks=blocks, max_batch_tokens=512, use_cuda_graph=False))
    return [o.generated_tokens for o in out.values()], time.perf_counter() - w, time.process_time() - c


def together(session, prompts, params=None):
    """Every request in its own thread at once, served by the batcher."""
    params = params or [GREEDY] * len(prompts)
    w, c = _clock()
    with ThreadPoolExecutor(len(prompts)) as pool:
        traces = list(pool.map(lambda p, q: serve(session, p, q, NEW_TOKENS, min_new_tokens=NEW_TOKENS), prompts,
                               params))
    return traces, time.perf_counter() - w, time.process_time() - c


def through_the_app(users: int, bursts: int) -> list[dict]:
    """Bursts of `users` gradio_client users (bench.classroom_clients, its own process) against the app served here."""
    import json
    import subprocess

    import app

    demo = app.build_demo()
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs())
    try:
        command = [sys.executable, "-m", "bench.classroom_clients", demo.local_url.rstrip("/"), str(users),
                   str(NEW_TOKENS), json.dumps(SUBJECTS), str(bursts)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900,
                             cwd=Path(__file__).resolve().parent.parent)
    finally:
        demo.close()
    return json.loads(out.stdout.strip().splitlines()[-1])["bursts"]


def run() -> list[Result]:
    session = get_session()
    generate(session, "warm up", GREEDY, 4)
    results: list[Result] = []
    one_wall = one_cpu = None
    engine(session, PROMPTS[:2])  # warm-up (the twin, the engine's first pass)
    for n in USERS:
        prompts = PROMPTS[:n]
        solo, s_wall, s_cpu = serialized(session, prompts)
        batched, b_wall, b_cpu = together(session, prompts)
        theirs, e_wall, e_cpu = engine(session, prompts)
        same = sum(a == b.token_ids for a, b in zip(solo, batched))
        if n == 1:
            one_wall, one_cpu = s_wall, s_cpu
        results.append(check(f"serving: {n} users, model.generate one at a time / batched time (wall; {same}/{n} "
                             "greedy equal model.generate)", s_wall / b_wall, "ratio"))
        results.append(check(f"serving: {n} users, model.generate one at a time / batched time (CPU)", s_cpu / b_cpu,
                             "ratio"))
        same_engine = sum(a == b for a, b in zip(solo, theirs))
        results.append(check(f"serving: {n} users, batched time / transformers generate_batch time (wall; "
                             f"{same_engine}/{n} equal)", b_wall / e_wall, "ratio"))
        if n == USERS[-1]:
            largest_solo = solo  # model.generate's tokens for the class, to check the answers through the app
            results.append(check(f"serving: {n} users together / one user alone (wall)", b_wall / one_wall, "ratio",
                                 5.0))
            results.append(check(f"serving: {n} users together / one user alone (CPU)", b_cpu / one_cpu, "ratio",
                                 5.0))
            peak = max(max(t.batch_kv_bytes) for t in batched)
            results.append(check(f"serving: KV bytes the {n}-row batch held at most (padding included), MB",
                                 peak / 1e6, "MB"))
    b = batcher_of(session)
    results.append(check("serving: most rows in one pass", b.max_rows, "rows"))

    n = USERS[-1]
    for k, burst in enumerate(through_the_app(n, 1 if QUICK else 3)):
        same = sum(got == want for got, want in zip(burst["token_ids"], largest_solo))
        results.append(check(f"serving through the app, burst {k + 1}: {n} gradio_client users together / one alone "
                             f"(wall; {same}/{n} greedy equal model.generate; clients' own CPU "
                             f"{burst['clients_cpu_s']:.1f} s)", burst["together_s"] / burst["one_s"], "ratio", 5.0))

    # Sampled: 100 seeds, 4 at a time (each batch mixes seeds), against the same seeds alone.
    params = [SamplingParams(temperature=1.0, seed=seed) for seed in range(SEEDS)]
    prompt = PROMPTS[0]
    solo = [generate(session, prompt, p, NEW_TOKENS, min_new_tokens=NEW_TOKENS).token_ids for p in params]  # as served
    differ = 0
    for k in range(0, SEEDS, 10):
        batched, _, _ = together(session, [prompt] * 10, params[k:k + 10])
        differ += sum(a != t.token_ids for a, t in zip(solo[k:k + 10], batched))
    results.append(check(f"serving: sampled runs (of {SEEDS} seeds) whose tokens differ batched vs alone", differ,
                         "runs"))

    from inference.continuous import serve_burst

    burst = BURST[:4] if QUICK else BURST
    prompts, budgets = [p for p, _ in burst], [n for _, n in burst]
    serve_burst(session, prompts[:2], budgets[:2], num_blocks=48, max_batch_tokens=128)  # warm-up
    cmp = serve_burst(session, prompts, budgets, num_blocks=48, max_batch_tokens=128)
    results.append(check(f"serving view: engine / static batch throughput (texts equal: {cmp.identical('static')})",
                         cmp.speedup("static"), "ratio"))
    results.append(check(f"serving view: engine / one at a time throughput (texts equal: "
                         f"{cmp.identical('sequential')})", cmp.speedup("sequential"), "ratio"))
    results.append(check("serving view: engine throughput, tokens/s", cmp.continuous.tokens_per_s, "tok/s"))
    results.append(check("serving view: static batch KV peak / engine KV peak",
                         cmp.runs["static"].kv_peak_bytes / max(1, cmp.continuous.kv_peak_bytes), "ratio"))
    return results


if __name__ == "__main__":
    for r in run():
        print(f"{r.name}: {r.value:.3f} {r.unit} {r.target} {'' if r.ok is None else ('ok' if r.ok else 'MISSED')}")
