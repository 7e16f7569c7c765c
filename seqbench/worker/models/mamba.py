"""Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"):
the selective SSM block of ``mamba_ssm/modules/mamba_simple.py``::

    x, z = in_proj(u)                       (B, L, E) each, E = expand * d_model
    x = silu(causal depthwise conv(x))      kernel d_conv
    dt, B, C = x_proj(x)                    input-dependent step (rank R), B, C: (B, L, N)
    delta = softplus(dt_proj(dt))           (B, L, E)
    y = selective_scan(x, delta, A, B, C) + D * x,   A = -exp(A_log): (E, N)
    out = out_proj(y * silu(z))

Three paths compute the same function (parameter names match mamba-ssm's, so weights load);
``kernel_path`` records which one ran:

- ``mamba_ssm-cuda``: mamba-ssm's fused CUDA selective scan (``selective_scan_fn``), used on a
  CUDA device when the compiled extension imports;
- ``cpu-fused-scan``: seqbench's fused C++ kernels on CPU
  (:func:`~seqbench.worker.models.ops.selective_scan_fused` with the D skip and the gate inside,
  after :func:`~seqbench.worker.models.ops.causal_conv_fused` with the silu inside): no
  per-step state is stored, the backward recomputes it chunk by chunk;
- ``torch-chunked-scan``: seqbench's pure-PyTorch chunked scan
  (:func:`~seqbench.worker.models.ops.selective_scan`), the reference of the fused one, on CPU
  when the C++ kernels cannot be built here and on CUDA without mamba-ssm.

``backend: auto`` takes the first that can run; ``backend: mamba_ssm`` insists on the kernels
and makes the row ``unavailable`` (with the import error) where they cannot run; ``backend:
torch`` always takes seqbench's paths. mamba-ssm is imported lazily, never at module import.
Within seqbench's paths ``scan: auto`` takes the fused kernel on CPU when it is available,
``scan: fused`` insists on it (``unavailable`` with the build error otherwise) and ``scan:
chunked`` pins the PyTorch scan.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.errors import BackendUnavailable
from seqbench.worker.backends import import_error
from seqbench.worker.models.base import Mixer
from seqbench.worker.models.ops import (
    causal_conv,
    causal_conv_fused,
    causal_conv_step,
    native,
    selective_scan,
    selective_scan_fused,
    selective_scan_step,
)

Backend = Literal["auto", "mamba_ssm", "torch"]
BACKENDS = ("auto", "mamba_ssm", "torch")
Scan = Literal["auto", "fused", "chunked"]
SCANS = ("auto", "fused", "chunked")
SCAN_MODULE = "mamba_ssm.ops.selective_scan_interface"  # imports the compiled selective_scan_cuda


def mamba_ssm_reason(module: str, device: torch.device) -> str | None:
    """None if mamba-ssm's ``module`` can run on ``device``, else why not."""
    reasons = []
    if device.type != "cuda":
        reasons.append(f"mamba_ssm kernels need a CUDA device (device is {device.type})")
    error = import_error(module)
    if error is not None:
        reasons.append(f"import {module} failed: {error}")
    return "; ".join(reasons) or None


def resolve_backend(backend: str, module: str, device: torch.device) -> tuple[str, str | None]:
    """(backend that runs, reason it cannot) for a config's ``backend`` on ``device``.

    ``auto`` never fails: it falls back to the torch path. On CPU it does not even try to import
    mamba-ssm (its kernels need CUDA), which keeps CPU runs free of its import cost.
    """
    if backend == "torch":
        return "torch", None
    if backend == "auto":
        if device.type != "cuda":
            return "torch", None
        return ("torch", None) if mamba_ssm_reason(module, device) else ("mamba_ssm", None)
    return "mamba_ssm", mamba_ssm_reason(module, device)


def resolve_scan(scan: str, device: torch.device) -> tuple[bool, str | None]:
    """(run seqbench's fused CPU kernels, reason they cannot) for a config's ``scan``.

    ``auto`` never fails: without the kernels (not on CPU, no compiler, a failed build) it
    takes the PyTorch path. ``fused`` reports why the kernels cannot run; ``chunked`` never
    asks.
    """
    if scan == "chunked":
        return False, None
    reason = native.unavailable_reason()
    if device.type != "cpu":
        reason = f"the fused scan runs on CPU (device is {device.type})"
    if scan == "auto":
        return reason is None, None
    return True, None if reason is None else f"scan: fused: {reason}"


@contextlib.contextmanager
def kernel_failures_unavailable(what: str) -> Iterator[None]:
    """Turn a mamba-ssm kernel that imports but cannot run this configuration (a Triton
    compile error, an unsupported GPU or shape) into :class:`BackendUnavailable`; out-of-memory
    stays what it is."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:
        raise BackendUnavailable(f"{what} failed on this configuration: "
                                 f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc


def init_dt_bias(n: int, dt_min: float, dt_max: float, floor: float) -> torch.Tensor:
    """Bias whose softplus is a step size log-uniform in [dt_min, dt_max] (mamba-ssm's init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


@dataclass
class MambaConfig:
    d_state: int = 16  # N
    d_conv: int = 4  # width of the causal depthwise convolution
    expand: int = 2  # E = expand * d_model
    dt_rank: int | str = "auto"  # rank R of the step projection; auto = ceil(d_model / 16)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj biases
    chunk: int = 0  # chunked scan: steps per chunk; 0 = about sqrt(L)
    backend: Backend = "auto"  # auto | mamba_ssm | torch
    scan: Scan = "auto"  # seqbench's paths: auto | fused (C++, CPU) | chunked (PyTorch)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}")
        if min(self.d_state, self.d_conv, self.expand) < 1 or self.chunk < 0:
            raise ValueError("d_state, d_conv, expand must be positive and chunk >= 0")
        if self.dt_rank != "auto" and (isinstance(self.dt_rank, bool)
                                       or not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise ValueError("dt_rank must be 'auto' or a positive integer")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError("need 0 < dt_min <= dt_max")


class Mamba(Mixer):
    Config = MambaConfig
    supports_step: ClassVar[bool] = True

    def __init__(self, d_model: int, config: MambaConfig) -> None:
        super().__init__(d_model, config)
        E, N = config.expand * d_model, config.d_state
        R = math.ceil(d_model / 16) if config.dt_rank == "auto" else int(config.dt_rank)
        self.d_inner, self.dt_rank = E, R
        self.in_proj = nn.Linear(d_model, 2 * E, bias=config.bias)
        self.conv1d = nn.Conv1d(E, E, config.d_conv, groups=E, bias=config.conv_bias,
                                padding=config.d_conv - 1)  # weight (E, 1, K), applied causally
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(R ** -0.5), R ** -0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(E, config.dt_min, config.dt_max,
                                                 config.dt_init_floor))
        # S4D-Real initialisation: A_n = -(n + 1)
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1)  # (E, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=config.bias)

    @classmethod
    def unavailable_reason(cls, config: MambaConfig, device: torch.device) -> str | None:
        device = torch.device(device)
        backend, reason = resolve_backend(config.backend, SCAN_MODULE, device)
        if reason is None and backend == "torch":
            reason = resolve_scan(config.scan, device)[1]
        return reason

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "D"}  # mamba-ssm marks these _no_weight_decay

    def _conv_weight(self) -> torch.Tensor:
        return self.conv1d.weight.squeeze(1)  # (E, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        backend, reason = resolve_backend(self.config.backend, SCAN_MODULE, x.device)
        if reason is not None:
            raise BackendUnavailable(reason)
        fused, reason = (False, None) if backend == "mamba_ssm" else resolve_scan(
            self.config.scan, x.device)
        if reason is not None:
            raise BackendUnavailable(reason)
        R, N = self.dt_rank, self.config.d_state
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        if fused:
            xs = causal_conv_fused(xs, self._conv_weight(), self.conv1d.bias, silu=True)
        else:
            xs = F.silu(causal_conv(xs, self._conv_weight(), self.conv1d.bias))
        dt, B, C = self.x_proj(xs).split([R, N, N], dim=-1)  # (B, L, R), (B, L, N) x 2
        A = -torch.exp(self.A_log.float())  # (E, N)
        if backend == "mamba_ssm":
            y = self._scan_mamba_ssm(xs, dt, A, B, C, z)
        elif fused:
            self.kernel_path = "cpu-fused-scan"
            delta = F.softplus(self.dt_proj(dt))  # (B, L, E)
            y = selective_scan_fused(xs, delta, A, B, C, self.D, z)  # (y + D xs) silu(z)
        else:
            self.kernel_path = "torch-chunked-scan"
            delta = F.softplus(self.dt_proj(dt))  # (B, L, E)
            y = selective_scan(xs, delta, A, B, C, self.config.chunk or None)
            y = (y + xs * self.D) * F.silu(z)
        return self.out_proj(y)

    def _scan_mamba_ssm(self, xs, dt, A, B, C, z) -> torch.Tensor:
        """mamba-ssm's fused CUDA scan (softplus, D skip and silu(z) gate inside), (B, L, E)."""
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        self.kernel_path = "mamba_ssm-cuda"
        delta = dt @ self.dt_proj.weight.t()  # (B, L, E); bias and softplus are fused
        with kernel_failures_unavailable("mamba_ssm selective_scan_fn"):
            y = selective_scan_fn(
                xs.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A,
                B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D.float(),
                z=z.transpose(1, 2).contiguous(), delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True)  # (B, E, L)
        return y.transpose(1, 2)

    # --- recurrent mode ---------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        E, K, N = self.d_inner, self.config.d_conv, self.config.d_state
        return {"conv": torch.zeros(batch, E, K - 1, device=device, dtype=dtype),
                "ssm": torch.zeros(batch, E, N, device=device, dtype=torch.float32)}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        self.kernel_path = "torch-step"
        R, N = self.dt_rank, self.config.d_state
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E) each
        xs, conv = causal_conv_step(xs, state["conv"], self._conv_weight(), self.conv1d.bias)
        xs = F.silu(xs)
        dt, B, C = self.x_proj(xs).split([R, N, N], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # (B, E)
        y, h = selective_scan_step(xs, delta, -torch.exp(self.A_log.float()), B, C, state["ssm"])
        y = (y + xs * self.D) * F.silu(z)
        return self.out_proj(y), {"conv": conv, "ssm": h}

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        E, K, N = self.d_inner, self.config.d_conv, self.config.d_state
        return batch * E * (K - 1 + N) * bytes_per_element  # conv window + SSM state

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Projections, conv, scan and gate, per forward (multiply-add = 2 FLOPs).

        With ``E = expand * D``: in_proj ``2 L D 2E``; conv ``2 L E K``; x_proj
        ``2 L E (R + 2N)``; dt_proj ``2 L R E``; selective scan ``9 L E N`` plus ``L E`` for the
        D skip and ``L E`` for the gate (mamba-ssm's ``flops_selective_scan_ref`` count);
        out_proj ``2 L E D``. Activations (softplus, silu, exp) are not counted.
        """
        D, E, L = self.d_model, self.d_inner, seq_len
        N, K, R = self.config.d_state, self.config.d_conv, self.dt_rank
        proj = 2 * L * D * 2 * E + 2 * L * E * (R + 2 * N) + 2 * L * R * E + 2 * L * E * D
        return float(batch * (proj + 2 * L * E * K + 9 * L * E * N + 2 * L * E))
