"""Search in the spec: configurations, trial and final jobs, selection on the validation split,
resuming after a kill, the results aggregates, significance, and bad input refused before any
job runs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny_spec
from scipy import stats

from seqbench.cli import main
from seqbench.config import parse_suite
from seqbench.config.expand import expand_final, expand_trials
from seqbench.config.job import Job
from seqbench.config.search import configurations, random_samples, select
from seqbench.config.spec import RandomSearch, SearchSpec
from seqbench.errors import SpecError
from seqbench.execution.search import SEARCH_FILE, run_search
from seqbench.recording.rows import RunContext, new_row
from seqbench.recording.schema import Row
from seqbench.results import search as rs
from seqbench.results.load import load

LRS = [1e-3, 3e-3, 1e-2]


def search_spec(search: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    spec = tiny_spec(seeds=[0, 1], models=[{"name": "gru", "params": {"d_model": 8}},
                                           {"name": "lstm", "params": {"d_model": 8}}])
    return {**spec, "search": search, **overrides}


# --- the searched space -----------------------------------------------------------------------
def test_grid_is_the_product_in_written_order_combined_with_every_random_sample():
    search = SearchSpec.model_validate({
        "grid": {"train.lr": [1e-3, 1e-2], "train.weight_decay": [0.0, 0.1]},
        "random": {"samples": 3, "seed": 7,
                   "space": {"train.clip": {"low": 0.1, "high": 10.0, "log": True}}}})
    configs = configurations(search)
    assert len(configs) == 2 * 2 * 3
    assert [(c["train.lr"], c["train.weight_decay"]) for c in configs[::3]] == [
        (1e-3, 0.0), (1e-3, 0.1), (1e-2, 0.0), (1e-2, 0.1)]  # the first path varies slowest
    clips = [c["train.clip"] for c in configs[:3]]
    assert clips == [c["train.clip"] for c in configs[3:6]]  # every grid point, same samples
    assert all(0.1 <= x <= 10.0 for x in clips) and len(set(clips)) == 3


def test_random_samples_are_seeded_in_range_and_integer_ranges_give_whole_numbers():
    space = {"train.lr": {"low": 1e-4, "high": 1e-1, "log": True},
             "train.steps": {"low": 2, "high": 9, "integer": True}}
    first = random_samples(RandomSearch.model_validate({"samples": 20, "seed": 3,
                                                        "space": space}))
    again = random_samples(RandomSearch.model_validate({"samples": 20, "seed": 3,
                                                        "space": space}))
    other = random_samples(RandomSearch.model_validate({"samples": 20, "seed": 4,
                                                        "space": space}))
    assert first == again and first != other
    assert all(1e-4 <= p["train.lr"] <= 1e-1 and isinstance(p["train.steps"], int)
               and 2 <= p["train.steps"] <= 9 for p in first)
    lrs = np.log10([p["train.lr"] for p in first])  # log-uniform: spread over the decades
    assert lrs.min() < -3 and lrs.max() > -2


# --- trial and final jobs ---------------------------------------------------------------------
def test_trials_validate_on_eval_without_eval_settings_and_mark_only_values_that_reach_them():
    spec = search_spec({"grid": {"train.lr": [1e-3, 1e-2], "models.gru.params.d_model": [8, 16]},
                        "seeds": [5]},
                       tasks=[{"name": "adding", "seq_lens": [6], "eval": [{"seq_lens": [8]}]}])
    suite = parse_suite(spec)
    plan = expand_trials(suite)
    gru = [j for j in plan.jobs if j.model.name == "gru"]
    lstm = [j for j in plan.jobs if j.model.name == "lstm"]
    assert len(gru) == 4 and len(lstm) == 2  # lstm does not see the gru width: 2 jobs, not 4
    for job in plan.jobs:
        assert job.train.eval_split == "eval" and job.evals == () and job.seed == 5
        assert job.search is not None and job.search.role == "trial"
    assert {tuple(sorted(j.search.values)) for j in lstm} == {("train.lr",)}
    assert {(j.search.values["models.gru.params.d_model"], j.model.params["d_model"])
            for j in gru} == {(8, 8), (16, 16)}
    assert sorted(len(plan.stands_for[j.job_id]) for j in lstm) == [2, 2]
    assert {j.train.lr for j in lstm} == {1e-3, 1e-2}
    # the final runs: the chosen values on the suite's seeds, on test, with the eval settings
    choices = select(plan, [ok_row(j, 1.0) for j in plan.jobs])
    final = expand_final(plan, choices)
    assert {j.seed for j in final} == {0, 1} and len(final) == 4
    assert all(j.train.eval_split == "test" and j.search.role == "final"
               and [e.seq_len for e in j.evals] == [8] for j in final)


def ok_row(job: Job, value: float, metric: str = "mse", higher: bool = False,
           status: str = "ok") -> dict[str, Any]:
    row: dict[str, Any] = {"job_id": job.job_id, "status": status, "primary_metric": metric,
                           f"higher_is_better_{metric}": higher}
    if status == "ok":
        row[f"metric_{metric}"] = value
    return row


def _plan(search: dict[str, Any], **overrides: Any):
    return expand_trials(parse_suite(search_spec(search, **overrides)))


def test_the_chosen_configuration_is_the_best_mean_on_validation_in_the_tasks_direction():
    plan = _plan({"grid": {"train.lr": LRS}})
    score = {1e-3: [0.5, 0.7], 3e-3: [0.2, 0.4], 1e-2: [0.1, 0.9]}  # means .6 .3 .5
    rows = [ok_row(j, score[j.train.lr][j.seed]) for j in plan.jobs]
    for choice in select(plan, rows):
        assert choice.best is not None and choice.best.values == {"train.lr": 3e-3}
        assert choice.best.score == pytest.approx(0.3)
        assert [c.score for c in choice.candidates] == pytest.approx([0.6, 0.3, 0.5])
    # higher is better: the largest mean wins; the median rule picks by medians
    rows = [ok_row(j, score[j.train.lr][j.seed], "accuracy", True) for j in plan.jobs]
    assert {c.best.values["train.lr"] for c in select(plan, rows)} == {1e-3}


def test_failed_trials_rank_last_ties_go_to_the_first_and_all_failed_chooses_nothing():
    plan = _plan({"grid": {"train.lr": LRS}})
    rows = []
    for j in plan.jobs:
        if j.train.lr == 1e-3 and j.seed == 1:
            rows.append(ok_row(j, 0, status="diverged"))  # its other seed is the best value
        else:
            rows.append(ok_row(j, {1e-3: 0.01, 3e-3: 0.5, 1e-2: 0.5}[j.train.lr]))
    for choice in select(plan, rows):
        assert choice.best.values == {"train.lr": 3e-3}  # 1e-2 ties with it: the first wins
        assert choice.candidates[0].n_failed == 1
    dead = [ok_row(j, 0, status="error") for j in plan.jobs]
    assert all(c.best is None and "no trial finished ok" in c.reason
               for c in select(plan, dead))
    pending = select(plan, rows[:-1])  # a trial without a row decides nothing
    assert any(c.best is None and "no row yet" in c.reason for c in pending)


def test_per_suite_chooses_one_configuration_for_every_model():
    plan = _plan({"grid": {"train.lr": LRS}, "per": "suite"})
    gru = {1e-3: 0.1, 3e-3: 0.5, 1e-2: 0.9}
    lstm = {1e-3: 0.9, 3e-3: 0.2, 1e-2: 0.3}  # model means: .5 .35 .6
    rows = [ok_row(j, (gru if j.model.name == "gru" else lstm)[j.train.lr]) for j in plan.jobs]
    (choice,) = select(plan, rows)
    assert choice.model is None and choice.best.values == {"train.lr": 3e-3}
    final = expand_final(plan, [choice])
    assert {(j.model.name, j.train.lr) for j in final} == {("gru", 3e-3), ("lstm", 3e-3)}


# --- running a search -------------------------------------------------------------------------
class FakeExecutor:
    """Rows without training: each job's metric is a fixed function of its learning rate,
    width and seed (fast, so the orchestration is what is tested). ``stop_after`` rows, it
    raises KeyboardInterrupt (a kill)."""

    name = "fake"

    def __init__(self, stop_after: int | None = None) -> None:
        self.ran: list[Job] = []
        self.stop_after = stop_after

    @staticmethod
    def value(job: Job) -> float:
        lr = job.train.lr
        return abs(math.log10(lr) + 2.5) + 0.01 * job.seed + 0.001 * job.model.params.get(
            "d_model", 0) + (0.5 if job.train.eval_split == "test" else 0.0)

    def run(self, jobs: list[Job], context: RunContext, on_row: Any) -> None:
        for job in jobs:
            if self.stop_after is not None and len(self.ran) >= self.stop_after:
                raise KeyboardInterrupt
            self.ran.append(job)
            row = new_row(job, context)
            on_row(row.update(status="ok", kernel_path="fake", wall_s=0.01, primary_metric="mse",
                              metric_mse=self.value(job), higher_is_better_mse=False,
                              eval_split=job.train.eval_split, d_model=job.model.params.get(
                                  "d_model", 8), state_size_bytes=4 * job.model.params.get(
                                  "d_model", 8)))


def test_a_search_resumes_after_a_kill_without_rerunning_recorded_trials(tmp_path):
    suite = parse_suite(search_spec({"grid": {"train.lr": LRS}, "seeds": [0]}))
    out = tmp_path / "out"
    killed = FakeExecutor(stop_after=4)  # 6 trials: killed in the middle of them
    with pytest.raises(KeyboardInterrupt):
        run_search(suite, "spec", out, killed)
    assert not (out / SEARCH_FILE).exists()  # nothing chosen from unfinished trials
    second = FakeExecutor(stop_after=2 + 1)  # the 2 missing trials, then killed at the finals
    with pytest.raises(KeyboardInterrupt):
        run_search(suite, "spec", out, second)
    assert {j.job_id for j in killed.ran}.isdisjoint(j.job_id for j in second.ran[:2])
    assert all(j.search.role == "trial" for j in second.ran[:2])
    first_record = json.loads((out / SEARCH_FILE).read_text())
    third = FakeExecutor()  # the store is reopened from disk: only the missing finals run
    run = run_search(suite, "spec", out, third)
    assert all(j.search.role == "final" for j in third.ran) and len(third.ran) == 4 - 1
    record = json.loads((out / SEARCH_FILE).read_text())
    assert record["choices"] == first_record["choices"]  # recomputed, identically
    assert {c["chosen"]["train.lr"] for c in record["choices"]} == {3e-3}
    assert len(record["trials"]) == 6 and all(t["status"] == "ok" for t in record["trials"])
    assert record["selection"]["split"] == "eval" and record["final_seeds"] == [0, 1]
    again = FakeExecutor()
    run_search(suite, "spec", out, again)
    assert again.ran == [] and run.final is not None and len(run.final.jobs) == 4
    suite_json = json.loads((out / "suite.json").read_text())
    assert suite_json["spec"]["search"]["grid"] == {"train.lr": LRS}


class InProcess:
    """Runs each job in this process (so a test can spy on what it reads)."""

    name = "in-process"

    def run(self, jobs: list[Job], context: RunContext, on_row: Any) -> None:
        from seqbench.worker.job import run_job

        for job in jobs:
            on_row(run_job(job, context))


def test_trials_never_read_the_test_split_and_the_choice_is_the_best_trial(tmp_path,
                                                                          monkeypatch):
    from seqbench.worker.data.base import Task

    seen: list[tuple[str, str]] = []  # (role, split) of every evaluation batch stream
    current: dict[str, str] = {}
    original = Task.eval_batches

    def spy(self, seed, batch_size, n_examples, device, split="eval"):
        seen.append((current["role"], split))
        return original(self, seed, batch_size, n_examples, device, split=split)

    from seqbench.worker import job as job_module

    run_job = job_module.run_job

    def tracked(job, context=None):
        current["role"] = job.search.role
        return run_job(job, context)

    monkeypatch.setattr(Task, "eval_batches", spy)
    monkeypatch.setattr(job_module, "run_job", tracked)
    spec = search_spec({"grid": {"train.lr": [1e-3, 3e-2]}, "seeds": [0]},
                       models=[{"name": "gru", "params": {"d_model": 8}}],
                       train={**tiny_spec()["train"], "eval_every": 2, "curve_examples": 8})
    run = run_search(parse_suite(spec), "spec", tmp_path / "out", InProcess())
    assert {split for role, split in seen if role == "trial"} == {"eval"}
    assert {split for role, split in seen if role == "final"} == {"test", "eval"}  # curves: eval
    df = rs.search_frame(load(tmp_path / "out", warn=False))
    trials = df[df["search_role"] == "trial"]
    assert set(trials["eval_split"]) == {"eval"} and len(trials) == 2
    assert set(df.loc[df["search_role"] == "final", "eval_split"]) == {"test"}
    best = trials.loc[trials["metric_mse"].idxmin(), "job"]["train"]["lr"]
    (choice,) = run.choices
    assert choice.best.values == {"train.lr": best}
    assert choice.best.score == pytest.approx(trials["metric_mse"].min())
    assert {j["train"]["lr"] for j in df.loc[df["search_role"] == "final", "job"]} == {best}


# --- the results aggregates -------------------------------------------------------------------
def _fake_search(tmp_path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    spec = search_spec({"grid": {"train.lr": LRS, "models.gru.params.d_model": [8, 16]},
                        "seeds": [0]}, tasks=[{"name": "adding", "seq_lens": [6, 8]}])
    run_search(parse_suite(spec), "spec", tmp_path / "out", FakeExecutor())
    suite_json = json.loads((tmp_path / "out" / "suite.json").read_text())
    return load(tmp_path / "out", warn=False), suite_json["spec"]


def test_best_over_search_and_the_mad_score_follow_the_rows(tmp_path):
    df, spec = _fake_search(tmp_path)
    best = rs.best_over_search(df, spec)
    assert len(best) == 2 * 2  # 2 lengths x 2 models
    gru = best[best["model"] == "gru"]
    assert set(gru["chosen"]) == {"train.lr=0.003, models.gru.params.d_model=8"}
    finals = rs.search_frame(df)
    finals = finals[(finals["search_role"] == "final") & (finals["model"] == "gru")
                    & (finals["seq_len"] == 6)]
    assert gru[gru["seq_len"] == 6]["test_mean"].item() == pytest.approx(
        finals["metric_mse"].mean())
    assert gru["n_configs"].tolist() == [6, 6] and best["test_n"].tolist() == [2] * 4
    scores = rs.mad_score(best.assign(task="mad_fake"))
    assert scores["family"].tolist() == ["mad", "mad"]
    assert scores.set_index("model")["score"]["lstm"] == pytest.approx(
        best[best["model"] == "lstm"]["test_mean"].mean())
    assert best[["seq_len", "model"]].values.tolist() == [  # models in registry order
        [6, "lstm"], [6, "gru"], [8, "lstm"], [8, "gru"]]
    partial = rs.mad_score(best.drop(index=1))  # gru at length 6
    assert not partial.set_index("model")["complete"]["gru"]


def test_best_vs_width_takes_the_best_validation_configuration_at_each_width(tmp_path):
    df, spec = _fake_search(tmp_path)
    points = rs.best_vs(df, "d_model")
    gru = points[(points["model"] == "gru") & (points["seq_len"] == 6)].set_index("d_model")
    trials = rs.search_frame(df)
    trials = trials[(trials["search_role"] == "trial") & (trials["model"] == "gru")
                    & (trials["seq_len"] == 6)]
    for width in (8, 16):
        assert gru.loc[width, "best"] == pytest.approx(
            trials[trials["d_model"] == width]["metric_mse"].min())
    fig = rs.plot_best_vs(points, "d_model")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["GRU"].get_xdata()) == [8.0, 16.0] and len(lines) == 2
    assert list(lines["GRU"].get_ydata()) == pytest.approx(gru.sort_index()["best"].tolist())
    blocks = rs.search_section(df, spec, tmp_path / "report")
    text = " ".join(getattr(b, "text", "") for b in blocks)
    assert "validation" in text and "test split" in text
    tables = [b for b in blocks if hasattr(b, "frame")]
    assert "best of 6 configurations on validation" in " ".join(
        tables[0].frame["selection"])
    assert (tmp_path / "report" / "figures" / "search_best_vs_width.png").is_file()


def test_learning_curves_show_the_mean_and_the_seed_range():
    curves = pd.DataFrame({"job_id": ["a"] * 2 + ["b"] * 2, "model": "gru", "config_hash": "h",
                           "seed": [0, 0, 1, 1], "task": "adding", "train_seq_len": 6,
                           "step": [2, 4, 2, 4], "metric_mse": [0.4, 0.2, 0.6, 0.1]})
    fig = rs.plot_curves(curves, "mse")
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_ydata()) == pytest.approx([0.5, 0.15])
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    assert {round(v, 6) for v in band} >= {0.4, 0.6, 0.1, 0.2}


# --- significance -----------------------------------------------------------------------------
def _rows(values: dict[str, list[float]], length: int = 6) -> pd.DataFrame:
    return pd.DataFrame([{"kind": "train", "task": "adding", "model": m, "seq_len": length,
                          "status": "ok", "config_hash": m, "job": {}, "metric_mse": v,
                          "higher_is_better_mse": False}
                         for m, vs in values.items() for v in vs])


def test_welch_comparison_agrees_with_the_formula_and_scipy():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    cmp = rs.compare_models(_rows({"a": x, "b": y}), "a", "b", 6, "mse")
    vx, vy = statistics.variance(x) / 4, statistics.variance(y) / 5
    t = (statistics.fmean(x) - statistics.fmean(y)) / math.sqrt(vx + vy)
    dof = (vx + vy) ** 2 / (vx**2 / 3 + vy**2 / 4)
    assert cmp.p_value == pytest.approx(2 * stats.t.sf(abs(t), dof))
    half = stats.t.ppf(0.975, dof) * math.sqrt(vx + vy)
    assert (cmp.low, cmp.high) == pytest.approx((cmp.diff - half, cmp.diff + half))
    assert cmp.winner(higher_is_better=False) is None  # p = 0.07 > 0.05


def _search_rows(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """Rows of a search: (model, role) -> metric values, one row per seed."""
    rows = _rows({f"{m}/{r}": v for (m, r), v in values.items()})
    rows["model"] = rows["model"].str.split("/").str[0]
    rows["job"] = [{"search": {"role": r.split("/")[1], "values": {}}} for r in rows["config_hash"]]
    return rows


def test_the_ranking_and_comparison_use_a_searchs_final_runs_never_its_trials():
    rng = np.random.default_rng(0)
    a, b = list(rng.normal(0.10, 0.02, 6)), list(rng.normal(0.20, 0.02, 6))
    c = [v + 0.001 for v in a]
    rows = _search_rows({("a", "final"): a, ("b", "final"): b, ("c", "final"): c,
                         ("a", "trial"): [9.0, 9.5], ("b", "trial"): [0.0, 0.01]})
    table = rs.ranking(rows, 6, "mse")
    assert table["name"].tolist() == ["a", "c", "b"]  # lower is better; trials ignored
    assert table["n"].tolist() == [6, 6, 6]
    assert table["rank_best"].tolist() == [1, 1, 3] and table["rank_worst"].tolist() == [2, 2, 3]
    cmp = rs.compare_models(rows, "a", "b", 6, "mse")
    assert cmp.mean_a == pytest.approx(np.mean(a)) and cmp.winner(False) == "a"
    assert cmp.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("search, fragments", [
    ({"grid": {"train.lr": []}}, ["search.grid.train.lr", "at least 1"]),
    ({"grid": {"train.lr": [1e-3, float("nan")]}}, ["search.grid", "finite"]),
    ({"grid": {"train.lr": [1e-3, 1e-3]}}, ["repeat"]),
    ({}, ["a grid, a random block or both"]),
    ({"grid": {"train.lrr": [1e-3]}}, ["search.grid.train.lrr", "not a training setting"]),
    ({"grid": {"train.eval_split": ["test"]}}, ["eval_split", "sets"]),
    ({"grid": {"models.gru.params.widthh": [8]}}, ["search.grid.models.gru.params.widthh",
                                                  "unknown parameter of gru"]),
    ({"grid": {"models.mamba.params.d_model": [8]}}, ["no model named 'mamba'"]),
    ({"grid": {"train.lr": [-1.0]}}, ["search.grid.train.lr", "-1.0", "greater than 0"]),
    ({"grid": {"models.gru.params.param_budget": [10]}},
     ["search.grid.models.gru.params.param_budget", "parameters"]),
    ({"grid": {"seeds": [[0]]}}, ["search.grid", "seeds"]),
    ({"grid": {"train.lr": [1e-3]}, "metric": "accuracy"}, ["search.metric", "mse"]),
    ({"random": {"samples": 2, "space": {"train.lr": {"low": 0.0, "high": 1.0, "log": True}}}},
     ["log: true needs low > 0"]),
], ids=["empty", "nan", "repeat", "nothing", "no-such-key", "eval-split", "no-such-param",
        "no-such-model", "out-of-range", "budget-no-width-meets", "not-searchable",
        "no-such-metric", "log-of-zero"])
def test_bad_search_input_is_one_line_before_any_job_runs(search, fragments, tmp_path):
    spec = search_spec(search)
    with pytest.raises(SpecError) as err:
        parse_suite(spec)
    text = str(err.value)
    assert "\n" not in text and all(f in text for f in fragments), text
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_search_refuses_an_eval_split_of_its_own_and_a_shadowed_path():
    with pytest.raises(SpecError, match=r"train\.eval_split.*set by the search"):
        parse_suite(search_spec({"grid": {"train.lr": LRS}},
                                train={**tiny_spec()["train"], "eval_split": "test"}))
    shadowed = search_spec({"grid": {"train.lr": LRS}},
                           tasks=[{"name": "adding", "seq_lens": [6], "train": {"lr": 0.1}}])
    with pytest.raises(SpecError, match=r"tasks\[0\].train.lr overrides it"):
        parse_suite(shadowed)
    shadowed["search"] = {"grid": {"tasks.adding.train.lr": LRS}}
    plan = expand_trials(parse_suite(shadowed))
    assert {j.train.lr for j in plan.jobs} == set(LRS)


def test_a_row_is_schema_complete_with_its_search_mark(tmp_path):
    plan = _plan({"grid": {"train.lr": LRS}})
    row = new_row(plan.jobs[0], RunContext())
    assert Row.from_dict(row.to_dict()).job["search"] == {"role": "trial",
                                                          "values": {"train.lr": 1e-3}}


# --- seqbench run / seqbench report of a search -----------------------------------------------
def test_seqbench_run_dispatches_a_search_resumes_after_ctrl_c_and_reports_it(tmp_path,
                                                                               monkeypatch,
                                                                               capsys):
    from seqbench.cli import run as run_cli

    executors = iter([FakeExecutor(stop_after=3), FakeExecutor()])
    monkeypatch.setattr(run_cli, "make_executor", lambda args, workers=1: next(executors))
    spec = search_spec({"grid": {"train.lr": LRS}, "seeds": [0]})
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    args = ["run", str(path), "-o", str(out)]
    assert main([*args, "--dry-run"]) == 0
    assert "6 trial jobs" in capsys.readouterr().out and not out.exists()
    assert main([*args, "--no-report"]) == 130  # Ctrl-C after 3 of the 6 trials
    err = capsys.readouterr().err
    assert "interrupted (SIGINT); 3 job(s) finished" in err and "search's trials" in err
    kept = load(out, warn=False)
    assert len(kept) == 3 and set(rs.search_frame(kept)["search_role"]) == {"trial"}
    assert not (out / SEARCH_FILE).exists()
    assert main(args) == 0  # resumed: the 3 missing trials, then 2 models x 2 seeds of finals
    text = capsys.readouterr().out
    assert "gru: best of 3 learning rates on validation (train.lr=0.003), 2 seeds" in text
    df = rs.search_frame(load(out, warn=False))
    assert df["search_role"].value_counts().to_dict() == {"trial": 6, "final": 4}
    report = (out / "report" / "report.md").read_text()
    assert "## Search" in report and "How each configuration was chosen" in report
    trial_lines = [ln for ln in report.splitlines() if ln.startswith("| adding") and "| yes" in ln]
    assert len(trial_lines) == 2  # the chosen lr's trial, one per model, in the trial table
    stats = pd.read_csv(out / "report" / "stats.csv")
    # the main tables hold the final runs only: one configuration per model, both seeds
    mse = stats[stats["metric"] == "metric_mse"]
    assert sorted(mse["model"]) == ["gru", "lstm"] and set(mse["n"]) == {2}
