"""``seqbench run [SPEC]``: validate a spec, run its sweep, record rows, print a summary."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqbench.config.overrides import Overrides
from seqbench.errors import SpecError
from seqbench.execution.base import exit_code_of
from seqbench.execution.local import LocalExecutor


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
    p.add_argument("--dry-run", action="store_true",
                   help="list the jobs (marking those already recorded) and exit")
    p.add_argument("--no-report", action="store_true",
                   help="skip the report (figures, tables) written after the sweep")
    add_override_arguments(p)


def add_override_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="set",
                   help="change one spec setting, validated like the YAML (repeatable), e.g. "
                        "--set train.steps=50 --set models.lstm.params.d_model=32")
    p.add_argument("--models", default=None, metavar="A,B",
                   help="run only these models of the spec")
    p.add_argument("--tasks", default=None, metavar="A,B", help="run only these tasks of the spec")
    p.add_argument("--seeds", default=None, metavar="0,1", help="run these seeds instead")


def overrides_of(args: argparse.Namespace) -> Overrides:
    return Overrides.from_flags(args.set, args.models, args.tasks, args.seeds)


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
    from seqbench.cli.progress import RichProgress, console, print_jobs, print_summary
    from seqbench.cli.run_search import main as search_main
    from seqbench.config.load import load_suite
    from seqbench.execution.sweep import plan, require_kind, run_sweep

    out_console = console()
    check_args(args)
    from seqbench.worker.data.paths import use_data_dir

    use_data_dir(args.data_dir)  # exported to workers; never part of a config hash
    overrides = overrides_of(args)
    suite, path = load_suite(args.spec, overrides)
    require_kind(suite, str(path), "train", "seqbench run")
    out = Path(args.out) if args.out else Path("results") / suite.name
    if suite.search is not None:  # trials on validation, then the chosen ones on test
        return search_main(args, suite, path, out, overrides, out_console, make_executor,
                           interrupted_line)
    sweep = plan(suite, str(path), out, overrides, retry=args.retry)
    if args.timeout is not None:  # timeout_s stays out of config hashes: same job ids
        sweep.jobs = [job.with_timeout(args.timeout) for job in sweep.jobs]
    if args.dry_run:
        print_jobs(out_console, sweep, f"{len(sweep.jobs)} jobs")
        return 0
    executor = make_executor(args, suite.workers)  # before writing: a missing Ray is bad input
    progress = RichProgress(out_console, header=f"seqbench ({executor.name} executor)")
    try:
        run_sweep(sweep, executor, progress)
    except KeyboardInterrupt as exc:
        print(interrupted_line(sweep, exc), file=sys.stderr)
        return exit_code_of(exc)
    print_summary(out, out_console)
    if not args.no_report:
        write_report(out, out_console)
    out_console.print(f"results: {out / 'results.jsonl'} (one file per job in {out / 'jobs'})")
    return 0


def interrupted_line(sweep: Any, exc: BaseException) -> str:
    """What an interrupted sweep says, in one line: the signal, what is recorded, how to go on."""
    from seqbench.execution.base import signal_of

    stopped = sum(r.status == "interrupted" for r in sweep.written)
    finished = len(sweep.written) - stopped
    return (f"seqbench: interrupted ({signal_of(exc)}); {finished} job(s) finished and "
            f"{stopped} stopped (recorded as interrupted) in {sweep.out}, "
            f"{len(sweep.recorded)} recorded before; rerun the same command to resume")


def write_report(out: Path, console: Any) -> None:
    from seqbench.results.report import write_report as _write

    report_dir = _write(out, out / "report")
    console.print(f"report: {report_dir}")
