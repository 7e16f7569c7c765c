"""ListOps (Nangia & Bowman 2018) as in Long Range Arena (Tay et al. 2021, "Long Range Arena:
A Benchmark for Efficient Transformers"): our own seeded generator following LRA's definition
in ``google-research/long-range-arena``, ``lra_benchmarks/data/listops.py``, and the token
stream of its input pipeline (``lra_benchmarks/listops/input_pipeline.py``).

The generator (LRA's ``generate_tree``): a node at depth ``d < max_depth`` is an operator
with probability 0.25, else a value (always a value at ``max_depth``); an operator takes
``2..max_args`` arguments (uniform), each grown the same way one level deeper, and is one of
MIN, MAX, MED, SM (uniform, drawn after its arguments as in LRA). Values are 0..9. MED is
``int(numpy.median(args))`` (the mean of the two middle values, rounded down, for an even
count); SM is the sum mod 10. An expression's length counts one token per operator, value and
closing bracket (LRA's ``length``: an operator node is 2 + its arguments); LRA keeps
expressions with ``500 < length < 2000`` (strict bounds, ``min_length`` and ``max_length``
here) and pads them to 2,000 tokens.

Tokens: ``0`` padding, ``1..10`` the values 0..9, ``11`` ``[MIN``, ``12`` ``[MAX``,
``13`` ``[MED``, ``14`` ``[SM``, ``15`` ``]`` (vocabulary 16). LRA writes expressions with
parentheses, ``( ( [MAX 2 ) 9 ) ]``, that its tokenizer drops; the operator token carries the
opening bracket. (LRA's own ``tfds`` tokenizer also dropped ``]``, which left the trees
ambiguous; the S4 and S5 loaders keep it as a token, as we do.)

Worked example: ``[MAX 2 9 [MIN 4 7 ] 0 ]`` (length 9) is the input
``12 3 10 11 5 8 15 1 15`` followed by ``seq_len - 9`` zeros, and its label is 9.

Data. One fixed dataset per ``data_seed`` (LRA: 96,000 train, 2,000 eval, 2,000 test):
generated once and cached under the data directory (:mod:`seqbench.worker.data.cache`;
about 0.6 ms per kept expression at the LRA bounds, so a minute for the LRA sizes). What is
guaranteed: every split is free of duplicates, and no expression occurs in two splits
(examples are compared by a 128-bit BLAKE2b hash of their token string: train is drawn first,
eval rejects anything in train, test anything in train or eval). With ``n_train: null`` the
training examples are instead drawn fresh for every batch from the job seed (an infinite
stream, repeats possible), and every one that occurs in the eval or test set is rejected, so
the held-out sets stay unseen. Metrics: accuracy over 10 classes; the baseline is the majority
class of the training labels (of the test labels for the infinite stream), on the eval split.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import Metric, TaskInfo, derive_seed, generator
from seqbench.worker.data.cache import generated_source, load_or_generate
from seqbench.worker.data.dataset import ArrayTask, class_baselines

VALUE_P = 0.25  # LRA: probability that a node above max_depth is an operator
PAD, DIGIT0, OP0, END = 0, 1, 11, 15
OPERATORS = ("MIN", "MAX", "MED", "SM")
VOCAB = 16
SPLITS = ("train", "eval", "test")


def operate(op: int, args: list[int]) -> int:
    """The value of operator ``op`` (0 MIN, 1 MAX, 2 MED, 3 SM) on its arguments."""
    if op == 0:
        return min(args)
    if op == 1:
        return max(args)
    if op == 2:
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    return sum(args) % 10


def grow(uniform: Callable[[], float], depth: int, max_depth: int, max_args: int,
         out: list[int]) -> int:
    """Append one random (sub)tree's tokens to ``out``; return its value. ``uniform`` draws
    from [0, 1); LRA's draw order: operator or value, argument count, the arguments, then
    the operator."""
    if depth < max_depth and uniform() <= VALUE_P:
        at = len(out)
        out.append(END)  # placeholder for the operator, drawn after the arguments
        args = []
        for _ in range(2 + int(uniform() * (max_args - 1))):
            args.append(grow(uniform, depth + 1, max_depth, max_args, out))
        op = int(uniform() * 4)
        out[at] = OP0 + op
        out.append(END)
        return operate(op, args)
    value = int(uniform() * 10)
    out.append(DIGIT0 + value)
    return value


def largest_tree(max_depth: int, max_args: int) -> int:
    """Length of the largest expression the generator can make (every node an operator)."""
    size = 1
    for _ in range(max_depth - 1):
        size = 2 + max_args * size
    return size


def digest(tokens: list[int] | bytes) -> bytes:
    """128-bit BLAKE2b hash of an expression's token string: how examples are compared."""
    return hashlib.blake2b(bytes(tokens), digest_size=16).digest()


def draw(rng: random.Random, n: int, bounds: tuple[int, int], max_depth: int, max_args: int,
         exclude: set[bytes], unique: bool) -> tuple[list[list[int]], list[int]]:
    """``n`` expressions with ``lo < length < hi``, none in ``exclude`` (all distinct if
    ``unique``; their hashes are added to ``exclude``)."""
    lo, hi = bounds
    tokens: list[list[int]] = []
    labels: list[int] = []
    attempts, limit = 0, 10_000 * n + 1_000_000
    while len(tokens) < n:
        attempts += 1
        if attempts > limit:
            raise SpecError("tasks.listops.params", {"min_length": lo, "max_length": hi},
                            f"found only {len(tokens)} of {n} distinct expressions in "
                            f"{limit:,} draws: widen the length bounds or lower the counts")
        out: list[int] = []
        value = grow(rng.random, 1, max_depth, max_args, out)
        if not lo < len(out) < hi:
            continue
        key = digest(out)
        if key in exclude:
            continue
        if unique:
            exclude.add(key)
        tokens.append(out)
        labels.append(value)
    return tokens, labels


def pack(tokens: list[list[int]], labels: list[int]) -> dict[str, np.ndarray]:
    lengths = np.array([len(t) for t in tokens], dtype=np.int32)
    flat = np.fromiter((v for t in tokens for v in t), dtype=np.uint8, count=int(lengths.sum()))
    return {"tokens": flat, "lengths": lengths, "labels": np.array(labels, dtype=np.uint8)}


def unpack(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """Concatenated expressions -> one array per expression."""
    return np.split(flat, np.cumsum(lengths)[:-1])


def pad(flat: np.ndarray, lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """Concatenated expressions -> ``(N, seq_len)`` uint8, zero padding at the end."""
    out = np.zeros((len(lengths), seq_len), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - np.repeat(starts, lengths)
    out[rows, cols] = flat
    return out


class ListOps(ArrayTask):
    __doc__ = __doc__
    name = "listops"
    version = 1

    def __init__(self, seq_len: int, min_length: int = 500, max_length: int | None = None,
                 max_depth: int = 10, max_args: int = 10, n_train: int | None = 96_000,
                 n_eval: int = 2_000, n_test: int = 2_000, data_seed: int = 0) -> None:
        params = dict(min_length=min_length, max_length=max_length, max_depth=max_depth,
                      max_args=max_args, n_train=n_train, n_eval=n_eval, n_test=n_test,
                      data_seed=data_seed)
        super().__init__(seq_len, **params)
        self.bounds = self.validate(seq_len, params)
        self.max_depth, self.max_args, self.n_train = max_depth, max_args, n_train
        gen_params = {"min_length": self.bounds[0], "max_length": self.bounds[1],
                      "max_depth": max_depth, "max_args": max_args,
                      "counts": [n_train, n_eval, n_test]}
        arrays, manifest = load_or_generate(
            "listops", self.version, gen_params, data_seed,
            lambda: self._generate(data_seed, (n_train, n_eval, n_test)))
        self.splits = {}
        for split in SPLITS:
            if f"{split}/labels" in arrays:
                x = pad(arrays[f"{split}/tokens"], arrays[f"{split}/lengths"], seq_len)
                self.splits[split] = (torch.from_numpy(x),
                                      torch.from_numpy(arrays[f"{split}/labels"].astype(np.int64)))
        self.held_out = {digest(expr.tobytes()) for split in ("eval", "test")
                         for expr in unpack(arrays[f"{split}/tokens"], arrays[f"{split}/lengths"])}
        fit = self.splits["train" if n_train is not None else "test"][1]
        baselines, notes = class_baselines(fit, self.splits["eval"][1], 10)
        if n_train is None:
            notes = {k: v.replace("train split", "test split") for k, v in notes.items()}
        self.info = TaskInfo(
            input_kind="tokens", input_dim=VOCAB, output_kind="classes", output_dim=10,
            per_position=False, input_len=seq_len,
            metrics=(Metric("loss", False, "nats"), Metric("accuracy", True)),
            primary_metric="accuracy", baselines=baselines, baseline_notes=notes)
        self.data_source = generated_source("listops", self.version, data_seed, manifest)

    # --- parameters -----------------------------------------------------------------------
    @classmethod
    def validate(cls, seq_len: int, params: dict[str, Any]) -> tuple[int, int]:
        """Check the params; return the length bounds ``(min_length, max_length)``."""
        p = {"min_length": 500, "max_length": None, "max_depth": 10, "max_args": 10,
             "n_train": 96_000, "n_eval": 2_000, "n_test": 2_000, "data_seed": 0, **params}

        def integer(key: str, low: int, none_ok: bool = False) -> None:
            v = p[key]
            if v is None and none_ok:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SpecError(f"tasks.listops.params.{key}", v,
                                f"an integer >= {low}" + (" or null" if none_ok else ""))

        for key, low in (("min_length", 0), ("max_depth", 1), ("max_args", 2), ("n_eval", 1),
                         ("n_test", 1), ("data_seed", 0)):
            integer(key, low)
        integer("n_train", 1, none_ok=True)
        integer("max_length", 2, none_ok=True)
        lo = p["min_length"]
        hi = seq_len if p["max_length"] is None else p["max_length"]
        if hi > seq_len + 1:
            raise SpecError("tasks.listops.params.max_length", hi,
                            f"at most seq_len + 1 = {seq_len + 1} (expressions are shorter "
                            "than max_length and must fit in seq_len)")
        if lo + 1 >= hi:
            raise SpecError("tasks.listops.params.min_length", lo,
                            f"lengths are kept if min_length < length < max_length = {hi}: "
                            f"min_length must be below {hi - 1}")
        biggest = largest_tree(p["max_depth"], p["max_args"])
        if biggest <= lo:
            raise SpecError("tasks.listops.params.min_length", lo,
                            f"below {biggest}, the longest expression of depth "
                            f"{p['max_depth']} with {p['max_args']} arguments")
        return lo, hi

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        cls.validate(seq_len, params)

    # --- generation -----------------------------------------------------------------------
    def _generate(self, data_seed: int, counts: tuple[int | None, int, int]
                  ) -> dict[str, np.ndarray]:
        seen: set[bytes] = set()
        arrays: dict[str, np.ndarray] = {}
        for split, n in zip(SPLITS, counts, strict=True):
            if n is None:
                continue
            rng = random.Random(derive_seed(data_seed, f"listops/{split}"))
            tokens, labels = draw(rng, n, self.bounds, self.max_depth, self.max_args, seen,
                                  unique=True)
            arrays.update({f"{split}/{k}": v for k, v in pack(tokens, labels).items()})
        return arrays

    def train_batches(self, seed: int, batch_size: int, device: torch.device | str
                      ) -> Iterator:
        if self.n_train is not None:
            yield from super().train_batches(seed, batch_size, device)
            return
        gen = generator(seed, "train", "cpu")
        while True:  # fresh expressions per batch, never one of the held-out sets
            rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))
            tokens, labels = draw(rng, batch_size, self.bounds, self.max_depth, self.max_args,
                                  self.held_out, unique=False)
            arrays = pack(tokens, labels)
            x = torch.from_numpy(pad(arrays["tokens"], arrays["lengths"], self.seq_len))
            yield x.long().to(device), torch.from_numpy(arrays["labels"].astype(np.int64)).to(
                device)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()  # (B, L)
