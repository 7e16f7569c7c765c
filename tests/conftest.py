"""Shared fixtures: a tiny spec, its jobs, schema-complete rows, and results directories written
the way the store writes them."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seqbench.config import Job, expand, parse_suite
from seqbench.recording.rows import RunContext, new_row
from seqbench.recording.schema import Row

# the smallest spec that runs for real: one GRU, one task, one length (seconds per job)
TINY: dict[str, Any] = {
    "name": "tiny",
    "seeds": [0, 1],
    "device": "cpu",
    "models": [{"name": "gru", "params": {"d_model": 8}}],
    "tasks": [{"name": "adding", "seq_lens": [6]}],
    "train": {"steps": 4, "batch_size": 4, "eval_examples": 8, "eval_batch_size": 8},
    "measure": {"warmup_steps": 1, "fwd_min_repeats": 1, "fwd_max_repeats": 2,
                "fwd_budget_s": 0.02},
    "timeout_s": 120,
}
CONTEXT = RunContext(suite="tiny", spec_hash="0" * 64, git_sha="", git_dirty=False)


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A deep copy of :data:`TINY` with top-level keys replaced."""
    return {**copy.deepcopy(TINY), **copy.deepcopy(overrides)}


def tiny_jobs(**overrides: Any) -> list[Job]:
    return expand(parse_suite(tiny_spec(**overrides)))


def complete_row(job: Job | None = None, context: RunContext = CONTEXT, **fields: Any) -> Row:
    """A schema-complete row of ``job`` (default: the tiny spec's first job), as the worker
    would write it before the job ran, with ``fields`` set on top."""
    row = new_row(job or tiny_jobs()[0], context, input_len=None)
    return row.update(**fields)


def write_results_dir(path: Path, rows: list[dict[str, Any]], *, suite: str = "fixture",
                      truncate_last: bool = False, job_files: bool = True,
                      spec: dict[str, Any] | None = None) -> Path:
    """A results directory as the store writes it (suite.json, jobs/<job_id>.json and
    results.jsonl), from row dicts that need not pass the schema; ``spec``: the validated
    spec suite.json holds (default: just the suite's name)."""
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    text = "\n".join(lines) + "\n"
    if truncate_last:
        text = "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2]
    (path / "results.jsonl").write_text(text)
    for r in rows[:-1] if truncate_last else rows:
        if job_files:
            (path / "jobs" / f"{r['job_id']}.json").write_text(json.dumps(r))
    (path / "suite.json").write_text(json.dumps({"format": "seqbench-results/1", "suite": suite,
                                                 "spec_hash": "f" * 64,
                                                 "spec": spec or {"name": suite}}))
    return path


@pytest.fixture
def tiny_job() -> Job:
    return tiny_jobs()[0]


def with_model_params(job: Job, params: dict[str, Any]) -> Job:
    """``job`` with other model params and nothing re-validated: a job whose worker fails."""
    return job.model_copy(update={"model": job.model.model_copy(update={"params": params})})


def broken_job(job: Job) -> Job:
    """A job whose worker raises (an application error, not a crash)."""
    return with_model_params(job, {"d_model": 8, "n_layers": "two"})


def collector(rows: list[dict[str, Any]]) -> Callable[[Row], None]:
    """An ``on_row`` callback that keeps each row as the dict the store writes."""
    return lambda row: rows.append(row.to_dict())
