"""Statistics over seeds: mean, standard deviation, n, a confidence interval whose method suits
the number of seeds, the tests that say whether one model beats another, and rankings that
show their uncertainty.

Rows are grouped by configuration (``config_hash``) and run, never across them: the display key
(task, model, seq_len) can hold several configurations, told apart by ``variant``, and several
runs, told apart by ``run`` (see :func:`seqbench.results.load.add_variants`).

**Intervals** (:func:`interval`), all from :mod:`scipy.stats`:

* n < :data:`MIN_N_FOR_CI` (3): no interval. Two seeds say little about the spread; a 95%
  interval from them would be either far too narrow (a percentile bootstrap never leaves the
  range of the two values) or very wide (Student's t with one degree of freedom is 12.7 x the
  standard error). Tables show the mean, n and the range of the values instead, and say so.
* 3 <= n < :data:`BOOTSTRAP_MIN_N` (30): the Student-t interval of the mean,
  ``mean ± t_{n-1, 0.975} s / sqrt(n)`` (``scipy.stats.t.interval``).
* n >= 30: the bias-corrected and accelerated (BCa) bootstrap of the mean
  (``scipy.stats.bootstrap``, Efron & Tibshirani 1993, ch. 14) with a fixed seed, so a report
  is reproducible to the digit; at that n it no longer relies on the values being normal.

**Is one model better?** :func:`difference` runs Welch's two-sided t-test (unequal variances,
``scipy.stats.ttest_ind(equal_var=False)``) between two samples of seeds and gives the Welch
interval of the difference of the means. :func:`best_marks` and :func:`rank` build on it: a best
is marked only when Welch's test separates it from every other model at that length (Holm's
step-down correction over those comparisons, family-wise level :data:`ALPHA`); otherwise the best
and every model it is not separated from are marked as tied.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqbench.results import columns as C
from seqbench.results.load import add_variants

# one group = one configuration of one run at one point of its sweep
GROUP_KEYS = ["kind", "task", "model", "variant", "label", "seq_len", "context_len",
              "config_hash", "run"]
NOT_RUN = frozenset({"skipped", "unavailable"})  # statuses of jobs that never ran
N_BOOT = 2000
LEVEL = 0.95
ALPHA = 0.05  # family-wise level of the tests that mark a best
MIN_N_FOR_CI = 3  # fewer values: no interval, the range instead
BOOTSTRAP_MIN_N = 30  # from this many values on: BCa bootstrap instead of Student's t
T, BCA, NO_CI = "t", "bootstrap", "none"  # the values of ``Interval.method``


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a mean: its bounds (NaN without one), the method and n."""

    low: float
    high: float
    method: str  # T, BCA or NO_CI
    n: int


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def interval(values: Sequence[float] | np.ndarray, level: float = LEVEL, *,
             n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """The confidence interval of the mean of ``values`` (non-finite values are ignored):
    none below :data:`MIN_N_FOR_CI` values, Student's t below :data:`BOOTSTRAP_MIN_N`, the BCa
    bootstrap (``n_boot`` resamples, ``seed``) from there on. Equal values give a zero-width
    interval at their value."""
    import scipy.stats

    x = _finite(values)
    n = len(x)
    if n < MIN_N_FOR_CI:
        return Interval(math.nan, math.nan, NO_CI, n)
    mean = float(x.mean())
    if np.ptp(x) == 0:
        return Interval(mean, mean, T if n < BOOTSTRAP_MIN_N else BCA, n)
    if n < BOOTSTRAP_MIN_N:
        low, high = scipy.stats.t.interval(level, n - 1, loc=mean, scale=scipy.stats.sem(x))
        return Interval(float(low), float(high), T, n)
    import inspect

    gen = np.random.default_rng(seed)  # scipy >= 1.15 calls it rng, older ones random_state
    keyword = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else (
        "random_state")
    result = scipy.stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_boot,
                                   method="BCa", **{keyword: gen})
    ci = result.confidence_interval
    return Interval(float(ci.low), float(ci.high), BCA, n)


def interval_text(method: str, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = LEVEL) -> str:
    """What an interval method is, in words, for table notes."""
    pct = f"{level:.0%}"
    return {T: f"mean ± half-width of the {pct} Student-t interval of the mean",
            BCA: f"mean ± half-width of the {pct} BCa bootstrap interval of the mean "
                 f"({n_boot} resamples, seed {seed})",
            NO_CI: "the mean only, no confidence interval"}[method]


def _counts(ns: Sequence[int]) -> str:
    ns = sorted(set(ns))
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}..{ns[-1]}"


def methods_note(stats: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> str:
    """One paragraph naming the interval method(s) and the seed counts behind ``stats``."""
    ran = stats[stats["n"] > 0]
    if ran.empty:
        return "No values to summarise."
    parts = []
    for method in (T, BCA, NO_CI):
        sub = ran[ran["ci_method"] == method]
        if len(sub):
            parts.append(f"{interval_text(method, n_boot, seed)} where n = "
                         f"{_counts(sub['n'].astype(int))} ok seeds")
    text = "Values over seeds: " + "; ".join(parts) + "."
    if ran["n"].max() == 1:
        return ("One seed per point: every value is a single measurement, with no estimate of "
                "its spread and no confidence interval.")
    if (ran["ci_method"] == NO_CI).any():
        text += (f" Below {MIN_N_FOR_CI} seeds no 95% interval is stated: a bootstrap of two "
                 "values never leaves their range, and Student's t with one degree of freedom "
                 "is 12.7 standard errors wide. Run 3 or more seeds for an interval.")
    return text


# --- is one model better than another? ------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    """Welch's two-sided t-test between samples ``a`` and ``b`` (e.g. two models' seeds at one
    length): ``diff = mean_a - mean_b`` with its Welch confidence interval and the p-value.
    ``p_value`` is NaN when a side has fewer than 2 values (nothing can be tested)."""

    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float
    n_a: int
    n_b: int
    level: float = LEVEL

    @property
    def testable(self) -> bool:
        return math.isfinite(self.p_value)

    def separated(self, alpha: float = ALPHA) -> bool:
        """True when the test rejects equal means at ``alpha``."""
        return self.testable and self.p_value < alpha

    def winner(self, higher_is_better: bool, alpha: float = ALPHA) -> str | None:
        """``'a'`` or ``'b'`` when one is better at ``alpha``, else None (not separated)."""
        if not self.separated(alpha):
            return None
        return "a" if (self.diff > 0) == higher_is_better else "b"


def difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
               level: float = LEVEL) -> Difference:
    """Welch's t-test of ``mean(a) == mean(b)`` (two-sided, ``scipy.stats.ttest_ind`` with
    ``equal_var=False``) and the Welch interval of ``mean(a) - mean(b)`` at ``level``.

    Both sides without spread: the means differ exactly (p = 0) or not at all (p = 1).
    A side with fewer than 2 values cannot be tested: p and the interval are NaN.

    >>> d = difference([0.90, 0.92, 0.91], [0.80, 0.82, 0.81])
    >>> round(d.diff, 3), d.p_value < 0.001, d.winner(higher_is_better=True)
    (0.1, True, 'a')
    """
    import scipy.stats

    x, y = _finite(a), _finite(b)
    mean_a = float(x.mean()) if len(x) else math.nan
    mean_b = float(y.mean()) if len(y) else math.nan
    diff = mean_a - mean_b
    if len(x) < 2 or len(y) < 2:
        return Difference(mean_a, mean_b, diff, math.nan, math.nan, math.nan, len(x), len(y),
                          level)
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        p = 1.0 if diff == 0 else 0.0
        return Difference(mean_a, mean_b, diff, diff, diff, p, len(x), len(y), level)
    with warnings.catch_warnings():  # nearly equal samples: scipy warns of precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy.stats.ttest_ind(x, y, equal_var=False)
        ci = result.confidence_interval(level)
    return Difference(mean_a, mean_b, diff, float(ci.low), float(ci.high), float(result.pvalue),
                      len(x), len(y), level)


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level
    ``alpha`` (NaN p-values are never rejected and still count in the family)."""
    p = [v if math.isfinite(v) else math.inf for v in p_values]
    m = len(p)
    rejected = [False] * m
    for step, i in enumerate(sorted(range(m), key=lambda k: p[k])):
        if p[i] >= alpha / (m - step):
            break
        rejected[i] = True
    return rejected


BEST, TIE = "best", "tie"


def best_marks(samples: Mapping[str, Sequence[float] | np.ndarray], higher_is_better: bool,
               alpha: float = ALPHA) -> dict[str, str]:
    """``name -> 'best' | 'tie' | ''`` for competing samples (two or more with values).

    The name with the best mean is ``'best'`` only when Welch's test separates it from every
    other one (Holm-corrected at ``alpha``). Otherwise it and every name it is not separated
    from are ``'tie'``. One or no competitor, or a best mean from fewer than 2 values (nothing
    can be tested): nothing is marked."""
    values = {k: _finite(v) for k, v in samples.items()}
    values = {k: v for k, v in values.items() if len(v)}
    marks = dict.fromkeys(samples, "")
    if len(values) < 2:
        return marks
    sign = 1.0 if higher_is_better else -1.0
    top = max(values, key=lambda k: sign * values[k].mean())
    if len(values[top]) < 2:
        return marks
    others = [k for k in values if k != top]
    rejected = holm([difference(values[top], values[k]).p_value for k in others], alpha)
    if all(rejected):
        marks[top] = BEST
        return marks
    marks[top] = TIE
    for k, r in zip(others, rejected, strict=True):
        if not r:
            marks[k] = TIE
    return marks


def rank(samples: Mapping[str, Sequence[float] | np.ndarray], higher_is_better: bool,
         alpha: float = ALPHA, level: float = LEVEL) -> pd.DataFrame:
    """A ranking that shows its uncertainty, one row per name, best mean first.

    ``samples`` maps a name (model label) to its values (one per seed) at one task, metric and
    length. Every pair is compared with :func:`difference` (Welch), Holm-corrected over all
    pairs at ``alpha``. Columns: ``name``, ``n``, ``mean``, ``ci_low``/``ci_high`` and
    ``ci_method`` (:func:`interval`), ``rank`` (by mean, 1 = best), ``rank_best`` /
    ``rank_worst`` (1 + the names significantly better; the count minus those significantly
    worse: a name whose rank_best..rank_worst spans 1..3 could be first or third),
    ``beats`` and ``beaten_by`` (names, '; '-joined).

    >>> r = rank({"a": [1.0, 1.1, 0.9], "b": [5.0, 5.1, 4.9], "c": [1.05, 0.95, 1.0]}, True)
    >>> r[["name", "rank", "rank_best", "rank_worst"]].values.tolist()
    [['b', 1, 1, 1], ['a', 2, 2, 3], ['c', 3, 2, 3]]
    """
    values = {k: _finite(v) for k, v in samples.items()}
    sign = 1.0 if higher_is_better else -1.0
    names = sorted(values, key=lambda k: -sign * values[k].mean() if len(values[k]) else math.inf)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    diffs = [difference(values[a], values[b], level) for a, b in pairs]
    rejected = holm([d.p_value for d in diffs], alpha)
    beats: dict[str, list[str]] = {k: [] for k in names}
    for (a, b), d, r in zip(pairs, diffs, rejected, strict=True):
        if r:
            win, lose = (a, b) if (d.diff > 0) == higher_is_better else (b, a)
            beats[win].append(lose)
    beaten_by = {k: [w for w in names if k in beats[w]] for k in names}
    rows = []
    for i, k in enumerate(names):
        ci = interval(values[k], level)
        rows.append({"name": k, "n": len(values[k]),
                     "mean": float(values[k].mean()) if len(values[k]) else math.nan,
                     "ci_low": ci.low, "ci_high": ci.high, "ci_method": ci.method, "rank": i + 1,
                     "rank_best": 1 + len(beaten_by[k]), "rank_worst": len(names) - len(beats[k]),
                     "beats": "; ".join(beats[k]), "beaten_by": "; ".join(beaten_by[k])})
    return pd.DataFrame(rows)


def seed_values(df: pd.DataFrame, task: str, metric: str, seq_len: int, *,
                by: str = "label") -> dict[str, np.ndarray]:
    """The ok seeds' values of ``metric`` (a column, e.g. ``metric_accuracy``) per ``by`` at one
    task and length: the input of :func:`rank`, :func:`best_marks` and :func:`difference`.

    >>> # rank(seed_values(df, "copy", "metric_accuracy", 20), higher_is_better=True)
    """
    df = _ensure_variants(df)
    rows = df[(df["task"] == task) & (df["seq_len"] == seq_len) & (df["status"] == "ok")]
    return {str(k): g[metric].dropna().to_numpy(dtype=float)
            for k, g in rows.groupby(by, sort=False)}


# --- aggregation ------------------------------------------------------------------------------
def failed_text(statuses: Counter) -> str:
    """``'1 oom'`` or ``'2 oom, 1 timeout'``: the failed seeds of a cell, by status."""
    return ", ".join(f"{c} {s}" for s, c in statuses.most_common())


def _ensure_variants(df: pd.DataFrame) -> pd.DataFrame:
    if {"variant", "label", "run"} <= set(df.columns):
        return df
    if "run" not in df.columns:
        df = df.assign(run="")
    return add_variants(df)


def natural(text: str) -> list:
    """Sort key reading digit runs as numbers: ``d_model=64`` before ``d_model=128``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text)]


def sort_key(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in canonical order: task as stored, models in registry order, then variant, run,
    length."""
    from seqbench.catalog import MODELS

    order = {t: i for i, t in enumerate(dict.fromkeys(df["task"]))}
    variants = {v: i for i, v in enumerate(sorted(set(df["variant"]), key=natural))}
    runs = {r: i for i, r in enumerate(dict.fromkeys(df["run"]))} if "run" in df else {}
    keyed = df.assign(_t=df["task"].map(order), _m=df["model"].map(MODELS.order),
                      _v=df["variant"].map(variants),
                      _r=df["run"].map(runs) if "run" in df else 0)
    return keyed.sort_values(["_t", "_m", "_v", "_r", "seq_len", "context_len"],
                             kind="stable").drop(columns=["_t", "_m", "_v", "_r"])


STAT_COLUMNS = ["metric", "ran", "mean", "std", "n", "ci_low", "ci_high", "ci_method", "min",
                "max", "n_failed", "failed", "status", "baseline", "higher_is_better"]


def aggregate(df: pd.DataFrame, columns: list[str] | None = None, *, by: Sequence[str] = (),
              n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """One row per (configuration, run, metric): the statistics of that metric over seeds.

    Columns: :data:`GROUP_KEYS`, ``metric`` (the stored column), ``mean``, ``std`` (ddof=1),
    ``n`` (ok seeds with a value), ``ci_low``/``ci_high`` and ``ci_method`` (:func:`interval`:
    NaN and ``none`` when n < 3), ``min``/``max`` of the values, ``n_failed`` and ``failed``
    (seeds whose status is not ok, e.g. ``'2 oom'``), ``status`` (``ok``; ``partial`` when some
    seeds failed; the failed status when all did), ``baseline`` (the task's trivial baseline for
    task metrics), ``higher_is_better`` and ``ran`` (False when every seed was skipped or
    unavailable: nothing was attempted). ``by`` splits groups further (e.g. ``["seed"]``).
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
            values = _finite(ok[col].dropna().to_numpy(dtype=float))
            if len(values) == 0 and not (n_failed and applies.loc[(key[0], key[1]), col]):
                continue
            ci = interval(values, level, n_boot=n_boot, seed=seed)
            base = C.BASELINE + col[len(C.METRIC):]
            status = "ok" if not n_failed else "partial" if len(values) else failed.most_common(
                1)[0][0]
            out.append({
                **dict(zip(keys, key, strict=True)), "metric": col,
                "ran": bool(len(values)) or any(s not in NOT_RUN for s in failed),
                "mean": values.mean() if len(values) else np.nan,
                "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                "n": len(values), "ci_low": ci.low, "ci_high": ci.high, "ci_method": ci.method,
                "min": values.min() if len(values) else np.nan,
                "max": values.max() if len(values) else np.nan,
                "n_failed": n_failed, "failed": failed_text(failed), "status": status,
                "baseline": group[base].mean() if col.startswith(C.METRIC) and base in group
                else np.nan,
                "higher_is_better": C.info(df, col).higher_is_better,
            })
    result = pd.DataFrame(out, columns=[*keys, *STAT_COLUMNS])
    result["n"] = result["n"].astype(int)
    result["n_failed"] = result["n_failed"].astype(int)
    return sort_key(result).reset_index(drop=True)


# --- cells ------------------------------------------------------------------------------------
def all_failed_text(failed: str) -> str:
    """What a cell whose seeds all failed shows: the status (``oom``), with a count when more
    than one seed failed (``3 oom``, ``2 oom, 1 timeout``)."""
    return failed[2:] if failed.startswith("1 ") and "," not in failed else failed


def column_cells(rows: pd.DataFrame, factor: float = 1.0, *, with_n: bool = False,
                 with_range: bool = True) -> list[str]:
    """The cells of one table column, in one number format (see :func:`columns.Notation`):
    ``mean ± h`` where ``mean ± h`` covers the interval; without an interval (n < 3) the mean
    and, with ``with_range``, the range of the values. ``with_n`` adds ``(n=..)`` and failed
    seeds by status. A cell whose seeds all failed shows their status."""
    ran = rows[rows["n"] > 0]
    notation = C.Notation.of([*(ran["mean"] * factor), *(ran["min"] * factor),
                              *(ran["max"] * factor)])
    out = []
    for _, row in rows.iterrows():
        if row["n"] == 0:
            out.append(all_failed_text(row["failed"]))
            continue
        mean = row["mean"] * factor
        notes = []
        if row["ci_method"] == NO_CI:
            text = notation.fmt(mean)
            if with_range and row["n"] > 1:
                notes.append(f"range {notation.fmt(row['min'] * factor)}"
                             f"..{notation.fmt(row['max'] * factor)}")
        else:
            text = notation.fmt_ci(mean, row["ci_low"] * factor, row["ci_high"] * factor)
        if with_n:
            notes.insert(0, f"n={row['n']}")
        if row["n_failed"]:
            notes.append(row["failed"])
        out.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    return out


def cell_text(row: pd.Series, factor: float = 1.0, *, with_n: bool = False) -> str:
    """One cell on its own (see :func:`column_cells`)."""
    return column_cells(pd.DataFrame([row]), factor, with_n=with_n)[0]


def status_text(n_ok: int, failed: str) -> str:
    """``ok``, ``oom`` / ``3 oom`` (every seed failed) or ``2 ok, 1 oom``."""
    if not failed:
        return "ok"
    return all_failed_text(failed) if n_ok == 0 else f"{n_ok} ok, {failed}"


SUMMARY_MEASURES = {  # kind -> measurements the summary shows: (column, title)
    "train": (("train_tokens_per_s", "train tokens/s"), ("peak_mem_bytes", "peak memory (MiB)")),
    "scale": (("train_step_s_median", "train step (ms)"), ("fwd_step_s_median", "fwd (ms)"),
              ("peak_mem_bytes", "peak memory (MiB)")),
    "stream": (("stream_step_s_median", "step (ms)"), ("state_bytes", "state")),
}
SUMMARY_COLUMNS = ["kind", "task", "model", "run", "seq_len", "metric", "value"]


def summary_table(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """The compact table ``seqbench run`` prints: per (task, model, run, seq_len) the primary
    metric (mean ± CI over seeds, or the mean and n below 3 seeds), the kind's measurements
    (training runs: throughput and peak memory; scaling runs: step times and memory) and the
    status of the seeds. Cells are strings ready to print, one number format per column;
    streaming rows are left out (they have their own plot and table). ``df.attrs['note']`` is
    the interval method, for a line under the table."""
    df = _ensure_variants(df)
    df = df[df["kind"] != "stream"]
    kinds = list(dict.fromkeys(df["kind"]))
    wanted = list(dict.fromkeys(c for k in kinds for c, _ in SUMMARY_MEASURES.get(k, ())))
    metrics = C.metric_columns(df)
    stats = aggregate(df, metrics + [c for c in wanted if c in df.columns], n_boot=n_boot,
                      seed=seed)
    titles = list(dict.fromkeys(t for k in kinds for _, t in SUMMARY_MEASURES.get(k, ())))
    columns = [*SUMMARY_COLUMNS, *titles, "status"]
    keys = ["kind", "task", "label", "run", "seq_len", "config_hash"]
    rows: list[dict] = []
    metric_rows: list[tuple[int, tuple, pd.Series]] = []
    measure_rows: dict[str, list[tuple[int, str, float]]] = {t: [] for t in titles}
    for (kind, task, label, run, seq_len, config_hash), cell in stats.groupby(keys, sort=False):
        group = df[(df["config_hash"] == config_hash) & (df["run"] == run)
                   & (df["seq_len"] == seq_len)]
        by_metric = cell.set_index("metric")
        row = {"kind": kind, "task": task, "model": label, "run": run, "seq_len": int(seq_len)}
        name = C.primary_metric(group) or ""
        if name and C.METRIC + name in by_metric.index:
            higher = C.info(df, C.METRIC + name).higher_is_better
            arrow = "" if higher is None else (" ↑" if higher else " ↓")
            row["metric"] = name + arrow
            metric_rows.append((len(rows), (kind, task, name), by_metric.loc[C.METRIC + name]))
        else:
            row["metric"], row["value"] = name or "-", "-"
        for col, title in SUMMARY_MEASURES.get(kind, ()):
            stat = by_metric.loc[col] if col in by_metric.index else None
            if stat is not None and stat["n"]:
                measure_rows[title].append((len(rows), col, stat["mean"]))
            row[title] = "-"
        n_ok = int((group["status"] == "ok").sum())
        row["status"] = status_text(n_ok, failed_text(Counter(
            group.loc[group["status"] != "ok", "status"])))
        rows.append(row)
    # one number format per column: a value column holds one metric per task, so format the
    # cells of each (kind, task, metric) together, and each measurement column as a whole
    by_metric_name: dict[tuple, list] = {}
    for i, key, stat in metric_rows:
        by_metric_name.setdefault(key, []).append((i, stat))
    for items in by_metric_name.values():
        texts = column_cells(pd.DataFrame([s for _, s in items]), with_range=False)
        for (i, stat), text in zip(items, texts, strict=True):
            rows[i]["value"] = text if stat["n"] else "-"
    for title, items in measure_rows.items():
        if items:
            col = items[0][1]
            if col == "state_bytes":
                texts = [C.fmt_bytes(v) for _, _, v in items]
            else:
                texts = C.Notation.of([v * C.MEASURES[col].factor for *_, v in items]).many(
                    [v * C.MEASURES[col].factor for *_, v in items])
            for (i, _, _), text in zip(items, texts, strict=True):
                rows[i][title] = text
    table = pd.DataFrame(rows, columns=columns)
    for column in ("kind", "run"):
        if table[column].nunique() <= 1:
            table = table.drop(columns=column)
    if not metric_rows:  # scaling rows: no task metric to show
        table = table.drop(columns=["metric", "value"])
    shown = stats[stats["metric"].isin(metrics)] if metric_rows else stats
    table.attrs["note"] = methods_note(shown, n_boot, seed)
    return table
