"""What a results column means to a reader: its label with units, display scale and direction.

Task metrics (``metric_<name>``) take their direction from the rows' ``higher_is_better_<name>``;
measurements take theirs from :data:`MEASURES`. :func:`resolve` turns what a user types
(``accuracy``, ``metric_accuracy``, ``train_tokens_per_s``) into a column, or raises a
:class:`~seqbench.errors.SpecError` that lists the choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqbench.errors import SpecError
from seqbench.results.text import shorten as shorten  # re-exported for report cells

METRIC = "metric_"
BASELINE = "baseline_"
HIGHER = "higher_is_better_"


@dataclass(frozen=True)
class Column:
    name: str  # stored column
    label: str  # axis and table label, with the displayed unit
    factor: float = 1.0  # displayed value = stored value x factor
    higher_is_better: bool | None = None  # None: no "best" (a description, not a score)
    log: bool = False  # spans orders of magnitude: log axes


MEASURES: dict[str, Column] = {c.name: c for c in (
    Column("train_tokens_per_s", "training throughput (tokens/s)", 1, True, True),
    Column("fwd_tokens_per_s", "forward throughput (tokens/s)", 1, True, True),
    Column("stream_tokens_per_s", "streaming throughput (tokens/s)", 1, True, True),
    Column("peak_mem_bytes", "peak memory (MiB)", 2**-20, False, True),
    Column("state_bytes", "state size (KiB)", 2**-10, False, True),
    Column("train_step_s_median", "training step (ms)", 1e3, False, True),
    Column("fwd_step_s_median", "forward pass (ms)", 1e3, False, True),
    Column("stream_step_s_median", "streaming step latency (ms)", 1e3, False, True),
    Column("train_flops_per_s", "training FLOP/s", 1, True, True),
    Column("flops_utilization", "FLOP utilization", 1, True, False),
    Column("train_final_loss", "final training loss", 1, False, False),
    Column("wall_s", "job wall time (s)", 1, None, True),
)}
# columns a plot may put on its x axis besides the measures
AXES: dict[str, Column] = {c.name: c for c in (
    Column("seq_len", "length (seq_len)", log=True),
    Column("input_len", "input length (tokens)", log=True),
    Column("context_len", "context length (tokens)", log=True),
    Column("param_count", "parameters", log=True),
    Column("d_model", "width d_model", log=True),
    Column("batch_size", "batch size", log=True),
    Column("seed", "seed"),
)}


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The task metric columns holding at least one value, in storage order."""
    return [c for c in df.columns if c.startswith(METRIC) and df[c].notna().any()]


def value_columns(df: pd.DataFrame) -> list[str]:
    """Every column that can be aggregated over seeds: task metrics, then measurements."""
    measures = [c for c in MEASURES if c in df.columns and df[c].notna().any()]
    return metric_columns(df) + measures


def info(df: pd.DataFrame, column: str) -> Column:
    if column in MEASURES:
        return MEASURES[column]
    if column in AXES:
        return AXES[column]
    if column.startswith(METRIC):
        name = column[len(METRIC):]
        flags = df[HIGHER + name].dropna() if HIGHER + name in df else pd.Series(dtype=bool)
        higher = bool(flags.iloc[0]) if len(flags) else None
        arrow = {True: " (higher is better)", False: " (lower is better)", None: ""}[higher]
        return Column(column, name + arrow, 1, higher)
    return Column(column, column.replace("_", " "))


def resolve(df: pd.DataFrame, name: str, *, what: str = "metric",
            allowed: list[str] | None = None) -> str:
    """The column ``name`` refers to (``accuracy`` -> ``metric_accuracy``), or a SpecError."""
    allowed = value_columns(df) if allowed is None else allowed
    for candidate in (name, METRIC + name):
        if candidate in allowed:
            return candidate
    shown = [c[len(METRIC):] if c.startswith(METRIC) else c for c in allowed]
    raise SpecError(what, name, f"known: {', '.join(shown) or 'none in these results'}")


def fmt_num(x: float, sig: int = 3) -> str:
    """A number on its own: ``sig`` significant digits, readable at any magnitude (columns of
    numbers use :class:`Notation`, so that one column keeps one format)."""
    return Notation.of([x]).fmt(x, sig)


SCI_BELOW, SCI_FROM = 1e-3, 1e9  # a column with a nonzero |value| outside these: scientific


@dataclass(frozen=True)
class Notation:
    """One number format for a whole column: fixed (``0.1608``, ``152,337``) or scientific
    (``1.61e-01``), chosen once from all of the column's values, so a column never mixes the
    two. Digits follow each cell's own uncertainty (two significant digits of its half-width)."""

    scientific: bool = False

    @classmethod
    def of(cls, values) -> Notation:
        finite = [abs(float(v)) for v in values if v is not None and not pd.isna(v)
                  and math.isfinite(float(v)) and float(v) != 0]
        return cls(any(a < SCI_BELOW or a >= SCI_FROM for a in finite))

    def fmt(self, x: float, sig: int = 3) -> str:
        if x is None or pd.isna(x) or not math.isfinite(x):
            return "-"
        if x == 0:
            return "0"
        if self.scientific:
            return f"{x:.{sig - 1}e}"
        magnitude = math.floor(math.log10(abs(x)))
        if magnitude >= sig - 1:
            return f"{x:,.0f}"
        return f"{x:.{sig - 1 - magnitude}f}"

    def many(self, values, sig: int = 3) -> list[str]:
        return [self.fmt(v, sig) for v in values]

    def fmt_ci(self, mean: float, low: float, high: float) -> str:
        """``mean ± h`` where ``mean ± h`` covers the whole interval (h is its larger side), h to
        two significant digits and the mean rounded to the same place."""
        if mean is None or pd.isna(mean):
            return "-"
        if pd.isna(low) or pd.isna(high):
            return self.fmt(mean)
        h = max(high - mean, mean - low)
        if not h > 0:
            return f"{self.fmt(mean)} ± 0"
        place = math.floor(math.log10(h)) - 1  # the decimal place of h's second digit
        if self.scientific:
            if mean == 0:
                return f"0 ± {h:.1e}"
            digits = min(6, max(1, math.floor(math.log10(abs(mean))) - place))
            return f"{mean:.{digits}e} ± {h:.1e}"
        if place >= 0:  # large numbers: round both to h's second significant digit
            return f"{round(mean, -place):,.0f} ± {round(h, -place):,.0f}"
        decimals = min(-place, 9)
        return f"{mean:,.{decimals}f} ± {h:,.{decimals}f}"


def fmt_ci(mean: float, low: float, high: float) -> str:
    """One ``mean ± h`` cell on its own (see :meth:`Notation.fmt_ci`)."""
    return Notation.of([mean]).fmt_ci(mean, low, high)


def fmt_bytes(n: float | None) -> str:
    """A byte size in the unit that fits: ``256 B``, ``36.0 KiB``, ``8.00 MiB``, ``1.50 GiB``."""
    if n is None or pd.isna(n) or not math.isfinite(n):
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
    return f"{n:.0f} B"


def primary_metric(rows: pd.DataFrame) -> str | None:
    """The primary metric most of one task's rows name (None if none does)."""
    names = rows["primary_metric"].replace("", np.nan).dropna().mode().tolist()
    return names[0] if names else None
