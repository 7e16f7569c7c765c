"""The training protocol: evaluation settings, per-slice metrics, variable training lengths,
learning curves and early stopping, validation vs test splits, torch.compile, the new row
fields and their tidy loaders. Tiny models, a few steps each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CONTEXT, tiny_spec, write_results_dir

import seqbench.worker.data.base as data_base
import seqbench.worker.train as train_module
from seqbench.config import Job, expand, parse_suite
from seqbench.config.job import EvalSetting
from seqbench.config.spec import EarlyStop, MeasureSpec, TrainLengths, TrainSpec
from seqbench.errors import SpecError
from seqbench.recording.rows import new_row
from seqbench.recording.validate import check_row
from seqbench.results.load import load_curves, load_evals, load_grad_profiles, load_slices
from seqbench.worker import build as build_module
from seqbench.worker.build import describe
from seqbench.worker.data import build_task
from seqbench.worker.data.base import generator
from seqbench.worker.job import run_job
from seqbench.worker.models import build_model
from seqbench.worker.train import evaluate, length_schedule, train

CPU = torch.device("cpu")
GRU = {"name": "gru", "params": {"d_model": 8}}
INDUCTION = {"name": "induction", "params": {"vocab_size": 8}, "seq_lens": [12]}
MQAR_PARAMS = {"vocab_size": 16, "num_kv_pairs": 2}
MQAR = {"name": "mqar", "params": MQAR_PARAMS, "seq_lens": [16]}
TRAIN = {"steps": 6, "batch_size": 4, "eval_examples": 16, "eval_batch_size": 8}
LEARNED = {"name": "transformer", "params": {"d_model": 8, "n_heads": 2, "positions": "learned",
                                             "max_len": 20}}


def spec(tasks: list[dict] | None = None, train: dict | None = None,
         models: list[dict] | None = None, **top: Any) -> dict[str, Any]:
    return tiny_spec(seeds=[0], models=models or [GRU], tasks=tasks or [INDUCTION],
                     train={**TRAIN, **(train or {})}, **top)


def jobs(**kw: Any) -> list[Job]:
    return expand(parse_suite(spec(**kw)))


def stored(row: Any) -> dict[str, Any]:
    """A row as the store writes it (NaN as null) and every reader reads it."""
    from seqbench.recording.store import dumps

    return json.loads(dumps(row))


# --- spec and jobs ------------------------------------------------------------------------------

def test_protocol_settings_at_their_defaults_leave_config_hashes_unchanged():
    base = jobs()[0]
    defaults = {"eval_split": "eval", "eval_every": 0, "compile": False, "lengths": None,
                "early_stop": None, "grad_probe": None}
    assert jobs(train=defaults)[0].config_hash == base.config_hash
    assert jobs(tasks=[{**INDUCTION, "eval": []}])[0].config_hash == base.config_hash
    assert "evals" not in base.dump() and "eval_split" not in base.dump()["train"]
    changed = [{"eval_split": "test"}, {"eval_every": 2}, {"compile": True},
               {"lengths": {"min": 4, "max": 12}},
               {"grad_probe": {"at": ["init"]}}]
    hashes = {jobs(train=t)[0].config_hash for t in changed}
    assert len(hashes) == len(changed) and base.config_hash not in hashes
    with_eval = jobs(tasks=[{**INDUCTION, "eval": [{"seq_lens": [24]}]}])[0]
    assert with_eval.dump()["evals"] == [{"seq_len": 24, "params": {}}]
    assert with_eval.config_hash != base.config_hash
    assert Job.parse(json.loads(json.dumps(with_eval.dump()))) == with_eval


def test_eval_settings_are_resolved_at_each_jobs_length():
    evals = [{"params": {"num_kv_pairs": 3}},
             {"seq_lens": {"start": 40, "stop": 44, "step": 2}},  # both ends included
             {"seq_lens": [64], "params": {"num_kv_pairs": 4}}]
    found = {j.task.seq_len: [(e.seq_len, e.params) for e in j.evals]
             for j in jobs(tasks=[{**MQAR, "seq_lens": [16, 32], "eval": evals}])}
    assert found[16] == [(16, {"num_kv_pairs": 3}), (40, {}), (42, {}), (44, {}),
                         (64, {"num_kv_pairs": 4})]
    assert found[32] == [(32, {"num_kv_pairs": 3}), *found[16][1:]]


def _scale(tasks: list[dict], train: dict | None = None) -> dict[str, Any]:
    return {"name": "s", "kind": "scale", "device": "cpu", "models": [GRU], "tasks": tasks,
            "scale": {"start_len": 16, "max_len": 32}, **({"train": train} if train else {})}


def _with(task: dict, **extra: Any) -> dict:
    return {**task, **extra}


REFUSED = {  # case: (spec, field, what the message says)
    "eval-length-the-task-refuses": (
        spec(tasks=[_with(MQAR, eval=[{"seq_lens": [17]}])]), "tasks[0].eval[0].seq_lens",
        "even"),
    "eval-past-a-positional-table": (
        spec(models=[LEARNED], tasks=[_with(INDUCTION, eval=[{"seq_lens": [24]}])]),
        "tasks[0].eval[0].seq_lens", "positional table (max_len=20)"),
    "eval-unknown-param": (
        spec(tasks=[_with(MQAR, eval=[{"params": {"n_pairs": 3}}])]),
        "tasks[0].eval[0].params.n_pairs", "unknown"),
    "eval-param-impossible-at-the-length": (
        spec(tasks=[_with(MQAR, eval=[{"params": {"num_kv_pairs": 5}}])]),
        "tasks[0].eval[0].seq_lens", "4 * num_kv_pairs"),
    "eval-changes-the-model-input": (
        spec(tasks=[_with(INDUCTION, eval=[{"params": {"vocab_size": 9}}])]),
        "tasks[0].eval[0].params", "input and output"),
    "eval-repeated": (
        spec(tasks=[_with(INDUCTION, eval=[{"seq_lens": [24]}, {"seq_lens": [20, 24]}])]),
        "tasks[0].eval", "repeated"),
    "eval-empty-entry": (
        spec(tasks=[_with(INDUCTION, eval=[{}])]), "tasks[0].eval[0]",
        "needs seq_lens, params or both"),
    "eval-range-backwards": (
        spec(tasks=[_with(INDUCTION, eval=[{"seq_lens": {"start": 50, "stop": 40}}])]),
        "tasks[0].eval[0].seq_lens", "stop must be >= start"),
    "eval-in-a-scale-suite": (
        _scale([{"name": "induction", "eval": [{"seq_lens": [64]}]}]), "tasks[0].eval",
        "only for kind: train"),
    "lengths-the-task-refuses": (
        spec(tasks=[MQAR], train={"lengths": {"min": 8, "max": 16}}), "train.lengths",
        "cannot train at length 9"),
    "lengths-per-task-override": (
        spec(tasks=[_with(MQAR, train={"lengths": {"min": 8, "max": 16}})]),
        "tasks[0].train.lengths", "cannot train at length 9"),
    "lengths-past-a-positional-table": (
        spec(models=[LEARNED], train={"lengths": {"min": 4, "max": 24}}), "train.lengths",
        "positional table"),
    "lengths-backwards": (
        spec(train={"lengths": {"min": 9, "max": 4}}), "train.lengths", "max must be >= min"),
    "early-stop-without-a-curve": (
        spec(train={"early_stop": {"metric": "accuracy", "value": 0.99}}),
        "train.early_stop", "eval_every"),
    "early-stop-unknown-metric": (
        spec(train={"eval_every": 2, "early_stop": {"metric": "bleu", "value": 1.0}}),
        "train.early_stop.metric", "loss, accuracy"),
    "curve-examples-without-a-curve": (
        spec(train={"curve_examples": 64}), "train.curve_examples", "eval_every"),
    "eval-every-past-the-steps": (
        spec(train={"eval_every": 7}), "train.eval_every", "at most steps=6"),
    "probe-step-past-the-steps": (
        spec(train={"grad_probe": {"at": ["init", 7]}}), "train.grad_probe.at", "1..steps=6"),
    "probe-point-repeated": (
        spec(train={"grad_probe": {"at": ["init", "init"]}}), "train.grad_probe.at",
        "must not repeat"),
    "eval-split-unknown": (
        spec(train={"eval_split": "valid"}), "train.eval_split", "eval"),
    "protocol-key-in-a-scale-suite": (
        _scale([{"name": "induction"}], train={"eval_every": 2}), "train.eval_every",
        "not used by kind: scale"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_protocol_settings_are_refused_at_load_with_one_line(case):
    data, field, fragment = REFUSED[case]
    with pytest.raises(SpecError) as caught:
        parse_suite(data)
    message = str(caught.value)
    assert "\n" not in message and field in message and fragment in message, message


def test_compile_is_part_of_a_scale_jobs_hash_only_when_on():
    plain = expand(parse_suite(_scale([{"name": "induction"}])))
    compiled = expand(parse_suite(_scale([{"name": "induction"}], train={"compile": True})))
    kinds = [j.kind for j in plain]
    assert [j.kind for j in compiled] == kinds and "stream" in kinds
    for a, b in zip(plain, compiled, strict=True):
        assert "compile" not in a.dump()["train"]
        if a.kind == "scale":  # scale jobs run compiled; stream jobs (step mode) never do
            assert b.dump()["train"]["compile"] is True and a.config_hash != b.config_hash
        else:
            assert a.config_hash == b.config_hash


# --- evaluation settings and slices -------------------------------------------------------------

PROBE = {"at": ["init", "end"], "examples": 4, "positions": 4}


@pytest.fixture(scope="module")
def mqar_row() -> dict[str, Any]:
    """One MQAR job with a curve, a probe and three evaluation settings, as stored."""
    evals = [{"seq_lens": [16, 24]}, {"params": {"num_kv_pairs": 3}}]
    job = jobs(tasks=[_with(MQAR, eval=evals)],
               train={"eval_every": 3, "curve_examples": 8, "grad_probe": PROBE})[0]
    return stored(run_job(job, CONTEXT))


def test_a_trained_model_is_evaluated_at_each_setting(mqar_row):
    row = mqar_row
    assert row["status"] == "ok" and check_row(row) == []
    evals = row["evals"]
    assert [(e["seq_len"], e["params"], e["input_len"]) for e in evals] == [
        (16, {}, 16), (24, {}, 24), (16, {"num_kv_pairs": 3}, 16)]
    assert all(e["status"] == "ok" and e["error"] == "" and e["eval_s"] > 0 for e in evals)
    # the setting equal to the main evaluation reproduces it exactly (same split, examples)
    same = evals[0]
    assert {k: same[k] for k in ("metric_loss", "metric_accuracy")} == {
        k: row[k] for k in ("metric_loss", "metric_accuracy")}
    assert same["slices"] == row["slices"] and row["slices"]
    assert all(name.startswith("query_distance:") for name in row["slices"])
    # each setting's own baselines: MQAR's chance accuracy is 1/num_kv_pairs
    assert [e["baseline_accuracy"] for e in evals] == [1 / 2, 1 / 2, 1 / 3]
    assert evals[1]["metric_accuracy"] != row["metric_accuracy"]


def test_a_failing_eval_setting_gets_its_status_and_the_job_goes_on(monkeypatch):
    original = train_module.evaluate

    def evaluate_or_fail(model, task, *args, **kwargs):
        if task.seq_len == 16:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: 1 TB")
        return original(model, task, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_or_fail)
    job = jobs(models=[LEARNED])[0]  # a learned table of 20 positions, trained at 12
    job = job.model_copy(update={"evals": (  # past the spec check: what the worker does
        EvalSetting(seq_len=12), EvalSetting(seq_len=16), EvalSetting(seq_len=24))})
    row = stored(run_job(job, CONTEXT))
    assert row["status"] == "ok" and check_row(row) == []
    ok, oom, too_long = row["evals"]
    assert ok["status"] == "ok" and ok["metric_accuracy"] == row["metric_accuracy"]
    assert oom["status"] == "oom" and "allocate" in oom["error"]
    assert too_long["status"] == "error" and too_long["error"] and too_long["input_len"] == 24
    assert "metric_accuracy" not in too_long


def test_metrics_and_slices_are_summed_over_batches_then_divided_once():
    """Evaluating in batches of 5 gives the metrics of all 24 examples at once (every scored
    item counts once), not the mean of the batches' means."""
    torch.manual_seed(0)
    task = build_task("mqar", 64, {"vocab_size": 64, "num_kv_pairs": 8})
    model = build_model("gru", {"d_model": 8}, task.info.io)
    cfg = TrainSpec(eval_examples=24, eval_batch_size=5)
    result = evaluate(model, task, cfg, CPU, seed=0)
    batches = list(task.eval_batches(0, 5, 24, CPU))
    assert [len(x) for x, _ in batches] == [5, 5, 5, 5, 4]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        out = model(x)
    at_once = {k: s / n for k, (s, n) in task.metric_sums(out, y).items()}
    assert result.metrics == pytest.approx(at_once, rel=1e-6)
    slices = task.slice_sums(out, y, x)
    assert set(result.slices) == set(slices) and len(slices) >= 4
    for name, sums in slices.items():
        assert result.slices[name] == pytest.approx({k: s / n for k, (s, n) in sums.items()},
                                                    rel=1e-6)
    lows = [int(name.split(":")[1].split("-")[0]) for name in result.slices]
    assert lows == sorted(lows)  # numeric order, not string order


def test_the_timing_batch_is_drawn_without_building_a_fixed_training_set(monkeypatch):
    copy = build_task("copy", 5)
    x, y = copy.timing_batch(3, 4, CPU)
    x_train, y_train = next(copy.train_batches(3, 4, CPU))  # fresh data: the same bytes as before
    assert torch.equal(x, x_train) and torch.equal(y, y_train)

    def no_pool(*args, **kwargs):
        raise AssertionError("the training pool was built for one timing batch")

    monkeypatch.setattr(data_base, "finite_train_batches", no_pool)
    mad = build_task("mad_recall", 16)
    assert mad.n_train is not None
    x, y = mad.timing_batch(3, 4, CPU)
    x_direct, y_direct = mad.sample_train(generator(3, "train", CPU), 4, CPU)
    assert torch.equal(x, x_direct) and torch.equal(y, y_direct)


# --- variable training lengths ------------------------------------------------------------------

def test_each_batch_length_is_drawn_from_the_range_and_each_length_built_once():
    task = build_task("induction", 12, {"vocab_size": 8})
    cfg = TrainSpec(steps=30, batch_size=2, lengths=TrainLengths(min=4, max=9))
    built: list[int] = []

    def task_at(n: int):
        built.append(n)
        return build_task("induction", n, {"vocab_size": 8})

    torch.manual_seed(0)
    model = build_model("gru", {"d_model": 8}, task.info.io)
    seen: list[int] = []
    model.embed.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    result = train(model, task, cfg, MeasureSpec(warmup_steps=1), CPU, seed=0, task_at=task_at)
    schedule = length_schedule(cfg, 0)
    assert seen == schedule and set(schedule) <= set(range(4, 10)) and len(set(schedule)) >= 5
    assert sorted(built) == sorted(set(schedule))  # once per length, before training
    assert schedule != length_schedule(cfg, 1) and schedule == length_schedule(cfg, 0)
    assert result.timed_tokens == [2 * n for n in schedule[1:]]  # steps after the first
    fields = result.timing_fields(None)
    assert fields["train_tokens_per_s"] == pytest.approx(
        sum(result.timed_tokens) / sum(result.timing.samples_s))
    rates = sorted(t / s for t, s in zip(result.timed_tokens, result.timing.samples_s,
                                         strict=True))
    assert rates[0] <= fields["train_tokens_per_s_p20"] <= fields["train_tokens_per_s_p80"]
    assert fields["train_tokens_per_s_p80"] <= rates[-1]


# --- learning curves and early stopping ---------------------------------------------------------

def _train(task_name: str, params: dict, seq_len: int, **settings: Any):
    task = build_task(task_name, seq_len, params)
    torch.manual_seed(0)
    model = build_model("gru", {"d_model": 8}, task.info.io)
    cfg = TrainSpec(**{"steps": 6, "batch_size": 4, "curve_examples": 8, **settings})
    return train(model, task, cfg, MeasureSpec(warmup_steps=1), CPU, seed=0)


def test_a_learning_curve_does_not_change_the_training_run():
    plain = _train("induction", {"vocab_size": 8}, 12)
    curved = _train("induction", {"vocab_size": 8}, 12, eval_every=2)
    assert curved.losses == plain.losses and plain.curve == []
    assert [p["step"] for p in curved.curve] == [2, 4, 6]
    for k, point in enumerate(curved.curve):
        window = curved.losses[2 * k: 2 * k + 2]
        assert point["train_loss"] == pytest.approx(sum(window) / 2)
        assert {"metric_loss", "metric_accuracy"} <= set(point)
        assert point["wall_s"] >= point["train_time_s"] > 0
    times = [p["train_time_s"] for p in curved.curve]
    assert times == sorted(times) and times[-1] == curved.train_time_s


@pytest.mark.parametrize("task, params, seq_len, metric, value, stops", [
    ("adding", {}, 10, "mse", 100.0, True),  # lower is better: reached at once
    ("adding", {}, 10, "mse", -1.0, False),
    ("induction", {"vocab_size": 8}, 12, "accuracy", 0.0, True),  # higher is better
    ("induction", {"vocab_size": 8}, 12, "accuracy", 1.01, False),
])
def test_early_stopping_follows_the_metrics_direction(task, params, seq_len, metric, value,
                                                      stops):
    result = _train(task, params, seq_len, eval_every=2,
                    early_stop=EarlyStop(metric=metric, value=value))
    assert result.steps == (2 if stops else 6) and len(result.curve) == (1 if stops else 3)
    assert result.stop_reason == ("early_stop" if stops else "steps")


def test_an_early_stop_is_recorded_in_the_row():
    job = jobs(train={"eval_every": 2, "curve_examples": 8,
                      "early_stop": {"metric": "accuracy", "value": 0.0}})[0]
    row = stored(run_job(job, CONTEXT))
    assert row["status"] == "ok" and check_row(row) == []
    assert (row["stop_reason"], row["stopped_at_step"], row["train_steps"]) == (
        "early_stop", 2, 2)
    assert [p["step"] for p in row["curve"]] == [2]


# --- validation vs test -------------------------------------------------------------------------

def _streams(monkeypatch, job: Job) -> tuple[dict[str, Any], set[str], list[tuple[str, int]]]:
    """Run ``job`` recording every seed stream drawn and every evaluation's (split, size)."""
    streams: set[str] = set()
    calls: list[tuple[str, int]] = []
    derive, original = data_base.derive_seed, train_module.evaluate

    def spy_derive(seed: int, stream: str) -> int:
        streams.add(stream)
        return derive(seed, stream)

    def spy_evaluate(model, task, cfg, device, seed, split="eval", n_examples=None):
        calls.append((split, cfg.eval_examples if n_examples is None else n_examples))
        return original(model, task, cfg, device, seed, split=split, n_examples=n_examples)

    monkeypatch.setattr(data_base, "derive_seed", spy_derive)
    monkeypatch.setattr(train_module, "evaluate", spy_evaluate)
    return stored(run_job(job, CONTEXT)), streams, calls


def test_with_eval_split_eval_the_test_stream_is_never_drawn(monkeypatch):
    job = jobs(tasks=[_with(INDUCTION, eval=[{"seq_lens": [20]}])],
               train={"eval_every": 3, "curve_examples": 8, "grad_probe": PROBE})[0]
    row, streams, calls = _streams(monkeypatch, job)
    assert row["status"] == "ok" and row["eval_split"] == "eval"
    assert "test" not in streams and {"train", "eval", "grad_probe"} <= streams
    assert {split for split, _ in calls} == {"eval"}


def test_with_eval_split_test_curves_still_use_only_the_validation_split(monkeypatch):
    job = jobs(tasks=[_with(INDUCTION, eval=[{"seq_lens": [20]}])],
               train={"eval_split": "test", "eval_every": 3, "curve_examples": 8})[0]
    row, _, calls = _streams(monkeypatch, job)
    assert row["status"] == "ok" and row["eval_split"] == "test"
    # two curve points on validation, then the main evaluation and the eval setting on test
    assert calls == [("eval", 8), ("eval", 8), ("test", 16), ("test", 16)]
    _, streams_plain, _ = _streams(monkeypatch, jobs(train={"eval_split": "test"})[0])
    assert "test" in streams_plain and "eval" not in streams_plain  # no curve: no validation


# --- torch.compile ------------------------------------------------------------------------------

@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_models_record_it_and_their_compile_time(monkeypatch, fresh_dynamo):
    monkeypatch.setattr(build_module, "COMPILE_BACKEND", "eager")  # dynamo without a C compiler
    eager = stored(run_job(jobs()[0], CONTEXT))
    compiled = stored(run_job(jobs(train={"compile": True})[0], CONTEXT))
    assert eager["compiled"] is False and "compile_s" not in eager
    assert compiled["status"] == "ok" and compiled["compiled"] is True
    assert check_row(compiled) == []
    assert 0 < compiled["compile_s"] < compiled["wall_s"]
    assert compiled["metric_accuracy"] == pytest.approx(eager["metric_accuracy"], abs=1e-6)
    assert compiled["metric_loss"] == pytest.approx(eager["metric_loss"], rel=1e-5)


def test_a_model_that_fails_to_compile_gives_an_error_row(monkeypatch, fresh_dynamo):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(build_module, "COMPILE_BACKEND", broken_backend)
    row = stored(run_job(jobs(train={"compile": True})[0], CONTEXT))
    assert row["status"] == "error" and row["compiled"] is True
    assert row["error"].startswith("torch.compile failed: ") and "no C++ compiler" in row["error"]


@pytest.mark.slow
def test_inductor_compiles_and_trains_a_tiny_model(fresh_dynamo):
    """The real backend (C++ codegen with g++ on CPU): about a minute on a loaded 2-core
    machine for this one tiny GRU."""
    row = stored(run_job(jobs(train={"compile": True, "steps": 3})[0], CONTEXT))
    assert row["status"] == "ok" and row["compiled"] is True and row["compile_s"] > 0
    assert row["train_first_step_s"] > row["train_step_s_median"]


# --- row fields and tidy records ----------------------------------------------------------------

def test_rows_record_the_data_source_and_what_the_mixer_reports():
    job = jobs()[0]
    task = build_task("induction", 12, {"vocab_size": 8})
    task.data_source = {"generator": "test", "version": 1, "sha256": "0" * 64}
    model = build_model("gru", {"d_model": 8}, task.info.io)
    model.row_fields = lambda: {"receptive_field": 7}  # what a TCN reports
    row = new_row(job, CONTEXT)
    describe(row, model, task, CPU, None)
    assert row.data_source == task.data_source and row.receptive_field == 7
    assert row.compiled is False
    bare = new_row(job, CONTEXT)
    describe(bare, model, task.info, CPU, None)  # given only the info: no data source
    assert bare.data_source is None
    problems = check_row(stored(row.update(status="ok", wall_s=0.0)))
    assert not [p for p in problems if "data_source" in p or "receptive_field" in p]


def test_variable_length_rows_record_their_range():
    row = stored(run_job(jobs(train={"lengths": {"min": 4, "max": 12}})[0], CONTEXT))
    assert row["status"] == "ok" and check_row(row) == []
    assert row["train_lengths"] == {"min": 4, "max": 12} and row["train_tokens_per_s"] > 0


@pytest.fixture(scope="module")
def results_dir(mqar_row, tmp_path_factory) -> Path:
    return write_results_dir(tmp_path_factory.mktemp("protocol"), [mqar_row])


def test_load_evals_gives_one_record_per_job_and_setting(mqar_row, results_dir):
    df = load_evals(results_dir, warn=False)
    assert list(df["setting"]) == ["main", "eval", "eval", "eval"]
    assert list(df["train_seq_len"]) == [16] * 4 and list(df["eval_seq_len"]) == [16, 16, 24, 16]
    assert list(df["param_num_kv_pairs"]) == [2, 2, 2, 3]  # the value in effect
    assert list(df["status"]) == ["ok"] * 4 and set(df["job_status"]) == {"ok"}
    assert df["metric_accuracy"].iloc[0] == mqar_row["metric_accuracy"]
    assert df["metric_accuracy"].iloc[0] == df["metric_accuracy"].iloc[1]
    assert df["baseline_accuracy"].iloc[3] == pytest.approx(1 / 3)
    for column in ("job_id", "config_hash", "task", "model", "label", "variant", "seed",
                   "kind", "device", "eval_split"):
        assert df[column].nunique() == 1, column
    assert df["label"].iloc[0] == "GRU" and df["eval_split"].iloc[0] == "eval"


def test_slices_curves_and_gradient_profiles_load_as_tidy_records(mqar_row, results_dir):
    slices = load_slices(results_dir, warn=False)
    main = slices[slices["setting"] == "main"]
    assert list(main["slice"]) == list(mqar_row["slices"])
    assert (main["lo"] <= main["hi"]).all() and set(main["dimension"]) == {"query_distance"}
    first = main.iloc[0]
    assert first["metric_accuracy"] == mqar_row["slices"][first["slice"]]["accuracy"]
    assert set(slices["eval_seq_len"]) == {16, 24}
    curves = load_curves(results_dir, warn=False)
    assert list(curves["step"]) == [3, 6]
    assert list(curves["metric_accuracy"]) == [p["metric_accuracy"] for p in mqar_row["curve"]]
    grads = load_grad_profiles(results_dir, warn=False)
    assert sorted(set(grads["step"])) == [0, 6]
    at_init = grads[grads["step"] == 0]
    assert list(at_init["distance"]) == mqar_row["grad_profile"][0]["distances"]
    assert list(at_init["norm"]) == pytest.approx(mqar_row["grad_profile"][0]["norms"])
