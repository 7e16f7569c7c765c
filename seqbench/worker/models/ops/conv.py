"""The short causal depthwise convolution in front of Mamba's and Mamba-2's scans, as a full
sequence op and as a streaming step (what ``causal_conv1d`` provides on CUDA).

Channel ``c`` of the output at time ``t`` is ``bias[c] + sum_k weight[c, k] x[t - K + 1 + k, c]``
with zeros before the start, so the output never sees the future.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
