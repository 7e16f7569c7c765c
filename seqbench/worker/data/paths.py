"""Where local datasets live: an explicit ``--data-dir`` flag, else the ``SEQBENCH_DATA_DIR``
environment variable, else ``$XDG_DATA_HOME/seqbench`` (``~/.local/share/seqbench`` when
``XDG_DATA_HOME`` is unset).

The directory never enters a job's config hash: the same dataset checked into two places gives
the same results. ``seqbench run --data-dir DIR`` resolves the directory once in the driver and
exports it to the workers through the environment variable (:func:`use_data_dir`), so a worker
sees exactly the directory the driver checked. Nothing here downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SEQBENCH_DATA_DIR"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/seqbench``, or ``~/.local/share/seqbench`` (the XDG default)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "seqbench"


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``explicit`` > ``$SEQBENCH_DATA_DIR`` > :func:`default_data_dir`.

    The result is absolute (``~`` expanded) so that workers started elsewhere agree on it. It
    need not exist: a missing dataset is reported by the task that needs it, with this path.
    """
    chosen = explicit if explicit not in (None, "") else os.environ.get(ENV_VAR) or None
    path = Path(chosen).expanduser() if chosen is not None else default_data_dir()
    return path.resolve()


def use_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory and export it in ``$SEQBENCH_DATA_DIR`` for worker processes."""
    path = resolve_data_dir(explicit)
    os.environ[ENV_VAR] = str(path)
    return path


def source_of(explicit: str | os.PathLike[str] | None = None) -> str:
    """Which rule chose the directory (for ``seqbench data`` output)."""
    if explicit not in (None, ""):
        return "--data-dir"
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}"
    return "default"
