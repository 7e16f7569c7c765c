"""The device's measured peaks: matmul FLOP/s and copy bandwidth, against which a scaling
run's achieved FLOP/s is reported as utilisation.

The peak is measured once per device, dtype, thread count and torch version by a matmul probe
(best of repeated ``torch.mm`` calls) with a copy-bandwidth probe beside it, and cached in
``~/.cache/seqbench/device_peaks.json`` (``$SEQBENCH_CACHE_DIR`` to move it). ``seqbench scale``
measures it in a worker before the sweep, so no job's memory cap or wall time includes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import torch

from seqbench.worker.measure import is_cuda, repeat

CACHE_ENV = "SEQBENCH_CACHE_DIR"
PEAKS_FILE = "device_peaks.json"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "seqbench")


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    from seqbench.worker.provenance import device_name

    return (f"{device.type}:{device_name(str(device))}|{str(dtype).replace('torch.', '')}"
            f"|threads={torch.get_num_threads()}|torch={torch.__version__}")


def probe_matmul_flops(device: torch.device, dtype: torch.dtype, n: int | None = None,
                       budget_s: float = 1.0) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` matmul (2 n^3 FLOPs): the device's peak."""
    n = n or (8192 if is_cuda(device) else 2048)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    s = repeat(lambda: torch.mm(a, b, out=c), device, warmup=2, min_repeats=5, max_repeats=50,
               budget_s=budget_s, iqr_tolerance=0.0)
    return 2.0 * n**3 / min(s.samples_s)


def probe_copy_bytes(device: torch.device, nbytes: int = 256 * 2**20,
                     budget_s: float = 1.0) -> float:
    """Best bytes/s of copying a large buffer, counting the bytes read and the bytes written."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    s = repeat(lambda: dst.copy_(src), device, warmup=2, min_repeats=5, max_repeats=50,
               budget_s=budget_s, iqr_tolerance=0.0)
    return 2.0 * nbytes / min(s.samples_s)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def device_peak(device: torch.device, dtype: torch.dtype, *, refresh: bool = False
                ) -> dict[str, Any]:
    """The device's matmul peak (FLOP/s) and copy bandwidth (bytes/s), measured once per
    (device, dtype, threads, torch version) and cached as JSON.

    ``refresh`` probes again and keeps the higher of the old and new values: other load on the
    machine can only make a probe slower, so the best ever seen is the better peak.
    """
    from seqbench.recording.store import write_json_atomic

    path = cache_dir() / PEAKS_FILE
    key = peak_key(device, dtype)
    old = _read_cache(path).get(key)
    if old is not None and not refresh:
        return old
    entry = {
        "peak_flops_per_s": probe_matmul_flops(device, dtype),
        "peak_bytes_per_s": probe_copy_bytes(device),
        "method": "best of repeated torch.mm (2 n^3 FLOPs, n=8192 CUDA, 2048 CPU); best copy_ "
                  "of 256 MiB (bytes read + written)",
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "probes": 1,
    }
    if old is not None:
        for field in ("peak_flops_per_s", "peak_bytes_per_s"):
            entry[field] = max(entry[field], old[field])
        entry["probes"] = old.get("probes", 1) + 1
    cache = _read_cache(path)  # re-read: another process may have written meanwhile
    cache[key] = entry
    with contextlib.suppress(OSError):  # an unwritable cache costs a re-measurement, not a row
        write_json_atomic(path, cache)
    return entry


def peak_fields(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    try:
        peak = device_peak(device, dtype)
    except (RuntimeError, MemoryError) as exc:  # e.g. the probe does not fit a tiny memory cap
        return {"peak_probe": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
    return {"peak_flops_per_s": peak["peak_flops_per_s"],
            "peak_bytes_per_s": peak["peak_bytes_per_s"],
            "peak_probe": f"{peak['method']}; {peak['measured_at']}; {peak_key(device, dtype)}"}


