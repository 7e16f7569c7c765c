"""xLSTM (Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter
2024, "xLSTM: Extended Long Short-Term Memory"): mLSTM and sLSTM blocks, after NX-AI/xlstm
(``xlstm/blocks/mlstm/{layer,cell,backends}.py``, ``xlstm/blocks/slstm/{layer,cell}.py``,
``xlstm/blocks/slstm/src/vanilla/slstm.py``, ``xlstm/blocks/xlstm_block.py``).

One mixer holds a stack of internal blocks in the order of ``pattern``, one letter per block
(``m`` = mLSTM block, ``s`` = sLSTM block), so the paper's ``xLSTM[a:b]`` ratio of mLSTM to
sLSTM blocks is a pattern such as ``"mmmmmmms"`` for ``[7:1]``. Every block is pre-norm
residual (LayerNorm without bias), as in ``xLSTMBlock``::

    mLSTM block:  h += mLSTMLayer(LN(h))
    sLSTM block:  h += sLSTMLayer(LN(h));  h += GatedFFN(LN(h))      (GeLU gate, factor 1.3)

The mixer returns the sum of its blocks' residual branches, so inside seqbench's backbone
(``x + mixer(norm(x))``) the residual stream is ``x``; the blocks' own stream starts from the
backbone's normalised input.

**mLSTM layer** (up-projection ``E = proj_factor * D``): ``x_m, z = proj_up(u)``;
``x_c = silu(causal_conv4(x_m))``; ``q, k = headwise(x_c)``, ``v = headwise(x_m)`` (block
diagonal, blocks of ``qkv_blocksize``); input and forget gate pre-activations per head from
``[q, k, v]``; ``h = GroupNorm_heads(mLSTM(q, k, v, i, f))``; ``y = proj_down((h + skip * x_c) *
silu(z))``. The cell (matrix memory ``C``, normaliser ``n``, stabiliser ``m``, exponential
input gate, sigmoid forget gate) is in :mod:`seqbench.worker.models.ops.mlstm`: chunked for
training and prefill, one step at a time for streaming.

**sLSTM layer** (width ``D``, ``heads`` heads): ``x_c = silu(causal_conv4(u))``;
pre-activations ``i, f`` from ``x_c`` and ``z, o`` from ``u`` (headwise linear) plus a per-head
recurrent matrix on ``h_{t-1}`` and a bias; then (``vanilla/slstm.py``)::

    m_t = max(log sigmoid(f) + m_{t-1}, i)   (m_t = i while n_{t-1} = 0, i.e. at the start)
    i' = min(exp(i - m_t), 1)      f' = min(exp(log sigmoid(f) + m_{t-1} - m_t), 1)
    c_t = f' c_{t-1} + i' tanh(z)  n_t = f' n_{t-1} + i'    h_t = sigmoid(o) c_t / n_t

followed by a GroupNorm over heads. It has no parallel form: training loops over time.

Initialisation follows the reference: small init ``N(0, sqrt(2 / 5D))`` for input projections,
Wang init ``N(0, 2 / (blocks sqrt(D)))`` for output projections (``blocks`` = this mixer's
pattern length), mLSTM forget-gate bias ``linspace(3, 6)`` and input-gate bias ``N(0, 0.1)``
with zero gate weights, sLSTM recurrent matrices zero and forget-gate biases on the reference's
block-dependent power law, norm weights ``1 + w`` with ``w = 0``. The reference rounds
up-projection widths up to a multiple of 64 (a GPU-efficiency choice); ``round_to`` defaults
to 8 so small models keep the paper's factors (set ``round_to: 64`` for the reference's).
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
from seqbench.worker.models.ops.mlstm import mlstm_chunked, mlstm_init_state, mlstm_step


@dataclass
class XLSTMConfig:
    pattern: str = "ms"  # one internal block per letter: m = mLSTM, s = sLSTM
    heads: int = 4  # heads of both cells (xlstm's default 4)
    proj_factor: float = 2.0  # mLSTM up-projection E = proj_factor * D (rounded up)
    qkv_blocksize: int = 4  # block size of the headwise q, k, v projections
    conv_kernel: int = 4  # causal depthwise conv in both layers
    ffn_factor: float = 1.3  # sLSTM block's gated feed-forward width factor
    round_to: int = 8  # round up-projection widths up to a multiple of this (xlstm: 64)
    chunk: int = 64  # mLSTM chunked form: steps per chunk
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if not self.pattern or set(self.pattern) - {"m", "s"}:
            raise ValueError("pattern must be a non-empty string of m (mLSTM) and s (sLSTM)")
        if min(self.heads, self.qkv_blocksize, self.conv_kernel, self.round_to, self.chunk) < 1:
            raise ValueError("heads, qkv_blocksize, conv_kernel, round_to, chunk must be >= 1")
        unit = math.lcm(self.heads, self.qkv_blocksize)
        if self.round_to % unit:
            raise ValueError(f"round_to must be a multiple of lcm(heads, qkv_blocksize) = {unit}"
                             " so the mLSTM width splits into heads and blocks")
        if self.proj_factor <= 0 or self.ffn_factor <= 0:
            raise ValueError("proj_factor and ffn_factor must be > 0")


def _round_up(x: float, multiple: int) -> int:
    return multiple * math.ceil(x / multiple)


def _small_init(weight: torch.Tensor, dim: int) -> None:
    nn.init.normal_(weight, 0.0, math.sqrt(2 / (5 * dim)))


def _wang_init(weight: torch.Tensor, dim: int, blocks: int) -> None:
    nn.init.normal_(weight, 0.0, 2 / blocks / math.sqrt(dim))


class _LayerNorm(nn.Module):
    """LayerNorm without bias, weight stored as ``1 + w`` (xlstm's ``residual_weight``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), 1 + self.weight, None, self.eps)


class _HeadNorm(_LayerNorm):
    """xlstm's MultiHeadLayerNorm: a GroupNorm with one group per head over ``(..., H, DH)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H, DH) -> (..., H * DH)
        lead, H = x.shape[:-2], x.shape[-2]
        flat = x.reshape(-1, H * x.shape[-1])
        return F.group_norm(flat, H, 1 + self.weight, None, self.eps).view(*lead, -1)


class _Headwise(nn.Module):
    """Block-diagonal linear map: ``(..., n * b) -> (..., n * b)``, ``n`` blocks of ``b x b``."""

    def __init__(self, dim: int, blocks: int, init_dim: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, dim // blocks, dim // blocks))
        _small_init(self.weight, init_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.view(*x.shape[:-1], self.blocks, -1)  # (..., n, b)
        return torch.einsum("...hd,hod->...ho", xb, self.weight).reshape(x.shape)


class _CausalConv(nn.Module):
    """Depthwise causal conv with bias (xlstm's CausalConv1d): ``(B, L, C) -> (B, L, C)``."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return causal_conv(x, self.conv.weight.squeeze(1), self.conv.bias)

    def step(self, x_t: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return causal_conv_step(x_t, window, self.conv.weight.squeeze(1), self.conv.bias)

    def window(self, x: torch.Tensor) -> torch.Tensor:
        """The last ``K - 1`` inputs of ``x (B, L, C)`` as a step window ``(B, C, K - 1)``."""
        return causal_conv_window(x, self.conv.kernel_size[0])


class MLSTMLayer(nn.Module):
    def __init__(self, d: int, cfg: XLSTMConfig, blocks: int) -> None:
        super().__init__()
        E = _round_up(cfg.proj_factor * d, cfg.round_to)
        self.E, self.heads, self.cfg = E, cfg.heads, cfg
        self.proj_up = nn.Linear(d, 2 * E, bias=False)
        self.conv = _CausalConv(E, cfg.conv_kernel)
        self.q_proj = _Headwise(E, E // cfg.qkv_blocksize, d)
        self.k_proj = _Headwise(E, E // cfg.qkv_blocksize, d)
        self.v_proj = _Headwise(E, E // cfg.qkv_blocksize, d)
        self.igate = nn.Linear(3 * E, cfg.heads)
        self.fgate = nn.Linear(3 * E, cfg.heads)
        self.outnorm = _HeadNorm(E, cfg.norm_eps)
        self.skip = nn.Parameter(torch.ones(E))
        self.proj_down = nn.Linear(E, d, bias=False)
        _small_init(self.proj_up.weight, d)
        _wang_init(self.proj_down.weight, d, blocks)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, cfg.heads))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, 0.0, 0.1)

    def _inputs(self, x_m: torch.Tensor, x_c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v (..., NH, DH) and the gate pre-activations i, f (..., NH)."""
        q, k, v = self.q_proj(x_c), self.k_proj(x_c), self.v_proj(x_m)
        qkv = torch.cat([q, k, v], dim=-1)
        split = (*q.shape[:-1], self.heads, -1)
        return q.view(split), k.view(split), v.view(split), self.igate(qkv), self.fgate(qkv)

    def _out(self, h: torch.Tensor, x_c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.proj_down((self.outnorm(h) + self.skip * x_c) * F.silu(z))

    def forward(self, x: torch.Tensor, return_state: bool = False) -> Any:  # (B, L, D)
        x_m, z = self.proj_up(x).chunk(2, dim=-1)  # (B, L, E) each
        x_c = F.silu(self.conv(x_m))
        q, k, v, i, f = self._inputs(x_m, x_c)
        h, cell = mlstm_chunked(q, k, v, i, f, self.cfg.chunk)  # (B, L, NH, DH)
        y = self._out(h, x_c, z)
        if not return_state:
            return y
        return y, {"conv": self.conv.window(x_m), "cell": cell}

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        K = self.cfg.conv_kernel
        return {"conv": torch.zeros(batch, self.E, K - 1, device=device, dtype=dtype),
                "cell": mlstm_init_state(batch, self.heads, self.E // self.heads, device,
                                         torch.promote_types(dtype, torch.float32))}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        x_m, z = self.proj_up(x_t).chunk(2, dim=-1)  # (B, E) each
        x_c, window = self.conv.step(x_m, state["conv"])
        x_c = F.silu(x_c)
        q, k, v, i, f = self._inputs(x_m, x_c)
        h, cell = mlstm_step(q, k, v, i, f, state["cell"])
        return self._out(h, x_c, z), {"conv": window, "cell": cell}

    def state_numel(self, batch: int) -> int:
        DH = self.E // self.heads
        return batch * (self.E * (self.cfg.conv_kernel - 1) + self.heads * (DH * DH + DH + 1))

    def flops(self, tokens: int, seq_len: int) -> float:
        E, NH, bs, d = self.E, self.heads, self.cfg.qkv_blocksize, self.proj_up.in_features
        DH, Q = E // NH, min(self.cfg.chunk, seq_len)
        proj = 2 * d * 2 * E + 2 * E * self.cfg.conv_kernel + 3 * 2 * E * bs + 2 * 2 * 3 * E * NH
        cell = NH * (2 * Q * DH + 2 * Q * DH + 2 * DH * DH + 2 * DH * DH + 2 * DH)
        return float(tokens * (proj + cell + 2 * E * d))


class SLSTMLayer(nn.Module):
    def __init__(self, d: int, cfg: XLSTMConfig, block_idx: int, blocks: int) -> None:
        super().__init__()
        NH = cfg.heads
        DH = d // NH
        self.d, self.heads, self.cfg = d, NH, cfg
        self.conv = _CausalConv(d, cfg.conv_kernel)
        self.igate, self.fgate = _Headwise(d, NH, d), _Headwise(d, NH, d)
        self.zgate, self.ogate = _Headwise(d, NH, d), _Headwise(d, NH, d)
        self.recurrent = nn.Parameter(torch.zeros(NH, DH, 4 * DH))  # h_{t-1} -> i, f, z, o
        ratio = block_idx / (blocks - 1) if blocks > 1 else 0.0
        f_bias = -(-5.0 + 12.0 * (torch.arange(DH) / max(DH - 1, 1)) ** (0.3 + 1.3 * ratio))
        bias = torch.zeros(4, NH, DH)
        bias[1] = f_bias  # the reference's "powerlaw_blockdependent" forget-gate bias
        self.bias = nn.Parameter(bias)
        self.group_norm = _HeadNorm(d, cfg.norm_eps)

    def _pointwise(self, pre: tuple[torch.Tensor, ...], state: dict[str, torch.Tensor]
                   ) -> dict[str, torch.Tensor]:
        """One sLSTM step from the input pre-activations ``(B, NH, DH)`` x 4 (fp32 state)."""
        h, c, n, m = state["h"], state["c"], state["n"], state["m"]
        f32 = h.dtype  # at least fp32
        rec = torch.einsum("bhd,hde->bhe", h, self.recurrent.to(f32)).chunk(4, dim=-1)
        i, f, z, o = (p.to(f32) + r + b for p, r, b in zip(pre, rec, self.bias.to(f32),
                                                           strict=True))
        log_f_m = m + F.logsigmoid(f)
        m_new = torch.where(n == 0, i, torch.maximum(i, log_f_m))  # n = 0 only before step 1
        ig = torch.minimum(torch.exp(i - m_new), torch.ones_like(i))
        fg = torch.minimum(torch.exp(log_f_m - m_new), torch.ones_like(i))
        c = fg * c + ig * torch.tanh(z)
        n = fg * n + ig
        return {"h": torch.sigmoid(o) * c / n, "c": c, "n": n, "m": m_new}

    def _pre(self, x: torch.Tensor, x_c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        split = (*x.shape[:-1], self.heads, -1)
        return (self.igate(x_c).view(split), self.fgate(x_c).view(split),
                self.zgate(x).view(split), self.ogate(x).view(split))

    def forward(self, x: torch.Tensor, return_state: bool = False) -> Any:  # (B, L, D)
        x_c = F.silu(self.conv(x))
        state = self._zero_cell(x.shape[0], x.device, x.dtype)
        hs = []
        for pre in zip(*(p.unbind(1) for p in self._pre(x, x_c)), strict=True):  # over time
            state = self._pointwise(pre, state)
            hs.append(state["h"])
        y = self.group_norm(torch.stack(hs, dim=1)).to(x.dtype)  # (B, L, D)
        if not return_state:
            return y
        return y, {"conv": self.conv.window(x), "cell": state}

    def _zero_cell(self, batch: int, device: torch.device, dtype: torch.dtype
                   ) -> dict[str, torch.Tensor]:
        zero = torch.zeros(batch, self.heads, self.d // self.heads, device=device,
                           dtype=torch.promote_types(dtype, torch.float32))
        return {"h": zero, "c": zero, "n": zero, "m": zero}

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        K = self.cfg.conv_kernel
        return {"conv": torch.zeros(batch, self.d, K - 1, device=device, dtype=dtype),
                "cell": self._zero_cell(batch, device, dtype)}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        x_c, window = self.conv.step(x_t, state["conv"])
        cell = self._pointwise(self._pre(x_t, F.silu(x_c)), state["cell"])
        return self.group_norm(cell["h"]).to(x_t.dtype), {"conv": window, "cell": cell}

    def state_numel(self, batch: int) -> int:
        return batch * self.d * (self.cfg.conv_kernel - 1 + 4)

    def flops(self, tokens: int, seq_len: int) -> float:
        d, DH = self.d, self.d // self.heads
        return float(tokens * (2 * d * self.cfg.conv_kernel + 4 * 2 * d * DH + 2 * d * 4 * DH))


class _GatedFFN(nn.Module):
    def __init__(self, d: int, cfg: XLSTMConfig, blocks: int) -> None:
        super().__init__()
        U = _round_up(cfg.ffn_factor * d, cfg.round_to)
        self.proj_up = nn.Linear(d, 2 * U, bias=False)
        self.proj_down = nn.Linear(U, d, bias=False)
        _small_init(self.proj_up.weight, d)
        _wang_init(self.proj_down.weight, d, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.proj_up(x).chunk(2, dim=-1)
        return self.proj_down(F.gelu(gate) * up)


class _XBlock(nn.Module):
    """Pre-norm residual block: ``h + layer(LN(h))`` (``+ FFN(LN(h))`` for sLSTM blocks)."""

    def __init__(self, kind: str, d: int, cfg: XLSTMConfig, idx: int, blocks: int) -> None:
        super().__init__()
        self.kind = kind
        self.norm = _LayerNorm(d, cfg.norm_eps)
        self.layer: nn.Module = (MLSTMLayer(d, cfg, blocks) if kind == "m"
                                 else SLSTMLayer(d, cfg, idx, blocks))
        self.ffn_norm = _LayerNorm(d, cfg.norm_eps) if kind == "s" else None
        self.ffn = _GatedFFN(d, cfg, blocks) if kind == "s" else None

    def _ffn(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.ffn(self.ffn_norm(h)) if self.ffn is not None else h

    def forward(self, h: torch.Tensor, return_state: bool = False) -> Any:
        if not return_state:
            return self._ffn(h + self.layer(self.norm(h)))
        y, state = self.layer(self.norm(h), return_state=True)
        return self._ffn(h + y), state

    def step(self, h: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        y, state = self.layer.step(self.norm(h), state)
        return self._ffn(h + y), state


class XLSTM(Mixer):
    Config = XLSTMConfig
    supports_step: ClassVar[bool] = True

    def __init__(self, d_model: int, config: XLSTMConfig) -> None:
        super().__init__(d_model, config)
        if d_model % config.heads and "s" in config.pattern:
            raise ValueError(f"d_model={d_model} must be a multiple of heads={config.heads}")
        n = len(config.pattern)
        self.blocks = nn.ModuleList(_XBlock(kind, d_model, config, i, n)
                                    for i, kind in enumerate(config.pattern))
        paths = []
        if "m" in config.pattern:
            paths.append("torch-chunked-mlstm")
        if "s" in config.pattern:
            paths.append("torch-slstm-loop")
        self._train_path = "+".join(paths)

    @classmethod
    def d_model_multiple(cls, config: XLSTMConfig) -> int:
        return config.heads if "s" in config.pattern else 1

    def no_weight_decay(self) -> set[str]:
        """xlstm's optimizer groups: a parameter decays iff its name has ``weight`` and not
        ``norm``, so biases, norm weights, the skip, the sLSTM recurrence (the reference's
        ``_recurrent_kernel_``) and gate biases do not."""
        return {name for name, _ in self.named_parameters()
                if "weight" not in name or "norm" in name}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        self.kernel_path = self._train_path
        h = x
        for block in self.blocks:
            h = block(h)
        return h - x  # the blocks' residual branches; the backbone adds its own residual

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        self.kernel_path = self._train_path
        h, states = x, []
        for block in self.blocks:
            h, s = block(h, return_state=True)
            states.append(s)
        return h - x, states

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> list[Any]:
        return [b.layer.init_state(batch, device, dtype) for b in self.blocks]

    def step(self, x_t: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        self.kernel_path = "torch-step"
        h, new = x_t, []
        for block, s in zip(self.blocks, state, strict=True):
            h, s = block.step(h, s)
            new.append(s)
        return h - x_t, new

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        """Constant in ``seq_len``: conv windows, mLSTM ``(C, n, m)``, sLSTM ``(h, c, n, m)``."""
        return bytes_per_element * sum(b.layer.state_numel(batch) for b in self.blocks)

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Matmuls per block (multiply-add = 2). mLSTM: ``proj_up 4 L D E``, conv ``2 L E K``,
        headwise q, k, v ``3 x 2 L E b``, gates ``2 x 2 L 3E NH``, chunked cell per head
        (chunk ``Q``) ``2 L Q DH`` for scores, ``2 L Q DH`` scores x values, ``2 L DH^2`` chunk
        states, ``2 L DH^2 + 2 L DH`` incoming state, ``proj_down 2 L E D``. sLSTM: conv
        ``2 L D K``, four headwise projections ``8 L D DH``, recurrence ``8 L D DH``; its FFN
        ``4 L D U + 2 L U D``. Norms, gates and exponentials are not counted."""
        tokens = batch * seq_len
        flops = 0.0
        for block in self.blocks:
            flops += block.layer.flops(tokens, seq_len)
            if block.ffn is not None:
                U = block.ffn.proj_down.in_features
                flops += tokens * (4.0 * self.d_model * U + 2.0 * U * self.d_model)
        return flops
