"""The task contract: what a model reads, what it predicts, how it is scored, and the trivial
baselines every result is judged against.

A task is built from its length parameter ``seq_len`` and its own params. It yields batches
``(x, y)`` directly on the target device from seeded generators, and the same seed gives the
same bytes. Three disjoint splits: ``train`` (what the model fits), ``eval`` (the validation
split: the default of the final metrics, always the one of learning curves and early stopping)
and ``test`` (``train.eval_split: test``). Synthetic tasks draw each from its own seed stream
(``generator(seed, split)``); dataset tasks hold them as data
(:mod:`seqbench.worker.data.dataset`: the official test split as ``test``).
Shapes: ``x`` is ``(B, L)`` int64 tokens or ``(B, L, C)`` float channels; ``y`` is ``(B, L)``
int64 labels (``-100`` = not scored) for per-position classification, ``(B,)`` labels for pooled
classification, ``(B, L, K)`` or ``(B, K)`` floats for regression.

Optional parts of the contract (defaults here keep every task working without them):

- ``sample_train(gen, batch_size, device)``: a training batch, when a task trains on other labels
  than it scores (MAD's recall tasks train on next-token targets and score the recalled values)
  or on another distribution (MAD's fuzzy recall); defaults to ``sample``.
- ``n_train``: ``None`` (fresh examples every step), or the size of a fixed training set drawn
  once from the train stream and cycled in shuffled epochs (MAD's training-set-size axis).
- ``slice_sums(out, y, x)``: per-slice metric sums, ``{slice: {metric: (sum, count)}}``, for one
  evaluation batch (see :meth:`Task.slice_sums`).
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
    n_train: int | None = None  # None: fresh examples every step; else a fixed training set
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

    def sample_train(self, gen: torch.Generator, batch_size: int, device: torch.device):
        """One training batch; the same as :meth:`sample` unless a task trains on other labels
        (or another distribution) than it is scored on."""
        return self.sample(gen, batch_size, device)

    def train_batches(self, seed: int, batch_size: int, device: torch.device) -> Iterator:
        gen = generator(seed, "train", device)
        if self.n_train is not None:
            yield from finite_train_batches(self, gen, self.n_train, batch_size, device)
        while True:
            yield self.sample_train(gen, batch_size, device)

    def eval_batches(self, seed: int, batch_size: int, n_examples: int,
                     device: torch.device, split: Split = "eval") -> Iterator:
        gen = generator(seed, split, device)
        for start in range(0, n_examples, batch_size):
            yield self.sample(gen, min(batch_size, n_examples - start), device)

    def timing_batch(self, seed: int, batch_size: int, device: torch.device):
        """One batch of the training distribution for timing forward passes: the first batch
        of ``train_batches(seed)``, except that a fixed training set built by this base class
        (``n_train``) is not drawn in full for one batch: its first examples are sampled
        directly from the same stream instead."""
        if self.n_train is not None and type(self).train_batches is Task.train_batches:
            return self.sample_train(generator(seed, "train", device), batch_size, device)
        return next(iter(self.train_batches(seed, batch_size, device)))

    def held_out_batch(self, seed: int, stream: str, n_examples: int, device: torch.device):
        """``n_examples`` examples outside training for a probe (the gradient-flow probe):
        synthetic tasks draw them from their own named ``stream`` (disjoint from train, eval
        and test); tasks without a generator (datasets) give the first examples of the
        validation split."""
        if type(self).sample is Task.sample:
            return next(iter(self.eval_batches(seed, n_examples, n_examples, device)))
        return self.sample(generator(seed, stream, device), n_examples, device)

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

    def slice_sums(self, out: torch.Tensor, y: torch.Tensor, x: torch.Tensor
                   ) -> dict[str, dict[str, tuple[float, int]]]:
        """Per-slice (sum, count) of the task's metrics on one evaluation batch.

        ``out``, ``y``, ``x`` are what :meth:`metric_sums` sees plus the batch's inputs (a slice
        can depend on the layout, e.g. where a key first occurs). Returns
        ``{slice_name: {metric_name: (sum, count)}}`` with the metric names of
        :meth:`metric_sums`; slice names read ``"<dimension>:<lo>-<hi>"`` (both ends included).
        A slice absent from a batch is absent from its dict, so evaluation sums each
        (slice, metric) over batches and divides once, exactly as for :meth:`metric_sums`.
        Default: no slices.
        """
        return {}


def finite_train_batches(task: Task, gen: torch.Generator, n_train: int, batch_size: int,
                         device: torch.device) -> Iterator:
    """Batches from a fixed training set of ``n_train`` examples drawn once with ``gen``.

    The set is drawn in chunks of :data:`POOL_CHUNK` (so it depends on the seed and
    ``n_train``, not on the batch size), stored in the smallest integer type that holds it, and
    cycled in epochs, each a fresh permutation from ``gen``; a batch that runs past the end of
    an epoch continues into the next one, so every batch has ``batch_size`` examples.
    """
    xs, ys = [], []
    for start in range(0, n_train, POOL_CHUNK):
        x, y = task.sample_train(gen, min(POOL_CHUNK, n_train - start), device)
        xs.append(_compact(x))
        ys.append(_compact(y))
    pool_x, pool_y = torch.cat(xs), torch.cat(ys)
    order = torch.empty(0, dtype=torch.long, device=device)
    while True:
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(n_train, generator=gen, device=device)])
        take, order = order[:batch_size], order[batch_size:]
        yield _widen(pool_x[take]), _widen(pool_y[take])


POOL_CHUNK = 1024  # examples drawn per call when a fixed training set is built


def _compact(t: torch.Tensor) -> torch.Tensor:
    """Integer tensors in int16/int32 when their values fit (a pool of tokens and -100s)."""
    if t.dtype != torch.long or t.numel() == 0:
        return t
    lo, hi = int(t.min()), int(t.max())
    for dtype in (torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return t.to(dtype)
    return t


def _widen(t: torch.Tensor) -> torch.Tensor:
    return t.long() if t.dtype in (torch.int16, torch.int32) else t


def pow2_bucket(values: torch.Tensor) -> torch.Tensor:
    """Power-of-two bucket of positive integers: k for values in [2^k, 2^(k+1)) (exact: frexp
    splits v = m 2^e with m in [0.5, 1), so k = e - 1)."""
    _, exponent = torch.frexp(values.clamp(min=1).double())
    return exponent.long() - 1


def pow2_slice_sums(out: torch.Tensor, y: torch.Tensor, value: torch.Tensor, dimension: str
                    ) -> dict[str, dict[str, tuple[float, int]]]:
    """Loss and accuracy sums of a per-position classification batch, sliced by ``value``.

    ``value`` is an integer per position, ``(B, L)`` like ``y`` (read at scored positions
    only, each >= 1); position ``(b, t)`` goes to slice ``"<dimension>:<2^k>-<2^(k+1)-1>"``
    with ``k = floor(log2(value))``. Only scored positions are gathered, so the cost is that of
    the scored logits, not of the whole ``(B, L, V)`` output.
    """
    scored = y != IGNORE
    logits = out[scored].float()  # (S, V)
    labels, v = y[scored], value[scored]
    if labels.numel() == 0:
        return {}
    ce = F.cross_entropy(logits, labels, reduction="none")
    correct = (logits.argmax(-1) == labels).double()
    bucket = pow2_bucket(v)
    n_buckets = int(bucket.max()) + 1
    counts = torch.bincount(bucket, minlength=n_buckets)
    ce_sum = torch.zeros(n_buckets, dtype=torch.double, device=ce.device)
    ce_sum.index_add_(0, bucket, ce.double())
    hit_sum = torch.zeros(n_buckets, dtype=torch.double, device=ce.device)
    hit_sum.index_add_(0, bucket, correct)
    result = {}
    for k in torch.nonzero(counts).flatten().tolist():
        n = int(counts[k])
        name = f"{dimension}:{2 ** k}-{2 ** (k + 1) - 1}"
        result[name] = {"loss": (float(ce_sum[k]), n), "accuracy": (float(hit_sum[k]), n)}
    return result
