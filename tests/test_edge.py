"""The edge track (seqbench.worker.edge) and the figures of issue 17: latency statistics from
their samples, int8 outputs close to float32 ones, weight bytes counted exactly, the track for
every streaming model at a tiny size, a job recording it next to its own metric, the spec
setting, and the gradient and edge figures and tables drawn from real rows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONTEXT, tiny_spec, write_results_dir
from pydantic import ValidationError
from torch import nn

from seqbench.catalog import MODELS
from seqbench.config import expand, parse_suite
from seqbench.config.load import load_suite
from seqbench.config.spec import EdgeSpec, TrainSpec
from seqbench.recording.validate import check_row
from seqbench.results.edge import edge_pareto, edge_table, load_edge
from seqbench.results.gradients import gradient_figures, gradient_flow, gradient_table
from seqbench.results.load import load, load_grad_profiles
from seqbench.worker.data import build_task
from seqbench.worker.data.base import generator
from seqbench.worker.edge import (
    QPARAM_BYTES,
    _quiet_quantization,
    latency_stats,
    measure_edge,
    quantize,
    timed_stream,
    weight_bytes,
)
from seqbench.worker.job import error_fields, run_job
from seqbench.worker.models import build_model, mixer_class, split_params
from seqbench.worker.train import evaluate

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def stored(row: Any) -> dict[str, Any]:
    """A row as the store writes it (NaN as null) and every reader reads it."""
    from seqbench.recording.store import dumps

    return json.loads(dumps(row))


def tiny_params(name: str, width: int = 8) -> dict[str, Any]:
    _, cfg, _ = split_params(name, {})
    multiple = mixer_class(name).d_model_multiple(cfg)
    return {"d_model": multiple * max(1, math.ceil(width / multiple))}


# --- statistics and sizes ------------------------------------------------------------------------
def test_latency_statistics_are_those_of_the_samples():
    samples = [float(v) for v in np.random.default_rng(0).permutation(np.arange(1.0, 101.0))]
    stats = latency_stats(samples)
    assert stats["latency_s_median"] == 50.5
    assert stats["latency_s_p99"] == pytest.approx(99.01)  # rank 0.99 x 99 = 98.01: 99 + 0.01
    assert stats["latency_s_mean"] == 50.5
    assert latency_stats([3.0, 1.0, 2.0])["latency_s_p99"] == pytest.approx(2.98)
    assert all(math.isnan(v) for v in latency_stats([]).values())


def test_timed_stream_keeps_one_sample_per_step_after_the_warm_up():
    task = build_task("copy", 3)  # 23 tokens a sequence
    model = build_model("gru", {"d_model": 8}, task.info.io).eval()
    calls = []
    step = model.step
    model.step = lambda x_t, state: (calls.append(1), step(x_t, state))[1]  # type: ignore
    x, _ = task.sample(generator(0, "eval", CPU), 1, CPU)
    samples = timed_stream(model, iter([x, x, x]), warmup=10, tokens=30)
    assert len(samples) == 30 and len(calls) == 40 and all(s > 0 for s in samples)


def test_weight_bytes_count_int8_weights_at_one_byte_each():
    model = nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4))
    assert weight_bytes(model) == 4 * (8 * 4 + 4 + 4 + 4)
    from torch.ao.quantization import quantize_dynamic

    with _quiet_quantization():
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    # int8 weight + its scale and zero point, float32 bias, the norm's float32 weight and bias
    assert weight_bytes(quantized) == 8 * 4 + QPARAM_BYTES + 4 * 4 + 4 * (4 + 4)


@pytest.mark.parametrize("name, modules", [
    ("lstm", {"LSTM": 1, "Linear": 3}), ("gru", {"GRU": 1, "Linear": 3}),
    ("rnn", {"Linear": 3}),  # torch's dynamic quantization has no nn.RNN: it stays float32
    ("transformer", {"Linear": 5})])
def test_int8_outputs_stay_within_five_percent_of_the_float_model(name, modules):
    """Dynamic int8 (per-tensor weights, per-call activations) of a trained-size model: the
    outputs' relative error ||y8 - y|| / ||y|| stays below 0.05 (measured: 0.01 to 0.03)."""
    torch.manual_seed(0)
    task = build_task("copy", 10)
    model = build_model(name, tiny_params(name, 32), task.info.io).eval()
    quantized, info = quantize(model)
    x, _ = task.sample(generator(0, "eval", CPU), 16, CPU)
    with torch.inference_mode():
        y, y8 = model(x), quantized(x)
    assert 0 < float((y8 - y).norm() / y.norm()) < 0.05
    assert info["quantized"] == modules and info["quant_engine"]
    assert sum(p.numel() for p in model.parameters()) > 0  # the float model is left as it was
    assert all(isinstance(m, nn.Linear) for m in (model.head, model.blocks[0].mlp[0]))
    fraction = info["quantized_param_fraction"]
    assert (fraction < 0.7) if name == "rnn" else (fraction > 0.85)
    assert weight_bytes(quantized) < (0.7 if name == "rnn" else 0.5) * weight_bytes(model)


# --- the track -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS.names())
def test_the_edge_track_runs_for_every_streaming_model(name):
    if not mixer_class(name).supports_step:
        pytest.skip(f"{name} has no streaming step")
    _, cfg, _ = split_params(name, {})
    reason = mixer_class(name).unavailable_reason(cfg, CPU)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    task = build_task("copy", 3)  # input length 23, every position scored
    model = build_model(name, tiny_params(name), task.info.io).eval()
    train = TrainSpec(eval_examples=16, eval_batch_size=8)
    threads = torch.get_num_threads()
    entries = measure_edge(model, task, EdgeSpec(tokens=30, warmup=5), train, 0, error_fields)
    assert torch.get_num_threads() == threads
    assert [e["precision"] for e in entries] == ["float32", "int8"]
    expected = evaluate(model, task, train, CPU, 0, n_examples=16).metrics["accuracy"]
    for entry in entries:
        assert entry["status"] == "ok", entry["error"]
        assert entry["threads"] == 1 and entry["context_len"] == 23
        samples = entry["latency_s_samples"]
        assert len(samples) == entry["tokens"] == 30 and entry["sequences"] == 2
        assert entry["latency_s_median"] == float(np.median(samples))
        assert entry["latency_s_p99"] == float(np.percentile(samples, 99))
        assert entry["peak_rss_bytes"] >= entry["start_rss_bytes"] > 0
        assert entry["weight_bytes"] > 0 and 0 <= entry.get("quantized_param_fraction", 0) <= 1
        with torch.no_grad():  # the state after one whole sequence
            _, state = model.prefill(task.sample(generator(0, "eval", CPU), 1, CPU)[0])
        from seqbench.worker.models.base import state_nbytes

        assert entry["state_bytes"] == state_nbytes(state)
    floats, int8 = entries
    assert floats["metric_accuracy"] == expected  # the same examples as the model's evaluation
    assert floats["weight_bytes"] == 4 * sum(p.numel() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    assert floats["stream_vs_forward_max_abs"] < 1e-4
    assert int8["weight_bytes"] < floats["weight_bytes"]
    assert 0 <= int8["metric_accuracy"] <= 1


def test_a_recurrent_state_stays_constant_while_a_kv_cache_grows_with_the_context():
    entries = {}
    for name in ("gru", "transformer"):
        torch.manual_seed(0)
        for seq_len in (3, 13):
            task = build_task("copy", seq_len)
            model = build_model(name, {"d_model": 8, **({"n_heads": 2} if name == "transformer"
                                                        else {})}, task.info.io).eval()
            (entry,) = measure_edge(model, task, EdgeSpec(tokens=5, warmup=0, int8=False),
                                    TrainSpec(eval_examples=8), 0, error_fields)
            entries[name, task.info.input_len] = entry["state_bytes"]
    assert entries["gru", 23] == entries["gru", 33] == 8 * 4  # h: d_model float32
    # K and V: 2 x tokens x d_model float32
    assert entries["transformer", 23] == 2 * 23 * 8 * 4
    assert entries["transformer", 33] == 2 * 33 * 8 * 4


def test_a_variant_that_fails_is_recorded_and_the_others_still_run(monkeypatch):
    import seqbench.worker.edge as edge

    def broken(model):
        raise RuntimeError("no quantized engine")

    monkeypatch.setattr(edge, "quantize", broken)
    task = build_task("copy", 3)
    model = build_model("gru", {"d_model": 8}, task.info.io).eval()
    floats, int8 = measure_edge(model, task, EdgeSpec(tokens=5, warmup=0),
                                TrainSpec(eval_examples=8), 0, error_fields)
    assert floats["status"] == "ok" and int8["status"] == "error"
    assert "no quantized engine" in int8["error"] and int8["edge_s"] >= 0


# --- the spec setting and the job ----------------------------------------------------------------
def test_the_edge_setting_is_strict_and_absent_from_hashes_when_unset():
    with pytest.raises(ValidationError):
        EdgeSpec(tokens=0)
    with pytest.raises(ValidationError):
        EdgeSpec.model_validate({"tokens": 10, "latency": True})
    plain = expand(parse_suite(tiny_spec()))[0]
    assert "edge" not in plain.dump()["train"]
    with_edge = expand(parse_suite(tiny_spec(train={**tiny_spec()["train"],
                                                    "edge": {"tokens": 10}})))[0]
    assert with_edge.dump()["train"]["edge"] == {"tokens": 10, "warmup": 100, "threads": 1,
                                                 "int8": True, "eval_examples": None}
    assert with_edge.config_hash != plain.config_hash


SPEC_TRAIN = {"steps": 4, "batch_size": 4, "eval_examples": 8, "eval_batch_size": 8,
              "grad_probe": {"at": ["init", "end"], "examples": 4, "positions": 4},
              "edge": {"tokens": 20, "warmup": 5}}
FIGURE_MODELS = ("rnn", "gru", "transformer")


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """Real rows of three models, each with a gradient profile and the edge track."""
    models = [{"name": n, "params": {"d_model": 8, **({"n_heads": 2} if n == "transformer"
                                                      else {})}} for n in FIGURE_MODELS]
    spec = tiny_spec(seeds=[0], models=models, train=SPEC_TRAIN,
                     tasks=[{"name": "copy", "seq_lens": [3]}])
    return [stored(run_job(job, CONTEXT)) for job in expand(parse_suite(spec))]


@pytest.fixture(scope="module")
def results_dir(rows, tmp_path_factory) -> Path:
    return write_results_dir(tmp_path_factory.mktemp("edge"), rows)


def test_a_job_with_an_edge_setting_records_the_track_on_its_own_evaluation(rows):
    for row in rows:
        assert row["status"] == "ok" and check_row(row) == []
        floats, int8 = row["edge"]
        assert floats["precision"] == "float32" and int8["precision"] == "int8"
        # the job evaluated eval_examples of eval_split on the CPU: the same examples
        assert floats["metric_accuracy"] == row["metric_accuracy"]
        assert floats["eval_examples"] == 8 and floats["eval_split"] == "eval"
        assert len(floats["latency_s_samples"]) == 20


def test_edge_records_load_and_tabulate_from_their_samples(rows, results_dir):
    edge = load_edge(results_dir, warn=False)
    assert len(edge) == 2 * len(rows) and set(edge["precision"]) == {"float32", "int8"}
    assert set(edge["higher_is_better_accuracy"]) == {True}
    table = edge_table(edge)
    assert list(table["model"]) == list(FIGURE_MODELS)  # registry order
    for _, rec in table.iterrows():
        row = next(r for r in rows if r["model"] == rec["model"])
        floats, int8 = row["edge"]
        assert rec["latency_us_median_float32"] == pytest.approx(
            1e6 * np.median(floats["latency_s_samples"]))
        assert rec["latency_us_p99_int8"] == pytest.approx(
            1e6 * np.percentile(int8["latency_s_samples"], 99))
        assert rec["metric_change"] == pytest.approx(int8["metric_accuracy"]
                                                     - floats["metric_accuracy"])
        assert rec["state_bytes"] == floats["state_bytes"]


def test_the_edge_pareto_figure_has_every_model_and_variant_in_both_panels(results_dir):
    edge = load_edge(results_dir, warn=False)
    fig = edge_pareto(edge, load(results_dir, warn=False))
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax in axes:
        points = [line for line in ax.lines if line.get_gid() == "points"]
        assert len(points) == 2 * len(FIGURE_MODELS)
        colours = {line.get_color() for line in points}
        assert colours == {MODELS[m].color for m in FIGURE_MODELS}
        assert [line for line in ax.lines if line.get_gid() == "front"]
        assert ax.get_xscale() in ("log", "linear")
    assert axes[0].get_xlabel().startswith("per-token latency")


def test_the_edge_pareto_legend_of_every_model_fits_inside_the_figure(results_dir):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    edge = load_edge(results_dir, warn=False)
    one = edge[edge["model"] == "gru"]
    every = pd.concat([one.assign(model=m, label=MODELS[m].display, job_id=f"{m}-s0")
                       for m in MODELS.names()], ignore_index=True)
    fig = edge_pareto(every, load(results_dir, warn=False))
    FigureCanvasAgg(fig).draw()
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == len(MODELS.names()) + 4
    box = legend.get_window_extent()
    assert box.y0 >= 0 and box.y1 <= fig.bbox.height


def test_the_gradient_figure_has_one_panel_per_architecture_with_a_visible_line(results_dir):
    profiles = load_grad_profiles(results_dir, warn=False)
    fig = gradient_flow(profiles, load(results_dir, warn=False), task="copy", seq_len=3)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(FIGURE_MODELS)
    for ax, model in zip(panels, FIGURE_MODELS, strict=True):
        assert ax.get_title().startswith(MODELS[model].display)
        lines = [line for line in ax.lines if line.get_gid() == "series"]
        assert len(lines) == 2  # at init and after training
        for line in lines:
            y = np.asarray(line.get_ydata(), dtype=float)
            assert line.get_visible() and len(y) > 1 and np.all(np.isfinite(y) & (y > 0))
            assert y[0] == pytest.approx(1.0)  # relative to the norm at distance 0
            assert line.get_color() == MODELS[model].color
        assert ax.get_yscale() == "log"
    assert set(gradient_figures(profiles, load(results_dir, warn=False))) == {("copy", 3)}


def test_the_gradient_table_holds_each_point_s_decay_and_horizon(rows, results_dir):
    table = gradient_table(load_grad_profiles(results_dir, warn=False))
    assert list(table["model"]) == list(FIGURE_MODELS)
    for _, rec in table.iterrows():
        row = next(r for r in rows if r["model"] == rec["model"])
        init, end = row["grad_profile"]
        assert rec["decay_init"] == pytest.approx(init["decay_per_step"])
        assert rec["decay_end"] == pytest.approx(end["decay_per_step"])
        d = np.asarray(end["distances"][1:], dtype=float)
        y = np.log(np.asarray(end["norms"][1:], dtype=float))
        assert rec["r2_end"] == pytest.approx(np.corrcoef(d, y)[0, 1] ** 2)
        for key, point in (("horizon_init", init), ("horizon_end", end)):
            assert (rec[key] is None and point["horizon"] is None) or rec[key] == point[
                "horizon"]


def test_the_fit_r2_is_one_for_an_exponential_and_that_of_the_line_otherwise():
    from seqbench.results.gradients import fit_r2

    d = np.arange(12)
    exact = pd.DataFrame({"distance": d, "norm": 3.0 * 0.5 ** d})
    exact.loc[0, "norm"] = 50.0  # the direct path at distance 0 stays out of the fit
    assert fit_r2(exact) == pytest.approx(1.0)
    assert fit_r2(pd.DataFrame({"distance": d, "norm": np.ones(12)})) is None
    v_shape = pd.DataFrame({"distance": [0, 1, 2, 3], "norm": np.exp([0.0, 0.0, -1.0, 0.0])})
    # ln norm 0, -1, 0 at d = 1, 2, 3: slope 0, residuals 1/3, -2/3, 1/3 -> R² = 0
    assert fit_r2(v_shape) == pytest.approx(0.0, abs=1e-12)
    assert fit_r2(v_shape.iloc[:3]) is None  # two distances past 0


@pytest.mark.parametrize("spec, results", [("gradients-cpu", "reference-gradients-cpu"),
                                           ("edge-cpu", "reference-edge-cpu")])
def test_job_ids_of_the_specs_are_those_of_their_committed_reference_runs(spec, results):
    folder = ROOT / "results" / results
    if not folder.exists():
        pytest.skip(f"no committed {results}")
    suite, _ = load_suite(str(ROOT / "tasks" / f"{spec}.yaml"))
    jobs = expand(suite)
    stored_ids = {p.stem for p in (folder / "jobs").glob("*.json")}
    assert {job.job_id for job in jobs} == stored_ids


def test_the_writers_save_every_figure_and_table(results_dir, tmp_path):
    from seqbench.results import edge, gradients

    written = gradients.write(results_dir, tmp_path) + edge.write(results_dir, tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(["gradients-copy-3.png", "gradients-copy-3.pdf", "gradients.csv",
                            "gradients.md", "edge-pareto.png", "edge-pareto.pdf", "edge.csv",
                            "edge.md"])
    assert all(p.stat().st_size > 0 for p in written)
    table = (tmp_path / "edge.md").read_text()
    assert all(MODELS[m].display in table for m in FIGURE_MODELS)


def test_the_report_has_both_sections_for_rows_with_them_and_neither_without(rows, tmp_path):
    from seqbench.results.report import write_report

    with_tracks = write_results_dir(tmp_path / "with", rows)
    write_report(with_tracks, tmp_path / "report", n_boot=200)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Gradient flow over time" in text and "## Edge track" in text
    assert text.index("## Gradient flow over time") < text.index("## Tables")
    for name in ("gradients-copy-3.png", "gradients-copy-3.pdf", "edge-pareto.png"):
        assert (tmp_path / "report" / "figures" / name).stat().st_size > 0
        assert name.endswith(".pdf") or f"figures/{name}" in text
    table = pd.read_csv(tmp_path / "report" / "gradients.csv")
    assert list(table["model"]) == list(FIGURE_MODELS)
    assert all(MODELS[m].display in text for m in FIGURE_MODELS)
    assert len(pd.read_csv(tmp_path / "report" / "edge.csv")) == len(FIGURE_MODELS)

    plain = write_results_dir(tmp_path / "plain", [
        {k: v for k, v in row.items() if k not in ("grad_profile", "edge")} for row in rows])
    write_report(plain, tmp_path / "plain-report", n_boot=200)
    text = (tmp_path / "plain-report" / "report.md").read_text()
    assert "Gradient flow" not in text and "Edge track" not in text
    assert not list((tmp_path / "plain-report").rglob("gradients*"))
    assert not list((tmp_path / "plain-report").rglob("edge*"))
