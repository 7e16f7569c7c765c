"""The model registry: one line per architecture, imported lazily.

A new architecture is one file in this package (a
:class:`~seqbench.worker.models.base.Mixer` subclass
with its ``Config`` dataclass) plus one ``MODELS.add(...)`` line in :mod:`seqbench.catalog`, the
torch-free catalogue that also gives every table and plot its display names, colours and order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Any

import torch

from seqbench.catalog import MODELS
from seqbench.config.params import check_dataclass
from seqbench.errors import SpecError
from seqbench.worker.models.base import (
    BACKBONE_KEYS,
    Backbone,
    BackboneConfig,
    IOSpec,
    Mixer,
    count_params,
)

BUDGET_KEY = "param_budget"  # size d_model so the whole model has about this many parameters
# backbone settings a bare model has nothing to apply to (it has no norms, MLPs or residuals)
NOT_BARE = ("mlp_ratio", "norm", "dropout")


def mixer_class(name: str) -> type[Mixer]:
    return MODELS[name].load()


def split_params(name: str, params: dict[str, Any],
                 where: str | None = None) -> tuple[BackboneConfig, Any, int | None]:
    """Split a model spec's flat params into backbone config, mixer config and budget, each
    checked strictly (:mod:`seqbench.config.params`). ``where`` names the params in errors.
    A ``backbone: bare`` model that sets one of :data:`NOT_BARE` is refused."""
    where = where or f"models.{name}.params"
    cls = mixer_class(name)
    params = dict(params)
    budget = params.pop(BUDGET_KEY, None)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int)
                               or budget < 1):
        raise SpecError(f"{where}.{BUDGET_KEY}", budget, "must be a positive integer")
    backbone = {k: params.pop(k) for k in list(params) if k in BACKBONE_KEYS}
    mixer_keys = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = [k for k in params if k not in mixer_keys]
    if unknown:
        allowed = sorted({BUDGET_KEY, *BACKBONE_KEYS, *mixer_keys})
        raise SpecError(f"{where}.{unknown[0]}", unknown[0],
                        f"unknown parameter of {name}; allowed: {', '.join(allowed)}")
    bb_cfg = check_dataclass(BackboneConfig, backbone, where)
    if bb_cfg.backbone == "bare":
        for key in NOT_BARE:
            if key in backbone:
                raise SpecError(f"{where}.{key}", backbone[key],
                                "not with backbone: bare (no norms, MLPs or residual dropout); "
                                "remove it, or use backbone: shared")
    mixer_cfg = check_dataclass(cls.Config, params, where)
    return bb_cfg, mixer_cfg, budget


def build_model(name: str, params: dict[str, Any], io: IOSpec) -> Backbone:
    """Build the backbone + mixer for a registered model from its flat spec params."""
    bb_cfg, mixer_cfg, budget = split_params(name, params)
    cls = mixer_class(name)
    if budget is not None:
        bb_cfg.d_model = size_to_budget(cls, mixer_cfg, bb_cfg, io, budget)
    return Backbone(cls, mixer_cfg, bb_cfg, io)


def _param_count(cls: type[Mixer], mixer_cfg: Any, bb_cfg: BackboneConfig, io: IOSpec) -> int:
    with torch.device("meta"):  # no memory, no init cost
        return count_params(Backbone(cls, mixer_cfg, bb_cfg, io))


def size_to_budget(cls: type[Mixer], mixer_cfg: Any, bb_cfg: BackboneConfig, io: IOSpec,
                   budget: int) -> int:
    """Largest d_model (a multiple of the mixer's) whose model stays within ``budget`` params.

    Parameter count grows monotonically with d_model, so a binary search over multiples is exact.
    """
    step = cls.d_model_multiple(mixer_cfg)

    def count(d: int) -> int:
        return _param_count(cls, mixer_cfg, BackboneConfig(**{**asdict(bb_cfg), "d_model": d}), io)

    lo, hi = 1, 1
    while count(hi * step) <= budget:
        lo, hi = hi, hi * 2
        if hi * step > 1 << 16:
            break
    if count(lo * step) > budget:
        raise SpecError(f"{BUDGET_KEY}", budget,
                        f"smallest {cls.__name__} has {count(step)} parameters")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid * step) <= budget else (lo, mid)
    return lo * step


__all__ = ["MODELS", "Backbone", "BackboneConfig", "IOSpec", "Mixer", "build_model",
           "count_params", "mixer_class", "size_to_budget", "split_params"]
