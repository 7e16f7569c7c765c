"""Building rows: the one place that makes a :class:`~seqbench.recording.schema.Row`, for the
worker (a job that ran) and the driver (a job whose worker wrote nothing: timed out, killed,
interrupted; a length past a scaling frontier, never run).

Every row starts from :func:`new_row`: identity (job id, config hash, seed, suite), the job
itself, the code's provenance from the driver, and provenance of where it runs (the worker
replaces the host defaults with what it loaded: torch, CUDA, cuDNN, device, threads).
"""

from __future__ import annotations

import math
import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from seqbench.config.job import Job
from seqbench.recording.provenance import host_provenance, utc_now
from seqbench.recording.schema import SCHEMA_VERSION, Row, Status


class RunContext(BaseModel):
    """What the driver knows about the run and passes to every job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    suite: str = ""
    spec_hash: str = ""
    git_sha: str = ""
    git_dirty: bool = False
    overrides: tuple[str, ...] = ()

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def input_len_of(job: Job) -> int:
    """The model's input length for the job's task (the driver asks the task class)."""
    from seqbench.catalog import TASKS

    try:
        return int(TASKS[job.task.name].load().input_len(job.task.seq_len, job.task.params))
    except Exception:  # the row must exist even if the task cannot be loaded here
        return job.task.seq_len


def batch_of(job: Job, input_len: int) -> int:
    return job.scale.batch(input_len) if job.scale is not None else job.train.batch_size


def new_row(job: Job, context: RunContext, input_len: int | None = None,
            provenance: dict[str, Any] | None = None) -> Row:
    """Identity and provenance, known before the job does anything (status ``error`` until
    the job says otherwise). ``provenance`` overrides the host defaults (a worker's own)."""
    input_len = input_len_of(job) if input_len is None else input_len
    fields: dict[str, Any] = {
        **host_provenance(job.device),
        "threads": job.measure.threads or os.cpu_count() or 1,
        **(provenance or {}),
    }
    row = Row(
        schema_version=SCHEMA_VERSION, job_id=job.job_id, config_hash=job.config_hash,
        seed=job.seed, suite=context.suite, spec_hash=context.spec_hash, kind=job.kind,
        task=job.task.name, model=job.model.name, seq_len=job.task.seq_len,
        input_len=input_len, batch_size=batch_of(job, input_len), status="error", error="",
        job=job.dump(), kernel_path="", wall_s=math.nan, git_sha=context.git_sha,
        git_dirty=context.git_dirty, dtype=job.dtype, autocast="", started_at=utc_now(),
        **fields)
    if context.overrides:
        row.overrides = list(context.overrides)
    if job.mem_cap_bytes is not None:
        row.mem_cap_bytes = job.cap_bytes
    return row


CPU_MEM_METHOD = "peak RSS (wait4 rusage) minus idle-worker baseline"


def failed_row(job: Job, context: RunContext, status: Status, error: str, wall_s: float,
               signal_number: int | None = None,
               provenance: dict[str, Any] | None = None) -> Row:
    """The row of a job whose worker wrote none: it timed out, crashed, was killed or
    interrupted."""
    row = new_row(job, context, provenance=provenance)
    row.update(status=status, error=error, wall_s=wall_s)
    if signal_number is not None:
        row.signal = signal_number
    if job.device == "cpu":
        row.mem_method = CPU_MEM_METHOD
    return row


def skipped_row(job: Job, context: RunContext, reason: str, stop_policy: str) -> Row:
    """The row of a length past a scaling frontier: recorded, never run."""
    row = new_row(job, context)
    assert job.scale is not None
    return row.update(status="skipped", error=f"skipped: the sweep stopped ({reason})",
                      stop_policy=stop_policy, wall_s=0.0, worker_wall_s=0.0,
                      batch_policy=job.scale.batch_policy)


def invalid_row(row: Row, job: Job, context: RunContext, problems: list[str]) -> Row:
    """What is recorded instead of a row that fails the schema check (a seqbench bug): an
    ``error`` row that names the problems, so the sweep goes on and nothing is hidden."""
    out = new_row(job, context, provenance={k: row.get(k) for k in (
        "torch_version", "cuda_version", "cudnn_version", "device_name", "threads")
        if row.get(k) is not None})
    text = "; ".join(problems)
    return out.update(status="error", wall_s=row.wall_s if row.wall_s is not None else math.nan,
                      error=f"the worker's row failed the schema check: {text[:500]}")
