"""The Ray executor: the same jobs, rows and guarantees as the local executor, on a Ray cluster.

Each job is one Ray core task (not Ray Tune) that asks for what the job needs (1 GPU for a CUDA
job, ``measure.threads`` CPUs or 1, and the job's memory cap as Ray ``memory``) and runs the job
exactly as the local executor does: the task forks a fresh worker process from its Ray worker's
preloaded zygote (``python -m seqbench.worker --zygote``, started once per Ray worker), waits
for it with ``os.wait4`` and kills it at the job's timeout. Rows, peak memory,
signals, OOM and timeouts are therefore handled by the same code under both executors, and a
sweep yields the same rows (config hashes and statuses) under either.

What Ray adds is placement, and these failure paths, decided in the driver:

* the Ray worker process dies (``WorkerCrashedError``, a lost node, ...): the job is resubmitted,
  at most ``max_retries`` times, then recorded as ``error`` naming the failure;
* Ray's memory monitor kills the task (``OutOfMemoryError``): ``oom``, not retried, since the
  same job would run out of memory again;
* a task still unfinished ``grace_s`` after its timeout (a hung worker, a partitioned node) is
  cancelled with ``force=True`` and recorded as ``timeout`` (the job's own worker process dies
  with the Ray worker: ``PR_SET_PDEATHSIG``);
* an exception raised by the task itself (a bug, not a job failure) is an ``error`` row.

A Ray started here for the run (no ``address``) goes with the driver even when the driver is
killed with SIGKILL: its processes (GCS, raylet, the dashboard and runtime-env agents) are
handed to a small reaper process, which kills whichever are still alive as soon as the
driver's end of its pipe closes. (Ray fate-shares its GCS and raylet with the driver, but its
agents outlived a killed driver by about two minutes.)

At most as many tasks are in flight as the cluster can run at once, so a job's clock starts
close to when it is scheduled. ``SEQBENCH_*`` environment variables of the driver (the data
directory) are set in every task, since workers on other nodes do not inherit them.

Ray is imported only when this executor runs: ``pip install 'seqbench[ray]'``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from seqbench.config.job import Job
from seqbench.errors import SpecError
from seqbench.execution.base import OnRow, interrupted_text, stop_on_sigterm
from seqbench.recording.rows import RunContext, failed_row
from seqbench.recording.schema import Row

Task = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]

POLL_S = 0.5  # how often the driver checks deadlines while waiting for results
ENV_PREFIX = "SEQBENCH_"


def import_ray():
    try:
        import ray
    except ImportError:
        raise SpecError("--executor", "ray",
                        "needs Ray, not installed here: pip install 'seqbench[ray]'") from None
    return ray


# the reaper: reads "pid create_time" lines until end of input (the driver closed the pipe or
# died), then kills each of those processes that is still the same process
REAPER = r"""
import sys, psutil
targets = set()
for line in sys.stdin:
    pid, created = line.split()
    targets.add((int(pid), float(created)))
for pid, created in targets:
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < 1e-3:
            proc.kill()
    except psutil.Error:
        pass
"""


class Reaper:
    """A process that kills the Ray processes this driver started once the driver is gone.

    Made just before ``ray.init``: the driver's children that appear after that (GCS, raylet,
    ...) and everything below them are Ray's, and only those are handed over."""

    def __init__(self) -> None:
        import psutil

        self.proc = subprocess.Popen([sys.executable, "-c", REAPER], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, text=True)
        self._before = {p.pid for p in psutil.Process().children()} | {self.proc.pid}
        self._known: set[int] = set()

    def watch_children(self) -> None:
        """Hand the Ray processes started since, and their descendants, to the reaper."""
        import psutil

        assert self.proc.stdin is not None
        found: list[psutil.Process] = []
        for root in psutil.Process().children():
            if root.pid in self._before:
                continue
            found.append(root)
            try:
                found += root.children(recursive=True)
            except psutil.Error:
                continue
        for proc in found:
            if proc.pid in self._known:
                continue
            try:
                self.proc.stdin.write(f"{proc.pid} {proc.create_time()}\n")
            except psutil.Error:
                continue
            self._known.add(proc.pid)
        self.proc.stdin.flush()

    def close(self) -> None:
        """Let the reaper kill what is left of this run's Ray, and wait for it."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_LOCAL = None  # one LocalExecutor per Ray worker process: the idle baseline is measured once


def run_in_fresh_worker(job: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The default task body: the local executor's ``run_one`` (a fresh worker process). Jobs,
    contexts and rows cross to and from Ray as their JSON data."""
    global _LOCAL
    if _LOCAL is None:
        from seqbench.execution.local import LocalExecutor

        _LOCAL = LocalExecutor(1)
    return _LOCAL.run_one(Job.parse(job), RunContext(**context)).to_dict()


def _task_entry(task: Task, job: dict[str, Any], context: dict[str, Any],
                env: dict[str, str]) -> dict[str, Any]:
    """What runs inside the Ray worker: the driver's SEQBENCH_* environment, then the task."""
    os.environ.update(env)
    return task(job, context)


def resources(job: Job) -> dict[str, Any]:
    """Ray task options for one job: its GPU or CPUs, and its memory cap."""
    opts: dict[str, Any] = {"num_cpus": job.measure.threads or 1}
    if job.device.startswith("cuda"):
        opts["num_gpus"] = 1
    if job.cap_bytes:
        opts["memory"] = job.cap_bytes
    return opts


@dataclass
class _Attempt:
    job: Job
    number: int  # 1 for the first submission
    submitted: float  # time.monotonic()
    cancelled: bool = False

    def overdue(self, now: float, grace_s: float) -> bool:
        timeout = self.job.timeout
        return timeout is not None and now > self.submitted + timeout + grace_s


class RayExecutor:
    """Jobs as Ray tasks on a cluster (``address``) or a Ray started here for the run."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None,
                 max_retries: int = 2, grace_s: float = 120.0, task: Task | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        import_ray()  # fail before anything is written when Ray is missing
        self.address = address
        self.workers = workers
        self.max_retries = max_retries
        self.grace_s = grace_s
        self.task = task or run_in_fresh_worker
        self.init_kwargs = init_kwargs or {}
        self._owned = False  # this executor started or joined Ray, and leaves it after run()
        self._reaper: Reaper | None = None  # for a Ray started here

    # --- cluster ----------------------------------------------------------------------------
    def check_address(self, timeout_s: float = 5.0) -> None:
        """Fail fast (exit 2, nothing written) when nothing listens at a host:port address."""
        if self.address is None or self.address == "auto" or "://" in self.address:
            return
        host, _, port = self.address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise SpecError("--address", self.address,
                            f"nothing answers there ({reason}); start the head node with "
                            f"`ray start --head --port={port}`") from None

    def connect(self):
        """The ray module, connected: to ``address`` (``auto``: the cluster ``ray start`` made on
        this machine), or to a new Ray started here for the run."""
        ray = import_ray()
        if ray.is_initialized():
            return ray
        kwargs: dict[str, Any] = {"log_to_driver": False, **self.init_kwargs}
        if self.address is None:  # a new Ray of our own, even if `ray start` ran here before
            kwargs.setdefault("include_dashboard", False)
        if self.address is None:
            self._reaper = Reaper()
        try:
            ray.init(address=self.address or "local", **kwargs)
        except ConnectionError as exc:
            self._close_reaper()
            raise SpecError("--address", self.address,
                            f"no Ray cluster answers there ({str(exc).splitlines()[0]}); start "
                            "one with `ray start --head`") from None
        except BaseException:
            self._close_reaper()
            raise
        self._owned = True
        self._watch()
        return ray

    def _watch(self) -> None:
        if self._reaper is not None:
            self._reaper.watch_children()

    def _close_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None

    def slots(self, ray: Any, job: Job) -> int:
        """Tasks in flight at once: ``workers``, or what the cluster holds of the job's needs."""
        total = ray.cluster_resources()
        need = resources(job)
        key, amount = ("GPU", need["num_gpus"]) if "num_gpus" in need else ("CPU", need["num_cpus"])
        have = total.get(key, 0)
        if have < amount:
            listed = ", ".join(f"{k}={v:g}" for k, v in sorted(total.items())
                               if not k.startswith("node:"))
            raise SpecError("device" if key == "GPU" else "measure.threads",
                            job.device if key == "GPU" else amount,
                            f"the Ray cluster has {have:g} {key} ({listed})")
        return self.workers or max(1, int(have // amount))

    # --- running ----------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job], context: RunContext, on_row: OnRow) -> None:
        jobs = list(jobs)
        if not jobs:
            return
        ray = self.connect()
        try:
            # ray.init installs its own SIGTERM handler (it aborts the driver, no row recorded):
            # SIGTERM stops the sweep as Ctrl-C does, here too
            with stop_on_sigterm():
                self._run(ray, jobs, context, on_row)
        finally:
            if self._owned:
                ray.shutdown()  # leaves a cluster joined by address running
                self._owned = False
            self._close_reaper()

    def _run(self, ray: Any, jobs: list[Job], context: RunContext, on_row: OnRow) -> None:
        remote = ray.remote(_task_entry)
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
        slots = self.slots(ray, jobs[0])
        queue = deque((job, 1) for job in jobs)
        inflight: dict[Any, _Attempt] = {}
        try:
            while queue or inflight:
                if queue and len(inflight) < slots:
                    self._watch()  # the Ray workers started for the last tasks, too
                while queue and len(inflight) < slots:
                    job, number = queue.popleft()
                    ref = remote.options(max_retries=0, retry_exceptions=False,
                                         **resources(job)).remote(self.task, job.dump(),
                                                                  context.dump(), env)
                    inflight[ref] = _Attempt(job, number, time.monotonic())
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    attempt = inflight.pop(ref)
                    row = self._collect(ray, ref, attempt, context)
                    if row is None:
                        queue.appendleft((attempt.job, attempt.number + 1))
                    else:
                        on_row(row)
                now = time.monotonic()
                for ref, attempt in inflight.items():
                    if not attempt.cancelled and attempt.overdue(now, self.grace_s):
                        ray.cancel(ref, force=True)
                        attempt.cancelled = True
        except BaseException as exc:  # Ctrl-C or a failing on_row: stop every task of this run
            for ref in inflight:
                ray.cancel(ref, force=True)
            if isinstance(exc, KeyboardInterrupt):
                for attempt in inflight.values():
                    on_row(failed_row(attempt.job, context, "interrupted",
                                      interrupted_text(exc),
                                      time.monotonic() - attempt.submitted))
            raise

    def _collect(self, ray: Any, ref: Any, attempt: _Attempt, context: RunContext
                 ) -> Row | None:
        """The row of a finished task, or None when the job is to be resubmitted."""
        from ray import exceptions as rex

        job = attempt.job
        try:
            return Row.from_dict(ray.get(ref))
        except Exception as exc:
            wall = time.monotonic() - attempt.submitted
            first = (str(exc).strip().splitlines() or [""])[0]
            if attempt.cancelled:
                return failed_row(job, context, "timeout",
                                  f"job exceeded its timeout of {job.timeout_s:g} s by "
                                  f"{self.grace_s:g} s; its Ray task was cancelled", wall)
            if isinstance(exc, rex.OutOfMemoryError):
                return failed_row(job, context, "oom",
                                  f"Ray's memory monitor killed the task: {first}", wall)
            if isinstance(exc, rex.RayTaskError):
                return failed_row(job, context, "error",
                                  f"the Ray task raised {first}", wall)
            if isinstance(exc, (rex.TaskCancelledError, rex.TaskUnschedulableError)):
                return failed_row(job, context, "error", f"{type(exc).__name__}: {first}", wall)
            if attempt.number <= self.max_retries:
                return None  # the Ray worker or its node died: the job itself may be fine
            return failed_row(job, context, "error",
                              f"the Ray worker died {attempt.number} times "
                              f"({type(exc).__name__}: {first})", wall)
