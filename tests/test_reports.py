"""Numbers a reader can cite: interval methods and tests against scipy, several runs in one
report, figures where no model hides another, scaling reports, the terminal summary and ETA,
escaping at every writer, and poisoned rows that are noted instead of crashing the loader."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from test_results import make_row, suite_rows, write_dir

from seqbench.results import load, plots
from seqbench.results.columns import Notation, fmt_bytes
from seqbench.results.stats import (
    BCA,
    NO_CI,
    T,
    aggregate,
    best_marks,
    difference,
    holm,
    interval,
    rank,
    summary_table,
)
from seqbench.results.text import shorten

N_BOOT = 200  # keeps report tests fast; the method does not depend on it below n = 30


# --- intervals and tests against scipy ------------------------------------------------------
def test_t_interval_matches_scipy_and_the_textbook_formula():
    x = np.array([0.62, 0.71, 0.55, 0.68, 0.60])
    ci = interval(x)
    low, high = scipy.stats.t.interval(0.95, 4, loc=x.mean(), scale=scipy.stats.sem(x))
    assert ci.method == T and ci.n == 5
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)
    h = 2.7764451051977987 * x.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert (ci.low, ci.high) == pytest.approx((x.mean() - h, x.mean() + h))


def test_two_seeds_get_no_interval_the_issue_example():
    # LSTM on adding at L=25: the old percentile bootstrap printed 0.086 ± 0.075, inside the
    # two values; a t-interval would be 12.7 standard errors wide: neither is stated
    seeds = [0.1616, 0.0108]
    ci = interval(seeds)
    assert ci.method == NO_CI and math.isnan(ci.low) and math.isnan(ci.high) and ci.n == 2
    t_half = scipy.stats.t.ppf(0.975, 1) * scipy.stats.sem(seeds)
    assert t_half / scipy.stats.sem(seeds) == pytest.approx(12.706, rel=1e-3)
    assert interval([0.5]).method == NO_CI
    assert interval([0.3, 0.3, 0.3]) == interval([0.3, 0.3, 0.3])  # no spread: zero width
    assert (interval([0.3, 0.3, 0.3]).low, interval([0.3, 0.3, 0.3]).high) == (0.3, 0.3)


def test_bootstrap_only_from_thirty_values_and_as_scipy_computes_it():
    rng = np.random.default_rng(3)
    x = rng.lognormal(0, 0.5, 40)
    ci = interval(x, n_boot=500, seed=11)
    expected = scipy.stats.bootstrap((x,), np.mean, n_resamples=500, method="BCa",
                                     rng=np.random.default_rng(11)).confidence_interval
    assert ci.method == BCA and (ci.low, ci.high) == pytest.approx((expected.low, expected.high))
    assert interval(x[:29]).method == T


def test_welch_difference_matches_scipy():
    a, b = [0.90, 0.85, 0.93, 0.88], [0.80, 0.84, 0.78]
    d = difference(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.p_value == pytest.approx(ref.pvalue) and (d.low, d.high) == pytest.approx(
        (ci.low, ci.high))
    assert d.diff == pytest.approx(np.mean(a) - np.mean(b)) and (d.n_a, d.n_b) == (4, 3)
    assert d.winner(higher_is_better=True) == "a" and d.winner(higher_is_better=False) == "b"
    assert not difference([1.0], [2.0, 3.0]).testable  # one seed: nothing to test
    assert difference([1.0, 1.0], [2.0, 2.0]).p_value == 0.0  # no spread, different means
    assert difference([1.0, 1.0], [1.0, 1.0]).p_value == 1.0


def test_holm_step_down():
    # sorted 0.01 < 0.05/4, 0.015 < 0.05/3, 0.03 >= 0.05/2: the first two only
    assert holm([0.03, 0.01, 0.5, 0.015]) == [False, True, False, True]
    assert holm([0.03, 0.01, 0.5, 0.02]) == [False, True, False, False]  # 0.02 >= 0.05/3
    assert holm([0.001, float("nan")]) == [True, False]


def test_best_is_bold_only_when_separated_else_ties():
    clear = {"A": [0.95, 0.96, 0.97], "B": [0.50, 0.52, 0.51], "C": [0.30, 0.31, 0.29]}
    assert best_marks(clear, higher_is_better=True) == {"A": "best", "B": "", "C": ""}
    close = {"A": [0.95, 0.90, 0.97], "B": [0.93, 0.89, 0.96], "C": [0.30, 0.31, 0.29]}
    assert best_marks(close, higher_is_better=True) == {"A": "tie", "B": "tie", "C": ""}
    assert best_marks({"A": [0.1], "B": [0.5, 0.6]}, higher_is_better=False) == {
        "A": "", "B": ""}  # the best has one seed: nothing can be tested


def test_rank_shows_its_uncertainty():
    r = rank({"x": [1.0, 1.2, 0.8], "y": [9.0, 9.1, 8.9], "z": [1.1, 0.9, 1.0]},
             higher_is_better=False)
    assert r["name"].tolist() == ["x", "z", "y"]
    assert r[["rank_best", "rank_worst"]].values.tolist() == [[1, 2], [1, 2], [3, 3]]
    assert r.loc[r["name"] == "y", "beaten_by"].item() == "x; z"
    assert set(r["ci_method"]) == {"t"}


# --- one number format per column; sizes in their unit ----------------------------------------
def test_a_column_never_mixes_fixed_and_scientific_numbers():
    values = [0.1608, 0.173, 2.47e-4]
    notation = Notation.of(values)
    cells = [notation.fmt_ci(v, v * 0.97, v * 1.03) for v in values]
    assert all(re.fullmatch(r"\d\.\d+e-\d\d ± \d\.\de-\d\d", c) for c in cells), cells
    fixed = Notation.of([0.1608, 0.173])
    assert fixed.fmt_ci(0.173, 0.17298, 0.17302) == "0.173000 ± 0.000020"
    assert fixed.fmt(0.1608) == "0.161" and Notation.of([152337.0]).fmt(152337.0) == "152,337"


def test_byte_sizes_pick_their_unit():
    assert [fmt_bytes(v) for v in (256, 36 * 1024, 8 * 2**20, 1.5 * 2**30)] == [
        "256 B", "36 KiB", "8 MiB", "1.5 GiB"]


def test_shorten_cuts_on_word_boundaries():
    text = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB on device 0"
    short = shorten(text, 40)
    assert short == "OutOfMemoryError: CUDA out of memory.…" and len(short) <= 40
    assert shorten("a\nb   c") == "a b c"


# --- several runs -------------------------------------------------------------------------------
def two_runs(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    rows = [r for r in suite_rows() if r["task"] == "adding"]
    other = [{**r, "device_name": "Other CPU", "host": "otherhost",
              "metric_mse": r["metric_mse"] * 2} for r in rows]
    return (write_dir(tmp_path / "run-a", rows), write_dir(tmp_path / "run-b", other), rows)


def test_a_report_over_two_runs_keeps_every_row_and_tells_runs_apart(tmp_path):
    from seqbench.results.report import write_report

    a, b, rows = two_runs(tmp_path)
    df = load([a, b], warn=False)
    assert len(df) == 2 * len(rows) and df.attrs["notes"] == []  # not "re-runs"
    assert sorted(set(df["label"])) == ["GRU [run-a]", "GRU [run-b]", "LSTM [run-a]",
                                        "LSTM [run-b]"]
    stats = aggregate(df, ["metric_mse"])
    assert len(stats) == 4 and set(stats["run"]) == {"run-a", "run-b"}
    lstm_b = stats[(stats["model"] == "lstm") & (stats["run"] == "run-b")].iloc[0]
    assert lstm_b["mean"] == pytest.approx(2 * 0.24)  # never averaged with run-a
    out = tmp_path / "report"
    write_report([a, b], out, n_boot=N_BOOT, figures=False)
    assert len(pd.read_parquet(out / "rows.parquet")) == 2 * len(rows)
    md = (out / "report.md").read_text()
    assert "of 2 runs" in md and "Other CPU" in md and "LSTM \\[run-b\\]" in md
    assert "stored more than once" not in md


# --- figures: no model hides another -------------------------------------------------------------
def equal_rows() -> list[dict]:
    """RNN, LSTM and GRU with identical accuracies at both lengths (at the 1/8 baseline)."""
    return [make_row("copy", m, L, s, metrics={"accuracy": 0.125, "loss": 1.0})
            for m in ("rnn", "lstm", "gru") for L in (10, 20) for s in (0, 1, 2)]


def colour_pixels(fig, ax, colour: str, tol: float = 0.12) -> int:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3] / 255.0  # (H, W, 3)
    box = ax.get_window_extent()
    h = image.shape[0]
    crop = image[int(h - box.y1):int(h - box.y0), int(box.x0):int(box.x1)]
    return int((np.abs(crop - np.array(to_rgb(colour))).max(axis=-1) < tol).sum())


def test_models_with_equal_values_stay_visible(tmp_path):
    from seqbench.catalog import MODELS

    df = load(write_dir(tmp_path / "r", equal_rows()), warn=False)
    with plots.style():
        fig = plots.metric_vs_length(df, n_boot=N_BOOT)
    ax = fig.axes[0]
    series = {line.get_label(): line for line in ax.lines if line.get_gid() == "series"}
    assert set(series) == {"RNN", "LSTM", "GRU"}
    # each keeps its registered marker and line style, and no two share their x positions
    for name, model in (("RNN", "rnn"), ("LSTM", "lstm"), ("GRU", "gru")):
        assert series[name].get_marker() == MODELS[model].marker
    xs = {name: tuple(np.round(line.get_xdata(), 6)) for name, line in series.items()}
    assert len(set(xs.values())) == 3
    # and each colour is on the rendered panel, not painted over
    for model in ("rnn", "lstm", "gru"):
        assert colour_pixels(fig, ax, MODELS[model].color) > 15, model
    assert [line for line in ax.lines if line.get_gid() == "baseline"]


def test_every_model_has_an_artist_in_every_panel_of_every_figure(tmp_path):
    df = load(write_dir(tmp_path / "r", suite_rows()), warn=False)
    for make in (plots.metric_vs_length, plots.throughput_vs_length, plots.memory_vs_length):
        with plots.style():
            fig = make(df, n_boot=N_BOOT)
        for ax in fig.axes:
            task = ax.get_title()
            ok = df[(df["task"] == task) & (df["status"] == "ok")]
            failed = df[(df["task"] == task) & (df["status"] != "ok")]
            drawn = {line.get_label() for line in ax.lines if line.get_gid() == "series"}
            marks = [line for line in ax.lines if line.get_gid() == "failed"]
            assert set(ok["label"]) <= drawn, (make.__name__, task)
            assert set(failed["label"]) - set(ok["label"]) == set() or marks


def test_error_metrics_spanning_decades_get_a_log_axis(tmp_path):
    rows = [make_row("adding", m, L, s, metrics={"mse": v * (1 + 0.01 * s)})
            for m, v in (("rnn", 0.17), ("gru", 5e-3), ("transformer", 2e-4))
            for L in (25, 50) for s in (0, 1)]
    df = load(write_dir(tmp_path / "r", rows), warn=False)
    with plots.style():
        ax = plots.metric_vs_length(df, n_boot=N_BOOT).axes[0]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert low < 2e-4 and high > 1 / 6  # the data and the 1/6 baseline are both in view


# --- scaling reports -------------------------------------------------------------------------
def scale_rows() -> list[dict]:
    """Two models' scale sweeps: memory a + c L^2 (attention-like) and a + c L."""
    rows = []
    for model, power in (("transformer", 2), ("mamba", 1)):
        for L in (256, 512, 1024, 2048):
            row = make_row("adding", model, L, 0, kind="scale", batch_policy="fixed-batch",
                           peak_mem_bytes=50 * 2**20 + 8 * L**power,
                           train_step_s_median=1e-6 * L**power, fwd_step_s_median=1e-7 * L)
            row["job"] = {**row["job"], "kind": "scale"}
            for key in [k for k in row if k.startswith(("metric_", "baseline_", "higher_"))]:
                del row[key]  # scale jobs do not train to a task metric
            rows.append(row)
    return rows


def test_a_scale_report_states_frontiers_and_fitted_slopes_with_their_points(tmp_path):
    from seqbench.results.report import write_report

    out = tmp_path / "report"
    write_report(write_dir(tmp_path / "r", scale_rows()), out, n_boot=N_BOOT, formats=("png",))
    md = (out / "report.md").read_text()
    assert "## Scaling" in md and "### Frontier" in md
    assert "peak memory grows as L^2.00 (increments between lengths, 256..2,048 (3 steps))" in md
    assert "peak memory grows as L^1.00" in md
    assert "training step time grows as L^2.00 (all points, 256..2,048 (4 pts))" in md
    assert {p.name for p in (out / "figures").iterdir()} >= {"throughput_vs_length.png",
                                                             "memory_vs_length.png"}
    summary = md[md.index("## Summary"):md.index("## Scaling")]
    assert "| metric |" not in summary and "train step (ms)" in summary  # no empty columns


# --- terminal ------------------------------------------------------------------------------
def test_summary_fits_80_columns_without_cutting_a_number(tmp_path):
    from rich.console import Console

    from seqbench.cli.progress import print_summary

    rows = suite_rows()
    for r in rows:
        if r["model"] == "transformer":
            r["metric_accuracy"] = 0.123456789 if r["status"] == "ok" else None
    root = write_dir(tmp_path / "r", rows)
    table = summary_table(load(root, warn=False))
    for width in (80, 60):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        print_summary(root, console)
        text = console.file.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "…" not in text
        for _, row in table.iterrows():  # every value and model name is printed whole
            assert row["value"] in text and row["model"] in text
    assert "Student-t" in text


def test_eta_uses_the_same_kind_of_job_first():
    from seqbench.cli.progress import EtaEstimator

    eta = EtaEstimator(workers=1)
    assert eta.remaining([("train", "lstm", 25)]) is None  # nothing measured yet
    for key, seconds in ((("train", "lstm", 25), 2.0), (("train", "lstm", 25), 4.0),
                         (("train", "gru", 25), 10.0), (("train", "lstm", 50), 9.0)):
        eta.add(key, seconds)
    assert eta.estimate(("train", "lstm", 25)) == 3.0  # same model and length
    assert eta.estimate(("train", "lstm", 100)) == 5.0  # same model: (2 + 4 + 9) / 3
    assert eta.estimate(("train", "rnn", 25)) == 6.25  # same kind: all four
    assert eta.estimate(("scale", "rnn", 25)) == 6.25  # nothing of that kind: overall
    pending = [("train", "lstm", 25), ("train", "lstm", 50), ("train", "gru", 50)]
    assert eta.remaining(pending) == pytest.approx(3.0 + 9.0 + 10.0)
    two = EtaEstimator(workers=2)
    for seconds in (4.0, 4.0, 4.0, 4.0):
        two.add(("train", "gru", 25), seconds)
    assert two.remaining([("train", "gru", 25)] * 4, elapsed_s=8.0) == pytest.approx(8.0)
    assert two.remaining([("train", "gru", 25)] * 4, elapsed_s=16.0) == pytest.approx(16.0)


def test_finished_jobs_count_each_job_once_and_not_interrupted_ones():
    from types import SimpleNamespace

    from seqbench.cli.progress import finished_jobs

    def row(job_id: str, status: str) -> SimpleNamespace:
        return SimpleNamespace(job_id=job_id, status=status)

    sweep = SimpleNamespace(job_ids={"a", "b", "c", "d"},
                            recorded={"a": "ok", "b": "interrupted", "c": "oom"},
                            written=[row("b", "ok"), row("c", "ok"), row("d", "interrupted")])
    assert finished_jobs(sweep) == {"a", "b", "c"}  # d was killed: 3 of 4, incomplete


def test_a_failed_job_line_gives_its_reason_whole_words():
    from conftest import complete_row

    from seqbench.cli.progress import row_line

    row = complete_row(status="unavailable", wall_s=0.0,
                       error="BackendUnavailable: mamba-ssm needs a CUDA device; this machine "
                             "has none (device=cpu) " + "x " * 100)
    line = row_line(row, limit=80)
    assert "mamba-ssm needs a CUDA device" in line and line.endswith("…")
    assert "no reason recorded" in row_line(complete_row(status="error", wall_s=0.0, error=""))


def test_an_interrupted_run_is_called_incomplete(tmp_path):
    from rich.console import Console

    from seqbench.cli.progress import print_summary
    from seqbench.results.report import write_report

    spec = {"name": "fixture", "seeds": [0, 1, 2], "models": [{"name": "lstm"}, {"name": "gru"}],
            "tasks": [{"name": "copy", "seq_lens": [100, 200]}]}
    root = write_dir(tmp_path / "r", [r for r in suite_rows() if r["task"] == "copy"
                                      and r["model"] == "lstm"])
    (root / "suite.json").write_text(json.dumps({"format": "seqbench-results/1",
                                                 "suite": "fixture", "spec": spec}))
    console = Console(width=100, file=io.StringIO(), color_system=None)
    print_summary(root, console)
    assert "INCOMPLETE, 6 of 12 jobs" in " ".join(console.file.getvalue().split())
    write_report(root, tmp_path / "report", n_boot=N_BOOT, figures=False)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Incomplete" in md and "6 of 12 jobs" in md


# --- injection: every string from a row is escaped at its writer ------------------------------
def test_row_strings_cannot_escape_the_report_folder_or_run_as_latex_or_html(tmp_path):
    from seqbench.results.report import write_report

    evil = "../../x/pwn"
    rows = [make_row("adding", "lstm", 50, s, metrics={"mse": 0.1 + s}) for s in (0, 1)]
    for r in rows:
        r["task"] = evil
        r["device_name"] = "cpu\n\\input{/etc/passwd}"
        r["host"] = "<script>alert(1)</script> $x^$"  # '$' would start matplotlib mathtext
        r["error"] = "<img src=x onerror=alert(1)>"
    out = tmp_path / "deep" / "report"
    write_report(write_dir(tmp_path / "r", rows), out, n_boot=N_BOOT, formats=("png",))
    outside = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out
               and (tmp_path / "r") not in p.parents and p != tmp_path / "r"}
    assert outside == {tmp_path / "deep"}  # nothing written beside or above the report
    assert not (tmp_path / "x").exists()
    assert all(out in p.parents for p in out.rglob("*pwn*"))
    for tex in (out / "tables").glob("*.tex"):
        for line in tex.read_text().splitlines():
            if line.startswith("% "):  # a comment runs to the end of its line: inert
                continue
            assert "\\input{" not in line.replace("\\textbackslash{}input", ""), line
    md = (out / "report.md").read_text()
    assert "<script" not in md and "<img" not in md and "&lt;script&gt;" in md
    html = (out / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html


def test_the_escaping_helpers_each_format():
    from seqbench.results.writers import (
        md_escape,
        mpl_escape,
        safe_filename,
        tex_comment,
        tex_escape,
        tex_label,
    )

    assert "/" not in safe_filename("../../x/pwn") and not safe_filename("..").startswith(".")
    assert safe_filename("adding_mse") == "adding_mse"
    assert safe_filename("a/b") != safe_filename("a_b")  # changed names carry a hash
    assert "\n" not in tex_comment("cpu\n\\input{/etc/passwd}")
    assert tex_escape("\\input{x}") == "\\textbackslash{}input\\{x\\}"
    assert tex_label("tab:../x y") == "tab:..-x-y"
    assert md_escape("<b>*x*</b> [a](b) | c\n# h") == (
        "&lt;b&gt;\\*x\\*&lt;/b&gt; \\[a\\](b) \\| c \\# h")
    assert mpl_escape("a$b$c") == "a\\$b\\$c"


# --- poisoned rows ----------------------------------------------------------------------------
def test_poisoned_rows_are_noted_and_never_crash_load_or_report(tmp_path):
    from seqbench.results.report import write_report

    good = [make_row("adding", "lstm", 50, s, metrics={"mse": 0.1 * (s + 1)}) for s in (0, 1)]
    absurd_seed = {**make_row("adding", "gru", 50, 0), "seed": 10**30}
    huge = {**make_row("adding", "gru", 50, 1), "batch_size": 10**40,
            "train_tokens_per_s": "NaN", "peak_mem_bytes": [1, 2], "metric_mse": "0.5",
            "higher_is_better_mse": "yes", "host": 7, "job": "not a job"}
    wrong_task = {**make_row("adding", "gru", 50, 2), "task": ["adding"]}
    missing = {k: v for k, v in make_row("adding", "gru", 50, 3).items() if k != "status"}
    root = write_dir(tmp_path / "r", [*good, absurd_seed, huge, wrong_task, missing])
    df = load(root, warn=False)
    assert len(df) == 3  # the two good rows and the one whose identity could be read
    notes = " ".join(df.attrs["notes"])
    assert "seed=" in notes and "64-bit" in notes  # 10**30: skipped, with the reason
    assert "task=" in notes and "lacks field(s) status" in notes
    assert "batch_size outside the 64-bit integer range: left empty" in notes
    kept = df[df["seed"] == 1].query("model == 'gru'").iloc[0]
    assert pd.isna(kept["batch_size"]) and pd.isna(kept["train_tokens_per_s"])
    assert pd.isna(kept["metric_mse"]) and kept["host"] == ""
    out = tmp_path / "report"
    write_report(root, out, n_boot=N_BOOT, figures=False)
    assert "64-bit integer range" in (out / "report.md").read_text()


def test_a_folder_of_only_unreadable_rows_is_one_clear_error(tmp_path):
    from seqbench.errors import SpecError

    (tmp_path / "bad.jsonl").write_text(json.dumps({"not": "a row"}) + "\n" + "[1, 2]\n")
    with pytest.raises(SpecError, match="no readable rows"):
        load(tmp_path / "bad.jsonl", warn=False)
