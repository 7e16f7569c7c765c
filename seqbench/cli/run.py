"""``seqbench run [SPEC]``: validate a spec, run its sweep, record rows, print a summary."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqbench.config.spec import expand, job_id, load_suite, spec_hash
from seqbench.errors import SpecError
from seqbench.execution.local import LocalExecutor
from seqbench.recording.provenance import code_provenance
from seqbench.recording.store import ResultStore


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", default=None,
                   help="a spec file, or the name of a shipped spec (default: quick)")
    p.add_argument("-o", "--out", default=None,
                   help="results directory (default: results/<suite name>)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="jobs run at once (local default 1: parallel jobs disturb each other's "
                        "timings; ray default: as many as the cluster's CPUs or GPUs hold)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: worker processes on this machine; ray: Ray tasks on a local or "
                        "existing Ray cluster (pip install 'seqbench[ray]')")
    p.add_argument("--address", default=None,
                   help="with --executor ray: the cluster to join (host:port of its head, "
                        "ray://host:port, or auto: the one `ray start` made here); default: "
                        "start a new local Ray for the run")
    p.add_argument("--timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="per-job timeout, overriding the spec's timeout_s (default 1800 s)")
    p.add_argument("--max-retries", type=non_negative_int, default=2,
                   help="with --executor ray: times a job is resubmitted after its Ray worker "
                        "crashed (default 2); application errors and OOM kills are not retried")
    p.add_argument("--retry", action="store_true",
                   help="rerun jobs whose recorded status is not ok")
    add_spawn_argument(p)
    p.add_argument("--data-dir", default=None,
                   help="local datasets (default: $SEQBENCH_DATA_DIR, else "
                        "~/.local/share/seqbench); see `seqbench data check`")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    p.add_argument("--no-report", action="store_true",
                   help="skip the report (figures, tables) written after the sweep")


def _bounded(kind: type, allowed: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type whose error names the value and what is allowed (one line, exit 2)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"got {text!r}; {allowed}")
        return value

    return parse


positive_int = _bounded(int, "must be a positive integer", lambda v: v >= 1)
non_negative_int = _bounded(int, "must be an integer >= 0", lambda v: v >= 0)
positive_float = _bounded(float, "must be a positive, finite number of seconds",
                          lambda v: 0 < v < math.inf)  # NaN fails both comparisons


def check_args(args: argparse.Namespace) -> None:
    if args.address is not None and args.executor != "ray":
        raise SpecError("--address", args.address, "only used with --executor ray")
    if args.address is not None and not _valid_address(args.address):
        raise SpecError("--address", args.address,
                        "must be host:port, ray://host:port or auto")


def _valid_address(address: str) -> bool:
    if address == "auto":
        return True
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def add_spawn_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spawn", action="store_true",
                   help="start every job's worker as a fresh interpreter, paying the torch "
                        "import (~2 s on CPU) per job; default: fork it from a preloaded "
                        "zygote that never touched a tensor (recorded as worker_start)")


def local_executor(args: argparse.Namespace, workers: int) -> LocalExecutor:
    return LocalExecutor(workers, start="spawn" if getattr(args, "spawn", False) else "fork")


def make_executor(args: argparse.Namespace, suite_workers: int = 1):
    """The executor the flags ask for (Ray is imported only when asked for)."""
    if args.executor == "ray":
        from seqbench.execution.ray_executor import RayExecutor

        executor = RayExecutor(address=args.address, workers=args.workers,
                               max_retries=args.max_retries)
        executor.check_address()
        return executor
    return local_executor(args, args.workers or suite_workers)


def main(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    # a log file or a pipe gets the whole table, not one squeezed to 80 columns
    console = Console(width=None if sys.stdout.isatty() else 140)
    check_args(args)
    from seqbench.worker.data.paths import use_data_dir

    use_data_dir(args.data_dir)  # exported to workers; never part of a config hash
    suite, path = load_suite(args.spec)
    if suite.kind != "train":  # the frontier logic (skip past an OOM) lives in `seqbench scale`
        raise SpecError("kind", suite.kind, f"run it with `seqbench scale {args.spec}`")
    jobs = expand(suite, str(path))
    if args.timeout is not None:  # timeout_s stays out of config hashes: same job ids
        jobs = [{**job, "timeout_s": args.timeout} for job in jobs]
    out = Path(args.out) if args.out else Path("results") / suite.name
    if args.dry_run:
        print_jobs(console, jobs, f"{len(jobs)} jobs")
        return 0
    executor = make_executor(args, suite.workers)  # before writing: a missing Ray is bad input
    store = ResultStore(out)
    s_hash = spec_hash(suite)
    store.open_for(suite.name, s_hash, suite.model_dump(mode="json"))
    try:
        finished = store.finished()
        todo = [j for j in jobs if job_id(j) not in finished
                or (args.retry and finished[job_id(j)] != "ok")]
        context: dict[str, Any] = {"suite": suite.name, "spec_hash": s_hash,
                                   **code_provenance()}
        console.print(f"seqbench: suite [bold]{suite.name}[/] ({path}), {len(jobs)} jobs, "
                      f"{len(jobs) - len(todo)} already recorded, {len(todo)} to run -> {out}"
                      f" ({executor.name} executor)")
        started = time.perf_counter()
        if todo:
            run_with_progress(executor, todo, context, store, console)
        console.print(f"done in {time.perf_counter() - started:.0f} s")
    finally:
        store.close()
    print_summary(store, console)
    if not args.no_report:
        write_report(out, console)
    console.print(f"results: {out / 'results.jsonl'} (one file per job in {out / 'jobs'})")
    return 0


def print_jobs(console, jobs: list[dict[str, Any]], footer: str) -> None:
    """One line per job (``--dry-run``), then ``footer``."""
    for job in jobs:
        kind = "" if job["kind"] == "train" else f"{job['kind']} "
        console.print(f"{job_id(job)}  {kind}{job['task']['name']} L={job['task']['seq_len']} "
                      f"{job['model']['name']} seed={job['seed']}")
    console.print(footer)


def run_with_progress(executor, jobs: list[dict[str, Any]], context: dict[str, Any],
                      store: ResultStore, console) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("jobs", total=len(jobs))

        def on_row(row: dict[str, Any]) -> None:
            store.write(row)
            progress.advance(bar)
            status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/]"
            progress.console.print(f"  {row['task']} L={row['seq_len']} {row['model']} "
                                   f"seed={row['seed']}: {status} ({row['wall_s']:.1f} s)")

        executor.run(jobs, context, on_row)


def print_summary(store: ResultStore, console) -> None:
    """Model x length: primary metric (mean ± CI over seeds), tokens/s, peak memory, status."""
    from rich.table import Table

    from seqbench.results import load, summary_table

    if not store.jsonl.exists():
        return
    table = summary_table(load(store.root, warn=False))
    if table.empty:
        return
    rich_table = Table(title=f"summary ({store.root})")
    for column in table.columns:
        rich_table.add_column(str(column))
    for _, r in table.iterrows():
        rich_table.add_row(*(str(v) for v in r))
    console.print(rich_table)


def write_report(out: Path, console) -> None:
    try:
        from seqbench.results.report import write_report as _write
    except ImportError:
        return
    report_dir = _write(out, out / "report")
    console.print(f"report: {report_dir}")

