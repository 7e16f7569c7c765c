"""Scaling jobs in the worker: throughput, memory and streaming latency at one length.

``scale``   one model at one length: the training step (forward + backward + optimizer) and the
            forward-only pass, each warmed up until its time settles (the first call kept
            apart) and timed with adaptive repeats; peak memory of the measured phase; the
            analytic FLOPs of the step and the achieved fraction of the device's peak
            (:mod:`seqbench.worker.peaks`).
``stream``  one model at one context position: the prompt is processed in one call
            (``prefill``), then the latency of one more token (``step``) is timed, and the bytes
            of the recurrent state or KV cache are counted next to the measured memory.

The batch policy is explicit (``fixed-batch`` or ``fixed-tokens``, as in flash-attention's
benchmarks). Which lengths run, and where a model's sweep stops, is the driver's decision
(:mod:`seqbench.execution.frontier`); the fits of time and memory against length are
:mod:`seqbench.results.complexity`.

FLOPs (``Backbone.forward_flops``, matmuls only, a multiply-add = 2 FLOPs; formulas in each
model's module docstring): a training step counts 3 x the forward pass (the backward pass does
two matmuls for each forward one: gradients for inputs and for weights), the convention of
Kaplan et al. (2020) and nanoGPT's MFU; the optimizer's O(parameters) work is left out.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from seqbench.config.job import Job
from seqbench.errors import BackendUnavailable
from seqbench.recording.schema import Row
from seqbench.worker import kernels_seen
from seqbench.worker.build import DTYPES, build, describe
from seqbench.worker.measure import CudaMemory, is_cuda, repeat, timed
from seqbench.worker.models.base import Backbone
from seqbench.worker.peaks import peak_fields

TRAIN_FLOPS_PER_FWD = 3  # forward + backward (2x forward): Kaplan et al. 2020, nanoGPT MFU


def repeat_kwargs(job: Job) -> dict[str, Any]:
    scale = job.scale
    assert scale is not None
    return {"warmup": scale.warmup_steps, "max_warmup": scale.max_warmup_steps,
            "min_repeats": scale.min_repeats, "max_repeats": scale.max_repeats,
            "budget_s": scale.budget_s, "iqr_tolerance": job.measure.iqr_tolerance}


def compute_dtype(job: Job, device: torch.device) -> torch.dtype:
    """The dtype the matmuls run in: the autocast dtype when autocast is on, else the params'."""
    from seqbench.worker.train import autocast_dtype

    return autocast_dtype(job.train, device) or DTYPES[job.dtype]


def flop_fields(model: Backbone, batch: int, input_len: int) -> dict[str, Any]:
    try:
        fwd = float(model.forward_flops(batch, input_len))
    except NotImplementedError as exc:
        return {"flops_method": f"none: {exc}"}
    return {"flops_per_fwd": fwd, "flops_per_train_step": TRAIN_FLOPS_PER_FWD * fwd,
            "flops_method": f"Backbone.forward_flops (matmuls); train = "
                            f"{TRAIN_FLOPS_PER_FWD} x forward"}


def achieved(row: Row, flops_key: str, time_key: str, prefix: str) -> dict[str, Any]:
    """``<prefix>_flops_per_s`` and utilisation from a FLOP count and a median time."""
    flops, seconds = row.get(flops_key), row.get(time_key)
    if not flops or not seconds or not math.isfinite(seconds):
        return {}
    per_s = flops / seconds
    util_key = "flops_utilization" if prefix == "train" else f"{prefix}_flops_utilization"
    out = {f"{prefix}_flops_per_s": per_s}
    if row.peak_flops_per_s:
        out[util_key] = per_s / row.peak_flops_per_s
    return out


def _prepare(job: Job, row: Row, device: torch.device) -> tuple[Any, Any, int, Any]:
    """Build, describe and size one scale or stream job: (task, model, batch, autocast)."""
    from seqbench.worker.train import autocast_dtype

    assert job.scale is not None
    task, model = build(job, device)
    batch = job.scale.batch(task.info.input_len)
    amp = autocast_dtype(job.train, device)
    describe(row, model, task, device, amp)
    row.update(batch_size=batch, batch_policy=job.scale.batch_policy)
    return task, model, batch, amp


def run_scale(job: Job, row: Row, device: torch.device) -> None:
    """Time the training step and the forward pass of one model at one length."""
    from seqbench.worker.train import autocast, make_optimizer

    assert job.scale is not None
    task, model, batch, amp = _prepare(job, row, device)
    info, train_cfg = task.info, job.train
    row.update(**flop_fields(model, batch, info.input_len),
               **peak_fields(device, compute_dtype(job, device)))
    tokens = batch * info.input_len
    x, y = next(task.train_batches(job.seed, batch, device))  # one batch, reused: model cost
    optimizer = make_optimizer(model, train_cfg)
    losses: list[torch.Tensor] = []
    model.train()

    def train_step() -> None:
        with autocast(device, amp):
            loss = task.loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip)
        optimizer.step()
        losses.append(loss.detach())

    with CudaMemory(device) as memory:
        steps = repeat(train_step, device, **repeat_kwargs(job))
        row.update(**memory.fields())
    row.update(kernel_path=model.kernel_path, train_first_step_s=steps.first_s,
               train_steps=len(losses), **steps.fields("train", tokens))
    warmups, timed_total = {"train": len(steps.warmup_s)}, steps.total_s
    row.update(**achieved(row, "flops_per_train_step", "train_step_s_median", "train"))
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    row.train_final_loss = float(losses[-1])
    if job.scale.forward:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        model.eval()

        def forward() -> Any:
            with torch.inference_mode(), autocast(device, amp):
                return model(x)

        with CudaMemory(device) as memory:
            fwd = repeat(forward, device, **repeat_kwargs(job))
            if is_cuda(device):
                row.fwd_peak_mem_bytes = memory.fields()["peak_mem_bytes"]
        row.update(fwd_first_call_s=fwd.first_s, **fwd.fields("fwd", tokens))
        warmups["fwd"] = len(fwd.warmup_s)
        timed_total += fwd.total_s
        row.update(**achieved(row, "flops_per_fwd", "fwd_step_s_median", "fwd"))
    row.update(warmup_calls=warmups, timed_s=timed_total,
               **kernels_seen.forward_row_fields(model, x, device, amp))
    if not finite:
        row.update(status="diverged", error="non-finite training loss while timing")
        return
    row.status = "ok"


def run_stream(job: Job, row: Row, device: torch.device) -> None:
    """Streaming inference at one context position: prefill the prompt, time one more token."""
    from seqbench.worker.models import mixer_class
    from seqbench.worker.models.base import state_nbytes
    from seqbench.worker.train import autocast

    if not mixer_class(job.model.name).supports_step:
        raise BackendUnavailable(f"{job.model.name} has no recurrent step mode "
                                 "(init_state/step)")
    task, model, batch, amp = _prepare(job, row, device)
    context = task.info.input_len
    x, _ = next(task.train_batches(job.seed, batch, device))  # (B, P) tokens or (B, P, C)
    x_t = x[:, -1]  # the next token's input; its value does not change the cost
    model.eval()
    row.context_len = context
    with torch.inference_mode(), autocast(device, amp):
        prefill_s, (_, state) = timed(lambda: model.prefill(x), device)
        row.update(prefill_s=prefill_s, state_bytes=state_nbytes(state))
        element = model.head.weight.element_size()
        with contextlib.suppress(NotImplementedError):
            row.state_bytes_analytic = model.state_size(context, batch, element)
        with CudaMemory(device) as memory:  # the decode phase only, after the prefill
            # the same state every call: each timed step sees exactly `context` tokens
            steps = repeat(lambda: model.step(x_t, state), device, **repeat_kwargs(job))
            row.update(**memory.fields())
        # the step's kernels, seen in one more step (the state's tensors need inference mode)
        row.update(**kernels_seen.row_fields(model, lambda: model.step(x_t, state), device,
                                             amp, train=False))
    row.update(stream_first_call_s=steps.first_s,
               warmup_calls={"stream": len(steps.warmup_s)}, timed_s=prefill_s + steps.total_s,
               **steps.fields("stream", batch))
    row.status = "ok"
