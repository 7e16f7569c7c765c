"""Expected orderings, checked: ``seqbench check RESULTS``.

A reproduction states what it expects as data, in its spec's ``expect`` list
(:class:`seqbench.config.spec.Expect`)::

    expect:
      - {better: mamba, worse: s4d, metric: accuracy, margin: 0.2,
         why: "Mamba Table 1: selective copying, S4 18.3% vs Mamba 99.8%"}

Each entry is evaluated at every point of the results that it matches: one (task, task params
in effect, training length, evaluation length) with rows of both sides. At a point the ok
seeds' values of ``metric`` on each side (the main evaluation, or the evaluation setting at
``eval_len``; :func:`seqbench.results.load.load_evals`) are compared with the reports' rule,
Welch's two-sided t-test at level :data:`seqbench.results.stats.ALPHA`
(:func:`seqbench.results.stats.difference`). With ``d`` the difference of the means in the
metric's own direction (better minus worse where higher is better, worse minus better where
lower is), the verdict is:

``held``
    Welch separates the two sides, the better one wins, and ``d >= margin``.
``below margin``
    separated in the expected direction, but ``d < margin``.
``not separated``
    the test does not separate them (``p >= alpha``); the means may point either way.
``flipped``
    separated in the *other* direction: the expected-worse side is significantly better.
``untestable``
    a side has a single value (one seed): no test; the means are shown.
``missing``
    a side has no ok value where the other has rows (every seed failed, or never ran): the
    statuses say why.

Gradient flow (``train.grad_probe``) gives two more metrics, higher is better (a slower decay):
``grad_decay_init`` and ``grad_decay_end``, the ``decay_per_step`` of the probe at
initialisation (step 0) and at the end of training (the last probe point), i.e. the slope of
ln(gradient norm) against distance (:mod:`seqbench.worker.gradients`).

Evaluation settings beyond the training lengths give ``ood_<metric>`` (e.g. ``ood_accuracy``):
per job, the mean of the metric over its evaluated lengths longer than its longest training
length, the score of the Chomsky-hierarchy study (Delétang et al. 2023;
:func:`seqbench.results.extrapolation.chomsky_scores`), in the metric's own direction.

``better: baseline`` or ``worse: baseline`` stands for the task's trivial baseline of the
metric (the rows' ``baseline_<metric>``, e.g. 1/6 MSE for the adding problem).

``seqbench check`` exits 1 when any point is ``flipped`` or ``missing`` (``--strict``: anything
but ``held``), 0 otherwise, 2 on bad input. The nightly run checks its reproductions the same
way (:mod:`seqbench.execution.nightly`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from seqbench.config.spec import BASELINE, Expect, ModelRef, Suite
from seqbench.errors import SpecError
from seqbench.recording.reader import read_dir
from seqbench.results import stats

HELD, BELOW, NOT_SEPARATED, FLIPPED, UNTESTABLE, MISSING = (
    "held", "below margin", "not separated", "flipped", "untestable", "missing")
FAILING = frozenset({FLIPPED, MISSING})  # exit 1 without --strict
GRAD_METRICS = ("grad_decay_init", "grad_decay_end")  # from the rows' grad_profile
RULE = (f"Rule: Welch's two-sided t-test over the seeds at alpha {stats.ALPHA}; the difference "
        "is better minus worse in the metric's direction, with its Welch 95% interval; held "
        "needs separation in the expected direction and a difference of at least the margin.")


@dataclass(frozen=True)
class Verdict:
    """One expectation at one point of the results."""

    index: int  # the entry's position in ``expect``
    expect: Expect
    task: str
    params: str  # the task params in effect, as ``k=v, ...`` ('' when none)
    seq_len: int  # training length
    eval_len: int  # evaluation length
    status: str
    metric: str
    higher_is_better: bool
    better_mean: float
    worse_mean: float
    n_better: int
    n_worse: int
    margin_diff: float  # the difference of the means in the metric's direction (NaN: none)
    low: float  # its Welch interval (NaN: none)
    high: float
    p_value: float
    note: str = ""  # statuses of failed seeds, or why nothing could be tested

    @property
    def failing(self) -> bool:
        return self.status in FAILING


@dataclass
class Check:
    """The verdicts of one results directory's expectations."""

    path: Path
    suite: str
    verdicts: list[Verdict] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # entries that matched no rows at all

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.verdicts:
            out[v.status] = out.get(v.status, 0) + 1
        if self.unmatched:
            out[MISSING] = out.get(MISSING, 0) + len(self.unmatched)
        return out

    def failed(self, strict: bool = False) -> bool:
        if self.unmatched:
            return True
        return any(v.failing or (strict and v.status != HELD) for v in self.verdicts)

    def summary(self) -> str:
        counts = self.counts()
        total = sum(counts.values())
        parts = [f"{counts[s]} {s}" for s in (HELD, BELOW, NOT_SEPARATED, UNTESTABLE, FLIPPED,
                                              MISSING) if counts.get(s)]
        return f"{self.suite}: {total} checks: " + (", ".join(parts) or "none")


def suite_of(path: Path) -> Suite:
    """The validated suite a results directory was run from (its ``suite.json``)."""
    results = read_dir(path)
    if results.suite is None:
        raise SpecError("RESULTS", str(path), f"a seqbench results directory "
                        f"({results.suite_problem})")
    spec = results.suite.get("spec")
    if not isinstance(spec, dict):
        raise SpecError("RESULTS", str(path), "a results directory whose suite.json holds "
                        "the validated spec")
    return Suite.model_validate(spec)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _frame(path: Path) -> pd.DataFrame:
    """One record per (job, evaluation setting) with the model's params, status and metrics."""
    from seqbench.results.load import load, load_evals

    evals = load_evals(path, warn=False)
    if evals.empty:
        return evals
    rows = load(path, warn=False)
    jobs = dict(zip(rows["job_id"], rows["job"], strict=True))
    hib = {c[len("higher_is_better_"):]: rows[c].dropna() for c in rows.columns
           if c.startswith("higher_is_better_")}
    evals = evals.copy()
    evals["model_params"] = [
        (jobs.get(j) or {}).get("model", {}).get("params", {}) if isinstance(jobs.get(j), dict)
        else {} for j in evals["job_id"]]
    evals["task_params"] = [
        _params_text({**_task_params_of(jobs.get(j)), **(ep if isinstance(ep, dict) else {})})
        for j, ep in zip(evals["job_id"], evals["eval_params"], strict=True)]
    evals.attrs["higher_is_better"] = {m: bool(s.iloc[0]) for m, s in hib.items() if len(s)}
    _add_ood(evals, main_mask=evals["setting"] == "main")
    profiles = dict(zip(rows["job_id"], rows["grad_profile"], strict=True))
    main = evals["setting"] == "main"
    for name, value in zip(GRAD_METRICS, (_first_probe, _last_probe), strict=True):
        decay = [value(profiles.get(j)) if m else math.nan
                 for j, m in zip(evals["job_id"], main, strict=True)]
        if any(math.isfinite(d) for d in decay):
            evals[f"metric_{name}"] = decay
            evals.attrs["higher_is_better"][name] = True
    return evals


def _add_ood(evals: pd.DataFrame, main_mask: pd.Series) -> None:
    """``metric_ood_<m>`` on each job's main record: its mean ``m`` beyond training lengths."""
    hib: dict[str, bool] = evals.attrs["higher_is_better"]
    if not ((evals["setting"] == "eval") & (evals["eval_seq_len"] > evals["train_len_max"])).any():
        return
    from seqbench.results.extrapolation import chomsky_scores

    for metric in list(hib):
        if f"metric_{metric}" not in evals:
            continue
        scores = chomsky_scores(evals, metric)
        by_job = dict(zip(scores["job_id"], scores["score"], strict=True))
        evals[f"metric_ood_{metric}"] = [by_job.get(j, math.nan) if m else math.nan
                                         for j, m in zip(evals["job_id"], main_mask,
                                                         strict=True)]
        hib[f"ood_{metric}"] = hib[metric]


def _probe_decays(profile: Any) -> list[tuple[int, float]]:
    points = profile if isinstance(profile, list) else []
    out = []
    for p in points:
        if isinstance(p, dict) and isinstance(p.get("step"), int):
            d = p.get("decay_per_step")
            out.append((p["step"], float(d) if isinstance(d, (int, float)) else math.nan))
    return sorted(out)


def _first_probe(profile: Any) -> float:
    points = _probe_decays(profile)
    return points[0][1] if points and points[0][0] == 0 else math.nan


def _last_probe(profile: Any) -> float:
    points = _probe_decays(profile)
    return points[-1][1] if points and points[-1][0] > 0 else math.nan


def _task_params_of(job: Any) -> dict[str, Any]:
    task = job.get("task") if isinstance(job, dict) else None
    params = task.get("params") if isinstance(task, dict) else None
    return dict(params) if isinstance(params, dict) else {}


def _side(df: pd.DataFrame, ref: ModelRef) -> pd.DataFrame:
    keep = [ref.matches(m, p if isinstance(p, dict) else {})
            for m, p in zip(df["model"], df["model_params"], strict=True)]
    return df[keep]


def _status_note(rows: pd.DataFrame) -> str:
    bad = rows[rows["status"] != "ok"]["status"].value_counts()
    return ", ".join(f"{n} {s}" for s, n in bad.items())


def _verdict(i: int, e: Expect, hib: bool, point: tuple[Any, ...], better: pd.DataFrame,
             worse: pd.DataFrame) -> Verdict:
    task, params, seq_len, eval_len = point
    col, base = f"metric_{e.metric}", f"baseline_{e.metric}"

    def values(side: ModelRef, rows: pd.DataFrame, other: pd.DataFrame) -> Any:
        if side.name == BASELINE:  # the trivial baseline: one value per row of the other side
            src = other[other["status"] == "ok"]
            return src[base].dropna().to_numpy(dtype=float) if base in src else []
        ok = rows[rows["status"] == "ok"]
        return ok[col].dropna().to_numpy(dtype=float) if col in ok else []

    b, w = values(e.better, better, worse), values(e.worse, worse, better)
    d = stats.difference(b, w)
    sign = 1.0 if hib else -1.0
    margin_diff = sign * d.diff if len(b) and len(w) else math.nan
    low, high = sorted((sign * d.low, sign * d.high)) if d.testable else (math.nan, math.nan)
    note = "; ".join(x for x in (
        f"{e.better.text()}: {_status_note(better)}" if _status_note(better) else "",
        f"{e.worse.text()}: {_status_note(worse)}" if _status_note(worse) else "") if x)
    if not len(b) or not len(w):
        status = MISSING
        note = note or f"no {e.metric} values"
    elif len(b) < 2 or len(w) < 2:
        status = UNTESTABLE
    elif not d.separated():
        status = NOT_SEPARATED
    elif margin_diff < 0:
        status = FLIPPED
    else:
        status = HELD if margin_diff >= e.margin else BELOW
    return Verdict(i, e, task, params, int(seq_len), int(eval_len), status, e.metric, hib,
                   d.mean_a, d.mean_b, d.n_a, d.n_b, margin_diff, low, high, d.p_value, note)


def evaluate(expectations: Sequence[Expect], df: pd.DataFrame, path: Path, suite: str) -> Check:
    """Every expectation at every point of ``df`` (the frame of :func:`_frame`) it matches."""
    check = Check(path, suite)
    hibs: dict[str, bool] = df.attrs.get("higher_is_better", {}) if not df.empty else {}
    for i, e in enumerate(expectations):
        rows = df
        if not rows.empty:
            rows = rows[rows["setting"] == "main"] if e.eval_len is None else rows[
                (rows["setting"] == "eval") & (rows["eval_seq_len"] == e.eval_len)]
            if e.task is not None:
                rows = rows[rows["task"] == e.task]
            if e.seq_len is not None:
                rows = rows[rows["train_seq_len"] == e.seq_len]
            for k, v in e.params.items():
                col = f"param_{k}"
                rows = rows[rows[col] == v] if col in rows else rows.iloc[0:0]
        real = [r for r in (e.better, e.worse) if r.name != BASELINE]
        sides = [_side(rows, r) for r in real] if not rows.empty else []
        points = sorted({p for s in sides for p in zip(
            s["task"], s["task_params"], s["train_seq_len"], s["eval_seq_len"], strict=True)},
            key=lambda p: (p[0], p[1], int(p[2]), int(p[3])))
        if not points:
            check.unmatched.append(f"expect[{i}] {e.text()}: no rows match")
            continue
        if e.metric not in hibs:
            raise SpecError(f"expect[{i}].metric", e.metric, "a metric of these rows ("
                            + ", ".join(sorted(hibs)) + ")")
        for point in points:
            at = rows[(rows["task"] == point[0]) & (rows["task_params"] == point[1])
                      & (rows["train_seq_len"] == point[2]) & (rows["eval_seq_len"] == point[3])]
            better = at.iloc[0:0] if e.better.name == BASELINE else _side(at, e.better)
            worse = at.iloc[0:0] if e.worse.name == BASELINE else _side(at, e.worse)
            check.verdicts.append(_verdict(i, e, hibs[e.metric], point, better, worse))
    return check


def check_dir(path: str | Path, expectations: Sequence[Expect] | None = None) -> Check:
    """The verdicts of a results directory's expectations (its own spec's, or the given)."""
    path = Path(path)
    suite = suite_of(path)
    expect = list(suite.expect if expectations is None else expectations)
    return evaluate(expect, _frame(path), path, suite.name)


def _num(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.{digits}f}"


def table(check: Check) -> pd.DataFrame:
    """One line per verdict, for the terminal, Markdown and the reports."""
    cells = []
    for v in check.verdicts:
        where = ", ".join(x for x in (v.task, v.params, f"T={v.seq_len}",
                                      f"eval {v.eval_len}" if v.eval_len != v.seq_len else "")
                          if x)
        interval = f"[{_num(v.low)}, {_num(v.high)}]" if math.isfinite(v.low) else "-"
        cells.append({
            "expectation": f"{v.expect.better.text()} > {v.expect.worse.text()}",
            "metric": v.metric + (" (higher better)" if v.higher_is_better else
                                  " (lower better)"),
            "at": where, "better": f"{_num(v.better_mean)} (n={v.n_better})",
            "worse": f"{_num(v.worse_mean)} (n={v.n_worse})",
            "difference [95% CI]": f"{_num(v.margin_diff)} {interval}",
            "margin": _num(v.expect.margin) if v.expect.margin else "-",
            "p": _num(v.p_value, 2), "verdict": v.status + (f" ({v.note})" if v.note else "")})
    for text in check.unmatched:
        cells.append({"expectation": text, "verdict": MISSING})
    return pd.DataFrame(cells)


def to_markdown(check: Check) -> str:
    from seqbench.results.writers import Table, md_table

    text = f"## Expected orderings: {check.suite}\n\n{check.summary()}.\n\n"
    text += RULE + "\n\n"
    df = table(check)
    return text + (md_table(Table(df)) if not df.empty else "No expectations.\n")


def as_json(check: Check) -> dict[str, Any]:
    return {"suite": check.suite, "path": str(check.path), "counts": check.counts(),
            "unmatched": check.unmatched,
            "verdicts": [{"expect": v.index, "text": v.expect.text(), "task": v.task,
                          "params": v.params, "seq_len": v.seq_len, "eval_len": v.eval_len,
                          "status": v.status, "better_mean": v.better_mean,
                          "worse_mean": v.worse_mean, "n_better": v.n_better,
                          "n_worse": v.n_worse, "difference": v.margin_diff, "low": v.low,
                          "high": v.high, "p_value": v.p_value, "note": v.note}
                         for v in check.verdicts]}


def dumps(check: Check) -> str:
    return json.dumps(as_json(check), indent=1, allow_nan=True)
