"""The executor contract, and how a sweep is stopped from outside.

An executor runs jobs, each in a fresh worker process, and calls ``on_row(row)`` once per job,
in the driver's thread, as soon as that job is finished, so a driver killed mid-sweep has
recorded every finished job. When the driver is interrupted (Ctrl-C, SIGTERM) an executor
stops its running jobs at once, hands back an ``interrupted`` row for each (a rerun runs them
again), leaves no worker process or temporary folder behind, and re-raises.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

from seqbench.config.job import Job
from seqbench.recording.rows import RunContext
from seqbench.recording.schema import Row

OnRow = Callable[[Row], None]


class Executor(Protocol):
    name: str

    def run(self, jobs: Iterable[Job], context: RunContext, on_row: OnRow) -> None:
        """Run every job; ``on_row`` once per job (see the module docstring)."""


class Interrupted(KeyboardInterrupt):
    """The driver was asked to stop (SIGINT or SIGTERM); ``signal_name`` says which."""

    def __init__(self, signal_name: str = "SIGINT") -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


_received: list[str] = []  # the signals stop_on_sigterm turned into Interrupted, last last


def signal_of(exc: BaseException) -> str:
    """The signal that stopped the driver: the one an :class:`Interrupted` names, or SIGTERM
    when one arrived (a library may re-raise it as a plain KeyboardInterrupt, as Ray does),
    else SIGINT (Ctrl-C)."""
    if isinstance(exc, Interrupted):
        return exc.signal_name
    return _received[-1] if _received else "SIGINT"


def exit_code_of(exc: BaseException) -> int:
    """The shell's exit status for a process stopped by that signal: 128 + its number."""
    return 128 + int(getattr(signal, signal_of(exc)))


def interrupted_text(exc: BaseException) -> str:
    """The error text of a job stopped because the driver was interrupted by ``exc`` (or,
    for any other exception, because the driver failed)."""
    if not isinstance(exc, KeyboardInterrupt):
        return (f"stopped when the driver failed ({type(exc).__name__}) before the job "
                "finished; a rerun runs it again")
    return f"interrupted ({signal_of(exc)}) before the job finished; a rerun runs it again"


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`Interrupted` in the main thread for the duration, so it stops
    a sweep exactly as Ctrl-C does (the previous handler is restored afterwards)."""

    def handler(signum: int, frame: object) -> None:
        _received.append("SIGTERM")
        raise Interrupted("SIGTERM")

    _received.clear()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
