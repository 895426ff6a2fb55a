"""Speculative decoding benchmarks: what each drafter buys on this machine, against plain transformers decoding.

1. Prompt lookup on the edit-a-paragraph prompt (the tab's first example) against plain greedy `model.generate` of
   the same tokens, measured alternately in one run (fastest of 5 each). Target: speedup > 1.5.
2. What watching costs: our observed `speculative_generate` against bare `model.generate(prompt_lookup_num_tokens=k)`,
   alternately. Target: ratio <= 1.10.
3. The k sweep (k = 1..8, prompt lookup, the same prompt): the speedup per k and the best k here.
4. Honest losses: early exit (an untrained drafter) and the target drafting for itself (a drafter as big as the
   target): their acceptance rate and speedup, expected below 1 on a CPU; SmolLM2-135M drafting for Gemma 3 270M
   (universal assisted decoding) when Gemma is installed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, check  # noqa: E402
from inference.deadline import Deadline  # noqa: E402
from inference.sampling import SamplingParams  # noqa: E402
from inference.session import BUNDLED, GEMMA_MODEL, get_session  # noqa: E402
from inference.speculative import compare_drafters, speculative_generate, sweep_draft_tokens  # noqa: E402
from inference.tokens import tokenize  # noqa: E402

EXAMPLES = json.loads((Path(__file__).resolve().parent.parent / "assets" / "examples" / "speculative.json").read_text())
EDIT = EXAMPLES["examples"][0]["prompt"]
QUESTION = "What is the capital of France? Answer in one sentence."
K = 8
NEW = 64
GREEDY = SamplingParams(temperature=0)


def fastest_interleaved(ours, theirs, repeat: int) -> tuple[float, float]:
    """The fastest run of each, alternating who goes first: on a shared machine the fastest runs are the ones least
    disturbed by other jobs."""
    ours(), theirs()
    a, b = [], []
    for k in range(repeat):
        pair = [(ours, a), (theirs, b)] if k % 2 == 0 else [(theirs, b), (ours, a)]
        for fn, times in pair:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(a), min(b)


def _hf(session, ids: torch.Tensor, new: int, **kwargs) -> list[int]:
    with session.lock, torch.inference_mode():
        out = session.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                     pad_token_id=session.tokenizer.pad_token_id or 0, **kwargs)
    return out[0, ids.shape[1]:].tolist()


def run() -> list[Result]:
    session = get_session()
    ids = torch.tensor([tokenize(session, EDIT, True).ids])
    results: list[Result] = []

    # 1. Prompt lookup vs plain greedy decoding of the same tokens.
    ours = speculative_generate(session, EDIT, "prompt_lookup", K, NEW, GREEDY, measure_plain=False)
    n = len(ours.token_ids)
    if _hf(session, ids, n) != ours.token_ids:
        raise AssertionError("speculative decoding and plain greedy decoding produced different tokens")
    spec_s, plain_s = fastest_interleaved(
        lambda: speculative_generate(session, EDIT, "prompt_lookup", K, NEW, GREEDY, measure_plain=False),
        lambda: _hf(session, ids, n), repeat=5)
    results += [
        check(f"prompt lookup (k={K}) speedup vs plain greedy, edit prompt, {n} tokens", plain_s / spec_s, "ratio",
              1.5, ">="),
        check(f"  {n} tokens in {ours.target_passes} target passes; acceptance rate", ours.acceptance_rate or 0, "ratio"),
        check("  speculative / plain, per token", spec_s / n * 1000, "ms"),
        check("  plain model.generate, per token", plain_s / n * 1000, "ms"),
    ]

    # 2. What the observation costs: ours vs bare transformers with the same drafter.
    observed, bare = fastest_interleaved(
        lambda: speculative_generate(session, EDIT, "prompt_lookup", K, NEW, GREEDY, measure_plain=False),
        lambda: _hf(session, ids, NEW, prompt_lookup_num_tokens=K), repeat=5)
    results.append(check("observed speculative_generate / bare generate(prompt_lookup_num_tokens)", observed / bare,
                         "ratio", 1.10))

    # 3. The k sweep.
    sweep = sweep_draft_tokens(session, EDIT, "prompt_lookup", 48, GREEDY, deadline=Deadline(None))
    for point in sweep.points:
        results.append(check(f"  k sweep, prompt lookup, k={point.num_draft_tokens}: speedup "
                             f"(acceptance {100 * (point.acceptance_rate or 0):.0f}%)", point.speedup or 0, "ratio"))
    best = sweep.best
    results.append(check("k sweep: best k for prompt lookup on this machine", best.num_draft_tokens if best else 0, "k"))

    # 4. Drafters that cost more than they save on a CPU.
    layers = max(1, session.facts.num_layers // 4)
    cmp = compare_drafters(session, QUESTION, ["prompt_lookup", f"early_exit:{layers}", session.model_id], 4, 32,
                           GREEDY, deadline=Deadline(None))
    for t in cmp.runs:
        results.append(check(f"{t.drafter.label[:60]}: speedup (acceptance {100 * (t.acceptance_rate or 0):.0f}%)",
                             t.speedup or 0, "ratio"))
    if BUNDLED[GEMMA_MODEL].installed():
        gemma = get_session(GEMMA_MODEL)
        t = speculative_generate(gemma, "The capital of France is", session.model_id, 4, 32, GREEDY, chat=False,
                                 deadline=Deadline(None))
        results.append(check(f"SmolLM2 drafting for Gemma 3 270M (universal): speedup (acceptance "
                             f"{100 * (t.acceptance_rate or 0):.0f}%)", t.speedup or 0, "ratio"))
    return results


if __name__ == "__main__":
    start = time.perf_counter()
    for r in run():
        print(r)
    print(f"{time.perf_counter() - start:.1f} s")
