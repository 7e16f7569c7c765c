"""Pathfinder and Path-X (Linsley et al. 2018, "Learning long-range spatial dependencies with
horizontal gated recurrent units"; Kim et al. 2020) as in Long Range Arena (Tay et al. 2021):
our own seeded, vectorised generator of the snakes images, following the algorithm of
``drewlinsley/pathfinder`` (``snakes2.py``, ``snakes.py``) with the per-resolution settings
LRA lists in ``google-research/long-range-arena``, ``lra_benchmarks/data/pathfinder.py``.

An image holds two *target* contours, *distractor* contours and two circular markers. A
contour is a chain of short line segments ("paddles") with gaps between them: each paddle
is ``paddle_length`` long; the next one starts ``2 * margin`` further on, turned by an angle
drawn from candidates at about one pixel of arc apart with weight
``cos(min(|turn| * continuity, pi / 2)) ** 2``, among those that stay inside the image and
keep ``thickness + 2 * margin`` away from every earlier paddle (snakes.py's
``get_coords_cmf`` and dilated-mask test; we test the clearance on a grid of
``grid`` cells per pixel, to within about half a cell). The two target contours start
``seed_distance`` apart near the centre and have ``contour_length`` paddles each (6 easy, 9
intermediate, 14 hard; LRA's Pathfinder is 32x32 hard, Path-X 128x128 hard). Long targets
often run into the border: snakes2 redraws the pair until both complete, at 64x64 hard about
one pair in 1,000. We grow the first target, then the second (snakes2 extends them in
turns), each by vectorised rejection: 4, 8, ..., 64 independent attempts from its seed per
round, the first complete one kept, the image redrawn after 8 failed rounds. Every contour
obeys the same rules; the second target sees the whole first one instead of its growing
prefix, so the joint shape distribution differs slightly from snakes2's. Distractors have
``contour_length // 3`` paddles, and there are ``distractor_budget // (contour_length // 3)``
of them (each dropped after 5 failed attempts).
One marker sits on the start of one target; the other on the far end of the same target
(label 1) or of the other target (label 0), the label a fair coin. Paddles are drawn
anti-aliased with intensity ``min(1, contrast * coverage)`` (coverage
``clip(thickness / 2 + 0.5 - distance, 0, 1)``), markers with their coverage; pixels are the
maximum over shapes, times 255, as uint8. (The original draws at 2-4x and downsamples with a
Lanczos filter, and rescales each image to its own maximum when saving; we do neither.)

Settings (LRA's builder docstrings): 32: paddle 2, thickness 0.5, margin 1, seed distance 7,
marker radius 1.5, continuity 1.0, distractor budget 20, contrast 2 x 0.75; 64: paddle 5,
thickness 1, margin 1, seed distance 12, radius 2.5, continuity 1.8, budget 22, contrast 0.8;
128: paddle 5, thickness 1.5, margin 2 or 3 (per image), seed distance 20, radius 3,
continuity 1.8, budget 35, contrast 0.9. Padding 1 pixel.

Input: the image row by row, ``seq_len = res ** 2`` (1,024, 4,096, 16,384): at 32x32 the
pixel in row 3, column 5 is input position ``3 * 32 + 5 = 101``. LRA feeds the
grey values as integer tokens 0..255 (``lra_benchmarks/image/input_pipeline.py``, vocabulary
256, ``normalize=False``), our default; ``encoding: grey`` gives one channel of value / 255
instead. Pooled binary classification, chance 0.5 (labels are balanced in expectation; the
baseline is the majority class of the train labels on the eval split).

Data: LRA splits 200,000 images per difficulty 80/10/10; here ``n_train`` (160,000),
``n_eval`` and ``n_test`` (20,000 each), generated once per ``data_seed`` in chunks of 256
images seeded independently, and cached under the data directory
(:mod:`seqbench.worker.data.cache`). ``n_train: null`` draws fresh training images for every
batch from the job seed instead. Generation speed on one core (``python -m
seqbench.bench.generators``): about 360 images/s at 32x32, 70 at 64x64 and 128x128, so the
LRA sizes take about 10 minutes at 32x32 and 45 at 128x128, once per seed.
``python -m seqbench.worker.data.pathfinder --grid out.png`` saves a grid of samples to look
at.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import Metric, TaskInfo, derive_seed, generator
from seqbench.worker.data.cache import generated_source, load_or_generate
from seqbench.worker.data.dataset import ArrayTask, class_baselines


@dataclass(frozen=True)
class Style:
    """The drawing settings of one resolution (LRA's per-resolution snakes2 arguments)."""

    res: int
    paddle_length: float
    thickness: float
    margins: tuple[int, ...]  # one is drawn per image
    seed_distance: float
    marker_radius: float
    continuity: float
    distractor_budget: int
    contrast: float
    padding: int = 1
    grid: int = 2  # clearance grid cells per pixel


STYLES = {
    32: Style(32, 2, 0.5, (1,), 7, 1.5, 1.0, 20, 2 * 0.75),
    64: Style(64, 5, 1.0, (1,), 12, 2.5, 1.8, 22, 0.8, grid=1),
    128: Style(128, 5, 1.5, (2, 3), 20, 3.0, 1.8, 35, 0.9, grid=1),
}
DIFFICULTY = {"easy": 6, "intermediate": 9, "hard": 14}
CHUNK = 256  # images per independently seeded chunk
TARGET_ROUNDS = 8  # rounds of parallel attempts (4, 8, ..., 64) before an image is redrawn
DISTRACTOR_TRIES = 5  # snakes2: max_distractor_contour_retrial = 4 retries


@dataclass
class Scenes:
    """A batch of images with the geometry they were drawn from (coordinates ``(x, y)`` in
    pixels, pixel ``(row, col)`` centred at ``(col, row)``)."""

    images: np.ndarray  # (B, R, R) uint8
    labels: np.ndarray  # (B,) int64: 1 iff both markers are on the ends of one target
    segments: np.ndarray  # (B, P, 4) paddles (x0, y0, x1, y1)
    used: np.ndarray  # (B, P) bool: which paddle slots hold a paddle
    snake: np.ndarray  # (B, P) int: 0 and 1 the targets, 2.. the distractors
    markers: np.ndarray  # (B, 2, 2) marker centres
    origins: np.ndarray  # (B, 2, 2) start of target 0 and 1 (the start of its first paddle)
    ends: np.ndarray  # (B, 2, 2) far end of the last paddle of target 0 and 1


def unit(theta: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def point_segment_distance(p: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Distance from points ``p (..., 2)`` to segments ``seg (..., 4)`` (broadcasting)."""
    a, b = seg[..., :2], seg[..., 2:]
    ab = b - a
    t = ((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12)
    closest = a + np.clip(t, 0, 1)[..., None] * ab
    return np.sqrt(((p - closest) ** 2).sum(-1))


ANGLES, SUB = 64, 4  # clearance stamps: paddle angles over [0, pi), sub-cell offsets


@functools.cache
def stamp_bank(style: Style) -> np.ndarray:
    """Blocked-cell stamps of one paddle: ``(margins, ANGLES, SUB, SUB, W, W)`` bool, True
    where a grid cell's centre is within ``thickness + 2 * margin`` of a paddle centred in
    the middle cell (at the sub-cell offset), for each quantised angle."""
    scale = style.grid
    reach = style.paddle_length / 2 + style.thickness + 2 * max(style.margins)
    half = math.ceil(reach * scale) + 1
    offs = np.arange(-half, half + 1)
    q = (np.arange(SUB) + 0.5) / SUB
    # centre of cell j relative to the paddle midpoint, in pixels: (j + 0.5 - frac) / scale
    rel = (offs[None, :] + 0.5 - q[:, None]) / scale  # (SUB, W)
    theta = np.arange(ANGLES) * math.pi / ANGLES
    half_seg = style.paddle_length / 2 * unit(theta)  # (A, 2)
    seg = np.concatenate([-half_seg, half_seg], -1)  # (A, 4)
    px = rel[None, None, :, None, :]  # (1, qy, qx, iy, ix): x from qx and ix
    py = rel[None, :, None, :, None]  # y from qy and iy
    pts = np.stack(np.broadcast_arrays(px, py), -1)  # (1, SUB, SUB, W, W, 2)
    dist = point_segment_distance(pts, seg[:, None, None, None, None, :])
    clear = style.thickness + 2 * np.array(style.margins, dtype=np.float64)
    return dist[None] <= clear[:, None, None, None, None, None]


@functools.cache
def stamp_offsets(style: Style) -> tuple[np.ndarray, int]:
    """The stamps as flat offsets into a grid padded by ``half`` cells on every side:
    ``((margins, ANGLES, SUB, SUB, N) int64, half)``, each list padded with its first entry
    (blocking a cell twice is harmless)."""
    bank = stamp_bank(style)
    half = (bank.shape[-1] - 1) // 2
    width = style.res * style.grid + 2 * half
    flat = bank.reshape(-1, bank.shape[-2], bank.shape[-1])
    lists = [(ys - half) * width + (xs - half) for ys, xs in (np.nonzero(b) for b in flat)]
    longest = max(len(x) for x in lists)
    out = np.stack([np.concatenate([x, np.full(longest - len(x), x[0])]) for x in lists])
    return out.reshape(*bank.shape[:4], longest), half


class Canvas:
    """Paddles of a batch of images being grown (numpy, vectorised over images).

    Where a new paddle may go is kept in a boolean grid of ``style.grid`` cells per pixel
    (padded on every side): a cell is blocked when its centre is within
    ``thickness + 2 * margin`` of a committed paddle. A
    snake's newest paddle is committed only once the next one is placed (snakes.py adds
    ``last_segment_mask`` to the mask after the next extension), so consecutive paddles need
    not keep that distance from each other.
    """

    def __init__(self, style: Style, n: int, slots: int, rng: np.random.Generator) -> None:
        self.style, self.rng = style, rng
        self.seg = np.zeros((n, slots, 4))
        self.used = np.zeros((n, slots), dtype=bool)
        self.snake = np.full((n, slots), -1, dtype=np.int64)
        self.count = np.zeros(n, dtype=np.int64)
        self.margin = rng.choice(np.array(style.margins, dtype=np.float64), size=n)
        self.clear = style.thickness + 2 * self.margin  # (n,) centre-line clearance
        self.scale = style.grid
        self.offsets, self.pad = stamp_offsets(style)
        g = style.res * self.scale + 2 * self.pad
        self.blocked = np.zeros((n, g, g), dtype=bool)

    def subset(self, rows: np.ndarray) -> Canvas:
        """A canvas holding only the images ``rows`` (same generator)."""
        out = Canvas.__new__(Canvas)
        out.style, out.rng, out.scale = self.style, self.rng, self.scale
        out.offsets, out.pad = self.offsets, self.pad
        for name in ("seg", "used", "snake", "count", "margin", "clear", "blocked"):
            setattr(out, name, getattr(self, name)[rows])
        return out

    def inside(self, pts: np.ndarray) -> np.ndarray:
        lo, hi = self.style.padding, self.style.res - 1 - self.style.padding
        return np.asarray(((pts >= lo) & (pts <= hi)).all(-1))

    def cells(self, pts: np.ndarray) -> np.ndarray:
        """Grid cell ``(x, y)`` of points (pixel coordinates) in the padded grid, clipped to
        the image's cells."""
        g = self.style.res * self.scale
        c = np.clip(np.floor((pts + 0.5) * self.scale), 0, g - 1).astype(np.int64)
        return c + self.pad

    def free(self, rows: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """Whether candidate paddles ``seg (r, K, 4)`` of images ``rows`` avoid blocked cells."""
        n_pts = max(2, math.ceil(self.style.paddle_length * self.scale) + 1)
        t = np.linspace(0, 1, n_pts)[:, None]
        pts = seg[..., None, :2] + t * (seg[..., None, 2:] - seg[..., None, :2])  # (r,K,S,2)
        c = self.cells(pts)
        g = self.blocked.shape[-1]
        flat = (rows[:, None, None] * g + c[..., 1]) * g + c[..., 0]
        return ~self.blocked.reshape(-1)[flat].any(-1)

    def commit(self, rows: np.ndarray, slots: np.ndarray) -> None:
        """Block the cells within the clearance of paddle ``slots`` of images ``rows``."""
        if not len(rows):
            return
        seg = self.seg[rows, slots]  # (r, 4)
        c = ((seg[:, :2] + seg[:, 2:]) / 2 + 0.5) * self.scale  # midpoint, in cells
        base = np.floor(c).astype(np.int64)
        sub = np.minimum(((c - base) * SUB).astype(np.int64), SUB - 1)  # (r, 2)
        d = seg[:, 2:] - seg[:, :2]
        angle = np.round(np.arctan2(d[:, 1], d[:, 0]) % math.pi / math.pi * ANGLES)
        margin = np.searchsorted(np.array(self.style.margins, dtype=np.float64),
                                 self.margin[rows])
        offs = self.offsets[margin, angle.astype(np.int64) % ANGLES, sub[:, 1], sub[:, 0]]
        g = self.blocked.shape[-1]
        centre = (rows * g + base[:, 1] + self.pad) * g + base[:, 0] + self.pad  # (r,)
        flat = self.blocked.reshape(-1)
        assert np.shares_memory(flat, self.blocked)  # a view: the write lands in the grid
        flat[centre[:, None] + offs] = True

    def place(self, rows: np.ndarray, seg: np.ndarray, snake: int) -> np.ndarray:
        slot = self.count[rows]
        self.seg[rows, slot] = seg
        self.used[rows, slot] = True
        self.snake[rows, slot] = snake
        self.count[rows] += 1
        return slot

    def turns(self, n: int) -> np.ndarray:
        """Candidate turns ``(n, K)``: about one pixel of arc apart on the circle of radius
        ``paddle_length + margin`` (a random offset per row), only those the continuity
        weight does not zero (``|turn| < pi / (2 * continuity)``)."""
        st = self.style
        k = math.ceil(2 * math.pi * (st.paddle_length + max(st.margins)))
        step = 2 * math.pi / k
        reach = math.ceil(math.pi / (2 * st.continuity) / step)
        jitter = self.rng.uniform(-0.5, 0.5, size=(n, 1))
        return (np.arange(-reach, reach + 1) + jitter) * step

    def extend(self, rows: np.ndarray, pivot: np.ndarray, theta: np.ndarray, last: np.ndarray,
               snake: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One more paddle for the snakes of ``rows`` (previous paddle in slot ``last``);
        returns ``(ok, pivot, theta, slot)`` and commits the previous paddle where ok."""
        st, m = self.style, self.margin[rows]
        pivot = pivot + (st.paddle_length + 2 * m)[:, None] * unit(theta)
        turn = self.turns(len(rows))  # (r, K)
        k = turn.shape[1]
        cand = theta[:, None] + turn
        u = unit(cand)
        a = pivot[:, None] + m[:, None, None] * u
        b = pivot[:, None] + (st.paddle_length + m)[:, None, None] * u
        seg = np.concatenate([a, b], axis=-1)  # (r, K, 4)
        ok = self.inside(a) & self.inside(b) & self.free(rows, seg)
        weight = np.cos(np.minimum(np.abs(turn) * st.continuity, math.pi / 2)) ** 2 * ok
        total = weight.sum(1)
        good = total > 1e-9
        cdf = np.cumsum(weight, 1) / np.where(good, total, 1)[:, None]
        pick = (cdf < self.rng.uniform(size=(len(rows), 1))).sum(1).clip(max=k - 1)
        r = np.arange(len(rows))
        slot = np.full(len(rows), -1, dtype=np.int64)
        slot[good] = self.place(rows[good], seg[r[good], pick[good]], snake)
        self.commit(rows[good], last[good])
        return good, pivot, cand[r, pick], slot

    def seed_paddle(self, rows: np.ndarray, tail: np.ndarray, theta: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate first paddles from ``tail``: ``(segments (r, 4), fits (r,))``."""
        head = tail + self.style.paddle_length * unit(theta)
        seg = np.concatenate([tail, head], axis=-1)
        fits = self.inside(tail) & self.inside(head) & self.free(rows, seg[:, None])[:, 0]
        return seg, fits


def copy_rows(dst: Canvas, rows: np.ndarray, src: Canvas, src_rows: np.ndarray) -> None:
    for name in ("seg", "used", "snake", "count", "blocked"):
        getattr(dst, name)[rows] = getattr(src, name)[src_rows]


def grow_target(cv: Canvas, rows: np.ndarray, s: int, contour_length: int,
                start: np.ndarray | None, replicas: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target ``s`` in the images ``rows`` of ``cv``, from ``replicas`` parallel attempts each
    (the first that succeeds is kept: rejection sampling, vectorised). ``start``: the other
    target's origin (target 1 starts ``seed_distance`` from it), or None (target 0 starts
    near the centre).

    Returns ``(ok, origin, end)`` for ``rows``."""
    st, rng = cv.style, cv.rng
    rep = np.repeat(np.arange(len(rows)), replicas)
    sub = cv.subset(rows[rep])
    n = len(rep)
    if start is None:
        lo, hi = 2 * st.seed_distance, st.res - 2 * st.seed_distance
        tail = rng.uniform(lo, hi, size=(n, 2))
    else:
        tail = start[rep] + st.seed_distance * unit(rng.uniform(-math.pi, math.pi, size=n))
    theta = rng.uniform(-math.pi, math.pi, size=n)
    all_rows = np.arange(n)
    seg, ok = sub.seed_paddle(all_rows, tail, theta)
    slot = np.full(n, -1, dtype=np.int64)
    slot[ok] = sub.place(all_rows[ok], seg[ok], s)
    pivot = tail - sub.margin[:, None] * unit(theta)
    for _ in range(contour_length - 1):
        live = np.flatnonzero(ok)
        good, piv, th, sl = sub.extend(live, pivot[live], theta[live], slot[live], snake=s)
        pivot[live], theta[live], slot[live] = piv, th, sl
        ok[live[~good]] = False
    sub.commit(all_rows[ok], slot[ok])
    # the first successful replica of each image
    first = np.full(len(rows), -1, dtype=np.int64)
    winners = np.flatnonzero(ok)
    images, at = np.unique(rep[winners], return_index=True)
    first[images] = winners[at]
    done = first >= 0
    copy_rows(cv, rows[done], sub, first[done])
    origin = np.zeros((len(rows), 2))
    end = np.zeros((len(rows), 2))
    origin[done] = tail[first[done]]
    end[done] = sub.seg[first[done], slot[first[done]], 2:]
    return done, origin, end


def grow_targets(cv: Canvas, contour_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two targets in every image of ``cv``: ``(ok (n,), origins (n, 2, 2), ends (n, 2, 2))``.

    Images whose targets could not be grown have ``ok`` False (they are drawn again)."""
    n = len(cv.count)
    ok = np.ones(n, dtype=bool)
    origins, ends = np.zeros((n, 2, 2)), np.zeros((n, 2, 2))
    for s in (0, 1):
        pending = np.flatnonzero(ok)
        for round_ in range(TARGET_ROUNDS):
            if not len(pending):
                break
            start = None if s == 0 else origins[pending, 0]
            done, origin, end = grow_target(cv, pending, s, contour_length, start,
                                            replicas=min(64, 4 << round_))
            origins[pending[done], s], ends[pending[done], s] = origin[done], end[done]
            pending = pending[~done]
        ok[pending] = False
    return ok, origins, ends


def grow_distractor(cv: Canvas, n_paddles: int, snake: int) -> None:
    """One distractor of ``n_paddles`` in every image of ``cv`` (up to 5 attempts each; an
    image where all fail goes without it)."""
    st, rng = cv.style, cv.rng
    pending = np.arange(len(cv.count))
    for _ in range(DISTRACTOR_TRIES):
        if not len(pending):
            return
        count, blocked = cv.count[pending].copy(), cv.blocked[pending].copy()
        tail = rng.uniform(st.padding, st.res - 1 - st.padding, size=(len(pending), 2))
        theta = rng.uniform(-math.pi, math.pi, size=len(pending))
        seg, fits = cv.seed_paddle(pending, tail, theta)
        r = pending[fits]
        slot = cv.place(r, seg[fits], snake)
        pivot = tail[fits] - cv.margin[r, None] * unit(theta[fits])
        th, ok = theta[fits], np.ones(len(r), dtype=bool)
        for _ in range(n_paddles - 1):
            live = np.flatnonzero(ok)
            good, piv, t, s = cv.extend(r[live], pivot[live], th[live], slot[live], snake)
            pivot[live], th[live], slot[live] = piv, t, s
            ok[live[~good]] = False
        cv.commit(r[ok], slot[ok])
        undo = np.flatnonzero(fits)[~ok]  # positions in pending of attempts that failed
        for i in undo:
            row = pending[i]
            cv.used[row, count[i]:] = False
            cv.snake[row, count[i]:] = -1
            cv.count[row] = count[i]
            cv.blocked[row] = blocked[i]
        pending = np.sort(np.concatenate([pending[~fits], r[~ok]]))


def render(style: Style, segments: np.ndarray, used: np.ndarray, markers: np.ndarray
           ) -> np.ndarray:
    """Anti-aliased paddles and markers -> ``(B, R, R)`` uint8 (torch scatter, max over shapes)."""
    res = style.res
    n = used.shape[0]
    canvas = torch.zeros(n, res * res, dtype=torch.float32)

    def stamp(centres: np.ndarray, half: int, value: Any, keep: np.ndarray) -> None:
        # centres (n, S, 2); value(dist_inputs) -> intensity over a (2h+1)^2 window
        offs = np.arange(-half, half + 1)
        base = np.floor(centres).astype(np.int64)  # (n, S, 2)
        gx = base[..., 0, None, None] + offs[None, :]  # (n, S, 1, W)
        gy = base[..., 1, None, None] + offs[:, None]  # (n, S, W, 1)
        gx, gy = np.broadcast_arrays(gx, gy)
        pix = np.stack([gx, gy], -1).astype(np.float64)  # (n, S, W, W, 2)
        inten = value(pix) * keep[..., None, None]
        inside = (gx >= 0) & (gx < res) & (gy >= 0) & (gy < res)
        flat = np.where(inside, gy * res + gx, 0).reshape(n, -1)
        vals = np.where(inside, inten, 0).reshape(n, -1)
        canvas.scatter_reduce_(1, torch.from_numpy(flat), torch.from_numpy(vals).float(),
                               reduce="amax")

    half = math.ceil(style.paddle_length / 2 + style.thickness / 2 + 1.5)
    mids = (segments[..., :2] + segments[..., 2:]) / 2

    def paddle(pix: np.ndarray) -> np.ndarray:
        d = point_segment_distance(pix, segments[:, :, None, None, :])
        return np.minimum(1.0, style.contrast * np.clip(style.thickness / 2 + 0.5 - d, 0, 1))

    stamp(mids, half, paddle, used)
    r = style.marker_radius

    def disk(pix: np.ndarray) -> np.ndarray:
        d = np.sqrt(((pix - markers[:, :, None, None, :]) ** 2).sum(-1))
        return np.clip(r + 0.5 - d, 0, 1)

    stamp(markers, math.ceil(r + 1.5), disk, np.ones(markers.shape[:2], dtype=bool))
    return (canvas * 255).round().to(torch.uint8).reshape(n, res, res).numpy()


def generate(n: int, rng: np.random.Generator, res: int = 32, contour_length: int = 14
             ) -> Scenes:
    """``n`` Pathfinder images at resolution ``res`` with targets of ``contour_length``."""
    style = STYLES[res]
    d_len = max(1, contour_length // 3)
    n_distractors = style.distractor_budget // d_len
    slots = 2 * contour_length + n_distractors * d_len
    kept: list[tuple[Canvas, np.ndarray, np.ndarray]] = []
    remaining = n
    while remaining:  # images whose targets could not be grown are drawn again
        cv = Canvas(style, remaining, slots, rng)
        ok, origins, ends = grow_targets(cv, contour_length)
        rows = np.flatnonzero(ok)
        if len(rows):
            kept.append((cv.subset(rows), origins[rows], ends[rows]))
            remaining -= len(rows)
    seg, used, snake = [], [], []
    for cv, _, _ in kept:
        for k in range(n_distractors):
            grow_distractor(cv, d_len, snake=2 + k)
        seg.append(cv.seg)
        used.append(cv.used)
        snake.append(cv.snake)
    origins = np.concatenate([o for _, o, _ in kept])
    ends = np.concatenate([e for _, _, e in kept])
    labels = rng.integers(0, 2, size=n)
    first = rng.integers(0, 2, size=n)  # the target whose start is marked
    second = np.where(labels == 1, first, 1 - first)
    b = np.arange(n)
    markers = np.stack([origins[b, first], ends[b, second]], 1)
    seg_all, used_all = np.concatenate(seg), np.concatenate(used)
    images = render(style, seg_all, used_all, markers)
    return Scenes(images, labels.astype(np.int64), seg_all, used_all, np.concatenate(snake),
                  markers, origins, ends)


def chunk_rng(data_seed: int, res: int, contour_length: int, split: str, chunk: int
              ) -> np.random.Generator:
    return np.random.default_rng(
        derive_seed(data_seed, f"pathfinder/{res}/{contour_length}/{split}/{chunk}"))


def generate_split(n: int, data_seed: int, res: int, contour_length: int, split: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of one split, chunk by chunk: ``(images (n, R*R) uint8, labels (n,))``."""
    images, labels = [], []
    for c in range(math.ceil(n / CHUNK)):
        size = min(CHUNK, n - c * CHUNK)
        scenes = generate(size, chunk_rng(data_seed, res, contour_length, split, c), res,
                          contour_length)
        images.append(scenes.images.reshape(size, -1))
        labels.append(scenes.labels.astype(np.uint8))
    return np.concatenate(images), np.concatenate(labels)


class Pathfinder(ArrayTask):
    __doc__ = __doc__
    name = "pathfinder"
    version = 1

    def __init__(self, seq_len: int, difficulty: str = "hard", contour_length: int | None = None,
                 n_train: int | None = 160_000, n_eval: int = 20_000, n_test: int = 20_000,
                 data_seed: int = 0, encoding: str = "tokens") -> None:
        params = dict(difficulty=difficulty, contour_length=contour_length, n_train=n_train,
                      n_eval=n_eval, n_test=n_test, data_seed=data_seed, encoding=encoding)
        super().__init__(seq_len, **params)
        self.res, self.contour_length = self.validate(seq_len, params)
        self.encoding, self.n_train, self.data_seed = encoding, n_train, data_seed
        counts = {"train": n_train, "eval": n_eval, "test": n_test}
        gen_params = {"res": self.res, "contour_length": self.contour_length,
                      "counts": [n_train, n_eval, n_test]}

        def make() -> dict[str, np.ndarray]:
            arrays = {}
            for split, n in counts.items():
                if n is not None:
                    x, y = generate_split(n, data_seed, self.res, self.contour_length, split)
                    arrays[f"{split}/images"], arrays[f"{split}/labels"] = x, y
            return arrays

        arrays, manifest = load_or_generate("pathfinder", self.version, gen_params, data_seed,
                                            make)
        self.splits = {s: (torch.from_numpy(arrays[f"{s}/images"]),
                           torch.from_numpy(arrays[f"{s}/labels"].astype(np.int64)))
                       for s in counts if f"{s}/labels" in arrays}
        fit = self.splits["train" if n_train is not None else "test"][1]
        baselines, notes = class_baselines(fit, self.splits["eval"][1], 2)
        if n_train is None:
            notes = {k: v.replace("train split", "test split") for k, v in notes.items()}
        tokens = encoding == "tokens"
        self.info = TaskInfo(
            input_kind="tokens" if tokens else "channels", input_dim=256 if tokens else 1,
            output_kind="classes", output_dim=2, per_position=False, input_len=seq_len,
            metrics=(Metric("loss", False, "nats"), Metric("accuracy", True)),
            primary_metric="accuracy", baselines=baselines, baseline_notes=notes)
        self.data_source = generated_source("pathfinder", self.version, data_seed, manifest)

    @classmethod
    def validate(cls, seq_len: int, params: dict[str, Any]) -> tuple[int, int]:
        """Check the params; return ``(resolution, contour_length)``."""
        res = math.isqrt(seq_len)
        if res * res != seq_len or res not in STYLES:
            raise SpecError("seq_len", seq_len, "pathfinder takes res^2 pixels: "
                            + ", ".join(f"{r * r} ({r}x{r})" for r in STYLES))
        difficulty = params.get("difficulty", "hard")
        if difficulty not in DIFFICULTY:
            raise SpecError("tasks.pathfinder.params.difficulty", difficulty,
                            f"one of {', '.join(DIFFICULTY)}")
        length = params.get("contour_length")
        length = DIFFICULTY[difficulty] if length is None else length
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 30:
            raise SpecError("tasks.pathfinder.params.contour_length", length,
                            "an integer 1..30 (easy 6, intermediate 9, hard 14)")
        for key, default, none_ok in (("n_train", 160_000, True), ("n_eval", 20_000, False),
                                      ("n_test", 20_000, False), ("data_seed", 0, False)):
            v = params.get(key, default)
            low = 0 if key == "data_seed" else 1
            if not (v is None and none_ok) and (isinstance(v, bool) or not isinstance(v, int)
                                                or v < low):
                raise SpecError(f"tasks.pathfinder.params.{key}", v, f"an integer >= {low}"
                                + (" or null" if none_ok else ""))
        encoding = params.get("encoding", "tokens")
        if encoding not in ("tokens", "grey"):
            raise SpecError("tasks.pathfinder.params.encoding", encoding,
                            "tokens (grey values 0..255 as tokens, as LRA) or grey "
                            "(one channel, value / 255)")
        return res, length

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        cls.validate(seq_len, params)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding == "tokens":
            return x.long()  # (B, L)
        return (x.float() / 255).unsqueeze(-1)  # (B, L, 1)

    def train_batches(self, seed: int, batch_size: int, device: torch.device | str
                      ) -> Iterator:
        if self.n_train is not None:
            yield from super().train_batches(seed, batch_size, device)
            return
        gen = generator(seed, "train", "cpu")
        while True:  # fresh images for every batch
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
            scenes = generate(batch_size, rng, self.res, self.contour_length)
            x = torch.from_numpy(scenes.images.reshape(batch_size, -1))
            yield self.inputs(x).to(device), torch.from_numpy(scenes.labels).to(device)


def save_grid(path: str, res: int = 32, contour_length: int = 14, n: int = 16, seed: int = 0,
              scale: int | None = None) -> None:
    """A PNG grid of ``n`` samples (label 1 framed green, 0 red), each upscaled to ~128 px."""
    from PIL import Image

    scenes = generate(n, np.random.default_rng(seed), res, contour_length)
    scale = scale or max(1, 128 // res)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    size, border = res * scale, 3
    grid = np.full((rows * (size + 2 * border), cols * (size + 2 * border), 3), 40, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        tile = np.kron(scenes.images[i], np.ones((scale, scale), dtype=np.uint8))
        y, x = r * (size + 2 * border), c * (size + 2 * border)
        colour = (0, 200, 0) if scenes.labels[i] == 1 else (220, 0, 0)
        grid[y:y + size + 2 * border, x:x + size + 2 * border] = colour
        grid[y + border:y + border + size, x + border:x + border + size] = tile[..., None]
    Image.fromarray(grid).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Save a grid of Pathfinder samples as a PNG.")
    p.add_argument("--grid", required=True, help="output PNG path")
    p.add_argument("--res", type=int, default=32, choices=sorted(STYLES))
    p.add_argument("--difficulty", default="hard", choices=list(DIFFICULTY))
    p.add_argument("-n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    save_grid(args.grid, args.res, DIFFICULTY[args.difficulty], args.n, args.seed)
    print(f"saved {args.n} samples ({args.res}x{args.res}, {args.difficulty}) to {args.grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
