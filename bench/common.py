"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass
from typing import Callable


# A 30-token prompt for the default model (SmolLM2).
TEXT_30 = ("Alice went to the market to buy apples, pears and bread. On the way back she met her friend Bob, "
           "who asked her what she had bought")


def text_of_tokens(session, tokens: int) -> str:
    """A prompt of exactly `tokens` tokens (one ' word' token each after the first)."""
    text = "word" + " word" * (tokens - 1)
    assert len(session.tokenizer(text).input_ids) == tokens
    return text


@dataclass
class Result:
    name: str  # what was measured, e.g. "generate vs model.generate (greedy, 32 tokens)"
    value: float
    unit: str  # "ratio", "s", "ms", "MB"
    target: str = ""  # e.g. "<= 1.10"; empty when there is no target
    ok: bool | None = None  # None: no target


def best_of(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds, after warm-up calls (first calls pay for allocation)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(ours: Callable[[], object], theirs: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Median times of two functions measured alternately, so drift in machine load hits both."""
    ours(), theirs()
    a, b = [], []
    for _ in range(repeat):
        start = time.perf_counter(); ours(); a.append(time.perf_counter() - start)
        start = time.perf_counter(); theirs(); b.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def check(name: str, value: float, unit: str, limit: float | None = None, op: str = "<=") -> Result:
    if limit is None:
        return Result(name, value, unit)
    ok = value <= limit if op == "<=" else value >= limit
    return Result(name, value, unit, f"{op} {limit:.3g}", ok)


def free_port() -> int:
    """A free loopback port, for an app a benchmark serves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
