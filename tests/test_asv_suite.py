"""The asv suite: its grid follows the model registry, its configuration keeps asv's files under
results/asv, skips are asv skips, and its numbers come from seqbench's own runner."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

import seqbench.catalog
from seqbench.catalog import ModelEntry, Registry
from seqbench.worker.job import run_job

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "training.py"


def load_suite_module(name: str = "asv_training_under_test"):
    """Import benchmarks/training.py afresh, as asv's discovery does."""
    spec = importlib.util.spec_from_file_location(name, SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite():
    return load_suite_module()


class InProcess:
    """run_one as LocalExecutor has it, without the worker process."""

    def run_one(self, job, context):
        return run_job(job, context)


def test_grid_is_the_registry_times_the_lengths(suite):
    models, lengths = suite.TrainAdding.params
    assert models == seqbench.catalog.MODELS.names()
    assert lengths == suite.LENGTHS
    assert len(suite.TrainAdding.param_names) == len(suite.TrainAdding.params)


def test_a_newly_registered_model_appears_without_editing_the_suite(monkeypatch):
    registry = Registry("model")
    for entry in seqbench.catalog.MODELS:
        registry.add(entry)
    registry.add(ModelEntry("throwaway", "seqbench.worker.models.rnn:GRU", "test entry"))
    assert "throwaway" not in load_suite_module("asv_before").TrainAdding.params[0]
    monkeypatch.setattr(seqbench.catalog, "MODELS", registry)
    fresh = load_suite_module("asv_after")
    assert fresh.TrainAdding.params[0][-1] == "throwaway"


def test_asv_writes_under_results_asv_with_the_existing_environment():
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    assert conf["environment_type"] == "existing"
    for key in ("results_dir", "html_dir", "env_dir"):
        assert Path(conf[key]).parts[:2] == ("results", "asv")
    assert conf["benchmark_dir"] == "benchmarks"


def test_unavailable_and_oom_are_skips_errors_are_failures(suite):
    bench = suite.TrainAdding()
    rows = {("lstm", 32): {"status": "unavailable", "error": "BackendUnavailable: no CUDA"},
            ("lstm", 128): {"status": "oom", "error": "out of memory"},
            ("gru", 32): {"status": "error", "error": "ValueError: boom"},
            ("gru", 128): {"status": "ok"}}
    with pytest.raises(NotImplementedError, match="unavailable"):
        bench.setup(rows, "lstm", 32)
    with pytest.raises(NotImplementedError, match="oom"):
        bench.setup(rows, "lstm", 128)
    with pytest.raises(NotImplementedError, match="not selected"):
        bench.setup(rows, "rnn", 32)
    with pytest.raises(RuntimeError, match="boom"):
        bench.setup(rows, "gru", 32)
    bench.setup(rows, "gru", 128)  # ok rows are tracked


def test_narrowing_by_environment(suite, monkeypatch):
    monkeypatch.setenv("SEQBENCH_ASV_MODELS", "lstm")
    monkeypatch.setenv("SEQBENCH_ASV_LENGTHS", "32")
    assert suite._narrowed("SEQBENCH_ASV_MODELS", ["rnn", "lstm"], str) == ["lstm"]
    assert suite._narrowed("SEQBENCH_ASV_LENGTHS", [32, 128], int) == [32]
    monkeypatch.setenv("SEQBENCH_ASV_MODELS", "nosuchmodel")
    with pytest.raises(ValueError, match="nosuchmodel"):
        suite._narrowed("SEQBENCH_ASV_MODELS", ["rnn", "lstm"], str)


def test_tracks_read_the_rows_of_seqbench_jobs(suite, monkeypatch):
    monkeypatch.setattr(suite, "TRAIN", {**suite.TRAIN, "steps": 8, "eval_examples": 32})
    monkeypatch.setattr(suite, "MEASURE", {**suite.MEASURE, "fwd_min_repeats": 2,
                                           "fwd_budget_s": 0.05})
    rows = suite.run_grid(["gru"], [16], executor=InProcess())
    row = rows[("gru", 16)]
    assert row["status"] == "ok" and row["suite"] == "asv" and row["task"] == suite.TASK
    assert row["train_steps"] == 8 and row["param_count"] <= suite.PARAM_BUDGET
    bench = suite.TrainAdding()
    bench.setup(rows, "gru", 16)
    tokens = row["batch_size"] * row["input_len"]
    assert bench.track_train_tokens_per_s(rows, "gru", 16) == pytest.approx(
        tokens / row["train_step_s_median"])
    assert bench.track_fwd_tokens_per_s(rows, "gru", 16) > 0
    assert 0 <= bench.track_mse_after_budget(rows, "gru", 16) < 10
    assert math.isnan(bench.track_peak_mem_bytes(rows, "gru", 16))  # CPU: the executor's job
    for name in ("track_train_tokens_per_s", "track_fwd_tokens_per_s", "track_train_step_s",
                 "track_peak_mem_bytes", "track_mse_after_budget"):
        assert getattr(suite.TrainAdding, name).unit


def test_a_model_that_cannot_be_built_at_its_defaults_is_a_visible_failure(suite, monkeypatch):
    monkeypatch.setattr(suite, "MODEL_PARAMS", {"gru": {"no_such_param": 1}})
    rows = suite.run_grid(["gru"], [16], executor=InProcess())
    assert rows[("gru", 16)]["status"] == "error"
    with pytest.raises(RuntimeError, match="no_such_param"):
        suite.TrainAdding().setup(rows, "gru", 16)
