"""The search orchestrator: a suite with a ``search`` block as two sweeps into one results
folder, through the one sweep driver (:mod:`seqbench.execution.sweep`).

1. the trial sweep (:func:`seqbench.config.expand.expand_trials`): every trial job, resumable and
   parallel like any sweep (recorded trials are not rerun);
2. the selection (:func:`seqbench.config.search.select`), recomputed from the stored trial rows,
   so a search killed and rerun chooses exactly as it would have;
3. ``search.json`` next to the rows: the searched space, the rule, every trial and every
   choice (rewritten at each run; the rows stay the record it is computed from);
4. the final sweep (:func:`seqbench.config.expand.expand_final`): the chosen configurations on
   the suite's seeds, reported on the test split.

Both sweeps record under the suite as written (its ``suite.json`` holds the spec with its
``search`` block, and every row its spec hash). An interruption stops the sweep that is
running and propagates; nothing is chosen from a trial sweep that did not finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqbench.config.expand import expand_final, expand_trials, spec_hash
from seqbench.config.job import Job
from seqbench.config.overrides import Overrides
from seqbench.config.search import Choice, TrialPlan, configurations, describe_choice, select
from seqbench.config.spec import Suite
from seqbench.execution.base import Executor
from seqbench.execution.local import LocalExecutor
from seqbench.execution.sweep import Progress, Sweep, require_kind, run_sweep
from seqbench.recording.store import ResultStore, write_json_atomic

SEARCH_FILE = "search.json"
SEARCH_FORMAT = "seqbench-search/1"


@dataclass
class SearchRun:
    """A search and how it went: the trial plan, its sweep, the choices and the final sweep
    (None when the trials were only planned)."""

    plan: TrialPlan
    trials: Sweep
    choices: list[Choice] = field(default_factory=list)
    final: Sweep | None = None
    timeout: float | None = None  # replaces every job's timeout_s (trials' and finals')

    @property
    def current(self) -> Sweep:
        """The sweep running now (or last): the final one once it exists, else the trials."""
        return self.final if self.final is not None else self.trials

    @property
    def interrupted(self) -> bool:
        return self.trials.interrupted or bool(self.final and self.final.interrupted)


def _with_timeout(jobs: list[Job], timeout: float | None) -> list[Job]:
    return jobs if timeout is None else [j.with_timeout(timeout) for j in jobs]


def plan_search(suite: Suite, source: str, out: Path, overrides: Overrides | None = None,
                retry: bool = False, timeout: float | None = None) -> SearchRun:
    """The trial sweep of a search and which trials already have a row (nothing written):
    what ``seqbench run --dry-run`` lists (final jobs depend on the trials' rows)."""
    from seqbench.execution.sweep import needs_run

    require_kind(suite, source, "train", "seqbench run")
    plan = expand_trials(suite, source)
    sweep = Sweep(suite, source, out, _with_timeout(plan.jobs, timeout),
                  overrides or Overrides(), retry)
    if out.is_dir():
        from seqbench.recording.reader import read_dir

        found = read_dir(out).finished()
        sweep.recorded = {j: s for j, s in found.items() if j in sweep.job_ids}
    sweep.todo = [j for j in sweep.jobs if needs_run(sweep.recorded.get(j.job_id), retry)]
    return SearchRun(plan, sweep, timeout=timeout)


def run_search(suite: Suite, source: str, out: Path, executor: Executor,
               progress: Progress | None = None, overrides: Overrides | None = None, *,
               retry: bool = False, timeout: float | None = None) -> SearchRun:
    """Run a search (see the module docstring) and return what happened. ``timeout``
    replaces every job's ``timeout_s`` (not hashed: the same job ids)."""
    return execute_search(plan_search(suite, source, out, overrides, retry, timeout),
                          executor, progress)


def execute_search(run: SearchRun, executor: Executor,
                   progress: Progress | None = None) -> SearchRun:
    """Run a planned search (:func:`plan_search`): its trials, the choice, ``search.json`` and
    the final runs. An interruption propagates with ``run.trials`` (or ``run.final``) holding
    what the running sweep recorded, so a caller can say it."""
    sweep = run.trials
    run_sweep(sweep, executor, progress)
    run.choices = select(run.plan, sweep.rows())
    timeout = run.timeout
    final_jobs = _with_timeout(expand_final(run.plan, run.choices, sweep.source), timeout)
    write_search_file(sweep.out, run, final_jobs)
    run.final = Sweep(sweep.suite, sweep.source, sweep.out, final_jobs, sweep.overrides,
                      sweep.retry)
    if isinstance(executor, LocalExecutor):
        # idle fork servers started from the pool's threads die with those threads (their
        # parent-death signal is per thread); start the final sweep with fresh ones
        executor.close()
    if final_jobs:
        run_sweep(run.final, executor, progress)
    return run

def search_record(run: SearchRun, final_jobs: list[Job]) -> dict[str, Any]:
    """What ``search.json`` holds: the searched space, the rule, every trial (job id, model,
    setting, seed, values, status, the metric's value) and every choice."""
    suite = run.plan.suite
    search = suite.search
    assert search is not None
    stored = {r.get("job_id"): r for r in run.trials.rows()}
    final_seeds = len(suite.seeds)
    trials = []
    for job in run.plan.jobs:
        row = stored.get(job.job_id, {})
        trials.append({"job_id": job.job_id, "model": job.model.name, "task": job.task.name,
                       "task_params": job.task.params, "seq_len": job.task.seq_len,
                       "seed": job.seed, "values": job.search.values if job.search else {},
                       "configurations": run.plan.stands_for[job.job_id],
                       "status": row.get("status"),
                       "primary_metric": row.get("primary_metric"),
                       **{k: v for k, v in row.items() if k.startswith("metric_")}})
    return {
        "format": SEARCH_FORMAT, "suite": suite.name, "spec_hash": spec_hash(suite),
        "search": search.model_dump(mode="json"),
        "configurations": configurations(search),
        "trial_seeds": list(search.seeds or suite.seeds), "final_seeds": list(suite.seeds),
        "selection": {"split": "eval", "rule": search.rule, "per": search.per,
                      "metric": search.metric or "the task's primary metric",
                      "order": "all trials ok first, then fewer failed trials, then the "
                               "rule's score in the task's direction; ties: the first "
                               "configuration"},
        "trials": trials,
        "choices": [{**c.dump(), "summary": describe_choice(c, final_seeds)}
                    for c in run.choices],
        "final_jobs": [j.job_id for j in final_jobs],
    }


def write_search_file(out: Path, run: SearchRun, final_jobs: list[Job]) -> None:
    """``search.json`` in the results folder, written atomically under the folder's lock."""
    store = ResultStore(out)
    store.lock()
    try:
        write_json_atomic(out / SEARCH_FILE, search_record(run, final_jobs))
    finally:
        store.close()
