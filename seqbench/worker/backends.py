"""Which kernel backends are importable here, and why not when they are not.

Probing imports a module in a try block and keeps the error text, so a missing backend becomes
an ``unavailable`` row (with the reason) and a line in ``seqbench env``, never a crash.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata

import torch

# backend name -> module to import
OPTIONAL_MODULES = {
    "mamba_ssm": "mamba_ssm",
    "causal_conv1d": "causal_conv1d",
    "triton": "triton",
    "mambapy": "mambapy",
    "fla": "fla",  # flash-linear-attention: GLA's Triton kernels
}


@functools.cache
def import_error(module: str) -> str | None:
    """None if ``module`` imports, else the one-line error (``ModuleNotFoundError: ...``)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken backend can raise anything at import time
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def version(dist: str) -> str:
    """Installed distribution version, '' if not installed (does not import it)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def cuda_status() -> str | None:
    """None if a CUDA device is usable, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def probe() -> dict[str, str | None]:
    """Backend name -> None if usable here, else the reason it is not."""
    status: dict[str, str | None] = {"cuda": cuda_status()}
    status["cudnn"] = None if torch.backends.cudnn.is_available() else "cuDNN not available"
    for name, module in OPTIONAL_MODULES.items():
        status[name] = import_error(module)
    from seqbench.worker.models.ops import native  # builds the fused CPU kernels if not cached

    status["cpu_kernels"] = native.unavailable_reason()
    return status
