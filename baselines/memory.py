"""Peak memory of one phase (unlearning), not of the whole process.

`ru_maxrss` only ever grows, so after loading and evaluating a patient it no longer says what training cost. A
background thread samples the resident set size instead; on CUDA the allocator's own peak is read as well.
"""
from __future__ import annotations

import threading

import psutil
import torch


class PeakMemory:
    """Context manager: `start_rss_mb`, `peak_rss_mb` (sampled every `interval` s) and `peak_cuda_mb`."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start_rss_mb = self.peak_rss_mb = 0.0
        self.peak_cuda_mb: float | None = None
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _rss_mb(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss_mb())

    def __enter__(self) -> "PeakMemory":
        self.start_rss_mb = self.peak_rss_mb = self._rss_mb()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, self._rss_mb())
        if torch.cuda.is_available():
            self.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20

    def report(self) -> dict[str, float]:
        out = {"rss_start_mb": round(self.start_rss_mb, 1), "peak_rss_mb": round(self.peak_rss_mb, 1),
               "peak_rss_increase_mb": round(self.peak_rss_mb - self.start_rss_mb, 1)}
        if self.peak_cuda_mb is not None:
            out["peak_cuda_mb"] = round(self.peak_cuda_mb, 1)
        return out
