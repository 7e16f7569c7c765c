"""Scaling runs: throughput, memory and streaming latency as sequence length grows, up to the
memory frontier.

A ``kind: scale`` suite (:class:`seqbench.config.spec.ScaleSpec`) expands into two kinds of jobs,
each
run in its own fresh worker like every seqbench job:

``scale``   one model at one length: the training step (forward + backward + optimizer) and the
            forward-only pass, each warmed up until its time settles (the first call kept
            apart) and timed with adaptive repeats; peak memory of the measured phase; the
            analytic FLOPs of the step and the achieved fraction of the device's peak.
``stream``  one model at one context position: the prompt is processed in one call
            (``prefill``), then the latency of one more token (``step``) is timed, and the bytes
            of the recurrent state or KV cache are counted next to the measured memory.

The batch policy is explicit: ``fixed-batch`` (the same batch at every length) or
``fixed-tokens`` (batch x length constant, as in flash-attention's benchmarks).

The frontier. :class:`FrontierExecutor` wraps any executor and runs a suite's jobs one at a
time in sweep order. Once a model's sweep hits a stop condition (``oom``, ``timeout``, ``slow``:
a training step slower than ``scale.max_step_s``, a stream's prefill slower than
``scale.max_prefill_s``; optionally ``error``/``diverged``), its longer
lengths become ``skipped`` rows without starting a worker (``scale.after_stop: skip``) or run
anyway (``run``). On CPU a per-worker memory cap (``scale.mem_cap_gib``; see
:func:`seqbench.worker.measure.apply_mem_cap`) makes allocations past it fail, so the frontier
exists
on CPU as on a GPU; a worker the kernel's OOM killer ends is an ``oom`` row too (the
executor's classification).
Decisions read the rows already stored, so a resumed run skips the same lengths.

FLOPs (``Backbone.forward_flops``, matmuls only, a multiply-add = 2 FLOPs; formulas in each
model's module docstring): a training step counts 3 x the forward pass (the backward pass does
two matmuls for each forward one: gradients for inputs and for weights), the convention of
Kaplan et al. (2020) and nanoGPT's MFU; the optimizer's O(parameters) work is left out. The peak
is measured once per device, dtype and thread count by a matmul probe (best of repeated
``torch.mm`` calls) with a copy-bandwidth probe beside it, and cached in
``~/.cache/seqbench/device_peaks.json`` (``$SEQBENCH_CACHE_DIR`` to move it).

Complexity fit: :func:`complexity` fits log(time) and log(memory) against log(length) for every
model's curve, over all points, over the longest three, and over the increments from one length
to the next (which removes a curve's fixed part, e.g. the weights in peak memory), and keeps the
points used; ``seqbench scale`` writes it to ``complexity.json`` next to the rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqbench.config.spec import canonical_json, job_id
from seqbench.errors import BackendUnavailable
from seqbench.execution.local import Executor, OnRow
from seqbench.worker.measure import CudaMemory, is_cuda, repeat, timed, timing_method

TRAIN_FLOPS_PER_FWD = 3  # forward + backward (2x forward): Kaplan et al. 2020, nanoGPT MFU
TAIL_POINTS = 3  # the longest lengths, for the asymptotic slope
CACHE_ENV = "SEQBENCH_CACHE_DIR"
PEAKS_FILE = "device_peaks.json"


# --- batch policy and measurement knobs ----------------------------------------------------

def job_batch(job: dict[str, Any], input_len: int) -> int:
    """Sequences per batch of a scale or stream job under its batch policy."""
    scale = job["scale"]
    if scale["batch_policy"] == "fixed-tokens":
        return max(1, scale["tokens_per_batch"] // input_len)
    return scale["batch_size"]


def repeat_kwargs(job: dict[str, Any]) -> dict[str, Any]:
    scale = job["scale"]
    return {"warmup": scale["warmup_steps"], "max_warmup": scale["max_warmup_steps"],
            "min_repeats": scale["min_repeats"], "max_repeats": scale["max_repeats"],
            "budget_s": scale["budget_s"], "iqr_tolerance": job["measure"]["iqr_tolerance"]}


def compute_dtype(job: dict[str, Any], device: torch.device) -> torch.dtype:
    """The dtype the matmuls run in: the autocast dtype when autocast is on, else the params'."""
    from seqbench.worker.job import DTYPES
    from seqbench.worker.train import autocast_dtype

    return autocast_dtype(job["train"], device) or DTYPES[job["dtype"]]


# --- device peaks ----------------------------------------------------------------------------

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


def flop_fields(model: torch.nn.Module, batch: int, input_len: int) -> dict[str, Any]:
    try:
        fwd = float(model.forward_flops(batch, input_len))
    except NotImplementedError as exc:
        return {"flops_method": f"none: {exc}"}
    return {"flops_per_fwd": fwd, "flops_per_train_step": TRAIN_FLOPS_PER_FWD * fwd,
            "flops_method": f"Backbone.forward_flops (matmuls); train = "
                            f"{TRAIN_FLOPS_PER_FWD} x forward"}


def achieved(row: dict[str, Any], flops_key: str, time_key: str, prefix: str) -> dict[str, Any]:
    """``<prefix>_flops_per_s`` and utilisation from a FLOP count and a median time."""
    flops, seconds = row.get(flops_key), row.get(time_key)
    if not flops or not seconds or not math.isfinite(seconds):
        return {}
    per_s = flops / seconds
    util_key = "flops_utilization" if prefix == "train" else f"{prefix}_flops_utilization"
    out = {f"{prefix}_flops_per_s": per_s}
    if row.get("peak_flops_per_s"):
        out[util_key] = per_s / row["peak_flops_per_s"]
    return out


# --- the worker side: one length or one context position ----------------------------------

def _common(job: dict[str, Any], row: dict[str, Any], device: torch.device, model, info,
            batch: int) -> None:
    from seqbench.worker.models import count_params
    from seqbench.worker.train import autocast_dtype

    amp = autocast_dtype(job["train"], device)
    row.update({
        "param_count": count_params(model),
        "d_model": model.cfg.d_model,
        "input_len": info.input_len,
        "batch_size": batch,
        "batch_policy": job["scale"]["batch_policy"],
        "mem_cap_bytes": int(job.get("mem_cap_bytes") or 0),
        "autocast": str(amp).replace("torch.", "") if amp else "",
        "attn_dropout": getattr(model.blocks[0].mixer.config, "attn_dropout", None),
        "timing_method": timing_method(device),
    })


def run_scale(job: dict[str, Any], row: dict[str, Any], device: torch.device) -> None:
    """Time the training step and the forward pass of one model at one length."""
    from seqbench.worker.job import build
    from seqbench.worker.train import autocast, autocast_dtype, make_optimizer

    task, model = build(job, device)
    info, train_cfg = task.info, job["train"]
    batch = job_batch(job, info.input_len)
    _common(job, row, device, model, info, batch)
    row.update(flop_fields(model, batch, info.input_len))
    row.update(peak_fields(device, compute_dtype(job, device)))
    amp = autocast_dtype(train_cfg, device)
    tokens = batch * info.input_len
    x, y = next(task.train_batches(job["seed"], batch, device))  # one batch, reused: model cost
    optimizer = make_optimizer(model, train_cfg)
    losses: list[torch.Tensor] = []
    model.train()

    def train_step() -> None:
        with autocast(device, amp):
            loss = task.loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg["clip"])
        optimizer.step()
        losses.append(loss.detach())

    with CudaMemory(device) as memory:
        steps = repeat(train_step, device, **repeat_kwargs(job))
        row.update(memory.fields())
    row["kernel_path"] = model.kernel_path
    row.update(steps.fields("train", tokens))
    row["train_first_step_s"] = steps.first_s
    row["train_steps"] = len(losses)
    warmups, timed_total = {"train": len(steps.warmup_s)}, steps.total_s
    row.update(achieved(row, "flops_per_train_step", "train_step_s_median", "train"))
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    row["train_final_loss"] = float(losses[-1])
    if job["scale"]["forward"]:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        model.eval()

        def forward() -> Any:
            with torch.inference_mode(), autocast(device, amp):
                return model(x)

        with CudaMemory(device) as memory:
            fwd = repeat(forward, device, **repeat_kwargs(job))
            if is_cuda(device):
                row["fwd_peak_mem_bytes"] = memory.fields()["peak_mem_bytes"]
        row.update(fwd.fields("fwd", tokens))
        row["fwd_first_call_s"] = fwd.first_s
        warmups["fwd"] = len(fwd.warmup_s)
        timed_total += fwd.total_s
        row.update(achieved(row, "flops_per_fwd", "fwd_step_s_median", "fwd"))
    row.update(warmup_calls=warmups, timed_s=timed_total)
    if not finite:
        row.update(status="diverged", error="non-finite training loss while timing")
        return
    row["status"] = "ok"


def run_stream(job: dict[str, Any], row: dict[str, Any], device: torch.device) -> None:
    """Streaming inference at one context position: prefill the prompt, time one more token."""
    from seqbench.worker.job import build
    from seqbench.worker.models import mixer_class
    from seqbench.worker.models.base import state_nbytes
    from seqbench.worker.train import autocast, autocast_dtype

    name = job["model"]["name"]
    if not mixer_class(name).supports_step:
        raise BackendUnavailable(f"{name} has no recurrent step mode (init_state/step)")
    task, model = build(job, device)
    info = task.info
    batch = job_batch(job, info.input_len)
    _common(job, row, device, model, info, batch)
    amp = autocast_dtype(job["train"], device)
    context = info.input_len
    x, _ = next(task.train_batches(job["seed"], batch, device))  # (B, P) tokens or (B, P, C)
    x_t = x[:, -1]  # the next token's input; its value does not change the cost
    model.eval()
    row["context_len"] = context
    with torch.inference_mode(), autocast(device, amp):
        prefill_s, (_, state) = timed(lambda: model.prefill(x), device)
        row["prefill_s"] = prefill_s
        row["state_bytes"] = state_nbytes(state)
        element = model.head.weight.element_size()
        with contextlib.suppress(NotImplementedError):
            row["state_bytes_analytic"] = model.state_size(context, batch, element)
        with CudaMemory(device) as memory:  # the decode phase only, after the prefill
            # the same state every call: each timed step sees exactly `context` tokens
            steps = repeat(lambda: model.step(x_t, state), device, **repeat_kwargs(job))
            row.update(memory.fields())
    row["kernel_path"] = model.kernel_path
    row.update(steps.fields("stream", batch))
    row["stream_first_call_s"] = steps.first_s
    row.update(warmup_calls={"stream": len(steps.warmup_s)}, timed_s=prefill_s + steps.total_s)
    row["status"] = "ok"


# --- the driver side: the frontier ---------------------------------------------------------

@dataclass(frozen=True)
class StopPolicy:
    """When a model's length sweep stops, and what its longer lengths get."""

    stop_on: tuple[str, ...] = ("oom", "timeout", "slow")
    after_stop: str = "skip"  # "skip": `skipped` rows without a worker; "run": run them anyway
    max_step_s: float = 30.0  # "slow": the next length's median training step above this
    max_prefill_s: float = 120.0  # "slow" for streams: the next position's prefill above this

    @classmethod
    def from_suite(cls, suite: Any) -> StopPolicy:
        from seqbench.config.spec import ScaleSpec

        scale = suite.scale or ScaleSpec()
        return cls(tuple(scale.stop_on), scale.after_stop, scale.max_step_s,
                   scale.max_prefill_s)

    def describe(self) -> str:
        return (f"after {'|'.join(self.stop_on)} (slow: a training step > "
                f"{self.max_step_s:g} s, a prefill > {self.max_prefill_s:g} s), "
                f"longer lengths: {'skipped' if self.after_stop == 'skip' else 'run anyway'}")

    def reason(self, row: dict[str, Any]) -> str | None:
        """Why the sweep stops after ``row``, or None.

        "slow": the median training step (a stream's prefill) took longer than ``max_step_s``
        (``max_prefill_s``). The length that crossed it is measured in full and is the last
        one; its cost is bounded by the job timeout. (Predicting the next length from the
        growth so far saves that length, but the prediction also stops a model before the
        memory frontier it would have hit at once: naive attention's step grows 4-7x per
        doubling while its first allocation at the next length already fails.)
        """
        status = row.get("status")
        if status in self.stop_on:
            return f"{status} at length {row.get('seq_len')}"
        if "slow" in self.stop_on and status == "ok":
            scale = row.get("kind") == "scale"
            key = "train_step_s_median" if scale else "prefill_s"
            limit, limit_name = ((self.max_step_s, "max_step_s") if scale
                                 else (self.max_prefill_s, "max_prefill_s"))
            seconds = row.get(key)
            if seconds is not None and seconds > limit:
                return (f"slow at length {row.get('seq_len')}: {key} {seconds:.3g} s > "
                        f"{limit_name} {limit:g} s")
        return None


def curve_key(job: dict[str, Any]) -> str:
    """One model's sweep: everything about a job except its length."""
    task = {k: v for k, v in job["task"].items() if k != "seq_len"}
    return canonical_json({**{k: v for k, v in job.items() if k not in ("task", "timeout_s")},
                           "task": task})


def skipped_row(job: dict[str, Any], context: dict[str, Any], reason: str,
                policy: StopPolicy) -> dict[str, Any]:
    """The row of a length past the frontier: recorded, never run."""
    from seqbench.worker.job import base_row
    from seqbench.worker.provenance import runtime_provenance

    row = base_row(job, context)
    row.update(runtime_provenance(job.get("device", "cpu")))
    row.update(status="skipped", error=f"skipped: the sweep stopped ({reason})",
               stop_policy=policy.describe(), wall_s=0.0, worker_wall_s=0.0,
               batch_policy=job["scale"]["batch_policy"],
               batch_size=job_batch(job, row["input_len"]),
               mem_cap_bytes=int(job.get("mem_cap_bytes") or 0))
    return row


class FrontierExecutor:
    """Run a scale suite's jobs one at a time, in sweep order, stopping each model's sweep at
    its frontier. ``recorded`` maps job ids to rows already stored (resume): those jobs are not
    run again, but their statuses decide the frontier as if they had just run. A recorded
    ``skipped`` row is re-decided under the current policy."""

    name = "frontier"

    def __init__(self, inner: Executor, policy: StopPolicy,
                 recorded: dict[str, dict[str, Any]] | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.recorded = recorded or {}

    def run(self, jobs: Iterable[dict[str, Any]], context: dict[str, Any], on_row: OnRow) -> None:
        stopped: dict[str, str] = {}  # curve -> why its sweep stopped
        baseline = getattr(self.inner, "baseline_rss", None)
        if baseline is not None:  # measured once, now, so no job's worker_wall_s includes it
            baseline()

        def decide(curve: str, row: dict[str, Any]) -> None:
            reason = self.policy.reason(row)
            if reason and curve not in stopped:
                stopped[curve] = reason

        for job in jobs:
            curve = curve_key(job)
            prior = self.recorded.get(job_id(job))
            if prior is not None and prior.get("status") != "skipped":
                decide(curve, prior)
                continue
            if curve in stopped and self.policy.after_stop == "skip":
                row = skipped_row(job, context, stopped[curve], self.policy)
                if prior is None or prior.get("error") != row["error"]:
                    on_row(row)
                continue
            row = self.run_one(job, context)
            decide(curve, row)
            on_row(row)

    def run_one(self, job: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        started = time.perf_counter()
        self.inner.run([job], context, rows.append)
        row = rows[0]
        row["worker_wall_s"] = time.perf_counter() - started
        row["stop_policy"] = self.policy.describe()
        return row


# --- complexity fit --------------------------------------------------------------------------

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
            curves.setdefault(curve_key(row["job"]), []).append(row)
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
