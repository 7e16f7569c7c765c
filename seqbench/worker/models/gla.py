"""Gated linear attention (Yang, Wang, Shen, Panda & Kim 2024, "Gated Linear Attention
Transformers with Hardware-Efficient Training"), the layer of flash-linear-attention's
``fla/layers/gla.py`` (defaults: ``expand_k`` 0.5, ``expand_v`` 1, 4 heads, a rank-16 gate
projection, gate logits divided by 16, swish output gate, per-head RMSNorm)::

    q, k = x W_q, x W_k        (B, L, H, K) with H K = expand_k D
    v, r = x W_v, x W_r        (B, L, H, V) with H V = expand_v D
    log alpha = logsigmoid(x W_a1 W_a2 + b) / 16        (B, L, H, K), data-dependent decay
    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,   o_t = q_t S_t / sqrt(K)
    y = (rmsnorm(o) * swish(r)) W_o

``decay: fixed`` replaces the data-dependent gate by RetNet's fixed decay per head (Sun et al.
2023, "Retentive Network"): ``gamma_h = 1 - 2^(-5 - h)``, the same for every key dimension and
position, with no gate projection.

Paths (``kernel_path``):

- ``fla-chunk_gla``: flash-linear-attention's Triton ``fla.ops.gla.chunk_gla`` on a CUDA
  device when ``import fla`` works (``backend: auto`` or ``fla``); its chunk size is its own;
- ``torch-chunked-gla``: seqbench's chunked form (:mod:`seqbench.worker.models.ops.gla`,
  chunk size ``chunk``) everywhere else;
- ``torch-step``: the recurrence one token at a time (streaming, and the tests' reference).

``backend: fla`` where fla cannot run gives an ``unavailable`` row with the reason.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.errors import BackendUnavailable
from seqbench.worker.backends import import_error
from seqbench.worker.models.base import Mixer
from seqbench.worker.models.mamba import kernel_failures_unavailable
from seqbench.worker.models.ops.gla import gla_chunked, gla_step

Decay = Literal["data", "fixed"]
GlaBackend = Literal["auto", "fla", "torch"]
FLA_MODULE = "fla.ops.gla"


def fla_reason(device: torch.device) -> str | None:
    """None if fla's GLA kernels can run on ``device``, else why not."""
    reasons = []
    if device.type != "cuda":
        reasons.append(f"fla's Triton kernels need a CUDA device (device is {device.type})")
    error = import_error(FLA_MODULE)
    if error is not None:
        reasons.append(f"import {FLA_MODULE} failed: {error}")
    return "; ".join(reasons) or None


@dataclass
class GLAConfig:
    n_heads: int = 4
    expand_k: float = 0.5  # key dim H K = expand_k * d_model
    expand_v: float = 1.0  # value dim H V = expand_v * d_model
    decay: Decay = "data"  # data: GLA's gate; fixed: RetNet's per-head gamma
    gate_low_rank: int = 16  # rank of the gate projection (data decay)
    gate_normalizer: float = 16.0  # log alpha = logsigmoid(.) / gate_normalizer
    chunk: int = 16  # torch path: steps per chunk
    norm_eps: float = 1e-5
    backend: GlaBackend = "auto"  # auto: fla on CUDA when it imports, else torch

    def __post_init__(self) -> None:
        if self.n_heads < 1 or self.gate_low_rank < 1 or self.chunk < 1:
            raise ValueError("n_heads, gate_low_rank and chunk must be positive")
        if self.expand_k <= 0 or self.expand_v <= 0 or self.gate_normalizer <= 0:
            raise ValueError("expand_k, expand_v and gate_normalizer must be > 0")
        if self.decay not in ("data", "fixed"):
            raise ValueError("decay must be data or fixed")
        if self.backend not in ("auto", "fla", "torch"):
            raise ValueError("backend must be auto, fla or torch")


def _width(d_model: int, expand: float) -> int:
    width = d_model * expand
    if abs(width - round(width)) > 1e-9:
        raise ValueError(f"d_model * {expand} = {width} is not a whole number of channels")
    return round(width)


class GLA(Mixer):
    Config = GLAConfig
    supports_step: ClassVar[bool] = True
    kernel_paths: ClassVar[tuple[str, ...]] = ("fla-chunk_gla", "torch-chunked-gla", "torch-step")

    def __init__(self, d_model: int, config: GLAConfig) -> None:
        super().__init__(d_model, config)
        H = config.n_heads
        Kd, Vd = _width(d_model, config.expand_k), _width(d_model, config.expand_v)
        if Kd % H or Vd % H:
            raise ValueError(f"key dim {Kd} and value dim {Vd} must be multiples of n_heads {H}")
        self.key_dim, self.value_dim = Kd, Vd
        self.head_k, self.head_v = Kd // H, Vd // H
        self.scale = self.head_k ** -0.5
        self.q_proj = nn.Linear(d_model, Kd, bias=False)
        self.k_proj = nn.Linear(d_model, Kd, bias=False)
        self.v_proj = nn.Linear(d_model, Vd, bias=False)
        self.g_proj = nn.Linear(d_model, Vd, bias=False)  # output gate r
        self.gk_proj: nn.Sequential | None = None
        if config.decay == "data":
            self.gk_proj = nn.Sequential(nn.Linear(d_model, config.gate_low_rank, bias=False),
                                         nn.Linear(config.gate_low_rank, Kd, bias=True))
        else:
            gamma = 1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32))
            self.register_buffer("log_gamma", torch.log(gamma).unsqueeze(-1), persistent=False)
        self.norm_weight = nn.Parameter(torch.ones(self.head_v))  # RMSNorm over a head's V
        self.o_proj = nn.Linear(Vd, d_model, bias=False)

    @classmethod
    def d_model_multiple(cls, config: GLAConfig) -> int:
        """Smallest m whose multiples give whole key and value widths divisible by n_heads."""
        for m in range(1, 1 << 16):
            if all(abs(m * e - round(m * e)) < 1e-9 and round(m * e) % config.n_heads == 0
                   for e in (config.expand_k, config.expand_v)):
                return m
        raise ValueError("no d_model gives whole heads for these expand_k, expand_v")

    @classmethod
    def unavailable_reason(cls, config: GLAConfig, device: torch.device) -> str | None:
        return fla_reason(torch.device(device)) if config.backend == "fla" else None

    def _use_fla(self, device: torch.device) -> bool:
        backend = self.config.backend
        if backend == "torch" or (backend == "auto" and device.type != "cuda"):
            return False  # auto on CPU never imports fla
        reason = fla_reason(device)
        if reason is not None and backend == "fla":
            raise BackendUnavailable(reason)
        return reason is None

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(..., D) -> q, k (..., H, K), v (..., H, V), log alpha (..., H, K | 1)."""
        lead, H = x.shape[:-1], self.config.n_heads
        q = self.q_proj(x).view(*lead, H, self.head_k)
        k = self.k_proj(x).view(*lead, H, self.head_k)
        v = self.v_proj(x).view(*lead, H, self.head_v)
        if self.gk_proj is not None:
            gk = self.gk_proj(x).view(*lead, H, self.head_k)
            gk = gk.to(torch.promote_types(gk.dtype, torch.float32))
            log_a = F.logsigmoid(gk) / self.config.gate_normalizer
        else:
            log_a = self.log_gamma  # (H, 1), broadcast over positions and key dims
        return q, k, v, log_a

    def _out(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """rmsnorm per head, times swish(r), then W_o: o (..., H, V), x (..., D) -> (..., D)."""
        of = o.to(torch.promote_types(o.dtype, torch.float32))
        of = of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + self.config.norm_eps)
        r = self.g_proj(x).view(*x.shape[:-1], self.config.n_heads, self.head_v)
        y = (of * self.norm_weight.to(of.dtype)).to(x.dtype) * F.silu(r)
        return self.o_proj(y.reshape(*x.shape[:-1], self.value_dim))

    def _fla(self, q, k, v, log_a) -> torch.Tensor:
        from fla.ops.gla import chunk_gla

        self.kernel_path = "fla-chunk_gla"
        kwargs = {}
        if "head_first" in inspect.signature(chunk_gla).parameters:
            kwargs["head_first"] = False  # older fla defaulted to (B, H, L, K)
        g = log_a.expand(q.shape).to(q.dtype).contiguous()
        with kernel_failures_unavailable("fla chunk_gla"):
            out = chunk_gla(q=q.contiguous(), k=k.contiguous(), v=v.contiguous(), g=g,
                            scale=self.scale, initial_state=None, output_final_state=False,
                            **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        q, k, v, log_a = self._qkv(x)
        if self._use_fla(x.device):
            o = self._fla(q, k, v, log_a)
        else:
            self.kernel_path = "torch-chunked-gla"
            o = gla_chunked(q, k, v, log_a, self.scale, self.config.chunk)[0]
        return self._out(o, x)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The torch chunked form (it returns the final state), whatever the backend."""
        self.kernel_path = "torch-chunked-gla"
        q, k, v, log_a = self._qkv(x)
        o, state = gla_chunked(q, k, v, log_a, self.scale, self.config.chunk)
        return self._out(o, x), state

    # --- recurrent mode ---------------------------------------------------------------------
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(batch, self.config.n_heads, self.head_k, self.head_v, device=device,
                           dtype=torch.promote_types(dtype, torch.float32))

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.kernel_path = "torch-step"
        q, k, v, log_a = self._qkv(x_t)  # (B, H, K), (B, H, V), (B, H, K | 1)
        o, state = gla_step(q, k, v, log_a, self.scale, state)
        return self._out(o, x_t), state

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return batch * self.config.n_heads * self.head_k * self.head_v * bytes_per_element

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Projections and the torch chunked form's products (multiply-add = 2).

        Projections ``2 L D (2 Kd + 2 Vd)`` and ``2 L Vd D``; the gate ``2 L (D r + r Kd)``
        (data decay). Chunked form with chunk ``Q``, per head: intra-chunk scores ``2 L Q K``
        (the masked upper half counted, as computed), scores x values ``2 L Q V``, chunk states
        ``2 L K V``, incoming states to outputs ``2 L K V``. Exponentials, norm and gate
        activations are not counted; fla's kernels do the same products in other blocks.
        """
        cfg, D, L = self.config, self.d_model, seq_len
        Kd, Vd, H = self.key_dim, self.value_dim, cfg.n_heads
        Q = min(cfg.chunk, L)
        flops = 2 * L * D * (2 * Kd + 2 * Vd) + 2 * L * Vd * D
        if self.gk_proj is not None:
            flops += 2 * L * (D * cfg.gate_low_rank + cfg.gate_low_rank * Kd)
        flops += H * (2 * L * Q * self.head_k + 2 * L * Q * self.head_v
                      + 4 * L * self.head_k * self.head_v)
        return float(batch * flops)

