"""The task contract: what a model reads, what it predicts, how it is scored, and the trivial
baselines every result is judged against.

A task is built from its length parameter ``seq_len`` and its own params. It yields batches
``(x, y)`` directly on the target device from seeded generators: training and evaluation draw
from disjoint seed streams, and the same seed gives the same bytes.
Shapes: ``x`` is ``(B, L)`` int64 tokens or ``(B, L, C)`` float channels; ``y`` is ``(B, L)``
int64 labels (``-100`` = not scored) for per-position classification, ``(B,)`` labels for pooled
classification, ``(B, L, K)`` or ``(B, K)`` floats for regression.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from seqbench.errors import SpecError
from seqbench.worker.models.base import IOSpec

IGNORE = -100  # label of positions that are not scored

Split = Literal["train", "eval", "test"]


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for a named stream; different streams never share a seed."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, stream: str, device: torch.device | str) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, stream))
    return gen


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    unit: str = ""


@dataclass(frozen=True)
class TaskInfo:
    input_kind: Literal["tokens", "channels"]
    input_dim: int  # vocabulary size or channel count
    output_kind: Literal["classes", "regression"]
    output_dim: int  # number of classes or regression targets
    per_position: bool
    input_len: int  # actual length of x (copy memory: T + 20)
    metrics: tuple[Metric, ...]
    primary_metric: str  # the metric summaries and plots lead with
    baselines: dict[str, float] = field(default_factory=dict)  # metric -> trivial baseline
    baseline_notes: dict[str, str] = field(default_factory=dict)  # metric -> what scores it

    @property
    def io(self) -> IOSpec:
        return IOSpec(self.input_kind, self.input_dim, self.output_dim, self.per_position)

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)


class Task:
    """Base class: seeded batches, loss, metric sums. Subclasses set ``info`` in ``__init__``."""

    version: ClassVar[int] = 1  # bump when the data definition changes: it enters config hashes
    info: TaskInfo
    # where the data came from, for the row: a local dataset's name and the files read, or a
    # generator's name, version, seed and the sha256 of its cached data; None: synthetic
    data_source: dict[str, Any] | None = None

    def __init__(self, seq_len: int, **params: Any) -> None:
        self.seq_len = seq_len
        self.params = params

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        """Validate a (seq_len, params) pair in the driver before any job starts.

        Raise :class:`~seqbench.errors.SpecError` for bad input (a length the task cannot take,
        a missing or corrupt data file), so the CLI exits 2 before anything is recorded.
        Cheap: it must not load a whole dataset.
        """
        if seq_len < 1:
            raise SpecError("seq_len", seq_len, "must be a positive integer")
        accepted = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            allowed = [n for n in accepted if n not in ("self", "seq_len")]
            for key in params:
                if key not in allowed:
                    raise SpecError(f"params.{key}", key,
                                    f"allowed params: {', '.join(allowed) or 'none'}")

    @classmethod
    def input_len(cls, seq_len: int, params: dict[str, Any]) -> int:
        """Length of the model's input for this length parameter (copy memory: T + 20)."""
        return seq_len

    # --- data ---------------------------------------------------------------------------
    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        """One batch ``(x, y)`` drawn with ``gen`` on ``device`` (synthetic tasks)."""
        raise NotImplementedError

    def train_batches(self, seed: int, batch_size: int, device: torch.device) -> Iterator:
        gen = generator(seed, "train", device)
        while True:
            yield self.sample(gen, batch_size, device)

    def eval_batches(self, seed: int, batch_size: int, n_examples: int,
                     device: torch.device, split: Split = "eval") -> Iterator:
        gen = generator(seed, split, device)
        for start in range(0, n_examples, batch_size):
            yield self.sample(gen, min(batch_size, n_examples - start), device)

    # --- scoring ------------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.info.output_kind == "classes":
            return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1),
                                   ignore_index=IGNORE)
        return F.mse_loss(out.float(), y.float())

    def metric_sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, int]]:
        """Per-batch (sum, count) of every metric, so evaluation averages over examples."""
        if self.info.output_kind == "classes":
            logits, labels = out.reshape(-1, out.shape[-1]).float(), y.reshape(-1)
            scored = labels != IGNORE
            ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
            correct = (logits.argmax(-1) == labels) & scored
            n = int(scored.sum())
            return {"loss": (ce.item(), n), "accuracy": (correct.sum().item(), n)}
        err = (out.float() - y.float()).pow(2)
        return {"mse": (err.sum().item(), err.numel())}
