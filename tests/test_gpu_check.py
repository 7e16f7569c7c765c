"""The GPU check's logic on CPU (seqbench/bench/gpu_check.py): its judges pass the numbers a
working device gives and fail the ones a broken measurement gives; the model check runs on
any device; the GPU suite is deselected by default and skips cleanly without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqbench.bench import gpu_check
from seqbench.bench.gpu_check import Result, judge_peak, judge_timing

MiB = 1 << 20


def test_peak_judge_wants_exactly_the_allocation_and_a_reset():
    assert judge_peak(4096, 64 * MiB, 4096 + 64 * MiB, 66 * MiB, 4096 + 16 * MiB, 16 * MiB)[0]
    # counted twice, missing, or a stale peak from the earlier phase (no reset)
    assert not judge_peak(4096, 64 * MiB, 4096 + 128 * MiB, 130 * MiB, 4096 + 16 * MiB,
                          16 * MiB)[0]
    assert not judge_peak(4096, 64 * MiB, 4096, 66 * MiB, 4096 + 16 * MiB, 16 * MiB)[0]
    ok, detail = judge_peak(4096, 64 * MiB, 4096 + 64 * MiB, 66 * MiB, 4096 + 64 * MiB,
                            16 * MiB)
    assert not ok and "not reset" in detail


def test_timing_judge_wants_linear_times_that_cover_the_kernel():
    assert judge_timing(0.050, 0.100, 0.0505, 0.049)[0]
    assert judge_timing(0.050, 0.100, 0.0505, None)[0]  # no clock: ratio and wall only
    ok, detail = judge_timing(12e-6, 13e-6, 0.0505, 0.049)  # timed the launch only
    assert not ok and "launch" in detail
    assert not judge_timing(0.050, 0.070, 0.0505, None)[0]  # not linear in cycles
    assert not judge_timing(0.050, 0.100, 0.0505, 0.020)[0]  # off the clock by 2.5x


@pytest.mark.parametrize("name", ["gru", "mamba"])
def test_the_model_check_runs_on_cpu(name):
    result = gpu_check.run_check(f"model:{name}:fp32", torch.device("cpu"))
    assert result.status == "pass", result.detail
    assert "observed" in result.detail and "stream" in result.detail


def test_a_lying_kernel_path_fails_the_model_check(monkeypatch):
    from seqbench.worker.models.rnn import _Recurrent

    monkeypatch.setattr(_Recurrent, "_kernel", lambda self, x: "cudnn")  # claims cuDNN on CPU
    result = gpu_check.run_check("model:gru:fp32", torch.device("cpu"))
    assert result.status == "fail" and "trace shows aten-cpu" in result.detail


def test_check_names_cover_every_model_in_both_dtypes_and_the_device_checks():
    from seqbench.worker.models import MODELS

    names = gpu_check.check_names()
    assert {f"model:{m}:{d}" for m in MODELS.names() for d in ("fp32", "bf16")} <= set(names)
    assert {"peak-memory", "event-timing"} <= set(names)
    assert len(names) == len(set(names))


def test_mamba_ssm_checks_skip_without_it():
    result = gpu_check.run_check("mamba_ssm:selective_scan_fn:fp32", torch.device("cpu"))
    assert result.status == "skip"


def test_report_counts_and_lists_every_check():
    text = gpu_check.report([Result("a", "pass", "x", 1.0), Result("b", "fail", "y|z", 2.0),
                             Result("c", "skip", "", 0.0)], {"torch": "2"})
    assert "1 passed, 1 failed, 1 skipped" in text
    assert "| b | fail | 2.0 | y/z |" in text


def test_the_gpu_suite_is_marked_deselected_by_default_and_skips_without_cuda():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pytest_cfg = config["tool"]["pytest"]["ini_options"]
    assert "not gpu" in pytest_cfg["addopts"]
    assert any(m.startswith("gpu:") for m in pytest_cfg["markers"])
    sys.path.insert(0, str(Path(__file__).parent / "gpu"))
    try:
        import test_gpu
    finally:
        sys.path.pop(0)
    marks = {m.name: m for m in test_gpu.pytestmark}
    assert "gpu" in marks
    assert marks["skipif"].args == (not torch.cuda.is_available(),)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_the_gpu_suite_is_deselected_by_default_and_skips_without_cuda():
    root = Path(__file__).parent.parent
    run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/gpu"]
    default = subprocess.run(run, capture_output=True, text=True, cwd=root)
    assert default.returncode == 5 and "deselected" in default.stdout  # nothing selected
    asked = subprocess.run([*run, "-m", "gpu", "-k", "peak or event"], capture_output=True,
                           text=True, cwd=root)
    assert asked.returncode == 0 and "2 skipped" in asked.stdout
    assert "needs a CUDA device" in asked.stdout
