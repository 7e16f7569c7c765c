"""Causal multi-head softmax attention (Vaswani et al. 2017) on
``torch.nn.functional.scaled_dot_product_attention``, with rotary (Su et al. 2021) or learned
absolute positions, and a KV cache for streaming inference.

Which SDPA kernel runs is decided by PyTorch and is silent: on CPU an attention dropout above 0
forces the math kernel (B x H x L^2 scores in memory). So the first forward of each
(device, dtype, dropout) case asks for the fused kernels one by one, in order, and keeps the first
that runs; ``kernel_path`` then names it (``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``,
``sdpa-math``) instead of guessing. Attention dropout defaults to 0 for that reason. ``sdpa``
pins one kernel instead; ``transformer_math`` is the same model with the math kernel pinned:
naive attention, whose ``B x H x L^2`` scores make memory grow as ``L^2``.

FLOPs of a forward pass (matmuls only, multiply-add = 2): the QKV and output projections,
``2 B L (3D + D) D``, and the two attention matmuls ``Q K^T`` and ``P V``, ``2 x 2 B L^2 D``,
halved for the causal mask (the useful work; fused kernels skip the masked blocks, the math
kernel computes them anyway).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from seqbench.worker.models.base import Mixer

_BACKENDS = {  # tried in this order; the first that runs is kept
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}

SdpaKernel = Literal["auto", "flash", "efficient", "cudnn", "math"]


@dataclass
class AttentionConfig:
    n_heads: int = 4
    positions: Literal["rotary", "learned", "none"] = "rotary"
    max_len: int = 8192  # size of the learned position table (positions="learned" only)
    attn_dropout: float = 0.0  # > 0 forces the math kernel on CPU: 6.7x slower at L=2048
    rope_base: float = 10000.0
    sdpa: SdpaKernel = "auto"  # auto: the first of _BACKENDS that runs; else pin that kernel

    def __post_init__(self) -> None:
        if self.n_heads < 1 or self.max_len < 1 or not 0 <= self.attn_dropout < 1:
            raise ValueError("n_heads, max_len must be positive and attn_dropout in [0, 1)")
        if self.positions not in ("rotary", "learned", "none"):
            raise ValueError("positions must be rotary, learned or none")
        allowed = ("auto", *(name.removeprefix("sdpa-") for name in _BACKENDS))
        if self.sdpa not in allowed:
            raise ValueError(f"sdpa must be one of {', '.join(allowed)}")


@dataclass
class MathAttentionConfig(AttentionConfig):
    sdpa: SdpaKernel = "math"


def rotary(x: torch.Tensor, offset: int, base: float) -> torch.Tensor:
    """Rotate pairs (i, i + dh/2) of x: (B, H, L, dh) by position-dependent angles."""
    L, dh = x.shape[-2], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)
    pos = torch.arange(offset, offset + L, device=x.device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)  # (L, dh/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(Mixer):
    Config = AttentionConfig
    supports_step: ClassVar[bool] = True
    kernel_paths: ClassVar[tuple[str, ...]] = tuple(_BACKENDS)

    def __init__(self, d_model: int, config: AttentionConfig) -> None:
        super().__init__(d_model, config)
        if d_model % (2 * config.n_heads):
            raise ValueError(f"d_model={d_model} must be a multiple of "
                             f"2 x n_heads={config.n_heads}")
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.pos = nn.Embedding(config.max_len, d_model) if config.positions == "learned" else None
        self._kernels: dict[tuple, str] = {}  # (device, dtype, dropout) -> kernel that ran

    @classmethod
    def d_model_multiple(cls, config: AttentionConfig) -> int:
        return 2 * config.n_heads

    @classmethod
    def max_seq_len(cls, config: AttentionConfig) -> int | None:
        return config.max_len if config.positions == "learned" else None

    def _qkv(self, x: torch.Tensor, offset: int) -> tuple[torch.Tensor, ...]:
        B, L, D = x.shape
        if self.pos is not None:
            if offset + L > self.config.max_len:
                raise ValueError(f"position {offset + L} beyond max_len={self.config.max_len}")
            x = x + self.pos.weight[offset: offset + L]
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, dh)
        if self.config.positions == "rotary":
            base = self.config.rope_base
            q, k = rotary(q, offset, base), rotary(k, offset, base)
        return q, k, v

    def _attend(self, q, k, v, causal: bool) -> torch.Tensor:
        dropout = self.config.attn_dropout if self.training else 0.0
        key = (q.device.type, q.dtype, dropout > 0, causal)
        if key in self._kernels:
            name = self._kernels[key]
            with sdpa_kernel([_BACKENDS[name]]):
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
            self.kernel_path = name
            return y
        pinned = self.config.sdpa != "auto"
        candidates = [f"sdpa-{self.config.sdpa}"] if pinned else list(_BACKENDS)
        for name in candidates:
            try:
                with sdpa_kernel([_BACKENDS[name]]), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch explains each refusal; we record it
                    y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
            except RuntimeError:
                if pinned:
                    raise
                continue
            self._kernels[key] = self.kernel_path = name
            return y
        raise RuntimeError("no scaled_dot_product_attention kernel could run")

    def row_fields(self) -> dict[str, Any]:
        return {"attn_dropout": self.config.attn_dropout}  # > 0 forces the math kernel on CPU

    def forward_flops(self, batch: int, seq_len: int) -> float:
        B, L, D = batch, seq_len, self.d_model
        projections = 2.0 * B * L * (3 * D + D) * D
        attention = 2 * 2.0 * B * L * L * D / 2  # Q K^T and P V, causal half
        return projections + attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        B, L, D = x.shape
        q, k, v = self._qkv(x, 0)
        y = self._attend(q, k, v, causal=True)  # (B, H, L, dh)
        return self.out(y.transpose(1, 2).reshape(B, L, D))

    # --- streaming with a KV cache ---------------------------------------------------------
    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        dh = self.d_model // self.n_heads
        empty = torch.zeros(batch, self.n_heads, 0, dh, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone()}

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:  # (B, L, D)
        B, L, D = x.shape
        q, k, v = self._qkv(x, 0)  # (B, H, L, dh)
        y = self._attend(q, k, v, causal=True)
        return self.out(y.transpose(1, 2).reshape(B, L, D)), {"k": k, "v": v}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        B, D = x_t.shape
        q, k, v = self._qkv(x_t.unsqueeze(1), offset=state["k"].shape[2])  # (B, H, 1, dh)
        k = torch.cat([state["k"], k], dim=2)  # (B, H, t, dh)
        v = torch.cat([state["v"], v], dim=2)
        y = self._attend(q, k, v, causal=False)  # the single query sees the whole cache
        return self.out(y.transpose(1, 2).reshape(B, D)), {"k": k, "v": v}

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return 2 * batch * seq_len * self.d_model * bytes_per_element  # K and V




class MathAttention(Attention):
    """The same attention with the math SDPA kernel pinned (naive attention: L x L scores)."""

    Config = MathAttentionConfig
