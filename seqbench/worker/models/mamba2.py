"""Mamba-2 (Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms
Through Structured State Space Duality"): the block of ``mamba_ssm/modules/mamba2_simple.py``::

    z, xBC, dt = in_proj(u)           z: (B, L, E), xBC: (B, L, E + 2GN), dt: (B, L, H)
    x, B, C = silu(causal conv(xBC))  x: (B, L, H, P) with E = H * P; B, C: (B, L, G, N)
    dt = softplus(dt + dt_bias)       one step per head; A = -exp(A_log): one scalar per head
    y = SSD(x, dt, A, B, C) + D * x   (B, L, H, P)
    out = out_proj(rmsnorm(y * silu(z)))

Parameter names are mamba-ssm's (``gated RMSNorm`` weight as ``norm_weight``); ``kernel_path``
records which path ran:

- ``mamba_ssm-mamba_split_conv1d_scan_combined``: on a CUDA device with mamba-ssm's Triton SSD
  kernels and causal-conv1d importing, ``d_conv`` in 2..4 and the conv width ``E + 2GN`` a
  multiple of 8 (causal-conv1d's channel-last kernel), mamba-ssm's fused path
  (``use_mem_eff_path`` of ``Mamba2Simple.forward``): split, causal conv + silu, the chunked
  SSD with dt bias, softplus and D, the gated RMSNorm and out_proj in one call whose backward
  recomputes the conv. Its norm is per group of ``E / ngroups`` channels, ours over all ``E``
  (``mamba2_simple.py``'s unfused norm), so with ``ngroups > 1`` the call stops after the
  ``silu(z)`` gate and seqbench's norm and out_proj follow
  (``...+torch-gated-norm``);
- ``mamba_ssm-mamba_chunk_scan_combined``: mamba-ssm's Triton SSD with seqbench's conv, where
  the fused call cannot run (no causal-conv1d, other widths);
- ``cpu-fused-ssd``: seqbench's fused C++ kernels on CPU: the conv with its silu
  (:func:`~seqbench.worker.models.ops.causal_conv_fused`) and the SSD as a recurrence per head
  with the D skip inside (:func:`~seqbench.worker.models.ops.ssd_fused`; no per-step state is
  stored, the backward recomputes it chunk by chunk);
- ``torch-ssd``: seqbench's chunked SSD (:func:`~seqbench.worker.models.ops.ssd_chunked`), the
  reference of the fused one, everywhere else.

Streaming steps: ``mamba_ssm-selective_state_update+causal_conv1d_update`` on the mamba-ssm
path (``Mamba2.step``: the conv window and the (B, H, P, N) state updated in place, the step
kernel's one-decay-per-head mode selected by stride-0 views of dt, dt_bias, A and D), else
``torch-step``. ``prefill`` is parallel on every path (mamba-ssm's ``return_final_states``,
the C++ kernel's last state, the chunked SSD's carried state).

How our weights map onto ``mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight,
conv1d_bias, dt_bias, A, D, chunk_size, ..., activation, rmsnorm_weight, rmsnorm_eps,
outproj_weight, outproj_bias, headdim, ngroups, norm_before_gate)``
(``mamba_ssm/ops/triton/ssd_combined.py``): ``zxbcdt`` is ``in_proj(u)`` as it is,
``(B, L, 2E + 2GN + H)`` in mamba-ssm's order ``[z, x, B, C, dt]`` (ours); ``conv1d_weight``
``conv1d.weight.squeeze(1)``, ``(E + 2GN, K)``; ``conv1d_bias``, ``dt_bias (H,)``, ``D (H,)``;
``A = -exp(A_log.float())`` ``(H,)``; ``chunk_size = chunk``; ``activation = "silu"``;
``headdim = P``, ``ngroups = G``; ``rmsnorm_weight = norm_weight``, ``rmsnorm_eps =
norm_eps``, ``norm_before_gate = False`` (``rmsnorm(y * silu(z))``), ``outproj_weight``,
``outproj_bias`` from ``out_proj`` (ngroups 1; None otherwise, see above).

``backend`` and ``scan`` work as for :mod:`seqbench.worker.models.mamba`: an explicit request
that cannot run here (``backend: mamba_ssm`` without a GPU or Triton, ``scan: fused`` without
the C++ kernels) gives an ``unavailable`` row and the reason.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.errors import BackendUnavailable
from seqbench.worker.models.base import Mixer
from seqbench.worker.models.mamba import (
    BACKENDS,
    SCANS,
    Backend,
    Scan,
    causal_conv1d_usable,
    init_dt_bias,
    kernel_failures_unavailable,
    mamba_ssm_step_runs,
    resolve_backend,
    resolve_scan,
)
from seqbench.worker.models.ops import (
    causal_conv,
    causal_conv_fused,
    causal_conv_step,
    ssd_chunked,
    ssd_fused,
    ssd_step,
)
from seqbench.worker.models.ops.conv import causal_conv_window

SSD_MODULE = "mamba_ssm.ops.triton.ssd_combined"  # the Triton SSD kernels


@dataclass
class Mamba2Config:
    d_state: int = 64  # N (mamba-ssm's default is 128; 64 keeps CPU runs light)
    d_conv: int = 4
    expand: int = 2  # E = expand * d_model
    headdim: int = 64  # P; H = E / P heads
    ngroups: int = 1  # G groups of heads share B and C
    A_init_min: float = 1.0  # A_h = -uniform(A_init_min, A_init_max)
    A_init_max: float = 16.0
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    chunk: int = 64  # chunk length of the chunked SSD (and of mamba-ssm's)
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj biases
    norm_eps: float = 1e-5
    backend: Backend = "auto"  # auto | mamba_ssm | torch
    scan: Scan = "auto"  # seqbench's paths: auto | fused (C++, CPU) | chunked (PyTorch SSD)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.scan not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(SCANS)}")
        if min(self.d_state, self.d_conv, self.expand, self.headdim, self.ngroups, self.chunk) < 1:
            raise ValueError("d_state, d_conv, expand, headdim, ngroups, chunk must be positive")
        if not 0 < self.A_init_min <= self.A_init_max or not 0 < self.dt_min <= self.dt_max:
            raise ValueError("need 0 < A_init_min <= A_init_max and 0 < dt_min <= dt_max")


class Mamba2(Mixer):
    Config = Mamba2Config
    supports_step: ClassVar[bool] = True
    kernel_paths: ClassVar[tuple[str, ...]] = (
        "mamba_ssm-mamba_split_conv1d_scan_combined",
        "mamba_ssm-mamba_split_conv1d_scan_combined+torch-gated-norm",
        "mamba_ssm-mamba_chunk_scan_combined", "cpu-fused-ssd", "torch-ssd",
        "mamba_ssm-selective_state_update+causal_conv1d_update",
        "mamba_ssm-selective_state_update+torch-conv-step", "torch-step")

    def __init__(self, d_model: int, config: Mamba2Config) -> None:
        super().__init__(d_model, config)
        E, P, G, N = config.expand * d_model, config.headdim, config.ngroups, config.d_state
        if E % P or (E // P) % G:
            raise ValueError(f"expand * d_model = {E} must be a multiple of headdim = {P}, "
                             f"and the {E // P} heads a multiple of ngroups = {G}")
        H = E // P
        self.d_inner, self.n_heads = E, H
        self.conv_dim = E + 2 * G * N
        self.in_proj = nn.Linear(d_model, 2 * E + 2 * G * N + H, bias=config.bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, config.d_conv, groups=self.conv_dim,
                                bias=config.conv_bias, padding=config.d_conv - 1)
        self.dt_bias = nn.Parameter(init_dt_bias(H, config.dt_min, config.dt_max,
                                                 config.dt_init_floor))
        A = torch.empty(H).uniform_(config.A_init_min, config.A_init_max)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(H))
        self.norm_weight = nn.Parameter(torch.ones(E))  # gated RMSNorm before out_proj
        self.out_proj = nn.Linear(E, d_model, bias=config.bias)

    @classmethod
    def d_model_multiple(cls, config: Mamba2Config) -> int:
        """Smallest m with expand * m divisible by headdim * ngroups (whole heads and groups)."""
        unit = config.headdim * config.ngroups
        return unit // math.gcd(config.expand, unit)

    @classmethod
    def unavailable_reason(cls, config: Mamba2Config, device: torch.device) -> str | None:
        device = torch.device(device)
        backend, reason = resolve_backend(config.backend, SSD_MODULE, device)
        if reason is None and backend == "torch":
            reason = resolve_scan(config.scan, device)[1]
        return reason

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "D", "dt_bias"}  # mamba-ssm marks these _no_weight_decay

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        E = self.d_inner
        return zxbcdt.split([E, self.conv_dim, self.n_heads], dim=-1)  # z, xBC, dt

    def _heads(self, xBC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., E + 2GN) -> x (..., H, P), B, C (..., G, N)."""
        G, N = self.config.ngroups, self.config.d_state
        x, B, C = xBC.split([self.d_inner, G * N, G * N], dim=-1)
        lead = x.shape[:-1]
        return (x.reshape(*lead, self.n_heads, self.config.headdim),
                B.reshape(*lead, G, N), C.reshape(*lead, G, N))

    def _gate_norm_out(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """out_proj(rmsnorm(y * silu(z))): mamba-ssm's RMSNormGated, norm_before_gate=False."""
        return self._norm_out(y * F.silu(z))

    def _norm_out(self, g: torch.Tensor) -> torch.Tensor:
        """out_proj(rmsnorm(g) * norm_weight) of the gated ``g`` (B, ..., E), in fp32 inside."""
        dtype = g.dtype
        g = g.float()
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.config.norm_eps)
        return self.out_proj((g * self.norm_weight.float()).to(dtype))

    def _paths(self, device: torch.device) -> tuple[str, bool]:
        backend, reason = resolve_backend(self.config.backend, SSD_MODULE, device)
        if reason is not None:
            raise BackendUnavailable(reason)
        if backend == "mamba_ssm":
            return backend, False
        fused, reason = resolve_scan(self.config.scan, device)
        if reason is not None:
            raise BackendUnavailable(reason)
        return backend, fused

    def split_conv_usable(self) -> bool:
        """Whether mamba-ssm's fully fused ``mamba_split_conv1d_scan_combined`` can run this
        configuration: causal-conv1d for the width, and a channel count its channel-last
        kernel takes (``ensure_stride`` asserts a multiple of 8)."""
        return causal_conv1d_usable(self.config.d_conv) and self.conv_dim % 8 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self._run(x, return_state=False)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The whole prompt in one parallel call; the state after it (conv window, SSM state)."""
        y, state = self._run(x, return_state=True)
        assert state is not None
        return y, state

    def _run(self, x: torch.Tensor, return_state: bool
             ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        backend, fused = self._paths(x.device)
        if backend == "mamba_ssm" and self.split_conv_usable():
            return self._split_conv_scan(x, return_state)
        Bz, L, _ = x.shape
        z, xBC_in, dt = self._split(self.in_proj(x))
        w = self.conv1d.weight.squeeze(1)  # (E + 2GN, K)
        if fused:
            xBC = causal_conv_fused(xBC_in, w, self.conv1d.bias, silu=True)
        else:
            xBC = F.silu(causal_conv(xBC_in, w, self.conv1d.bias))
        xs, B, C = self._heads(xBC)  # (B, L, H, P), (B, L, G, N) x 2
        A = -torch.exp(self.A_log.float())  # (H,)
        last = None
        if backend == "mamba_ssm":
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

            self.kernel_path = "mamba_ssm-mamba_chunk_scan_combined"
            with kernel_failures_unavailable("mamba_ssm mamba_chunk_scan_combined"):
                y = mamba_chunk_scan_combined(xs, dt, A, B, C, chunk_size=self.config.chunk,
                                              D=self.D, dt_bias=self.dt_bias, dt_softplus=True,
                                              return_final_states=return_state)
        elif fused:
            self.kernel_path = "cpu-fused-ssd"
            dt = F.softplus(dt + self.dt_bias)  # (B, L, H)
            y = ssd_fused(xs, dt, A, B, C, self.D, return_state=return_state)  # SSD + D x
        else:
            self.kernel_path = "torch-ssd"
            dt = F.softplus(dt + self.dt_bias)  # (B, L, H)
            y = ssd_chunked(xs, dt, A, B, C, self.config.chunk, return_state=return_state)
        if return_state:
            y, last = y
        if backend != "mamba_ssm" and not fused:
            y = y + xs * self.D.unsqueeze(-1)
        out = self._gate_norm_out(y.reshape(Bz, L, self.d_inner), z)
        if last is None:
            return out, None
        return out, {"conv": causal_conv_window(xBC_in, self.config.d_conv).contiguous(),
                     "ssm": last.float().contiguous()}

    def _split_conv_scan(self, x: torch.Tensor, return_state: bool
                         ) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """mamba-ssm's fully fused Mamba-2 block (the mapping is in the module docstring)."""
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined

        cfg = self.config
        zxbcdt = self.in_proj(x)  # (B, L, 2E + 2GN + H)
        norm_inside = cfg.ngroups == 1  # its norm is per group; ours over all E channels
        kwargs: dict[str, Any] = {"D": self.D, "chunk_size": cfg.chunk, "activation": "silu",
                                  "headdim": cfg.headdim, "ngroups": cfg.ngroups,
                                  "norm_before_gate": False}
        if norm_inside:
            kwargs.update(rmsnorm_weight=self.norm_weight, rmsnorm_eps=cfg.norm_eps,
                          outproj_weight=self.out_proj.weight, outproj_bias=self.out_proj.bias)
        if return_state:
            kwargs["return_final_states"] = True
            if "state_dtype" in inspect.signature(mamba_split_conv1d_scan_combined).parameters:
                kwargs["state_dtype"] = torch.float32  # mamba-ssm >= 2.3: our state's dtype
        self.kernel_path = ("mamba_ssm-mamba_split_conv1d_scan_combined"
                            + ("" if norm_inside else "+torch-gated-norm"))
        with kernel_failures_unavailable("mamba_ssm mamba_split_conv1d_scan_combined"):
            out = mamba_split_conv1d_scan_combined(
                zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias,
                -torch.exp(self.A_log.float()), **kwargs)
        last = None
        if return_state:
            out, last = out
        if not norm_inside:
            out = self._norm_out(out)  # (y + D x) silu(z) came out of the kernel
        if last is None:
            return out, None
        xBC_in = self._split(zxbcdt)[1]
        return out, {"conv": causal_conv_window(xBC_in, cfg.d_conv).contiguous(),
                     "ssm": last.float().contiguous()}

    def _mamba_ssm_step(self, x_t: torch.Tensor, state: dict[str, Any]
                        ) -> tuple[torch.Tensor, dict[str, Any]]:
        """mamba-ssm's ``Mamba2.step``: conv window and SSM state updated in place."""
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update

        H, P, N = self.n_heads, self.config.headdim, self.config.d_state
        Bz = x_t.shape[0]
        z, xBC, dt = self._split(self.in_proj(x_t))  # (B, E), (B, E + 2GN), (B, H)
        w = self.conv1d.weight.squeeze(1)
        conv = state["conv"]
        if causal_conv1d_usable(self.config.d_conv):
            from causal_conv1d import causal_conv1d_update

            path = "mamba_ssm-selective_state_update+causal_conv1d_update"
            with kernel_failures_unavailable("causal_conv1d causal_conv1d_update"):
                xBC = causal_conv1d_update(xBC.to(conv.dtype), conv, w, self.conv1d.bias,
                                           "silu")  # conv rolled in place
        else:
            path = "mamba_ssm-selective_state_update+torch-conv-step"
            xBC, conv = causal_conv_step(xBC, conv, w, self.conv1d.bias)
            xBC = F.silu(xBC)
        xs, B, C = self._heads(xBC)  # (B, H, P), (B, G, N) x 2
        A = -torch.exp(self.A_log.float())
        # stride-0 views over P (and N): the kernel's one-decay-per-head mode (TIE_HDIM)
        self.kernel_path = path
        with kernel_failures_unavailable("mamba_ssm selective_state_update"):
            y = selective_state_update(
                state["ssm"], xs, dt.unsqueeze(-1).expand(Bz, H, P),
                A[:, None, None].expand(H, P, N), B, C, self.D[:, None].expand(H, P),
                z=None, dt_bias=self.dt_bias[:, None].expand(H, P), dt_softplus=True)
        out = self._gate_norm_out(y.reshape(Bz, self.d_inner), z)
        return out, {"conv": conv, "ssm": state["ssm"]}

    # --- recurrent mode ---------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        P, N, K = self.config.headdim, self.config.d_state, self.config.d_conv
        return {"conv": torch.zeros(batch, self.conv_dim, K - 1, device=device, dtype=dtype),
                "ssm": torch.zeros(batch, self.n_heads, P, N, device=device, dtype=torch.float32)}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        if mamba_ssm_step_runs(self.config.backend, SSD_MODULE, x_t.device):
            return self._mamba_ssm_step(x_t, state)
        self.kernel_path = "torch-step"
        z, xBC, dt = self._split(self.in_proj(x_t))  # (B, E), (B, E + 2GN), (B, H)
        xBC, conv = causal_conv_step(xBC, state["conv"], self.conv1d.weight.squeeze(1),
                                     self.conv1d.bias)
        xs, B, C = self._heads(F.silu(xBC))  # (B, H, P), (B, G, N) x 2
        dt = F.softplus(dt + self.dt_bias)
        y, ssm = ssd_step(xs, dt, -torch.exp(self.A_log.float()), B, C, state["ssm"])
        y = y + xs * self.D.unsqueeze(-1)
        return self._gate_norm_out(y.reshape(x_t.shape[0], self.d_inner), z), {"conv": conv,
                                                                               "ssm": ssm}

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        P, N, K = self.config.headdim, self.config.d_state, self.config.d_conv
        return batch * (self.conv_dim * (K - 1) + self.n_heads * P * N) * bytes_per_element

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Projections, conv and the chunked SSD's matmuls, per forward (multiply-add = 2).

        With ``E = H P``, chunk ``Q``: in_proj ``2 L D (2E + 2GN + H)``; conv
        ``2 L (E + 2GN) K``; SSD inside chunks: scores ``2 L Q N H`` (C B^T per head), decay
        mask ``L Q H``, scores x inputs ``2 L Q H P``; chunk states ``2 L H P N``; the carry
        ``2 (L / Q) H P N``; incoming states to outputs ``2 L H P N``; D skip ``2 L E``; gated
        norm ``6 L E``; out_proj ``2 L E D``. Exponentials and activations are not counted; the
        masked upper half of each chunk is counted, as the dense einsum computes it.
        """
        D, E, H, L = self.d_model, self.d_inner, self.n_heads, seq_len
        cfg = self.config
        P, N, G, K = cfg.headdim, cfg.d_state, cfg.ngroups, cfg.d_conv
        Q = min(cfg.chunk, L)
        proj = 2 * L * D * (2 * E + 2 * G * N + H) + 2 * L * E * D
        ssd = 2 * L * Q * N * H + L * Q * H + 2 * L * Q * H * P + 4 * L * H * P * N
        ssd += 2 * math.ceil(L / Q) * H * P * N
        return float(batch * (proj + 2 * L * (E + 2 * G * N) * K + ssd + 8 * L * E))
