"""The results API, statistics, plots and reports, on rows built here (no training runs)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_results_dir
from matplotlib.colors import to_hex

from seqbench.cli import main as cli_main
from seqbench.errors import SpecError
from seqbench.recording.schema import FIELDS, PREFIXED, REQUIRED, SCHEMA_VERSION
from seqbench.results import ResultsWarning, aggregate, load, plots, summary_table, to_parquet
from seqbench.worker.models import MODELS

N_BOOT = 400  # enough for the tests, fast on 2 cores

DEFAULTS = {  # a schema-complete ok row; make_row derives the rest from task/model/seq_len/seed
    "schema_version": SCHEMA_VERSION, "suite": "fixture", "spec_hash": "f" * 64, "kind": "train",
    "batch_size": 32, "status": "ok", "error": "", "kernel_path": "aten-cpu",
    "param_count": 70_000, "d_model": 64, "train_steps": 300, "train_final_loss": 0.5,
    "train_step_s_median": 0.05, "train_tokens_per_s": 1e5, "fwd_step_s_median": 0.02,
    "fwd_tokens_per_s": 3e5, "peak_mem_bytes": 100 * 2**20, "mem_method": "rss-minus-baseline",
    "timing_method": "perf_counter", "mem_cap_bytes": 0, "wall_s": 12.0, "git_sha": "a" * 40,
    "git_dirty": False, "seqbench_version": "0.1.0", "python_version": "3.11.7",
    "torch_version": "2.13.0+cpu", "cuda_version": "", "cudnn_version": "",
    "mamba_ssm_version": "", "device": "cpu", "device_name": "Test CPU", "dtype": "float32",
    "autocast": "", "threads": 2, "host": "testhost", "started_at": "2026-11-25T10:00:00+00:00",
}
TASK_METRICS = {  # task -> (primary, {metric: (higher_is_better, baseline(seq_len))})
    "copy": ("accuracy", {"accuracy": (True, lambda T: 1 / 8),
                          "loss": (False, lambda T: 10 * math.log(8) / (T + 20))}),
    "adding": ("mse", {"mse": (False, lambda T: 1 / 6)}),
}


def make_row(task: str = "copy", model: str = "lstm", seq_len: int = 100, seed: int = 0,
             params: dict | None = None, metrics: dict | None = None, **fields) -> dict:
    """A schema-complete row; ``params`` enter the job (and so the config hash)."""
    kind = fields.get("kind", "train")
    job = {"kind": kind, "task": {"name": task, "seq_len": seq_len, "params": {}},
           "model": {"name": model, "params": {"d_model": 64, **(params or {})}},
           "train": {"steps": 300, "lr": 3e-3}, "device": "cpu", "seed": seed}
    without_seed = {k: v for k, v in job.items() if k != "seed"}
    config_hash = hashlib.sha256(json.dumps(without_seed, sort_keys=True).encode()).hexdigest()
    primary, spec = TASK_METRICS[task]
    row = {**DEFAULTS, "job_id": f"{config_hash[:16]}-s{seed}", "config_hash": config_hash,
           "seed": seed, "task": task, "model": model, "seq_len": seq_len,
           "input_len": seq_len + 20 if task == "copy" else seq_len, "job": job,
           "primary_metric": primary}
    for name, (higher, baseline) in spec.items():
        row[f"baseline_{name}"] = baseline(seq_len)
        row[f"higher_is_better_{name}"] = higher
        row[f"metric_{name}"] = (metrics or {}).get(name, 0.5)
    row.update(fields)
    if row["status"] != "ok":  # a failed job has no measurements
        row["error"] = row["error"] or f"{row['status']}: fixture"
        for key in [k for k in row if k.startswith("metric_")] + [
                "train_tokens_per_s", "fwd_tokens_per_s", "peak_mem_bytes", "train_final_loss"]:
            row.pop(key, None)
    return row


def write_dir(path: Path, rows: list[dict], *, truncate_last: bool = False,
              job_files: bool = True) -> Path:
    """A results directory as the store writes it: jobs/<job_id>.json + results.jsonl."""
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    text = "\n".join(lines) + "\n"
    if truncate_last:
        text = "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2]
    (path / "results.jsonl").write_text(text)
    for r in rows[:-1] if truncate_last else rows:
        if job_files:
            (path / "jobs" / f"{r['job_id']}.json").write_text(json.dumps(r))
    (path / "suite.json").write_text(json.dumps({"name": "fixture", "spec_hash": "f" * 64,
                                                 "spec": {"name": "fixture"}}))
    return path


ACC = {  # (model, seq_len) -> accuracy per seed 0, 1, 2: hand-checked statistics below
    ("lstm", 100): [0.90, 0.80, 0.70],
    ("gru", 100): [0.95, 0.97, 0.99],
    ("lstm", 200): [0.30, 0.20, 0.10],
    ("gru", 200): [0.60, 0.70, 0.80],
}


def suite_rows() -> list[dict]:
    """copy: LSTM + GRU x 2 lengths x 3 seeds, transformer OOM at 200 (all seeds) and one OOM
    seed at 100; adding: LSTM + GRU x 1 length x 2 seeds."""
    rows = []
    for (model, length), accs in ACC.items():
        for seed, acc in enumerate(accs):
            speed = {"lstm": 2e5, "gru": 1e5}[model] / length * 100 * (1 + 0.01 * seed)
            rows.append(make_row("copy", model, length, seed, metrics={"accuracy": acc,
                                 "loss": 1 - acc}, train_tokens_per_s=speed,
                                 peak_mem_bytes=(50 + length) * 2**20))
    for seed in range(3):
        status = "oom" if seed == 2 else "ok"
        rows.append(make_row("copy", "transformer", 100, seed, status=status,
                             metrics={"accuracy": 0.5 + 0.1 * seed},
                             train_tokens_per_s=5e4, peak_mem_bytes=900 * 2**20))
        rows.append(make_row("copy", "transformer", 200, seed, status="oom",
                             mem_cap_bytes=2**30))
    for model, mse in (("lstm", 0.16), ("gru", 0.001)):
        for seed in range(2):
            rows.append(make_row("adding", model, 50, seed, metrics={"mse": mse * (1 + seed)}))
    return rows


def stream_rows() -> list[dict]:
    """Streaming jobs as the runner writes them: one job (and row) per length, measured at
    context_len = input_len; attention's step cost and KV cache grow with the context."""
    rows = []
    for model, per_token in (("lstm", 0), ("transformer", 1)):
        for T in (64, 256, 1024):
            for seed in range(2):
                ctx = T + 20
                rows.append(make_row("copy", model, T, seed, kind="stream", context_len=ctx,
                                     stream_step_s_median=1e-3 * (1 + per_token * ctx / 256)
                                     + 1e-5 * seed, state_bytes=4096 + per_token * 512 * ctx))
    return rows


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    frame = pd.DataFrame(suite_rows())
    from seqbench.results.load import _typed, add_variants

    return add_variants(_typed(frame))


@pytest.fixture(scope="module")
def stats(df) -> pd.DataFrame:
    return aggregate(df, n_boot=N_BOOT)


def cell(stats: pd.DataFrame, model: str, seq_len: int, metric: str, task: str = "copy"):
    hit = stats[(stats.task == task) & (stats.model == model) & (stats.seq_len == seq_len)
                & (stats.metric == metric)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


# --- load -------------------------------------------------------------------------------------
def test_fixture_rows_are_schema_complete():
    row = make_row()
    assert set(REQUIRED) <= set(row)
    known = {f.name for f in FIELDS}
    assert all(k in known or k.startswith(PREFIXED) for k in row), set(row) - known


def test_load_reads_a_results_dir_one_row_per_job(tmp_path):
    rows = suite_rows()
    frame = load(write_dir(tmp_path / "r", rows))
    assert len(frame) == len(rows)
    assert frame["job_id"].is_unique
    assert frame["seq_len"].dtype == "Int64" and frame["metric_accuracy"].dtype == "float64"
    assert {"variant", "label", "source"} <= set(frame.columns)
    assert set(frame.loc[frame.model == "gru", "label"]) == {"GRU"}  # registry display name


def test_truncated_last_jsonl_line_is_reported_not_fatal(tmp_path):
    rows = suite_rows()
    path = write_dir(tmp_path / "r", rows, truncate_last=True, job_files=False)
    with pytest.warns(ResultsWarning, match="truncated line"):
        frame = load(path / "results.jsonl")
    assert len(frame) == len(rows) - 1
    assert any("truncated" in n for n in frame.attrs["notes"])


def test_job_files_recover_a_row_missing_from_the_jsonl(tmp_path):
    rows = suite_rows()
    path = write_dir(tmp_path / "r", rows, truncate_last=True)
    (path / "jobs" / f"{rows[-1]['job_id']}.json").write_text(json.dumps(rows[-1]))
    with pytest.warns(ResultsWarning, match="truncated"):
        frame = load(path)
    assert len(frame) == len(rows)


def test_rerun_keeps_the_last_row_and_says_so(tmp_path):
    first = make_row(metrics={"accuracy": 0.1})
    again = {**first, "metric_accuracy": 0.9}
    (tmp_path / "a.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(again) + "\n")
    with pytest.warns(ResultsWarning, match="re-runs"):
        frame = load(tmp_path / "a.jsonl")
    assert len(frame) == 1 and frame["metric_accuracy"].iloc[0] == 0.9


def test_identical_copies_in_jsonl_and_job_files_are_not_reruns(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultsWarning)
        frame = load(write_dir(tmp_path / "r", suite_rows()))
    assert frame.attrs["notes"] == []


def test_two_configs_sharing_a_display_key_stay_apart(tmp_path):
    rows = [make_row(seed=s, metrics={"accuracy": 0.2}) for s in range(2)]
    rows += [make_row(seed=s, params={"d_model": 128}, metrics={"accuracy": 0.8})
             for s in range(2)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.warns(ResultsWarning, match="2 configurations share this key"):
        frame = load(tmp_path / "a.jsonl")
    assert sorted(frame["variant"].unique()) == ["d_model=128", "d_model=64"]
    assert sorted(frame["label"].unique()) == ["LSTM (d_model=128)", "LSTM (d_model=64)"]
    stats = aggregate(frame, ["metric_accuracy"], n_boot=N_BOOT)
    assert sorted(stats["mean"]) == pytest.approx([0.2, 0.8])  # never averaged to 0.5


def test_configs_the_job_dicts_cannot_tell_apart_fall_back_to_the_hash(tmp_path):
    a, b = make_row(seed=0), make_row(seed=0, params={"d_model": 128})
    b["job"] = a["job"]  # same recorded job, different hash: the hash must still split them
    (tmp_path / "a.jsonl").write_text(json.dumps(a) + "\n" + json.dumps(b))
    with pytest.warns(ResultsWarning, match="configurations"):
        frame = load(tmp_path / "a.jsonl")
    assert frame["variant"].nunique() == 2
    assert all(v.startswith("config ") for v in frame["variant"])


def test_mixed_schema_versions_are_refused(tmp_path):
    rows = [make_row(seed=0), make_row(seed=1, schema_version=SCHEMA_VERSION + 1)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(SpecError, match="schema_version"):
        load(tmp_path / "a.jsonl")


@pytest.mark.parametrize("bad", ["missing", "empty.jsonl", "notes.txt"])
def test_bad_results_paths_are_one_line_spec_errors(tmp_path, bad):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SpecError) as err:
        load(tmp_path / bad)
    assert "\n" not in str(err.value)


def test_parquet_round_trip_keeps_rows_and_nested_jobs(tmp_path):
    frame = load(write_dir(tmp_path / "r", suite_rows() + stream_rows()))
    back = load(to_parquet(frame, tmp_path / "rows.parquet"))
    assert len(back) == len(frame)
    assert back["job"].iloc[0] == frame["job"].iloc[0]
    cols = ["job_id", "seq_len", "metric_accuracy", "status", "context_len", "label"]
    pd.testing.assert_frame_equal(back[cols], frame[cols], check_dtype=False)


def test_load_accepts_a_list_and_keeps_the_same_job_of_each_path_apart(tmp_path):
    old = make_row(metrics={"accuracy": 0.1})
    new = {**old, "metric_accuracy": 0.7}
    (tmp_path / "a.jsonl").write_text(json.dumps(old))
    (tmp_path / "b.jsonl").write_text(json.dumps(new))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultsWarning)  # two runs are not re-runs
        frame = load([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    assert frame["metric_accuracy"].tolist() == [0.1, 0.7]
    assert frame["run"].tolist() == ["a", "b"]
    assert frame["label"].tolist() == ["LSTM [a]", "LSTM [b]"]


def test_stream_rows_at_several_context_positions_are_all_kept(tmp_path):
    # each context position is a job of its own (one row per job, one job file per row)
    rows = [make_row(kind="stream", seq_len=c, context_len=c, state_bytes=c) for c in (64, 256)]
    assert rows[0]["job_id"] != rows[1]["job_id"]
    frame = load(write_results_dir(tmp_path, rows))
    assert sorted(frame["context_len"]) == [64, 256]


# --- statistics -------------------------------------------------------------------------------
def test_mean_std_n_match_hand_computed_values(stats):
    c = cell(stats, "lstm", 100, "metric_accuracy")
    assert c["mean"] == pytest.approx(0.8)
    assert c["std"] == pytest.approx(0.1)  # sample std (ddof=1) of 0.9, 0.8, 0.7
    assert c["n"] == 3 and c["n_failed"] == 0 and c["status"] == "ok"
    g = cell(stats, "gru", 200, "metric_accuracy")
    assert (g["mean"], g["std"]) == pytest.approx((0.7, 0.1))
    assert cell(stats, "lstm", 100, "metric_accuracy")["baseline"] == pytest.approx(1 / 8)
    assert cell(stats, "lstm", 100, "metric_loss")["baseline"] == pytest.approx(
        10 * math.log(8) / 120)


def test_intervals_of_the_fixture_are_student_t_and_absent_below_three_seeds(stats):
    ok = stats[stats["n"] >= 3]
    assert len(ok) > 10 and set(ok["ci_method"]) == {"t"}
    assert (ok["ci_low"] <= ok["mean"]).all() and (ok["mean"] <= ok["ci_high"]).all()
    c = cell(stats, "lstm", 100, "metric_accuracy")  # 0.9, 0.8, 0.7: mean 0.8, s = 0.1
    h = 4.302652729749464 * 0.1 / math.sqrt(3)  # t_{0.975, 2} x s / sqrt(n)
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((0.8 - h, 0.8 + h))
    two = cell(stats, "lstm", 50, "metric_mse", task="adding")  # 2 seeds: no interval
    assert two["ci_method"] == "none" and math.isnan(two["ci_low"]) and two["n"] == 2
    assert (two["min"], two["max"]) == pytest.approx((0.16, 0.32))


def test_failed_seeds_are_counted_not_dropped(stats):
    part = cell(stats, "transformer", 100, "metric_accuracy")
    assert (part["n"], part["n_failed"], part["status"]) == (2, 1, "partial")
    assert part["mean"] == pytest.approx(0.55) and part["failed"] == "1 oom"
    dead = cell(stats, "transformer", 200, "metric_accuracy")
    assert (dead["n"], dead["n_failed"], dead["failed"], dead["status"]) == (0, 3, "3 oom", "oom")
    assert math.isnan(dead["mean"])


def test_summary_table_has_one_row_per_cell_with_status(df):
    table = summary_table(df, n_boot=N_BOOT)
    assert len(table) == 8  # copy: 2 lengths x (lstm, gru, transformer); adding: 1 x 2 models
    assert list(table.columns) == ["task", "model", "seq_len", "metric", "value",
                                   "train tokens/s", "peak memory (MiB)", "status"]
    row = table[(table.model == "LSTM") & (table.seq_len == 100)].iloc[0]
    assert row["metric"] == "accuracy ↑" and row["value"] == "0.80 ± 0.25"  # t, n = 3
    assert row["peak memory (MiB)"] == "150" and row["status"] == "ok"
    dead = table[(table.model == "Transformer") & (table.seq_len == 200)].iloc[0]
    assert dead["status"] == "3 oom" and dead["value"] == "-"
    part = table[(table.model == "Transformer") & (table.seq_len == 100)].iloc[0]
    assert part["status"] == "2 ok, 1 oom"
    models = table[table.task == "copy"]["model"].drop_duplicates().tolist()
    assert models == ["LSTM", "GRU", "Transformer"]  # registry order, not alphabetical


# --- plots ------------------------------------------------------------------------------------
def gid_lines(ax, gid: str) -> list:
    return [line for line in ax.lines if line.get_gid() == gid]


def test_metric_plot_has_a_line_per_model_and_the_baseline(df, tmp_path):
    fig = plots.metric_vs_length(df, n_boot=N_BOOT)
    copy_ax, adding_ax = fig.axes[:2]
    assert copy_ax.get_title() == "copy" and copy_ax.get_xscale() == "log"
    assert copy_ax.xaxis.get_transform().base == 2
    series = gid_lines(copy_ax, "series")
    assert len(series) == 3  # LSTM, GRU, Transformer (only L=100 is ok)
    assert sorted(len(s.get_xdata()) for s in series) == [1, 2, 2]
    baseline = gid_lines(copy_ax, "baseline")
    assert len(baseline) == 1 and baseline[0].get_linestyle() == "--"
    assert list(baseline[0].get_ydata()) == pytest.approx([1 / 8, 1 / 8])
    failed = gid_lines(copy_ax, "failed")
    assert sum(len(f.get_xdata()) for f in failed) == 1  # transformer, L=200
    assert len(gid_lines(adding_ax, "series")) == 2
    assert {to_hex(s.get_color()) for s in series} == {
        MODELS[m].color for m in ("lstm", "gru", "transformer")}  # registry colours
    written = plots.save(fig, tmp_path / "metric", plots.FORMATS)
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.stat().st_size > 5000
                                                                    for p in written)
    assert "Test CPU" in fig.get_supxlabel() and "aaaaaaaaaa" in fig.get_supxlabel()


def test_skipped_lengths_are_not_drawn_as_failures():
    rows = [make_row(seq_len=100, seed=s) for s in range(2)]
    rows += [make_row(seq_len=200, seed=s, status="skipped") for s in range(2)]
    rows += [make_row(seq_len=200, seed=0, model="gru", status="timeout")]
    fig = plots.metric_vs_length(load_frame(rows), n_boot=N_BOOT)
    marks = gid_lines(fig.axes[0], "failed")
    assert [list(m.get_xdata()) for m in marks] == [[200.0]]  # the GRU timeout only
    assert to_hex(marks[0].get_color()) == MODELS["gru"].color


def test_saved_figures_carry_provenance_and_are_reproducible(df, tmp_path):
    from PIL import Image

    files = []
    for i in range(2):
        fig = plots.memory_vs_length(df, n_boot=N_BOOT)
        files.append(plots.save(fig, tmp_path / str(i) / "memory", ("png", "pdf", "svg")))
    assert [p.read_bytes() for p in files[0]] == [p.read_bytes() for p in files[1]]
    info = Image.open(files[0][0]).info
    assert info["Title"] == "Peak memory vs sequence length"
    assert "Test CPU" in info["Description"] and "aaaaaaaaaa" in info["Description"]
    assert b"Test CPU" in files[0][2].read_bytes()  # SVG <dc:description>


def test_throughput_plot_is_log_log_with_train_and_forward_rows(df):
    fig = plots.throughput_vs_length(df, n_boot=N_BOOT)
    assert len(fig.axes) == 4  # (train, forward) x (copy, adding)
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "training" in fig.axes[0].get_ylabel() and "forward" in fig.axes[2].get_ylabel()
    assert len(gid_lines(fig.axes[0], "series")) == 3


def test_memory_plot_marks_oom_where_it_happened(df):
    fig = plots.memory_vs_length(df, n_boot=N_BOOT)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(gid_lines(ax, "series")) == 3
    marks = gid_lines(ax, "failed")
    xs = sorted(float(x) for m in marks for x in m.get_xdata())
    assert xs == [100.0, 200.0]  # one seed at 100, all seeds at 200
    at_cap = next(m for m in marks if 200.0 in list(m.get_xdata()))
    assert list(at_cap.get_ydata()) == pytest.approx([1024.0])  # the 1 GiB cap, in MiB
    assert "MiB" in ax.get_ylabel()


def test_pareto_plot_has_a_point_per_model_and_the_front(df):
    fig = plots.pareto(df, seq_len=100, n_boot=N_BOOT)
    ax = fig.axes[0]
    points = [c for c in ax.collections if c.get_gid() == "points"]
    assert sorted(c.get_label() for c in points) == ["GRU", "LSTM", "Transformer"]  # at L=100
    assert all(len(c.get_offsets()) == 1 for c in points)
    front = gid_lines(ax, "front")[0]
    # GRU: 0.97 at ~1e5 tokens/s; LSTM: 0.8 at ~2e5; transformer is beaten by both
    assert list(front.get_ydata()) == pytest.approx([0.97, 0.8])
    assert ax.get_title() == "copy, seq_len 100"


def test_pareto_front_keeps_only_undominated_points():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([0.9, 0.95, 0.5, 0.6])
    assert plots.pareto_front(x, y, True).tolist() == [1, 3]
    assert plots.pareto_front(x, y, False).tolist() == [2, 3]


def test_streaming_plot_has_latency_and_state_size_per_model(df):
    rows = pd.concat([df, load_frame(stream_rows())])
    assert plots.has_streaming(rows)
    fig = plots.streaming(rows, n_boot=N_BOOT)
    latency, state = fig.axes[:2]
    assert "latency" in latency.get_ylabel() and "state" in state.get_ylabel()
    for ax in (latency, state):
        lines = gid_lines(ax, "series")
        assert len(lines) == 2 and all(len(line.get_xdata()) == 3 for line in lines)
    tr = next(line for line in gid_lines(state, "series") if line.get_ydata()[-1] > 100)
    assert list(tr.get_xdata()) == [84, 276, 1044]  # one line across the streaming jobs
    assert tr.get_ydata()[-1] == pytest.approx((4096 + 512 * 1044) / 1024)  # KiB


def load_frame(rows: list[dict]) -> pd.DataFrame:
    from seqbench.results.load import _typed, add_variants

    return add_variants(_typed(pd.DataFrame(rows)))


def test_generic_plot_resolves_short_names_and_rejects_unknown_ones(df):
    fig = plots.plot(df[df.task == "copy"], "accuracy", n_boot=N_BOOT)
    assert len(gid_lines(fig.axes[0], "series")) == 3
    with pytest.raises(SpecError, match="known: accuracy, loss"):
        plots.plot(df, "bleu")
    with pytest.raises(SpecError, match="x"):
        plots.plot(df, "accuracy", x="nonsense")
    with pytest.raises(SpecError, match="hue"):
        plots.plot(df, "accuracy", hue="nonsense")


# --- report and CLI ---------------------------------------------------------------------------
class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href", "data") and v]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    from seqbench.results.report import write_report

    root = tmp_path_factory.mktemp("report")
    results = write_dir(root / "results", suite_rows() + stream_rows())
    write_report(results, root / "out", n_boot=N_BOOT)
    return root / "out"


def test_report_writes_markdown_latex_html_and_figures(report_dir):
    names = {p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*")}
    assert {"report.md", "report.html", "stats.csv", "rows.parquet"} <= names
    for fig in ("metric_vs_length", "throughput_vs_length", "memory_vs_length", "pareto",
                "streaming"):
        assert {f"figures/{fig}.png", f"figures/{fig}.pdf"} <= names
    assert any(n.startswith("tables/") and n.endswith(".tex") for n in names)


def test_html_page_parses_and_references_no_external_file(report_dir):
    html = (report_dir / "report.html").read_text()
    parser = _Refs()
    parser.feed(html)
    parser.close()
    assert parser.tags.count("img") == 5
    assert parser.refs and all(r.startswith(("data:", "#")) for r in parser.refs)
    png = next(r for r in parser.refs if r.startswith("data:image/png;base64,"))
    assert base64.b64decode(png.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_report_tables_hold_the_right_numbers(report_dir):
    tex = (report_dir / "tables" / "copy_accuracy.tex").read_text()
    gru = next(line for line in tex.splitlines() if line.startswith("GRU"))
    # L=100: GRU 0.97 vs LSTM 0.8 and Transformer 0.55 is not separated by Welch + Holm at
    # n = 3/3/2: no mark there; L=200: GRU 0.7 vs LSTM 0.2 is (p = 0.004): bold
    assert r"0.970 $\pm$ 0.050 (n=3) & \textbf{0.70 $\pm$ 0.25} (n=3) \\" in gru
    lstm = next(line for line in tex.splitlines() if line.startswith("LSTM"))
    assert r"0.80 $\pm$ 0.25 (n=3)" in lstm and r"\textbf" not in lstm
    tr = next(line for line in tex.splitlines() if line.startswith("Transformer"))
    # two ok seeds: the mean and the range, never a 95% interval; then all seeds failed
    assert r"0.550 (n=2; range 0.500..0.600; 1 oom) & 3 oom \\" in tr
    assert "No best at 100" in tex
    md = (report_dir / "report.md").read_text()
    assert "0.80 ± 0.25 (n=3)" in md and "3 oom" in md and "Student-t" in md
    assert "Test CPU" in md and "aaaaaaaaaa" in md and "fixture (ffffffffffff)" in md
    stats = pd.read_csv(report_dir / "stats.csv")
    lstm_row = stats[(stats.model == "lstm") & (stats.seq_len == 100)
                     & (stats.metric == "metric_accuracy")].iloc[0]
    assert lstm_row["mean"] == pytest.approx(0.8) and lstm_row["n"] == 3


def test_two_seeds_never_bold_a_best_they_cannot_separate(report_dir):
    tex = (report_dir / "tables" / "adding_mse.tex").read_text()
    gru = next(line for line in tex.splitlines() if line.startswith("GRU"))
    # GRU 0.0015 < LSTM 0.24, but two seeds each: Welch p = 0.2, a tie, and both tie
    assert r"\textbf{" not in gru and "No best at 50" in tex


def test_cli_report_and_plot(tmp_path, capsys):
    results = write_dir(tmp_path / "results", suite_rows())
    small = write_dir(tmp_path / "small", [r for r in suite_rows() if r["task"] == "adding"])
    assert cli_main(["report", str(small), "--n-boot", "200", "--vector", "svg"]) == 0
    assert {p.name for p in (small / "report" / "figures").iterdir()} >= {
        "metric_vs_length.png", "metric_vs_length.svg"}
    assert "report: " in capsys.readouterr().out
    out = tmp_path / "one.png"
    assert cli_main(["plot", str(results), "--metric", "accuracy", "--filter", "task=copy",
                     "-o", str(out)]) == 0
    assert out.stat().st_size > 5000


@pytest.mark.parametrize("argv, field", [
    (["plot", "{results}", "--metric", "bleu"], "metric"),
    (["plot", "{results}", "--metric", "accuracy", "--filter", "task"], "filter"),
    (["plot", "{results}", "--metric", "accuracy", "--filter", "colour=red"], "filter"),
    (["plot", "{results}", "--metric", "accuracy", "--x", "banana"], "x"),
    (["plot", "{missing}", "--metric", "accuracy"], "results"),
    (["report", "{missing}"], "results"),
], ids=["unknown-metric", "filter-syntax", "filter-column", "unknown-x", "plot-missing",
        "report-missing"])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, field):
    results = write_dir(tmp_path / "results", suite_rows())
    argv = [a.format(results=results, missing=tmp_path / "nope") for a in argv]
    assert cli_main([*argv, "-o", str(tmp_path / "x.png")] if argv[0] == "plot" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"seqbench: error: {field}") and "\n" not in err
