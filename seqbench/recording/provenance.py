"""Provenance that the driver knows without torch: which code made a row (git sha, dirty flag),
the host and the CPU, and the time.

Where a job ran (torch, CUDA and cuDNN versions, the device, threads) is known only inside the
worker: :mod:`seqbench.worker.provenance`.
"""

from __future__ import annotations

import datetime as dt
import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding seqbench/


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def code_provenance() -> dict[str, Any]:
    """git sha and dirty flag of the seqbench checkout ('' and False when not a checkout).

    Dirty means tracked source files differ from the commit; written results are not code, so
    changes under results/ do not count.
    """
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return {"git_sha": "", "git_dirty": False}
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"git_sha": sha, "git_dirty": bool(status)}


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
