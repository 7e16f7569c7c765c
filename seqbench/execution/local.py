"""Executors run jobs in fresh worker processes and hand back one row per job.

The local executor runs each job in a fresh process, started one of two ways (recorded on the
row as ``worker_start``):

* ``fork`` (the default): a zygote, ``python -m seqbench.worker --zygote``, imports torch and
  seqbench once and forks one child per job (multiprocessing's forkserver with a preload). The
  zygote never runs a tensor op or touches CUDA, so each child starts with nothing but the
  imports: the torch import (about 2 s of every job on a 2-core CPU) is paid once per executor
  slot instead of once per job.
* ``spawn``: ``python -m seqbench.worker`` per job, a fresh interpreter.

Either way the worker's parent waits for it with ``os.wait4`` to get its exit status and peak
RSS, and the job's timeout is enforced. A worker that wrote no row still yields one:

* ``timeout`` when it ran past ``job.timeout_s`` (its whole process group is killed);
* ``oom`` when it was killed by SIGKILL while the kernel's OOM killer fired (``oom_kill`` in
  ``/proc/vmstat`` grew) or with its peak RSS at the job's memory cap;
* ``error`` naming the signal (``signal`` field) or exit code otherwise, with its stderr tail.

On CPU the row's ``peak_mem_bytes`` is the worker's peak RSS minus that of an idle worker started
the same way with the same imports. (A forked child's peak starts at the zygote's resident size;
a spawned one's includes the imports' transient peak, which hides ~75-120 MiB of a small job.)
A job may carry a memory cap (``mem_cap_bytes``, scale and stream jobs): the worker starts
with ``RLIMIT_DATA`` at the cap, so torch's allocator fails with an error the runner records as
``oom`` instead of the kernel killing the machine's other processes.

Workers die with the process that started them (``PR_SET_PDEATHSIG``): a driver killed with
SIGKILL, or a Ray task cancelled, leaves no orphan computing a row nobody will record.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from seqbench.config.job import Job
from seqbench.execution.base import Interrupted, OnRow, interrupted_text
from seqbench.recording.rows import CPU_MEM_METHOD, RunContext, failed_row
from seqbench.recording.schema import Row, Status

WORKER_STARTS = ("fork", "spawn")
OOM_RSS_FRACTION = 0.9  # a SIGKILLed worker whose peak RSS reached this share of its cap: oom
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
TMP_PREFIX = "seqbench-job-"  # + the driver's pid: stale folders of dead drivers are removed


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqbench.worker", *args]


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_prctl = _load_prctl()


def child_setup(mem_cap_bytes: int = 0, parent: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn``: die with the parent; limit the data segment to the cap, if any.

    Only the soft limit is set, so a worker that applies its own cap is never refused.
    ``parent`` defaults to the calling process (the one that will start the child).
    """
    parent = os.getpid() if parent is None else parent
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


def classify_exit(job: Job, status: int, timed_out: bool, peak_rss: int,
                  host_oom: bool, stderr_tail: str) -> tuple[Status, str, int | None]:
    """(row status, error text, signal) for a worker that wrote no row."""
    if timed_out:
        return "timeout", f"job exceeded its timeout of {job.timeout_s:g} s", None
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    text = describe_exit(status, stderr_tail)
    if sig == signal.SIGKILL:
        cap = job.cap_bytes
        mib = peak_rss / 2**20
        if host_oom:
            return "oom", f"{text} (the kernel's OOM killer fired; peak RSS {mib:.0f} MiB)", sig
        if cap and peak_rss >= OOM_RSS_FRACTION * cap:
            return "oom", (f"{text} (peak RSS {mib:.0f} MiB at the memory cap of "
                           f"{cap / 2**20:.0f} MiB)"), sig
    return "error", text, sig


def _last_lines(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return _last_lines(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return ""


class ZygoteDied(RuntimeError):
    """The fork server exited (or never started): its current job has no row of its own."""


class Zygote:
    """A ``python -m seqbench.worker --zygote`` fork server that runs one job at a time."""

    def __init__(self, start_timeout_s: float = 300, wait: bool = True) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
        # should anything in the zygote ask whether CUDA is available, PyTorch answers through
        # NVML instead of initialising the driver, which would make CUDA unusable in every child
        env = {**os.environ, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
        self.proc = subprocess.Popen(worker_command("--zygote"), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0,
                                     start_new_session=True, preexec_fn=child_setup(), env=env)
        # the zygote dies with the thread that started it (PR_SET_PDEATHSIG)
        self.thread = threading.current_thread()
        self._buf = b""
        self._start_timeout_s = start_timeout_s
        self.baseline_rss = 0
        if wait:
            self.ready()

    def ready(self) -> None:
        """Wait for the zygote's hello (its idle child's peak RSS)."""
        hello = self._read(time.monotonic() + self._start_timeout_s)
        if hello is None:
            self.close()
            raise ZygoteDied(f"the fork server did not start within "
                             f"{self._start_timeout_s:g} s")
        self.baseline_rss = int(hello["baseline_rss"])

    def usable(self) -> bool:
        """Alive, and so is the thread that started it (the zygote dies with it)."""
        return self.proc.poll() is None and self.thread.is_alive()

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return _last_lines(self._stderr.read().decode(errors="replace"))

    def _read(self, deadline: float | None) -> dict[str, Any] | None:
        """The zygote's next message, or None at the deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait()
                raise ZygoteDied(f"the fork server exited ({self.proc.returncode}): "
                                 f"{self._stderr_tail()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def run(self, request: dict[str, Any], timeout_s: float | None,
            started: Callable[[int], None]) -> tuple[int, int, bool]:
        """Fork a child for ``request``: (wait status, peak RSS in bytes, timed out)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
        except OSError as e:  # a broken pipe: the zygote is gone
            raise ZygoteDied(f"the fork server is gone: {e}") from e
        reply = self._read(None)
        assert reply is not None and "pid" in reply, reply
        pid = int(reply["pid"])
        started(pid)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        reply = self._read(deadline)
        timed_out = reply is None
        if timed_out:
            kill_group(pid)  # the worker and anything it started
            reply = self._read(None)
        assert reply is not None
        return int(reply["status"]), int(reply["rss"]), timed_out

    def close(self) -> None:
        """Stop the zygote at once: it holds nothing but imports, and a torch process takes
        seconds to exit on its own."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
        self.proc.wait()
        self._stderr.close()


def _close_zygotes(idle: queue.SimpleQueue) -> None:
    while True:
        try:
            idle.get_nowait().close()
        except queue.Empty:
            return


class LocalExecutor:
    """Jobs in fresh local worker processes, ``workers`` at a time (1 for honest timings).

    ``start="fork"`` forks each worker from a preloaded zygote (one per concurrent slot, kept
    for the executor's life); ``start="spawn"`` starts a fresh interpreter per job.
    """

    name = "local"

    def __init__(self, workers: int = 1, start: str = "fork") -> None:
        if start not in WORKER_STARTS:
            raise ValueError(f"start must be one of {WORKER_STARTS}, not {start!r}")
        self.workers = max(1, workers)
        self.start = start
        self._baseline_rss: int | None = None
        self._lock = threading.Lock()
        self._live: set[int] = set()  # process groups of running workers
        self._stopping = threading.Event()  # the driver was interrupted: kill, don't classify
        self._stopped_by: BaseException = Interrupted()  # what interrupted it (for the rows)
        self._idle: queue.SimpleQueue[Zygote] = queue.SimpleQueue()
        weakref.finalize(self, _close_zygotes, self._idle)
        remove_stale_job_folders()

    def _zygote(self) -> Zygote:
        """An idle zygote, or a new one. A zygote started from a thread of an earlier run's
        pool died with that thread (``PR_SET_PDEATHSIG`` follows the starting thread): such
        dead ones are dropped here instead of failing a job."""
        while True:
            try:
                zygote = self._idle.get_nowait()
            except queue.Empty:
                return Zygote()
            if zygote.usable():
                return zygote
            zygote.close()

    def _prestart(self, count: int) -> None:
        """Have ``count`` idle zygotes, started from this thread (so they outlive the pool's
        threads) and concurrently (each imports torch)."""
        keep: list[Zygote] = []
        while len(keep) < count:
            try:
                zygote = self._idle.get_nowait()
            except queue.Empty:
                break
            if zygote.usable():
                keep.append(zygote)
            else:
                zygote.close()
        started = [Zygote(wait=False) for _ in range(count - len(keep))]
        try:
            for zygote in started:
                try:
                    zygote.ready()
                except ZygoteDied:  # its job will start another and report if that fails
                    zygote.close()
                    continue
                keep.append(zygote)
        finally:
            for zygote in started:
                if zygote not in keep:  # failed, or interrupted while it imported
                    kill_group(zygote.proc.pid)
                    zygote.close()
            for zygote in keep:
                self._idle.put(zygote)

    def baseline_rss(self) -> int:
        """Peak RSS of an idle worker that imports what a job imports (measured once)."""
        if self.start == "fork":
            zygote = self._zygote()  # started now, so no job's wall time includes it
            self._idle.put(zygote)
            return zygote.baseline_rss
        with self._lock:
            if self._baseline_rss is None:
                proc = subprocess.Popen(worker_command("--baseline"), start_new_session=True,
                                        preexec_fn=child_setup())
                _, rss, _ = wait_with_timeout(proc, 300)
                self._baseline_rss = rss
            return self._baseline_rss

    def _spawn(self, in_path: Path, out_path: Path, err_path: Path,
               job: Job) -> tuple[int, int, bool, int]:
        baseline = self.baseline_rss()
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(worker_command(str(in_path), str(out_path)),
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True,
                                    preexec_fn=child_setup(job.cap_bytes))
            self._live.add(proc.pid)
            if self._stopping.is_set():  # interrupted while it started: it goes at once
                kill_group(proc.pid)
            try:
                status, peak_rss, timed_out = wait_with_timeout(proc, job.timeout)
            except BaseException:  # Ctrl-C: the worker goes with the driver
                kill_group(proc.pid)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)
                raise
            finally:
                self._live.discard(proc.pid)
        return status, peak_rss, timed_out, baseline

    def _fork(self, in_path: Path, out_path: Path, err_path: Path,
              job: Job) -> tuple[int, int, bool, int]:
        zygote = self._zygote()
        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self._live.add(pid)
            if self._stopping.is_set():  # interrupted while it started: it goes at once
                kill_group(pid)

        request = {"in": str(in_path), "out": str(out_path), "err": str(err_path),
                   "cap": job.cap_bytes}
        try:
            status, peak_rss, timed_out = zygote.run(request, job.timeout, started)
        except BaseException:  # Ctrl-C, or the zygote died: stop the job, drop the zygote
            for pid in pids:
                kill_group(pid)
            zygote.close()
            raise
        finally:
            for pid in pids:
                self._live.discard(pid)
        self._idle.put(zygote)
        return status, peak_rss, timed_out, zygote.baseline_rss

    def run_one(self, job: Job, context: RunContext) -> Row:
        """Run ``job`` in a fresh worker process and return its row (never raises for a job;
        an interruption of the driver propagates after the worker is gone)."""
        if self._stopping.is_set():  # the driver is stopping: no new worker starts
            return failed_row(job, context, "interrupted", interrupted_text(self._stopped_by),
                              0.0)
        with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-") as tmp:
            tmpdir = Path(tmp)
            in_path, out_path, err_path = tmpdir / "in.json", tmpdir / "out.json", tmpdir / "err"
            in_path.write_text(json.dumps({"job": job.dump(), "context": context.dump()}),
                               encoding="utf-8")
            self.baseline_rss()  # the idle probe (spawn) or a zygote (fork) starts untimed
            oom_before = host_oom_kills()
            started = time.perf_counter()
            start = self.start
            try:
                launch = self._fork if start == "fork" else self._spawn
                status, peak_rss, timed_out, baseline = launch(in_path, out_path, err_path, job)
            except ZygoteDied as e:
                wall = time.perf_counter() - started
                died = failed_row(job, context, "error", f"worker's {e}", wall)
                return died.update(worker_start=start)
            wall = time.perf_counter() - started
            row: Row | None = None
            if out_path.exists() and not timed_out:
                with contextlib.suppress(ValueError):  # cannot happen with atomic writes
                    row = Row.from_dict(json.loads(out_path.read_text(encoding="utf-8")))
            if row is None and self._stopping.is_set():
                row = failed_row(job, context, "interrupted", interrupted_text(self._stopped_by),
                                 wall)
            elif row is None:
                oom_after = host_oom_kills()
                host_oom = (oom_before is not None and oom_after is not None
                            and oom_after > oom_before)
                state, error, sig = classify_exit(job, status, timed_out, peak_rss, host_oom,
                                                  _tail(err_path))
                row = failed_row(job, context, state, error, wall, sig)
        if peak_rss is not None and baseline is not None and baseline > peak_rss:
            # the two readings come from different counters (the child's own high-water mark
            # after its imports, the kernel's at exit); a peak is never below a measured RSS
            peak_rss = baseline
        row.update(worker_start=start, peak_rss_bytes=peak_rss)
        if row.mem_method == CPU_MEM_METHOD:
            row.update(baseline_rss_bytes=baseline, peak_mem_bytes=max(0, peak_rss - baseline))
        return row

    def kill_all(self, reason: BaseException | None = None) -> None:
        """Kill every running worker (the driver is stopping, interrupted by ``reason``)."""
        if reason is not None:
            self._stopped_by = reason
        self._stopping.set()
        for pid in list(self._live):
            kill_group(pid)

    def close(self) -> None:
        """Stop the idle zygotes (they also die with this process)."""
        _close_zygotes(self._idle)

    def run(self, jobs: Iterable[Job], context: RunContext, on_row: OnRow) -> None:
        jobs = list(jobs)
        self._stopping.clear()
        if self.workers == 1:
            for job in jobs:
                try:
                    row = self.run_one(job, context)
                except KeyboardInterrupt as exc:  # the worker is already gone
                    on_row(failed_row(job, context, "interrupted", interrupted_text(exc), 0.0))
                    raise
                on_row(row)
            return
        if self.start == "fork":
            self._prestart(min(self.workers, len(jobs)))
        self.baseline_rss()
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(self.run_one, job, context) for job in jobs]
            recorded: set[int] = set()
            try:
                for future in as_completed(futures):  # record each row as soon as it exists
                    recorded.add(id(future))
                    on_row(future.result())
            except BaseException as exc:  # Ctrl-C or a failing on_row: stop every job now
                for future in futures:
                    future.cancel()
                self.kill_all(exc)
                # the killed jobs return at once, as `interrupted` rows; keep every row
                for future in futures:
                    if not future.cancelled() and id(future) not in recorded:
                        with contextlib.suppress(Exception):
                            on_row(future.result(timeout=60))
                raise


def remove_stale_job_folders() -> None:
    """Remove the temporary job folders of drivers that died without cleaning up (kill -9):
    ``seqbench-job-<pid>-*`` whose pid is no longer alive; only our own folder names."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{TMP_PREFIX}*-*"):
        pid_text = folder.name[len(TMP_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # its driver is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # someone else's live process
        shutil.rmtree(folder, ignore_errors=True)
