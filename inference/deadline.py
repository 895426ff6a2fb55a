"""A request's time budget for model work.

A forward pass that has started cannot be interrupted (torch offers no safe way), so the long loops
(generation, beam search, the context sweep) check the deadline between passes and stop there, keeping
what they computed and saying why. A request overruns its budget by at most one pass.
"""

from __future__ import annotations

import time

from .limits import REQUEST_SECONDS


class Deadline:
    def __init__(self, seconds: float | None = REQUEST_SECONDS):
        """`seconds` from now; None means no limit (benchmarks, notebooks that opt out)."""
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + float(seconds)

    @property
    def expired(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def __repr__(self) -> str:
        return f"Deadline({self.seconds})"
