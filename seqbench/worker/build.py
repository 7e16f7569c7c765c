"""What every kind of job builds first: the task and the model, and the row fields that
describe them (shared by training, scale and stream jobs).

``train.compile: true`` compiles the model in place with :meth:`torch.nn.Module.compile`
(``torch.compile`` of its forward, the same call for every architecture): parameter names,
optimizer groups and the streaming methods (``step``, ``prefill``, which stay eager) are those
of the eager model. Compilation happens lazily at the first call, so its time is inside
``train_first_step_s`` (and ``fwd_first_call_s``); :func:`compile_seconds` reads dynamo's own
accounting of it for ``compile_s``. A model that fails to compile raises at that first call and
the job records an ``error`` row saying so (no silent fallback to eager: a row marked compiled
always ran compiled code, graph breaks aside).
"""

from __future__ import annotations

from typing import Any

import torch

from seqbench.config.job import Job
from seqbench.errors import BackendUnavailable
from seqbench.recording.schema import Row
from seqbench.worker.data.base import Task, TaskInfo
from seqbench.worker.measure import timing_method
from seqbench.worker.models.base import Backbone

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
COMPILE_BACKEND: Any = "inductor"  # torch.compile's default; tests swap in "eager"
# dynamo's compile-time accounting: the forward compile (tracing + backend) and the backward
# graph, compiled lazily at the first backward (torch._dynamo.utils.compilation_time_metrics)
COMPILE_TIME_KEYS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")


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
    model = build_model(name, params, task.info.io, input_len=task.info.input_len,
                        element_bytes=DTYPES[job.dtype].itemsize,
                        ).to(device=device, dtype=DTYPES[job.dtype])
    if job.train.compile and job.kind != "stream":
        model.compile(backend=COMPILE_BACKEND)
    return task, model


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether ``model`` was compiled in place (:meth:`torch.nn.Module.compile` sets this)."""
    return getattr(model, "_compiled_call_impl", None) is not None


def compile_seconds() -> float | None:
    """Seconds this process has spent in torch.compile so far (None if dynamo keeps no
    accounting under the names this torch uses)."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return None
    found = [sum(compilation_time_metrics[k]) for k in COMPILE_TIME_KEYS
             if k in compilation_time_metrics]
    return float(sum(found)) if found else None


def is_compile_error(exc: BaseException) -> bool:
    """An exception raised by torch.compile (dynamo, a backend compiler, inductor)."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:
        return False
    seen: BaseException | None = exc
    while seen is not None:  # raised from one (not merely during: dynamo uses exceptions
        if isinstance(seen, TorchDynamoException):  # internally for graph breaks)
            return True
        seen = seen.__cause__
    return False


def autocast_name(amp: torch.dtype | None) -> str:
    return str(amp).replace("torch.", "") if amp else ""


def describe(row: Row, model: Backbone, task: Task | TaskInfo, device: torch.device,
             amp: torch.dtype | None) -> None:
    """The fields every row of a built model has: its size and backbone shape, input,
    autocast, timing method, whether it is compiled, where the task's data came from (given the
    task, not only its info) and what its mixer reports about itself."""
    from seqbench.worker.models import count_params, sizing_fields

    info = task.info if isinstance(task, Task) else task
    row.update(param_count=count_params(model), d_model=model.cfg.d_model,
               backbone=model.cfg.backbone, input_len=info.input_len, autocast=autocast_name(amp),
               timing_method=timing_method(device), compiled=is_compiled(model),
               **model.row_fields(), **sizing_fields(model, info.input_len))
    source = task.data_source if isinstance(task, Task) else None
    if source is not None:
        row.update(data_source=dict(source))
