"""Measuring honestly: timed regions, adaptive repeats, peak memory.

Rules (docs/architecture.md describes where they apply):
- warm up before timing, and keep the first call's time apart instead of hiding it;
- time many repeats; report the median and 20th/80th percentiles; stop once IQR/median is
  below a tolerance or the time budget runs out;
- on CUDA, time each region with CUDA events after a synchronize (kernels are asynchronous),
  reset the peak memory counters right before the measured phase and read
  ``max_memory_allocated`` and ``max_memory_reserved`` after it, in bytes;
- on CPU, peak memory is the worker's peak RSS (``os.wait4`` rusage, in the executor) minus the
  peak RSS of an idle worker with the same imports; a per-worker cap (``RLIMIT_DATA``, set by
  the executor) makes allocations past it fail, so the out-of-memory frontier exists on CPU too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: torch.device | str) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def timing_method(device: torch.device | str) -> str:
    return "cuda-events after synchronize" if is_cuda(device) else "perf_counter"


@dataclass
class Samples:
    """Timed repeats of one region, in seconds; the first (warm-up) call is kept apart."""

    first_s: float = math.nan
    samples_s: list[float] = field(default_factory=list)
    warmup_s: list[float] = field(default_factory=list)  # every warm-up call, first included

    @property
    def total_s(self) -> float:
        """Seconds spent inside timed regions, warm-up included (for overhead accounting)."""
        return float(sum(self.warmup_s) + sum(self.samples_s))

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples_s)) if self.samples_s else math.nan

    def percentile_s(self, q: float) -> float:
        return float(np.percentile(self.samples_s, q)) if self.samples_s else math.nan

    def spread(self) -> float:
        """IQR / median: the stopping criterion of adaptive repeats."""
        if len(self.samples_s) < 2:
            return math.inf
        q25, q50, q75 = np.percentile(self.samples_s, [25, 50, 75])
        return float((q75 - q25) / q50) if q50 > 0 else math.inf

    def fields(self, prefix: str, tokens: int) -> dict[str, Any]:
        """Row fields: ``<prefix>_step_s_*`` and ``<prefix>_tokens_per_s*`` (tokens per step)."""
        med, p20, p80 = self.median_s, self.percentile_s(20), self.percentile_s(80)

        def per_s(s: float) -> float:
            return tokens / s if s and s > 0 and math.isfinite(s) else math.nan

        return {
            f"{prefix}_step_s_median": med,
            f"{prefix}_step_s_p20": p20,
            f"{prefix}_step_s_p80": p80,
            f"{prefix}_step_s_samples": list(self.samples_s),
            f"{prefix}_tokens_per_s": per_s(med),
            f"{prefix}_tokens_per_s_p20": per_s(p80),  # slow steps give the low percentile
            f"{prefix}_tokens_per_s_p80": per_s(p20),
        }


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """Run ``fn`` once and return (seconds, result).

    CUDA: synchronize first (nothing queued earlier is counted), record an event before and
    after ``fn``, wait for the second and read the GPU time between them (milliseconds -> s).
    CPU: ``perf_counter`` around the call.
    """
    if is_cuda(device):
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, out
    start_s = time.perf_counter()
    out = fn()
    return time.perf_counter() - start_s, out


def repeat(fn: Callable[[], Any], device: torch.device | str, *, warmup: int = 1,
           min_repeats: int = 5, max_repeats: int = 100, budget_s: float = 2.0,
           iqr_tolerance: float = 0.1, max_warmup: int | None = None,
           settle_tolerance: float = 0.1) -> Samples:
    """Adaptive repeats: warm-up calls (the first kept as ``first_s``), then timed calls until
    the spread is below ``iqr_tolerance`` (after ``min_repeats``), ``max_repeats`` is reached,
    or ``budget_s`` has been spent on timed calls.

    Warm-up makes at least ``warmup`` calls and, up to ``max_warmup``, continues while a call's
    time still differs from the previous one by more than ``settle_tolerance`` (relative): lazy
    initialisation, autotuning and allocator growth settle before anything is kept.
    """
    out = Samples()
    warmup = max(warmup, 1)
    max_warmup = warmup if max_warmup is None else max(max_warmup, warmup)
    while True:
        seconds, _ = timed(fn, device)
        out.warmup_s.append(seconds)
        n = len(out.warmup_s)
        if n >= max_warmup:
            break
        if n >= max(warmup, 2):
            prev = out.warmup_s[-2]
            if prev > 0 and abs(seconds - prev) / prev <= settle_tolerance:
                break
    out.first_s = out.warmup_s[0]
    spent = 0.0
    while len(out.samples_s) < max_repeats:
        seconds, _ = timed(fn, device)
        out.samples_s.append(seconds)
        spent += seconds
        if len(out.samples_s) >= min_repeats and (
            out.spread() < iqr_tolerance or spent >= budget_s
        ):
            break
    return out


class CudaMemory:
    """Peak CUDA allocator memory of a measured phase: reset before, read after."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def __enter__(self) -> CudaMemory:
        if is_cuda(self.device):
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def fields(self) -> dict[str, Any]:
        if not is_cuda(self.device):
            return {}
        torch.cuda.synchronize(self.device)
        return {
            "peak_mem_bytes": int(torch.cuda.max_memory_allocated(self.device)),
            "peak_mem_reserved_bytes": int(torch.cuda.max_memory_reserved(self.device)),
            "mem_method": "cuda.max_memory_allocated after reset_peak_memory_stats",
        }


