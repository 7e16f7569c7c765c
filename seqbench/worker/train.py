"""Training and evaluation of one model on one task.

The loop is deliberately plain (so it costs no more than a hand-written PyTorch loop): draw a
batch on the device, forward (under bf16 autocast on CUDA), loss, ``backward()``, clip the global
gradient norm, optimizer and schedule step. Every step is timed; steps before
``measure.warmup_steps`` are left out of the statistics and the first is recorded apart. A
non-finite loss ends training at once as ``diverged`` with the step.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from seqbench.config.spec import MeasureSpec, TrainSpec
from seqbench.worker.data.base import Task
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

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail) if tail else math.nan


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


def train(model: nn.Module, task: Task, train: TrainSpec, measure: MeasureSpec,
          device: torch.device, seed: int) -> TrainResult:
    optimizer = make_optimizer(model, train)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train))
    amp = autocast_dtype(train, device)
    batches = task.train_batches(seed, train.batch_size, device)
    result = TrainResult(steps=0)
    model.train()

    def step() -> float:
        x, y = next(batches)
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
        seconds, loss = timed(step, device)
        if i == 0:
            result.timing.first_s = seconds
        elif i >= measure.warmup_steps:
            result.timing.samples_s.append(seconds)
        result.steps = i + 1
        if not math.isfinite(loss):
            result.diverged_step = i
            raise Diverged(i, loss, result)
        result.losses.append(loss)
    return result


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, train: TrainSpec, device: torch.device,
             seed: int) -> dict[str, float]:
    """Metrics on ``eval_examples`` held-out examples (a seed stream disjoint from training)."""
    model.eval()
    amp = autocast_dtype(train, device)
    totals: dict[str, list[float]] = {}
    for x, y in task.eval_batches(seed, train.eval_batch_size, train.eval_examples, device):
        with autocast(device, amp):
            out = model(x)
        for name, (value, count) in task.metric_sums(out, y).items():
            acc = totals.setdefault(name, [0.0, 0])
            acc[0] += value
            acc[1] += count
    return {name: value / count if count else math.nan for name, (value, count) in totals.items()}
