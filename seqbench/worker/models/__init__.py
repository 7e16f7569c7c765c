"""The model registry: one line per architecture, imported lazily.

A new architecture is one file in this package (a
:class:`~seqbench.worker.models.base.Mixer` subclass
with its ``Config`` dataclass) plus one ``MODELS.add(...)`` line in :mod:`seqbench.catalog`, the
torch-free catalogue that also gives every table and plot its display names, colours and order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from dataclasses import asdict, dataclass
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

# budgets: at most one of these keys in a model's params sizes the model to it
BUDGET_KEY = "param_budget"  # parameters of the whole model
STATE_BUDGET_KEY = "state_budget"  # bytes of recurrent state per sequence (batch 1)
FLOPS_BUDGET_KEY = "flops_budget"  # forward FLOPs per token (matmuls, multiply-add = 2)
TOLERANCE_KEY = "budget_tolerance"  # fit within this fraction below the budget
BUDGET_KINDS = {BUDGET_KEY: "params", STATE_BUDGET_KEY: "state_bytes",
                FLOPS_BUDGET_KEY: "flops_per_token"}
BUDGET_PARAMS = frozenset({*BUDGET_KINDS, TOLERANCE_KEY})
DEFAULT_TOLERANCE = 0.05  # what a row calls matched when the spec names no tolerance
MAX_D_MODEL = 1 << 16
MAX_WIDER = 64  # widths above the first fit tried when the MLP width is adjusted
# backbone settings a bare model has nothing to apply to (it has no norms, MLPs or residuals)
NOT_BARE = ("mlp_ratio", "norm", "dropout")


def mixer_class(name: str) -> type[Mixer]:
    return MODELS[name].load()


@dataclass(frozen=True)
class Budget:
    """A model's budget: ``key`` (one of :data:`BUDGET_KINDS`), ``target`` in its unit, and the
    ``tolerance`` to fit within (None: the first spec format's sizing, the largest d_model
    within the budget at the spec's MLP ratio; the row is then judged at 5%)."""

    key: str
    target: float
    tolerance: float | None = None

    @property
    def kind(self) -> str:
        return BUDGET_KINDS[self.key]


def _number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if integer else math.isfinite(value)


def _budget(params: dict[str, Any], where: str) -> Budget | None:
    """Pop the budget keys from ``params`` (checked strictly) and return the budget."""
    found = [k for k in BUDGET_KINDS if k in params]
    if len(found) > 1:
        raise SpecError(f"{where}.{found[1]}", params[found[1]],
                        f"a model takes one budget; {found[0]} is already set")
    tolerance = params.pop(TOLERANCE_KEY, None)
    if tolerance is not None and not (_number(tolerance, False) and 0 < tolerance < 1):
        raise SpecError(f"{where}.{TOLERANCE_KEY}", tolerance, "a number in (0, 1), e.g. 0.05")
    if not found:
        if tolerance is not None:
            raise SpecError(f"{where}.{TOLERANCE_KEY}", tolerance, "needs a budget: "
                            f"{', '.join(BUDGET_KINDS)}")
        return None
    key = found[0]
    value = params.pop(key)
    integer = key != FLOPS_BUDGET_KEY
    if not _number(value, integer) or value <= 0:
        raise SpecError(f"{where}.{key}", value, "must be a positive integer" if integer
                        else "must be a positive number")
    return Budget(key, float(value), None if tolerance is None else float(tolerance))


def split_params(name: str, params: dict[str, Any],
                 where: str | None = None) -> tuple[BackboneConfig, Any, Budget | None]:
    """Split a model spec's flat params into backbone config, mixer config and budget, each
    checked strictly (:mod:`seqbench.config.params`). ``where`` names the params in errors.
    A ``backbone: bare`` model that sets one of :data:`NOT_BARE` is refused."""
    where = where or f"models.{name}.params"
    cls = mixer_class(name)
    params = dict(params)
    budget = _budget(params, where)
    backbone = {k: params.pop(k) for k in list(params) if k in BACKBONE_KEYS}
    mixer_keys = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = [k for k in params if k not in mixer_keys]
    if unknown:
        allowed = sorted({*BUDGET_PARAMS, *BACKBONE_KEYS, *mixer_keys})
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


# the sizing each budgeted model was built with, for its row (see sizing_fields)
_SIZINGS: weakref.WeakKeyDictionary[Backbone, Sizing] = weakref.WeakKeyDictionary()


def build_model(name: str, params: dict[str, Any], io: IOSpec, *, input_len: int | None = None,
                element_bytes: int = 4) -> Backbone:
    """Build the backbone + mixer for a registered model from its flat spec params.

    A budget in the params sizes the model first (:func:`fit_budget`); a state or FLOPs budget
    needs ``input_len`` (the model's input length: a KV cache and attention's FLOPs grow with
    it) and ``element_bytes`` (of the parameter dtype, for the state's bytes)."""
    bb_cfg, mixer_cfg, budget = split_params(name, params)
    cls = mixer_class(name)
    sizing = None
    if budget is not None:
        sizing = fit_budget(cls, mixer_cfg, bb_cfg, io, budget, input_len=input_len,
                            element_bytes=element_bytes)
        bb_cfg = sizing.backbone(bb_cfg)
    model = Backbone(cls, mixer_cfg, bb_cfg, io)
    if sizing is not None:
        _SIZINGS[model] = sizing
    return model


def sizing_fields(model: Backbone, input_len: int) -> dict[str, Any]:
    """Row fields of a built model's size: its state per sequence and forward FLOPs per token
    at ``input_len`` (where the mixer has the formula), and, when a budget sized it, what was
    matched (:meth:`Sizing.fields`)."""
    element = next(model.parameters()).element_size()
    out: dict[str, Any] = {}
    with contextlib.suppress(NotImplementedError):
        out["state_size_bytes"] = int(model.state_size(input_len, 1, element))
    with contextlib.suppress(NotImplementedError):
        out["flops_per_token"] = float(model.forward_flops(1, input_len)) / input_len
    sizing = _SIZINGS.get(model)
    if sizing is not None:
        out.update(sizing.fields())
    return out


def _param_count(cls: type[Mixer], mixer_cfg: Any, bb_cfg: BackboneConfig, io: IOSpec) -> int:
    with torch.device("meta"):  # no memory, no init cost
        return count_params(Backbone(cls, mixer_cfg, bb_cfg, io))


@dataclass(frozen=True)
class Sizing:
    """How a budget was met: the width and MLP ratio built, the value achieved (in the
    budget's unit), what was adjusted and, when the budget is not matched, why not."""

    budget: Budget
    d_model: int
    mlp_ratio: float
    achieved: float
    adjusted: dict[str, Any]
    note: str = ""

    @property
    def tolerance(self) -> float:
        return DEFAULT_TOLERANCE if self.budget.tolerance is None else self.budget.tolerance

    @property
    def matched(self) -> bool:
        """Within the tolerance below the budget (never above it)."""
        return (1 - self.tolerance) * self.budget.target <= self.achieved <= self.budget.target

    def backbone(self, bb_cfg: BackboneConfig) -> BackboneConfig:
        return BackboneConfig(**{**asdict(bb_cfg), "d_model": self.d_model,
                                 "mlp_ratio": self.mlp_ratio})

    def fields(self) -> dict[str, Any]:
        """The row fields (declared in recording/schema.py, "budgets and search")."""
        return {"budget_kind": self.budget.kind, "budget_target": self.budget.target,
                "budget_achieved": float(self.achieved),
                "budget_ratio": float(self.achieved / self.budget.target),
                "budget_tolerance": self.tolerance, "budget_matched": self.matched,
                "budget_adjusted": dict(self.adjusted), "budget_note": self.note}


_MEASURED: dict[tuple[Any, ...], float] = {}  # every value measured in this process


class _Measure:
    """The budgeted quantity of the model at (d_model, MLP hidden width), memoized for the
    process (a spec check and a search's trial suites size the same models again); models are
    built on the meta device (no memory, no initialisation)."""

    def __init__(self, cls: type[Mixer], mixer_cfg: Any, bb_cfg: BackboneConfig, io: IOSpec,
                 key: str, input_len: int | None, element_bytes: int) -> None:
        if key != BUDGET_KEY and input_len is None:
            raise ValueError(f"{key} needs the model's input length")
        self.cls, self.mixer_cfg, self.bb_cfg, self.io, self.key = cls, mixer_cfg, bb_cfg, io, key
        self.input_len = (input_len or 1) if key != BUDGET_KEY else 1
        self.element_bytes = element_bytes if key == STATE_BUDGET_KEY else 4
        self.prefix = (cls.__module__, cls.__qualname__, repr(mixer_cfg), io, key,
                       self.input_len, self.element_bytes)

    def __call__(self, d: int, hidden: int) -> float:
        ratio = hidden / d
        assert round(ratio * d) == hidden  # the Block's own rounding gives this width
        bb = BackboneConfig(**{**asdict(self.bb_cfg), "d_model": d, "mlp_ratio": ratio})
        cache_key = (*self.prefix, repr(bb))
        if cache_key not in _MEASURED:
            with torch.device("meta"):
                model = Backbone(self.cls, self.mixer_cfg, bb, self.io)
            if self.key == BUDGET_KEY:
                value = float(count_params(model))
            elif self.key == STATE_BUDGET_KEY:
                value = float(model.state_size(self.input_len, 1, self.element_bytes))
            else:
                value = float(model.forward_flops(1, self.input_len)) / self.input_len
            _MEASURED[cache_key] = value
        return _MEASURED[cache_key]

    def widest_mlp(self, d: int, target: float) -> int:
        """The largest MLP width h >= 1 with the quantity within ``target`` at width ``d``
        (given it is at h = 1). Parameters and FLOPs are affine in h for h >= 1 (two linear
        maps D -> h -> D), so h is solved for and then checked, never assumed."""
        m1, m2 = self(d, 1), self(d, 2)
        slope = m2 - m1
        if slope <= 0:
            return 1
        hidden = max(1, min(64 * d, 1 + math.floor((target - m1) / slope)))
        while hidden > 1 and self(d, hidden) > target:
            hidden -= 1
        while hidden < 64 * d and self(d, hidden + 1) <= target:
            hidden += 1
        return hidden


def _largest(ok: Any, lo: int, hi_limit: int) -> int:
    """The largest k in [lo, hi_limit] with ok(k), given ok(lo) and ok monotone (true then
    false): doubling, then bisection."""
    hi = lo
    while hi < hi_limit and ok(min(hi * 2, hi_limit)):
        hi = min(hi * 2, hi_limit)
    if hi == hi_limit:
        return hi
    top = min(hi * 2, hi_limit)  # ok(top) is false
    while top - hi > 1:
        mid = (hi + top) // 2
        hi, top = (mid, top) if ok(mid) else (hi, mid)
    return hi


def fit_budget(cls: type[Mixer], mixer_cfg: Any, bb_cfg: BackboneConfig, io: IOSpec,
               budget: Budget, *, input_len: int | None = None,
               element_bytes: int = 4) -> Sizing:
    """Size a model to ``budget`` (never above it).

    First the largest d_model (a multiple of the mixer's :meth:`~Mixer.d_model_multiple`)
    within the budget at the spec's MLP ratio: the first spec format's sizing, and all of it
    when the budget has no tolerance. With a tolerance, a model that lands more than that
    below the budget (a mixer whose widths come in coarse steps, e.g. Mamba-2's whole heads, or
    whose size grows steeply with the width, e.g. a TCN's stacked convolutions) has its MLP
    width adjusted too: among the widths from that one up, each with the largest MLP width
    that keeps it within the budget, the one within the tolerance whose MLP ratio is closest
    to the spec's (in log ratio; ties: the wider). The budget's quantity must grow with both
    widths; a quantity the MLP does not change (the recurrent state) is met by the width
    alone. ``adjusted`` names what was set; ``note`` says why a budget is not matched.
    Raises SpecError when even the smallest width exceeds the budget.
    """
    measure = _Measure(cls, mixer_cfg, bb_cfg, io, budget.key, input_len, element_bytes)
    bare = bb_cfg.backbone == "bare"  # no MLP to adjust: the width alone meets the budget
    step, target = cls.d_model_multiple(mixer_cfg), budget.target
    ratio = 0.0 if bare else bb_cfg.mlp_ratio

    def nominal(d: int) -> int:
        return round(ratio * d)

    def fits(k: int) -> bool:
        return measure(k * step, nominal(k * step)) <= target

    if not fits(1):
        raise SpecError(budget.key, _shown(target),
                        f"smallest {cls.__name__} (d_model={step}) has "
                        f"{_shown(measure(step, nominal(step)))} {_UNITS[budget.key]}")
    d0 = _largest(fits, 1, MAX_D_MODEL // step) * step
    first = Sizing(budget, d0, ratio, measure(d0, nominal(d0)), {"d_model": d0})
    if first.matched or budget.tolerance is None:
        return first if first.matched else _why_not(first, step, ratio)
    if nominal(d0) == 0 or measure(d0, nominal(d0) + 1) == measure(d0, nominal(d0)):
        return _why_not(first, step, ratio)
    low = (1 - budget.tolerance) * target
    best: tuple[float, int, int, float] | None = None  # (distortion, -d, hidden, value)
    for d in range(d0, min(d0 + MAX_WIDER * step, MAX_D_MODEL) + 1, step):
        if measure(d, 1) > target:
            break
        hidden = measure.widest_mlp(d, target)
        value = measure(d, hidden)
        if value >= low:
            key = (abs(math.log(hidden / d / ratio)), -d, hidden, value)
            best = key if best is None or key[:2] < best[:2] else best
    if best is None:
        return _why_not(first, step, ratio)
    d, hidden, value = -best[1], best[2], best[3]
    return Sizing(budget, d, hidden / d, value,
                  {"d_model": d, "mlp_ratio": hidden / d, "mlp_hidden": hidden})


_UNITS = {BUDGET_KEY: "parameters", STATE_BUDGET_KEY: "bytes of state per sequence",
          FLOPS_BUDGET_KEY: "FLOPs per token"}


def _shown(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(f"{value:.6g}")


def _why_not(sizing: Sizing, step: int, ratio: float) -> Sizing:
    """``sizing`` with a note saying why it is not within its tolerance (or none if it is)."""
    if sizing.matched:
        return sizing
    budget = sizing.budget
    got = f"{_shown(sizing.achieved)} of {_shown(budget.target)} {_UNITS[budget.key]}"
    if budget.key == STATE_BUDGET_KEY:
        reason = f"{got}: the state grows with d_model only, in steps of {step} here"
    elif budget.tolerance is None:
        reason = (f"{got}: d_model comes in steps of {step} here; set {TOLERANCE_KEY} to "
                  "adjust the MLP width too")
    elif ratio == 0:
        reason = (f"{got}: d_model comes in steps of {step} here and the model has no MLP "
                  "(mlp_ratio 0, or backbone: bare)")
    else:
        reason = (f"{got}: no d_model (steps of {step}) with an MLP width lands within "
                  f"{budget.tolerance:g} of the budget")
    return Sizing(budget, sizing.d_model, sizing.mlp_ratio, sizing.achieved, sizing.adjusted,
                  reason)


def size_to_budget(cls: type[Mixer], mixer_cfg: Any, bb_cfg: BackboneConfig, io: IOSpec,
                   budget: int) -> int:
    """Largest d_model (a multiple of the mixer's) whose model stays within ``budget`` params
    at the spec's MLP ratio (the first spec format's sizing; :func:`fit_budget` does more).

    Parameter count grows monotonically with d_model, so a binary search over multiples is exact.
    """
    return fit_budget(cls, mixer_cfg, bb_cfg, io, Budget(BUDGET_KEY, float(budget))).d_model


__all__ = ["MODELS", "Backbone", "BackboneConfig", "Budget", "IOSpec", "Mixer", "Sizing",
           "build_model", "count_params", "fit_budget", "mixer_class", "size_to_budget",
           "sizing_fields", "split_params"]
