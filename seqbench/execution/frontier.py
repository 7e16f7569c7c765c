"""The scaling frontier, on the driver: where each model's length sweep stops.

:class:`FrontierExecutor` wraps any executor and runs a ``kind: scale`` suite's jobs one at a
time in sweep order (lengths ascending within a model). Once a model's sweep hits a stop
condition (``oom``, ``timeout``, ``slow``: a training step slower than ``scale.max_step_s``, a
stream's prefill slower than ``scale.max_prefill_s``; optionally ``error``/``diverged``), its
longer lengths become ``skipped`` rows without starting a worker (``scale.after_stop: skip``) or
run anyway (``run``). On CPU a per-worker memory cap (``scale.mem_cap_gib``) makes allocations
past it fail, so the frontier exists on CPU as on a GPU; a worker the kernel's OOM killer ends
is an ``oom`` row too (the executor's classification). Decisions read the rows already stored,
so a resumed run skips the same lengths.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from seqbench.config.job import Job
from seqbench.config.spec import Suite, scale_settings
from seqbench.execution.base import Executor, OnRow
from seqbench.recording.rows import RunContext, skipped_row
from seqbench.recording.schema import Row


@dataclass(frozen=True)
class StopPolicy:
    """When a model's length sweep stops, and what its longer lengths get."""

    stop_on: tuple[str, ...] = ("oom", "timeout", "slow")
    after_stop: str = "skip"  # "skip": `skipped` rows without a worker; "run": run them anyway
    max_step_s: float = 30.0  # "slow": the next length's median training step above this
    max_prefill_s: float = 120.0  # "slow" for streams: the next position's prefill above this

    @classmethod
    def from_suite(cls, suite: Suite) -> StopPolicy:
        scale = scale_settings(suite)
        return cls(tuple(scale.stop_on), scale.after_stop, scale.max_step_s,
                   scale.max_prefill_s)

    def describe(self) -> str:
        return (f"after {'|'.join(self.stop_on)} (slow: a training step > "
                f"{self.max_step_s:g} s, a prefill > {self.max_prefill_s:g} s), "
                f"longer lengths: {'skipped' if self.after_stop == 'skip' else 'run anyway'}")

    def reason(self, row: dict[str, Any]) -> str | None:
        """Why the sweep stops after ``row`` (a stored row's fields), or None.

        "slow": the median training step (a stream's prefill) took longer than ``max_step_s``
        (``max_prefill_s``). The length that crossed it is measured in full and is the last
        one; its cost is bounded by the job timeout. (Predicting the next length from the
        growth so far saves that length, but the prediction also stops a model before the
        memory frontier it would have hit at once: naive attention's step grows 4-7x per
        doubling while its first allocation at the next length already fails.)
        """
        status = row.get("status")
        if status in self.stop_on:
            return f"{status} at length {row.get('seq_len')}"
        if "slow" in self.stop_on and status == "ok":
            scale = row.get("kind") == "scale"
            key = "train_step_s_median" if scale else "prefill_s"
            limit, limit_name = ((self.max_step_s, "max_step_s") if scale
                                 else (self.max_prefill_s, "max_prefill_s"))
            seconds = row.get(key)
            if seconds is not None and seconds > limit:
                return (f"slow at length {row.get('seq_len')}: {key} {seconds:.3g} s > "
                        f"{limit_name} {limit:g} s")
        return None


class FrontierExecutor:
    """Run a scale suite's jobs one at a time, in sweep order, stopping each model's sweep at
    its frontier. ``recorded`` maps job ids to rows already stored (resume): those jobs are not
    run again, but their statuses decide the frontier as if they had just run. A recorded
    ``skipped`` row is re-decided under the current policy."""

    name = "frontier"

    def __init__(self, inner: Executor, policy: StopPolicy,
                 recorded: dict[str, dict[str, Any]] | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.recorded = recorded or {}

    def run(self, jobs: Iterable[Job], context: RunContext, on_row: OnRow) -> None:
        stopped: dict[str, str] = {}  # curve -> why its sweep stopped
        baseline = getattr(self.inner, "baseline_rss", None)
        if baseline is not None:  # measured once, now, so no job's worker_wall_s includes it
            baseline()

        def decide(curve: str, row: dict[str, Any]) -> None:
            reason = self.policy.reason(row)
            if reason and curve not in stopped:
                stopped[curve] = reason

        for job in jobs:
            curve = job.curve_key
            prior = self.recorded.get(job.job_id)
            if prior is not None and prior.get("status") not in ("skipped", "interrupted"):
                decide(curve, prior)
                continue
            if curve in stopped and self.policy.after_stop == "skip":
                row = skipped_row(job, context, stopped[curve], self.policy.describe())
                if prior is None or prior.get("error") != row.error:
                    on_row(row)
                continue
            row = self.run_one(job, context, on_row)
            decide(curve, row.to_dict())
            on_row(row)

    def run_one(self, job: Job, context: RunContext,
                on_interrupt: OnRow | None = None) -> Row:
        """Run one job through the inner executor; on an interruption its ``interrupted`` row
        goes to ``on_interrupt`` before the interruption propagates."""
        rows: list[Row] = []
        started = time.perf_counter()
        try:
            self.inner.run([job], context, rows.append)
        except KeyboardInterrupt:
            for row in rows:
                row.stop_policy = self.policy.describe()
                if on_interrupt is not None:
                    on_interrupt(row)
            raise
        row = rows[0]
        row.update(worker_wall_s=time.perf_counter() - started,
                   stop_policy=self.policy.describe())
        return row
