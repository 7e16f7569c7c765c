"""What every kind of job builds first: the task and the model, and the row fields that
describe them (shared by training, scale and stream jobs)."""

from __future__ import annotations

import torch

from seqbench.config.job import Job
from seqbench.errors import BackendUnavailable
from seqbench.recording.schema import Row
from seqbench.worker.data.base import Task, TaskInfo
from seqbench.worker.measure import timing_method
from seqbench.worker.models.base import Backbone

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build(job: Job, device: torch.device) -> tuple[Task, Backbone]:
    """Task and model for a job; raises BackendUnavailable when the mixer cannot run here."""
    from seqbench.worker.data import build_task
    from seqbench.worker.models import build_model, mixer_class, split_params

    name, params = job.model.name, job.model.params
    _, mixer_cfg, _ = split_params(name, params)
    reason = mixer_class(name).unavailable_reason(mixer_cfg, device)
    if reason:
        raise BackendUnavailable(reason)
    task = build_task(job.task.name, job.task.seq_len, job.task.params)
    model = build_model(name, params, task.info.io).to(device=device, dtype=DTYPES[job.dtype])
    return task, model


def autocast_name(amp: torch.dtype | None) -> str:
    return str(amp).replace("torch.", "") if amp else ""


def describe(row: Row, model: Backbone, info: TaskInfo, device: torch.device,
             amp: torch.dtype | None) -> None:
    """The fields every row of a built model has: its size, input, autocast, timing method and
    what its mixer reports about itself."""
    from seqbench.worker.models import count_params

    row.update(param_count=count_params(model), d_model=model.cfg.d_model,
               input_len=info.input_len, autocast=autocast_name(amp),
               timing_method=timing_method(device), **model.row_fields())
