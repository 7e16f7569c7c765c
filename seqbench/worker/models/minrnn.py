"""minGRU and minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadegh 2024, "Were RNNs All We
Needed?"): gates that depend on the input only, so the recurrence is linear in ``h`` and trains
in parallel. The sequential forms (paper, Sec. 3.1.3 and 3.2.3)::

    minGRU:   z_t = sigmoid(W_z x_t)      h~_t = g(W_h x_t)
              h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM:  f_t = sigmoid(W_f x_t)      i_t = sigmoid(W_i x_t)      h~_t = g(W_h x_t)
              f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
              h_t = f'_t * h_{t-1} + i'_t * h~_t

with ``g(x) = x + 1/2 (x >= 0), sigmoid(x) (x < 0)`` keeping ``h~ > 0`` (App. B.3), ``h_{-1} = 0``
and the width ``expand * d_model`` (a linear layer back to ``d_model`` when it differs).

Parallel training (``scan``):

- ``log``: the paper's log-space form (App. B, ``log_coeffs = -softplus(k)``, ``log_values =
  -softplus(-k) + log g(h)`` for minGRU; for minLSTM ``diff = softplus(-f) - softplus(-i)``,
  ``log f' = -softplus(diff)``, ``log i' = -softplus(-diff)``) through the heinsen
  log-cumsum-exp scan, run in chunks (see :mod:`~seqbench.worker.models.ops.linear_scan`);
- ``chunked``: the same coefficients in linear space, ``a_t = sigmoid(-z_t)`` and
  ``b_t = sigmoid(z_t) g(h~_t)`` with ``z = k`` (minGRU) or ``z = diff`` (minLSTM), through
  seqbench's chunked scan (every term positive and ``a <= 1``, so it needs no logarithms to
  stay stable). On CPU ``torch.logcumsumexp`` alone costs more than the whole step loop
  (8 x 4096 x 64, fwd + bwd: 0.36 s against 0.15-0.25 s, measured);
- ``fused``: the linear-space recurrence with its gates (``sigmoid(-z)``, ``sigmoid(z)``,
  ``g``) computed inside seqbench's C++ kernel
  (:func:`~seqbench.worker.models.ops.linear_scan.gated_scan_fused`), CPU only: the gate ops
  and their backward, about 20 passes over ``(B, L, E)`` tensors, cost more than the chunked
  scan itself on CPU, and the kernel reads ``z`` and ``h~`` once each way;
- ``auto`` (default) runs ``log`` on CUDA, ``fused`` on CPU when the C++ kernels are built,
  else ``chunked``; ``kernel_path`` names what ran (``torch-log-scan``,
  ``cpu-fused-gated-scan``, ``torch-chunked-scan``). ``scan: fused`` where the kernels cannot
  run gives an ``unavailable`` row with the reason.

Streaming steps run the sequential form above (that is also the naive reference of the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.errors import BackendUnavailable
from seqbench.worker.models.base import Mixer
from seqbench.worker.models.ops import native
from seqbench.worker.models.ops.linear_scan import gated_scan_fused, linear_scan, log_linear_scan

Scan = Literal["auto", "log", "chunked", "fused"]
SCANS = ("auto", "log", "chunked", "fused")
LOG_CHUNK = 64  # steps per heinsen chunk in the log-space form


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's positive activation: ``x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """``log g(x)``, computed without forming ``g`` (``-softplus(-x) = log sigmoid(x)``)."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


@dataclass
class MinRNNConfig:
    expand: float = 1.0  # hidden width = round(expand * d_model); != 1 adds an output linear
    scan: Scan = "auto"  # auto: log on CUDA, fused (C++) on CPU, else chunked
    chunk: int = 0  # steps per chunk; 0 = ceil(sqrt(L)) for chunked, 64 for log

    def __post_init__(self) -> None:
        if self.expand <= 0 or self.chunk < 0:
            raise ValueError("expand must be > 0 and chunk >= 0")
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}")


def fused_reason(device: torch.device) -> str | None:
    """Why ``scan: fused`` cannot run on ``device`` (None: it can)."""
    if device.type != "cpu":
        return f"scan: fused: the fused scan runs on CPU (device is {device.type})"
    reason = native.unavailable_reason()
    return None if reason is None else f"scan: fused: {reason}"


class _MinRNN(Mixer):
    Config = MinRNNConfig
    supports_step: ClassVar[bool] = True
    kernel_paths: ClassVar[tuple[str, ...]] = (
        "cpu-fused-gated-scan", "torch-chunked-scan", "torch-log-scan", "torch-step")
    n_proj: ClassVar[int]  # projections of x: (h, z) for minGRU, (h, f, i) for minLSTM

    def __init__(self, d_model: int, config: MinRNNConfig) -> None:
        super().__init__(d_model, config)
        self.d_inner = max(1, round(config.expand * d_model))
        self.proj = nn.Linear(d_model, self.n_proj * self.d_inner)  # the paper's Linear layers
        self.out = nn.Linear(self.d_inner, d_model) if self.d_inner != d_model else None

    def _logit(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``z`` with ``h_t = sigmoid(-z) h_{t-1} + sigmoid(z) g(h~)``: (B, L, E)."""
        raise NotImplementedError

    def _sequential(self, parts: tuple[torch.Tensor, ...], h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _finish(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(h) if self.out is not None else h

    @classmethod
    def unavailable_reason(cls, config: MinRNNConfig, device: torch.device) -> str | None:
        return fused_reason(torch.device(device)) if config.scan == "fused" else None

    def _scan_kind(self, device: torch.device) -> str:
        if self.config.scan == "auto":
            if device.type == "cuda":
                return "log"
            return "fused" if fused_reason(device) is None else "chunked"
        return self.config.scan

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, E)
        parts = self.proj(x).chunk(self.n_proj, dim=-1)  # (B, L, E) each
        z = self._logit(parts)
        kind = self._scan_kind(x.device)
        if kind == "fused":
            reason = fused_reason(x.device)
            if reason is not None:
                raise BackendUnavailable(reason)
            self.kernel_path = "cpu-fused-gated-scan"
            h = gated_scan_fused(z, parts[0])  # gates inside the kernel
        elif kind == "log":  # the paper's log_coeffs and log_values
            self.kernel_path = "torch-log-scan"
            h = log_linear_scan(-F.softplus(z), -F.softplus(-z) + log_g(parts[0]),
                                self.config.chunk or LOG_CHUNK)
        else:
            self.kernel_path = "torch-chunked-scan"
            h = linear_scan(torch.sigmoid(-z), torch.sigmoid(z) * g(parts[0]),
                            self.config.chunk or None)
        return h.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self._finish(self._hidden(x))

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._hidden(x)  # (B, L, E)
        return self._finish(h), h[:, -1]

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch, self.d_inner, device=device, dtype=dtype)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.kernel_path = "torch-step"
        h = self._sequential(self.proj(x_t).chunk(self.n_proj, dim=-1), state)  # (B, E)
        return self._finish(h), h

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return batch * self.d_inner * bytes_per_element

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Projections ``2 B L D (n E)`` and the output linear ``2 B L E D`` when present; the
        scan and gates (O(B L E) elementwise) are not counted."""
        tokens, D, E = batch * seq_len, self.d_model, self.d_inner
        return 2.0 * tokens * D * self.n_proj * E + (2.0 * tokens * E * D if self.out else 0.0)


class MinGRU(_MinRNN):
    n_proj = 2

    def _logit(self, parts):
        return parts[1]  # k: 1 - z = sigmoid(-k), z = sigmoid(k)

    def _sequential(self, parts, h):
        h_tilde, k = parts
        z = torch.sigmoid(k)
        return (1 - z) * h + z * g(h_tilde)


class MinLSTM(_MinRNN):
    n_proj = 3

    def _logit(self, parts):
        _, f, i = parts
        # log i - log f: f' = f / (f + i) = sigmoid(-diff), i' = sigmoid(diff)
        return F.softplus(-f) - F.softplus(-i)

    def _sequential(self, parts, h):
        h_tilde, f, i = parts
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        return f / (f + i) * h + i / (f + i) * g(h_tilde)
