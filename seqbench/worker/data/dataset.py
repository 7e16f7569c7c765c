"""Dataset tasks held in memory: stable seeded splits, epoch-shuffled training batches, a fixed
evaluation order, and trivial baselines computed from the data itself.

Splits. ``"train"`` is what the model fits; ``"eval"`` is the **validation** split (carved from
the official training data with the task param ``split_seed``, or the dataset's own validation
set where it defines one); ``"test"`` is the official test split. Splits are disjoint, depend
only on ``split_seed`` (never on the job seed, so every seed is scored on the same held-out
examples) and are stable across numpy/torch versions: example ``i`` goes where the hash of
``(split_seed, stream, i)`` ranks it, not where a library RNG puts it. Held-out sets carved
from a labelled training set are stratified by class.

Batches. Training draws epochs of a permutation seeded by the job seed (every example once per
epoch, full batches only, infinitely); evaluation yields the first ``n_examples`` of a split in
its stored order (the whole split if it is smaller). Data is stored compactly on the CPU
(``uint8``/``int16``/``float32``) and converted per batch on the way to the device.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import Metric, Split, Task, TaskInfo, generator

LN2 = math.log(2)


# --- stable splits ------------------------------------------------------------------------
def stable_order(keys: list[str] | int, seed: int, stream: str) -> np.ndarray:
    """A permutation of ``range(len(keys))`` ranked by ``blake2b(seed/stream/key)``.

    ``keys`` may be an int ``n`` (keys are the indices). Identical on every platform and
    library version, and an example keeps its rank when others are added (keys are names).
    """
    names = [str(i) for i in range(keys)] if isinstance(keys, int) else keys
    digests = [hashlib.blake2b(f"{seed}/{stream}/{k}".encode(), digest_size=8).digest()
               for k in names]
    return np.array(sorted(range(len(names)), key=digests.__getitem__), dtype=np.int64)


def holdout(keys: list[str] | int, n_holdout: int, seed: int, stream: str,
            labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(kept, held_out)``, each sorted, ``len(held_out) == n_holdout``.

    With ``labels``, the split is stratified: every class gives its share of ``n_holdout``
    (largest remainders round), so a small held-out set is not skewed by chance (GunPoint's
    10 validation series drawn at random can be 9 of one class).
    """
    names = [str(i) for i in range(keys)] if isinstance(keys, int) else list(keys)
    if labels is None:
        order = stable_order(names, seed, stream)
        return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_holdout / len(labels)
    take = np.floor(quota).astype(np.int64)
    for i in np.argsort(-(quota - take), kind="stable")[:n_holdout - int(take.sum())]:
        take[i] += 1
    held = []
    for c, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == c)
        order = stable_order([names[i] for i in members], seed, f"{stream}/{c}")
        held.extend(members[order[:k]].tolist())
    held_out = np.sort(np.array(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(names)), held_out), held_out


def check_params(cls: type, params: dict[str, Any], task: str) -> None:
    """Refuse task params the constructor does not take, before any job starts."""
    accepted = [p for p in inspect.signature(cls).parameters if p != "seq_len"]
    for key in params:
        if key not in accepted:
            raise SpecError(f"tasks.{task}.params.{key}", key,
                            f"allowed params: {', '.join(accepted) or 'none'}")


def require_package(module: str, extra: str, what: str) -> Any:
    """Import an optional package, or raise BackendUnavailable naming the extra to install."""
    from seqbench.errors import BackendUnavailable

    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise BackendUnavailable(
            f"{what} needs {module}: pip install 'seqbench[{extra}]' ({exc})") from None


# --- baselines ----------------------------------------------------------------------------
def class_baselines(y_train: torch.Tensor, y_eval: torch.Tensor, n_classes: int
                    ) -> tuple[dict[str, float], dict[str, str]]:
    """Majority-class accuracy and class-prior cross-entropy, fitted on train, scored on eval."""
    counts = torch.bincount(y_train.reshape(-1), minlength=n_classes).double()
    majority = int(counts.argmax())
    prior = (counts + 1) / (counts.sum() + n_classes)  # add-one: a class unseen in train is finite
    y = y_eval.reshape(-1)
    return (
        {"accuracy": float((y == majority).double().mean()),
         "loss": float(-prior.log()[y].mean())},
        {"accuracy": f"majority class of the train split (class {majority}), on the eval split",
         "loss": "class frequencies of the train split, on the eval split"},
    )


def unigram_bits(train: torch.Tensor, held_out: torch.Tensor, vocab: int) -> float:
    """Bits per character of an add-one unigram model of ``train`` on ``held_out``."""
    counts = torch.bincount(train.reshape(-1).long(), minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log2()
    eval_counts = torch.bincount(held_out.reshape(-1).long(), minlength=vocab).double()
    return float(-(eval_counts * logp).sum() / eval_counts.sum())


# --- tasks --------------------------------------------------------------------------------
class ArrayTask(Task):
    """A dataset task over in-memory tensors ``self.splits[split] = (x, y)`` on the CPU.

    Subclasses load the data in ``__init__``, fill ``self.splits`` for ``"train"``, ``"eval"``,
    ``"test"``, set ``self.info``, and convert stored inputs with :meth:`inputs` if needed.
    """

    name: ClassVar[str] = ""  # the registry name, used in error messages
    native_len: ClassVar[int | None] = None  # fixed-length datasets: the only seq_len accepted

    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        check_params(cls, params, cls.name)
        native = cls.expected_len(params)
        if native is not None and seq_len != native:
            raise SpecError("seq_len", seq_len, f"{cls.label(params)} has length {native}")

    @classmethod
    def label(cls, params: dict[str, Any]) -> str:
        """How errors name this dataset (``ucr`` adds the dataset's name)."""
        return cls.name

    @classmethod
    def expected_len(cls, params: dict[str, Any]) -> int | None:
        """The only seq_len this dataset takes with these params (None: any)."""
        return cls.native_len

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Stored inputs -> model inputs (float channels ``(B, L, C)`` or int64 tokens)."""
        return x

    def _batch(self, split: str, idx: torch.Tensor, device: torch.device | str):
        x, y = self.splits[split]
        # move the compact stored dtype, convert on the device (4x less to copy for uint8)
        return self.inputs(x[idx].to(device)), y[idx].to(device)

    def train_batches(self, seed: int, batch_size: int, device: torch.device | str
                      ) -> Iterator:
        n = len(self.splits["train"][0])
        gen = generator(seed, "train", "cpu")  # CPU indices: the same order on every device
        pending = torch.empty(0, dtype=torch.long)
        while True:
            while len(pending) < batch_size:  # epochs of permutations; tiny sets wrap around
                pending = torch.cat([pending, torch.randperm(n, generator=gen)])
            idx, pending = pending[:batch_size], pending[batch_size:]
            yield self._batch("train", idx, device)

    def eval_batches(self, seed: int, batch_size: int, n_examples: int,
                     device: torch.device | str, split: Split = "eval") -> Iterator:
        """The first ``n_examples`` of ``split`` in stored order; ``seed`` is unused on purpose."""
        n = min(n_examples, len(self.splits[split][0]))
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n))
            yield self._batch(split, idx, device)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(x) for name, (x, _) in self.splits.items()}


class ClassificationTask(ArrayTask):
    """One label per sequence; accuracy and cross-entropy, majority-class baselines."""

    def set_classification_info(self, input_kind: Literal["tokens", "channels"], input_dim: int,
                                n_classes: int) -> None:
        baselines, notes = class_baselines(self.splits["train"][1], self.splits["eval"][1],
                                           n_classes)
        self.info = TaskInfo(
            input_kind=input_kind, input_dim=input_dim, output_kind="classes",
            output_dim=n_classes, per_position=False, input_len=self.seq_len,
            metrics=(Metric("loss", False, "nats"), Metric("accuracy", True)),
            primary_metric="accuracy", baselines=baselines, baseline_notes=notes,
        )


class PixelTask(ClassificationTask):
    """Images read pixel by pixel in row-major order: ``(N, H * W, C)`` stored as integers.

    ``permutation_seed`` (None: no permutation) applies one fixed permutation of the pixel
    positions to every image, as in permuted sequential MNIST (Le et al. 2015); it is derived
    with :func:`stable_order`, so it is the same on every machine.
    """

    max_value: ClassVar[float] = 255.0  # inputs are pixel / max_value, in [0, 1]

    def set_pixels(self, splits: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int,
                   permutation_seed: int | None) -> None:
        length = next(iter(splits.values()))[0].shape[1]
        perm = (None if permutation_seed is None
                else torch.from_numpy(stable_order(length, permutation_seed, "pixels")))
        self.splits = {}
        for name, (x, y) in splits.items():
            xt = torch.from_numpy(np.require(x, requirements=["C", "W"]))
            if xt.dim() == 2:
                xt = xt.unsqueeze(-1)  # (N, L, 1)
            if perm is not None:
                xt = xt[:, perm]
            self.splits[name] = (xt, torch.from_numpy(np.asarray(y, dtype=np.int64)))
        self.set_classification_info("channels", self.splits["train"][0].shape[-1], n_classes)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / self.max_value  # (B, L, C)


class CharLMTask(Task):
    """Next-character prediction on a token stream per split (``uint8`` ids, 1-D, on the CPU).

    ``seq_len`` is the context length and may be anything. Training windows start at uniform
    random offsets of the train stream; evaluation cuts the split into consecutive
    non-overlapping windows of ``seq_len + 1`` tokens (input the first ``seq_len``, target the
    last ``seq_len``) and scores the first ``n_examples`` windows. Metrics: cross-entropy in
    nats, bits per character (= nats / ln 2) and next-character accuracy; the baselines are an
    add-one unigram model fitted on train (bits per character) and always predicting the most
    frequent train character (accuracy).
    """

    name: ClassVar[str] = ""
    streams: dict[str, torch.Tensor]

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        check_params(cls, params, cls.name)

    def set_lm_info(self, vocab: int) -> None:
        shortest = min(len(s) for s in self.streams.values())
        if shortest < self.seq_len + 1:
            raise SpecError("seq_len", self.seq_len,
                            f"longer than the shortest split ({shortest - 1:,} characters)")
        train, held_out = self.streams["train"], self.streams["eval"]
        bpc = unigram_bits(train, held_out, vocab)
        top = int(torch.bincount(train.long(), minlength=vocab).argmax())
        acc = float((held_out == top).double().mean())
        self.info = TaskInfo(
            input_kind="tokens", input_dim=vocab, output_kind="classes", output_dim=vocab,
            per_position=True, input_len=self.seq_len,
            metrics=(Metric("loss", False, "nats"), Metric("bpc", False, "bits"),
                     Metric("accuracy", True)),
            primary_metric="bpc",
            baselines={"bpc": bpc, "loss": bpc * LN2, "accuracy": acc},
            baseline_notes={"bpc": "add-one unigram model of the train split, on the eval split",
                            "loss": "the same unigram model, in nats",
                            "accuracy": "most frequent train character, on the eval split"},
        )

    def _windows(self, stream: torch.Tensor, starts: torch.Tensor, device: torch.device | str):
        offsets = torch.arange(self.seq_len + 1)
        chunk = stream[starts[:, None] + offsets].long()  # (B, L + 1)
        return chunk[:, :-1].to(device), chunk[:, 1:].to(device)

    def train_batches(self, seed: int, batch_size: int, device: torch.device | str
                      ) -> Iterator:
        stream = self.streams["train"]
        gen = generator(seed, "train", "cpu")
        high = len(stream) - self.seq_len  # last start leaving L + 1 tokens
        while True:
            starts = torch.randint(0, high, (batch_size,), generator=gen)
            yield self._windows(stream, starts, device)

    def eval_batches(self, seed: int, batch_size: int, n_examples: int,
                     device: torch.device | str, split: Split = "eval") -> Iterator:
        stream = self.streams[split]
        n = min(n_examples, (len(stream) - 1) // self.seq_len)
        for first in range(0, n, batch_size):
            starts = torch.arange(first, min(first + batch_size, n)) * self.seq_len
            yield self._windows(stream, starts, device)

    def metric_sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, int]]:
        sums = super().metric_sums(out, y)
        nats, n = sums["loss"]
        sums["bpc"] = (nats / LN2, n)
        return sums
