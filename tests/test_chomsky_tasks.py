"""The Chomsky-hierarchy tasks (Delétang et al. 2023): the protocol's layout (input, query
tokens, -100), every answer recomputed by plain Python from the decoded input, the hand-worked
examples of the docstrings, seeding, the check() refusals, the termination-symbol accuracy
mask, the generalisation score, and a small LSTM that learns parity and generalises."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seqbench.errors import SpecError
from seqbench.worker.data import TASKS, build_task
from seqbench.worker.data.base import IGNORE, generator
from seqbench.worker.data.chomsky import TASK_CLASSES, generalisation_score

NAMES = [cls.name for cls in TASK_CLASSES]
M = 5  # the paper's modulus


def le(bits: list[int]) -> int:
    return sum(b << i for i, b in enumerate(bits))


def to_le(value: int) -> list[int]:
    return [int(c) for c in reversed(bin(value)[2:])]


def expr_text(tokens: list[int], symbols: str) -> str:
    """Tokens -> text: digits 0..M-1, then ``symbols`` from token M on."""
    return "".join(str(t) if t < M else symbols[t - M] for t in tokens)


def answer(name: str, s: list[int]) -> list[int]:
    """The expected output string of task ``name`` for input ``s``, in plain Python."""
    n = len(s)
    if name == "parity_check":
        return [sum(s) % 2]
    if name == "even_pairs":
        return [sum(a != b for a, b in itertools.pairwise(s)) % 2]
    if name == "modular_arithmetic":
        return [eval(expr_text(s, "+-*")) % M]  # Python's precedence: * before + and -
    if name == "cycle_navigation":
        return [sum(a - 1 for a in s) % 5]
    if name == "stack_manipulation":
        split = next((i for i, a in enumerate(s) if a >= 2), n)
        stack = s[:split]
        for a in s[split:]:
            stack = stack[:-1] if a == 2 else [*stack, a - 3]  # POP, or PUSH a - 3
        out = [*reversed(stack), 2]
        return out + [0] * (n + 1 - len(out))
    if name == "reverse_string":
        return s[::-1]
    if name == "modular_arithmetic_brackets":
        return [eval(expr_text(s, "+-*()")) % M]
    if name == "solve_equation":
        if n < 3:
            return [0]
        text = expr_text(s, "+-()x=")
        left, value = text.split("=")
        roots = [x for x in range(M) if eval(left.replace("x", str(x))) % M == int(value)]
        assert len(roots) == 1
        return roots
    if name == "duplicate_string":
        return s + s
    if name == "missing_duplicate_string":
        if n == 1:
            return [1]
        h = n // 2
        at = s.index(2)
        return [s[(at + h) % (2 * h)]]
    if name == "odds_first":
        return s[1::2] + s[0::2]
    if name in ("binary_addition", "binary_multiplication"):
        add = name == "binary_addition"
        width = n + 1 if add else n
        if n <= 2:
            assert 2 not in s
            res = to_le(le(s)) if add else [0] * (n - 1)
        else:
            at = s.index(2)
            a, b = le(s[:at]), le(s[at + 1:])
            assert a > 0 and b > 0 and 1 <= at <= n - 2
            res = to_le(a + b if add else a * b)
        return res + [2] + [0] * (width - 1 - len(res))
    if name == "compute_sqrt":
        value = int("".join(map(str, s)), 2)
        root = bin(math.isqrt(value))[2:].zfill(math.ceil(n / 2))
        return [int(c) for c in root]
    if name == "bucket_sort":
        return sorted(s)
    raise AssertionError(name)


def draw(name: str, n: int, batch: int = 64, seed: int = 0, stream: str = "train"):
    task = build_task(name, n)
    x, y = task.sample(generator(seed, stream, "cpu"), batch, torch.device("cpu"))
    return task, x, y


@pytest.mark.parametrize("name", NAMES)
def test_layout_queries_and_unscored_inputs(name):
    cls = TASKS[name].load()
    specs = set()
    for n in (1, 2, 3, 5, 8, 13):
        task, x, y = draw(name, n, batch=16)
        length, out_len = task.n, task.out_len
        assert x.shape == (16, length + out_len) == (16, cls.input_len(n, {}))
        assert task.info.input_len == x.shape[1]
        query = task.info.input_dim - 1
        assert (x[:, length:] == query).all() and (x[:, :length] < query).all()
        if task.info.per_position:
            assert y.shape == x.shape and (y[:, :length] == IGNORE).all()
            assert (y[:, length:] >= 0).all() and (y[:, length:] < task.info.output_dim).all()
        else:
            assert y.shape == (16,) and out_len == 1
        specs.add(task.info.io)
    assert len(specs) == 1  # one model fits every length: variable-length training works


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 9, 12, 25, 40])
def test_answers_match_plain_python(name, n):
    task, x, y = draw(name, n)
    length = task.n
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        s = row[:length]
        expected = answer(name, s)
        got = label[length:] if task.info.per_position else [label]
        assert got == expected, (s, got, expected)


@pytest.mark.parametrize(("name", "s", "expected"), [  # the docstrings' worked examples
    ("parity_check", [1, 0, 1, 0, 1, 0, 0], [1]),
    ("even_pairs", [0, 1, 0, 1, 0, 0, 1], [1]),
    ("modular_arithmetic", [1, 5, 2, 7, 3], [2]),  # 1 + 2 * 3
    ("modular_arithmetic", [1, 6, 1, 6, 1], [4]),  # 1 - 1 - 1
    ("cycle_navigation", [2, 0, 1, 0, 0], [3]),
    ("stack_manipulation", [0, 1, 1, 0, 4, 2, 2], [1, 1, 0, 2, 0, 0, 0, 0]),
    ("reverse_string", [0, 1, 1, 0, 1, 0], [0, 1, 0, 1, 1, 0]),
    ("modular_arithmetic_brackets", [8, 8, 3, 9, 7, 6, 4, 9], [3]),  # ((3)*-4)
    ("solve_equation", [7, 3, 6, 9, 8, 10, 1], [2]),  # (3-x)=1
    ("duplicate_string", [1, 0, 1], [1, 0, 1, 1, 0, 1]),
    ("missing_duplicate_string", [0, 1, 1, 0, 0, 2, 1, 0], [1]),
    ("odds_first", [0, 0, 1, 1, 0, 1, 0, 1], [0, 1, 1, 1, 0, 1, 0, 0]),
    ("binary_addition", [0, 0, 1, 2, 0, 1, 1, 0, 1], [0, 1, 0, 1, 1, 2, 0, 0, 0, 0]),
    ("binary_multiplication", [1, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 0]),
    ("compute_sqrt", [1, 0, 0, 1, 0, 1], [1, 1, 0]),
    ("bucket_sort", [1, 0, 2, 0, 4, 1, 1, 2], [0, 0, 1, 1, 1, 2, 2, 4]),
])
def test_hand_worked_examples(name, s, expected):
    assert answer(name, s) == expected


def test_reverse_string_worked_example_layout_exactly():
    task, x, y = draw("reverse_string", 4, batch=8)
    assert task.info.input_dim == 3 and task.info.input_len == 8
    assert (x[:, 4:] == 2).all() and (y[:, :4] == IGNORE).all()
    assert torch.equal(y[:, 4:], x[:, :4].flip(1))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_streams_differ(name):
    _, xa, ya = draw(name, 12, seed=3)
    _, xb, yb = draw(name, 12, seed=3)
    _, xc, _ = draw(name, 12, seed=3, stream="eval")
    _, xd, _ = draw(name, 12, seed=4)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc) and not torch.equal(xa, xd)


def test_lengths_are_drawn_over_their_whole_range():
    _, x, _ = draw("binary_addition", 10, batch=512)
    first = (x[:, :10] == 2).int().argmax(1)  # length of the first number
    assert set(first.tolist()) == set(range(1, 9))  # 1..n-2
    _, x, _ = draw("stack_manipulation", 10, batch=512)
    stack = (x[:, :10] >= 2).int().argmax(1)
    assert set(stack.tolist()) == set(range(1, 10))  # 1..n-1
    _, x, _ = draw("modular_arithmetic", 8, batch=512)
    assert x.shape[1] == 7 + 1 and set(x[:, 1:7:2].flatten().tolist()) == {5, 6, 7}


def test_termination_mask_scores_up_to_the_first_termination_symbol():
    task, _, y = draw("binary_addition", 9, batch=32)
    logits = torch.nn.functional.one_hot(y.clamp(min=0), 3).float() * 10
    out = y[:, 9:]
    stop = (out == 2).int().argmax(1)
    for b in range(32):  # wrong after the termination symbol: not counted
        logits[b, 9 + stop[b] + 1:] = torch.tensor([0.0, 10.0, 0.0])
    sums = task.metric_sums(logits, y)
    assert sums["accuracy"][0] == sums["accuracy"][1] == int((stop + 1).sum())
    assert sums["loss"][1] == 32 * 10  # the loss covers every output position, as the paper
    logits[0, 9] = torch.tensor([0.0, 0.0, 10.0])  # wrong before it: counted
    if y[0, 9] != 2:
        assert task.metric_sums(logits, y)["accuracy"][0] == sums["accuracy"][0] - 1


def test_baselines_are_the_best_constant_answers():
    assert build_task("parity_check", 20).info.baselines["accuracy"] == pytest.approx(0.5,
                                                                                      abs=0.07)
    assert build_task("bucket_sort", 20).info.baselines["accuracy"] == pytest.approx(0.2,
                                                                                     abs=0.05)
    assert build_task("even_pairs", 1).info.baselines["accuracy"] == 1.0  # one symbol: class 0
    addition = build_task("binary_addition", 40).info.baselines["accuracy"]
    assert 0.3 < addition < 0.7


@pytest.mark.parametrize(("name", "params", "match"), [
    ("parity_check", {"modulus": 3}, "allowed params: none"),
    ("modular_arithmetic", {"modulus": 1}, "modulus"),
    ("modular_arithmetic", {"operators": ["/"]}, "'\\+', '-', '\\*'"),
    ("modular_arithmetic_brackets", {"modulus": 11}, "2..10"),
    ("modular_arithmetic_brackets", {"mult": "yes"}, "true or false"),
    ("solve_equation", {"mult": True}, "allowed params: modulus"),
    ("bucket_sort", {"vocab_size": 0}, "vocab_size"),
    ("reverse_string", {"alphabet": 3}, "allowed params: vocab_size"),
])
def test_check_refuses_bad_params(name, params, match):
    with pytest.raises(SpecError, match=match):
        TASKS[name].load().check(10, params)


def test_check_refuses_nonpositive_lengths_and_accepts_params():
    with pytest.raises(SpecError, match="positive"):
        TASKS["parity_check"].load().check(0, {})
    TASKS["modular_arithmetic"].load().check(5, {"modulus": 7, "operators": ["+", "-"]})
    task = build_task("modular_arithmetic", 9, {"modulus": 7, "operators": ["+"]})
    assert (task.info.input_dim, task.info.output_dim) == (7 + 4 + 1, 7)
    x, y = task.sample(generator(0, "train", "cpu"), 16, torch.device("cpu"))
    assert set(x[:, 1:9:2].flatten().tolist()) == {7}
    assert all(sum(r[0:9:2]) % 7 == v for r, v in zip(x.tolist(), y.tolist(), strict=True))


def test_generalisation_score():
    acc = {n: (1.0 if n <= 20 else 0.5 if n <= 40 else 0.25) for n in range(1, 61)}
    assert generalisation_score(acc, range(1, 21)) == pytest.approx((20 * 0.5 + 20 * 0.25) / 40)
    assert generalisation_score(acc, range(1, 41)) == pytest.approx(0.25)
    # xLSTM-style training on 3..40: lengths 1 and 2 are unseen but shorter
    assert generalisation_score(acc, range(3, 41)) == pytest.approx(0.25)
    assert generalisation_score(acc, range(3, 41), longer_only=False) == pytest.approx(
        (2 * 1.0 + 20 * 0.25) / 22)
    with pytest.raises(ValueError, match="beyond"):
        generalisation_score(acc, range(1, 61))
    with pytest.raises(ValueError, match="empty"):
        generalisation_score(acc, [])


def test_small_lstm_learns_parity_and_generalises_to_longer_strings():
    from seqbench.worker.models import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        tasks = {n: build_task("parity_check", n) for n in (*range(1, 21), 40, 50, 60)}
        model = build_model("lstm", {"d_model": 16, "mlp_ratio": 0}, tasks[1].info.io)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        gen = generator(0, "train", "cpu")
        lengths = torch.randint(1, 21, (600,), generator=torch.Generator().manual_seed(0))
        for n in lengths.tolist():  # a length drawn per batch, 1..20
            x, y = tasks[n].sample(gen, 32, torch.device("cpu"))
            opt.zero_grad()
            tasks[n].loss(model(x), y).backward()
            opt.step()
        model.eval()
        acc = {}
        with torch.no_grad():
            g = generator(0, "eval", "cpu")
            for n in (40, 50, 60):
                x, y = tasks[n].sample(g, 256, torch.device("cpu"))
                correct, count = tasks[n].metric_sums(model(x), y)["accuracy"]
                acc[n] = correct / count
    finally:
        torch.set_num_threads(threads)
    assert generalisation_score(acc, range(1, 21)) > 0.95, acc
