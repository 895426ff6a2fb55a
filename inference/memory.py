"""How much memory a run takes: the peak while a block of code runs, and what the weights hold.

CPU: the process's resident set (RSS: weights, Python, every tensor), read from the kernel's high-water mark.
GPU: `torch.cuda.max_memory_allocated` (tensors only).
"""

from __future__ import annotations

import threading

import torch

from .model.run import sync


def _malloc_trim() -> None:
    """Return freed heap memory to the system (glibc only; elsewhere nothing happens)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak resident memory (VmHWM; Linux >= 4.0). False where
    that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int | None:
    """The kernel's peak resident memory of this process since the last reset (VmHWM), in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory while the block runs.

    GPU: `torch.cuda.max_memory_allocated` (tensors only), after resetting the peak. CPU: the process's peak
    resident set (RSS: weights, Python, every tensor), read from the kernel's high-water mark (VmHWM) after
    resetting it, so nothing polls while the model runs. Where the kernel offers no reset, a thread samples
    the RSS every `interval` seconds instead (a shorter spike can be missed: a lower bound).
    trim=True first hands memory freed by earlier passes back to the system (glibc `malloc_trim`): otherwise a
    pass reuses it and its increase reads as almost nothing. The sweep trims; a timeline does not, as the
    pages handed back must be faulted in again by the next pass, which would slow what it times.
    """

    def __init__(self, device, interval: float = 0.003, trim: bool = False):
        self.device = torch.device(device)
        self.interval = interval
        self.trim = trim
        self.kind = "cuda_allocated" if self.device.type == "cuda" else "rss"
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_peak = False

    @staticmethod
    def rss() -> int:
        import psutil

        return psutil.Process().memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self.rss())

    def __enter__(self) -> "PeakMemory":
        if self.kind == "cuda_allocated":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = self.peak_bytes = torch.cuda.memory_allocated(self.device)
            return self
        if self.trim:
            _malloc_trim()
        self._kernel_peak = _reset_peak_rss() and _peak_rss() is not None
        self.baseline_bytes = self.peak_bytes = self.rss()
        if not self._kernel_peak:
            self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda_allocated":
            sync(self.device)
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        kernel = _peak_rss() if self._kernel_peak else None
        self.peak_bytes = max(self.peak_bytes, self.rss(), kernel or 0)

    @property
    def method(self) -> str:
        if self.kind == "cuda_allocated":
            return "torch.cuda.max_memory_allocated"
        return "kernel peak RSS (VmHWM)" if self._kernel_peak else f"RSS sampled every {self.interval * 1e3:g} ms"

    def to_dict(self) -> dict:
        """The reading as the timeline and the sweep keep it: kind, method, baseline, peak, increase (bytes)."""
        return {"kind": self.kind, "method": self.method, "baseline_bytes": self.baseline_bytes,
                "peak_bytes": self.peak_bytes, "increase_bytes": max(0, self.peak_bytes - self.baseline_bytes),
                "trimmed": self.trim}


def weights_bytes(session) -> int:
    """Bytes of the model's parameters (tied embeddings counted once)."""
    def compute() -> int:
        seen, total = set(), 0
        for p in session.model.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
        return total

    return session.analysis("prefill_weights_bytes", (), compute)


__all__ = ["PeakMemory", "weights_bytes"]
