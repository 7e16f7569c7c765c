"""Temporal convolutional network (Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic
Convolutional and Recurrent Networks for Sequence Modeling"), after ``TCN/tcn.py`` of
locuslab/TCN.

A stack of ``levels`` temporal blocks; block ``i`` (dilation ``d = 2^i``)::

    h = dropout(relu(causal_conv_d(x)))          two weight-normed dilated Conv1d, kernel k
    h = dropout(relu(causal_conv_d(h)))
    y = relu(h + (x, or a 1x1 conv of x where the widths differ))

A causal convolution pads ``(k - 1) d`` zeros on the left. The reference pads both sides and
cuts the right padding off again (``Chomp1d``); the outputs are the same, and padding one side
only saves computing the ``(k - 1) d`` outputs that would be cut. The receptive field is
``1 + 2 (k - 1) (2^levels - 1)`` steps (:meth:`TCN.receptive_field`).

Widths: every block has ``hidden`` channels (default ``d_model``) except the last, which
returns ``d_model``, so the mixer maps ``(B, L, D) -> (B, L, D)``; with ``hidden = d_model``
(the default) no block needs the 1x1 convolution. In the paper the TCN is the whole network
(input channels -> stack -> linear head, no norms or MLPs); ``levels`` makes one mixer that
whole stack.

Initialisation (``init``): the reference draws conv weights from N(0, 0.01) *after* wrapping
them in ``weight_norm``, whose pre-forward hook recomputes the weight from ``g`` and ``v`` and so
discards that draw (locuslab/TCN issue #1, confirmed by the authors). ``reference`` (default)
reproduces what that code runs: PyTorch's default Conv1d init, ``g = ||v||``, and N(0, 0.01)
only on the 1x1 convolution; ``normal`` applies the N(0, 0.01) the paper states to every conv
weight before weight norm.

Streaming: each convolution keeps a ring buffer of its last ``(k - 1) d`` inputs, a list of
``(B, C)`` tensors whose slot ``t mod (k - 1) d`` the step at time ``t`` replaces (no tensor is
copied or written in place, so a step costs ``O(k)`` per convolution, also under autograd;
the step updates and returns the state it was given). The state is constant in ``L``:
``sum over blocks of (C_in + C_out) (k - 1) 2^i`` values per sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from seqbench.worker.models.base import Mixer

Init = Literal["reference", "normal"]


@dataclass
class TCNConfig:
    levels: int = 8  # temporal blocks; dilations 1, 2, ..., 2^(levels - 1)
    kernel_size: int = 7  # the paper's adding problem; copy memory uses 8
    hidden: int | None = None  # channels of every block but the last; None = d_model
    dropout: float = 0.0  # after each ReLU inside the blocks (paper: 0 for adding and copy)
    init: Init = "reference"  # reference: what locuslab/TCN runs; normal: N(0, 0.01) weights

    def __post_init__(self) -> None:
        if self.levels < 1 or self.kernel_size < 2:
            raise ValueError("levels must be >= 1 and kernel_size >= 2")
        if self.hidden is not None and (isinstance(self.hidden, bool) or self.hidden < 1):
            raise ValueError("hidden must be a positive integer or null (= d_model)")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.init not in ("reference", "normal"):
            raise ValueError("init must be reference or normal")


def _weight_normed_conv(n_in: int, n_out: int, k: int, dilation: int, init: Init) -> nn.Conv1d:
    conv = nn.Conv1d(n_in, n_out, k, dilation=dilation)  # weight (n_out, n_in, k)
    if init == "normal":
        nn.init.normal_(conv.weight, 0.0, 0.01)
    return weight_norm(conv)  # g (n_out, 1, 1) = ||v|| per output channel at creation


class TemporalBlock(nn.Module):
    """Two causal dilated convolutions with a residual; ``(B, C_in, L) -> (B, C_out, L)``."""

    def __init__(self, n_in: int, n_out: int, k: int, dilation: int, dropout: float,
                 init: Init) -> None:
        super().__init__()
        self.pad = (k - 1) * dilation
        self.conv1 = _weight_normed_conv(n_in, n_out, k, dilation, init)
        self.conv2 = _weight_normed_conv(n_out, n_out, k, dilation, init)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None
        if self.downsample is not None:
            nn.init.normal_(self.downsample.weight, 0.0, 0.01)

    def _causal(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        return conv(F.pad(x, (self.pad, 0)))  # (B, C, L + pad) -> (B, C_out, L)

    def forward_with_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, h)``: the block output and the first conv's activation (the second's input)."""
        h = self.dropout1(F.relu(self._causal(self.conv1, x)))  # (B, C_out, L)
        out = self.dropout2(F.relu(self._causal(self.conv2, h)))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, L) -> (B, C_out, L)
        return self.forward_with_inputs(x)[0]

    def step(self, x_t: torch.Tensor, bufs: tuple[list[torch.Tensor], list[torch.Tensor]], t: int,
             weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One step at time ``t``: ``x_t (B, C_in) -> (B, C_out)``; updates the ring lists.
        ``weights`` are the two convs' effective (weight-normed) weights."""
        d = self.conv1.dilation[0]
        h = self.dropout1(F.relu(_ring_conv_step(weights[0], self.conv1.bias, x_t, bufs[0], t,
                                                 d)))
        out = self.dropout2(F.relu(_ring_conv_step(weights[1], self.conv2.bias, h, bufs[1], t,
                                                   d)))
        res = x_t if self.downsample is None else self.downsample(x_t.unsqueeze(-1)).squeeze(-1)
        return F.relu(out + res)


def _ring_conv_step(weight: torch.Tensor, bias: torch.Tensor, x_t: torch.Tensor,
                    ring: list[torch.Tensor], t: int, dilation: int) -> torch.Tensor:
    """Causal dilated conv at time ``t``: ``weight (C_out, C_in, k)``, ``x_t (B, C_in)``;
    ``ring`` holds input ``tau`` in slot ``tau mod (k - 1) d`` (zeros before the start).
    Returns ``(B, C_out)`` and puts ``x_t`` in its slot."""
    size = len(ring)
    k = weight.shape[-1]
    taps = [ring[(t - m * dilation) % size] for m in range(k - 1, 0, -1)]  # oldest first
    window = torch.stack([*taps, x_t], dim=-1)  # (B, C_in, k)
    y = torch.einsum("bck,ock->bo", window, weight) + bias
    ring[t % size] = x_t
    return y


def _ring_from_sequence(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The ring after a whole sequence ``x (B, C, L)``: ``x[..., tau]`` in slot
    ``tau mod size`` for the last ``size`` positions, zeros where ``tau < 0``."""
    L = x.shape[-1]
    zero = x.new_zeros(x.shape[0], x.shape[1])
    ring = [zero] * size
    first = max(0, L - size)
    for tau, x_tau in zip(range(first, L), x[..., first:].clone().unbind(-1), strict=True):
        ring[tau % size] = x_tau
    return ring


class TemporalConvNet(nn.Module):
    """locuslab/TCN's ``TemporalConvNet``: ``(B, n_inputs, L) -> (B, channels[-1], L)``."""

    def __init__(self, n_inputs: int, channels: list[int], kernel_size: int, dropout: float,
                 init: Init = "reference") -> None:
        super().__init__()
        widths = [n_inputs, *channels]
        self.blocks = nn.ModuleList(
            TemporalBlock(widths[i], widths[i + 1], kernel_size, 2 ** i, dropout, init)
            for i in range(len(channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class TCN(Mixer):
    Config = TCNConfig
    supports_step: ClassVar[bool] = True

    def __init__(self, d_model: int, config: TCNConfig) -> None:
        super().__init__(d_model, config)
        hidden = config.hidden or d_model
        channels = [hidden] * (config.levels - 1) + [d_model]
        self.network = TemporalConvNet(d_model, channels, config.kernel_size, config.dropout,
                                       config.init)

    def receptive_field(self) -> int:
        """Steps one output sees: ``1 + 2 (k - 1) (2^levels - 1)`` (two convs per block)."""
        k, n = self.config.kernel_size, self.config.levels
        return 1 + 2 * (k - 1) * (2 ** n - 1)

    def row_fields(self) -> dict[str, Any]:
        return {"receptive_field": self.receptive_field()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        self.kernel_path = "torch-conv1d"
        return self.network(x.transpose(1, 2)).transpose(1, 2)

    # --- streaming ---------------------------------------------------------------------------
    def _sizes(self) -> list[tuple[int, int, int]]:
        """(C_in, C_out, buffer length) per block."""
        return [(b.conv1.in_channels, b.conv1.out_channels, b.pad) for b in self.network.blocks]

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        bufs = [([torch.zeros(batch, c_in, device=device, dtype=dtype)] * n,
                 [torch.zeros(batch, c_out, device=device, dtype=dtype)] * n)
                for c_in, c_out, n in self._sizes()]
        return {"t": 0, "bufs": bufs}

    def _step_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's effective conv weights (weight norm applied); computed once per
        parameter version when no graph is built, since a step needs every one of them."""
        def compute() -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(b.conv1.weight, b.conv2.weight) for b in self.network.blocks]

        if torch.is_grad_enabled():
            return compute()
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if getattr(self, "_step_cache", (None,))[0] != key:
            self._step_cache = (key, compute())
        return self._step_cache[1]

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        self.kernel_path = "torch-ring-buffer"
        t = state["t"]
        for block, bufs, weights in zip(self.network.blocks, state["bufs"], self._step_weights(),
                                        strict=True):
            x_t = block.step(x_t, bufs, t, weights)  # (B, C)
        state["t"] = t + 1
        return x_t, state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:  # (B, L, D)
        self.kernel_path = "torch-conv1d"
        h = x.transpose(1, 2)  # (B, D, L)
        bufs = []
        for block in self.network.blocks:
            y, mid = block.forward_with_inputs(h)
            bufs.append((_ring_from_sequence(h, block.pad), _ring_from_sequence(mid, block.pad)))
            h = y
        return h.transpose(1, 2), {"t": x.shape[1], "bufs": bufs}

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return batch * bytes_per_element * sum((c_in + c_out) * n for c_in, c_out, n in
                                               self._sizes())

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Per block ``2 B L k (C_in C_out + C_out^2)``, plus ``2 B L C_in C_out`` for a 1x1
        residual conv; weight norm, ReLU and the residual adds are not counted."""
        flops = 0.0
        k = self.config.kernel_size
        for block in self.network.blocks:
            c_in, c_out = block.conv1.in_channels, block.conv1.out_channels
            flops += 2.0 * batch * seq_len * k * (c_in * c_out + c_out * c_out)
            if block.downsample is not None:
                flops += 2.0 * batch * seq_len * c_in * c_out
        return flops
