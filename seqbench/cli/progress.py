"""How a sweep looks in the terminal: a header, one line per finished job, a progress bar, and
the summary table afterwards. Shared by ``run``, ``scale`` and ``nightly``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from seqbench.execution.sweep import Sweep
from seqbench.recording.schema import Row


def console(width_if_not_a_terminal: int = 140) -> Any:
    """A rich console; a log file or a pipe gets wide tables, not ones squeezed to 80."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else width_if_not_a_terminal)


def shorten(text: str, limit: int = 160) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (with an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def row_line(row: Row) -> str:
    """One finished job: what it was, its status, its time, and why when it is not ok."""
    status = row.status if row.status == "ok" else f"[red]{row.status}[/]"
    kind = "" if row.kind == "train" else f"{row.kind} "
    head = f"  {kind}{row.task} L={row.seq_len} {row.model} seed={row.seed}: {status}"
    wall = row.wall_s if row.wall_s is not None else float("nan")
    tail = f" ({wall:.1f} s)"
    if row.status != "ok" and row.error:
        from rich.markup import escape

        tail += f" {escape(shorten(row.error))}"
    return head + tail


class RichProgress:
    """A :class:`~seqbench.execution.sweep.Progress` on a rich console."""

    def __init__(self, console: Any, header: str = "seqbench",
                 describe: Callable[[Row], str] | None = None) -> None:
        self.console = console
        self.header = header
        self.describe = describe or row_line
        self._progress: Any = None
        self._bar: Any = None

    def start(self, sweep: Sweep) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        for note in sweep.notes:
            self.console.print(f"note: {note}")
        n = len(sweep.jobs)
        self.console.print(
            f"{self.header}: suite [bold]{sweep.suite.name}[/] ({sweep.source}), {n} jobs, "
            f"{n - len(sweep.todo)} already recorded, {len(sweep.todo)} to run -> {sweep.out}")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._progress.start()
        self._bar = self._progress.add_task("jobs", total=len(sweep.todo))

    def row(self, row: Row) -> None:
        if self._progress is None:
            return
        self._progress.advance(self._bar)
        self._progress.console.print(self.describe(row))

    def finish(self, sweep: Sweep) -> None:
        if self._progress is not None:
            self._progress.stop()
        state = "interrupted after" if sweep.interrupted else "done in"
        self.console.print(f"{state} {sweep.seconds:.0f} s ({len(sweep.written)} rows written)")


def print_jobs(console: Any, sweep: Sweep, footer: str) -> None:
    """One line per job (``--dry-run``), marking the ones already recorded, then ``footer``."""
    for job in sweep.jobs:
        status = sweep.recorded.get(job.job_id)
        mark = f"  [recorded: {status}]" if status else ""
        console.print(f"{job.job_id}  {job.describe()}{mark}")
    console.print(f"{footer}; {len(sweep.jobs) - len(sweep.todo)} already recorded, "
                  f"{len(sweep.todo)} to run")


def print_summary(root: Any, console: Any) -> None:
    """Model x length: primary metric (mean ± CI over seeds), tokens/s, peak memory, status."""
    from rich.table import Table

    from seqbench.results import load, summary_table

    table = summary_table(load(root, warn=False))
    if table.empty:
        return
    rich_table = Table(title=f"summary ({root})")
    for column in table.columns:
        rich_table.add_column(str(column))
    for _, r in table.iterrows():
        rich_table.add_row(*(str(v) for v in r))
    console.print(rich_table)
