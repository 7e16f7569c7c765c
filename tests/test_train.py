"""Training-loop pieces: schedule, clipping after backward, weight-decay groups, autocast."""

import pytest
import torch

from seqbench.config.spec import MeasureSpec, TrainSpec
from seqbench.worker.data import build_task
from seqbench.worker.models import build_model
from seqbench.worker.train import autocast_dtype, lr_factor, param_groups, train

TRAIN = TrainSpec()


def settings(**kw) -> TrainSpec:
    return TrainSpec(**kw)


def test_warmup_then_cosine_schedule():
    cfg = settings(steps=110, warmup_steps=10, schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, cfg.model_copy(update={"schedule": "constant"})) == 1.0


def test_norms_biases_and_declared_params_get_no_weight_decay():
    task = build_task("adding", 10)
    model = build_model("transformer", {"d_model": 16}, task.info.io)
    model.no_weight_decay = lambda: {"blocks.0.mixer.qkv.weight"}
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "blocks.0.mixer.qkv.weight" in {names[id(p)] for p in no_decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert "blocks.0.norm.weight" in {names[id(p)] for p in no_decay["params"]}


def test_gradients_are_clipped_after_backward(monkeypatch):
    task = build_task("adding", 10)
    model = build_model("rnn", {"d_model": 8}, task.info.io)
    norms = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **k):  # the optimizer sees the clipped gradients
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    cfg = settings(steps=3, clip=1e-3)
    train(model, task, cfg, MeasureSpec(warmup_steps=1), torch.device("cpu"), seed=0)
    assert len(norms) == 3 and max(norms) <= 1e-3 * 1.001


def test_bf16_autocast_on_cuda_by_default_and_off_on_cpu():
    assert autocast_dtype(TRAIN, torch.device("cuda")) is torch.bfloat16
    assert autocast_dtype(TRAIN, torch.device("cpu")) is None
    assert autocast_dtype(settings(autocast="off"), torch.device("cuda")) is None
    assert autocast_dtype(settings(autocast="bf16"), torch.device("cpu")) is torch.bfloat16


def test_timed_steps_exclude_warmup_and_keep_the_first_apart():
    task = build_task("copy", 3)
    model = build_model("gru", {"d_model": 8}, task.info.io)
    cfg = settings(steps=7, batch_size=4)
    result = train(model, task, cfg, MeasureSpec(warmup_steps=3), torch.device("cpu"), seed=0)
    assert result.steps == 7 and len(result.losses) == 7
    assert len(result.timing.samples_s) == 4 and result.timing.first_s > 0
