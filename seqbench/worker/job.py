"""Run one job and return its row. This code runs inside a fresh worker process.

Whatever happens becomes a row: a missing backend is ``unavailable``, an allocation failure
``oom``, a non-finite loss ``diverged`` (with the step), any other exception ``error`` with its
text. Only the executor, which sees the worker from outside, adds ``timeout`` and signals.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from typing import Any

import numpy as np
import torch

from seqbench.config.spec import config_hash, job_id
from seqbench.errors import BackendUnavailable, SeqbenchError
from seqbench.recording.provenance import utc_now
from seqbench.recording.schema import SCHEMA_VERSION
from seqbench.worker.measure import CPU_MEM_METHOD, CudaMemory, is_cuda, repeat, timing_method
from seqbench.worker.provenance import runtime_provenance

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if hasattr(torch.cuda, "OutOfMemoryError") and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    markers = ("out of memory", "can't allocate memory", "Cannot allocate memory")
    return isinstance(exc, RuntimeError) and any(m in text for m in markers)


def base_row(job: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Identity and provenance fields, known before the job does anything."""
    from seqbench.worker.data import TASKS

    task = job["task"]
    try:
        input_len = TASKS[task["name"]].load().input_len(task["seq_len"], task["params"])
    except Exception:  # the row must exist even if the task cannot be loaded
        input_len = task["seq_len"]
    return {
        "schema_version": SCHEMA_VERSION,
        "job_id": job_id(job),
        "config_hash": config_hash(job),
        "seed": job["seed"],
        "suite": context.get("suite", ""),
        "spec_hash": context.get("spec_hash", ""),
        "kind": job["kind"],
        "task": task["name"],
        "model": job["model"]["name"],
        "seq_len": task["seq_len"],
        "input_len": input_len,
        "batch_size": job.get("train", {}).get("batch_size", job.get("batch_size", 0)),
        "status": "error",
        "error": "",
        "job": job,
        "kernel_path": "",
        "wall_s": math.nan,
        "git_sha": context.get("git_sha", ""),
        "git_dirty": context.get("git_dirty", False),
        "dtype": job["dtype"],
        "autocast": "",
        "started_at": utc_now(),
    }


def error_row(row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """Classify an exception into a status and keep its text."""
    if isinstance(exc, BackendUnavailable):
        row["status"] = "unavailable"
    elif is_oom(exc):
        row["status"] = "oom"
    else:
        row["status"] = "error"
    text = f"{type(exc).__name__}: {exc}"
    if row["status"] == "error" and not isinstance(exc, SeqbenchError):
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        if frame:
            text += f" (at {os.path.basename(frame[0].filename)}:{frame[0].lineno})"
    row["error"] = text
    return row


def build(job: dict[str, Any], device: torch.device):
    """Task and model for a job; raises BackendUnavailable when the mixer cannot run here."""
    from seqbench.worker.data import build_task
    from seqbench.worker.models import build_model, mixer_class, split_params

    name, params = job["model"]["name"], job["model"]["params"]
    _, mixer_cfg, _ = split_params(name, params)
    reason = mixer_class(name).unavailable_reason(mixer_cfg, device)
    if reason:
        raise BackendUnavailable(reason)
    task = build_task(job["task"]["name"], job["task"]["seq_len"], job["task"]["params"])
    model = build_model(name, params, task.info.io).to(device=device, dtype=DTYPES[job["dtype"]])
    return task, model


def run_train(job: dict[str, Any], row: dict[str, Any], device: torch.device) -> None:
    """Train, evaluate and time one model on one task, filling ``row`` in place."""
    from seqbench.worker.models import count_params
    from seqbench.worker.train import Diverged, autocast, autocast_dtype, evaluate, train

    train_cfg, measure = job["train"], job["measure"]
    task, model = build(job, device)
    info = task.info
    amp = autocast_dtype(train_cfg, device)
    row.update({
        "param_count": count_params(model),
        "d_model": model.cfg.d_model,
        "input_len": info.input_len,
        "primary_metric": info.primary_metric,
        "autocast": str(amp).replace("torch.", "") if amp else "",
        "attn_dropout": getattr(model.blocks[0].mixer.config, "attn_dropout", None),
        "timing_method": timing_method(device),
    })
    for m in info.metrics:
        row[f"higher_is_better_{m.name}"] = m.higher_is_better
        row[f"metric_{m.name}"] = math.nan
    for name, value in info.baselines.items():
        row[f"baseline_{name}"] = value
    tokens = train_cfg["batch_size"] * info.input_len
    with CudaMemory(device) as memory:
        try:
            result = train(model, task, train_cfg, measure, device, job["seed"])
        except Diverged as exc:
            result = exc.result
            row.update(status="diverged", error=str(exc), diverged_step=exc.step)
        row["kernel_path"] = model.kernel_path  # the training kernel (dropout can change it)
        row.update(result.timing.fields("train", tokens))
        row["train_first_step_s"] = result.timing.first_s
        row["train_steps"] = result.steps
        row["train_final_loss"] = result.final_loss
        if row["status"] == "diverged":
            row.update(memory.fields())
            return
        metrics = evaluate(model, task, train_cfg, device, job["seed"])
        row.update({f"metric_{k}": v for k, v in metrics.items()})
        x, _ = next(task.train_batches(job["seed"] + 1, train_cfg["batch_size"], device))

        def forward() -> Any:
            with torch.inference_mode(), autocast(device, amp):
                return model(x)

        fwd = repeat(forward, device, warmup=1, min_repeats=measure["fwd_min_repeats"],
                     max_repeats=measure["fwd_max_repeats"], budget_s=measure["fwd_budget_s"],
                     iqr_tolerance=measure["iqr_tolerance"])
        row.update(fwd.fields("fwd", tokens))
        row["fwd_first_call_s"] = fwd.first_s
        row.update(memory.fields())
    if not all(math.isfinite(row[f"metric_{m.name}"]) for m in info.metrics):
        row.update(status="diverged", error="non-finite evaluation metric")
        return
    row["status"] = "ok"


def _scaling(name: str):
    """A runner of :mod:`seqbench.worker.scale`, imported when a job of its kind runs."""

    def run(job: dict[str, Any], row: dict[str, Any], device: torch.device) -> None:
        from seqbench.worker import scale as scaling

        getattr(scaling, name)(job, row, device)

    run.__name__ = name
    return run


# job kind -> function(job, row, device)
RUNNERS = {"train": run_train, "scale": _scaling("run_scale"), "stream": _scaling("run_stream")}


def run_job(job: dict[str, Any], context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``job`` in this process and return its row (never raises)."""
    start = time.perf_counter()
    context = context or {}
    row = base_row(job, context)
    try:
        measure = job.get("measure", {})
        if measure.get("threads"):
            torch.set_num_threads(measure["threads"])
        torch.backends.cudnn.benchmark = bool(measure.get("cudnn_benchmark", False))
        device = torch.device(job["device"])
        if is_cuda(device) and not torch.cuda.is_available():
            raise BackendUnavailable("device cuda requested but torch.cuda.is_available() is False")
        row.update(runtime_provenance(job["device"]))
        seed_everything(job["seed"])
        RUNNERS[job["kind"]](job, row, device)
    except Exception as exc:
        error_row(row, exc)
    if "mem_method" not in row and not is_cuda(job.get("device", "cpu")):
        row["mem_method"] = CPU_MEM_METHOD  # the executor fills in the bytes from rusage
    row["wall_s"] = time.perf_counter() - start
    return row
