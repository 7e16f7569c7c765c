"""The one sweep driver, used by ``seqbench run``, ``seqbench scale`` and the nightly run.

A sweep, in order: check and open the results directory (nothing written until every check
passed), decide which jobs still need a row (resume), build the run's context (suite, spec
hash, code provenance, overrides), run the jobs through an executor (wrapped in the scaling
frontier for ``kind: scale`` suites), record each row as it arrives (checked against the
schema; a row that fails the check is replaced by an ``error`` row saying why, so the sweep goes
on), and close the store whatever happens. An interruption (Ctrl-C, SIGTERM) stops the running
jobs, records them as ``interrupted``, keeps every finished row and propagates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seqbench.config.expand import expand, spec_hash
from seqbench.config.job import Job
from seqbench.config.overrides import Overrides
from seqbench.config.spec import Suite
from seqbench.errors import SpecError
from seqbench.execution.base import Executor, stop_on_sigterm
from seqbench.execution.frontier import FrontierExecutor, StopPolicy
from seqbench.recording.provenance import code_provenance
from seqbench.recording.rows import RunContext, invalid_row
from seqbench.recording.schema import UNFINISHED, Row
from seqbench.recording.store import ResultStore, RowInvalid


def require_kind(suite: Suite, source: str, kind: str, command: str) -> None:
    """The refusal every command shares: a suite of the other kind."""
    if suite.kind != kind:
        other = "seqbench scale" if suite.kind == "scale" else "seqbench run"
        raise SpecError("spec", source, f"is kind: {suite.kind}; {command} runs kind: {kind} "
                        f"suites (use {other})")


def needs_run(status: str | None, retry: bool) -> bool:
    """A job runs when it has no row, its row is unfinished (interrupted), or ``retry`` asks
    for a failure to run again."""
    return status is None or status in UNFINISHED or (retry and status != "ok")


class Progress(Protocol):
    def start(self, sweep: Sweep) -> None: ...
    def row(self, row: Row) -> None: ...
    def finish(self, sweep: Sweep) -> None: ...


@dataclass
class Sweep:
    """One sweep of one suite into one results directory, and how it went."""

    suite: Suite
    source: str
    out: Path
    jobs: list[Job]
    overrides: Overrides = field(default_factory=Overrides)
    retry: bool = False
    recorded: dict[str, str] = field(default_factory=dict)  # job_id -> status before the run
    todo: list[Job] = field(default_factory=list)
    written: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what opening the store repaired
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def job_ids(self) -> set[str]:
        return {j.job_id for j in self.jobs}

    def rows(self) -> list[dict[str, Any]]:
        """The stored rows of this sweep's jobs (earlier runs' included)."""
        from seqbench.recording.reader import read_dir

        ids = self.job_ids
        return [r for r in read_dir(self.out).rows() if r.get("job_id") in ids]


def plan(suite: Suite, source: str, out: Path, overrides: Overrides | None = None,
         retry: bool = False) -> Sweep:
    """The sweep's jobs and which of them already have a row in ``out`` (nothing written)."""
    sweep = Sweep(suite, source, out, expand(suite, source), overrides or Overrides(), retry)
    if out.is_dir():
        from seqbench.recording.reader import read_dir

        found = read_dir(out).finished()
        sweep.recorded = {j: s for j, s in found.items() if j in sweep.job_ids}
    sweep.todo = [j for j in sweep.jobs if needs_run(sweep.recorded.get(j.job_id), retry)]
    return sweep


def run_sweep(sweep: Sweep, executor: Executor, progress: Progress | None = None,
              on_row: Callable[[Row], None] | None = None) -> Sweep:
    """Run ``sweep`` (see the module docstring) and return it with what happened."""
    suite = sweep.suite
    store = ResultStore(sweep.out)
    s_hash = spec_hash(suite)
    store.open_for(suite.name, s_hash, suite.dump(), sweep.overrides.describe())
    sweep.notes = list(store.notes)
    started = time.perf_counter()
    try:
        stored = {r["job_id"]: r for r in store.rows()}
        sweep.recorded = {j: str(r.get("status")) for j, r in stored.items()
                          if j in sweep.job_ids}
        sweep.todo = [j for j in sweep.jobs
                      if needs_run(sweep.recorded.get(j.job_id), sweep.retry)]
        context = RunContext(suite=suite.name, spec_hash=s_hash,
                             overrides=tuple(sweep.overrides.describe()), **code_provenance())
        jobs_by_id = {j.job_id: j for j in sweep.jobs}

        def write(row: Row) -> None:
            try:
                store.write(row)
            except OSError as exc:  # read-only, full or removed under the run: one line
                reason = exc.strerror or str(exc)
                raise SpecError("--out", str(sweep.out), f"cannot be written ({reason}); the "
                                "rows recorded so far are kept") from None

        def record(row: Row) -> None:
            try:
                write(row)
            except RowInvalid as exc:
                row = invalid_row(row, jobs_by_id[row.job_id], context, exc.problems)
                write(row)
            sweep.written.append(row)
            if progress is not None:
                progress.row(row)
            if on_row is not None:
                on_row(row)

        if progress is not None:
            progress.start(sweep)
        runner: Executor = executor
        todo = sweep.todo
        if suite.kind == "scale":
            recorded = {j: r for j, r in stored.items()
                        if not needs_run(str(r.get("status")), sweep.retry)}
            runner = FrontierExecutor(executor, StopPolicy.from_suite(suite), recorded)
            todo = sweep.jobs  # the frontier decides from recorded rows as it goes
        if todo:
            with stop_on_sigterm():
                runner.run(todo, context, record)
    except KeyboardInterrupt:
        sweep.interrupted = True
        raise
    finally:
        sweep.seconds = time.perf_counter() - started
        store.close()
        if progress is not None:
            progress.finish(sweep)
    return sweep
