"""Training and evaluation of one model on one task.

The loop is deliberately plain (so it costs no more than a hand-written PyTorch loop): draw a
batch on the device, forward (under bf16 autocast on CUDA), loss, ``backward()``, clip the global
gradient norm, optimizer and schedule step. Every step is timed; steps before
``measure.warmup_steps`` are left out of the statistics and the first is recorded apart. A
non-finite loss ends training at once as ``diverged`` with the step.

The protocol around the loop (all off by default; docs/architecture.md, "Protocol"):

- ``train.lengths: {min, max}``: each step's batch length is drawn uniformly from that range
  (all steps' lengths drawn up front from the job's ``lengths`` stream); the task is built once
  per length, before the first step, and each length has its own training stream. Throughput
  then counts the tokens each timed step actually had.
- ``train.eval_every: N``: every N steps, outside the timed steps, the model is evaluated on
  ``train.curve_examples`` examples of the **validation** split (a learning-curve point);
  ``train.early_stop`` ends training at the first point whose metric reaches its value. The
  evaluation draws nothing from the training streams or the global RNG, so the training
  trajectory is the same with or without a curve.
- ``train.grad_probe``: the gradient-flow probe (:mod:`seqbench.worker.gradients`) at the
  listed steps, also outside the timed steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from seqbench.config.spec import MeasureSpec, TrainSpec
from seqbench.errors import SeqbenchError, SpecError
from seqbench.worker.data.base import Split, Task, derive_seed
from seqbench.worker.measure import Samples, timed


class Diverged(Exception):
    def __init__(self, step: int, loss: float, result: TrainResult) -> None:
        super().__init__(f"non-finite training loss {loss} at step {step}")
        self.step = step
        self.result = result


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)
    timing: Samples = field(default_factory=Samples)
    diverged_step: int | None = None
    timed_tokens: list[int] = field(default_factory=list)  # tokens of each timed step
    train_time_s: float = 0.0  # every step's timed seconds, warm-up included
    stop_reason: str = "steps"  # steps | early_stop | diverged
    curve: list[dict[str, Any]] = field(default_factory=list)
    grad_profile: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail) if tail else math.nan

    def timing_fields(self, tokens: int | None) -> dict[str, Any]:
        """``train_step_s_*`` and ``train_tokens_per_s*``: ``tokens`` per step when every step
        had as many, else (variable lengths, ``tokens`` None) the tokens each timed step had:
        timed tokens / timed seconds and percentiles of the per-step rates."""
        if tokens is not None:
            return self.timing.fields("train", tokens)
        out = self.timing.fields("train", 1)
        seconds = np.asarray(self.timing.samples_s, dtype=float)
        if not len(seconds) or not np.all(seconds > 0):
            return {**out, "train_tokens_per_s": math.nan, "train_tokens_per_s_p20": math.nan,
                    "train_tokens_per_s_p80": math.nan}
        rates = np.asarray(self.timed_tokens, dtype=float) / seconds
        return {**out, "train_tokens_per_s": float(sum(self.timed_tokens) / seconds.sum()),
                "train_tokens_per_s_p20": float(np.percentile(rates, 20)),
                "train_tokens_per_s_p80": float(np.percentile(rates, 80))}


@dataclass
class Evaluation:
    """Metrics of one evaluation, overall and per slice of the task."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)

    def fields(self, prefix: str = "metric_") -> dict[str, float]:
        return {f"{prefix}{k}": v for k, v in self.metrics.items()}


Sums = dict[str, list[float]]  # metric -> [sum, count]


def _accumulate(totals: Sums, sums: dict[str, tuple[float, int]]) -> None:
    for name, (value, count) in sums.items():
        acc = totals.setdefault(name, [0.0, 0])
        acc[0] += value
        acc[1] += count


def _means(totals: Sums) -> dict[str, float]:
    return {name: value / count if count else math.nan for name, (value, count) in totals.items()}


def autocast_dtype(train: TrainSpec, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; off on CPU unless asked for."""
    mode = train.autocast
    if mode == "bf16" or (mode == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; norms, biases, embeddings' 1-d params and the model's declared
    no-decay parameters (SSM dynamics) get none."""
    declared = getattr(model, "no_weight_decay", None)
    skip: set[str] = declared() if callable(declared) else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, train: TrainSpec) -> torch.optim.Optimizer:
    groups = param_groups(model, train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    beta1, beta2 = train.betas
    return cls(groups, lr=train.lr, betas=(beta1, beta2))


def lr_factor(step: int, train: TrainSpec) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    warmup, total = train.warmup_steps, train.steps
    if warmup and step < warmup:
        return (step + 1) / warmup
    if train.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def length_schedule(train: TrainSpec, seed: int) -> list[int] | None:
    """Every step's task length under ``train.lengths`` (uniform on min..max, both included,
    from the job's own ``lengths`` stream), or None for fixed-length training."""
    if train.lengths is None:
        return None
    gen = torch.Generator().manual_seed(derive_seed(seed, "lengths"))
    lo, hi = train.lengths.min, train.lengths.max
    return torch.randint(lo, hi + 1, (train.steps,), generator=gen).tolist()


def reached(value: float, target: float, higher_is_better: bool) -> bool:
    """Whether a metric value meets an early-stopping target (a NaN never does)."""
    if not math.isfinite(value):
        return False
    return value >= target if higher_is_better else value <= target


TaskAt = Callable[[int], Task]


def _batches(task: Task, train: TrainSpec, seed: int, device: torch.device,
             task_at: TaskAt | None, lengths: list[int] | None
             ) -> tuple[Callable[[int], Any], list[int] | None]:
    """``next_batch(step)`` and, for variable lengths, each step's tokens. Every length's task
    is built here, before the first step, so no build is timed."""
    if lengths is None:
        batches = task.train_batches(seed, train.batch_size, device)
        return (lambda _: next(batches)), None
    build = task_at or (lambda n: type(task)(n, **task.params))
    streams: dict[int, Iterator] = {}
    tokens: dict[int, int] = {}
    for n in sorted(set(lengths)):
        other = task if n == task.seq_len else build(n)
        if other.info.io != task.info.io:
            raise SeqbenchError(f"train.lengths: the task at length {n} has another model "
                                f"input/output ({other.info.io}) than at {task.seq_len}")
        streams[n] = iter(other.train_batches(derive_seed(seed, f"train-length/{n}"),
                                              train.batch_size, device))
        tokens[n] = train.batch_size * other.info.input_len
    return (lambda i: next(streams[lengths[i]])), [tokens[n] for n in lengths]


def train(model: nn.Module, task: Task, train: TrainSpec, measure: MeasureSpec,
          device: torch.device, seed: int, task_at: TaskAt | None = None) -> TrainResult:
    """Train ``model`` on ``task`` (see the module docstring); ``task_at(seq_len)`` builds the
    task at another length for ``train.lengths`` (default: the task's class with its params)."""
    from seqbench.worker.gradients import GradientProbe

    optimizer = make_optimizer(model, train)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train))
    amp = autocast_dtype(train, device)
    lengths = length_schedule(train, seed)
    next_batch, step_tokens = _batches(task, train, seed, device, task_at, lengths)
    stop = train.early_stop
    higher = True
    if stop is not None:
        if stop.metric not in [m.name for m in task.info.metrics]:
            raise SpecError("train.early_stop.metric", stop.metric, "one of the task's metrics: "
                            + ", ".join(m.name for m in task.info.metrics))
        higher = task.info.metric(stop.metric).higher_is_better
    probe = (GradientProbe(train.grad_probe, task, seed, device)
             if train.grad_probe is not None else None)
    result = TrainResult(steps=0)
    wall_start = time.perf_counter()
    since_point: list[float] = []
    if probe is not None and probe.due(0):
        result.grad_profile.append(probe.run(model, 0))
    model.train()

    def step(i: int) -> float:
        x, y = next_batch(i)
        with autocast(device, amp):
            loss = task.loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), train.clip)
        optimizer.step()
        schedule.step()
        return loss.item()

    for i in range(train.steps):
        seconds, loss = timed(partial(step, i), device)
        if i == 0:
            result.timing.first_s = seconds
        elif i >= measure.warmup_steps:
            result.timing.samples_s.append(seconds)
            if step_tokens is not None:
                result.timed_tokens.append(step_tokens[i])
        result.train_time_s += seconds
        result.steps = done = i + 1
        if not math.isfinite(loss):
            result.diverged_step = i
            result.stop_reason = "diverged"
            raise Diverged(i, loss, result)
        result.losses.append(loss)
        since_point.append(loss)
        if probe is not None and probe.due(done):
            result.grad_profile.append(probe.run(model, done))
        if train.eval_every and done % train.eval_every == 0:
            point = evaluate(model, task, train, device, seed, split="eval",
                             n_examples=train.curve_examples)
            model.train()
            result.curve.append({"step": done, "train_time_s": result.train_time_s,
                                 "wall_s": time.perf_counter() - wall_start,
                                 "train_loss": sum(since_point) / len(since_point),
                                 **point.fields()})
            since_point = []
            if stop is not None and reached(point.metrics.get(stop.metric, math.nan),
                                            stop.value, higher):
                result.stop_reason = "early_stop"
                break
    probed = {point["step"] for point in result.grad_profile}
    if probe is not None and probe.end and result.steps not in probed:
        result.grad_profile.append(probe.run(model, result.steps))
    model.train()
    return result


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, train: TrainSpec, device: torch.device,
             seed: int, split: Split = "eval", n_examples: int | None = None) -> Evaluation:
    """Metrics on held-out examples of ``split`` (default: ``eval``, the validation split,
    whose seed stream is disjoint from training): ``n_examples`` of them, by default
    ``train.eval_examples``; each metric and each slice summed over batches and divided once."""
    model.eval()
    amp = autocast_dtype(train, device)
    n = train.eval_examples if n_examples is None else n_examples
    totals: Sums = {}
    by_slice: dict[str, Sums] = {}
    for x, y in task.eval_batches(seed, train.eval_batch_size, n, device, split=split):
        with autocast(device, amp):
            out = model(x)
        _accumulate(totals, task.metric_sums(out, y))
        for name, sums in task.slice_sums(out, y, x).items():
            _accumulate(by_slice.setdefault(name, {}), sums)
    ordered = sorted(by_slice, key=slice_order)
    return Evaluation(_means(totals), {name: _means(by_slice[name]) for name in ordered})


def slice_order(name: str) -> tuple[str, float, str]:
    """``"<dimension>:<lo>-<hi>"`` slices by dimension, then numerically by ``lo``."""
    dimension, _, span = name.partition(":")
    lo = span.partition("-")[0]
    try:
        return dimension, float(lo), name
    except ValueError:
        return dimension, math.inf, name
