"""Complexity fits of scaling runs: how time and memory grow with sequence length.

:func:`complexity` fits log(time) and log(memory) against log(length) for every model's curve
(kind, task, model config, policy, device, dtype; seeds pooled by the median at each length),
over all points, over the longest :data:`TAIL_POINTS`, and over the increments from one length
to the next (which removes a curve's fixed part, e.g. the weights in peak memory), and keeps the
points used, with the frontier (the longest ``ok`` length and what stopped the sweep).
``seqbench scale`` writes them to ``complexity.json`` next to the rows; reports show them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from seqbench.config.job import curve_key_of

TAIL_POINTS = 3  # the longest lengths, for the asymptotic slope


@dataclass
class Fit:
    """log(value) = slope x log(length) + intercept, least squares over ``points``."""

    slope: float
    intercept: float
    r2: float
    points: list[tuple[int, float]]


def fit_loglog(lengths: Iterable[float], values: Iterable[float]) -> Fit | None:
    """The log-log slope of ``values`` against ``lengths`` (None with < 2 usable points)."""
    pts = sorted((int(L), float(v)) for L, v in zip(lengths, values, strict=True)
                 if L and L > 0 and v is not None and math.isfinite(v) and v > 0)
    if len({L for L, _ in pts}) < 2:
        return None
    x = np.log([L for L, _ in pts])
    y = np.log([v for _, v in pts])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return Fit(float(slope), float(intercept), r2, pts)


def fit_increments(lengths: list[int], values: list[float]) -> Fit | None:
    """The slope of what a curve *adds* from one length to the next.

    A measured curve is often ``a + c L^k``: a fixed part (weights, optimizer state, buffers,
    per-step overhead) plus the part that grows. A plain log-log fit bends toward 0 where ``a``
    dominates. For lengths in a geometric sequence (``L_{i+1} = r L_i``, as when doubling) the
    increments are ``c (r^k - 1) L_i^k``, so their log-log slope against ``L_i`` is ``k`` with the
    fixed part gone. Negative or zero increments (noise) are dropped; needs >= 3 lengths.
    """
    steps = [(L, nxt - v) for L, v, nxt in zip(lengths, values, values[1:], strict=False)]
    if len(steps) < 2:
        return None
    return fit_loglog([L for L, _ in steps], [d for _, d in steps])


CURVE_METRICS = {  # kind -> (length column, metrics fitted against it)
    "scale": ("input_len", ("train_step_s_median", "train_s_per_seq", "fwd_step_s_median",
                            "peak_mem_bytes", "fwd_peak_mem_bytes")),
    "stream": ("context_len", ("stream_step_s_median", "state_bytes", "peak_mem_bytes",
                               "prefill_s")),
}


def stopped_by(group: list[dict[str, Any]], failed: list[dict[str, Any]],
               length_key: str) -> str:
    """What ended a curve: the reason its skipped rows give, else a failure at its longest
    length ('' when it ran to max_len). A failure the policy went past is not the frontier."""
    skipped = next((r for r in group if r.get("status") == "skipped"), None)
    if skipped is not None:
        text = skipped.get("error", "")  # "skipped: the sweep stopped (slow at length 2048: ..)"
        reason = text[text.find("(") + 1: text.rfind(")")] if "(" in text else text
        return reason.split(":")[0]
    longest = max((r.get(length_key) or 0 for r in group), default=0)
    if failed and (failed[-1].get(length_key) or 0) >= longest:
        return f"{failed[-1]['status']} at {failed[-1].get(length_key)}"
    return ""


def complexity(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model curve (kind, task, model config, policy, device, dtype; seeds pooled by the
    median at each length): fitted log-log slopes of time and memory against length, over all
    ``ok`` points, over the longest :data:`TAIL_POINTS`, and of the increments between lengths
    (:func:`fit_increments`), each with its points, and the frontier (the longest ``ok`` length
    and what stopped the sweep)."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("kind") in CURVE_METRICS:
            curves.setdefault(curve_key_of(row["job"]), []).append(row)
    out = []
    for group in curves.values():
        kind = group[0]["kind"]
        length_key, metrics = CURVE_METRICS[kind]
        ok = [r for r in group if r.get("status") == "ok"]
        failed = sorted((r for r in group if r.get("status") not in ("ok", "skipped")),
                        key=lambda r: r["seq_len"])
        entry: dict[str, Any] = {
            "kind": kind, "task": group[0]["task"], "model": group[0]["model"],
            "model_params": (group[0].get("job") or {}).get("model", {}).get("params", {}),
            "batch_policy": group[0].get("batch_policy", ""),
            "device": group[0].get("device", ""), "dtype": group[0].get("dtype", ""),
            "lengths_ok": sorted({r[length_key] for r in ok if r.get(length_key)}),
            "frontier_len": max((r.get(length_key) or 0 for r in ok), default=None),
            "stopped_by": stopped_by(group, failed, length_key),
            "failures": [f"{r['status']} at {r.get(length_key)}" for r in failed],
            "fits": {},
        }
        for metric in metrics:
            by_len: dict[int, list[float]] = {}
            for r in ok:
                value = r.get(metric)
                if metric == "train_s_per_seq" and r.get("train_step_s_median"):
                    value = r["train_step_s_median"] / max(1, r.get("batch_size") or 1)
                if value is not None and r.get(length_key):
                    by_len.setdefault(int(r[length_key]), []).append(float(value))
            lengths = sorted(by_len)
            values = [float(np.median(by_len[L])) for L in lengths]
            every = fit_loglog(lengths, values)
            if every is None:
                continue
            tail = fit_loglog(lengths[-TAIL_POINTS:], values[-TAIL_POINTS:])
            increments = fit_increments(lengths, values)
            entry["fits"][metric] = {
                **asdict(every),
                "tail_slope": tail.slope if tail else None,
                "tail_points": tail.points if tail else [],
                "increment_slope": increments.slope if increments else None,
                "increment_points": increments.points if increments else []}
        out.append(entry)
    return out


def measurement_overhead(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of a job's time is the measured region: timed seconds over the worker's
    in-process wall time (model build, data, probes) and over the whole worker process as the
    driver saw it (interpreter start and imports included)."""
    ran = [r for r in rows if r.get("status") == "ok" and r.get("timed_s")
           and r.get("worker_wall_s")]
    if not ran:
        return {}
    timed = sum(r["timed_s"] for r in ran)
    return {
        "jobs": len(ran),
        "timed_s": timed,
        "worker_run_s": sum(r["wall_s"] for r in ran),
        "worker_process_s": sum(r["worker_wall_s"] for r in ran),
        "timed_fraction_of_run": timed / sum(r["wall_s"] for r in ran),
        "timed_fraction_of_process": timed / sum(r["worker_wall_s"] for r in ran),
        "median_process_overhead_s": _median([r["worker_wall_s"] - r["timed_s"] for r in ran]),
    }


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2 if n else math.nan
