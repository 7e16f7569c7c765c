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


def gpu_name() -> str:
    """The first NVIDIA GPU's model from the driver's /proc files ('' when none is visible),
    read without CUDA: the driver side never initialises a device."""
    root = Path("/proc/driver/nvidia/gpus")
    try:
        for info in sorted(root.glob("*/information")):
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def package_version(dist: str) -> str:
    """Installed distribution version, '' if not installed (does not import it)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


@functools.cache
def host_provenance(device: str) -> dict[str, Any]:
    """Provenance of a row the driver writes itself (a job that timed out, was killed, skipped
    or interrupted): versions from package metadata and the host, without importing torch.
    CUDA and cuDNN versions are known only in a worker; rows from workers carry them."""
    import socket

    from seqbench import __version__

    kind = device.split(":")[0]
    return {
        "seqbench_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": package_version("torch"),
        "cuda_version": "",
        "cudnn_version": "",
        "mamba_ssm_version": package_version("mamba-ssm"),
        "device": kind,
        "device_name": (gpu_name() or "unknown GPU") if kind == "cuda" else cpu_name(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }
