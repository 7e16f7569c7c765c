"""Synthetic long-range tasks of the TCN study (Bai et al. 2018, "An Empirical Evaluation of
Generic Convolutional and Recurrent Networks for Sequence Modeling"), exactly as specified below.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import Metric, Task, TaskInfo

N_SYMBOLS = 10  # copy memory: symbols to remember
CUE = 9  # copy memory: the recall marker


class CopyMemory(Task):
    """Copy memory with delay ``T`` (after Arjovsky et al. 2016), input length ``T + 20``.

    Worked example, T = 3 (input length 23)::

        x: 3 1 8 8 2 5 7 1 4 6 | 0 0 | 9 9 9 9 9 9 9 9 9 9 9
        y: 0 0 0 0 0 0 0 0 0 0   0 0   0 | 3 1 8 8 2 5 7 1 4 6

    Symbols are uniform on 1..8. The loss is cross-entropy over all ``T + 20`` positions (the
    TCN number); accuracy is over the 10 recalled positions only. A memoryless model that
    predicts zeros, then uniform over 1..8, scores ``10 ln 8 / (T + 20)``; chance accuracy 1/8.
    """

    version = 1

    @classmethod
    def input_len(cls, seq_len: int, params: dict) -> int:
        return seq_len + 2 * N_SYMBOLS

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        T = seq_len
        self.info = TaskInfo(
            input_kind="tokens", input_dim=10, output_kind="classes", output_dim=10,
            per_position=True, input_len=self.input_len(T, {}),
            metrics=(Metric("loss", False, "nats"), Metric("accuracy", True)),
            primary_metric="accuracy",
            baselines={"loss": N_SYMBOLS * math.log(8) / (T + 2 * N_SYMBOLS), "accuracy": 1 / 8},
            baseline_notes={"loss": "memoryless: zeros, then uniform over 1..8",
                            "accuracy": "chance on the recalled symbols"},
        )

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        T = self.seq_len
        symbols = torch.randint(1, 9, (batch_size, N_SYMBOLS), generator=gen, device=device)
        x = torch.zeros(batch_size, T + 2 * N_SYMBOLS, dtype=torch.long, device=device)
        x[:, :N_SYMBOLS] = symbols
        x[:, T + N_SYMBOLS - 1:] = CUE  # 11 copies of 9, the first is the cue
        y = torch.zeros_like(x)
        y[:, -N_SYMBOLS:] = symbols
        return x, y  # (B, T + 20) each

    def metric_sums(self, out, y):
        sums = super().metric_sums(out, y)
        recalled = out[:, -N_SYMBOLS:].argmax(-1) == y[:, -N_SYMBOLS:]
        sums["accuracy"] = (recalled.sum().item(), recalled.numel())
        return sums


class Adding(Task):
    """The adding problem (Hochreiter & Schmidhuber 1997; TCN variant), length ``T``.

    Worked example, T = 5: channel 0 holds values uniform in [0, 1), channel 1 a mask with
    exactly two ones at distinct uniformly drawn positions; the target is the sum of the two
    marked values::

        values: 0.31 0.92 0.07 0.55 0.18
        mask:   0    1    0    1    0      -> y = 0.92 + 0.55 = 1.47

    Metric: MSE of the pooled prediction. Predicting the constant 1 scores 1/6 in expectation.
    """

    version = 1

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        if seq_len < 2:  # two marked positions
            raise SpecError("seq_len", seq_len, "the adding problem marks two positions: at "
                            "least 2")

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        self.info = TaskInfo(
            input_kind="channels", input_dim=2, output_kind="regression", output_dim=1,
            per_position=False, input_len=seq_len,
            metrics=(Metric("mse", False),), primary_metric="mse",
            baselines={"mse": 1 / 6}, baseline_notes={"mse": "constant prediction 1"},
        )

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        T = self.seq_len
        values = torch.rand(batch_size, T, generator=gen, device=device)
        # two distinct positions, uniform over pairs: the top-2 of i.i.d. uniform keys
        marks = torch.rand(batch_size, T, generator=gen, device=device).topk(2, dim=1).indices
        mask = torch.zeros(batch_size, T, device=device).scatter_(1, marks, 1.0)
        x = torch.stack([values, mask], dim=-1)  # (B, T, 2)
        y = (values * mask).sum(dim=1, keepdim=True)  # (B, 1)
        return x, y
