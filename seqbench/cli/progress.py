"""How a sweep looks in the terminal: a header, one line per finished job (with the reason when
it is not ok), a progress bar whose ETA comes from the measured time of finished jobs of the
same kind, and the summary table afterwards, fitted to the terminal's width. Shared by ``run``,
``scale`` and ``nightly``."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seqbench.execution.sweep import Sweep
from seqbench.recording.schema import UNFINISHED, Row
from seqbench.results.text import shorten

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["EtaEstimator", "RichProgress", "console", "fit_summary", "print_jobs",
           "print_summary", "row_line", "shorten"]

NOT_TIMED = frozenset({"skipped", "unavailable", "interrupted"})  # no time worth learning from


def console(width_if_not_a_terminal: int = 140) -> Any:
    """A rich console; a log file or a pipe gets wide tables, not ones squeezed to 80."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else width_if_not_a_terminal)


def row_line(row: Row, limit: int = 160) -> str:
    """One finished job: what it was, its status, its time, and why when it is not ok (the
    reason shortened on word boundaries to ``limit`` characters)."""
    from rich.markup import escape

    status = row.status if row.status == "ok" else f"[red]{row.status}[/]"
    kind = "" if row.kind == "train" else f"{row.kind} "
    head = f"  {escape(f'{kind}{row.task} L={row.seq_len} {row.model} seed={row.seed}')}: {status}"
    wall = row.wall_s if row.wall_s is not None else float("nan")
    tail = f" ({wall:.1f} s)"
    if row.status != "ok":
        reason = shorten(row.error, limit) if row.error else "no reason recorded"
        tail += f" {escape(reason)}"
    return head + tail


# --- ETA ---------------------------------------------------------------------------------------
JobKey = tuple[str, str, int]  # (kind, model, seq_len)


@dataclass
class EtaEstimator:
    """The time left in a sweep, from the measured times of finished jobs of the same kind.

    Each pending job is estimated by the mean time of finished jobs with the same kind, model
    and length if any finished, else the same kind and model, else the same kind, else all
    finished jobs; the sum is divided by the parallelism: ``workers`` until 3 jobs finished,
    then the observed one (busy job-seconds over elapsed wall seconds, at most ``workers``).
    """

    workers: int = 1
    _times: dict[tuple, list[float]] = field(default_factory=dict)
    busy_s: float = 0.0
    finished: int = 0

    def add(self, key: JobKey, seconds: float) -> None:
        """A finished job of ``key`` = (kind, model, seq_len) that took ``seconds``."""
        if not seconds >= 0:  # NaN or negative: nothing learned
            return
        kind, model, seq_len = key
        for k in ((kind, model, seq_len), (kind, model), (kind,), ()):
            self._times.setdefault(k, []).append(float(seconds))
        self.busy_s += float(seconds)
        self.finished += 1

    def estimate(self, key: JobKey) -> float | None:
        """The expected seconds of one job of ``key`` (None before any job finished)."""
        kind, model, seq_len = key
        for k in ((kind, model, seq_len), (kind, model), (kind,), ()):
            if self._times.get(k):
                return sum(self._times[k]) / len(self._times[k])
        return None

    def parallelism(self, elapsed_s: float) -> float:
        if self.finished < 3 or not elapsed_s > 0:
            return float(self.workers)
        return max(1.0, min(float(self.workers), self.busy_s / elapsed_s))

    def remaining(self, pending: Iterable[JobKey], elapsed_s: float = 0.0) -> float | None:
        """Seconds until the ``pending`` jobs are done (None before any job finished)."""
        estimates = [self.estimate(k) for k in pending]
        if any(e is None for e in estimates):
            return None
        return sum(e for e in estimates if e is not None) / self.parallelism(elapsed_s)


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def job_key(job: Any) -> JobKey:
    return (str(job.kind), str(job.model.name), int(job.task.seq_len))


def row_seconds(row: Row) -> float:
    """What a finished job cost the sweep: the worker process's wall time as the driver saw it
    (spawn to exit), else the in-process wall time."""
    worker = getattr(row, "worker_wall_s", None)
    return float(worker) if worker is not None else float(row.wall_s or 0.0)


class RichProgress:
    """A :class:`~seqbench.execution.sweep.Progress` on a rich console."""

    def __init__(self, console: Any, header: str = "seqbench",
                 describe: Callable[[Row], str] | None = None) -> None:
        self.console = console
        self.header = header
        self.describe = describe or row_line
        self._progress: Any = None
        self._bar: Any = None
        self._eta = EtaEstimator()
        self._pending: dict[str, JobKey] = {}
        self._started = 0.0

    def start(self, sweep: Sweep) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        for note in sweep.notes:
            self.console.print(f"note: {note}")
        n = len(sweep.jobs)
        self.console.print(
            f"{self.header}: suite [bold]{sweep.suite.name}[/] ({sweep.source}), {n} jobs, "
            f"{n - len(sweep.todo)} already recorded, {len(sweep.todo)} to run -> {sweep.out}")
        self._eta = EtaEstimator(workers=max(1, int(getattr(sweep.suite, "workers", 1) or 1)))
        self._pending = {j.job_id: job_key(j) for j in sweep.todo}
        self._started = time.perf_counter()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"))
        self._progress = Progress(*columns, console=self.console, transient=False)
        self._progress.start()
        self._bar = self._progress.add_task("jobs", total=len(sweep.todo), eta="?")

    def row(self, row: Row) -> None:
        if self._progress is None:
            return
        key = self._pending.pop(row.job_id, None)
        if key is not None and row.status not in NOT_TIMED:
            self._eta.add(key, row_seconds(row))
        left = self._eta.remaining(self._pending.values(), time.perf_counter() - self._started)
        self._progress.update(self._bar, advance=1, eta=eta_text(left if self._pending else 0))
        self._progress.console.print(self.describe(row))

    def finish(self, sweep: Sweep) -> None:
        if self._progress is not None:
            self._progress.stop()
        state = "interrupted after" if sweep.interrupted else "done in"
        recorded = len(finished_jobs(sweep))
        left = ""
        if sweep.interrupted or recorded < len(sweep.jobs):
            left = (f"; INCOMPLETE: {recorded} of {len(sweep.jobs)} jobs recorded, rerun the "
                    "same command to finish")
        self.console.print(f"{state} {sweep.seconds:.0f} s ({len(sweep.written)} rows "
                           f"written{left})")


def finished_jobs(sweep: Sweep) -> set[str]:
    """The sweep's jobs that have a finished row (any status but interrupted), before or in
    this run."""
    done = {j for j, status in sweep.recorded.items() if status not in UNFINISHED}
    for row in sweep.written:
        (done.discard if row.status in UNFINISHED else done.add)(row.job_id)
    return done & sweep.job_ids


def print_jobs(console: Any, sweep: Sweep, footer: str) -> None:
    """One line per job (``--dry-run``), marking the ones already recorded, then ``footer``."""
    for job in sweep.jobs:
        status = sweep.recorded.get(job.job_id)
        mark = f"  [recorded: {status}]" if status else ""
        console.print(f"{job.job_id}  {job.describe()}{mark}")
    console.print(f"{footer}; {len(sweep.jobs) - len(sweep.todo)} already recorded, "
                  f"{len(sweep.todo)} to run")


# --- the summary table, fitted to the terminal ---------------------------------------------------
SHORT_HEADERS = {"train tokens/s": "tok/s", "peak memory (MiB)": "MiB", "seq_len": "L",
                 "train step (ms)": "step ms", "fwd (ms)": "fwd ms", "status": "status"}
# columns dropped, in this order, while the table is too wide (never model, length, value)
DROP_ORDER = ("metric", "fwd (ms)", "peak memory (MiB)", "train tokens/s", "train step (ms)",
              "kind", "run", "status", "task")
KEEP = ("model", "seq_len", "value")


def _rich_table(table: pd.DataFrame, title: str, short: bool) -> Any:
    from rich import box
    from rich.table import Table

    numeric = {"seq_len", "value", *SHORT_HEADERS, "state", "step (ms)"} - {"status"}
    out = Table(title=title, box=box.SIMPLE_HEAD if short else box.HEAVY_HEAD,
                pad_edge=not short, show_edge=not short, title_justify="left")
    for column in table.columns:
        header = SHORT_HEADERS.get(column, column) if short else column
        out.add_column(header, justify="right" if column in numeric else "left",
                       no_wrap=True)
    for _, r in table.iterrows():
        out.add_row(*(str(v) for v in r))
    return out


def _width(renderable: Any) -> int:
    from rich.console import Console

    probe = Console(width=10_000, file=io.StringIO(), color_system=None, record=False)
    lines = probe.render_lines(renderable, probe.options, pad=False)
    return max((sum(len(seg.text) for seg in line) for line in lines), default=0)


def fit_summary(table: pd.DataFrame, width: int, title: str) -> tuple[Any, list[str]]:
    """A rich table of ``table`` at most ``width`` columns wide, and what was left out: first
    compact borders and short headers, then columns dropped in :data:`DROP_ORDER` (the metric's
    name moves to a line of its own). Cells are never cut; when even model, length and value do
    not fit, None and the notes (print the rows as lines instead)."""
    dropped: list[str] = []
    current = table
    for short in (False, True):
        candidate = _rich_table(current, title, short)
        if _width(candidate) <= width:
            return candidate, dropped
    for column in DROP_ORDER:
        if column not in current.columns:
            continue
        current = current.drop(columns=column)
        dropped.append(column)
        candidate = _rich_table(current, title, True)
        if _width(candidate) <= width:
            return candidate, dropped
    return None, dropped


def print_summary(root: Any, console: Any) -> None:
    """Model x length: primary metric (mean ± CI over seeds, or the mean below 3 seeds),
    measurements, status; fitted to the console's width; then the interval method and, for a
    run that recorded fewer jobs than its spec holds, that it is incomplete."""
    from rich.markup import escape

    from seqbench.results import load, summary_table
    from seqbench.results.completeness import completeness
    from seqbench.results.load import run_name, suite_info

    df = load(root, warn=False)
    table = summary_table(df)
    if not table.empty:
        fitted, dropped = fit_summary(table, int(console.width), f"summary ({root})")
        if fitted is not None:
            console.print(fitted)
        else:  # too narrow for any table: one line per cell, nothing cut
            for _, r in table.iterrows():
                console.print(escape("  " + ", ".join(f"{c}={v}" for c, v in r.items())))
        if "metric" in dropped:
            metrics = dict.fromkeys(f"{t}: {m}" for t, m in zip(table["task"], table["metric"],
                                                                strict=True))
            console.print("value: " + escape("; ".join(metrics)))
        shown = [c for c in dropped if c != "metric"]
        if shown:
            console.print(f"[dim](left out to fit {console.width} columns: "
                          f"{escape(', '.join(shown))}; the report has them)[/]")
        console.print(f"[dim]{escape(table.attrs.get('note', ''))}[/]")
    suite = suite_info(root)
    if suite and isinstance(suite.get("spec"), dict):
        found = completeness(df, suite["spec"], run_name(root))
        if found is not None and not found.complete:
            console.print(f"[bold yellow]{escape(found.text())}[/]")
