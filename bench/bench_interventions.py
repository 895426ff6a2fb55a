"""Interventions: what an ablation and a patching grid cost, against plain forward passes of the same prompt.

    .venv/bin/python -m bench interventions

The machine this runs on is shared: wall time moves with other people's load, and with two intra-op threads a
pass can spend most of its time waiting for a descheduled thread. Ratios are therefore given in CPU time of this
process (time.process_time), measured alternately with the plain pass; wall times are printed beside them.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.common import TEXT_30, Result, check

# The pair, with one more word so both prompts are 10 tokens on SmolLM2.
CLEAN_10 = "The Eiffel Tower is located in the city of"
CORRUPT_10 = "The Colosseum is located in the city of"
PROMPT_12 = "apple river mountain seven blue window. apple river mountain seven blue"


def _times(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _alternate(ours, theirs, repeat: int = 7) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, cpu) of two functions measured alternately, after one warm-up call each."""
    ours(), theirs()
    a, b = [], []
    for _ in range(repeat):
        a.append(_times(ours))
        b.append(_times(theirs))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return (med(a, 0), med(a, 1)), (med(b, 0), med(b, 1))


def run() -> list[Result]:
    from inference.deadline import Deadline
    from inference.interventions import ablate, clean_run, head_sweep, patch_sweep
    from inference.session import get_session

    s = get_session()
    results = []
    ids = torch.tensor([s.tokenizer(TEXT_30).input_ids])

    def plain():
        with s.lock, torch.inference_mode():
            s.model(input_ids=ids, use_cache=False, logits_to_keep=1)

    # One head ablated, the clean run of the text cached (it is shared by every ablation of a text): each call is a
    # new head, so nothing of the ablated pass itself comes from the cache.
    clean_run(s, TEXT_30)
    heads = iter([(l, h) for l in range(s.facts.num_layers) for h in range(s.facts.num_heads)])
    for mode in ("zero", "mean"):
        (w1, c1), (w0, c0) = _alternate(lambda: ablate(s, TEXT_30, heads=[next(heads)], mode=mode), plain)
        results.append(check(f"ablate one head ({mode}), 30 tokens: wall s", w1, "s"))
        results.append(check(f"ablate one head ({mode}) / plain forward, CPU time", c1 / c0, "ratio", 1.2))
        results.append(check(f"ablate one head ({mode}) / plain forward, wall time", w1 / w0, "ratio"))

    # The patching grid of the 10-token pair: 30 layers x 10 positions, one run per cell.
    ids_10 = torch.tensor([s.tokenizer(CLEAN_10).input_ids])
    assert ids_10.shape[1] == len(s.tokenizer(CORRUPT_10).input_ids) == 10

    def plain_10():
        with s.lock, torch.inference_mode():
            s.model(input_ids=ids_10, use_cache=False, logits_to_keep=1)

    plain_wall, plain_cpu = statistics.median(_times(plain_10)[0] for _ in range(5)), statistics.median(
        _times(plain_10)[1] for _ in range(5))
    for site in ("resid_pre", "mlp_out"):
        s.cache.clear()
        steps = []
        wall, cpu = _times(lambda: patch_sweep(s, CLEAN_10, CORRUPT_10, site=site, deadline=Deadline(None),
                                               progress=lambda f, text: steps.append(f)))
        cells = s.facts.num_layers * 10
        results.append(check(f"patching grid {site}, 10 tokens x {s.facts.num_layers} layers: wall s", wall, "s"))
        results.append(check(f"patching grid {site}: CPU s", cpu, "s"))
        results.append(check(f"patching grid {site} / one plain 10-token pass, CPU time ({cells} cells)",
                             cpu / plain_cpu, "ratio"))
        results.append(check(f"patching grid {site}: progress updates", len(steps), "count", 10, ">="))
        cached_wall, _ = _times(lambda: patch_sweep(s, CLEAN_10, CORRUPT_10, site=site))
        results.append(check(f"patching grid {site} again (cached): wall ms", cached_wall * 1e3, "ms", 50))
    results.append(check("plain 10-token pass: wall ms", plain_wall * 1e3, "ms"))

    # The head sweep: every head and block of every layer, one at a time (12-token prompt).
    s.cache.clear()
    clean_run(s, PROMPT_12)
    wall, cpu = _times(lambda: head_sweep(s, PROMPT_12, mode="zero", deadline=Deadline(None)))
    results.append(check(f"head sweep, 12 tokens, {s.facts.num_layers} layers x (9 heads + 2 blocks): wall s", wall, "s"))
    results.append(check("head sweep: CPU s", cpu, "s"))
    return results
