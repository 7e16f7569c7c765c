"""Figures drawn from stored rows: seaborn on matplotlib figures made without pyplot (no global
state, any backend), each with its provenance in a caption and in the file's metadata.

Every figure plots :func:`~seqbench.results.stats.aggregate` output, so a figure and a table
show the same means and intervals (a band only where there are 3 or more seeds). One line per
configuration (model + variant + run); names, colours, markers, line styles and order come from
:data:`seqbench.catalog.MODELS`, so models with equal values stay distinguishable, and on length
axes points of several models that coincide at one length are spread slightly sideways
(:func:`dodge_offsets`) so no model hides another. Error metrics that span a decade or more get a log axis; trivial baselines are
drawn on top. Cells whose seeds all failed are marked with an ``x`` at their length, never
silently left out. Every string from the rows is drawn literally (:func:`writers.mpl_escape`).

- :func:`metric_vs_length`: task metric vs length (log2 x) with the trivial baseline, dashed;
- :func:`throughput_vs_length`: training and forward tokens/s vs length (log-log);
- :func:`memory_vs_length`: peak memory vs length (log-log), out-of-memory points marked;
- :func:`pareto`: task metric vs training throughput at one length, with the Pareto front;
- :func:`streaming`: streaming step latency and state size vs context length (log-log);
- :func:`plot`: any metric vs any axis, for ``seqbench plot``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.style
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogFormatter,
    LogFormatterSciNotation,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from seqbench.errors import SpecError
from seqbench.results import columns as C
from seqbench.results import provenance
from seqbench.results.stats import GROUP_KEYS, N_BOOT, aggregate, natural
from seqbench.results.writers import mpl_escape

FORMATS = ("png", "pdf")  # raster for the HTML page, vector for papers
PANEL_IN = (3.6, 2.7)  # width, height of one subplot in inches
LEGEND_IN = 1.9  # room for the legend right of the panels
DPI = 200
CAPTION_PT = 7.5  # provenance caption font size
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "d", "<", ">")  # a model's further variants
LINESTYLES = ("-", "--", ":", "-.")
DODGE = 0.025  # sideways step between coinciding points, as a fraction of the axis' octaves
BASELINE_STYLE: dict[str, Any] = {"color": "0.15", "linestyle": (0, (4, 2.5)), "linewidth": 1.1,
                                  "alpha": 0.9, "zorder": 6, "gid": "baseline"}
FAILED_MARK: dict[str, Any] = {"marker": "x", "markersize": 8, "markeredgewidth": 2,
                               "linestyle": "none"}
GRID_AXES = ("seq_len", "context_len")  # x axes along which rows are grouped


CONTEXTS = ("paper", "notebook", "talk", "poster")  # seaborn's scales for fonts and lines


@contextmanager
def style(user_style: str | None = None, context: str = "paper") -> Iterator[None]:
    """seaborn's whitegrid look at ``context`` scale, then ``user_style`` (a matplotlib style
    name or file) on top; scoped, so the caller's rcParams are restored afterwards."""
    if context not in CONTEXTS:
        raise SpecError("context", context, f"one of {', '.join(CONTEXTS)}")
    with mpl.rc_context(), sns.axes_style("whitegrid"), sns.plotting_context(context,
                                                                               font_scale=1.1):
        if user_style:
            try:
                matplotlib.style.use(user_style)
            except OSError:
                raise SpecError("style", user_style, "a matplotlib style name or .mplstyle "
                                f"file; names: {', '.join(matplotlib.style.available)}") from None
        yield


# --- which rows a figure draws -----------------------------------------------------------------
def train_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of training jobs (task metrics): kind ``train``, else anything but streaming."""
    return df[df["kind"] == "train"] if (df["kind"] == "train").any() else df[
        df["kind"] != "stream"]


def measure_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows for speed and memory: the dedicated scaling runs if any, else the training runs."""
    return df[df["kind"] == "scale"] if (df["kind"] == "scale").any() else train_rows(df)


def tasks(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["task"]))


# --- series: aggregated points, one line per configuration -------------------------------------
def series(df: pd.DataFrame, metric: str, x: str = "seq_len", *, hue: str = "model",
           facet: str | None = None, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Aggregated ``metric`` per configuration with the x value in ``_x`` and the line name in
    ``_line``. Lines split whatever must not be averaged: configurations, and tasks, kinds or
    lengths when the plot does not already separate them."""
    by = [c for c in (hue, facet) if c and c not in GROUP_KEYS]  # e.g. one line per seed
    if x == "context_len":  # a streaming job that failed or was skipped never recorded its
        # context; it was to be measured at its input length
        df = df.assign(context_len=df["context_len"].fillna(df["input_len"]))
    stats = aggregate(df, [metric], by=by, n_boot=n_boot, seed=seed)
    if x in GRID_AXES:
        stats["_x"] = pd.to_numeric(stats[x], errors="coerce").astype(float)
    else:
        xs = aggregate(df, [x], by=by, n_boot=n_boot, seed=seed)
        key = [k for k in GROUP_KEYS if k != "context_len"] + by + ["_ctx"]
        xs = xs.assign(_ctx=xs["context_len"].fillna(-1))[[*key, "mean"]]
        stats = stats.assign(_ctx=stats["context_len"].fillna(-1)).merge(
            xs.rename(columns={"mean": "_x"}), on=key, how="left").drop(columns="_ctx")
    stats["_hue"] = stats["model"] if hue == "model" else stats[hue].astype(str)
    parts: list[pd.Series] = [stats["label"]]
    if hue not in ("model", "label", "variant"):
        parts.append(hue + "=" + stats[hue].astype(str))
    split = ["label", *([hue] if hue not in ("model", "label", "variant") else [])]
    for column in ("task", "kind", "seq_len", "context_len"):
        # a key names lines only where one line would otherwise hold two points at one x
        # (streaming rows: context_len follows seq_len, so seq_len does not split them)
        if column not in (x, facet, hue) and stats.groupby(
                [*split, "_x"], dropna=False)[column].nunique().max() > 1:
            parts.append(column + "=" + stats[column].astype(str))
            split.append(column)
    stats["_line"] = parts[0].str.cat(parts[1:], sep=", ") if len(parts) > 1 else parts[0]
    return stats


Style = tuple[str, str, Any]  # colour, marker, line style


def line_styles(stats: pd.DataFrame, hue: str = "model") -> dict[str, Style]:
    """``_line`` -> (colour, marker, line style), in canonical order: models in registry order
    with their registered colour, marker and line style; a model's further variants (or runs)
    keep its colour and take the next unused marker and line style."""
    from seqbench.catalog import MODELS

    hues = list(dict.fromkeys(stats["_hue"]))
    if hue == "model":
        hues.sort(key=MODELS.order)
        fallback = iter(sns.color_palette("colorblind", len(hues)).as_hex())
        colors = {h: MODELS[h].color if h in MODELS else next(fallback) for h in hues}
        firsts = {h: (MODELS[h].marker, MODELS[h].linestyle) if h in MODELS else ("o", "-")
                  for h in hues}
    else:
        colors = dict(zip(hues, sns.color_palette("colorblind", len(hues)).as_hex(),
                          strict=True))
        firsts = {h: (MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
                  for i, h in enumerate(hues)}
    styles: dict[str, Style] = {}
    for h in hues:
        lines = sorted(dict.fromkeys(stats.loc[stats["_hue"] == h, "_line"]), key=natural)
        marker, linestyle = firsts[h]
        markers = [marker, *(m for m in MARKERS if m != marker)]
        linestyles = [linestyle, *(ls for ls in LINESTYLES if ls != linestyle)]
        for i, line in enumerate(lines):
            styles[line] = (colors[h], markers[i % len(markers)],
                            linestyles[i % len(linestyles)])
    return styles


COINCIDE = 0.03  # points closer than this fraction of the y range (linear or log) coincide


def dodge_offsets(points: pd.DataFrame, order: Sequence[str], step: float,
                  coincide: float = COINCIDE) -> pd.Series:
    """A multiplicative x offset per point (index of ``points``, columns ``_line``, ``_x``,
    ``_y``): 1 where a point stands alone, spread by ``step`` octaves around its length where
    points of several lines coincide (closer than ``coincide`` of the y range, on a linear or
    a log scale), in line order, so none hides another."""
    y = points["_y"].astype(float)
    span = float(y.max() - y.min()) if len(y) else 0.0
    positive = bool(len(y)) and bool((y > 0).all())
    log_span = float(np.log(y.max() / y.min())) if positive else 0.0
    rank = {name: i for i, name in enumerate(order)}
    out = pd.Series(1.0, index=points.index)
    for _, at in points.groupby("_x", sort=False):
        at = at.sort_values("_y")
        clusters: list[list[Any]] = []
        last = None
        for idx, value in at["_y"].items():
            close = last is not None and (
                abs(value - last) <= coincide * span
                or (positive and abs(np.log(value / last)) <= coincide * log_span))
            if close:
                clusters[-1].append(idx)
            else:
                clusters.append([idx])
            last = value
        for members in clusters:
            if len(members) < 2:
                continue
            members.sort(key=lambda i: rank.get(points.at[i, "_line"], 0))
            for k, idx in enumerate(members):
                out[idx] = 2.0 ** (step * (k - (len(members) - 1) / 2))
    return out


def dodge_step(xs: Sequence[float]) -> float:
    """The sideways step (octaves) for a length axis holding ``xs``: :data:`DODGE` of its span
    (at least one octave's worth)."""
    finite = [float(v) for v in xs if pd.notna(v) and v > 0]
    span = np.log2(max(finite) / min(finite)) if finite else 1.0
    return DODGE * max(float(span), 1.0)


def draw_lines(ax: Axes, stats: pd.DataFrame, styles: dict[str, Style],
               factor: float = 1.0, *, band: bool = True, dodge: bool = True) -> None:
    """One line per ``_line`` through its means (its own colour, marker and line style), a CI
    band where there is an interval, and an ``x`` where all seeds failed. ``dodge`` spreads
    points of several lines that coincide at one length slightly sideways on a log x axis
    (:func:`dodge_offsets`).

    Lines get ``gid='series'`` and the line's name as label, bands ``gid='ci'``, failure marks
    ``gid='failed'`` (tests count them)."""
    ok = stats[stats["n"] > 0].assign(_y=lambda d: d["mean"] * factor).dropna(subset=["_x"])
    ok = ok[np.isfinite(ok["_y"].astype(float))]
    order = [s for s in styles if s in set(ok["_line"])]
    shift = (dodge_offsets(ok, order, dodge_step(stats["_x"])) if dodge and len(ok)
             else pd.Series(1.0, index=ok.index))
    for z, name in enumerate(order):
        g = ok[ok["_line"] == name].sort_values("_x")
        color, marker, linestyle = styles[name]
        x = g["_x"].to_numpy(float) * shift[g.index].to_numpy(float)
        ax.plot(x, g["_y"].to_numpy(float), color=color, marker=marker, linestyle=linestyle,
                linewidth=1.5, markersize=5.5, markeredgecolor="white", markeredgewidth=0.6,
                gid="series", label=mpl_escape(name), zorder=3 + z * 0.01)
        if band:
            b = g.dropna(subset=["ci_low"])
            if len(b):
                ax.fill_between(b["_x"].to_numpy(float) * shift[b.index].to_numpy(float),
                                b["ci_low"] * factor, b["ci_high"] * factor,
                                color=color, alpha=0.15, linewidth=0, gid="ci")
    mark_failed(ax, failed_cells(stats), styles)


def failed_cells(stats: pd.DataFrame) -> pd.DataFrame:
    """Cells whose seeds all failed after running (skipped or unavailable ones are not drawn:
    nothing happened at that length; the tables list them)."""
    return stats[(stats["n"] == 0) & stats["ran"]]


def mark_failed(ax: Axes, cells: pd.DataFrame, styles: dict[str, Style],
                y: pd.Series | None = None) -> None:
    """An ``x`` per failed cell at its x; at ``y`` (data) when known, else at the axes' foot."""
    cells = cells.dropna(subset=["_x"])
    for name, g in cells.groupby("_line", sort=False):
        ys = y.loc[g.index] if y is not None else pd.Series(np.nan, index=g.index)
        known = ys.notna()
        if known.any():
            ax.plot(g.loc[known, "_x"], ys[known], color=styles[name][0], gid="failed",
                    **FAILED_MARK)
        if (~known).any():  # blended: x in data, y at 4% of the axes height
            ax.plot(g.loc[~known, "_x"], [0.04] * int((~known).sum()), color=styles[name][0],
                    transform=ax.get_xaxis_transform(), gid="failed", clip_on=False,
                    **FAILED_MARK)


# --- axes and figure furniture -----------------------------------------------------------------
def length_axis(ax: Axes, values: Sequence[float], label: str, *, base: int = 2) -> None:
    """Log x axis with a tick at every measured length, written as plain numbers."""
    ax.set_xscale("log", base=base)
    ticks = sorted({float(v) for v in values if pd.notna(v)})
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_locator(NullLocator())
        if len(ticks) > 1:
            pad = (ticks[-1] / ticks[0]) ** 0.06
            drawn = [x for line in ax.lines if line.get_gid() == "series"
                     for x in np.asarray(line.get_xdata(), dtype=float) if x > 0]
            low = min([ticks[0], *drawn]) / pad
            high = max([ticks[-1], *drawn]) * pad
            ax.set_xlim(low, high)
        if len(ticks) > 5:
            ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel(label)


def plain_number(x: float) -> str:
    """A tick label without powers of ten: ``0.5``, ``800``, ``40k``, ``400k``, ``3M``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:,.4g}{suffix}"
    return f"{x:,.4g}"


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log ticks to label, written as plain numbers."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return plain_number(x)


PLAIN_FROM, PLAIN_BELOW = 1e-3, 1e6  # log axes within these are labelled 0.001 .. 500k


def log_axis(ax: Axes, which: str = "y", values: Sequence[float] | None = None) -> None:
    """Log scale on the ``which`` axis of ``ax``. With ``values`` spanning less than a decade
    the axis stays linear (a log axis would only crowd its labels). Tick labels have one
    format per axis: plain numbers (``0.01``, ``2,000``, ``400k``) when every value lies in
    [1e-3, 1e6), else powers of ten."""
    axis = getattr(ax, f"{which}axis")
    finite = [float(v) for v in values if pd.notna(v) and v > 0] if values is not None else []
    if values is not None and (not finite or max(finite) < 10 * min(finite)):
        axis.set_major_locator(MaxNLocator(5))
        axis.set_major_formatter(FuncFormatter(lambda v, _: plain_number(v)))
        return
    getattr(ax, f"set_{which}scale")("log")
    if finite and (min(finite) < PLAIN_FROM or max(finite) >= PLAIN_BELOW):
        axis.set_major_formatter(LogFormatterSciNotation())
        axis.set_minor_formatter(NullFormatter())
        return
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def new_figure(n_rows: int, n_cols: int, title: str,
               figsize: tuple[float, float] | None = None) -> tuple[Figure, np.ndarray]:
    size = figsize or (PANEL_IN[0] * n_cols + LEGEND_IN, PANEL_IN[1] * n_rows + 0.7)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.suptitle(mpl_escape(title), fontweight="bold")
    fig.set_label(title)
    return fig, axes


def finish(fig: Figure, rows: pd.DataFrame, styles: dict[str, Style],
           extra: Sequence[Line2D] = ()) -> Figure:
    """Legend right of the panels (one for the whole figure) and the provenance caption below."""
    handles = [Line2D([], [], color=c, marker=m, linestyle=ls, linewidth=1.5, markersize=5.5,
                      markeredgecolor="white", markeredgewidth=0.6, label=mpl_escape(name))
               for name, (c, m, ls) in styles.items()]
    handles += list(extra)
    if handles:
        fig.legend(handles=handles, loc="outside right center", frameon=False)
    width_chars = int(fig.get_figwidth() * 72 / (CAPTION_PT * 0.55))  # ~ glyph width
    fig.supxlabel(textwrap.fill(mpl_escape(provenance.caption(rows)), width_chars),
                  fontsize=CAPTION_PT,
                  color="0.35", x=0.01, ha="left")
    return fig


def baseline_handle() -> Line2D:
    style = {k: v for k, v in BASELINE_STYLE.items() if k not in ("zorder", "gid")}
    return Line2D([], [], label="trivial baseline", **style)


def failure_handles(frames, oom_seeds: bool = False) -> list[Line2D]:
    """The legend entry for the ``x`` marks: what the marked cells failed by, if any are.
    ``oom_seeds``: the figure also marks single out-of-memory seeds (the memory figure)."""
    cells = pd.concat([failed_cells(f) for f in frames])
    oom = oom_seeds or cells["failed"].str.contains("oom").any()
    other = (~cells["failed"].str.contains("oom")).any()
    text = {(True, False): "out of memory", (True, True): "out of memory or failed",
            (False, True): "all seeds failed"}.get((bool(oom), bool(other)))
    return [Line2D([], [], color="0.25", label=text, **FAILED_MARK)] if text else []


def _require(rows: pd.DataFrame, what: str) -> None:
    if rows.empty:
        raise SpecError("results", what, "no rows to plot")


# --- the figures -------------------------------------------------------------------------------
def metric_vs_length(df: pd.DataFrame, metric: str | None = None, *, n_boot: int = N_BOOT,
                     seed: int = 0) -> Figure:
    """One panel per task: ``metric`` (default: each task's primary metric) vs seq_len, log2 x,
    with the task's trivial baseline (``baseline_<metric>`` on the rows) dashed."""
    rows = train_rows(df)
    panels = []
    for task in tasks(rows):
        sub = rows[rows["task"] == task]
        name = metric or C.primary_metric(sub)
        cols = C.metric_columns(sub)
        if name is None or (C.METRIC + name not in cols and name not in cols):
            continue
        panels.append((task, C.resolve(sub, name, allowed=cols)))
    _require(pd.DataFrame(panels), "task metrics")
    fig, axes = new_figure(1, len(panels), "Task metric vs sequence length")
    frames = [series(rows[rows["task"] == t], col, facet="task") for t, col in panels]
    styles = line_styles(pd.concat(frames))
    for ax, (task, col), stats in zip(axes[0], panels, frames, strict=True):
        draw_lines(ax, stats, styles)
        base = stats.dropna(subset=["baseline"]).groupby("_x")["baseline"].mean()
        draw_baseline(ax, base)
        info = C.info(rows, col)
        if info.higher_is_better is False:  # an error: log when it spans a decade
            values = [*stats["mean"], *stats["ci_low"].dropna(), *base.to_numpy()]
            log_axis(ax, "y", [v for v in values if pd.notna(v)])
        length_axis(ax, stats["_x"], C.AXES["seq_len"].label)
        ax.set_ylabel(mpl_escape(info.label))
        ax.set_title(mpl_escape(task))
    return finish(fig, rows, styles, [baseline_handle(), *failure_handles(frames)])


def draw_baseline(ax: Axes, base: pd.Series) -> None:
    """The trivial baseline (x -> value) as a dashed line on top of the models' lines, so a
    model sitting on it cannot hide it; one length: a horizontal line."""
    if not len(base):
        return
    if len(base) == 1:
        ax.axhline(float(base.iloc[0]), **BASELINE_STYLE)
    else:
        ax.plot(base.index, base.to_numpy(), **BASELINE_STYLE)


def throughput_vs_length(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> Figure:
    """Training (top) and forward-only (bottom) tokens/s vs seq_len, one column per task."""
    rows = measure_rows(df)
    measures = [c for c in ("train_tokens_per_s", "fwd_tokens_per_s")
                if c in rows and rows[c].notna().any()]
    _require(rows if measures else rows.iloc[:0], "throughput")
    names = tasks(rows)
    fig, axes = new_figure(len(measures), len(names), "Throughput vs sequence length")
    grid = {(c, t): series(rows[rows["task"] == t], c, facet="task", n_boot=n_boot, seed=seed)
            for c in measures for t in names}
    styles = line_styles(pd.concat(grid.values()))
    for i, col in enumerate(measures):
        for j, task in enumerate(names):
            ax, stats = axes[i, j], grid[col, task]
            draw_lines(ax, stats, styles)
            log_axis(ax)
            length_axis(ax, stats["_x"], C.AXES["seq_len"].label)
            ax.set_ylabel(C.MEASURES[col].label)
            ax.set_title(mpl_escape(task))
    return finish(fig, rows, styles, failure_handles(grid.values()))


def memory_vs_length(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> Figure:
    """Peak memory vs seq_len (log-log), one panel per task. Out-of-memory seeds are an ``x`` at
    the length where they happened, at the memory cap when the rows record one."""
    rows = measure_rows(df)
    _require(rows, "peak memory")
    col = "peak_mem_bytes"
    factor = C.MEASURES[col].factor
    names = tasks(rows)
    fig, axes = new_figure(1, len(names), "Peak memory vs sequence length")
    frames = [series(rows[rows["task"] == t], col, facet="task", n_boot=n_boot, seed=seed)
              for t in names]
    styles = line_styles(pd.concat(frames))
    for ax, task, stats in zip(axes[0], names, frames, strict=True):
        draw_lines(ax, stats[stats["n"] > 0], styles, factor)
        oom = rows[(rows["task"] == task) & (rows["status"] == "oom")]
        cells = stats[stats["config_hash"].isin(oom["config_hash"])]
        cap = oom.groupby("config_hash")["mem_cap_bytes"].max().astype(float)
        # to_numeric: with no cap recorded the mapped column is strings under pandas >= 3.1
        cap_y = pd.to_numeric(cells["config_hash"].map(cap), errors="coerce")
        cap_y = cap_y.where(cap_y > 0) * factor
        mark_failed(ax, cells, styles, y=cap_y)
        other = failed_cells(stats[~stats.index.isin(cells.index)])
        mark_failed(ax, other, styles)
        log_axis(ax)
        length_axis(ax, stats["_x"], C.AXES["seq_len"].label)
        ax.set_ylabel(C.MEASURES[col].label)
        ax.set_title(mpl_escape(task))
    any_oom = bool((rows["status"] == "oom").any())
    return finish(fig, rows, styles, failure_handles(frames, oom_seeds=any_oom))


def pareto_length(rows: pd.DataFrame, metric: str) -> int | None:
    """The longest length at which the most models have both the metric and speed."""
    ok = rows[(rows["status"] == "ok") & rows[metric].notna() & rows["train_tokens_per_s"].notna()]
    if ok.empty:
        return None
    count = ok.groupby("seq_len")["model"].nunique()
    return int(count[count == count.max()].index.max())


def pareto_front(x: np.ndarray, y: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Indices of the points no other point beats on both throughput (higher) and metric,
    ordered by throughput."""
    score = y if higher_is_better else -y
    front, best = [], -np.inf
    for i in np.argsort(-x, kind="stable"):  # fastest first
        if score[i] > best:
            front.append(i)
            best = score[i]
    return np.array(front[::-1], dtype=int)


def pareto(df: pd.DataFrame, seq_len: int | None = None, metric: str | None = None, *,
           n_boot: int = N_BOOT, seed: int = 0) -> Figure:
    """Task metric vs training throughput at one length per task (default: the longest length
    that most configurations reached), with the Pareto front dotted."""
    rows = train_rows(df)
    panels = []
    for task in tasks(rows):
        sub = rows[rows["task"] == task]
        name = metric or C.primary_metric(sub)
        if name is None or C.METRIC + name not in C.metric_columns(sub):
            continue
        col = C.METRIC + name
        length = seq_len if seq_len is not None else pareto_length(sub, col)
        if length is not None and (sub["seq_len"] == length).any():
            panels.append((task, col, length))
    _require(pd.DataFrame(panels), "task metric and training throughput")
    fig, axes = new_figure(1, len(panels), "Task metric vs training throughput")
    frames = []
    for task, col, length in panels:
        sub = rows[(rows["task"] == task) & (rows["seq_len"] == length)]
        points = series(sub, col, "train_tokens_per_s", facet="task", n_boot=n_boot, seed=seed)
        speed = aggregate(sub, ["train_tokens_per_s"], n_boot=n_boot, seed=seed)
        frames.append(points.merge(speed[["config_hash", "ci_low", "ci_high"]], on="config_hash",
                                   how="left", suffixes=("", "_x")))
    styles = line_styles(pd.concat(frames))
    for ax, (task, col, length), points in zip(axes[0], panels, frames, strict=True):
        ok = points[(points["n"] > 0)].dropna(subset=["_x"])
        order = [s for s in styles if s in set(ok["_line"])]
        for name in order:
            p = ok[ok["_line"] == name]
            ax.scatter(p["_x"], p["mean"], color=styles[name][0], marker=styles[name][1], s=55,
                       edgecolors="white", linewidths=0.6, zorder=3, gid="points",
                       label=mpl_escape(name))
        for _, p in ok.iterrows():
            xerr = [[p["_x"] - p["ci_low_x"]], [p["ci_high_x"] - p["_x"]]]
            yerr = [[p["mean"] - p["ci_low"]], [p["ci_high"] - p["mean"]]]
            ax.errorbar(p["_x"], p["mean"], xerr=None if pd.isna(p["ci_low_x"]) else xerr,
                        yerr=None if pd.isna(p["ci_low"]) else yerr, fmt="none",
                        ecolor=styles[p["_line"]][0], elinewidth=1, alpha=0.7)
        higher = C.info(rows, col).higher_is_better
        if len(ok) and higher is not None:
            idx = pareto_front(ok["_x"].to_numpy(float), ok["mean"].to_numpy(float), higher)
            front = ok.iloc[idx]
            ax.plot(front["_x"], front["mean"], color="0.3", linestyle=":", linewidth=1.4,
                    gid="front", zorder=2)
        base = points["baseline"].dropna()
        if len(base):
            ax.axhline(base.mean(), **BASELINE_STYLE)
        log_axis(ax, "x", ok["_x"].tolist())
        if higher is False:
            log_axis(ax, "y", [*ok["mean"], *base])
        ax.set_xlabel(C.MEASURES["train_tokens_per_s"].label)
        ax.set_ylabel(mpl_escape(C.info(rows, col).label))
        ax.set_title(mpl_escape(f"{task}, seq_len {length:,}"))
    extra = [Line2D([], [], color="0.3", linestyle=":", linewidth=1.4, label="Pareto front"),
             baseline_handle()]
    return finish(fig, rows, styles, extra)


def has_streaming(df: pd.DataFrame) -> bool:
    return bool((df["kind"] == "stream").any())


def streaming(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> Figure:
    """Streaming step latency (top) and state size (bottom) vs context length, log-log."""
    rows = df[df["kind"] == "stream"]
    _require(rows, "kind=stream")
    measures = [c for c in ("stream_step_s_median", "state_bytes") if rows[c].notna().any()]
    names = tasks(rows)
    fig, axes = new_figure(len(measures), len(names), "Streaming inference vs context length")
    grid = {(c, t): series(rows[rows["task"] == t], c, "context_len", facet="task",
                           n_boot=n_boot, seed=seed) for c in measures for t in names}
    styles = line_styles(pd.concat(grid.values()))
    for i, col in enumerate(measures):
        for j, task in enumerate(names):
            ax, stats = axes[i, j], grid[col, task]
            draw_lines(ax, stats, styles, C.MEASURES[col].factor)
            log_axis(ax)
            length_axis(ax, stats["_x"], C.AXES["context_len"].label)
            ax.set_ylabel(C.MEASURES[col].label)
            ax.set_title(mpl_escape(task))
    return finish(fig, rows, styles, failure_handles(grid.values()))


def plot(df: pd.DataFrame, metric: str, *, x: str = "seq_len", hue: str = "model",
         col: str | None = None, logy: bool | None = None, band: bool = True,
         baseline: bool = True, title: str | None = None,
         figsize: tuple[float, float] | None = None, n_boot: int = N_BOOT,
         seed: int = 0) -> Figure:
    """One figure: ``metric`` vs ``x``, one line per configuration coloured by ``hue``, one
    panel per value of ``col``. Names may be short (``accuracy`` for ``metric_accuracy``)."""
    rows = df[df["kind"] == "stream"] if x == "context_len" else df[df["kind"] != "stream"]
    metric = C.resolve(df, metric)
    _require(rows[rows[metric].notna() | (rows["status"] != "ok")], f"{metric} over {x}")
    axes_allowed = [a for a in C.AXES if a in df and df[a].notna().any()] + C.value_columns(df)
    x = C.resolve(df, x, what="x", allowed=axes_allowed)
    for what, name in (("hue", hue), ("col", col)):
        if name is not None and name not in df.columns:
            raise SpecError(what, name, "a column of the results, e.g. model, task, kind, "
                                        "variant, device, dtype, seq_len")
    facets = list(dict.fromkeys(rows[col])) if col else [None]
    info, xinfo = C.info(df, metric), C.info(df, x)
    fig, axes = new_figure(1, len(facets), title or f"{info.label} vs {xinfo.label}", figsize)
    frames = [series(rows if f is None else rows[rows[col] == f], metric, x, hue=hue, facet=col,
                     n_boot=n_boot, seed=seed) for f in facets]
    styles = line_styles(pd.concat(frames), hue)
    for ax, facet, stats in zip(axes[0], facets, frames, strict=True):
        draw_lines(ax, stats, styles, info.factor, band=band, dodge=x in GRID_AXES)
        base = stats.dropna(subset=["baseline"]) if baseline else stats.iloc[:0]
        if len(base) and x in GRID_AXES:
            for _, g in base.groupby("task", sort=False):
                draw_baseline(ax, g.groupby("_x")["baseline"].mean())
        if xinfo.log:
            length_axis(ax, stats["_x"], xinfo.label) if x in GRID_AXES else log_axis(
                ax, "x", stats["_x"].tolist())
        ax.set_xlabel(mpl_escape(xinfo.label))
        if logy:
            log_axis(ax)
        elif logy is None and info.log:
            log_axis(ax)
        elif logy is None and info.higher_is_better is False and info.name.startswith(
                C.METRIC):  # an error metric: log when it spans a decade
            log_axis(ax, "y", [*(stats["mean"] * info.factor), *base["baseline"]])
        ax.set_ylabel(mpl_escape(info.label))
        if facet is not None:
            ax.set_title(mpl_escape(f"{col} = {facet}"))
    extra = [baseline_handle()] if baseline and any(
        f["baseline"].notna().any() for f in frames) and x in GRID_AXES else []
    return finish(fig, rows, styles, extra)


def save(fig: Figure, path: str | Path, formats: Sequence[str] | None = None) -> list[Path]:
    """Write ``fig`` as ``path`` (its suffix picks the format) or as ``path.<fmt>`` for each of
    ``formats``, with title and provenance caption in each file's metadata."""
    path = Path(path)
    if formats is None:
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in ("png", "pdf", "svg"):
            raise SpecError("output", str(path), "a .png, .pdf or .svg file name")
        targets = [(path, fmt)]
    else:
        targets = [(path.with_suffix(f".{f}"), f) for f in formats]
    caption = " ".join(fig.get_supxlabel().split())  # unwrapped
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context({"svg.hashsalt": "seqbench"}):  # fixed SVG ids: same rows, same bytes
        for target, fmt in targets:
            fig.savefig(target, format=fmt, dpi=DPI,
                        metadata=provenance.metadata(str(fig.get_label()), caption, fmt))
    return [t for t, _ in targets]
