"""The mixer contract and the backbone that wraps every architecture alike.

A *mixer* maps ``(B, L, D) -> (B, L, D)`` and is the only thing that differs between
architectures. The :class:`Backbone` wraps any mixer the same way, in one of two shapes
(``backbone`` in the model params)::

    shared (default)                                              bare
    tokens -> embedding | channels -> linear projection (B, L, D)  the same
    N x [norm -> mixer -> residual (-> norm -> MLP -> residual)]  N x mixer, stacked directly
    norm -> head (per position, or pooled: last or mean position) head (same pooling)

``shared`` makes parameter counts, norms and heads identical across RNNs, attention and SSMs.
``bare`` is the classic baseline shape of the papers (e.g. the ``nn.LSTM`` + linear head of
Bai, Kolter & Koltun 2018): no norms, no MLPs, no residuals and no residual dropout around the
mixer, only what the mixer itself holds (a TCN keeps its own residual temporal blocks; a mixer's
own ``layers`` stay one fused call). Setting ``mlp_ratio``, ``norm`` or ``dropout`` on a bare
model is refused (:func:`seqbench.worker.models.split_params`).
Optional streaming interface on a mixer: ``init_state(batch, device, dtype)``,
``step(x_t, state) -> (y_t, state)`` with ``x_t`` of shape ``(B, D)``, ``prefill(x)`` (a whole
prompt at once, returning the state after it) and ``state_size(L)``.

FLOP accounting (``forward_flops``) counts matrix multiplications only, a multiply-add being 2
FLOPs; norms, activations and residual adds (O(B L D) each) are left out, the convention of
Kaplan et al. (2020) and of nanoGPT's MFU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn


class Mixer(nn.Module):
    """Base class of sequence mixers: ``(B, L, D) -> (B, L, D)``, causal unless stated."""

    Config: ClassVar[type]  # dataclass with every mixer-specific default, once
    requires: ClassVar[tuple[str, ...]] = ()  # backends it needs, e.g. ("mamba_ssm",)
    supports_step: ClassVar[bool] = False  # has init_state/step for streaming inference
    # every kernel_path forward, prefill and step can report; () = not declared. The paths with
    # a trace signature (seqbench.worker.kernels_seen) can then be observed, and a claim
    # contradicted by the trace is replaced by the path that was seen
    kernel_paths: ClassVar[tuple[str, ...]] = ()

    def __init__(self, d_model: int, config: Any) -> None:
        super().__init__()
        self.d_model = d_model
        self.config = config
        self.kernel_path = "unknown"  # which kernel ran in the last forward

    @classmethod
    def unavailable_reason(cls, config: Any, device: torch.device) -> str | None:
        """None when this mixer can run on ``device``, else why not (e.g. an import error)."""
        return None

    @classmethod
    def d_model_multiple(cls, config: Any) -> int:
        """d_model must be a multiple of this (e.g. 2 x heads for rotary attention)."""
        return 1

    @classmethod
    def max_seq_len(cls, config: Any) -> int | None:
        """Longest sequence the mixer accepts (a positional table's size), None if unbounded."""
        return None

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Analytic FLOPs of one forward pass of this mixer (multiply-add = 2 FLOPs)."""
        raise NotImplementedError(f"{type(self).__name__} has no FLOP formula")

    def no_weight_decay(self) -> set[str]:
        """Names of parameters (relative to the mixer) excluded from weight decay."""
        return set()

    def row_fields(self) -> dict[str, Any]:
        """Row fields only this mixer knows (declared in the row schema), e.g. attention's
        dropout (which picks the kernel on CPU) or a convolution's receptive field."""
        return {}

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no recurrent step mode")

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError(f"{type(self).__name__} has no recurrent step mode")

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Stream a whole prompt: ``(B, L, D) -> (B, L, D)`` outputs and the state after it.

        This default steps token by token (right for any mixer with a step mode, slow for long
        prompts); mixers override it with their parallel form.
        """
        state = self.init_state(x.shape[0], x.device, x.dtype)
        ys = []
        for x_t in x.unbind(1):  # (B, D)
            y_t, state = self.step(x_t, state)
            ys.append(y_t)
        return torch.stack(ys, dim=1), state

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        """Bytes of streaming state after ``seq_len`` tokens (constant for RNNs/SSMs)."""
        raise NotImplementedError(f"{type(self).__name__} has no recurrent step mode")


def state_nbytes(state: Any) -> int:
    """Bytes held by the tensors of a (nested) streaming state."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


@dataclass
class BackboneConfig:
    d_model: int = 64
    n_layers: int = 1
    mlp_ratio: float = 2.0  # hidden width of the MLP after each mixer, x d_model; 0 disables it
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    dropout: float = 0.0  # residual dropout (attention dropout is the mixer's own setting)
    pooling: Literal["last", "mean"] = "last"  # pooled heads: last position suits causal mixers
    backbone: Literal["shared", "bare"] = "shared"  # bare: no norms, MLPs or residuals

    def __post_init__(self) -> None:
        if self.d_model < 1 or self.n_layers < 1:
            raise ValueError("d_model and n_layers must be positive")
        if self.mlp_ratio < 0 or not 0 <= self.dropout < 1:
            raise ValueError("mlp_ratio must be >= 0 and dropout in [0, 1)")
        if self.norm not in ("layernorm", "rmsnorm") or self.pooling not in ("last", "mean"):
            raise ValueError("norm must be layernorm|rmsnorm and pooling last|mean")
        if self.backbone not in ("shared", "bare"):
            raise ValueError("backbone must be shared or bare")


BACKBONE_KEYS = frozenset(f.name for f in dataclasses.fields(BackboneConfig))


@dataclass(frozen=True)
class IOSpec:
    """What the backbone reads and writes; comes from the task."""

    input_kind: Literal["tokens", "channels"]
    input_dim: int  # vocabulary size, or number of real-valued channels
    output_dim: int  # classes, or regression targets
    per_position: bool  # one output per position, or one pooled output per sequence


def _norm(kind: str, d: int) -> nn.Module:
    return nn.RMSNorm(d) if kind == "rmsnorm" else nn.LayerNorm(d)


class Block(nn.Module):
    def __init__(self, mixer: Mixer, cfg: BackboneConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm = _norm(cfg.norm, d)
        self.mixer = mixer
        self.drop = nn.Dropout(cfg.dropout)
        hidden = round(cfg.mlp_ratio * d)
        self.mlp: nn.Sequential | None = None
        if hidden > 0:
            self.mlp_norm = _norm(cfg.norm, d)
            self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        x = x + self.drop(self.mixer(self.norm(x)))
        if self.mlp is not None:
            x = x + self.drop(self.mlp(self.mlp_norm(x)))
        return x

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:  # (B, D)
        y_t, state = self.mixer.step(self.norm(x_t), state)
        x_t = x_t + y_t
        if self.mlp is not None:
            x_t = x_t + self.mlp(self.mlp_norm(x_t))
        return x_t, state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:  # (B, L, D)
        y, state = self.mixer.prefill(self.norm(x))
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state

    def mlp_flops(self, tokens: int) -> float:
        """Two matmuls of the MLP (D -> hidden -> D) over ``tokens`` positions."""
        if self.mlp is None:
            return 0.0
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        return 2.0 * tokens * 2 * first.in_features * first.out_features


class BareLayer(nn.Module):
    """The mixer alone, as a layer of the ``bare`` backbone: nothing before or after it."""

    def __init__(self, mixer: Mixer) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        return self.mixer(x)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:  # (B, D)
        return self.mixer.step(x_t, state)

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:  # (B, L, D)
        return self.mixer.prefill(x)

    def mlp_flops(self, tokens: int) -> float:
        return 0.0


class Backbone(nn.Module):
    """Embedding/projection -> N mixer layers -> head: ``shared`` (each layer a pre-norm
    :class:`Block`, a final norm) or ``bare`` (each layer the mixer alone, no final norm)."""

    def __init__(self, mixer_cls: type[Mixer], mixer_cfg: Any, cfg: BackboneConfig, io: IOSpec):
        super().__init__()
        self.cfg, self.io = cfg, io
        d = cfg.d_model
        if d % mixer_cls.d_model_multiple(mixer_cfg):
            raise ValueError(f"d_model={d} must be a multiple of "
                             f"{mixer_cls.d_model_multiple(mixer_cfg)} for {mixer_cls.__name__}")
        if io.input_kind == "tokens":
            self.embed: nn.Module = nn.Embedding(io.input_dim, d)
        else:
            self.embed = nn.Linear(io.input_dim, d)
        bare = cfg.backbone == "bare"
        self.blocks = nn.ModuleList(
            BareLayer(mixer_cls(d, mixer_cfg)) if bare else Block(mixer_cls(d, mixer_cfg), cfg)
            for _ in range(cfg.n_layers))
        self.mixers: list[Mixer] = [block.mixer for block in self.blocks]
        self.norm_f: nn.Module = nn.Identity() if bare else _norm(cfg.norm, d)
        self.head = nn.Linear(d, io.output_dim)

    @property
    def kernel_path(self) -> str:
        paths = {m.kernel_path for m in self.mixers}
        return paths.pop() if len(paths) == 1 else "+".join(sorted(paths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L) int64 tokens, or (B, L, C) real channels
        h = self.embed(x)  # (B, L, D)
        for block in self.blocks:
            h = block(h)
        h = self.norm_f(h)
        if not self.io.per_position:
            h = h[:, -1] if self.cfg.pooling == "last" else h.mean(dim=1)  # (B, D)
        return self.head(h)  # (B, L, out) or (B, out)

    # --- streaming inference: one token at a time through every block --------------------
    @property
    def supports_step(self) -> bool:
        return all(m.supports_step for m in self.mixers)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> list[Any]:
        return [m.init_state(batch, device, dtype) for m in self.mixers]

    def step(self, x_t: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        # x_t: (B,) tokens or (B, C) channels -> per-position output (B, out)
        h = self.embed(x_t)  # (B, D)
        new_state = []
        for block, s in zip(self.blocks, state, strict=True):
            h, s = block.step(h, s)
            new_state.append(s)
        return self.head(self.norm_f(h)), new_state

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        """Stream a prompt ``x`` ((B, L) tokens or (B, L, C) channels) in one call: the
        per-position outputs (B, L, out) and the state with which :meth:`step` continues."""
        h = self.embed(x)  # (B, L, D)
        state = []
        for block in self.blocks:
            h, s = block.prefill(h)
            state.append(s)
        return self.head(self.norm_f(h)), state

    def state_size(self, seq_len: int, batch: int = 1, bytes_per_element: int = 4) -> int:
        return sum(m.state_size(seq_len, batch, bytes_per_element) for m in self.mixers)

    def forward_flops(self, batch: int, seq_len: int) -> float:
        """Matmul FLOPs of one forward pass over ``(batch, seq_len)``: the input projection (an
        embedding lookup costs none), each mixer's own formula, the MLPs (none when bare), and
        the head (every
        position, or one pooled position). Raises NotImplementedError when a mixer has none."""
        tokens = batch * seq_len
        d = self.cfg.d_model
        flops = 0.0 if self.io.input_kind == "tokens" else 2.0 * tokens * self.io.input_dim * d
        for block, mixer in zip(self.blocks, self.mixers, strict=True):
            flops += mixer.forward_flops(batch, seq_len) + block.mlp_flops(tokens)
        head_positions = tokens if self.io.per_position else batch
        return flops + 2.0 * head_positions * d * self.io.output_dim

    def row_fields(self) -> dict[str, Any]:
        """The mixers' own row fields (every block's mixer has the same config); stacked
        receptive fields add up: ``sum(rf - 1) + 1`` over the blocks."""
        fields = self.mixers[0].row_fields()
        if "receptive_field" in fields:
            fields["receptive_field"] = 1 + sum(m.row_fields()["receptive_field"] - 1
                                                for m in self.mixers)
        return fields

    def no_weight_decay(self) -> set[str]:
        names = set()
        for i, mixer in enumerate(self.mixers):
            names |= {f"blocks.{i}.mixer.{n}" for n in mixer.no_weight_decay()}
        return names


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
