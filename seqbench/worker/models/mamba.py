"""Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"):
the selective SSM block of ``mamba_ssm/modules/mamba_simple.py``::

    x, z = in_proj(u)                       (B, L, E) each, E = expand * d_model
    x = silu(causal depthwise conv(x))      kernel d_conv
    dt, B, C = x_proj(x)                    input-dependent step (rank R), B, C: (B, L, N)
    delta = softplus(dt_proj(dt))           (B, L, E)
    y = selective_scan(x, delta, A, B, C) + D * x,   A = -exp(A_log): (E, N)
    out = out_proj(y * silu(z))

Parameter names and shapes are mamba-ssm's, so weights load either way. ``kernel_path``
records which path ran:

- ``mamba_ssm-mamba_inner_fn+causal_conv1d``: on a CUDA device with mamba-ssm and
  causal-conv1d importing and ``d_conv`` in 2..4 (causal-conv1d's kernels), the fused path of
  mamba-ssm's ``Mamba.forward`` (``use_fast_path``): one ``mamba_inner_fn`` call runs
  causal-conv1d's conv + silu, the x_proj and dt_proj matmuls, the CUDA selective scan with
  the delta bias, softplus, D skip and ``silu(z)`` gate inside, and out_proj; its backward
  recomputes the conv output and delta (``checkpoint_lvl=1``);
- ``mamba_ssm-selective_scan_fn+causal_conv1d`` / ``mamba_ssm-selective_scan_fn+torch-conv1d``:
  mamba-ssm's unfused path (what its module runs without causal-conv1d, and for a prefill,
  whose state ``mamba_inner_fn`` cannot return): the conv by ``causal_conv1d_fn`` (or
  ``F.conv1d`` where causal-conv1d is missing or ``d_conv`` is outside 2..4), then
  ``selective_scan_fn`` on the (B, E, L) layout it reads;
- ``cpu-fused-scan``: seqbench's fused C++ kernels on CPU
  (:func:`~seqbench.worker.models.ops.selective_scan_fused` with the D skip and the gate inside,
  after :func:`~seqbench.worker.models.ops.causal_conv_fused` with the silu inside): no
  per-step state is stored, the backward recomputes it chunk by chunk;
- ``torch-chunked-scan``: seqbench's pure-PyTorch chunked scan
  (:func:`~seqbench.worker.models.ops.selective_scan`), the reference of the fused one, on CPU
  when the C++ kernels cannot be built here and on CUDA without mamba-ssm.

Streaming steps: ``mamba_ssm-selective_state_update+causal_conv1d_update`` on the mamba-ssm
path (``Mamba.step``: causal-conv1d's ``causal_conv1d_update`` rolls the conv window in place,
mamba-ssm's Triton ``selective_state_update`` advances the SSM state in place, with dt bias,
softplus, D and the gate inside; ``+torch-conv-step`` replaces the first where causal-conv1d
cannot run), else ``torch-step``. On the mamba-ssm path the state tensors passed to
:meth:`Mamba.step` are updated in place and returned, as mamba-ssm does; everywhere else a step
returns new tensors. ``prefill`` is parallel on every path and returns the state the steps
continue from.

How our weights map onto ``mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight,
delta_proj_weight, out_proj_weight, out_proj_bias, A, B, C, D, delta_bias, ...,
delta_softplus)`` (``mamba_ssm/ops/selective_scan_interface.py``), argument by argument:

- ``xz``: ``in_proj.weight (2E, D) @ u^T`` viewed as ``(B, 2E, L)`` with the time axis
  contiguous (stride 1), as mamba-ssm's module computes it (the kernel copies anything whose
  last stride is not 1), plus ``in_proj.bias[:, None]`` cast to its dtype when there is a bias.
  Rows ``[0, E)`` are ``x`` and ``[E, 2E)`` are ``z``: the order of our
  ``in_proj(u).chunk(2, dim=-1)``;
- ``conv1d_weight``, ``conv1d_bias``: ``conv1d.weight`` as stored, ``(E, 1, K)`` (the function
  squeezes it to ``(E, K)``, causal-conv1d's layout), and ``conv1d.bias (E,)``;
- ``x_proj_weight``: ``x_proj.weight (R + 2N, E)``; its rows are split as ours: ``[0, R)`` the
  low-rank step, ``[R, R + N)`` B, ``[R + N, R + 2N)`` C (so ``B = C = None``: input-dependent);
- ``delta_proj_weight``: ``dt_proj.weight (E, R)``; the projection runs without its bias;
- ``delta_bias``, ``delta_softplus``: ``dt_proj.bias.float()`` and ``True``: the kernel forms
  ``delta = softplus(dt_proj.weight dt + dt_proj.bias)``, our ``softplus(dt_proj(dt))``;
- ``A``: ``-exp(A_log.float())``, ``(E, N)``, fp32 as mamba-ssm keeps it;
- ``D``: ``D.float()``, ``(E,)``: the skip ``+ D x`` inside the kernel;
- ``out_proj_weight``, ``out_proj_bias``: ``out_proj.weight (D, E)`` and its bias (or None);
  the ``silu(z)`` gate is applied inside the scan kernel before it.

The step maps the same weights onto ``causal_conv1d_update(x, conv_state, weight (E, K),
bias, "silu")`` (our conv state is its ``(B, E, K - 1)`` window: causal-conv1d accepts any
state length >= K - 1) and ``selective_state_update(ssm_state (B, E, N), x, dt =
dt_proj.weight dt (no bias), A, B, C, D, z, dt_bias = dt_proj.bias, dt_softplus=True)``.

``backend: auto`` takes the first that can run; ``backend: mamba_ssm`` insists on mamba-ssm's
kernels and makes the row ``unavailable`` (with the import error) where they cannot run;
``backend: torch`` always takes seqbench's paths. mamba-ssm and causal-conv1d are imported
lazily, never at module import. Within seqbench's paths ``scan: auto`` takes the fused kernel on
CPU when it is available, ``scan: fused`` insists on it (``unavailable`` with the build error
otherwise) and ``scan: chunked`` pins the PyTorch scan.
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
from seqbench.worker.models.ops.conv import causal_conv_window

Backend = Literal["auto", "mamba_ssm", "torch"]
BACKENDS = ("auto", "mamba_ssm", "torch")
Scan = Literal["auto", "fused", "chunked"]
SCANS = ("auto", "fused", "chunked")
SCAN_MODULE = "mamba_ssm.ops.selective_scan_interface"  # imports the compiled selective_scan_cuda
STEP_MODULE = "mamba_ssm.ops.triton.selective_state_update"  # the Triton step kernel
CONV_MODULE = "causal_conv1d"  # causal-conv1d's CUDA conv (fused path, prefill, step)
CONV_WIDTHS = (2, 3, 4)  # causal-conv1d: TORCH_CHECK(width >= 2 && width <= 4)


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


def causal_conv1d_usable(width: int) -> bool:
    """causal-conv1d imports and has a kernel for this conv width (the test mamba-ssm's own
    module makes: ``causal_conv1d_fn is not None``)."""
    return width in CONV_WIDTHS and import_error(CONV_MODULE) is None


def mamba_ssm_step_runs(backend: str, module: str, device: torch.device) -> bool:
    """Whether a streaming step takes mamba-ssm's kernels: the backend resolves to mamba-ssm on
    ``device`` (``module`` being the model's forward kernels) and the Triton
    ``selective_state_update`` imports (as mamba-ssm's ``Mamba.step`` falls back to PyTorch
    where it does not)."""
    ran, reason = resolve_backend(backend, module, device)
    return ran == "mamba_ssm" and reason is None and import_error(STEP_MODULE) is None


@contextlib.contextmanager
def kernel_failures_unavailable(what: str) -> Iterator[None]:
    """Turn a mamba-ssm kernel that imports but cannot run this configuration (a Triton
    compile error, an unsupported GPU or shape) into :class:`BackendUnavailable`; out-of-memory
    stays what it is. The call runs inside a profiler range ``seqbench::<what>`` (spaces as
    dots, e.g. ``seqbench::mamba_ssm.mamba_inner_fn``), which tells calls apart that launch the
    same kernels (:mod:`seqbench.worker.kernels_seen`)."""
    try:
        with torch.profiler.record_function("seqbench::" + what.replace(" ", ".")):
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
    kernel_paths: ClassVar[tuple[str, ...]] = (
        "mamba_ssm-mamba_inner_fn+causal_conv1d", "mamba_ssm-selective_scan_fn+causal_conv1d",
        "mamba_ssm-selective_scan_fn+torch-conv1d", "cpu-fused-scan", "torch-chunked-scan",
        "mamba_ssm-selective_state_update+causal_conv1d_update",
        "mamba_ssm-selective_state_update+torch-conv-step", "torch-step")

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

    def _paths(self, device: torch.device) -> tuple[str, bool]:
        """(backend that runs, whether seqbench's fused CPU kernels run); raises
        :class:`BackendUnavailable` for an explicit request that cannot run here."""
        backend, reason = resolve_backend(self.config.backend, SCAN_MODULE, device)
        if reason is not None:
            raise BackendUnavailable(reason)
        if backend == "mamba_ssm":
            return backend, False
        fused, reason = resolve_scan(self.config.scan, device)
        if reason is not None:
            raise BackendUnavailable(reason)
        return backend, fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        backend, fused = self._paths(x.device)
        if backend == "mamba_ssm":
            if causal_conv1d_usable(self.config.d_conv):
                return self._mamba_inner(x)
            return self._mamba_ssm_scan(x, return_state=False)[0]
        return self._torch_path(x, fused, return_state=False)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The whole prompt in one parallel call; the state after it (conv window, SSM state)."""
        backend, fused = self._paths(x.device)
        if backend == "mamba_ssm":
            y, state = self._mamba_ssm_scan(x, return_state=True)
        else:
            y, state = self._torch_path(x, fused, return_state=True)
        assert state is not None
        return y, state

    # --- seqbench's paths ---------------------------------------------------------------------
    def _torch_path(self, x: torch.Tensor, fused: bool, return_state: bool
                    ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        R, N = self.dt_rank, self.config.d_state
        xs_in, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        if fused:
            xs = causal_conv_fused(xs_in, self._conv_weight(), self.conv1d.bias, silu=True)
        else:
            xs = F.silu(causal_conv(xs_in, self._conv_weight(), self.conv1d.bias))
        dt, B, C = self.x_proj(xs).split([R, N, N], dim=-1)  # (B, L, R), (B, L, N) x 2
        A = -torch.exp(self.A_log.float())  # (E, N)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, E)
        h = None
        if fused:
            self.kernel_path = "cpu-fused-scan"
            y = selective_scan_fused(xs, delta, A, B, C, self.D, z,  # (y + D xs) silu(z)
                                     return_state=return_state)
        else:
            self.kernel_path = "torch-chunked-scan"
            y = selective_scan(xs, delta, A, B, C, self.config.chunk or None,
                               return_state=return_state)
        if return_state:
            y, h = y
        if not fused:
            y = (y + xs * self.D) * F.silu(z)
        if h is None:
            return self.out_proj(y), None
        state = {"conv": causal_conv_window(xs_in, self.config.d_conv).contiguous(),
                 "ssm": h.float()}
        return self.out_proj(y), state

    # --- mamba-ssm's paths (CUDA) ---------------------------------------------------------------
    def _xz(self, x: torch.Tensor) -> torch.Tensor:
        """``in_proj(x)`` as ``(B, 2E, L)`` with the time axis contiguous, the layout
        mamba-ssm's kernels read (one matmul, no transpose copy)."""
        Bz, L, _ = x.shape
        xz = (self.in_proj.weight @ x.reshape(Bz * L, -1).t()).view(-1, Bz, L).transpose(0, 1)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype).unsqueeze(-1)
        return xz

    def _mamba_inner(self, x: torch.Tensor) -> torch.Tensor:
        """mamba-ssm's fused block: conv, projections, scan, gate and out_proj in one call
        (the mapping of every argument is in the module docstring)."""
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn

        self.kernel_path = "mamba_ssm-mamba_inner_fn+causal_conv1d"
        A = -torch.exp(self.A_log.float())  # (E, N)
        with kernel_failures_unavailable("mamba_ssm mamba_inner_fn"):
            return mamba_inner_fn(self._xz(x), self.conv1d.weight, self.conv1d.bias,
                                  self.x_proj.weight, self.dt_proj.weight, self.out_proj.weight,
                                  self.out_proj.bias, A, None, None, self.D.float(),
                                  delta_bias=self.dt_proj.bias.float(), delta_softplus=True)

    def _mamba_ssm_scan(self, x: torch.Tensor, return_state: bool
                        ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """mamba-ssm's unfused path: causal-conv1d's conv (or F.conv1d), then
        ``selective_scan_fn`` with the delta bias, softplus, D and gate inside; with
        ``return_state`` also the state after the last step."""
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        Bz, L, _ = x.shape
        E, K, R, N = self.d_inner, self.config.d_conv, self.dt_rank, self.config.d_state
        xs_in, z = self._xz(x).chunk(2, dim=1)  # (B, E, L) each, time contiguous
        if causal_conv1d_usable(K):
            from causal_conv1d import causal_conv1d_fn

            conv = "causal_conv1d"
            with kernel_failures_unavailable("causal_conv1d causal_conv1d_fn"):
                xs = causal_conv1d_fn(xs_in, self._conv_weight(), self.conv1d.bias,
                                      activation="silu")
        else:
            conv = "torch-conv1d"
            xs = F.silu(F.conv1d(xs_in, self.conv1d.weight, self.conv1d.bias, padding=K - 1,
                                 groups=E)[..., :L])
        x_dbl = self.x_proj(xs.transpose(1, 2).reshape(Bz * L, E))  # (B L, R + 2N)
        dt, B, C = x_dbl.split([R, N, N], dim=-1)
        delta = (self.dt_proj.weight @ dt.t()).view(E, Bz, L).transpose(0, 1)  # (B, E, L)
        B = B.reshape(Bz, L, N).transpose(1, 2).contiguous()  # (B, N, L)
        C = C.reshape(Bz, L, N).transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())  # (E, N)
        self.kernel_path = f"mamba_ssm-selective_scan_fn+{conv}"
        with kernel_failures_unavailable("mamba_ssm selective_scan_fn"):
            y = selective_scan_fn(xs, delta, A, B, C, self.D.float(), z=z,
                                  delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                                  return_last_state=return_state)  # (B, E, L)
        state = None
        if return_state:
            y, last = y
            state = {"conv": causal_conv_window(xs_in.transpose(1, 2), K).contiguous(),
                     "ssm": last.float().contiguous()}  # (B, E, K - 1), (B, E, N)
        return self.out_proj(y.transpose(1, 2)), state

    def _mamba_ssm_step(self, x_t: torch.Tensor, state: dict[str, Any]
                        ) -> tuple[torch.Tensor, dict[str, Any]]:
        """mamba-ssm's ``Mamba.step``: the conv window and the SSM state updated in place."""
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update

        R, N = self.dt_rank, self.config.d_state
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E) each
        conv = state["conv"]
        if causal_conv1d_usable(self.config.d_conv):
            from causal_conv1d import causal_conv1d_update

            path = "mamba_ssm-selective_state_update+causal_conv1d_update"
            with kernel_failures_unavailable("causal_conv1d causal_conv1d_update"):
                xs = causal_conv1d_update(xs.to(conv.dtype), conv, self._conv_weight(),
                                          self.conv1d.bias, "silu")  # conv rolled in place
        else:
            path = "mamba_ssm-selective_state_update+torch-conv-step"
            xs, conv = causal_conv_step(xs, conv, self._conv_weight(), self.conv1d.bias)
            xs = F.silu(xs)
        dt, B, C = self.x_proj(xs).split([R, N, N], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (B, E); bias and softplus in the kernel
        A = -torch.exp(self.A_log.float())
        self.kernel_path = path
        with kernel_failures_unavailable("mamba_ssm selective_state_update"):
            y = selective_state_update(state["ssm"], xs, dt, A, B, C, self.D, z=z,
                                       dt_bias=self.dt_proj.bias, dt_softplus=True)  # (B, E)
        return self.out_proj(y), {"conv": conv, "ssm": state["ssm"]}

    # --- recurrent mode ---------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        E, K, N = self.d_inner, self.config.d_conv, self.config.d_state
        return {"conv": torch.zeros(batch, E, K - 1, device=device, dtype=dtype),
                "ssm": torch.zeros(batch, E, N, device=device, dtype=torch.float32)}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        if mamba_ssm_step_runs(self.config.backend, SCAN_MODULE, x_t.device):
            return self._mamba_ssm_step(x_t, state)
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
