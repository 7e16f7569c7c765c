"""Linear recurrent unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De 2023,
"Resurrecting Recurrent Neural Networks for Long Sequences"), written after the paper's App. A
listing and NicolasZucchet/minimal-LRU ``lru/model.py``.

Each of the ``N`` states is a complex diagonal linear recurrence over the ``H = d_model``
input channels::

    x_t = Lambda * x_{t-1} + (gamma * B) u_t        Lambda = exp(-exp(nu_log) + i exp(theta_log))
    y_t = Re(C x_t) + D * u_t                       B: (N, H), C: (H, N) complex; D: (H,)

- ring initialisation: ``|Lambda|`` uniform on the ring ``[r_min, r_max]`` (drawn as
  ``nu_log = log(-1/2 log(u (r_max^2 - r_min^2) + r_min^2))``), phase uniform in
  ``[0, max_phase]`` (``theta_log = log(max_phase u)``);
- exponential parametrisation: ``|Lambda| = exp(-exp(nu_log)) < 1`` for every ``nu_log``, so
  the recurrence stays stable under any update;
- normalisation ``gamma = sqrt(1 - |Lambda|^2)`` (kept as its log, ``gamma_log``, a trainable
  parameter initialised from ``Lambda`` as in the reference), so the states' variance does not
  blow up as ``|Lambda| -> 1``;
- ``B`` and ``C`` are Glorot-like complex normals (``1 / sqrt(2H)`` and ``1 / sqrt(N)``), ``D``
  standard normal.

The layer ends like minimal-LRU's ``SequenceLayer`` (and seqbench's S4D): GELU, then a linear
to ``2H`` and a GLU. Training runs the recurrence (time-invariant coefficients, complex64) by
``scan``: ``fused``, seqbench's C++ kernel
(:func:`~seqbench.worker.models.ops.linear_scan.linear_scan_fused`, CPU,
``kernel_path: cpu-fused-linear-scan``), or ``chunked``, seqbench's chunked PyTorch scan
(:func:`~seqbench.worker.models.ops.linear_scan.linear_scan`, ``torch-chunked-scan``), the
fused kernel's reference; ``auto`` takes the first that runs here. Streaming steps run it one
position at a time (the tests' reference). ``nu_log``,
``theta_log`` and ``gamma_log`` are excluded from weight decay (the paper also gives them a
smaller learning rate; seqbench's optimizer uses one learning rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.errors import BackendUnavailable
from seqbench.worker.models.base import Mixer
from seqbench.worker.models.minrnn import fused_reason
from seqbench.worker.models.ops.linear_scan import linear_scan, linear_scan_fused

Scan = Literal["auto", "fused", "chunked"]
SCANS = ("auto", "fused", "chunked")


@dataclass
class LRUConfig:
    d_state: int = 64  # N complex states
    r_min: float = 0.0  # ring of |Lambda| at init (the paper's listing: 0 and 1)
    r_max: float = 1.0
    max_phase: float = 2 * math.pi  # phases uniform in [0, max_phase] (the listing: 6.28)
    chunk: int = 0  # steps per scan chunk (scan: chunked), 0 = ceil(sqrt(L))
    scan: Scan = "auto"  # auto: fused (C++, CPU) when it runs, else chunked

    def __post_init__(self) -> None:
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}")
        if self.d_state < 1 or self.chunk < 0:
            raise ValueError("d_state must be >= 1 and chunk >= 0")
        if not 0 <= self.r_min < self.r_max <= 1:
            raise ValueError("need 0 <= r_min < r_max <= 1")
        if self.max_phase <= 0:
            raise ValueError("max_phase must be > 0")


class LRU(Mixer):
    Config = LRUConfig
    supports_step: ClassVar[bool] = True
    kernel_paths: ClassVar[tuple[str, ...]] = (
        "cpu-fused-linear-scan", "torch-chunked-scan", "torch-step")

    def __init__(self, d_model: int, config: LRUConfig) -> None:
        super().__init__(d_model, config)
        H, N = d_model, config.d_state
        u1, u2 = torch.rand(N), torch.rand(N)
        r2 = u1 * (config.r_max ** 2 - config.r_min ** 2) + config.r_min ** 2
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(r2.clamp_min(1e-30))))  # (N,)
        self.theta_log = nn.Parameter(torch.log(config.max_phase * u2.clamp_min(1e-30)))
        magnitude = torch.exp(-torch.exp(self.nu_log.detach()))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - magnitude ** 2)))
        self.B_re = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.B_im = nn.Parameter(torch.randn(N, H) / math.sqrt(2 * H))
        self.C_re = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H))
        self.out = nn.Linear(H, 2 * H)  # then GLU: (B, L, 2H) -> (B, L, H)

    def no_weight_decay(self) -> set[str]:
        return {"nu_log", "theta_log", "gamma_log"}

    def _lambda(self, f: torch.dtype) -> torch.Tensor:
        """The diagonal ``Lambda``: (N,) complex, from real dtype ``f``."""
        nu, theta = torch.exp(self.nu_log.to(f)), torch.exp(self.theta_log.to(f))
        return torch.polar(torch.exp(-nu), theta)

    def _input(self, u: torch.Tensor) -> torch.Tensor:
        """``(gamma B) u``: (..., H) real -> (..., N) complex of ``u``'s precision."""
        gamma = torch.exp(self.gamma_log.to(u.dtype)).unsqueeze(-1)  # (N, 1)
        B_re, B_im = gamma * self.B_re.to(u.dtype), gamma * self.B_im.to(u.dtype)  # (N, H)
        return torch.complex(u @ B_re.t(), u @ B_im.t())

    def _output(self, x: torch.Tensor, u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``Re(C x) + D u``, then GELU and GLU: x (..., N) complex, u (..., H) -> (..., H)."""
        f = u.dtype
        y = x.real @ self.C_re.to(f).t() - x.imag @ self.C_im.to(f).t() + u * self.D.to(f)
        return F.glu(self.out(F.gelu(y).to(dtype)), dim=-1)

    @classmethod
    def unavailable_reason(cls, config: LRUConfig, device: torch.device) -> str | None:
        return fused_reason(torch.device(device)) if config.scan == "fused" else None

    def _states(self, u: torch.Tensor) -> torch.Tensor:  # (B, L, H) real -> (B, L, N) complex
        lam = self._lambda(u.dtype).view(1, 1, -1)
        fused = self.config.scan != "chunked" and fused_reason(u.device) is None
        if self.config.scan == "fused" and not fused:
            raise BackendUnavailable(str(fused_reason(u.device)))
        if fused:
            self.kernel_path = "cpu-fused-linear-scan"
            return linear_scan_fused(lam, self._input(u))
        self.kernel_path = "torch-chunked-scan"
        return linear_scan(lam, self._input(u), self.config.chunk or None)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):  # the recurrence in >= fp32
            u = x.to(torch.promote_types(x.dtype, torch.float32))
            states = self._states(u)
            return self._output(states, u, x.dtype), states[:, -1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self.prefill(x)[0]

    # --- recurrent mode ---------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        complex_dtype = torch.cdouble if dtype == torch.float64 else torch.cfloat
        return torch.zeros(batch, self.config.d_state, device=device, dtype=complex_dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.kernel_path = "torch-step"
        u = x_t.to(state.real.dtype)  # (B, H)
        state = self._lambda(u.dtype) * state + self._input(u)  # (B, N)
        return self._output(state, u, x_t.dtype), state

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return batch * self.config.d_state * 2 * bytes_per_element  # complex: two reals

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """``gamma B u`` (two real matmuls) ``4 B L H N``; the recurrence, a complex
        multiply-add per state and step, ``8 B L N``; ``Re(C x)`` ``4 B L N H``; skip
        ``2 B L H``; output linear ``2 B L H 2H`` and GLU ``B L H``. The chunked scan's carry
        (``2 sqrt(L)`` extra multiply-adds per state) and GELU are not counted."""
        H, N, tokens = self.d_model, self.config.d_state, batch * seq_len
        return float(tokens * (4 * H * N + 8 * N + 4 * N * H + 2 * H + 4 * H * H + H))
