"""Fault tolerance of the executors and the results store: a driver killed with SIGKILL resumes
without losing or duplicating a row, a worker killed by a signal becomes a row naming it, a job
past its timeout becomes ``timeout``, and the Ray executor gives the same rows as the local one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import TINY, broken_job, collector, tiny_jobs

from seqbench.config import Job
from seqbench.errors import SpecError
from seqbench.execution.local import (
    LocalExecutor,
    child_setup,
    classify_exit,
    failed_row,
    host_oom_kills,
)
from seqbench.recording.reader import read_jsonl
from seqbench.recording.rows import RunContext
from seqbench.recording.schema import Row
from seqbench.recording.store import ResultStore, dumps
from seqbench.recording.validate import check_rows, validate_path

LONG_STEPS = 10**7  # a job that would run for hours


def long_job(timeout_s: float = 120) -> Job:
    job = tiny_jobs(train={**TINY["train"], "steps": LONG_STEPS}, seeds=[0])[0]
    return job.with_timeout(timeout_s)


@pytest.fixture(scope="module")
def local():
    return LocalExecutor()  # shared: the zygote and its idle-worker baseline start once


@pytest.fixture(scope="module", params=["fork", "spawn"])
def each_start(request, local):
    """The local executor with each way of starting a worker."""
    return local if request.param == "fork" else LocalExecutor(start="spawn")


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def worker_processes(parent: psutil.Process, zygotes: bool = False) -> list[psutil.Process]:
    """The job workers below ``parent``: spawned ones and the children of zygotes (and the
    zygotes themselves if asked), never a baseline probe."""
    out = []
    for proc in parent.children(recursive=True):
        cmd = _cmdline(proc)
        if "seqbench.worker" not in cmd or "--baseline" in cmd:
            continue
        if "--zygote" in cmd:  # a zygote, or a job forked from one (same command line)
            try:
                forked = "--zygote" in _cmdline(proc.parent())
            except psutil.Error:
                continue
            if not (forked or zygotes):
                continue
        out.append(proc)
    return out


def job_payload(proc: psutil.Process) -> dict:
    """The job a worker runs: its input file is an argument (spawn) or sits beside the file its
    stderr goes to (fork)."""
    cmd = proc.cmdline()
    if "--zygote" not in cmd:
        return json.loads(Path(cmd[-2]).read_text())
    err = next(f.path for f in proc.open_files() if Path(f.path).name == "err")
    return json.loads((Path(err).parent / "in.json").read_text())


def kill_worker_of_long_job(sig: int, stop: threading.Event) -> None:
    """Send ``sig`` to the worker running the long job once it is training."""
    me = psutil.Process()
    while not stop.is_set():
        for proc in worker_processes(me):
            try:
                payload = job_payload(proc)
            except (psutil.Error, OSError, ValueError, IndexError, StopIteration):
                continue
            if payload["job"]["train"]["steps"] == LONG_STEPS:
                time.sleep(0.5)
                proc.send_signal(sig)
                return
        time.sleep(0.1)


# --- local executor -----------------------------------------------------------------------

def test_a_segfaulting_worker_becomes_a_row_with_the_signal_and_the_sweep_finishes(each_start):
    jobs = [long_job(), tiny_jobs(seeds=[0])[0]]
    stop = threading.Event()
    killer = threading.Thread(target=kill_worker_of_long_job, args=(signal.SIGSEGV, stop))
    killer.start()
    rows = []
    try:
        each_start.run(jobs, RunContext(suite="tiny"), collector(rows))
    finally:
        stop.set()
        killer.join()
    assert [r["status"] for r in rows] == ["error", "ok"]
    assert {r["worker_start"] for r in rows} == {each_start.start}
    assert rows[0]["signal"] == signal.SIGSEGV
    assert "SIGSEGV (11)" in rows[0]["error"]
    assert rows[0]["job_id"] == jobs[0].job_id and rows[0]["peak_rss_bytes"] > 0
    assert not check_rows([("segv", rows[0])]), "a crash row is still a valid row"


def test_a_job_past_its_timeout_becomes_timeout_and_leaves_no_process(each_start):
    started = time.monotonic()
    row = each_start.run_one(long_job(timeout_s=1.5), RunContext(suite="tiny")).to_dict()
    assert row["status"] == "timeout" and "timeout of 1.5 s" in row["error"]
    assert 1.5 <= row["wall_s"] < 30 and time.monotonic() - started < 60
    assert worker_processes(psutil.Process()) == []


def test_forked_and_spawned_workers_give_the_same_results(local):
    job = tiny_jobs(seeds=[3])[0]
    forked = local.run_one(job, RunContext(suite="tiny")).to_dict()
    spawned = LocalExecutor(start="spawn").run_one(job, RunContext(suite="tiny")).to_dict()
    assert (forked["worker_start"], spawned["worker_start"]) == ("fork", "spawn")
    assert forked["status"] == spawned["status"] == "ok"
    for key in ("train_final_loss", "metric_mse", "param_count", "config_hash"):
        assert forked[key] == spawned[key], key  # same seed, same bytes
    # a forked child's peak starts at the zygote's resident size, so even a tiny job shows; a
    # spawned one's baseline is the imports' transient peak, which a tiny job may not pass
    assert 0 < forked["baseline_rss_bytes"] < forked["peak_rss_bytes"]
    assert 0 < spawned["baseline_rss_bytes"] <= spawned["peak_rss_bytes"]
    for row in (forked, spawned):
        assert row["peak_mem_bytes"] == row["peak_rss_bytes"] - row["baseline_rss_bytes"]


def test_the_zygote_preload_starts_no_thread_and_never_asks_cuda_anything():
    code = ("import os, sys, torch\n"
            "calls = []\n"
            "for name in ('is_available', 'device_count', 'init', '_lazy_init',\n"
            "             'get_device_name', 'current_device', 'get_device_properties'):\n"
            "    def record(*a, _name=name, _orig=getattr(torch.cuda, name), **k):\n"
            "        calls.append(_name)\n"
            "        return _orig(*a, **k)\n"
            "    setattr(torch.cuda, name, record)\n"
            "before = len(os.listdir('/proc/self/task'))\n"
            "from seqbench.worker.process import preload\n"
            "preload()\n"
            "print(before, len(os.listdir('/proc/self/task')), torch.cuda.is_initialized(),\n"
            "      'torch._dynamo' in sys.modules, 'seqbench.worker.models.mamba' in sys.modules,\n"
            "      ','.join(calls) or '-')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after, cuda, dynamo, mamba, calls = out.stdout.split()
    assert after == before, "a thread started before fork would be missing in every child"
    # on a GPU machine even torch.cuda.is_available() initialises the driver (without NVML), and
    # a child forked after that cannot use CUDA: the zygote must not ask
    assert calls == "-"
    assert (cuda, dynamo, mamba) == ("False", "True", "True")


def test_a_killed_zygote_fails_its_job_only_and_the_next_job_gets_a_new_one():
    executor = LocalExecutor()
    executor.baseline_rss()
    idle = executor._idle.get_nowait()
    executor._idle.put(idle)
    zygote = psutil.Process(idle.proc.pid)

    def kill_zygote_once_the_job_runs() -> None:
        deadline = time.monotonic() + 120
        while not zygote.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        zygote.kill()

    killer = threading.Thread(target=kill_zygote_once_the_job_runs)
    killer.start()
    rows = []
    executor.run([long_job(), tiny_jobs(seeds=[0])[0]], RunContext(suite="tiny"),
                 collector(rows))
    killer.join()
    assert [r["status"] for r in rows] == ["error", "ok"]
    assert "fork server" in rows[0]["error"]
    assert worker_processes(psutil.Process()) == [], "the job died with its zygote"
    executor.close()


def _status_of(code: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", code])
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return status


def test_a_sigkilled_worker_is_oom_only_at_its_cap_or_when_the_oom_killer_fired():
    killed = _status_of("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    job = tiny_jobs()[0].model_copy(update={"mem_cap_bytes": 1000 * 2**20})
    free = tiny_jobs()[0]
    status, error, sig = classify_exit(job, killed, False, 990 * 2**20, False, "")
    assert (status, sig) == ("oom", signal.SIGKILL) and "memory cap of 1000 MiB" in error
    assert classify_exit(job, killed, False, 300 * 2**20, False, "")[0] == "error"
    assert classify_exit(free, killed, False, 300 * 2**20, True, "")[0] == "oom"
    assert classify_exit(job, killed, True, 990 * 2**20, False, "")[0] == "timeout"
    segv = _status_of("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert classify_exit(job, segv, False, 990 * 2**20, True, "")[:3:2] == ("error", 11)
    exited = _status_of("raise SystemExit(3)")
    status, error, sig = classify_exit(free, exited, False, 0, False, "Traceback | boom")
    assert sig is None and error == "worker exited with code 3 without writing a row: " \
                                     "Traceback | boom"
    assert host_oom_kills() is None or host_oom_kills() >= 0


def test_the_memory_cap_makes_allocations_fail_in_the_worker():
    cap = 256 * 2**20
    code = "b = bytearray(512 * 2**20)"
    capped = subprocess.run([sys.executable, "-c", code], preexec_fn=child_setup(cap),
                            capture_output=True, text=True)
    assert capped.returncode == 1 and "MemoryError" in capped.stderr
    free = subprocess.run([sys.executable, "-c", code], preexec_fn=child_setup(0))
    assert free.returncode == 0


def test_a_worker_dies_with_the_process_that_started_it(tmp_path):
    starter = (
        "import subprocess, sys, time\n"
        "from seqbench.execution.local import child_setup\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
        "                     start_new_session=True, preexec_fn=child_setup())\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(proc.stdout.readline()))
    proc.kill()
    proc.wait()
    child.wait(timeout=10)  # raises TimeoutExpired if the orphan lives on


# --- the driver killed with SIGKILL -------------------------------------------------------

def test_a_driver_killed_with_sigkill_resumes_without_losing_or_duplicating_a_row(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))  # two jobs
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "seqbench.cli", "run", "tiny.yaml", "-o", "out", "--no-report"]
    driver = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((out / "jobs").glob("*.json")) if out.exists() else True:
        assert driver.poll() is None, driver.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    workers = worker_processes(psutil.Process(driver.pid), zygotes=True)
    assert workers, "a job is running"
    driver.kill()  # SIGKILL: no handler, no cleanup
    driver.wait()
    for w in workers:
        w.wait(timeout=10)  # the zygote, and the worker of the unfinished job, died with it
    kept = {p.name: p.read_bytes() for p in (out / "jobs").glob("*.json")}
    assert len(kept) == 1
    with open(out / "results.jsonl", "ab") as f:  # as if killed in the middle of an append
        f.write(b'{"schema_version": 1, "job_id": "cut-sh')

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 already recorded, 1 to run" in again.stdout
    rows, problems = read_jsonl(out / "results.jsonl")
    assert problems == [] and len(rows) == 2, problems  # the cut line went to .damaged
    assert (out / "results.jsonl.damaged").read_bytes().startswith(b'{"schema_version": 1')
    assert sorted(r["seed"] for _, r in rows) == [0, 1]
    assert {p.name: p.read_bytes() for p in (out / "jobs").glob("*.json")
            if p.name in kept} == kept, "finished rows are never rewritten"
    assert all(r["status"] == "ok" for _, r in rows)
    count, problems = validate_path(out)
    assert (count, [str(p) for p in problems]) == (2, [])


# --- the store ----------------------------------------------------------------------------

def stored_row(seed: int = 0, status: str = "ok") -> Row:
    job = tiny_jobs(seeds=[seed])[0]
    row = failed_row(job, RunContext(suite="tiny", spec_hash="a" * 64), status,
                     "" if status == "ok" else "boom", 1.0)
    return row


@pytest.fixture()
def store(tmp_path):
    s = ResultStore(tmp_path / "out")
    s.open_for("tiny", "h1", {"name": "tiny"})
    yield s
    s.close()


def test_a_truncated_jsonl_line_is_tolerated_and_repaired(store):
    store.write(stored_row(0))
    store.write(stored_row(1))
    data = store.jsonl.read_bytes()
    store.jsonl.write_bytes(data[:-40])  # the second append cut short
    rows, problems = read_jsonl(store.jsonl)
    assert len(rows) == 1 and [p.message for p in problems] == [
        "truncated line (a writer was killed mid-append)"]
    store.repair()  # the cut line moves aside; the row it held comes back from its job file
    assert store.jsonl.read_bytes() == data
    cut = data[:-40].split(b"\n")[1]
    assert (store.root / "results.jsonl.damaged").read_bytes() == cut + b"\n"
    assert len(store.notes) == 2
    store.notes.clear()
    store.repair()
    assert store.notes == []


def test_a_retried_job_replaces_its_jsonl_line_instead_of_adding_one(store):
    store.write(stored_row(0, "error"))
    store.write(stored_row(1))
    store.write(stored_row(0, "ok"))  # --retry
    rows, _ = read_jsonl(store.jsonl)
    assert sorted((r["seed"], r["status"]) for _, r in rows) == [(0, "ok"), (1, "ok")]
    assert store.finished() == {r["job_id"]: "ok" for _, r in rows}


def test_a_row_missing_from_the_jsonl_is_restored_from_its_job_file(store):
    row = stored_row(0)
    store.write(row)
    store.jsonl.unlink()  # killed between the job file's rename and the append
    store.close()
    again = ResultStore(store.root)
    again.open_for("tiny", "h1", {"name": "tiny"})
    assert [r["job_id"] for _, r in read_jsonl(again.jsonl)[0]] == [row.job_id]
    again.close()


def test_a_second_run_cannot_write_into_a_directory_in_use(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from seqbench.recording.store import ResultStore\n"
         "ResultStore(sys.argv[1]).open_for('tiny', 'h1', {})\nprint('open', flush=True)\n"
         "time.sleep(120)", str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(SpecError, match=f"another seqbench run \\(pid {holder.pid}\\)"):
            ResultStore(tmp_path / "out").open_for("tiny", "h1", {})
    finally:
        holder.kill()
        holder.wait()
    store = ResultStore(tmp_path / "out")  # free again once the holder is gone, even killed
    store.open_for("tiny", "h1", {})
    again = ResultStore(tmp_path / "out")  # the same process may open it twice
    again.open_for("tiny", "h1", {})
    store.close()


def test_stale_temporary_files_of_killed_writers_are_removed(store):
    stale = store.jobs_dir / ".abc.json.x1y2.tmp"
    stale.write_text('{"half": ')
    store.close()
    ResultStore(store.root).open_for("tiny", "h1", {"name": "tiny"})
    assert not stale.exists()


def test_nan_metrics_are_stored_as_null_and_flagged_on_ok_rows():
    row = {**stored_row(0).to_dict(), "metric_mse": float("nan"), "primary_metric": "mse"}
    stored = json.loads(dumps(row))
    assert stored["metric_mse"] is None
    assert [p.message for p in check_rows([("x", stored)])] == [
        "ok row with a NaN or infinite metric_mse (None)"]


# --- the Ray executor ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test tasks by value
    yield ray
    ray.shutdown()


def test_ray_and_local_executors_give_the_same_rows(ray_cluster, local):
    from seqbench.execution.ray_executor import RayExecutor

    jobs = [tiny_jobs(seeds=[0])[0], broken_job(tiny_jobs(seeds=[7])[0]),
            long_job(timeout_s=1.5)]
    by_local, by_ray = [], []
    local.run(jobs, RunContext(suite="tiny"), collector(by_local))
    RayExecutor().run(jobs, RunContext(suite="tiny"), collector(by_ray))

    def key(rows):
        return sorted((r["config_hash"], r["seed"], r["status"]) for r in rows)

    assert key(by_ray) == key(by_local)
    assert sorted(r["status"] for r in by_ray) == ["error", "ok", "timeout"]
    ok = {r["job_id"]: r for r in by_ray if r["status"] == "ok"}
    for r in by_local:
        if r["status"] == "ok":  # same seed, same data, same training: same numbers
            assert r["metric_mse"] == pytest.approx(ok[r["job_id"]]["metric_mse"], rel=1e-5)
            assert ok[r["job_id"]]["peak_mem_bytes"] > 0


def crash_then_succeed(marks: Path, crashes: int):
    """A task body that kills its Ray worker on the first ``crashes`` attempts, then returns
    the job's row."""

    def task(job: dict, context: dict) -> dict:
        from seqbench.recording.rows import RunContext, new_row

        attempt = len(list(marks.iterdir())) + 1
        (marks / str(attempt)).touch()
        if attempt <= crashes:
            os._exit(1)
        row = new_row(Job.parse(job), RunContext(**context))
        return row.update(status="ok", wall_s=0.0).to_dict()

    return task


def sleep_forever(job: dict, context: dict) -> dict:
    time.sleep(600)
    return {}


def test_a_crashed_ray_worker_is_retried_a_bounded_number_of_times(ray_cluster, tmp_path):
    from seqbench.execution.ray_executor import RayExecutor

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    job = tiny_jobs(seeds=[0])[0]
    rows = []
    RayExecutor(max_retries=2, task=crash_then_succeed(tmp_path / "a", 2)).run(
        [job], RunContext(suite="tiny"), collector(rows))
    assert [r["status"] for r in rows] == ["ok"] and len(list((tmp_path / "a").iterdir())) == 3
    RayExecutor(max_retries=1, task=crash_then_succeed(tmp_path / "b", 5)).run(
        [job], RunContext(suite="tiny"), collector(rows))
    assert rows[1]["status"] == "error" and "Ray worker died 2 times" in rows[1]["error"]
    assert len(list((tmp_path / "b").iterdir())) == 2


def test_a_hung_ray_task_is_cancelled_and_recorded_as_timeout(ray_cluster):
    from seqbench.execution.ray_executor import RayExecutor

    job = tiny_jobs(seeds=[0])[0].with_timeout(0.5)
    rows = []
    started = time.monotonic()
    RayExecutor(grace_s=1.0, task=sleep_forever).run([job], RunContext(suite="tiny"),
                                                     collector(rows))
    assert time.monotonic() - started < 60
    assert rows[0]["status"] == "timeout" and "Ray task was cancelled" in rows[0]["error"]
    assert rows[0]["job_id"] == job.job_id


def test_a_task_killed_by_rays_memory_monitor_is_oom_and_not_retried():
    ray = pytest.importorskip("ray")
    from seqbench.execution.ray_executor import RayExecutor, _Attempt

    class KilledByMonitor:
        def get(self, ref):
            raise ray.exceptions.OutOfMemoryError("Task was killed due to the node running "
                                                  "low on memory.\nMemory on the node ...")

    job = tiny_jobs(seeds=[0])[0]
    row = RayExecutor(max_retries=3)._collect(KilledByMonitor(), None, _Attempt(job, 1, 0.0),
                                              RunContext(suite="tiny"))
    assert row is not None, "an OOM kill is recorded, not resubmitted"
    assert row.status == "oom" and "memory monitor" in row.error
    assert "low on memory." in row.error and "\n" not in row.error
