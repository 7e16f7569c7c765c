"""Provenance: which code, versions and hardware made a row.

The driver records what the code is (git sha, dirty flag); the worker records where it ran
(versions, device, threads), since only the worker knows which device and libraries it loaded.
"""

from __future__ import annotations

import datetime as dt
import functools
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from seqbench import __version__
from seqbench.backends import version

SOURCE_ROOT = Path(__file__).resolve().parent.parent


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


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def runtime_provenance(device: str) -> dict[str, Any]:
    """Versions and hardware, as seen from the process that runs the job."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "seqbench_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "cudnn_version": str(cudnn) if cudnn else "",
        "mamba_ssm_version": version("mamba-ssm"),
        "device": device.split(":")[0],
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def interpreter() -> str:
    return sys.executable
