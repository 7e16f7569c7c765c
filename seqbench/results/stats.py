"""Statistics over seeds: mean, standard deviation, n and a seeded bootstrap 95% confidence
interval per (task, model, seq_len, metric), with failed seeds counted, never dropped.

Rows are grouped by configuration (``config_hash``), never across configurations: the display
key (task, model, seq_len) can hold several configurations, told apart by ``variant`` (see
:func:`seqbench.results.load.add_variants`). The interval is the percentile bootstrap of the mean
(Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13) with a fixed seed, so a
report is reproducible to the digit.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.results import columns as C
from seqbench.results.load import add_variants

# one group = one configuration at one point of its sweep
GROUP_KEYS = ["kind", "task", "model", "variant", "label", "seq_len", "context_len",
              "config_hash"]
NOT_RUN = frozenset({"skipped", "unavailable"})  # statuses of jobs that never ran
N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; (nan, nan) below two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)  # (n_boot,)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def failed_text(statuses: Counter) -> str:
    """``'1 oom'`` or ``'2 oom, 1 timeout'``: the failed seeds of a cell, by status."""
    return ", ".join(f"{c} {s}" for s, c in statuses.most_common())


def _ensure_variants(df: pd.DataFrame) -> pd.DataFrame:
    return df if {"variant", "label"} <= set(df.columns) else add_variants(df)


def natural(text: str) -> list:
    """Sort key reading digit runs as numbers: ``d_model=64`` before ``d_model=128``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def sort_key(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in canonical order: task as stored, models in registry order, then variant, length."""
    from seqbench.catalog import MODELS

    order = {t: i for i, t in enumerate(dict.fromkeys(df["task"]))}
    variants = {v: i for i, v in enumerate(sorted(set(df["variant"]), key=natural))}
    keyed = df.assign(_t=df["task"].map(order), _m=df["model"].map(MODELS.order),
                      _v=df["variant"].map(variants))
    return keyed.sort_values(["_t", "_m", "_v", "seq_len", "context_len"], kind="stable").drop(
        columns=["_t", "_m", "_v"])


def aggregate(df: pd.DataFrame, columns: list[str] | None = None, *, by: Sequence[str] = (),
              n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """One row per (configuration, metric): the statistics of that metric over seeds.

    Columns: :data:`GROUP_KEYS`, ``metric`` (the stored column), ``mean``, ``std`` (ddof=1),
    ``n`` (ok seeds with a value), ``ci_low``/``ci_high`` (bootstrap, NaN when n < 2),
    ``n_failed`` and ``failed`` (seeds whose status is not ok, e.g. ``'2 oom'``), ``status``
    (``ok``; ``partial`` when some seeds failed; the failed status when all did), ``baseline``
    (the task's trivial baseline for task metrics), ``higher_is_better`` and ``ran`` (False
    when every seed was skipped or unavailable: nothing was attempted).
    ``by`` splits groups further (e.g. ``["seed"]`` for one row per seed, ``["device"]``).
    Every group's interval uses the same ``seed``, so it does not depend on the other groups.
    """
    df = _ensure_variants(df)
    columns = C.value_columns(df) if columns is None else columns
    out = []
    # a column applies to a (kind, task) if any of its rows holds a value: a cell whose seeds
    # all failed is reported for those columns only
    applies = df.groupby(["kind", "task"])[columns].agg(lambda v: v.notna().any())
    keys = GROUP_KEYS + [k for k in by if k not in GROUP_KEYS]
    for key, group in df.groupby(keys, dropna=False, sort=False):
        ok = group[group["status"] == "ok"]
        failed = Counter(group.loc[group["status"] != "ok", "status"])
        n_failed = sum(failed.values())
        for col in columns:
            values = ok[col].dropna().to_numpy(dtype=float)
            if len(values) == 0 and not (n_failed and applies.loc[(key[0], key[1]), col]):
                continue
            low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed, level=level)
            base = C.BASELINE + col[len(C.METRIC):]
            status = "ok" if not n_failed else "partial" if len(values) else failed.most_common(
                1)[0][0]
            out.append({
                **dict(zip(keys, key, strict=True)), "metric": col,
                "ran": bool(len(values)) or any(s not in NOT_RUN for s in failed),
                "mean": values.mean() if len(values) else np.nan,
                "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                "n": len(values), "ci_low": low, "ci_high": high,
                "n_failed": n_failed, "failed": failed_text(failed), "status": status,
                "baseline": group[base].mean() if col.startswith(C.METRIC) and base in group
                else np.nan,
                "higher_is_better": C.info(df, col).higher_is_better,
            })
    cols = [*keys, "metric", "ran", "mean", "std", "n", "ci_low", "ci_high", "n_failed", "failed",
            "status", "baseline", "higher_is_better"]
    result = pd.DataFrame(out, columns=cols)
    result["n"] = result["n"].astype(int)
    result["n_failed"] = result["n_failed"].astype(int)
    return sort_key(result).reset_index(drop=True)


def all_failed_text(failed: str) -> str:
    """What a cell whose seeds all failed shows: the status (``oom``), with a count when more
    than one seed failed (``3 oom``, ``2 oom, 1 timeout``)."""
    return failed[2:] if failed.startswith("1 ") and "," not in failed else failed


def cell_text(row: pd.Series, factor: float = 1.0, *, with_n: bool = False) -> str:
    """A table cell: ``mean ± h`` (``with_n``: then ``(n ok seeds; failed seeds)``); a cell
    whose seeds all failed shows their status."""
    if row["n"] == 0:
        return all_failed_text(row["failed"])
    text = C.fmt_ci(row["mean"] * factor, row["ci_low"] * factor, row["ci_high"] * factor)
    notes = ([str(row["n"])] if with_n else []) + ([row["failed"]] if row["n_failed"] else [])
    return text + (f" ({'; '.join(notes)})" if notes else "")


def status_text(n_ok: int, failed: str) -> str:
    """``ok``, ``oom`` / ``3 oom`` (every seed failed) or ``2 ok, 1 oom``."""
    if not failed:
        return "ok"
    return all_failed_text(failed) if n_ok == 0 else f"{n_ok} ok, {failed}"


def summary_table(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """The compact table ``seqbench run`` prints: per (task, model, seq_len) the primary metric
    (mean ± CI over seeds), training throughput, peak memory and the status of the seeds.

    Cells are strings ready to print; streaming rows are left out (they have their own plot).
    """
    df = _ensure_variants(df)
    df = df[df["kind"] != "stream"]
    wanted = ["train_tokens_per_s", "peak_mem_bytes"]
    metrics = [c for c in C.metric_columns(df)]
    stats = aggregate(df, metrics + [c for c in wanted if c in df.columns], n_boot=n_boot,
                      seed=seed)
    rows = []
    keys = ["kind", "task", "label", "seq_len", "config_hash"]
    for (kind, task, label, seq_len, config_hash), cell in stats.groupby(keys, sort=False):
        group = df[df["config_hash"] == config_hash]
        by_metric = cell.set_index("metric")
        row = {"kind": kind, "task": task, "model": label, "seq_len": int(seq_len)}
        name = C.primary_metric(group) or ""
        if name and C.METRIC + name in by_metric.index:
            m = by_metric.loc[C.METRIC + name]
            higher = C.info(df, C.METRIC + name).higher_is_better
            arrow = "" if higher is None else (" ↑" if higher else " ↓")
            row["metric"] = name + arrow
            row["value"] = cell_text(m) if m["n"] else "-"
        else:
            row["metric"], row["value"] = name, "-"
        for col, title in (("train_tokens_per_s", "train tokens/s"),
                           ("peak_mem_bytes", "peak memory (MiB)")):
            stat = by_metric.loc[col] if col in by_metric.index else None
            row[title] = (C.fmt_num(stat["mean"] * C.MEASURES[col].factor)
                          if stat is not None and stat["n"] else "-")
        n_ok = int((group["status"] == "ok").sum())
        row["status"] = status_text(n_ok, failed_text(Counter(
            group.loc[group["status"] != "ok", "status"])))
        rows.append(row)
    table = pd.DataFrame(rows, columns=["kind", "task", "model", "seq_len", "metric", "value",
                                        "train tokens/s", "peak memory (MiB)", "status"])
    if table["kind"].nunique() <= 1:
        table = table.drop(columns="kind")
    return table
