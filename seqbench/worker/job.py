"""Run one job and return its row. This code runs inside a fresh worker process.

Whatever happens becomes a row: a missing backend is ``unavailable``, an allocation failure
``oom``, a non-finite loss ``diverged`` (with the step), a model torch.compile cannot compile
``error`` saying so, any other exception ``error`` with its text. Only the executor, which sees
the worker from outside, adds ``timeout``, signals and ``interrupted``. An evaluation setting
that fails after training is recorded in its own entry of ``evals``; the row stays ``ok``.
"""

from __future__ import annotations

import math
import os
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from seqbench.config.job import Job
from seqbench.errors import BackendUnavailable, SeqbenchError
from seqbench.recording.rows import CPU_MEM_METHOD, RunContext, new_row
from seqbench.recording.schema import Row
from seqbench.worker import kernels_seen, scale
from seqbench.worker.build import build, describe
from seqbench.worker.data.base import Task
from seqbench.worker.measure import CudaMemory, is_cuda, repeat
from seqbench.worker.provenance import runtime_provenance


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


def error_fields(exc: BaseException) -> dict[str, Any]:
    """Classify an exception into a status and keep its text (and where a bug raised it)."""
    from seqbench.worker.build import is_compile_error

    if isinstance(exc, BackendUnavailable):
        status = "unavailable"
    elif is_oom(exc):
        status = "oom"
    else:
        status = "error"
    text = f"{type(exc).__name__}: {exc}"
    if status == "error" and is_compile_error(exc):
        text = f"torch.compile failed: {text}"
    if status == "error" and not isinstance(exc, SeqbenchError):
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        if frame:
            text += f" (at {os.path.basename(frame[0].filename)}:{frame[0].lineno})"
    return {"status": status, "error": text}


class TaskCache:
    """The job's task at other lengths and params, each built once (variable training
    lengths; evaluation settings build theirs one at a time, see :func:`run_evals`)."""

    def __init__(self, job: Job, task: Task) -> None:
        self.name, self.params = job.task.name, job.task.params
        self.built: dict[int, Task] = {task.seq_len: task}

    def at(self, seq_len: int) -> Task:
        from seqbench.worker.data import build_task

        if seq_len not in self.built:
            self.built[seq_len] = build_task(self.name, seq_len, self.params)
        return self.built[seq_len]


def run_evals(job: Job, model: torch.nn.Module, task: Task, device: torch.device
              ) -> list[dict[str, Any]]:
    """The trained model at each of the job's evaluation settings, one entry each. A setting
    that fails (out of memory, an exception, a non-finite metric) gets its status and error;
    the job goes on."""
    from seqbench.catalog import TASKS
    from seqbench.worker.data import build_task
    from seqbench.worker.train import evaluate

    cls = TASKS[job.task.name].load()
    out = []
    for setting in job.evals:
        params = {**job.task.params, **setting.params}
        entry: dict[str, Any] = {"seq_len": setting.seq_len, "params": dict(setting.params),
                                 "input_len": int(cls.input_len(setting.seq_len, params)),
                                 "status": "ok", "error": ""}
        start = time.perf_counter()
        try:
            other = build_task(job.task.name, setting.seq_len, params)
            if other.info.io != task.info.io:
                raise SeqbenchError(f"the task there has another model input/output "
                                    f"({other.info.io}) than the trained one ({task.info.io})")
            result = evaluate(model, other, job.train, device, job.seed,
                              split=job.train.eval_split)
            entry.update(input_len=other.info.input_len, **result.fields(),
                         **{f"baseline_{k}": v for k, v in other.info.baselines.items()})
            if result.slices:
                entry["slices"] = result.slices
            if not all(math.isfinite(v) for v in result.metrics.values()):
                entry.update(status="diverged", error="non-finite evaluation metric")
        except Exception as exc:
            entry.update(error_fields(exc))
            if is_cuda(device):
                torch.cuda.empty_cache()
        entry["eval_s"] = time.perf_counter() - start
        out.append(entry)
    return out


def run_train(job: Job, row: Row, device: torch.device) -> None:
    """Train, evaluate and time one model on one task, filling ``row`` in place."""
    from seqbench.worker.build import compile_seconds, is_compiled
    from seqbench.worker.train import Diverged, autocast, autocast_dtype, evaluate, train

    train_cfg, measure = job.train, job.measure
    task, model = build(job, device)
    info = task.info
    amp = autocast_dtype(train_cfg, device)
    describe(row, model, task, device, amp)
    row.update(primary_metric=info.primary_metric, eval_split=train_cfg.eval_split)
    if train_cfg.lengths is not None:
        row.update(train_lengths=train_cfg.lengths.model_dump())
    for m in info.metrics:
        row.update(**{f"higher_is_better_{m.name}": m.higher_is_better,
                      f"metric_{m.name}": math.nan})
    row.update(**{f"baseline_{name}": value for name, value in info.baselines.items()})
    tokens = train_cfg.batch_size * info.input_len
    compiled_before = (compile_seconds() or 0.0) if is_compiled(model) else None
    tasks = TaskCache(job, task)
    with CudaMemory(device) as memory:
        try:
            result = train(model, task, train_cfg, measure, device, job.seed, task_at=tasks.at)
        except Diverged as exc:
            result = exc.result
            row.update(status="diverged", error=str(exc), diverged_step=exc.step)
        row.update(kernel_path=model.kernel_path,  # the claim, until the probe below
                   train_first_step_s=result.timing.first_s, train_steps=result.steps,
                   train_final_loss=result.final_loss, stop_reason=result.stop_reason,
                   **result.timing_fields(None if train_cfg.lengths else tokens))
        if result.steps < train_cfg.steps:
            row.update(stopped_at_step=result.steps)
        if result.curve:
            row.update(curve=result.curve)
        if result.grad_profile:
            row.update(grad_profile=result.grad_profile)
        if row.status == "diverged":
            row.update(**memory.fields())
            probe, _ = task.timing_batch(job.seed + 1, train_cfg.batch_size, device)
            row.update(**kernels_seen.forward_row_fields(model, probe, device, amp))
            return
        metrics = evaluate(model, task, train_cfg, device, job.seed, split=train_cfg.eval_split)
        row.update(**metrics.fields())
        if metrics.slices:
            row.update(slices=metrics.slices)
        x, _ = task.timing_batch(job.seed + 1, train_cfg.batch_size, device)

        def forward() -> Any:
            with torch.inference_mode(), autocast(device, amp):
                return model(x)

        fwd = repeat(forward, device, warmup=1, min_repeats=measure.fwd_min_repeats,
                     max_repeats=measure.fwd_max_repeats, budget_s=measure.fwd_budget_s,
                     iqr_tolerance=measure.iqr_tolerance)
        row.update(fwd_first_call_s=fwd.first_s, **fwd.fields("fwd", tokens), **memory.fields())
    if job.evals:  # after the memory of training and timing was read
        row.update(evals=run_evals(job, model, task, device))
    if train_cfg.edge is not None:  # the edge track: the trained model streamed on the CPU
        from seqbench.worker.edge import run_edge

        row.update(edge=run_edge(job, model, task, error_fields))
    if compiled_before is not None:
        after = compile_seconds()
        if after is not None:
            row.update(compile_s=after - compiled_before)
    # which kernels ran, seen in one probe forward after every measurement
    row.update(**kernels_seen.forward_row_fields(model, x, device, amp))
    if not all(math.isfinite(row.get(f"metric_{m.name}", math.nan)) for m in info.metrics):
        row.update(status="diverged", error="non-finite evaluation metric")
        return
    row.status = "ok"


# job kind -> function(job, row, device)
RUNNERS: dict[str, Callable[[Job, Row, torch.device], None]] = {
    "train": run_train, "scale": scale.run_scale, "stream": scale.run_stream}


def run_job(job: Job, context: RunContext | None = None) -> Row:
    """Run ``job`` in this process and return its row (never raises)."""
    start = time.perf_counter()
    context = context or RunContext()
    row = new_row(job, context)
    try:
        if job.measure.threads:
            torch.set_num_threads(job.measure.threads)
        torch.backends.cudnn.benchmark = job.measure.cudnn_benchmark
        device = torch.device(job.device)
        if is_cuda(device) and not torch.cuda.is_available():
            raise BackendUnavailable("device cuda requested but torch.cuda.is_available() is False")
        row.update(**runtime_provenance(job.device))
        seed_everything(job.seed)
        RUNNERS[job.kind](job, row, device)
    except Exception as exc:
        row.update(**error_fields(exc))
    if row.mem_method is None and not is_cuda(job.device):
        row.mem_method = CPU_MEM_METHOD  # the executor fills in the bytes from rusage
    row.wall_s = time.perf_counter() - start
    return row
