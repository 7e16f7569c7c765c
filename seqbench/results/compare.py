"""Regression comparison of two runs: what got slower, hungrier or less accurate.

Rows of BASE and NEW are matched by configuration (``config_hash``), machine (``device_name``)
and, for streaming rows, context position (:func:`seqbench.results.identity.config_key`, the
definition ``load`` and the report share); seeds pair up within a match.
:func:`compare_across_devices` matches on the configuration alone, to compare two machines, and
the output says so. For each match:

* **speed** (training, forward-only and streaming tokens/s): the ratio of the two medians must
  pass ``threshold`` (default 1.1, either way) *and* the per-repetition step times
  (``<mode>_step_s_samples``, every seed's pooled) must differ by a two-sided Mann-Whitney U
  test at ``alpha`` (default 0.01, ``scipy.stats.mannwhitneyu``), the test asv compare uses. A
  change that passes only one of the two is reported as noise, not flagged. Rows without samples
  fall back to the ratio.
* **memory** (``peak_mem_bytes``): one number per run, no repetitions, so the ratio alone.
* **status**: any change of a seed's status is always flagged (ok -> oom, ok -> diverged, ...);
  leaving ``ok`` is a regression, reaching ``ok`` an improvement.
* **task metrics** (every ``metric_<m>`` with ``higher_is_better_<m>``; means over the seeds ok
  in both runs): worse by more than ``atol + rtol x |base|`` is a regression.

"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqbench.results.columns import HIGHER, MEASURES, METRIC, fmt_num
from seqbench.results.identity import config_key, machine

THRESHOLD = 1.1  # a speed or memory ratio must reach this (either way) to count
ALPHA = 0.01  # significance level of the Mann-Whitney U test on step-time samples
METRIC_ATOL = 0.01  # a task metric may get worse by atol + rtol x |base| before it is flagged
METRIC_RTOL = 0.05

# what is compared: row column -> (short name, per-repetition step times in seconds, or None)
QUANTITIES = {"train_tokens_per_s": ("train tok/s", "train_step_s_samples"),
              "fwd_tokens_per_s": ("fwd tok/s", "fwd_step_s_samples"),
              "stream_tokens_per_s": ("stream tok/s", "stream_step_s_samples"),
              "peak_mem_bytes": ("peak MiB", None)}  # direction and display scale: MEASURES

REGRESSION, IMPROVEMENT, NOISE, SAME = "regression", "improvement", "noise", "unchanged"


# --- Mann-Whitney U ------------------------------------------------------------------------

def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test (Mann & Whitney 1947) of ``x`` against ``y``:
    (U of ``x``, p-value), by ``scipy.stats.mannwhitneyu`` (exact for small samples without
    ties, the normal approximation with tie and continuity corrections otherwise)."""
    import scipy.stats

    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both samples need at least one finite value")
    if np.ptp(np.concatenate([a, b])) == 0:  # every value equal: nothing differs
        return len(a) * len(b) / 2.0, 1.0
    result = scipy.stats.mannwhitneyu(a, b, alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


# --- matching and judging ------------------------------------------------------------------

Key = tuple  # identity.config_key: (config_hash, context_len[, machine])


def _num(value: Any) -> float:
    """A float from a row value (None, NaN, pandas NA and junk become NaN)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _samples(value: Any) -> list[float]:
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return []
    return [v for v in (_num(x) for x in value) if math.isfinite(v)]


def describe(row: dict[str, Any]) -> str:
    """``task L=.. model`` (+ kind and context position when they tell rows apart)."""
    text = f"{row.get('task')} L={row.get('seq_len')} {row.get('model')}"
    if row.get("variant"):
        text += f" ({row['variant']})"
    if row.get("kind") not in (None, "", "train"):
        text += f" [{row['kind']}]"
    context = _num(row.get("context_len"))
    if math.isfinite(context):
        text += f" ctx={int(context)}"
    return text


@dataclass
class Finding:
    """One compared quantity of one matched configuration."""

    config: str  # describe(row)
    config_hash: str
    device: str
    quantity: str  # "train tokens/s", "status (seed 1)", "metric mse", ...
    base: str
    new: str
    ratio: float = math.nan  # new / base, for numeric quantities
    p_value: float = math.nan  # Mann-Whitney U, when samples exist on both sides
    verdict: str = SAME

    @property
    def flagged(self) -> bool:
        return self.verdict in (REGRESSION, IMPROVEMENT)


@dataclass
class Comparison:
    findings: list[Finding] = field(default_factory=list)
    matched: int = 0  # configurations present in both runs
    only_base: int = 0
    only_new: int = 0
    other_device: int = 0  # configurations in both runs, but each on a different device
    settings: dict[str, float] = field(default_factory=dict)
    across_devices: bool = False  # matched on the configuration alone
    base_devices: list[str] = field(default_factory=list)  # machines of each side's rows
    new_devices: list[str] = field(default_factory=list)
    base_configs: int = 0  # distinct configurations of each side
    new_configs: int = 0

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == REGRESSION]

    @property
    def improvements(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == IMPROVEMENT]

    def speed_drift(self) -> tuple[float, int]:
        """Median NEW/BASE ratio of every speed quantity, and how many there are. Far from 1
        with most configurations moving together, it points at the machine (load, clocks, a
        noisy neighbour) rather than at one model's code."""
        speeds = {QUANTITIES[c][0] for c in QUANTITIES if QUANTITIES[c][1]}
        ratios = [f.ratio for f in self.findings
                  if f.quantity in speeds and math.isfinite(f.ratio) and f.ratio > 0]
        return (float(np.median(ratios)) if ratios else math.nan), len(ratios)

    def header(self) -> str:
        """How rows were matched: on one machine, or across two (said explicitly)."""
        if self.across_devices:
            return ("matched on configuration (config hash) alone, ACROSS DEVICES: BASE on "
                    f"{' / '.join(self.base_devices) or '?'}, NEW on "
                    f"{' / '.join(self.new_devices) or '?'}; speed and memory ratios compare "
                    "the machines as much as the code")
        return "matched on configuration (config hash) and device"

    def refusal(self) -> str:
        """Why nothing matched, with what each side holds (empty when something matched)."""
        if self.matched:
            return ""
        sides = (f"BASE has {self.base_configs} configuration(s) on "
                 f"{' / '.join(self.base_devices) or 'no device'}, NEW has {self.new_configs} on "
                 f"{' / '.join(self.new_devices) or 'no device'}")
        if self.other_device:
            return (f"no configuration ran on the same device in both runs: {sides}; "
                    f"{self.other_device} configuration(s) are in both but on other devices "
                    "(pass --across-devices to compare them on config hash alone)")
        return (f"no configuration (config hash) is in both runs: {sides} (different suites, "
                "spec versions or settings?)")

    def summary(self) -> str:
        text = (f"{self.matched} configurations matched: {len(self.regressions)} regressions, "
                f"{len(self.improvements)} improvements")
        extra = [f"{n} only in {side}" for n, side in ((self.only_base, "BASE"),
                                                       (self.only_new, "NEW")) if n]
        if self.other_device:
            extra.append(f"{self.other_device} on other devices")
        text += f" ({', '.join(extra)})" if extra else ""
        drift, n = self.speed_drift()
        if n >= 3 and abs(math.log(drift)) > math.log(1.05):
            text += (f"; median speed ratio NEW/BASE over all {n} speed quantities: {drift:.2f} "
                     "(the whole machine moved?)")
        return text




def _verdict(worse_ratio: float, threshold: float, significant: bool) -> str:
    """worse_ratio > 1 means NEW is worse by that factor (< 1: better)."""
    if not math.isfinite(worse_ratio) or worse_ratio <= 0:
        return SAME
    if worse_ratio < threshold and 1.0 / worse_ratio < threshold:
        return SAME
    if not significant:
        return NOISE
    return REGRESSION if worse_ratio > 1 else IMPROVEMENT


def _ok(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status") == "ok"]


def _measure(base: list[dict], new: list[dict], column: str, threshold: float,
             alpha: float) -> Finding | None:
    spec = MEASURES[column]
    name, samples_field = QUANTITIES[column]
    b = [v for v in (_num(r.get(column)) for r in _ok(base)) if math.isfinite(v) and v > 0]
    n = [v for v in (_num(r.get(column)) for r in _ok(new)) if math.isfinite(v) and v > 0]
    if not b or not n:
        return None
    b_med, n_med = float(np.median(b)), float(np.median(n))
    ratio = n_med / b_med
    worse = 1.0 / ratio if spec.higher_is_better else ratio
    p = math.nan
    if samples_field:
        bs = [s for r in _ok(base) for s in _samples(r.get(samples_field))]
        ns = [s for r in _ok(new) for s in _samples(r.get(samples_field))]
        if bs and ns:
            p = mann_whitney_u(bs, ns)[1]
    significant = p < alpha if math.isfinite(p) else True  # no samples: the ratio decides
    return Finding("", "", "", name, fmt_num(b_med * spec.factor), fmt_num(n_med * spec.factor),
                   ratio=ratio, p_value=p, verdict=_verdict(worse, threshold, significant))


def _statuses(base: list[dict], new: list[dict]) -> list[Finding]:
    b = {r.get("seed"): r.get("status") for r in base}
    n = {r.get("seed"): r.get("status") for r in new}
    out = []
    for seed in sorted(set(b) & set(n), key=str):
        if b[seed] == n[seed]:
            continue
        verdict = IMPROVEMENT if n[seed] == "ok" else REGRESSION
        out.append(Finding("", "", "", f"status (seed {seed})", str(b[seed]), str(n[seed]),
                           verdict=verdict))
    return out


def _metrics(base: list[dict], new: list[dict], atol: float, rtol: float) -> list[Finding]:
    b = {r.get("seed"): r for r in _ok(base)}
    n = {r.get("seed"): r for r in _ok(new)}
    seeds = sorted(set(b) & set(n), key=str)
    if not seeds:
        return []
    names = [k[len(METRIC):] for k in b[seeds[0]] if k.startswith(METRIC)]
    out = []
    for name in names:
        higher = b[seeds[0]].get(HIGHER + name)
        if not isinstance(higher, (bool, np.bool_)):
            continue  # a metric without a direction cannot get worse
        pairs = [(_num(b[s].get(METRIC + name)), _num(n[s].get(METRIC + name))) for s in seeds]
        pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
        if not pairs:
            continue
        base_mean = float(np.mean([x for x, _ in pairs]))
        new_mean = float(np.mean([y for _, y in pairs]))
        worse_by = (base_mean - new_mean) if higher else (new_mean - base_mean)
        tolerance = atol + rtol * abs(base_mean)
        verdict = (REGRESSION if worse_by > tolerance else
                   IMPROVEMENT if -worse_by > tolerance else SAME)
        ratio = new_mean / base_mean if base_mean else math.nan
        out.append(Finding("", "", "", f"metric {name}", fmt_num(base_mean, 4),
                           fmt_num(new_mean, 4), ratio=ratio, verdict=verdict))
    return out


def compare(base_rows: Iterable[dict[str, Any]], new_rows: Iterable[dict[str, Any]], *,
            threshold: float = THRESHOLD, alpha: float = ALPHA, metric_atol: float = METRIC_ATOL,
            metric_rtol: float = METRIC_RTOL) -> Comparison:
    """Compare two runs' rows measured on the same machine (see the module docstring)."""
    return _compare(base_rows, new_rows, threshold, alpha, metric_atol, metric_rtol, False)


def compare_across_devices(base_rows: Iterable[dict[str, Any]],
                           new_rows: Iterable[dict[str, Any]], *, threshold: float = THRESHOLD,
                           alpha: float = ALPHA, metric_atol: float = METRIC_ATOL,
                           metric_rtol: float = METRIC_RTOL) -> Comparison:
    """Compare two runs from different machines: configurations match on config hash alone
    (:attr:`Comparison.header` says so), seeds still pair within a configuration."""
    return _compare(base_rows, new_rows, threshold, alpha, metric_atol, metric_rtol, True)


def _compare(base_rows: Iterable[dict[str, Any]], new_rows: Iterable[dict[str, Any]],
             threshold: float, alpha: float, metric_atol: float, metric_rtol: float,
             across_devices: bool) -> Comparison:
    groups: tuple[dict[Key, list], dict[Key, list]] = (defaultdict(list), defaultdict(list))
    devices: tuple[dict[str, None], dict[str, None]] = ({}, {})
    for side, seen, rows in zip(groups, devices, (base_rows, new_rows), strict=True):
        for row in rows:
            side[config_key(row, across_machines=across_devices)].append(row)
            seen[machine(row)] = None
    base, new = groups
    result = Comparison(settings={"threshold": threshold, "alpha": alpha,
                                  "metric_atol": metric_atol, "metric_rtol": metric_rtol},
                        across_devices=across_devices, base_devices=list(devices[0]),
                        new_devices=list(devices[1]), base_configs=len({k[0] for k in base}),
                        new_configs=len({k[0] for k in new}))
    matched = [k for k in base if k in new]
    result.matched = len(matched)
    result.only_base = sum(k not in new for k in base)
    result.only_new = sum(k not in base for k in new)
    hashes_base = {k[:2] for k in base if k not in new}
    result.other_device = len({k[:2] for k in new if k not in base} & hashes_base)
    for key in matched:
        b, n = base[key], new[key]
        found = _statuses(b, n)
        for column in QUANTITIES:
            measured = _measure(b, n, column, threshold, alpha)
            if measured:
                found.append(measured)
        found += _metrics(b, n, metric_atol, metric_rtol)
        label = describe(n[0])
        device = machine(n[0]) if not across_devices else (
            f"{machine(b[0])} -> {machine(n[0])}" if machine(b[0]) != machine(n[0])
            else machine(n[0]))
        for f in found:
            f.config, f.config_hash, f.device = label, key[0], device
        result.findings += found
    return result


# --- input and output ----------------------------------------------------------------------

def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results directory or a .jsonl/.json/.parquet file (bad input: SpecError)."""
    from seqbench.results.load import load

    df = load(path, warn=False)
    return df.to_dict("records")


COLUMNS = ("configuration", "device", "quantity", "BASE", "NEW", "NEW/BASE", "p", "verdict")
NUMERIC = frozenset({"BASE", "NEW", "NEW/BASE", "p"})
ORDER = {REGRESSION: 0, IMPROVEMENT: 1, NOISE: 2, SAME: 3}


def table_rows(result: Comparison, show_all: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the findings table (the flagged ones unless ``show_all``), worst
    first; the device column only when the findings span several devices."""
    shown = sorted((f for f in result.findings if show_all or f.flagged),
                   key=lambda f: ORDER[f.verdict])  # stable: configurations keep their order
    columns = [c for c in COLUMNS
               if c != "device" or len({f.device for f in result.findings}) > 1]
    rows = []
    for f in shown:
        cells = {"configuration": f.config, "device": f.device, "quantity": f.quantity,
                 "BASE": f.base, "NEW": f.new,
                 "NEW/BASE": f"{f.ratio:.2f}" if math.isfinite(f.ratio) else "",
                 "p": f"{f.p_value:.1g}" if math.isfinite(f.p_value) else "",
                 "verdict": f.verdict}
        rows.append([cells[c] for c in columns])
    return columns, rows


def devices_text(result: Comparison) -> str:
    names = sorted({f.device for f in result.findings})
    return f"device: {names[0]}" if len(names) == 1 else ""


def settings_text(result: Comparison) -> str:
    s = result.settings
    return (f"speed and memory flagged at a ratio of {s['threshold']:g} (speed also needs "
            f"Mann-Whitney p < {s['alpha']:g}); metrics at {s['metric_atol']:g} + "
            f"{s['metric_rtol']:g} x |BASE|; status changes always")


def to_markdown(result: Comparison, base: str, new: str, show_all: bool = False) -> str:
    import pandas as pd

    from seqbench.results.writers import Table, md_table

    from seqbench.results.writers import md_escape

    lines = ["# seqbench compare\n", f"- BASE: {md_escape(base)}", f"- NEW: {md_escape(new)}",
             f"- {md_escape(result.header())}", f"- {md_escape(result.summary())}",
             f"- {md_escape(settings_text(result))}"]
    if devices_text(result):
        lines.append(f"- {md_escape(devices_text(result))}")
    columns, rows = table_rows(result, show_all)
    lines.append("")
    if rows:
        frame = pd.DataFrame(rows, columns=columns)
        bold = frame.apply(lambda col: frame["verdict"] == REGRESSION if col.name == "verdict"
                           else pd.Series(False, index=frame.index))
        lines.append(md_table(Table(frame, bold=bold)))
    else:
        lines.append("Nothing changed beyond the thresholds.\n")
    return "\n".join(lines)


def print_table(result: Comparison, console: Any, show_all: bool = False) -> None:
    from rich.table import Table as RichTable

    from rich.markup import escape

    style = {REGRESSION: "bold red", IMPROVEMENT: "green", NOISE: "dim", SAME: "dim"}
    console.print(("[bold yellow]" if result.across_devices else "[dim]")
                  + escape(result.header()) + "[/]")
    columns, rows = table_rows(result, show_all)
    if rows:
        table = RichTable(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for name in columns:
            table.add_column(name, justify="right" if name in NUMERIC else "left",
                             no_wrap=name != "configuration")
        for row in rows:
            table.add_row(*(escape(c) for c in row), style=style[row[-1]])
        console.print(table)
    console.print(escape(result.summary() + (f"; {devices_text(result)}" if devices_text(result)
                                             else "")))
    console.print(f"[dim]{settings_text(result)}[/]")
