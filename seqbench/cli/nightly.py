"""``seqbench nightly``: test gate, nightly spec, comparison with the previous night on the same
device, report, history (see
:mod:`seqbench.execution.nightly` for the steps, exit codes and cron/systemd
examples)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from seqbench.cli.compare import check_args as check_compare_args
from seqbench.cli.run import add_spawn_argument
from seqbench.errors import SpecError
from seqbench.execution import nightly as nt
from seqbench.recording.schema import Row
from seqbench.results import compare as cmp


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default=nt.DEFAULT_SPEC,
                   help=f"a spec file or shipped spec name (default: {nt.DEFAULT_SPEC})")
    p.add_argument("--reproductions", default=",".join(nt.REPRODUCTIONS),
                   help="comma-separated reproduction specs run and checked after the nightly "
                        "spec (default: the shipped CPU-scale ones); 'none' skips them")
    p.add_argument("--history", default=str(nt.DEFAULT_HISTORY),
                   help=f"history directory (default: {nt.DEFAULT_HISTORY})")
    p.add_argument("--skip-gate", action="store_true",
                   help="do not run the test suite first (for testing the nightly itself)")
    p.add_argument("--gate-args", default="",
                   help="extra pytest arguments for the gate, one string (e.g. '-x -k compare')")
    p.add_argument("--no-report", action="store_true", help="skip the report (figures, tables)")
    p.add_argument("--asv", action="store_true",
                   help="after publishing, asv run for this commit and asv publish")
    p.add_argument("--workers", type=int, default=1,
                   help="jobs run at once (default 1: parallel jobs disturb each other's timings)")
    add_spawn_argument(p)
    p.add_argument("--threshold", type=float, default=cmp.THRESHOLD,
                   help=f"speed/memory ratio that counts as a change (default {cmp.THRESHOLD})")
    p.add_argument("--alpha", type=float, default=cmp.ALPHA,
                   help=f"Mann-Whitney significance level (default {cmp.ALPHA})")
    p.add_argument("--metric-atol", type=float, default=cmp.METRIC_ATOL,
                   help=f"absolute tolerance of task metrics (default {cmp.METRIC_ATOL})")
    p.add_argument("--metric-rtol", type=float, default=cmp.METRIC_RTOL,
                   help=f"relative tolerance of task metrics (default {cmp.METRIC_RTOL})")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from seqbench.cli.progress import row_line
    from seqbench.cli.run import local_executor
    from seqbench.config.load import load_suite
    from seqbench.execution.sweep import require_kind

    check_compare_args(args)
    if args.workers < 1:
        raise SpecError("--workers", args.workers, "must be a positive integer")
    suite, path = load_suite(args.spec)
    require_kind(suite, str(path), "train", "seqbench nightly")
    reproductions = []
    names = [n.strip() for n in args.reproductions.split(",") if n.strip()]
    if names != ["none"]:
        if not names or "none" in names:
            raise SpecError("--reproductions", args.reproductions,
                            "comma-separated spec names or files, or 'none'")
        for name in names:
            repro, repro_path = load_suite(name)
            require_kind(repro, str(repro_path), "train", "seqbench nightly --reproductions")
            reproductions.append((repro, str(repro_path)))
    console = Console()

    def on_row(row: Row) -> None:
        console.print(row_line(row))

    gate = None if args.skip_gate else nt.gate_command(shlex.split(args.gate_args))
    executor = local_executor(args, args.workers)
    night = nt.nightly(suite, str(path), Path(args.history), executor=executor,
                       gate=gate, report=not args.no_report, asv=args.asv,
                       say=console.print, on_row=on_row, reproductions=reproductions,
                       compare_options={"threshold": args.threshold, "alpha": args.alpha,
                                        "metric_atol": args.metric_atol,
                                        "metric_rtol": args.metric_rtol})
    if night.comparison is not None and night.comparison.matched:
        cmp.print_table(night.comparison, console)
    entry = night.entry
    history = Path(args.history)
    if entry.get("report"):
        console.print(f"report: {history / entry['report']}")
    console.print(f"history: {history / nt.INDEX_MD} ({entry.get('status')}, "
                  f"exit {night.exit_code})")
    return night.exit_code
