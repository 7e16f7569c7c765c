"""Hyena (Poli, Massaroli, Nguyen, Fu, Dao, Baccus, Bengio, Ermon & Ré 2023, "Hyena Hierarchy:
Towards Larger Convolutional Language Models"), the operator of HazyResearch/safari
``src/models/sequence/hyena.py`` (``HyenaOperator`` with ``HyenaFilter``, one head, one block)::

    x_0, ..., x_{N-1}, v = split(short_conv(in_proj(u)))       N = order, each (B, L, D)
    for n = 1 .. N-1 (x_{N-1} first):  v = h_n * (v . x_n) + bias_n . (v . x_n)
    y = out_proj(v . x_0)

``short_conv`` is a causal depthwise convolution of width 3; ``h_n`` are *implicit* long filters
of length L, one per channel, generated for positions ``0 .. L-1``::

    h(t) = MLP(PE(t)) . (exp(-alpha t) + shift)
    PE(t) = [t, cos(f w_t), -sin(f w_t)]          t in [0, 1] over max_len positions,
                                                  w_t = 2 pi t / max_len, ``bands`` frequencies
    MLP = Linear(emb_dim, F) sin Linear(F, F) sin Linear(F, F) sin Linear(F, D (N - 1))

(one sine activation ``sin(a x)`` with a trainable frequency per width, shared by every layer as
in the reference), and the decay rates ``alpha`` spaced linearly between
``-log(target) / slow_decay_pct`` and ``-log(target) / fast_decay_pct`` over the channels.

The long convolutions run as FFT convolutions of length 2L (no wrap-around, hence causal), in
fp32. The positional encoding is fixed to ``max_len`` positions (the filter at position ``t``
depends on ``t / max_len``), so ``max_len`` bounds the sequence length (``max_seq_len``). The
reference trains the encoding ``z`` with a learning rate of 1e-5 and the decay rates not at
all; here both are fixed buffers (seqbench's optimizer uses one learning rate). The filter
MLP (weights and sine frequencies) is excluded from weight decay, as the reference's ``wd: 0``.

Streaming: honest, and not constant-size. Each step runs the short convolution from a window of
2 inputs and each long convolution *directly* over the history of its inputs
(``y_t = sum_{s <= t} h_{t-s} u_s``), so the state holds that history and grows linearly with
the position (``state_size`` says so) and a step costs ``O(t)``. No distilled recurrence (the
reference's ``recurrence`` raises ``NotImplementedError`` too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from seqbench.worker.models.base import Mixer
from seqbench.worker.models.ops.conv import causal_conv, causal_conv_step, causal_conv_window


@dataclass
class HyenaConfig:
    order: int = 2  # N: N - 1 long convolutions and N gates
    filter_order: int = 64  # F: width of the filter MLP
    emb_dim: int = 3  # positional encoding size: t plus (emb_dim - 1) / 2 cos/sin bands
    num_inner_mlps: int = 2  # hidden F x F layers of the filter MLP
    sin_freq: float = 1.0  # initial frequency of the sine activation (the reference's w)
    max_len: int = 1024  # positions of the filter's encoding (safari's l_max default)
    short_filter: int = 3  # width of the causal depthwise conv after in_proj
    fast_decay_pct: float = 0.3
    slow_decay_pct: float = 1.5
    decay_target: float = 1e-2
    modulation_shift: float = 0.0
    dropout: float = 0.0  # on the gated inputs of the long convolutions

    def __post_init__(self) -> None:
        if self.order < 2:
            raise ValueError("order must be >= 2")
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError("emb_dim must be odd and >= 3 (time, then cos/sin pairs)")
        if min(self.filter_order, self.max_len, self.short_filter) < 1 or self.num_inner_mlps < 0:
            raise ValueError("filter_order, max_len, short_filter must be positive and "
                             "num_inner_mlps >= 0")
        if not 0 < self.decay_target < 1 or min(self.fast_decay_pct, self.slow_decay_pct) <= 0:
            raise ValueError("need 0 < decay_target < 1 and positive decay percentages")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")


class _Sin(nn.Module):
    def __init__(self, width: int, freq: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(freq * torch.ones(1, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class HyenaFilter(nn.Module):
    """Implicit filters: ``filter(L) -> (L, channels)`` and a bias ``(channels,)``."""

    def __init__(self, channels: int, cfg: HyenaConfig) -> None:
        super().__init__()
        n, E = cfg.max_len, cfg.emb_dim
        t = torch.linspace(0, 1, n).unsqueeze(-1)  # (n, 1)
        bands = (E - 1) // 2
        w = 2 * math.pi * torch.linspace(0, n - 1, n).unsqueeze(-1) / n  # (n, 1)
        f = torch.linspace(1e-4, bands - 1, bands).unsqueeze(0)  # (1, bands)
        z = torch.cat([t, torch.cos(f * w), -torch.sin(f * w)], dim=-1)  # (n, E) = exp(-i f w)
        self.register_buffer("z", z, persistent=False)
        self.register_buffer("t", t, persistent=False)
        max_decay = math.log(cfg.decay_target) / cfg.fast_decay_pct
        min_decay = math.log(cfg.decay_target) / cfg.slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels),
                             persistent=False)
        self.shift = cfg.modulation_shift
        act = _Sin(cfg.filter_order, cfg.sin_freq)  # one module: one frequency vector, shared
        layers: list[nn.Module] = [nn.Linear(E, cfg.filter_order), act]
        for _ in range(cfg.num_inner_mlps):
            layers += [nn.Linear(cfg.filter_order, cfg.filter_order), act]
        layers.append(nn.Linear(cfg.filter_order, channels, bias=False))
        self.mlp = nn.Sequential(*layers)
        self.bias = nn.Parameter(torch.randn(channels))

    def forward(self, L: int) -> torch.Tensor:  # -> (L, channels)
        h = self.mlp(self.z[:L])
        return h * (torch.exp(-self.t[:L] * self.deltas.abs()) + self.shift)


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_{s <= t} k_{t-s} u_s`` per channel by FFT of length 2L:
    ``u (B, L, C)``, ``k (L, C)`` -> ``(B, L, C)`` fp32."""
    L = u.shape[1]
    f = torch.promote_types(u.dtype, torch.float32)
    u_f = torch.fft.rfft(u.to(f), n=2 * L, dim=1)  # (B, L + 1, C)
    k_f = torch.fft.rfft(k.to(f), n=2 * L, dim=0)  # (L + 1, C)
    return torch.fft.irfft(u_f * k_f, n=2 * L, dim=1)[:, :L]


def direct_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Reference for :func:`fft_causal_conv`: the same sum, directly (``O(L^2)`` per channel)."""
    L, C = u.shape[1], u.shape[2]
    f = torch.promote_types(u.dtype, torch.float32)
    weight = k.to(f).t().flip(-1).unsqueeze(1)  # (C, 1, L): tap j multiplies u_{t - L + 1 + j}
    y = F.conv1d(u.to(f).transpose(1, 2), weight, padding=L - 1, groups=C)  # (B, C, 2L - 1)
    return y[..., :L].transpose(1, 2)


class Hyena(Mixer):
    Config = HyenaConfig
    supports_step: ClassVar[bool] = True

    def __init__(self, d_model: int, config: HyenaConfig) -> None:
        super().__init__(d_model, config)
        D, N = d_model, config.order
        self.in_proj = nn.Linear(D, (N + 1) * D)
        self.short = nn.Conv1d((N + 1) * D, (N + 1) * D, config.short_filter,
                               groups=(N + 1) * D)  # weight ((N + 1) D, 1, K), applied causally
        self.filter = HyenaFilter(D * (N - 1), config)
        self.dropout = nn.Dropout(config.dropout)
        self.out_proj = nn.Linear(D, D)

    @classmethod
    def max_seq_len(cls, config: HyenaConfig) -> int | None:
        return config.max_len

    def no_weight_decay(self) -> set[str]:
        return {f"filter.mlp.{name}" for name, _ in self.filter.mlp.named_parameters()}

    def _filters(self, L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Long filters (N - 1, L, D) and biases (N - 1, D), in the reference's channel order
        ``c = d (N - 1) + n``."""
        D, N = self.d_model, self.config.order
        h = self.filter(L).view(L, D, N - 1).permute(2, 0, 1)
        return h, self.filter.bias.view(D, N - 1).t()

    def _check_len(self, seq_len: int) -> None:
        if seq_len > self.config.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_len={self.config.max_len} "
                             "of the Hyena filters' positional encoding (set model param "
                             "max_len)")

    def _gates(self, u: torch.Tensor) -> list[torch.Tensor]:
        """``short_conv(in_proj(u))`` split into ``x_0 .. x_{N-1}, v``: (B, L | , D) each."""
        return list(u.split(self.d_model, dim=-1))

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Output (B, L, D), the pre-conv projection (B, L, (N+1) D) and the long convs' inputs."""
        self._check_len(x.shape[1])
        L = x.shape[1]
        u = self.in_proj(x)  # (B, L, (N + 1) D)
        parts = self._gates(causal_conv(u, self.short.weight.squeeze(1), self.short.bias))
        *xs, v = parts
        h, bias = self._filters(L)
        conv_inputs = []
        with torch.autocast(x.device.type, enabled=False):  # torch.fft needs fp32 on CPU
            for n, x_n in enumerate(reversed(xs[1:])):
                v = self.dropout(v * x_n)  # (B, L, D)
                conv_inputs.append(v)
                v = (fft_causal_conv(v, h[n]) + v * bias[n]).to(x.dtype)
        return self.out_proj(v * xs[0]), u, conv_inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        self.kernel_path = "fft-conv"
        return self._run(x)[0]

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        self.kernel_path = "fft-conv"
        y, u, conv_inputs = self._run(x)
        return y, {"conv": causal_conv_window(u, self.config.short_filter),
                   "history": conv_inputs}

    # --- streaming: direct causal convolution over the history ------------------------------
    def _filters_for_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_filters` at ``max_len``, computed once per parameter version without a graph."""
        if torch.is_grad_enabled():
            return self._filters(self.config.max_len)
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if getattr(self, "_step_cache", (None,))[0] != key:
            self._step_cache = (key, self._filters(self.config.max_len))
        return self._step_cache[1]

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        C, K = (self.config.order + 1) * self.d_model, self.config.short_filter
        empty = torch.zeros(batch, 0, self.d_model, device=device, dtype=dtype)
        return {"conv": torch.zeros(batch, C, K - 1, device=device, dtype=dtype),
                "history": [empty] * (self.config.order - 1)}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        self.kernel_path = "torch-direct-conv-step"
        t = state["history"][0].shape[1]  # position of x_t
        self._check_len(t + 1)
        u, window = causal_conv_step(self.in_proj(x_t), state["conv"],
                                     self.short.weight.squeeze(1), self.short.bias)
        *xs, v = self._gates(u)  # (B, D) each
        h, bias = self._filters_for_step()  # (N - 1, max_len, D)
        history = []
        for n, x_n in enumerate(reversed(xs[1:])):
            v = self.dropout(v * x_n)
            past = torch.cat([state["history"][n], v.unsqueeze(1)], dim=1)  # (B, t + 1, D)
            history.append(past)
            taps = h[n, :t + 1].flip(0)  # (t + 1, D): h_{t - s} for s = 0 .. t
            f = torch.promote_types(x_t.dtype, torch.float32)
            y = torch.einsum("bsd,sd->bd", past.to(f), taps.to(f))
            v = (y + v * bias[n]).to(x_t.dtype)
        return self.out_proj(v * xs[0]), {"conv": window, "history": history}

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        """Grows with ``seq_len``: the short conv's window plus ``N - 1`` input histories."""
        D, N, K = self.d_model, self.config.order, self.config.short_filter
        return batch * ((N + 1) * D * (K - 1) + (N - 1) * D * seq_len) * bytes_per_element

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Projections, short conv, filter MLP and the FFT convolutions (multiply-add = 2).

        ``in_proj`` ``2 B L D (N+1) D``; short conv ``2 B L (N+1) D K``; filter MLP (once per
        forward) ``2 L (E F + n_inner F^2 + F D (N-1))``; per long convolution, with ``n = 2L``
        and a real FFT of length n ~ ``2.5 n log2 n``: FFTs ``(2B + 1) D 2.5 n log2 n``,
        spectral product ``6 B D (L + 1)``, bias skip ``2 B L D``; gates ``B L D N``;
        ``out_proj`` ``2 B L D^2``. Sines, exponentials and the decay window are not counted.
        """
        cfg, D, L, B = self.config, self.d_model, seq_len, batch
        N, F_, E, K = cfg.order, cfg.filter_order, cfg.emb_dim, cfg.short_filter
        n = 2 * L
        flops = 2 * B * L * D * (N + 1) * D + 2 * B * L * (N + 1) * D * K
        flops += 2 * L * (E * F_ + cfg.num_inner_mlps * F_ * F_ + F_ * D * (N - 1))
        fft = (2 * B + 1) * D * 2.5 * n * math.log2(n)
        flops += (N - 1) * (fft + 6 * B * D * (L + 1) + 2 * B * L * D)
        return float(flops + B * L * D * N + 2 * B * L * D * D)
