"""Scaling runs: the length sweep and its batch policy, the frontier (an ``oom`` row, then
``skipped``), resuming, streaming state sizes, FLOP formulas and the complexity fit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from conftest import complete_row
from torch.utils.flop_counter import FlopCounterMode

from seqbench.config import expand, parse_suite
from seqbench.config.job import Job
from seqbench.errors import SpecError
from seqbench.execution.frontier import FrontierExecutor, StopPolicy
from seqbench.recording.rows import RunContext
from seqbench.results.complexity import complexity, fit_loglog
from seqbench.worker.job import run_job
from seqbench.worker.models import MODELS, IOSpec, build_model
from seqbench.worker.peaks import device_peak, peak_key

FAST = {"warmup_steps": 1, "max_warmup_steps": 1, "min_repeats": 1, "max_repeats": 1,
        "budget_s": 0.01}


def scale_suite(models: list[dict[str, Any]], **scale: Any) -> Any:
    return parse_suite({"name": "t", "kind": "scale", "device": "cpu", "models": models,
                        "tasks": [{"name": "adding"}], "scale": {**FAST, **scale}})


@pytest.fixture(autouse=True)
def peak_cache(tmp_path, monkeypatch):
    """A private device-peak cache with a known peak, so no job spends time probing."""
    monkeypatch.setenv("SEQBENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    entry = {"peak_flops_per_s": 1e11, "peak_bytes_per_s": 5e10, "method": "test",
             "measured_at": "2026-01-01T00:00:00+00:00"}
    (tmp_path / "cache" / "device_peaks.json").write_text(json.dumps(
        {peak_key(torch.device("cpu"), torch.float32): entry}))


# --- the sweep -----------------------------------------------------------------------------

def test_lengths_double_from_start_to_max_then_streaming_positions():
    suite = scale_suite([{"name": "lstm"}], start_len=256, max_len=2048,
                        stream_positions=[4096, 1024])
    jobs = expand(suite)
    assert [(j.kind, j.task.seq_len) for j in jobs] == [
        ("scale", 256), ("scale", 512), ("scale", 1024), ("scale", 2048),
        ("stream", 1024), ("stream", 4096)]
    assert scale_suite([{"name": "lstm"}], start_len=100, max_len=1000).scale.lengths() == [
        100, 200, 400, 800]


def test_fixed_tokens_keeps_batch_times_length_constant_and_one_curve_per_model():
    suite = scale_suite([{"name": "lstm"}, {"name": "gru"}], start_len=128, max_len=4096,
                        batch_policy="fixed-tokens", tokens_per_batch=4096, stream_positions=[])
    jobs = expand(suite)
    lstm = [j for j in jobs if j.model.name == "lstm"]
    assert [j.scale.batch(j.task.seq_len) * j.task.seq_len for j in lstm] == [4096] * 6
    assert lstm[-1].scale.batch(8192) == 1  # never below one sequence
    # the jobs of one model's sweep differ only in length: one curve, one configuration
    assert len({j.curve_key for j in lstm}) == 1
    assert len({j.curve_key for j in jobs}) == 2
    fixed = expand(scale_suite([{"name": "lstm"}], batch_policy="fixed-batch", batch_size=3,
                               start_len=128, max_len=512, stream_positions=[]))
    assert [j.scale.batch(j.task.seq_len) for j in fixed] == [3, 3, 3]


def test_scale_suites_refuse_listed_lengths_and_training_only_keys():
    base = {"name": "t", "kind": "scale", "models": [{"name": "lstm"}]}
    with pytest.raises(SpecError, match=r"tasks\[0\].seq_lens"):
        parse_suite({**base, "tasks": [{"name": "adding", "seq_lens": [64]}]})
    with pytest.raises(SpecError, match=r"train\.batch_size"):
        parse_suite({**base, "tasks": [{"name": "adding"}], "train": {"batch_size": 8}})
    with pytest.raises(SpecError, match=r"tasks\[0\].seq_lens"):  # train suites still need them
        parse_suite({"name": "t", "models": [{"name": "lstm"}], "tasks": [{"name": "adding"}]})
    with pytest.raises(SpecError, match="scale"):
        parse_suite({"name": "t", "models": [{"name": "lstm"}], "scale": {},
                     "tasks": [{"name": "adding", "seq_lens": [8]}]})


def test_shipped_scaling_specs_validate():
    from seqbench.config import load_suite

    for name in ("scale-cpu", "scale-gpu"):
        suite, _ = load_suite(name)
        assert suite.kind == "scale"
    cpu, _ = load_suite("scale-cpu")
    assert cpu.scale.mem_cap_gib > 0 and "transformer_math" in {m.name for m in cpu.models}
    gpu, _ = load_suite("scale-gpu")
    assert gpu.scale.lengths() == [2**k for k in range(9, 18)]


# --- the frontier ----------------------------------------------------------------------------

class FakeExecutor:
    """Rows decided by ``status(model, length)``; records which jobs it was asked to run."""

    name = "fake"

    def __init__(self, status) -> None:
        self.status = status
        self.ran: list[tuple[str, int]] = []

    def run(self, jobs, context, on_row) -> None:
        for job in jobs:
            model, L = job.model.name, job.task.seq_len
            self.ran.append((model, L))
            status, step_s = self.status(model, L)
            on_row(complete_row(job, status=status, error="" if status == "ok" else status,
                                train_step_s_median=step_s))


def lstm_ooms_from_1024(model: str, L: int) -> tuple[str, float]:
    return ("oom" if model == "lstm" and L >= 1024 else "ok"), 0.1


def frontier_run(suite, inner, recorded=None, policy=None):
    rows: list[dict[str, Any]] = []
    FrontierExecutor(inner, policy or StopPolicy.from_suite(suite), recorded).run(
        [j for j in expand(suite) if j.kind == "scale"], RunContext(suite="t"),
        lambda r: rows.append(r.to_dict()))
    return rows


def test_after_an_oom_longer_lengths_are_skipped_without_a_worker():
    suite = scale_suite([{"name": "lstm"}, {"name": "gru"}], start_len=256, max_len=4096)
    inner = FakeExecutor(lstm_ooms_from_1024)
    rows = frontier_run(suite, inner)
    lstm = [(r["seq_len"], r["status"]) for r in rows if r["model"] == "lstm"]
    assert lstm == [(256, "ok"), (512, "ok"), (1024, "oom"), (2048, "skipped"),
                    (4096, "skipped")]
    assert ("lstm", 2048) not in inner.ran and ("lstm", 4096) not in inner.ran
    assert [L for m, L in inner.ran if m == "gru"] == [256, 512, 1024, 2048, 4096]
    skipped = next(r for r in rows if r["status"] == "skipped")
    assert "oom at length 1024" in skipped["error"]
    assert skipped["batch_size"] == 8 and skipped["job_id"] == Job.parse(skipped["job"]).job_id
    assert "oom|timeout|slow" in skipped["stop_policy"]


def test_a_resumed_sweep_runs_nothing_recorded_and_skips_the_same_lengths():
    suite = scale_suite([{"name": "lstm"}], start_len=256, max_len=4096)
    first = frontier_run(suite, FakeExecutor(lstm_ooms_from_1024))
    recorded = {r["job_id"]: r for r in first}
    inner = FakeExecutor(lstm_ooms_from_1024)
    assert frontier_run(suite, inner, recorded) == [] and inner.ran == []
    # a run killed after the oom row, before the skipped rows were written
    partial = {r["job_id"]: r for r in first if r["status"] != "skipped"}
    rows = frontier_run(suite, inner, partial)
    assert inner.ran == [] and [r["status"] for r in rows] == ["skipped", "skipped"]


def test_policy_run_anyway_and_a_slow_step_frontier():
    suite = scale_suite([{"name": "lstm"}], start_len=256, max_len=2048, after_stop="run")
    inner = FakeExecutor(lstm_ooms_from_1024)
    rows = frontier_run(suite, inner)
    assert [r["status"] for r in rows] == ["ok", "ok", "oom", "oom"]
    # recorded `skipped` rows are decided again under the current policy: here, run
    skip_suite = scale_suite([{"name": "lstm"}], start_len=256, max_len=2048)
    skipped = {r["job_id"]: r for r in frontier_run(skip_suite,
                                                    FakeExecutor(lstm_ooms_from_1024))}
    inner = FakeExecutor(lstm_ooms_from_1024)
    frontier_run(suite, inner, skipped)
    assert inner.ran == [("lstm", 2048)]

    slow = scale_suite([{"name": "lstm"}], start_len=256, max_len=2048, max_step_s=1.0)
    inner = FakeExecutor(lambda model, L: ("ok", L / 400))  # 0.64, 1.28, ... s per step
    rows = frontier_run(slow, inner)
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped", "skipped"]
    assert "slow at length 512" in rows[-1]["error"]
    inner = FakeExecutor(lambda model, L: ("ok", 0.99))  # under the limit at every length
    assert [r["status"] for r in frontier_run(slow, inner)] == ["ok"] * 4


def test_streams_stop_on_their_prefill_time_not_the_training_step_limit():
    policy = StopPolicy(max_step_s=0.1, max_prefill_s=2.0)
    row = {"kind": "stream", "status": "ok", "seq_len": 4096, "prefill_s": 0.6}
    assert policy.reason(row) is None
    assert "prefill_s 2.4 s > max_prefill_s 2 s" in policy.reason({**row, "prefill_s": 2.4})


def worker_data_footprint() -> int:
    """VmData of a worker after its imports and a first torch op (bytes)."""
    script = ("import seqbench.worker.job, seqbench.worker.scale, torch\n"
              "torch.ones(64, 64) @ torch.ones(64, 64)\n"
              "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
              "if l.startswith('VmData:')))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    return int(out.stdout.strip())


def test_an_allocation_past_the_cpu_cap_is_an_oom_row_and_longer_lengths_are_skipped(tmp_path):
    """Real workers under a real cap: naive attention's L^2 scores cross it at some length."""
    from seqbench.execution.local import LocalExecutor

    cap_gib = (worker_data_footprint() + 128 * 2**20) / 2**30
    suite = scale_suite([{"name": "transformer_math", "params": {"d_model": 16, "n_heads": 4}}],
                        start_len=128, max_len=1024, batch_policy="fixed-batch", batch_size=16,
                        mem_cap_gib=cap_gib, forward=False, stream_positions=[])
    jobs = expand(suite)
    assert all(j.mem_cap_bytes == int(cap_gib * 2**30) for j in jobs)
    rows: list[dict[str, Any]] = []
    inner = LocalExecutor(1)
    FrontierExecutor(inner, StopPolicy.from_suite(suite)).run(
        jobs, RunContext(), lambda r: rows.append(r.to_dict()))
    statuses = [r["status"] for r in rows]
    first_oom = statuses.index("oom")
    assert statuses[0] == "ok" and 0 < first_oom < len(statuses) - 1, rows
    assert set(statuses[first_oom + 1:]) == {"skipped"}
    oom = rows[first_oom]
    assert "allocate" in oom["error"] and oom["mem_cap_bytes"] == int(cap_gib * 2**30)
    assert all(r["worker_wall_s"] == 0.0 for r in rows[first_oom + 1:])
    ok = rows[0]
    # a small job's RSS can sit at the idle baseline (peak_mem_bytes 0). The cap limits the data
    # segment (RLIMIT_DATA), not RSS: mapped library code counts in RSS and may exceed it.
    assert ok["peak_rss_bytes"] > 0 and ok["peak_mem_bytes"] >= 0
    assert ok["train_step_s_median"] > 0
    assert ok["timed_s"] <= ok["wall_s"] <= ok["worker_wall_s"]


# --- streaming -------------------------------------------------------------------------------

def stream_rows(model: dict[str, Any], positions: list[int]) -> list[dict[str, Any]]:
    suite = scale_suite([model], start_len=64, max_len=64, stream_positions=positions)
    return [run_job(j).to_dict() for j in expand(suite) if j.kind == "stream"]


def test_rnn_state_stays_constant_while_the_kv_cache_grows_linearly():
    positions = [64, 128, 256]
    lstm = stream_rows({"name": "lstm", "params": {"d_model": 32, "n_layers": 2}}, positions)
    attn = stream_rows({"name": "transformer", "params": {"d_model": 32, "n_layers": 2}},
                       positions)
    for rows in (lstm, attn):
        assert [r["status"] for r in rows] == ["ok"] * 3, rows[0]["error"]
        assert [r["context_len"] for r in rows] == positions
        assert all(r["state_bytes"] == r["state_bytes_analytic"] for r in rows)
        assert all(0 < r["stream_step_s_median"] < 1 and r["prefill_s"] > 0 for r in rows)
    assert {r["state_bytes"] for r in lstm} == {2 * 2 * 32 * 4}  # (h, c) x layers x D x fp32
    assert [r["state_bytes"] for r in attn] == [2 * 2 * L * 32 * 4 for L in positions]  # K, V
    fit = fit_loglog(positions, [r["state_bytes"] for r in attn])
    assert fit.slope == pytest.approx(1.0)


def test_stream_of_a_model_without_a_step_mode_is_unavailable(monkeypatch):
    from seqbench.worker.models.rnn import GRU

    monkeypatch.setattr(GRU, "supports_step", False)
    (row,) = stream_rows({"name": "gru", "params": {"d_model": 8}}, [32])
    assert row["status"] == "unavailable" and "step mode" in row["error"]


@pytest.mark.parametrize("name", MODELS.names())
def test_prefill_then_one_step_matches_the_full_forward(name):
    torch.manual_seed(0)
    model = build_model(name, {"d_model": 32, "n_layers": 2}, IOSpec("tokens", 10, 10, True))
    model.eval()
    x = torch.randint(0, 10, (3, 17))
    with torch.no_grad():
        full = model(x)  # (3, 17, 10)
        prompt_out, state = model.prefill(x[:, :16])
        next_out, _ = model.step(x[:, 16], state)
    torch.testing.assert_close(prompt_out, full[:, :16], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(next_out, full[:, 16], atol=1e-5, rtol=1e-4)


# --- FLOPs and the device peak ---------------------------------------------------------------

def counted_flops(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("name", ["rnn", "gru"])
def test_rnn_flop_formula_equals_torch_flop_counter(name):
    model = build_model(name, {"d_model": 32, "n_layers": 2}, IOSpec("tokens", 10, 10, True))
    x = torch.randint(0, 10, (2, 48))
    assert model.forward_flops(2, 48) == sum(counted_flops(model, x).values())


def test_lstm_and_attention_flop_formulas_by_hand():
    B, L, D, io = 2, 48, 32, IOSpec("channels", 2, 1, False)
    lstm = build_model("lstm", {"d_model": D, "mlp_ratio": 0}, io)
    # input projection 2 B L 2 D, 4 gates x (input + hidden) D x D per token, pooled head 2 B D
    assert lstm.forward_flops(B, L) == 2 * B * L * 2 * D + 4 * 2 * 2 * B * L * D * D + 2 * B * D
    # naive attention computes all L^2 scores; the formula counts the causal half
    attn = build_model("transformer_math", {"d_model": D, "n_heads": 4},
                       IOSpec("tokens", 10, 10, True))
    counts = counted_flops(attn, torch.randint(0, 10, (B, L)))
    assert counts["aten.bmm"] == 2 * 2 * B * L * L * D
    assert attn.forward_flops(B, L) == sum(counts.values()) - counts["aten.bmm"] / 2


def test_device_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQBENCH_CACHE_DIR", str(tmp_path / "fresh"))
    import seqbench.worker.peaks as scaling

    probes = []
    monkeypatch.setattr(scaling, "probe_matmul_flops", lambda d, t: probes.append(t) or 2e11)
    monkeypatch.setattr(scaling, "probe_copy_bytes", lambda d: 6e10)
    first = device_peak(torch.device("cpu"), torch.float32)
    again = device_peak(torch.device("cpu"), torch.float32)
    assert first == again and probes == [torch.float32]
    assert first["peak_flops_per_s"] == 2e11 and first["peak_bytes_per_s"] == 6e10
    monkeypatch.setattr(scaling, "probe_matmul_flops", lambda d, t: 1e11)  # a loaded machine
    refreshed = device_peak(torch.device("cpu"), torch.float32, refresh=True)
    assert refreshed["peak_flops_per_s"] == 2e11 and refreshed["probes"] == 2  # best kept
    stored = json.loads((tmp_path / "fresh" / "device_peaks.json").read_text())
    assert list(stored) == [peak_key(torch.device("cpu"), torch.float32)]


def test_probe_measures_a_real_matmul_rate():
    from seqbench.worker.peaks import probe_matmul_flops

    rate = probe_matmul_flops(torch.device("cpu"), torch.float32, n=256, budget_s=0.05)
    assert 1e8 < rate < 1e14  # FLOP/s, not FLOP/ms or a time


def test_scale_row_carries_flops_utilisation_and_measurements():
    suite = scale_suite([{"name": "gru", "params": {"d_model": 16}}], start_len=32,
                        max_len=32, batch_policy="fixed-batch", batch_size=4,
                        stream_positions=[])
    (row,) = [run_job(j).to_dict() for j in expand(suite)]
    assert row["status"] == "ok", row["error"]
    assert row["batch_size"] == 4 and row["batch_policy"] == "fixed-batch"
    assert row["flops_per_train_step"] == 3 * row["flops_per_fwd"] > 0
    assert row["train_flops_per_s"] == pytest.approx(row["flops_per_train_step"]
                                                     / row["train_step_s_median"])
    assert row["flops_utilization"] == pytest.approx(row["train_flops_per_s"] / 1e11)
    assert row["peak_flops_per_s"] == 1e11 and "test" in row["peak_probe"]
    assert row["train_first_step_s"] > 0 and row["fwd_step_s_median"] > 0
    assert row["warmup_calls"] == {"train": 1, "fwd": 1}
    assert row["train_tokens_per_s"] == pytest.approx(4 * 32 / row["train_step_s_median"])


# --- the complexity fit ----------------------------------------------------------------------

def test_slope_fit_returns_one_and_two_on_linear_and_quadratic_data():
    L = np.array([256, 512, 1024, 2048, 4096])
    linear, quadratic = fit_loglog(L, 3e-6 * L), fit_loglog(L, 5e-9 * L**2)
    assert linear.slope == pytest.approx(1.0) and quadratic.slope == pytest.approx(2.0)
    assert linear.r2 == pytest.approx(1.0)
    assert quadratic.points[0] == (256, pytest.approx(5e-9 * 256**2))
    noisy = fit_loglog(L, 5e-9 * L**2 * np.array([1.05, 0.97, 1.02, 0.99, 1.03]))
    assert noisy.slope == pytest.approx(2.0, abs=0.05) and noisy.r2 > 0.99
    # a fixed part bends the plain fit; the increments between lengths recover the exponent
    from seqbench.results.complexity import fit_increments

    with_offset = 5e8 + 2e3 * L**2
    assert fit_loglog(L, with_offset).slope < 1.5
    assert fit_increments(list(L), list(with_offset)).slope == pytest.approx(2.0)
    assert fit_increments([256, 512], [1.0, 2.0]) is None
    assert fit_loglog([256], [1.0]) is None
    assert fit_loglog([256, 512, 1024], [1.0, math.nan, 0.0]) is None  # unusable points dropped


def test_complexity_fits_each_curve_over_ok_rows_and_names_the_frontier():
    suite = scale_suite([{"name": "lstm"}, {"name": "transformer_math"}], start_len=256,
                        max_len=4096, batch_policy="fixed-batch", stream_positions=[])
    rows = []
    for job in expand(suite):
        L, model = job.task.seq_len, job.model.name
        quadratic = model == "transformer_math"
        status = "oom" if quadratic and L == 2048 else "skipped" if quadratic and L > 2048 \
            else "error" if L == 512 and not quadratic else "ok"
        error = "skipped: the sweep stopped (oom at length 2048)" if status == "skipped" else ""
        rows.append({"kind": "scale", "task": "adding", "model": model, "seq_len": L,
                     "input_len": L, "status": status, "error": error, "batch_size": 8,
                     "job": job.dump(),
                     "batch_policy": "fixed-batch",
                     "train_step_s_median": 1e-4 * L * (L / 256 if quadratic else 1),
                     "peak_mem_bytes": 1e3 * L * (L if quadratic else 1)})
    curves = {c["model"]: c for c in complexity(rows)}
    assert curves["lstm"]["fits"]["train_step_s_median"]["slope"] == pytest.approx(1.0)
    # an error the sweep went past is listed, but it is not the frontier
    assert curves["lstm"]["frontier_len"] == 4096 and curves["lstm"]["stopped_by"] == ""
    assert curves["lstm"]["failures"] == ["error at 512"]
    math_curve = curves["transformer_math"]
    assert math_curve["fits"]["peak_mem_bytes"]["slope"] == pytest.approx(2.0)
    assert math_curve["fits"]["train_s_per_seq"]["tail_slope"] == pytest.approx(2.0)
    assert math_curve["fits"]["peak_mem_bytes"]["increment_slope"] == pytest.approx(2.0)
    assert math_curve["lengths_ok"] == [256, 512, 1024] and math_curve["frontier_len"] == 1024
    assert math_curve["stopped_by"] == "oom at length 2048"  # its skipped rows' reason
    for row in rows:  # a curve ended by skipped rows alone names their reason
        if row["model"] == "lstm" and row["seq_len"] == 4096:
            row.update(status="skipped",
                       error="skipped: the sweep stopped (slow at length 2048: step 9 s)")
    curves = {c["model"]: c for c in complexity(rows)}
    assert curves["lstm"]["stopped_by"] == "slow at length 2048"  # the reason's head only
    assert curves["lstm"]["frontier_len"] == 2048
