"""Gradient flow over time: how strongly the loss at a scored position reaches back to the
model's input representation at each earlier position, the quantity behind the vanishing- and
exploding-gradient analyses of recurrent networks (Bengio, Simard & Frasconi 1994; Pascanu,
Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks", where
``||dh_t/dh_k||`` decays geometrically in ``t - k``).

For a fixed probe batch ``(x, y)`` and the input representation ``h = model.embed(x)``
(``(B, L, D)``: the embedding or input projection output, the same place in every backbone)::

    norm(d) = mean over (example b, probed scored position t >= d) of
              || d loss_{b,t} / d h_{b, t-d} ||_2          (d = distance = t - input position)

``loss_{b,t}`` is the loss of one scored item. It is computed through autograd with no code per
architecture: one forward pass with a hook on ``model.embed`` that keeps ``h``; ``g = d(task
loss)/d(output)``; then, for each probed scored position ``t``, one backward pass of the output
with ``g`` kept at position ``t`` only (``torch.autograd.grad`` with respect to ``h``), which
gives every example's gradient at once (examples do not interact in any backbone). The task's
loss is a mean over its scored items, so ``g`` is rescaled by their number: the norms are those
of one item's loss, independent of the batch size. A pooled output (one per sequence) has one
scored position, the last. Per-position tasks probe at most ``positions`` scored positions,
evenly spaced among those scored in the batch (the cost is one backward pass each). The probe
runs in eval mode, in full precision (no autocast), and eagerly even for a compiled model.

Summary numbers: ``decay_per_step``, the least-squares slope of ``ln norm(d)`` against ``d`` over
the distances ``d >= 1`` with a finite, positive norm (a linear recurrence ``h_t = a h_{t-1} +
x_t`` read at the last position gives ``ln |a|`` exactly), and ``horizon``, the smallest distance
at which the norm falls below ``fraction x norm(0)`` (null if it never does within the
sequence). ``norm(0)`` includes the residual path from a position to its own output, which
the shared backbone has (``backbone: bare`` has none) and which no earlier position has, so a
horizon measures the decay relative to that direct path, while the decay rate leaves distance 0
out of its fit: only gradients that went through the mixer enter it (with distance 0 in the
fit, the jump from the direct path alone
tilts the slope of a flat profile by ``-6 ln(norm(0)/norm(1)) / (L (L + 1))``, -0.025 per step
for a tenfold jump at ``L = 23``). A profile with one distance has no decay rate.

Stored compactly: the norm at every distance below :data:`EXACT_DISTANCES`, then about
:data:`PER_OCTAVE` log-spaced distances per doubling up to the largest; the summary numbers use
every distance.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from seqbench.config.spec import GradProbeSpec
from seqbench.worker.data.base import Task

EXACT_DISTANCES = 64
PER_OCTAVE = 16
STREAM = "grad_probe"  # the probe batch's own seed stream (disjoint from train, eval, test)


def _evenly(items: list[int], at_most: int) -> list[int]:
    if len(items) <= at_most:
        return items
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, at_most)).astype(int))
    return [items[i] for i in picks]


def distance_norms(model: nn.Module, task: Task, x: torch.Tensor, y: torch.Tensor,
                   positions: int = 16) -> np.ndarray:
    """``norm(d)`` for ``d = 0..L-1`` (NaN where no probed position reaches that far back).

    ``model`` is any module whose input representation is the output of its ``embed``
    submodule (every :class:`~seqbench.worker.models.base.Backbone`)."""
    held: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        held["h"] = output

    embed = model.get_submodule("embed")
    handle = embed.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model.forward(x)  # the eager forward, also when compiled in place
            h = held["h"]  # (B, L, D)
            B, L = h.shape[0], h.shape[1]
            (g,) = torch.autograd.grad(task.loss(out, y), out, retain_graph=True)
            if task.info.per_position:
                scored = g.reshape(B, L, -1).abs().amax(-1) > 0  # (B, L) items with a loss
            else:
                scored = torch.zeros(B, L, dtype=torch.bool, device=g.device)
                scored[:, -1] = g.reshape(B, -1).abs().amax(-1) > 0
            n_items = int(scored.sum())
            sums = torch.zeros(L, dtype=torch.float64, device=h.device)
            counts = torch.zeros(L, dtype=torch.float64, device=h.device)
            columns = torch.nonzero(scored.any(0)).flatten().tolist()
            for t in _evenly(columns, positions):
                if task.info.per_position:
                    g_t = torch.zeros_like(g)
                    g_t[:, t] = g[:, t]
                else:
                    g_t = g
                (dh,) = torch.autograd.grad(out, h, grad_outputs=g_t * n_items,
                                            retain_graph=True)  # (B, L, D)
                rows = scored[:, t]
                by_distance = dh[rows, : t + 1].double().norm(dim=-1).flip(1)  # (b, t + 1)
                sums[: t + 1] += by_distance.sum(0)
                counts[: t + 1] += int(rows.sum())
    finally:
        handle.remove()
        model.train(was_training)
    norms = (sums / counts.clamp(min=1)).cpu().numpy()
    norms[counts.cpu().numpy() == 0] = np.nan
    return norms


FIT_FROM = 1  # the decay fit starts past the direct (residual) path at distance 0


def decay_per_step(norms: np.ndarray) -> float | None:
    """Least-squares slope of ``ln norm`` against distance, over the finite positive norms at
    distances ``>= FIT_FROM`` (None with fewer than two)."""
    d = np.arange(len(norms), dtype=float)
    ok = np.isfinite(norms) & (norms > 0) & (d >= FIT_FROM)
    if ok.sum() < 2:
        return None
    dx = d[ok] - d[ok].mean()
    ly = np.log(norms[ok])
    return float((dx * (ly - ly.mean())).sum() / (dx * dx).sum())


def memory_horizon(norms: np.ndarray, fraction: float) -> int | None:
    """The smallest distance whose norm is below ``fraction x norm(0)``, or None."""
    if not len(norms) or not np.isfinite(norms[0]) or norms[0] <= 0:
        return None
    below = np.nonzero(np.isfinite(norms) & (norms < fraction * norms[0]))[0]
    return int(below[0]) if len(below) else None


def compact_distances(n: int) -> list[int]:
    """Distances kept in a stored profile of ``n`` distances (``0..n-1``): all below
    :data:`EXACT_DISTANCES`, then about :data:`PER_OCTAVE` per doubling, always the last."""
    if n <= EXACT_DISTANCES:
        return list(range(n))
    num = math.ceil(PER_OCTAVE * math.log2((n - 1) / EXACT_DISTANCES)) + 1
    tail = np.unique(np.round(np.geomspace(EXACT_DISTANCES, n - 1, num)).astype(int))
    return list(range(EXACT_DISTANCES)) + [int(d) for d in tail]


def profile(norms: np.ndarray, fraction: float) -> dict[str, Any]:
    """The stored form of one probe: compact distances and norms, decay rate, horizon."""
    reached = np.nonzero(np.isfinite(norms))[0]
    n = int(reached[-1]) + 1 if len(reached) else 0
    kept = compact_distances(n)
    return {"distances": kept, "norms": [float(norms[d]) for d in kept],
            "decay_per_step": decay_per_step(norms), "horizon": memory_horizon(norms, fraction)}


class GradientProbe:
    """The probe of one training run: a fixed batch from the ``grad_probe`` stream and the
    steps at which to measure (``init`` = 0, before the first step; ``end`` after the last)."""

    def __init__(self, spec: GradProbeSpec, task: Task, seed: int,
                 device: torch.device) -> None:
        self.spec, self.task = spec, task
        self.x, self.y = task.held_out_batch(seed, STREAM, spec.examples, device)
        self.steps = {s for s in spec.at if isinstance(s, int)}
        self.init, self.end = "init" in spec.at, "end" in spec.at

    def due(self, step: int) -> bool:
        """Whether a probe is asked for after ``step`` optimizer steps (0: at init)."""
        return (step == 0 and self.init) or step in self.steps

    def run(self, model: nn.Module, step: int) -> dict[str, Any]:
        start = time.perf_counter()
        norms = distance_norms(model, self.task, self.x, self.y, self.spec.positions)
        return {"step": step, **profile(norms, self.spec.fraction),
                "fraction": self.spec.fraction, "examples": int(self.x.shape[0]),
                "positions": self.spec.positions, "probe_s": time.perf_counter() - start}
