"""Executors run jobs in fresh worker processes and hand back one row per job.

The local executor starts ``python -m seqbench.worker`` for each job (a fresh interpreter, like
multiprocessing's spawn), waits for it with ``os.wait4`` to get its exit status and resource
usage, and enforces the job's timeout. A worker that wrote no row still yields one: ``timeout``
when it ran out of time, ``error`` naming the signal or exit code otherwise. On CPU the row's
``peak_mem_bytes`` is the worker's peak RSS minus that of an idle worker with the same imports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from seqbench.measure import CPU_MEM_METHOD

OnRow = Callable[[dict[str, Any]], None]


class Executor(Protocol):
    name: str

    def run(self, jobs: Iterable[dict[str, Any]], context: dict[str, Any], on_row: OnRow) -> None:
        """Run every job and call ``on_row(row)`` once per job, in the driver's thread."""


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqbench.worker", *args]


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
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started
            except ProcessLookupError:
                pass
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    return status, usage.ru_maxrss * 1024, timed_out  # ru_maxrss is in KiB on Linux


def describe_exit(status: int, stderr_tail: str) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else str(sig)
        text = f"worker killed by signal {name} ({sig})"
    else:
        text = f"worker exited with code {os.WEXITSTATUS(status)} without writing a row"
    return f"{text}: {stderr_tail}" if stderr_tail else text


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

    def baseline_rss(self) -> int:
        """Peak RSS of an idle worker that imports what a job imports (measured once)."""
        if self._baseline_rss is None:
            proc = subprocess.Popen(worker_command("--baseline"), start_new_session=True)
            _, rss, _ = wait_with_timeout(proc, 300)
            self._baseline_rss = rss
        return self._baseline_rss

    def run_one(self, job: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        baseline = self.baseline_rss() if job.get("device", "cpu") == "cpu" else 0
        with tempfile.TemporaryDirectory(prefix="seqbench-job-") as tmp:
            tmpdir = Path(tmp)
            in_path, out_path, err_path = tmpdir / "in.json", tmpdir / "out.json", tmpdir / "err"
            in_path.write_text(json.dumps({"job": job, "context": context}), encoding="utf-8")
            started = time.perf_counter()
            with open(err_path, "wb") as err:
                proc = subprocess.Popen(worker_command(str(in_path), str(out_path)),
                                        stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True)
                status, peak_rss, timed_out = wait_with_timeout(proc, job.get("timeout_s"))
            wall = time.perf_counter() - started
            row = None
            if out_path.exists() and not timed_out:
                row = json.loads(out_path.read_text(encoding="utf-8"))
            if row is None:
                row = failed_row(job, context, status, timed_out, wall, _tail(err_path))
        row["peak_rss_bytes"] = peak_rss
        if row.get("mem_method") == CPU_MEM_METHOD:
            row["baseline_rss_bytes"] = baseline
            row["peak_mem_bytes"] = max(0, peak_rss - baseline)
        return row

    def run(self, jobs: Iterable[dict[str, Any]], context: dict[str, Any], on_row: OnRow) -> None:
        jobs = list(jobs)
        if self.workers == 1:
            for job in jobs:
                on_row(self.run_one(job, context))
            return
        self.baseline_rss()
        with ThreadPoolExecutor(self.workers) as pool:
            for row in pool.map(lambda j: self.run_one(j, context), jobs):
                on_row(row)


def failed_row(job: dict[str, Any], context: dict[str, Any], status: int, timed_out: bool,
               wall_s: float, stderr_tail: str) -> dict[str, Any]:
    """The row of a worker that wrote none: it timed out, crashed or was killed."""
    from seqbench.provenance import runtime_provenance
    from seqbench.runner import base_row

    row = base_row(job, context)
    row.update(runtime_provenance(job.get("device", "cpu")))
    if timed_out:
        row.update(status="timeout", error=f"job exceeded its timeout of {job.get('timeout_s')} s")
    else:
        row.update(status="error", error=describe_exit(status, stderr_tail))
        if os.WIFSIGNALED(status):
            row["signal"] = os.WTERMSIG(status)
    row["wall_s"] = wall_s
    if job.get("device", "cpu") == "cpu":
        row["mem_method"] = CPU_MEM_METHOD
    return row
