"""Exact task layouts, baselines and seeding of the synthetic tasks."""

import math

import pytest
import torch

from seqbench.worker.data import TASKS, build_task
from seqbench.worker.data.base import derive_seed, generator


def sample(name, T, batch=256, seed=0, stream="train"):
    task = build_task(name, T)
    return task, *task.sample(generator(seed, stream, "cpu"), batch, torch.device("cpu"))


@pytest.mark.parametrize("T", [1, 5, 100])
def test_copy_memory_layout_is_exact(T):
    _, x, y = sample("copy", T, batch=64)
    assert x.shape == y.shape == (64, T + 20) and x.dtype == y.dtype == torch.long
    symbols = x[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert (x[:, 10:T + 9] == 0).all()  # T - 1 blanks
    assert (x[:, T + 9:] == 9).all() and x[:, T + 9:].shape[1] == 11  # 11 nines, the cue first
    assert (y[:, : T + 10] == 0).all()


def test_copy_targets_are_the_ten_symbols():
    _, x, y = sample("copy", 30)
    assert torch.equal(y[:, -10:], x[:, :10])


def test_copy_symbols_are_uniform_over_one_to_eight():
    _, x, _ = sample("copy", 3, batch=4000)
    counts = torch.bincount(x[:, :10].flatten(), minlength=10)[1:9].float()
    assert counts.min() / counts.max() > 0.9


def test_copy_baselines():
    task = build_task("copy", 1000)
    assert task.info.baselines["loss"] == pytest.approx(10 * math.log(8) / 1020)
    assert task.info.baselines["accuracy"] == 1 / 8
    assert task.info.input_len == 1020


def test_copy_memoryless_predictor_scores_its_baseline():
    """Zeros first, then uniform over 1..8: exactly the documented memoryless loss."""
    task, _, y = sample("copy", 50)
    logits = torch.full((*y.shape, 10), -1e9)
    logits[:, : 50 + 10, 0] = 0  # certain of the blanks
    logits[:, 50 + 10:, 1:9] = 0  # uniform over the symbols
    sums = task.metric_sums(logits, y)
    loss = sums["loss"][0] / sums["loss"][1]
    assert loss == pytest.approx(task.info.baselines["loss"], rel=1e-5)
    assert sums["accuracy"][1] == y.shape[0] * 10  # accuracy counts the recalled positions only


def test_copy_accuracy_scores_only_recalled_positions():
    task, _, y = sample("copy", 20, batch=8)
    logits = torch.nn.functional.one_hot(y, 10).float()
    logits[:, :30] = 0  # wrong everywhere before the recall...
    logits[:, :30, 5] = 1
    value, count = task.metric_sums(logits, y)["accuracy"]
    assert value / count == 1.0  # ...does not lower the recall accuracy


@pytest.mark.parametrize("T", [2, 50, 600])
def test_adding_layout(T):
    _, x, y = sample("adding", T)
    assert x.shape == (256, T, 2) and y.shape == (256, 1)
    values, mask = x[..., 0], x[..., 1]
    assert (values >= 0).all() and (values < 1).all()
    assert (mask.sum(dim=1) == 2).all() and ((mask == 0) | (mask == 1)).all()
    assert torch.allclose(y[:, 0], (values * mask).sum(dim=1))


def test_adding_marked_positions_cover_the_whole_sequence():
    _, x, _ = sample("adding", 10, batch=5000)
    per_position = x[..., 1].sum(dim=0)
    assert per_position.min() > 0.8 * per_position.mean()  # uniform over positions


def test_adding_constant_one_mse_is_close_to_one_sixth():
    task, _, y = sample("adding", 100, batch=200_000)
    mse = ((y - 1.0) ** 2).mean().item()
    assert mse == pytest.approx(1 / 6, abs=0.003)
    assert task.info.baselines["mse"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("name", ["copy", "adding"])
def test_same_seed_same_bytes_other_seed_other_bytes(name):
    _, x1, y1 = sample(name, 40, seed=7)
    _, x2, y2 = sample(name, 40, seed=7)
    _, x3, _ = sample(name, 40, seed=8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_train_and_eval_streams_are_disjoint_seeds():
    assert derive_seed(0, "train") != derive_seed(0, "eval")
    task = build_task("adding", 30)
    xt, _ = next(task.train_batches(0, 32, torch.device("cpu")))
    xe, _ = next(task.eval_batches(0, 32, 32, torch.device("cpu")))
    assert not torch.equal(xt, xe)


def test_eval_batches_cover_exactly_the_requested_examples():
    task = build_task("copy", 5)
    sizes = [x.shape[0] for x, _ in task.eval_batches(0, 100, 250, torch.device("cpu"))]
    assert sizes == [100, 100, 50]


def test_unknown_task_lists_what_exists():
    with pytest.raises(KeyError) as err:
        TASKS["copyy"]
    assert "copy" in str(err.value) and "adding" in str(err.value)
