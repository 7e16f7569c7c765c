"""``seqbench run`` of a spec with a ``search`` block: the trials on the validation split, the
choice per model (or suite) and setting, and the final runs on the test split, through the
search orchestrator (:func:`seqbench.execution.search.execute_search`).

Rerunning the same command resumes: recorded trials and final runs are not run again, and the
choice is recomputed from the stored trial rows. Ctrl-C (or SIGTERM) stops the running sweep;
the trials and final runs recorded so far stay, the running ones are recorded as
``interrupted`` and run again on the next run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqbench.config.overrides import Overrides
from seqbench.config.spec import Suite
from seqbench.execution.base import exit_code_of


def main(args: argparse.Namespace, suite: Suite, path: Path, out: Path, overrides: Overrides,
         console: Any, make_executor: Callable[..., Any],
         interrupted_line: Callable[[Any, BaseException], str]) -> int:
    """Run (or, with ``--dry-run``, list) the search; ``make_executor`` and
    ``interrupted_line`` are :mod:`seqbench.cli.run`'s, so both paths use the same flags and
    say an interruption alike."""
    from seqbench.cli.progress import RichProgress, print_jobs
    from seqbench.config.search import describe_choice
    from seqbench.execution.search import SEARCH_FILE, execute_search, plan_search

    run = plan_search(suite, str(path), out, overrides, retry=args.retry, timeout=args.timeout)
    if args.dry_run:
        print_jobs(console, run.trials, f"{len(run.trials.jobs)} trial jobs (the final runs "
                   f"on {len(suite.seeds)} seed(s) follow from the trials' rows)")
        return 0
    executor = make_executor(args, suite.workers)
    progress = RichProgress(console, header=f"seqbench search ({executor.name} executor)")
    try:
        execute_search(run, executor, progress)
    except KeyboardInterrupt as exc:
        where = "final runs" if run.final is not None else "trials"
        print(f"{interrupted_line(run.current, exc)} (during the search's {where})",
              file=sys.stderr)
        return exit_code_of(exc)
    for choice in run.choices:
        who = choice.model or "every model"
        console.print(f"{choice.task} L={choice.seq_len} {who}: "
                      f"{describe_choice(choice, len(suite.seeds))}")
    if not args.no_report:
        from seqbench.results.report import write_report

        console.print(f"report: {write_report(out, out / 'report')}")
    console.print(f"results: {out / 'results.jsonl'}; the search: {out / SEARCH_FILE}")
    return 0
