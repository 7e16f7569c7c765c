"""The edge track, from the rows' ``edge`` lists (:mod:`seqbench.worker.edge`): a tidy loader,
a table and the Pareto figure, each a function of the loaded frames.

- :func:`load_edge`: one record per (training job, ``precision``: ``float32`` or ``int8``), the
  entry's fields next to the job's identity, its metric directions and baselines;
- :func:`edge_table`: per (task, length, architecture), the float32 and int8 metric and their
  paired difference, per-token latency (median and p99, recomputed from the stored samples),
  state, weight and memory bytes; means over seeds;
- :func:`edge_pareto`: per task and length, the task metric against the median per-token latency and
  against the state bytes (log x), float32 filled and int8 hollow in each model's registered
  colour and marker, a thin line from each model's float32 point to its int8 point, the Pareto
  front of all points dotted and the task's trivial baseline dashed;
- :func:`report_blocks`: the section ``seqbench report`` adds for rows with an edge track.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from seqbench.errors import SpecError
from seqbench.results import columns as C
from seqbench.results.load import (
    IDENTITY_COLUMNS,
    RowsSource,
    _frame,
    _identity,
    _listed,
    _train_records,
)
from seqbench.results.plots import (
    LEGEND_IN,
    PANEL_IN,
    Style,
    baseline_handle,
    finish,
    log_axis,
    new_figure,
    pareto_front,
)

PRECISIONS = ("float32", "int8")
LEGEND_ROW_IN = 0.26  # height of one legend entry: the figure is at least as tall as its legend
X_AXES = {"latency_s_median": ("per-token latency, median (µs)", 1e6),
          "state_bytes": ("state after a sequence (bytes)", 1.0)}
EDGE_COLUMNS = ("precision", "status", "error", "train_seq_len", "train_input_len", "context_len",
                "latency_s_median", "latency_s_p99", "state_bytes", "weight_bytes",
                "peak_rss_bytes", "start_rss_bytes")


def load_edge(path_or_paths: RowsSource, *, warn: bool = True) -> pd.DataFrame:
    """One record per (training job, edge precision) (``path_or_paths``: what
    :func:`~seqbench.results.load.load` reads, or a frame it returned) with the job's identity
    columns (:data:`~seqbench.results.load.IDENTITY_COLUMNS`), its ``higher_is_better_*`` and
    ``baseline_*`` and the entry's fields (``metric_*``, ``latency_s_samples``, ...);
    ``job_status`` is the row's status, ``status`` the precision's."""
    records = []
    for rec in _train_records(path_or_paths, warn):
        keep = {k: v for k, v in rec.items() if k.startswith((C.HIGHER, C.BASELINE))}
        for entry in _listed(rec.get("edge")):
            if isinstance(entry, dict):
                records.append({**_identity(rec), **keep, **entry})
    return _frame(records, (*IDENTITY_COLUMNS, *EDGE_COLUMNS))


def _require(edge: pd.DataFrame) -> None:
    if edge.empty or "precision" not in edge:
        raise SpecError("results", "edge", "rows with an edge track (train.edge)")


def _metric(edge: pd.DataFrame, metric: str | None) -> str:
    if metric is not None:
        return C.resolve(edge, metric, allowed=C.metric_columns(edge))
    name = C.primary_metric(edge)
    if name is None or C.METRIC + name not in edge:
        raise SpecError("metric", name, "a task metric the edge entries hold")
    return C.METRIC + name


def _from_samples(samples: Any, q: float) -> float:
    values = np.asarray(_listed(samples), dtype=float)
    return float(np.percentile(values, q)) if len(values) else np.nan


def edge_table(edge: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per (task, seq_len, architecture) with ``ok`` variants: ``metric`` (default: the task's
    primary metric) for float32 and int8 and ``metric_change`` (int8 - float32, per seed, then
    averaged), latency median and p99 in µs per variant (recomputed from
    ``latency_s_samples``), ``state_bytes``, ``weight_bytes`` per variant,
    ``quantized_param_fraction``, ``peak_rss_mib`` and ``stream_added_kib`` (peak - start
    resident set while streaming, float32), ``seeds``."""
    from seqbench.catalog import MODELS

    _require(edge)
    records = []
    for task, sub in edge[edge["status"] == "ok"].groupby("task", sort=False):
        col = _metric(sub, metric)
        for (seq_len, model, label), cell in sub.groupby(["train_seq_len", "model", "label"],
                                                         sort=False):
            rec: dict[str, Any] = {"task": task, "seq_len": int(seq_len), "model": model,
                                   "label": label, "metric": col[len(C.METRIC):],
                                   "seeds": cell["seed"].nunique()}
            by_variant = {v: cell[cell["precision"] == v].set_index("seed") for v in PRECISIONS}
            for v, part in by_variant.items():
                rec[f"metric_{v}"] = part[col].mean() if len(part) else np.nan
                for q, name in ((50, "median"), (99, "p99")):
                    values = [_from_samples(s, q) for s in part.get("latency_s_samples", [])]
                    rec[f"latency_us_{name}_{v}"] = float(np.mean(values)) * 1e6 if values \
                        else np.nan
                rec[f"weight_bytes_{v}"] = part["weight_bytes"].mean() if len(part) else np.nan
            paired = (by_variant["int8"][col] - by_variant["float32"][col]).dropna()
            rec["metric_change"] = paired.mean() if len(paired) else np.nan
            floats = by_variant["float32"]
            rec["state_bytes"] = floats["state_bytes"].mean() if len(floats) else np.nan
            ints = by_variant["int8"]
            rec["quantized_param_fraction"] = (ints["quantized_param_fraction"].mean()
                                               if len(ints) else np.nan)
            if len(floats) and "peak_rss_bytes" in floats:
                rec["peak_rss_mib"] = floats["peak_rss_bytes"].mean() / 2**20
                rec["stream_added_kib"] = (floats["peak_rss_bytes"]
                                           - floats["start_rss_bytes"]).mean() / 2**10
            records.append(rec)
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table["_order"] = table["model"].map(MODELS.order)
    return table.sort_values(["task", "seq_len", "_order"]).drop(columns="_order").reset_index(
        drop=True)


def _style(model: str) -> Style:
    """The model's registered colour and marker; no line (the legend shows points)."""
    from seqbench.catalog import MODELS

    if model not in MODELS:
        return "#333333", "o", "none"
    return MODELS[model].color, MODELS[model].marker, "none"


def edge_pareto(edge: pd.DataFrame, rows: pd.DataFrame, metric: str | None = None) -> Figure:
    """One row of panels per (task, length): ``metric`` (default: the task's primary metric)
    against the median per-token latency and against the state bytes (see the module
    docstring). Points have
    ``gid='points'`` (one per model and variant, means over seeds), the front ``gid='front'``."""
    _require(edge)
    ok = edge[edge["status"] == "ok"]
    cells = list(dict.fromkeys(zip(ok["task"], ok["train_seq_len"], strict=True)))
    if not cells:
        raise SpecError("results", "edge", "edge entries with status ok")
    entries = ok["label"].nunique() + 4  # the legend: a line per model, then the extra four
    height = max(PANEL_IN[1] * len(cells) + 0.7, LEGEND_ROW_IN * entries + 1.2)
    fig, axes = new_figure(len(cells), len(X_AXES), "Edge track: task metric vs per-token "
                                                    "latency and state (batch 1, CPU)",
                           figsize=(PANEL_IN[0] * len(X_AXES) + LEGEND_IN, height))
    styles: dict[str, Style] = {}
    for i, (task, seq_len) in enumerate(cells):
        sub = ok[(ok["task"] == task) & (ok["train_seq_len"] == seq_len)]
        col = _metric(sub, metric)
        higher = C.info(sub, col).higher_is_better
        means = sub.groupby(["model", "label", "precision"], sort=False)[
            [col, *X_AXES]].mean().reset_index()
        for j, (x, (xlabel, factor)) in enumerate(X_AXES.items()):
            ax = axes[i, j]
            pts = means.dropna(subset=[col, x])
            for (model, label), g in pts.groupby(["model", "label"], sort=False):
                color, marker, _ = styles.setdefault(label, _style(model))
                g = g.set_index("precision")
                if {"float32", "int8"} <= set(g.index):
                    ax.plot(g.loc[list(PRECISIONS), x] * factor, g.loc[list(PRECISIONS), col],
                            color=color, linewidth=0.8, alpha=0.6, zorder=2)
                for v in PRECISIONS:
                    if v in g.index:
                        ax.plot(g.loc[v, x] * factor, g.loc[v, col], linestyle="none",
                                marker=marker, markersize=7, color=color,
                                markerfacecolor=color if v == "float32" else "white",
                                markeredgewidth=1.4, gid="points", zorder=3)
            if len(pts) and higher is not None:
                idx = pareto_front(-pts[x].to_numpy(float), pts[col].to_numpy(float), higher)
                front = pts.iloc[idx].sort_values(x)
                ax.plot(front[x] * factor, front[col], color="0.3", linestyle=":",
                        linewidth=1.4, gid="front", zorder=1)
            base = sub[C.BASELINE + col[len(C.METRIC):]].dropna() if (
                C.BASELINE + col[len(C.METRIC):]) in sub else pd.Series(dtype=float)
            if len(base):
                ax.axhline(base.mean(), color="0.25", linestyle="--", linewidth=1.2,
                           gid="baseline", zorder=1)
            log_axis(ax, "x", (pts[x] * factor).tolist())
            ax.set_xlabel(xlabel)
            ax.set_ylabel(C.info(sub, col).label)
            ax.set_title(f"{task}, seq_len {int(seq_len):,}")
    extra = [Line2D([], [], color="0.3", marker="o", linestyle="none", label="float32"),
             Line2D([], [], color="0.3", marker="o", markerfacecolor="white",
                    linestyle="none", label="int8 (dynamic)"),
             Line2D([], [], color="0.3", linestyle=":", linewidth=1.4, label="Pareto front"),
             baseline_handle()]
    return finish(fig, rows, styles, extra)


def _num(value: Any, digits: int = 0) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:,.{digits}f}"


def table_text(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`edge_table` as display strings (µs, bytes, KiB, MiB)."""
    return pd.DataFrame({
        "task": table["task"], "model": table["label"],
        "metric fp32": table["metric_float32"].map(lambda v: _num(v, 3)),
        "metric int8": table["metric_int8"].map(lambda v: _num(v, 3)),
        "change": table["metric_change"].map(lambda v: "-" if pd.isna(v) else f"{v:+.3f}"),
        "µs/token fp32 (p50, p99)": [f"{_num(a)}, {_num(b)}" for a, b in zip(
            table["latency_us_median_float32"], table["latency_us_p99_float32"], strict=True)],
        "µs/token int8 (p50, p99)": [f"{_num(a)}, {_num(b)}" for a, b in zip(
            table["latency_us_median_int8"], table["latency_us_p99_int8"], strict=True)],
        "state (B)": table["state_bytes"].map(_num),
        "weights fp32 (B)": table["weight_bytes_float32"].map(_num),
        "weights int8 (B)": table["weight_bytes_int8"].map(_num),
        "int8 share": table["quantized_param_fraction"].map(
            lambda v: "-" if pd.isna(v) else f"{v:.0%}"),
        "peak RSS (MiB)": table.get("peak_rss_mib", pd.Series(np.nan, index=table.index)).map(
            lambda v: _num(v, 1)),
        "streaming added (KiB)": table.get("stream_added_kib", pd.Series(
            np.nan, index=table.index)).map(_num)})


def write(results_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """The Pareto figure (png and pdf) and the table (csv and markdown) of a results folder,
    into ``out`` (default: ``<results_dir>/figures``); returns the files written."""
    from seqbench.results.load import load
    from seqbench.results.plots import save, style
    from seqbench.results.writers import write_table

    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "figures"
    edge = load_edge(results_dir, warn=False)
    with style():
        written = save(edge_pareto(edge, load(results_dir, warn=False)), out / "edge-pareto",
                       ("png", "pdf"))
    table = edge_table(edge)
    return [*written, *write_table(table, table_text(table), out, "edge")]


REPORT_NOTE = (
    "The trained model streamed at batch 1 on the CPU with one thread, one token per step "
    "(train.edge), in float32 and under PyTorch's dynamic int8 quantization (nn.Linear, "
    "nn.LSTM, nn.GRU; what it does not cover stays float32, 'int8 share' is the fraction of the "
    "parameters it quantized). µs/token: median and p99 of the timed steps after the warm-up, "
    "from the stored samples. state: the recurrent state or KV cache after one whole sequence. "
    "weights: as stored (int8 weights at one byte plus their scales). change: int8 minus "
    "float32 task metric on the same evaluation examples. peak RSS: the worker process's peak "
    "resident memory while streaming (it holds the PyTorch runtime); streaming added: peak "
    "minus the resident set when the stream started.")


def report_blocks(df: pd.DataFrame, out: Path, formats: Sequence[str],
                  figures: bool = True) -> list[Any]:
    """The report's section for rows with an ``edge`` track with ok entries (none: ``[]``):
    the Pareto figure saved under ``out/figures``, the table, and ``out/edge.csv``."""
    from seqbench.results.plots import save, style
    from seqbench.results.writers import Heading, Image, Paragraph, Table

    edge = load_edge(df, warn=False)
    if edge.empty or "status" not in edge or not (edge["status"] == "ok").any():
        return []
    table = edge_table(edge)
    table.to_csv(out / "edge.csv", index=False)
    blocks: list[Any] = [Heading("Edge track"), Paragraph(REPORT_NOTE)]
    if figures:
        with style():
            fig = edge_pareto(edge, df)
            save(fig, out / "figures" / "edge-pareto", formats)
        blocks.append(Image("figures/edge-pareto.png", "Task metric against per-token latency "
                            "and against state bytes; filled: float32, hollow: int8; dotted: "
                            "the Pareto front; dashed: the task's trivial baseline.",
                            alt=str(fig.get_label()), width_px=round(fig.get_figwidth() * 96)))
    blocks.append(Table(table_text(table), "Edge track per architecture, means over seeds "
                        "(edge.csv: the same numbers unrounded)."))
    return blocks
