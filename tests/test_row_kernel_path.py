"""Rows record the kernel path seen in a profiler trace of one probe call after the job's
measurements (seqbench/worker/kernels_seen.py wired into worker/job.py and worker/scale.py):
``kernel_path_source`` says observed or inferred; a mixer whose claim the trace contradicts
gets what ran; the probe leaves the measured row alone; rows from before the field still
validate and do not carry it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import TINY, complete_row, tiny_jobs

from seqbench.config import expand, parse_suite
from seqbench.recording.validate import check_row
from seqbench.worker import scale
from seqbench.worker.job import run_job
from seqbench.worker.models.mamba import Mamba
from seqbench.worker.models.ops import native

FUSED = native.library() is not None
needs_fused = pytest.mark.skipif(not FUSED, reason="fused CPU kernels unavailable")


def train_row(name: str, **params: Any) -> dict[str, Any]:
    (job,) = tiny_jobs(seeds=[0], models=[{"name": name, "params": {"d_model": 16, **params}}])
    row = run_job(job).to_dict()
    assert row["status"] == "ok", row["error"]
    return row


@pytest.mark.parametrize("name,params,path,source", [
    pytest.param("mamba", {}, "cpu-fused-scan", "observed", marks=needs_fused),
    ("lstm", {}, "aten-cpu", "observed"),
    ("transformer", {"attn_dropout": 0.1}, "sdpa-math", "observed"),  # dropout: math on CPU
    ("mamba", {"scan": "chunked"}, "torch-chunked-scan", "inferred"),
    ("s4d", {}, "fft-conv", "inferred")])
def test_a_cpu_train_row_says_which_kernel_ran_and_whether_it_was_seen(name, params, path,
                                                                       source):
    row = train_row(name, **params)
    assert (row["kernel_path"], row["kernel_path_source"]) == (path, source)


@needs_fused
def test_a_claim_the_trace_contradicts_is_recorded_as_what_ran(monkeypatch):
    real = Mamba.forward

    def claims_the_chunked_scan(self, x):
        y = real(self, x)  # the fused C++ scan runs
        self.kernel_path = "torch-chunked-scan"
        return y

    monkeypatch.setattr(Mamba, "forward", claims_the_chunked_scan)
    row = train_row("mamba")
    assert (row["kernel_path"], row["kernel_path_source"]) == ("cpu-fused-scan", "observed")


def test_the_probe_changes_no_measurement():
    """The probe runs after the measurements and under its own random streams: the same job
    with the probe made a no-op gives the same metrics and losses."""
    (job,) = tiny_jobs(seeds=[0], models=[{"name": "transformer",
                                           "params": {"d_model": 16, "dropout": 0.2}}])
    with_probe = run_job(job).to_dict()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("seqbench.worker.kernels_seen.forward_row_fields",
                   lambda *a, **k: {"kernel_path_source": "inferred"})
        without = run_job(job).to_dict()
    assert with_probe["kernel_path_source"] == "observed"
    for key in ("train_final_loss", "metric_mse", "train_steps"):
        assert with_probe[key] == without[key], key


def test_scale_and_stream_rows_record_their_kernel_paths(monkeypatch):
    monkeypatch.setattr(scale, "peak_fields", lambda device, dtype: {})
    suite = parse_suite({"name": "t", "kind": "scale", "device": "cpu",
                         "models": [{"name": "gru", "params": {"d_model": 16}}],
                         "tasks": [{"name": "adding"}],
                         "scale": {"warmup_steps": 1, "max_warmup_steps": 1, "min_repeats": 1,
                                   "max_repeats": 1, "budget_s": 0.01, "start_len": 32,
                                   "max_len": 32, "stream_positions": [32]}})
    rows = {j.kind: run_job(j).to_dict() for j in expand(suite)}
    assert set(rows) == {"scale", "stream"}
    for row in rows.values():
        assert row["status"] == "ok", row["error"]
        assert (row["kernel_path"], row["kernel_path_source"]) == ("aten-cpu", "observed")


def test_rows_without_the_field_validate_and_leave_it_out():
    old = complete_row(status="ok").to_dict()
    assert "kernel_path_source" not in old
    assert not [p for p in check_row(old) if "kernel_path_source" in p]
    assert not [p for p in check_row({**old, "kernel_path_source": "observed"})
                if "kernel_path_source" in p]
    assert [p for p in check_row({**old, "kernel_path_source": 1})
            if "kernel_path_source" in p]
    with pytest.raises(ValueError):  # the worker's typed row takes only the two values
        complete_row(kernel_path_source="seen")


def test_a_probe_out_of_memory_keeps_the_claim_as_inferred():
    from seqbench.worker.kernels_seen import row_fields

    m = torch.nn.Linear(2, 2)
    m.kernel_path = "aten-cpu"  # type: ignore[assignment]

    def oom() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    m.train(False)
    assert row_fields(m, oom, torch.device("cpu"), train=True) == {
        "kernel_path": "aten-cpu", "kernel_path_source": "inferred"}
    assert not m.training  # mode restored


def test_a_compiled_model_is_probed_without_compiling_again(monkeypatch):
    from seqbench.worker import build as build_module
    from seqbench.worker import kernels_seen

    monkeypatch.setattr(build_module, "COMPILE_BACKEND", "eager")  # dynamo without a C compiler
    real, seen = kernels_seen.forward_row_fields, []

    def counted(model, x, device, amp=None):
        before = build_module.compile_seconds()
        out = real(model, x, device, amp)
        seen.append((x.shape[0], before, build_module.compile_seconds()))
        return out

    monkeypatch.setattr(kernels_seen, "forward_row_fields", counted)
    torch._dynamo.reset()
    try:
        (job,) = tiny_jobs(seeds=[0], train={**TINY["train"], "compile": True})
        row = run_job(job).to_dict()
    finally:
        torch._dynamo.reset()
    assert row["status"] == "ok" and row["compiled"] is True, row["error"]
    assert (row["kernel_path"], row["kernel_path_source"]) == ("aten-cpu", "observed")
    ((batch, before, after),) = seen
    assert batch == job.train.batch_size and before == after  # the whole batch: no recompile
