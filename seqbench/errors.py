"""Errors that seqbench reports to users as one clear line (CLI exit code 2).

Bad input never produces a traceback: a :class:`SpecError` names the field, the value and what
is allowed, and the CLI prints ``seqbench: error: <message>`` and exits with status 2.
"""

from __future__ import annotations

from typing import Any


def _printable(text: str) -> str:
    """Escape control characters (a YAML key may hold a newline): the message stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


class SeqbenchError(Exception):
    """Base class for errors that the CLI turns into a one-line message."""

    exit_code = 2


class SpecError(SeqbenchError, ValueError):
    """Invalid user input: a spec field, a CLI flag, a data file or a results directory."""

    def __init__(self, field: str, value: Any, allowed: str, *, source: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f"{_printable(source)}: " if source else ""
        field = _printable(field)
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"{where}{field}: got {shown}; {_printable(allowed)}")


class UnknownNameError(SpecError, KeyError):
    """A registry lookup for a name that does not exist; the message lists what exists."""

    def __init__(self, kind: str, name: Any, known: list[str]) -> None:
        SpecError.__init__(self, kind, name, f"known {kind}s: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class BackendUnavailable(SeqbenchError, RuntimeError):
    """A kernel backend (CUDA, mamba_ssm, ...) a model needs is not importable here."""
