"""The gradient-flow probe: the analytic decay of a linear recurrence, agreement with a
per-item brute-force computation, attention's flat profile at init, every registered model,
its own seeded batch, compact storage, and probing during training without changing it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seqbench.catalog import MODELS
from seqbench.config.spec import GradProbeSpec, MeasureSpec, TrainSpec
from seqbench.worker.data import build_task
from seqbench.worker.data.base import IGNORE, generator
from seqbench.worker.gradients import (
    EXACT_DISTANCES,
    GradientProbe,
    compact_distances,
    decay_per_step,
    distance_norms,
    memory_horizon,
    profile,
)
from seqbench.worker.models import build_model, mixer_class, split_params
from seqbench.worker.train import train

CPU = torch.device("cpu")


class LinearRecurrence(nn.Module):
    """One unit, identity activation: ``s_t = a s_{t-1} + embed(x_t)``, read at the last
    position (a pooled output), so ``d loss / d embed_{L-1-d} = a^d x (the same factor)``."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.embed = nn.Linear(2, 1, bias=False)
        self.head = nn.Linear(1, 1)
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (B, L, 1)
        s = torch.zeros_like(h[:, 0])
        for t in range(h.shape[1]):
            s = self.a * s + h[:, t]
        return self.head(s)  # (B, 1)


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_a_linear_recurrence_decays_by_exactly_its_weight_per_step(a):
    torch.manual_seed(0)
    task = build_task("adding", 40)
    x, y = task.sample(generator(0, "grad_probe", CPU), 16, CPU)
    norms = distance_norms(LinearRecurrence(a), task, x, y)
    assert norms.shape == (40,) and np.all(norms > 0)
    np.testing.assert_allclose(norms / norms[0], a ** np.arange(40), rtol=1e-5)
    assert decay_per_step(norms) == pytest.approx(math.log(a), abs=1e-5)
    # the first distance below 1% of norm(0), a^d < 0.01: 7 for 0.5; 44 for 0.9, beyond L
    first = math.floor(math.log(0.01) / math.log(a)) + 1
    assert memory_horizon(norms, 0.01) == (first if first < 40 else None)


def test_norms_agree_with_a_per_item_brute_force_computation():
    """Batched, masked backward passes against one backward pass per (example, scored
    position), on a task with a few scored positions per example (MQAR's queries)."""
    torch.manual_seed(0)
    task = build_task("mqar", 16, {"vocab_size": 16, "num_kv_pairs": 2})
    model = build_model("gru", {"d_model": 8}, task.info.io)
    x, y = task.sample(generator(3, "grad_probe", CPU), 6, CPU)
    norms = distance_norms(model, task, x, y, positions=100)
    sums, counts = np.zeros(16), np.zeros(16)
    held = {}
    model.embed.register_forward_hook(lambda m, i, o: held.update(h=o))
    model.eval()
    for b in range(6):
        for t in (y[b] != IGNORE).nonzero().flatten().tolist():
            out = model(x[b:b + 1])
            item = F.cross_entropy(out[0, t], y[b, t])
            (dh,) = torch.autograd.grad(item, held["h"])
            by_distance = dh[0, : t + 1].norm(dim=-1).flip(0).double().numpy()
            sums[: t + 1] += by_distance
            counts[: t + 1] += 1
    expected = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    np.testing.assert_allclose(norms, expected, rtol=1e-4, equal_nan=True)


def test_attention_at_init_does_not_decay_with_distance():
    """At init attention spreads its weight almost uniformly over the past, so from distance 1
    on the norm stays within a factor 10 and its fitted decay is below 0.02 per step (an
    RNN's, measured the same way, decays by 0.6 per step and falls by 1000x)."""
    torch.manual_seed(0)
    task = build_task("adding", 64)
    x, y = task.sample(generator(0, "grad_probe", CPU), 32, CPU)
    attention = distance_norms(build_model("transformer", {"d_model": 16, "n_heads": 2},
                                           task.info.io), task, x, y)[1:]
    assert attention.min() > 0.1 * attention.max()
    assert abs(decay_per_step(attention)) < 0.02
    torch.manual_seed(0)
    rnn = distance_norms(build_model("rnn", {"d_model": 16}, task.info.io), task, x, y)[1:]
    assert rnn.min() < 1e-3 * rnn.max() and decay_per_step(rnn) < -0.3


def _tiny_params(name: str) -> dict:
    _, cfg, _ = split_params(name, {})
    multiple = mixer_class(name).d_model_multiple(cfg)
    return {"d_model": multiple * max(1, math.ceil(8 / multiple))}


@pytest.mark.parametrize("name", MODELS.names())
def test_the_probe_runs_for_every_registered_model(name):
    _, cfg, _ = split_params(name, {})
    reason = mixer_class(name).unavailable_reason(cfg, CPU)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    task = build_task("copy", 3)  # input length 23, every position scored
    model = build_model(name, _tiny_params(name), task.info.io)
    model.train()
    probe = GradientProbe(GradProbeSpec(examples=4, positions=4), task, 0, CPU)
    point = probe.run(model, 0)
    norms = np.array(point["norms"])
    assert point["distances"] == list(range(23)) and len(norms) == 23
    assert np.isfinite(norms).all() and norms[0] > 0
    assert point["decay_per_step"] is not None and math.isfinite(point["decay_per_step"])
    assert model.training  # the probe restores the mode
    assert all(p.grad is None for p in model.parameters())  # and accumulates no gradient


def test_the_probe_batch_comes_from_its_own_stream():
    task = build_task("copy", 5)
    probe = GradientProbe(GradProbeSpec(examples=8), task, 7, CPU)
    x, _ = task.sample(generator(7, "grad_probe", CPU), 8, CPU)
    assert torch.equal(probe.x, x)
    for split in ("train", "eval", "test"):
        other, _ = task.sample(generator(7, split, CPU), 8, CPU)
        assert not torch.equal(probe.x, other)


def test_profiles_are_stored_compactly_and_summarised_from_every_distance():
    assert compact_distances(10) == list(range(10))
    kept = compact_distances(10_000)
    assert kept[:EXACT_DISTANCES] == list(range(EXACT_DISTANCES)) and kept[-1] == 9_999
    assert all(a < b for a, b in itertools.pairwise(kept))
    assert len(kept) < 200  # 64 exact + about 16 per doubling from 64 to 10,000
    norms = 0.5 ** np.arange(300.0)
    norms[200:] = np.nan  # no probed position reached that far
    stored = profile(norms, 0.01)
    assert stored["distances"][-1] == 199 and stored["horizon"] == 7
    assert stored["decay_per_step"] == pytest.approx(math.log(0.5))
    assert stored["norms"] == [float(norms[d]) for d in stored["distances"]]
    assert memory_horizon(np.ones(5), 0.01) is None


def test_probing_during_training_leaves_the_training_run_unchanged():
    task = build_task("copy", 3)
    cfg = TrainSpec(steps=6, batch_size=4)
    runs = []
    for probe in (None, GradProbeSpec(at=["init", 2, "end"], examples=4, positions=3)):
        torch.manual_seed(0)
        model = build_model("gru", {"d_model": 8}, task.info.io)
        settings = cfg.model_copy(update={"grad_probe": probe})
        runs.append(train(model, task, settings, MeasureSpec(warmup_steps=1), CPU, seed=0))
    assert runs[0].losses == runs[1].losses
    assert [p["step"] for p in runs[1].grad_profile] == [0, 2, 6]
    assert runs[0].grad_profile == []
