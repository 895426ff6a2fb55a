"""What prefill and decode cost: the names the Prefill & decode tab, the tests and notebooks import.

The work lives in one module per idea:

    timing     timeline (one generation timed pass by pass), compare_cache (KV cache on vs off)
    memory     PeakMemory (peak RSS / GPU memory while a block runs), weights_bytes
    profiler   PassProfiler (attention scores, projections, MLP inside a pass), prefill_flops
    sweep      context_sweep (prompts of growing length), fit_growth, sweep_findings (what the numbers support)
    batch      batch_throughput (a batch of prompts vs one at a time), batched_greedy
    model.kv   KVShape, kv_shape, cache_layer_bytes (the KV-cache formula and the bytes the tensors hold)
"""

from __future__ import annotations

from .batch import BatchComparison, BatchRun, batch_throughput, batched_greedy
from .memory import PeakMemory, weights_bytes
from .model.kv import KVShape, cache_layer_bytes, kv_shape
from .profiler import PassProfiler, prefill_flops
from .sweep import (
    Fit,
    Sweep,
    SweepFindings,
    SweepPoint,
    context_sweep,
    fit_growth,
    prompt_of_length,
    sweep_findings,
    sweep_lengths,
)
from .timing import CacheComparison, Metrics, StepTiming, Timeline, compare_cache, timeline

__all__ = [
    "BatchComparison", "BatchRun", "CacheComparison", "Fit", "KVShape", "Metrics", "PassProfiler", "PeakMemory",
    "StepTiming", "Sweep", "SweepFindings", "SweepPoint", "Timeline", "batch_throughput", "batched_greedy",
    "cache_layer_bytes", "compare_cache", "context_sweep", "fit_growth", "kv_shape", "prefill_flops",
    "prompt_of_length", "sweep_findings", "sweep_lengths", "timeline", "weights_bytes",
]
