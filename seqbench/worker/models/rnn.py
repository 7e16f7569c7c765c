"""Classic recurrent mixers: Elman RNN (tanh), LSTM (Hochreiter & Schmidhuber 1997) and GRU
(Cho et al. 2014), all through ``torch.nn`` so CUDA runs cuDNN's fused kernels.

The hidden size equals ``d_model``; stacked layers inside one mixer stay in one fused call.

FLOPs of a forward pass: every layer and position multiplies the input and the previous hidden
state by ``gates`` matrices of ``D x D`` each (RNN 1 gate, GRU 3, LSTM 4), so
``layers x gates x 2 x 2 D^2`` per token; the gates' elementwise work is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seqbench.worker.models.base import Mixer


@dataclass
class RecurrentConfig:
    layers: int = 1  # stacked recurrent layers inside one fused cuDNN call
    dropout: float = 0.0  # between stacked layers (torch.nn semantics)

    def __post_init__(self) -> None:
        if self.layers < 1 or not 0 <= self.dropout < 1:
            raise ValueError("layers must be >= 1 and dropout in [0, 1)")


class _Recurrent(Mixer):
    Config = RecurrentConfig
    supports_step: ClassVar[bool] = True
    cell: ClassVar[type[nn.RNN] | type[nn.LSTM] | type[nn.GRU]]
    states_per_layer: ClassVar[int] = 1  # LSTM carries (h, c)
    gates: ClassVar[int] = 1  # D x D weight blocks per input (RNN 1, GRU 3, LSTM 4)
    kernel_paths: ClassVar[tuple[str, ...]] = ("cudnn", "aten-cpu", "aten-cuda")

    def __init__(self, d_model: int, config: RecurrentConfig) -> None:
        super().__init__(d_model, config)
        kwargs: dict[str, Any] = {"nonlinearity": "tanh"} if self.cell is nn.RNN else {}
        self.rnn = self.cell(d_model, d_model, num_layers=config.layers, batch_first=True,
                             dropout=config.dropout if config.layers > 1 else 0.0, **kwargs)

    def _kernel(self, x: torch.Tensor) -> str:
        if x.is_cuda and torch.backends.cudnn.enabled and torch.backends.cudnn.is_available():
            return "cudnn"
        return f"aten-{x.device.type}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        self.kernel_path = self._kernel(x)
        y, _ = self.rnn(x)
        return y

    def forward_flops(self, batch: int, seq_len: int) -> float:
        d = self.d_model
        return 2.0 * batch * seq_len * self.config.layers * self.gates * 2 * d * d

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        h = torch.zeros(self.config.layers, batch, self.d_model, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.states_per_layer == 2 else h

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:  # (B, D)
        self.kernel_path = self._kernel(x_t)
        y, state = self.rnn(x_t.unsqueeze(1), state)  # (B, 1, D)
        return y.squeeze(1), state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:  # (B, L, D)
        self.kernel_path = self._kernel(x)
        return self.rnn(x)  # the fused call returns the final (h) or (h, c) as the state

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return self.states_per_layer * self.config.layers * batch * self.d_model * bytes_per_element


class RNN(_Recurrent):
    cell = nn.RNN


class LSTM(_Recurrent):
    cell = nn.LSTM
    states_per_layer = 2
    gates = 4


class GRU(_Recurrent):
    cell = nn.GRU
    gates = 3
