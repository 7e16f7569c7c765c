"""Models actually learn: a GRU solves a small adding problem through the real training loop."""

import math

import pytest

from seqbench.config import expand, parse_suite
from seqbench.worker.job import run_job


@pytest.mark.slow  # 23-30 s; the default run keeps smaller learning tests (test_ssm,
# test_recall_tasks, test_chomsky_tasks, test_mixers, test_datasets), and the CPU
# reproductions (tasks/*-cpu.yaml) learn these tasks at full size every night
def test_gru_learns_the_adding_problem_well_below_the_constant_baseline():
    # a GRU learns adding T=50 in about 500 steps on 2 cores (Adam 3e-3, batch 64)
    suite = parse_suite({
        "name": "learn",
        "models": [{"name": "gru", "params": {"d_model": 64, "mlp_ratio": 0}}],
        "tasks": [{"name": "adding", "seq_lens": [50]}],
        "train": {"steps": 600, "batch_size": 64, "optimizer": "adam", "lr": 3e-3,
                  "eval_examples": 2048},
        "measure": {"fwd_budget_s": 0.05, "fwd_max_repeats": 5},
    })
    row = run_job(expand(suite)[0]).to_dict()
    assert row["status"] == "ok", row["error"]
    assert row["metric_mse"] < 0.01 < row["baseline_mse"] / 10  # 1/6 for the constant 1
    assert row["train_final_loss"] < 0.02


def test_diverging_training_is_recorded_with_its_step():
    suite = parse_suite({
        "name": "diverge",
        "models": [{"name": "rnn", "params": {"d_model": 16}}],
        "tasks": [{"name": "adding", "seq_lens": [20]}],
        "train": {"steps": 50, "optimizer": "sgd", "lr": 10.0, "momentum": 0.0, "clip": 0.0},
    })
    row = run_job(expand(suite)[0]).to_dict()
    assert row["status"] == "diverged"
    assert 0 <= row["diverged_step"] < 50 and "non-finite" in row["error"]
    assert math.isnan(row["metric_mse"])
