"""Provenance known only where the job runs: versions of the libraries the worker loaded, the
device and its name, and the thread count."""

from __future__ import annotations

import platform
import socket
from typing import Any

import torch

from seqbench import __version__
from seqbench.recording.provenance import cpu_name
from seqbench.worker.backends import version


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
