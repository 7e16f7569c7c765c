"""The short causal depthwise convolution in front of Mamba's and Mamba-2's scans, as a full
sequence op and as a streaming step (what ``causal_conv1d`` provides on CUDA), and a fused CPU
kernel (:func:`causal_conv_fused`) that reads the (B, L, C) layout in place and applies the silu
that follows it: the PyTorch path transposes to (B, C, L) and back, and the silu backward on
that transposed view was 10x slower than on a contiguous tensor (90 ms of a 650 ms Mamba-2
step at L = 2048, batch 8, one thread).

Channel ``c`` of the output at time ``t`` is ``bias[c] + sum_k weight[c, k] x[t - K + 1 + k, c]``
with zeros before the start, so the output never sees the future.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from seqbench.worker.models.ops import native


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x (B, L, C)``, ``weight (C, K)`` -> ``(B, L, C)``."""
    L, K = x.shape[1], weight.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=K - 1,
                 groups=weight.shape[0])  # (B, C, L + K - 1)
    return y[..., :L].transpose(1, 2)


def causal_conv_step(x_t: torch.Tensor, window: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: ``x_t (B, C)``, ``window (B, C, K - 1)`` holds the previous ``K - 1`` inputs.

    Returns ``(y_t (B, C), new window)``.
    """
    full = torch.cat([window, x_t.unsqueeze(-1)], dim=-1)  # (B, C, K)
    y = (full * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return y, full[..., 1:]


def causal_conv_window(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """The window :func:`causal_conv_step` continues from after a whole sequence ``x (B, L, C)``:
    its last ``kernel - 1`` inputs as ``(B, C, kernel - 1)``, zeros where ``L`` is shorter."""
    w = x.transpose(1, 2)  # (B, C, L)
    w = F.pad(w, (max(0, kernel - 1 - w.shape[-1]), 0))
    return w[..., w.shape[-1] - (kernel - 1):]


class _FusedConv(torch.autograd.Function):
    """:func:`causal_conv` (optionally followed by silu) in the (B, L, C) layout, in one C++
    pass (:mod:`seqbench.worker.models.ops.native`); the backward recomputes the pre-activation
    rather than storing it."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        f = native.compute_dtype(x, weight, bias)
        x = native.operand(x, f)
        wt = weight.to(f).t().contiguous()  # (K, C)
        bias = None if bias is None else bias.to(f).contiguous()
        Bz, L, C = x.shape
        out = x.new_empty(Bz, L, C)
        args = native.fill(native.ConvArgs(), x=native.rows(x), wt=wt.data_ptr(),
                           bias=native.ptr(bias), out=out.data_ptr(), Bz=Bz, L=L, C=C,
                           K=wt.shape[0], silu=int(silu), nthreads=native.num_threads())
        if L > 0:
            native.call("conv", "fwd", f, args)
        ctx.save_for_backward(x, wt, bias)
        ctx.meta = (dtypes, silu)
        return out.to(dtypes[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, gout):
        x, wt, bias = ctx.saved_tensors
        dtypes, silu = ctx.meta
        Bz, L, C = x.shape
        K = wt.shape[0]
        gout = gout.to(x.dtype).contiguous()
        gx = x.new_empty(Bz, L, C)
        gw = x.new_zeros(Bz, K, C)  # partial sums per batch element
        gb = None if bias is None else x.new_zeros(Bz, C)
        args = native.fill(native.ConvArgs(), x=native.rows(x), wt=wt.data_ptr(),
                           bias=native.ptr(bias), gout=gout.data_ptr(), gx=gx.data_ptr(),
                           gw=gw.data_ptr(), gbias=native.ptr(gb), Bz=Bz, L=L, C=C, K=K,
                           silu=int(silu), nthreads=native.num_threads())
        if L > 0:
            native.call("conv", "bwd", x.dtype, args)
        gw = gw.sum(0).t().to(dtypes[1])  # (C, K)
        gb = None if gb is None else gb.sum(0).to(dtypes[2])
        return gx.to(dtypes[0]), gw, gb, None


def causal_conv_fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      silu: bool = False) -> torch.Tensor:
    """Fused CPU :func:`causal_conv` (then ``silu`` when asked): ``x (B, L, C)`` read in place
    (any row stride), ``weight (C, K)`` -> ``(B, L, C)`` contiguous. Needs
    :func:`native.library`; computed in fp32 (fp64 stays fp64), returned in ``x``'s dtype.
    Kernels wider than 16 taps take the PyTorch path."""
    if weight.shape[1] > native.library().sb_conv_max_taps():  # wider than the kernel's ring
        y = causal_conv(x, weight, bias)
        return F.silu(y) if silu else y
    with torch.autocast(x.device.type, enabled=False):
        return _FusedConv.apply(x, weight, bias, silu)
