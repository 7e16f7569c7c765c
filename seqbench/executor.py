"""Executors run jobs in fresh worker processes and hand back one row per job.

The local executor starts ``python -m seqbench.worker`` for each job (a fresh interpreter, like
multiprocessing's spawn), waits for it with ``os.wait4`` to get its exit status and resource
usage, and enforces the job's timeout. A worker that wrote no row still yields one:

* ``timeout`` when it ran past ``job["timeout_s"]`` (its whole process group is killed);
* ``oom`` when it was killed by SIGKILL while the kernel's OOM killer fired (``oom_kill`` in
  ``/proc/vmstat`` grew) or with its peak RSS at the job's memory cap;
* ``error`` naming the signal (``signal`` field) or exit code otherwise, with its stderr tail.

On CPU the row's ``peak_mem_bytes`` is the worker's peak RSS minus that of an idle worker with
the same imports. A job may carry a memory cap (``mem_cap_bytes``, top level or in ``measure``):
the worker starts with ``RLIMIT_DATA`` at the cap, so torch's allocator fails with an error the
runner records as ``oom`` instead of the kernel killing the machine's other processes.

Workers die with the process that started them (``PR_SET_PDEATHSIG``): a driver killed with
SIGKILL, or a Ray task cancelled, leaves no orphan computing a row nobody will record.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from seqbench.measure import CPU_MEM_METHOD

OnRow = Callable[[dict[str, Any]], None]

OOM_RSS_FRACTION = 0.9  # a SIGKILLed worker whose peak RSS reached this share of its cap: oom
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Executor(Protocol):
    name: str

    def run(self, jobs: Iterable[dict[str, Any]], context: dict[str, Any], on_row: OnRow) -> None:
        """Run every job and call ``on_row(row)`` once per job, in the driver's thread, as soon
        as that job is finished (so a driver killed mid-sweep has recorded every finished job)."""


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqbench.worker", *args]


def job_timeout(job: dict[str, Any]) -> float | None:
    """The job's timeout in seconds (None or 0: no limit)."""
    timeout = job.get("timeout_s")
    return float(timeout) if timeout else None


def job_mem_cap(job: dict[str, Any]) -> int:
    """The job's per-worker memory cap in bytes (0: none)."""
    cap = job.get("mem_cap_bytes") or (job.get("measure") or {}).get("mem_cap_bytes") or 0
    return int(cap)


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_prctl = _load_prctl()


def child_setup(mem_cap_bytes: int = 0) -> Callable[[], None]:
    """A ``preexec_fn``: die with the parent; limit the data segment to the cap, if any.

    Only the soft limit is set, so a worker that applies its own cap is never refused.
    """
    parent = os.getpid()
    prctl = _prctl

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        if mem_cap_bytes > 0:
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            soft = mem_cap_bytes if hard == resource.RLIM_INFINITY else min(mem_cap_bytes, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))

    return setup


def host_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (None if unknown)."""
    try:
        with open("/proc/vmstat", encoding="ascii") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def wait_with_timeout(proc: subprocess.Popen, timeout_s: float | None) -> tuple[int, int, bool]:
    """Wait for ``proc`` with ``os.wait4``: (wait status, peak RSS in bytes, timed out)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    timed_out = False
    delay = 0.005
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.monotonic() > deadline:
            timed_out = True
            kill_group(proc.pid)  # the worker and anything it started
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    return status, usage.ru_maxrss * 1024, timed_out  # ru_maxrss is in KiB on Linux


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def describe_exit(status: int, stderr_tail: str) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        text = f"worker killed by signal {signal_name(sig)} ({sig})"
    else:
        text = f"worker exited with code {os.WEXITSTATUS(status)} without writing a row"
    return f"{text}: {stderr_tail}" if stderr_tail else text


def classify_exit(job: dict[str, Any], status: int, timed_out: bool, peak_rss: int,
                  host_oom: bool, stderr_tail: str) -> tuple[str, str, int | None]:
    """(row status, error text, signal) for a worker that wrote no row."""
    if timed_out:
        return "timeout", f"job exceeded its timeout of {job_timeout(job):g} s", None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    text = describe_exit(status, stderr_tail)
    if sig == signal.SIGKILL:
        cap = job_mem_cap(job)
        mib = peak_rss / 2**20
        if host_oom:
            return "oom", f"{text} (the kernel's OOM killer fired; peak RSS {mib:.0f} MiB)", sig
        if cap and peak_rss >= OOM_RSS_FRACTION * cap:
            return "oom", (f"{text} (peak RSS {mib:.0f} MiB at the memory cap of "
                           f"{cap / 2**20:.0f} MiB)"), sig
    return "error", text, sig


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class LocalExecutor:
    """Jobs in fresh local worker processes, ``workers`` at a time (1 for honest timings)."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._baseline_rss: int | None = None
        self._lock = threading.Lock()
        self._live: set[int] = set()  # process groups of running workers

    def baseline_rss(self) -> int:
        """Peak RSS of an idle worker that imports what a job imports (measured once)."""
        with self._lock:
            if self._baseline_rss is None:
                proc = subprocess.Popen(worker_command("--baseline"), start_new_session=True,
                                        preexec_fn=child_setup())
                _, rss, _ = wait_with_timeout(proc, 300)
                self._baseline_rss = rss
            return self._baseline_rss

    def run_one(self, job: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """Run ``job`` in a fresh worker process and return its row (never raises for a job)."""
        baseline = self.baseline_rss() if job.get("device", "cpu") == "cpu" else 0
        cap = job_mem_cap(job)
        with tempfile.TemporaryDirectory(prefix="seqbench-job-") as tmp:
            tmpdir = Path(tmp)
            in_path, out_path, err_path = tmpdir / "in.json", tmpdir / "out.json", tmpdir / "err"
            in_path.write_text(json.dumps({"job": job, "context": context}), encoding="utf-8")
            oom_before = host_oom_kills()
            started = time.perf_counter()
            with open(err_path, "wb") as err:
                proc = subprocess.Popen(worker_command(str(in_path), str(out_path)),
                                        stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True, preexec_fn=child_setup(cap))
                self._live.add(proc.pid)
                try:
                    status, peak_rss, timed_out = wait_with_timeout(proc, job_timeout(job))
                finally:
                    self._live.discard(proc.pid)
            wall = time.perf_counter() - started
            row = None
            if out_path.exists() and not timed_out:
                try:
                    row = json.loads(out_path.read_text(encoding="utf-8"))
                except ValueError:
                    row = None  # cannot happen with atomic writes; treat as no row
            if row is None:
                oom_after = host_oom_kills()
                host_oom = None not in (oom_before, oom_after) and oom_after > oom_before
                state, error, sig = classify_exit(job, status, timed_out, peak_rss, host_oom,
                                                  _tail(err_path))
                row = failed_row(job, context, state, error, wall, sig)
        row["peak_rss_bytes"] = peak_rss
        if cap:
            row.setdefault("mem_cap_bytes", cap)
        if row.get("mem_method") == CPU_MEM_METHOD:
            row["baseline_rss_bytes"] = baseline
            row["peak_mem_bytes"] = max(0, peak_rss - baseline)
        return row

    def kill_all(self) -> None:
        """Kill every running worker (the driver is stopping)."""
        for pid in list(self._live):
            kill_group(pid)

    def run(self, jobs: Iterable[dict[str, Any]], context: dict[str, Any], on_row: OnRow) -> None:
        jobs = list(jobs)
        try:
            if self.workers == 1:
                for job in jobs:
                    on_row(self.run_one(job, context))
                return
            self.baseline_rss()
            with ThreadPoolExecutor(self.workers) as pool:
                futures = [pool.submit(self.run_one, job, context) for job in jobs]
                try:
                    for future in as_completed(futures):  # record each row as soon as it exists
                        on_row(future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        except BaseException:  # Ctrl-C or a failing on_row: leave no worker behind
            self.kill_all()
            raise


def failed_row(job: dict[str, Any], context: dict[str, Any], status: str, error: str,
               wall_s: float, signal_number: int | None = None) -> dict[str, Any]:
    """The row of a job whose worker wrote none: it timed out, crashed or was killed."""
    from seqbench.provenance import runtime_provenance
    from seqbench.runner import base_row

    row = base_row(job, context)
    row.update(runtime_provenance(job.get("device", "cpu")))
    row.update(status=status, error=error, wall_s=wall_s)
    if signal_number is not None:
        row["signal"] = signal_number
    if job.get("device", "cpu") == "cpu":
        row["mem_method"] = CPU_MEM_METHOD
    return row
