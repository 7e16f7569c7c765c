"""The formal-language tasks of Delétang et al. 2023, "Neural Networks and the Chomsky
Hierarchy" (ICLR), with the input/output encodings of
``google-deepmind/neural_networks_chomsky_hierarchy`` (``tasks/<level>/<task>.py``, one file
per task; the protocol in ``experiments/example.py``, ``experiments/utils.py``,
``experiments/training.py`` and ``experiments/range_evaluation.py``).

Levels: regular (``parity_check``, ``even_pairs``, ``modular_arithmetic``,
``cycle_navigation``), deterministic context-free (``stack_manipulation``,
``reverse_string``, ``modular_arithmetic_brackets``, ``solve_equation``) and
context-sensitive (``duplicate_string``, ``missing_duplicate_string``, ``odds_first``,
``binary_addition``, ``binary_multiplication``, ``compute_sqrt``, ``bucket_sort``).

The protocol (``make_model_with_empty_targets``): the model reads the task's input string of
length ``n`` (``seq_len``; ``modular_arithmetic`` uses ``n - 1`` for even ``n``, as the
reference), then ``output_length(n)`` query tokens (token id = the input vocabulary size), and
answers at the query positions. So ``x`` has ``input_len = n + output_length(n)`` tokens of a
vocabulary one larger than the task's; a one-symbol answer is a pooled label (read at the last
position, the single query token, by the default last-position pooling); a sequence answer is
per-position, ``-100`` at the ``n`` input positions. As in the reference, the loss covers
every output position while accuracy, for the three tasks with a termination symbol
(``stack_manipulation``, ``binary_addition``, ``binary_multiplication``), counts output
positions up to and including the first termination symbol only (``accuracy_mask``).

Worked example, ``reverse_string`` at ``seq_len = 4``: input ``1 0 1 1``, so
``x = 1 0 1 1 2 2 2 2`` (2 = query) and ``y = -100 -100 -100 -100 1 1 0 1``.

Lengths: every task takes any ``seq_len >= 1``; at lengths where a task is degenerate the
reference's convention is kept (``solve_equation`` below 3: all-zero input, answer 0;
``missing_duplicate_string`` at 1: input ``1``, answer 1; ``binary_addition`` and
``binary_multiplication`` at 1 and 2: see their classes). Length generalisation (train on
lengths 1..40, score the mean accuracy over longer lengths) is scored by
:func:`generalisation_score`.

Randomness: vectorised tasks draw from the job's ``torch.Generator`` on the device; tasks the
reference samples with Python big integers or recursion draw a Python ``random.Random``
seeded from it, so the same seed gives the same bytes either way. Baselines: the best constant
prediction (majority class of the scored labels) and the class-frequency cross-entropy,
estimated on 512 examples of a fixed stream (fewer for long string answers: at least 16,384
output symbols).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import IGNORE, Metric, Task, TaskInfo, generator

Pair = tuple[torch.Tensor, torch.Tensor]  # (inputs (B, n), targets (B, output length))
BASELINE_EXAMPLES = 512  # at most; string answers use fewer, 16,384 output symbols at least


def py_rng(gen: torch.Generator) -> random.Random:
    """A Python RNG seeded from ``gen`` (for samplers that need big integers or recursion)."""
    return random.Random(int(torch.randint(0, 2**62, (1,), generator=gen,
                                           device=gen.device).item()))


def bits(gen: torch.Generator, shape: tuple[int, ...], high: int, device: torch.device
         ) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen, device=device)


def generalisation_score(acc_by_length: dict[int, float], train_lengths: Iterable[int],
                         longer_only: bool = True) -> float:
    """Mean accuracy over the evaluated lengths never seen in training (Delétang et al.).

    ``longer_only`` (default): only lengths longer than the longest training length (the
    paper: train 1..40, score 41..500); otherwise every evaluated length not in
    ``train_lengths``. (The reference ``example.py`` averages ``accuracies[41:]`` of lengths
    starting at 1, i.e. 42..max; the paper's text says 41.) Raises ValueError if no length
    qualifies.
    """
    seen = set(train_lengths)
    if not seen:
        raise ValueError("train_lengths is empty")
    top = max(seen)
    unseen = [n for n in acc_by_length if n not in seen and (n > top or not longer_only)]
    if not unseen:
        raise ValueError(f"no evaluated length beyond the training lengths (max {top})")
    return sum(acc_by_length[n] for n in unseen) / len(unseen)


def check_int(task: str, key: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer {low}..{high}"
        raise SpecError(f"tasks.{task}.params.{key}", value, allowed)


class FormalLanguage(Task):
    """Base: ``examples`` draws inputs and targets; the protocol around it is shared."""

    name: ClassVar[str]
    level: ClassVar[str]  # "regular", "dcf" (deterministic context-free), "cs"
    vocab: int = 2  # the task's input symbols (the query token is one more)
    classes: int = 2
    terminal: ClassVar[int | None] = None  # termination symbol bounding the accuracy mask
    version = 1

    def __init__(self, seq_len: int, **params: Any) -> None:
        super().__init__(seq_len, **params)
        self.configure(**params)
        self.n = self.length(seq_len, params)
        self.out_len = self.output_length(self.n)
        baselines, notes = self.estimate_baselines()
        self.info = TaskInfo(
            input_kind="tokens", input_dim=self.vocab + 1, output_kind="classes",
            output_dim=self.classes, per_position=self.sequence_output,
            input_len=self.n + self.out_len,
            metrics=(Metric("loss", False, "nats"), Metric("accuracy", True)),
            primary_metric="accuracy", baselines=baselines, baseline_notes=notes)

    sequence_output: ClassVar[bool] = False  # a string answer (per position), not one symbol

    def configure(self, **params: Any) -> None:
        """Set task params (validated by :meth:`validate`)."""
        self.validate(params)

    @classmethod
    def validate(cls, params: dict[str, Any]) -> None:
        for key in params:
            raise SpecError(f"tasks.{cls.name}.params.{key}", key, "allowed params: none")

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        cls.validate(params)

    @classmethod
    def length(cls, seq_len: int, params: dict[str, Any]) -> int:
        """The input string's length for this ``seq_len``."""
        return seq_len

    @classmethod
    def output_length(cls, n: int) -> int:
        return 1

    @classmethod
    def input_len(cls, seq_len: int, params: dict[str, Any]) -> int:
        n = cls.length(seq_len, params)
        return n + cls.output_length(n)

    def examples(self, gen: torch.Generator, batch: int, device: torch.device) -> Pair:
        raise NotImplementedError

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        inputs, targets = self.examples(gen, batch_size, torch.device(device))
        inputs, targets = inputs.to(device).long(), targets.to(device).long()
        query = torch.full((batch_size, self.out_len), self.vocab, dtype=torch.long,
                           device=device)
        x = torch.cat([inputs, query], dim=1)  # (B, n + out)
        if not self.sequence_output:
            return x, targets[:, 0]  # (B,)
        blank = torch.full((batch_size, self.n), IGNORE, dtype=torch.long, device=device)
        return x, torch.cat([blank, targets], dim=1)  # (B, n + out)

    def scored(self, y: torch.Tensor) -> torch.Tensor:
        """Which labels count for accuracy: all but ``-100``, and for tasks with a termination
        symbol only output positions up to the first one (the reference's accuracy mask)."""
        mask = y != IGNORE
        if self.terminal is not None and y.dim() == 2:
            out = y[:, -self.out_len:]
            stop = (out == self.terminal).int().argmax(dim=1, keepdim=True)  # (B, 1)
            keep = torch.arange(self.out_len, device=y.device)[None] <= stop
            mask = mask.clone()
            mask[:, -self.out_len:] &= keep
        return mask

    def metric_sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, int]]:
        sums = super().metric_sums(out, y)
        mask = self.scored(y)
        correct = (out.argmax(-1) == y) & mask
        sums["accuracy"] = (correct.sum().item(), int(mask.sum()))
        return sums

    def estimate_baselines(self) -> tuple[dict[str, float], dict[str, str]]:
        gen = generator(0, f"{self.name}/baseline", "cpu")
        n = BASELINE_EXAMPLES
        if self.sequence_output:
            n = min(n, max(32, 16_384 // self.out_len))
        _, y = self.sample(gen, n, torch.device("cpu"))
        mask = self.scored(y)
        counts = torch.bincount(y[mask], minlength=self.classes).double()
        loss_labels = y[y != IGNORE]
        freq = torch.bincount(loss_labels, minlength=self.classes).double() + 1
        prior = freq / freq.sum()
        return ({"accuracy": float(counts.max() / counts.sum()),
                 "loss": float(-prior.log()[loss_labels].mean())},
                {"accuracy": f"best constant answer (majority class of the scored symbols), "
                             f"estimated on {n} examples",
                 "loss": f"class frequencies of the output symbols, estimated on {n} "
                         "examples"})


# --- regular -------------------------------------------------------------------------------
class ParityCheck(FormalLanguage):
    """``tasks/regular/parity_check.py``: a binary string; the answer is its number of 1s mod 2.

    Example: ``1 0 1 0 1 0 0`` -> 1 (three 1s)."""

    name, level = "parity_check", "regular"

    def examples(self, gen, batch, device):
        s = bits(gen, (batch, self.n), 2, device)
        return s, (s.sum(1) % 2)[:, None]


class EvenPairs(FormalLanguage):
    """``tasks/regular/even_pairs.py``: a binary string; the answer is the number of ``01``
    and ``10`` pairs mod 2 (so 1 iff the first and last symbols differ).

    Example: ``0 1 0 1 0 0 1`` -> 1 (five unequal neighbours)."""

    name, level = "even_pairs", "regular"

    def examples(self, gen, batch, device):
        s = bits(gen, (batch, self.n), 2, device)
        return s, ((s[:, 1:] != s[:, :-1]).sum(1) % 2)[:, None]


OPERATORS = {"+": 0, "-": 1, "*": 2}  # the reference's OP_BY_CHARACTER ('_', 3, never drawn)


class ModularArithmetic(FormalLanguage):
    """``tasks/regular/modular_arithmetic.py``: ``d op d op ... d`` with digits in
    ``0..modulus-1`` (tokens ``0..modulus-1``) and operators ``+ - *`` (tokens ``modulus +
    0, 1, 2``; ``modulus + 3`` is the reference's unused blank), evaluated with ``*`` before
    ``+`` and ``-``, mod ``modulus`` (5 in the paper). The string has odd length: an even
    ``seq_len`` uses ``seq_len - 1``, as the reference.

    Example (mod 5): ``1 + 2 * 3`` = 7 -> 2; ``1 - 1 - 1`` -> 4. (We reduce exactly mod
    ``modulus``; the reference's int32 products can overflow on chains of more than about 15
    multiplications, which it draws with probability about 3^-15 per position.)"""

    name, level = "modular_arithmetic", "regular"

    def configure(self, modulus: int = 5, operators: list[str] | None = None) -> None:  # type: ignore[override]
        self.validate({"modulus": modulus, "operators": operators})
        self.modulus = modulus
        self.ops = sorted(OPERATORS[o] for o in (operators or ["+", "*", "-"]))
        self.vocab, self.classes = modulus + 4, modulus

    @classmethod
    def validate(cls, params):
        for key in params:
            if key not in ("modulus", "operators"):
                raise SpecError(f"tasks.{cls.name}.params.{key}", key,
                                "allowed params: modulus, operators")
        check_int(cls.name, "modulus", params.get("modulus", 5), 2)
        ops = params.get("operators")
        if ops is not None and (not isinstance(ops, list) or not ops
                                or any(o not in OPERATORS for o in ops)):
            raise SpecError(f"tasks.{cls.name}.params.operators", ops,
                            "a non-empty list of '+', '-', '*'")

    @classmethod
    def length(cls, seq_len, params):
        return seq_len if seq_len % 2 else seq_len - 1 if seq_len > 1 else 1

    def examples(self, gen, batch, device):
        m, n = self.modulus, self.n
        digits = bits(gen, (batch, n // 2 + 1), m, device)
        pick = bits(gen, (batch, n // 2), len(self.ops), device)
        ops = torch.tensor(self.ops, device=device)[pick]
        s = torch.empty(batch, n, dtype=torch.long, device=device)
        s[:, 0::2], s[:, 1::2] = digits, m + ops
        total = torch.zeros(batch, dtype=torch.long, device=device)
        term = digits[:, 0] % m
        for j in range(n // 2):  # left to right: products bind tighter than sums
            op, d = ops[:, j], digits[:, j + 1]
            total = torch.where(op == 2, total, (total + term) % m)
            term = torch.where(op == 2, term * d, torch.where(op == 0, d, -d)) % m
        return s, ((total + term) % m)[:, None]


class CycleNavigation(FormalLanguage):
    """``tasks/regular/cycle_navigation.py``: moves on a cycle of 5 states from state 0;
    token 0 steps left, 1 stays, 2 steps right (the reference's ``action - 1``); the answer
    is the final state.

    Example: ``2 0 1 0 0`` -> +1 - 1 + 0 - 1 - 1 = -2 -> state 3."""

    name, level, vocab, classes = "cycle_navigation", "regular", 3, 5

    def examples(self, gen, batch, device):
        a = bits(gen, (batch, self.n), 3, device)
        return a, ((a - 1).sum(1) % 5)[:, None]


# --- deterministic context-free --------------------------------------------------------------
class StackManipulation(FormalLanguage):
    """``tasks/dcf/stack_manipulation.py``: a stack of bits given bottom to top (length drawn
    from ``1..n-1``), then actions 2 = POP (ignored on an empty stack), 3 = PUSH 0,
    4 = PUSH 1; the answer is the final stack top to bottom, then the termination symbol 2,
    then 0s to length ``n + 1``. At ``n = 1`` the input is one bit and the stack is that bit.

    Example: ``0 1 1 0 4 2 2`` -> stack 0 1 1 -> ``1 1 0 2 0 0 0 0``."""

    name, level, vocab, classes, terminal = "stack_manipulation", "dcf", 5, 3, 2
    sequence_output = True

    @classmethod
    def output_length(cls, n):
        return n + 1

    def examples(self, gen, batch, device):
        rng, n = py_rng(gen), self.n
        inputs, targets = [], []
        for _ in range(batch):
            if n == 1:
                seq = [rng.randrange(2)]
                stack = list(seq)
            else:
                k = rng.randint(1, n - 1)
                stack = [rng.randrange(2) for _ in range(k)]
                seq = stack + [rng.randint(2, 4) for _ in range(n - k)]
                for a in seq[k:]:
                    if a == 2:
                        if stack:
                            stack.pop()
                    else:
                        stack.append(a - 3)
            out = [*stack[::-1], 2]
            inputs.append(seq)
            targets.append(out + [0] * (n + 1 - len(out)))
        return torch.tensor(inputs), torch.tensor(targets)


class ReverseString(FormalLanguage):
    """``tasks/dcf/reverse_string.py``: a string over ``vocab_size`` symbols (2 in the paper);
    the answer is the string reversed. Example: ``0 1 1 0 1 0`` -> ``0 1 0 1 1 0``."""

    name, level = "reverse_string", "dcf"

    def configure(self, vocab_size: int = 2) -> None:  # type: ignore[override]
        self.validate({"vocab_size": vocab_size})
        self.vocab = self.classes = vocab_size

    @classmethod
    def validate(cls, params):
        for key in params:
            if key != "vocab_size":
                raise SpecError(f"tasks.{cls.name}.params.{key}", key,
                                "allowed params: vocab_size")
        check_int(cls.name, "vocab_size", params.get("vocab_size", 2), 1)

    @classmethod
    def output_length(cls, n):
        return n

    sequence_output = True

    def transform(self, s: torch.Tensor) -> torch.Tensor:
        return s.flip(1)

    def examples(self, gen, batch, device):
        s = bits(gen, (batch, self.n), self.vocab, device)
        return s, self.transform(s)


def expression(rng: random.Random, modulus: int, length: int, mult: bool) -> tuple[str, int]:
    """A bracketed modular expression of exactly ``length`` characters and its value, drawn as
    ``generate_one_expression_and_result`` does (``tasks/dcf/modular_arithmetic_brackets.py``):
    lengths 1-4 are ``d``, ``-d``, ``(d)``, ``(-d)``; longer ones ``(L op R)`` with the left
    length uniform in ``1..length-4``."""
    if length <= 4:
        d = rng.randrange(modulus)
        return (str(d), d) if length == 1 else (f"-{d}", -d % modulus) if length == 2 else (
            f"({d})", d) if length == 3 else (f"(-{d})", -d % modulus)
    left = rng.randint(1, length - 4)
    ls, lv = expression(rng, modulus, left, mult)
    rs, rv = expression(rng, modulus, length - left - 3, mult)
    op = rng.randrange(3 if mult else 2)
    if op == 0:
        return f"({ls}+{rs})", (lv + rv) % modulus
    if op == 1:
        return f"({ls}-{rs})", (lv - rv) % modulus
    return f"({ls}*{rs})", (lv * rv) % modulus


class _Modular(FormalLanguage):
    """Shared params of the bracketed tasks: ``modulus`` 2..10 (one character per digit)."""

    level = "dcf"
    extra_params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def validate(cls, params):
        allowed = ("modulus", *cls.extra_params)
        for key in params:
            if key not in allowed:
                raise SpecError(f"tasks.{cls.name}.params.{key}", key,
                                f"allowed params: {', '.join(allowed)}")
        check_int(cls.name, "modulus", params.get("modulus", 5), 2, 10)
        if not isinstance(params.get("mult", True), bool):
            raise SpecError(f"tasks.{cls.name}.params.mult", params["mult"], "true or false")


class ModularArithmeticBrackets(_Modular):
    """``tasks/dcf/modular_arithmetic_brackets.py``: a bracketed expression of exactly ``n``
    characters over digits ``0..modulus-1`` (tokens ``0..modulus-1``), ``+ - *`` (tokens
    ``modulus + 0, 1, 2``) and ``( )`` (``modulus + 3, 4``); vocabulary ``modulus + 6`` as in
    the reference. The answer is its value mod ``modulus`` (5). ``mult`` defaults to true, the
    paper's setting (``experiments/constants.py``).

    Example (mod 5, n = 8): ``((3)*-4)`` -> 3 * (-4) = 3 * 1 = 3."""

    name = "modular_arithmetic_brackets"
    extra_params = ("mult",)

    def configure(self, modulus: int = 5, mult: bool = True) -> None:  # type: ignore[override]
        self.validate({"modulus": modulus, "mult": mult})
        self.modulus, self.mult = modulus, mult
        self.vocab, self.classes = modulus + 6, modulus
        self.table = {**{str(d): d for d in range(modulus)}, "+": modulus, "-": modulus + 1,
                      "*": modulus + 2, "(": modulus + 3, ")": modulus + 4}

    def examples(self, gen, batch, device):
        rng = py_rng(gen)
        pairs = [expression(rng, self.modulus, self.n, self.mult) for _ in range(batch)]
        return (torch.tensor([[self.table[c] for c in text] for text, _ in pairs]),
                torch.tensor([[v] for _, v in pairs]))


class SolveEquation(_Modular):
    """``tasks/dcf/solve_equation.py``: a bracketed ``+``/``-`` expression of ``n - 2``
    characters with one digit replaced by ``x``, then ``=`` and its value; the answer is the
    replaced digit (unique: no multiplication). Tokens: digits ``0..modulus-1``, then
    ``+ - ( ) x =`` (``modulus + 0..5``), as the reference's ``alphabet_to_int``. Below
    ``n = 3`` the reference's convention: all-zero input, answer 0.

    Example (mod 5, n = 7): ``(3-x)=1`` -> 2."""

    name = "solve_equation"

    def configure(self, modulus: int = 5) -> None:  # type: ignore[override]
        self.validate({"modulus": modulus})
        self.modulus = modulus
        self.vocab, self.classes = modulus + 6, modulus
        self.table = {**{str(d): d for d in range(modulus)}, "+": modulus, "-": modulus + 1,
                      "(": modulus + 2, ")": modulus + 3, "x": modulus + 4, "=": modulus + 5}

    def examples(self, gen, batch, device):
        n = self.n
        if n < 3:
            return (torch.zeros(batch, n, dtype=torch.long),
                    torch.zeros(batch, 1, dtype=torch.long))
        rng = py_rng(gen)
        rows, answers = [], []
        digits = set("0123456789"[:self.modulus])
        for _ in range(batch):
            text, value = expression(rng, self.modulus, n - 2, mult=False)
            at = rng.randrange(len(text))
            while text[at] not in digits:
                at = (at + 1) % (n - 2)
            answers.append([int(text[at])])
            rows.append([self.table[c] for c in f"{text[:at]}x{text[at + 1:]}={value}"])
        return torch.tensor(rows), torch.tensor(answers)


# --- context-sensitive -----------------------------------------------------------------------
class DuplicateString(ReverseString):
    """``tasks/cs/duplicate_string.py``: the answer is the string twice (output ``2n``).
    Example: ``1 0 1`` -> ``1 0 1 1 0 1``."""

    name, level = "duplicate_string", "cs"

    @classmethod
    def output_length(cls, n):
        return 2 * n

    def transform(self, s):
        return torch.cat([s, s], dim=1)


class OddsFirst(ReverseString):
    """``tasks/cs/odds_first.py``: the symbols at odd (0-based) positions, then those at even
    positions: ``s[1::2] + s[0::2]`` as the reference's code computes it (its docstring
    describes the 1-based reading, ``s_1 s_3 ... s_2 s_4 ...``, the other order).

    Example: ``0 0 1 1 0 1 0 1`` -> ``0 1 1 1 0 1 0 0``."""

    name, level = "odds_first", "cs"

    def transform(self, s):
        return torch.cat([s[:, 1::2], s[:, 0::2]], dim=1)


class BucketSort(ReverseString):
    """``tasks/cs/bucket_sort.py``: a string over ``vocab_size`` symbols (5 in the paper); the
    answer is the string sorted. Example: ``1 0 2 0 4 1 1 2`` -> ``0 0 1 1 1 2 2 4``."""

    name, level = "bucket_sort", "cs"

    def configure(self, vocab_size: int = 5) -> None:  # type: ignore[override]
        self.validate({"vocab_size": vocab_size})
        self.vocab = self.classes = vocab_size

    def transform(self, s):
        return s.sort(dim=1).values


class MissingDuplicateString(FormalLanguage):
    """``tasks/cs/missing_duplicate_string.py``: a binary string of ``n // 2`` symbols written
    twice with one symbol replaced by 2 (an odd ``n`` ends with the pad symbol 3); the answer
    is the replaced symbol. At ``n = 1``: input ``1``, answer 1 (the reference's convention).

    Example: ``0 1 1 0 0 2 1 0`` -> 1."""

    name, level, vocab = "missing_duplicate_string", "cs", 4

    def examples(self, gen, batch, device):
        n = self.n
        if n == 1:
            ones = torch.ones(batch, 1, dtype=torch.long, device=device)
            return ones, ones
        half = bits(gen, (batch, n // 2), 2, device)
        s = torch.cat([half, half], dim=1)
        at = bits(gen, (batch, 1), s.shape[1], device)
        answer = s.gather(1, at)
        s = s.scatter(1, at, 2)
        if n % 2:
            s = torch.cat([s, torch.full((batch, 1), 3, device=device)], dim=1)
        return s, answer


def little_endian(value: int, width: int) -> list[int]:
    """Binary digits of ``value``, least significant first, zero-padded to ``width`` (the
    minimal form, ``0`` for zero, when ``width`` is 0)."""
    return [int(c) for c in reversed(f"{value:b}".zfill(width))]


class BinaryAddition(FormalLanguage):
    """``tasks/cs/binary_addition.py``: ``a 2 b`` with ``a`` and ``b`` in little-endian binary
    (lengths ``1..n-2`` and the rest; values uniform in ``1..2^len - 1``, leading zeros kept);
    the answer is ``a + b`` in minimal little-endian binary, the termination symbol 2, then
    0s to length ``n + 1``. At ``n <= 2`` the input is one number (uniform in
    ``0..2^n - 2``, no separator) and the answer that number.

    Example: ``0 0 1 2 0 1 1 0 1`` (4 + 22) -> ``0 1 0 1 1 2 0 0 0 0`` (26)."""

    name, level, vocab, classes, terminal = "binary_addition", "cs", 3, 3, 2
    sequence_output = True

    @classmethod
    def output_length(cls, n):
        return n + 1

    def combine(self, a: int, b: int) -> int:
        return a + b

    def small(self, value: int, n: int) -> list[int]:
        return little_endian(value, 0)

    def examples(self, gen, batch, device):
        rng, n = py_rng(gen), self.n
        out_len = self.output_length(n)
        inputs, targets = [], []
        for _ in range(batch):
            if n <= 2:
                v = rng.randint(0, 2**n - 2)
                inputs.append(little_endian(v, n))
                res = self.small(v, n)
            else:
                la = rng.randint(1, n - 2)
                lb = n - 1 - la
                a, b = rng.randint(1, 2**la - 1), rng.randint(1, 2**lb - 1)
                inputs.append([*little_endian(a, la), 2, *little_endian(b, lb)])
                res = little_endian(self.combine(a, b), 0)
            targets.append(res + [2] + [0] * (out_len - 1 - len(res)))
        return torch.tensor(inputs), torch.tensor(targets)


class BinaryMultiplication(BinaryAddition):
    """``tasks/cs/binary_multiplication.py``: as :class:`BinaryAddition` with ``a * b``, output
    length ``n``. At ``n <= 2`` the answer is ``n - 1`` zeros (the reference's placeholder),
    then the termination symbol.

    Example: ``1 0 0 1 2 0 0 0 0 0 1`` (9 * 32) -> ``0 0 0 0 0 1 0 0 1 2 0`` (288)."""

    name = "binary_multiplication"

    @classmethod
    def output_length(cls, n):
        return n

    def combine(self, a: int, b: int) -> int:
        return a * b

    def small(self, value: int, n: int) -> list[int]:
        return [0] * (n - 1)


class ComputeSqrt(FormalLanguage):
    """``tasks/cs/compute_sqrt.py``: a number uniform in ``1..2^n - 1`` in big-endian binary
    (``n`` digits, leading zeros kept); the answer is its integer square root in big-endian
    binary of ``ceil(n / 2)`` digits. Example: ``1 0 0 1 0 1`` (37) -> ``1 1 0`` (6)."""

    name, level = "compute_sqrt", "cs"
    sequence_output = True

    @classmethod
    def output_length(cls, n):
        return math.ceil(n / 2)

    def examples(self, gen, batch, device):
        rng, n = py_rng(gen), self.n
        width = self.output_length(n)
        nums = [rng.randint(1, 2**n - 1) for _ in range(batch)]
        return (torch.tensor([little_endian(v, n)[::-1] for v in nums]),
                torch.tensor([little_endian(math.isqrt(v), width)[::-1] for v in nums]))


TASK_CLASSES: tuple[type[FormalLanguage], ...] = (
    ParityCheck, EvenPairs, ModularArithmetic, CycleNavigation,
    StackManipulation, ReverseString, ModularArithmeticBrackets, SolveEquation,
    DuplicateString, MissingDuplicateString, OddsFirst, BinaryAddition, BinaryMultiplication,
    ComputeSqrt, BucketSort,
)
