"""End to end: a sweep through the real CLI and worker processes records one row per job,
turns a failing job into an ``error`` row without stopping, and resumes without re-running."""

import json
import math
import subprocess
import sys

import pytest
import yaml
from conftest import broken_job

from seqbench.config import expand, parse_suite
from seqbench.execution.local import LocalExecutor
from seqbench.recording.rows import RunContext
from seqbench.recording.schema import REQUIRED

TINY = {
    "name": "tiny",
    "seeds": [0],
    "models": [{"name": "gru", "params": {"d_model": 8}},
               {"name": "transformer", "params": {"d_model": 8, "n_heads": 2}}],
    "tasks": [{"name": "copy", "seq_lens": [4]}],
    "train": {"steps": 6, "batch_size": 4, "eval_examples": 8},
    "measure": {"warmup_steps": 2, "fwd_min_repeats": 2, "fwd_max_repeats": 3,
                "fwd_budget_s": 0.05},
    "timeout_s": 120,
}


def seqbench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "seqbench.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    first = seqbench("run", "tiny.yaml", "-o", "out", "--no-report", cwd=root)
    assert first.returncode == 0, first.stderr
    return root, first


def rows_of(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_every_job_gets_one_complete_row(tiny_run):
    root, first = tiny_run
    rows = rows_of(root / "out")
    assert sorted(r["model"] for r in rows) == ["gru", "transformer"]
    assert len(list((root / "out" / "jobs").glob("*.json"))) == 2
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert not [f for f in REQUIRED if f not in r]
        assert r["input_len"] == 24 and r["train_steps"] == 6
        assert 0 <= r["metric_accuracy"] <= 1 and r["baseline_accuracy"] == 0.125
        assert r["train_tokens_per_s"] > 0 and r["fwd_tokens_per_s"] > 0
        assert len(r["train_step_s_samples"]) == 6 - 2  # warm-up steps left out
        assert r["train_first_step_s"] > 0
        assert r["peak_rss_bytes"] > r["peak_mem_bytes"] > 0
        assert r["mem_method"].startswith("peak RSS")
        assert r["threads"] >= 1 and r["device"] == "cpu" and r["device_name"]
        assert len(r["git_sha"]) in (0, 40) and isinstance(r["git_dirty"], bool)
    kernels = {r["model"]: r["kernel_path"] for r in rows}
    assert kernels == {"gru": "aten-cpu", "transformer": "sdpa-flash"}
    assert "summary" in first.stdout and "results:" in first.stdout


def test_rerun_skips_recorded_jobs_and_rewrites_nothing(tiny_run):
    root, _ = tiny_run
    out = root / "out"
    before = {p.name: p.read_bytes() for p in (out / "jobs").glob("*.json")}
    again = seqbench("run", "tiny.yaml", "-o", "out", "--no-report", cwd=root)
    assert again.returncode == 0, again.stderr
    assert "2 already recorded, 0 to run" in again.stdout
    assert {p.name: p.read_bytes() for p in (out / "jobs").glob("*.json")} == before
    assert len(rows_of(out)) == 2


def test_a_raising_job_becomes_an_error_row_and_the_sweep_goes_on():
    jobs = expand(parse_suite(TINY))
    broken = broken_job(jobs[0])  # raises inside the worker
    rows = []
    LocalExecutor().run([broken, jobs[1]], RunContext(suite="tiny"), rows.append)
    assert [r.status for r in rows] == ["error", "ok"]
    assert "n_layers" in rows[0].error and rows[0].job_id != rows[1].job_id
    assert math.isfinite(rows[0].wall_s)


def test_a_job_past_its_timeout_becomes_a_timeout_row():
    job = expand(parse_suite({**TINY, "train": {**TINY["train"], "steps": 100000}}))[0]
    job = job.with_timeout(3)
    rows = []
    LocalExecutor().run([job], RunContext(), rows.append)
    assert rows[0].status == "timeout" and "timeout" in rows[0].error
