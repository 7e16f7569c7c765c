"""The length-extrapolation figure and the Chomsky score, through load_evals on hand-made rows:
one line per model, the training length (or range) marked, failed settings marked, and a score
that averages exactly the evaluated lengths longer than the longest training length."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import complete_row, tiny_spec, write_results_dir

from seqbench.catalog import TASKS
from seqbench.config import expand, parse_suite
from seqbench.results import extrapolation as X
from seqbench.results.load import load_evals
from seqbench.worker.data.chomsky import generalisation_score


def jobs_of(task: dict[str, Any], models: list[str], seeds: list[int],
            train: dict[str, Any] | None = None) -> list:
    suite = parse_suite(tiny_spec(seeds=seeds, models=[{"name": m, "params": {"d_model": 8}}
                                                       for m in models],
                                  tasks=[task], train={"steps": 4, "batch_size": 2,
                                                       "eval_examples": 4, **(train or {})}))
    return expand(suite)


def eval_entry(seq_len: int, accuracy: float | None, status: str = "ok") -> dict[str, Any]:
    entry: dict[str, Any] = {"seq_len": seq_len, "params": {}, "input_len": seq_len + 1,
                             "status": status, "error": "" if status == "ok" else "oom",
                             "eval_s": 0.01, "baseline_accuracy": 0.5}
    if accuracy is not None:
        entry.update(metric_accuracy=accuracy, metric_loss=1.0)
    return entry


def row_of(job, accuracy_at: dict[int, float | None], main: float,
           failed: tuple[int, ...] = (), lengths: dict[str, int] | None = None
           ) -> dict[str, Any]:
    evals = [eval_entry(L, None if L in failed else acc, "oom" if L in failed else "ok")
             for L, acc in accuracy_at.items()]
    fields: dict[str, Any] = {"status": "ok", "metric_accuracy": main, "metric_loss": 1.0,
                              "baseline_accuracy": 0.5, "primary_metric": "accuracy",
                              "evals": evals}
    if lengths is not None:
        fields["train_lengths"] = lengths
    return complete_row(job, **fields).to_dict()


@pytest.fixture(scope="module")
def chomsky_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """parity_check trained on lengths 2..6 (job length 6), evaluated at 1..12; two models,
    two seeds. Accuracy 1.0 on every length the job trained at, a known value beyond."""
    task = {"name": "parity_check", "seq_lens": [6], "eval": [{"seq_lens": {"start": 1,
                                                                            "stop": 12}}]}
    jobs = jobs_of(task, ["lstm", "transformer"], [0, 1], {"lengths": {"min": 2, "max": 6}})
    rows = []
    for job in jobs:
        beyond = 0.9 if job.model.name == "lstm" else 0.5 + 0.1 * job.seed
        acc = {L: (1.0 if L <= 6 else beyond - 0.01 * (L - 7)) for L in range(1, 13)}
        failed = (12,) if (job.model.name, job.seed) == ("transformer", 1) else ()
        rows.append(row_of(job, acc, 1.0, failed, {"min": 2, "max": 6}))
    return write_results_dir(tmp_path_factory.mktemp("chomsky"), rows)


def test_chomsky_score_averages_only_lengths_beyond_training(chomsky_dir):
    evals = load_evals(chomsky_dir, warn=False)
    scores = X.chomsky_scores(evals).set_index(["model", "seed"])
    assert len(scores) == 4
    # lstm: lengths 7..12 at 0.90, 0.89, ..., 0.85 (length 1 was never trained on either, but
    # it is shorter than the training range: the paper scores only longer lengths)
    expect = sum(0.9 - 0.01 * k for k in range(6)) / 6
    assert scores.loc[("lstm", 0), "score"] == pytest.approx(expect)
    assert scores.loc[("lstm", 0), "n_lengths"] == 6 and scores.loc[("lstm", 0), "n_failed"] == 0
    # the failed setting at 12 is counted, not averaged
    t1 = scores.loc[("transformer", 1)]
    assert t1["n_lengths"] == 5 and t1["n_failed"] == 1
    assert t1["score"] == pytest.approx(sum(0.6 - 0.01 * k for k in range(5)) / 5)
    assert (scores["train_len_max"] == 6).all() and (scores["max_eval_len"] == 12).all()
    # the same rule as the worker's dict scorer
    lstm = evals[(evals["model"] == "lstm") & (evals["seed"] == 0) & (evals["setting"] == "eval")]
    by_length = dict(zip(lstm["eval_seq_len"], lstm["metric_accuracy"], strict=True))
    assert generalisation_score(by_length, range(2, 7)) == pytest.approx(expect)


def test_chomsky_table_shows_every_seed_and_the_paper(chomsky_dir):
    table = X.chomsky_table(X.chomsky_scores(load_evals(chomsky_dir, warn=False)))
    assert list(table["model"]) == ["LSTM", "Transformer"]  # registry order
    lstm, transformer = table.iloc[0], table.iloc[1]
    assert lstm["level"] == "R" and lstm["paper"] == "generalises"
    assert transformer["paper"].startswith("fails")
    assert transformer["seeds"] == "47.5, 58.0"  # seed 0: 0.50..0.45 at 7..12; seed 1: 7..11
    assert transformer["best"] == pytest.approx(58.0) and "1 failed" in transformer["lengths"]
    assert lstm["lengths"] == "7..12"
    md = X.table_markdown(table)
    assert md.count("\n") == 4 and "| R | parity_check | LSTM |" in md


def test_chomsky_levels_are_those_of_the_task_classes():
    assert set(X.CHOMSKY_LEVELS) == {e.name for e in TASKS if e.module.endswith(".chomsky")}
    names = {"regular": "R", "dcf": "DCF", "cs": "CS"}
    for task, level in X.CHOMSKY_LEVELS.items():
        assert names[TASKS[task].load().level] == level, task


def artists(fig, gid: str) -> list:
    return [a for ax in fig.axes for a in [*ax.lines, *ax.patches, *ax.collections]
            if a.get_gid() == gid]


def test_extrapolation_figure_has_one_line_per_model_and_the_training_range(chomsky_dir):
    evals = load_evals(chomsky_dir, warn=False)
    fig = X.extrapolation_figure(evals)
    ax = next(a for a in fig.axes if a.get_visible() and a.lines)
    assert len([a for a in fig.axes if a.get_visible()]) == 1  # one task, one training range
    series = [ln for ln in ax.lines if ln.get_gid() == "series"]
    assert sorted(ln.get_label() for ln in series) == ["LSTM", "Transformer"]
    lstm = next(ln for ln in series if ln.get_label() == "LSTM")
    assert list(lstm.get_xdata()) == list(range(1, 13))  # main (6) de-duplicated
    assert lstm.get_ydata()[-1] == pytest.approx(0.85)  # mean over the two seeds
    span = artists(fig, "train")
    assert len(span) == 1  # the training range as a shaded span from 2 to 6
    rect = span[0]
    assert rect.get_x() == pytest.approx(2) and rect.get_x() + rect.get_width() == pytest.approx(6)
    assert len(artists(fig, "seeds")) == 2  # each model's min..max band over its 2 seeds
    failed = artists(fig, "failed")
    assert len(failed) == 1 and list(failed[0].get_xdata()) == [12]
    assert ax.get_xscale() == "log"


def test_one_training_length_is_a_line_and_each_length_a_panel(tmp_path):
    task = {"name": "induction", "params": {"vocab_size": 8}, "seq_lens": [8, 16],
            "eval": [{"seq_lens": [32, 64]}]}
    rows = [row_of(job, {32: 0.7, 64: 0.4}, 1.0) for job in
            jobs_of(task, ["gru", "mamba", "s4d"], [0])]
    fig = X.extrapolation_figure(load_evals(write_results_dir(tmp_path, rows), warn=False))
    visible = [a for a in fig.axes if a.get_visible()]
    assert len(visible) == 2  # one panel per training length
    for ax, train_len in zip(visible, (8, 16), strict=True):
        lines = [ln for ln in ax.lines if ln.get_gid() == "series"]
        assert [ln.get_label() for ln in lines] == ["GRU", "S4D", "Mamba"]  # registry order
        marks = [ln for ln in ax.lines if ln.get_gid() == "train"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [train_len] * 2
        assert list(lines[0].get_xdata()) == [train_len, 32, 64]
        assert not artists(fig, "seeds")  # one seed: no band


def test_write_saves_the_figure_and_the_table(chomsky_dir, tmp_path):
    written = X.write(chomsky_dir, tmp_path / "report", formats=("png",))
    names = sorted(p.name for p in written)
    assert names == ["chomsky_scores.csv", "chomsky_scores.md", "chomsky_scores_per_job.csv",
                     "extrapolation.png"]
    assert (tmp_path / "report" / "figures" / "extrapolation.png").stat().st_size > 10_000
    table = pd.read_csv(tmp_path / "report" / "tables" / "chomsky_scores.csv")
    assert len(table) == 2 and not math.isnan(table["mean"].iloc[0])


def test_settings_that_vary_a_param_are_plotted_against_it(tmp_path):
    rows = []
    for kv in (2, 4):
        task = {"name": "mqar", "seq_lens": [16], "params": {"vocab_size": 16,
                                                              "num_kv_pairs": kv},
                "eval": [{"params": {"num_kv_pairs": k}} for k in (2, 3, 4)]}
        for job in jobs_of(task, ["transformer", "mamba"], [0]):
            acc = {2: 1.0, 3: 0.8, 4: 0.6} if job.model.name == "mamba" else {2: 1, 3: 1, 4: 1}
            row = row_of(job, {}, acc[kv])
            row["evals"] = [{**eval_entry(16, acc[k]), "params": {"num_kv_pairs": k}}
                            for k in (2, 3, 4)]
            rows.append(row)
    evals = load_evals(write_results_dir(tmp_path, rows), warn=False)
    assert X.axis_of(evals) == "param_num_kv_pairs"
    fig = X.extrapolation_figure(evals, x="param_num_kv_pairs")
    visible = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in visible] == ["mqar, train 16, num_kv_pairs=2",
                                                "mqar, train 16, num_kv_pairs=4"]
    for ax, kv in zip(visible, (2, 4), strict=True):
        mamba = next(ln for ln in ax.lines if ln.get_gid() == "series"
                     and ln.get_label() == "Mamba")
        assert list(mamba.get_xdata()) == [2, 3, 4]  # main (at the trained kv) de-duplicated
        assert list(mamba.get_ydata()) == [1.0, 0.8, 0.6]
        mark = next(ln for ln in ax.lines if ln.get_gid() == "train")
        assert list(mark.get_xdata()) == [kv, kv]
    written = X.write(tmp_path, tmp_path / "report", formats=("png",))
    assert [p.name for p in written] == ["extrapolation_num_kv_pairs.png"]


def test_the_report_has_the_extrapolation_section_and_the_chomsky_table(chomsky_dir, tmp_path):
    from seqbench.results.report import write_report

    write_report(chomsky_dir, tmp_path / "report", formats=("png",), n_boot=200)
    md = (tmp_path / "report" / "report.md").read_text()
    assert md.count("## Length extrapolation") == 1
    assert "![accuracy vs evaluation length](figures/extrapolation.png)" in md
    assert "### Chomsky hierarchy: generalisation score" in md
    assert "| level | task | model | score per seed (%) | mean | best |" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| R | parity\\_check")]
    assert len(lines) == 2 and "47.5, 58.0" in lines[1]  # the transformer's seeds
    assert md.index("## Length extrapolation") < md.index("## Tables")
    assert (tmp_path / "report" / "figures" / "extrapolation.png").is_file()
    assert "Chomsky hierarchy" in (tmp_path / "report" / "report.html").read_text()
    # the rows' lists of dicts (evals with empty params) survive the report's Parquet copy
    from seqbench.results.load import load

    back = load(tmp_path / "report" / "rows.parquet", warn=False)
    first = back.sort_values("job_id")["evals"].iloc[0]
    assert isinstance(first, list) and first[0]["params"] == {} and len(first) == 12


def test_a_report_without_eval_settings_has_no_extrapolation_section(tmp_path):
    from seqbench.results.report import write_report

    task = {"name": "parity_check", "seq_lens": [6]}
    rows = [row_of(job, {}, 0.9) for job in jobs_of(task, ["lstm"], [0])]
    for row in rows:
        row["evals"] = []
    write_report(write_results_dir(tmp_path / "results", rows), tmp_path / "report",
                 formats=("png",), n_boot=200)
    assert "extrapolation" not in (tmp_path / "report" / "report.md").read_text().lower()
    assert not list((tmp_path / "report").rglob("*extrapolation*"))
    assert not list((tmp_path / "report").rglob("chomsky*"))


@pytest.mark.parametrize("value, label", [(64, "64"), (200, "200"), (1024, "1K"), (4096, "4K"),
                                          (2.0 ** 20, "1M"), (1500, "1500"), (3072, "3072")])
def test_length_labels(value, label):
    assert X.length_label(value) == label
