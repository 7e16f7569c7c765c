"""Length extrapolation: a task metric against the evaluation length, and the Chomsky score.

Everything here reads the tidy frame of :func:`seqbench.results.load.load_evals` (one record
per training job and evaluation setting), so it works on any results folder whose tasks have
``eval`` settings:

- :func:`extrapolation_figure`: one panel per task and training setting, the metric (default:
  the task's primary metric) against the evaluation length on a log2 axis, one line per model
  (mean over seeds, the band spans the seeds' min..max), the training length (a line) or
  training range (a shaded span) marked, the trivial baseline dashed, and an ``x`` at the foot
  of the axis where an evaluation setting failed (out of memory, an error): a failure is a
  result at that length, never a gap.
- :func:`chomsky_scores`: the score of Delétang et al. 2023 ("Neural Networks and the Chomsky
  Hierarchy", ICLR; ``google-deepmind/neural_networks_chomsky_hierarchy``,
  ``experiments/example.py``): per job, the mean accuracy over the evaluated lengths *never
  seen in training*, i.e. longer than the longest training length (train 1..40, score 41..500).
  The same rule as :func:`seqbench.worker.data.chomsky.generalisation_score` (which scores one
  dict of accuracies inside a worker), applied to stored rows.
- :func:`chomsky_table`: per task and model, the score of every seed, their mean and best (the
  paper reports the best over seeds and learning rates), next to the paper's qualitative
  result.
- :func:`write`: both into a report folder (``figures/extrapolation.png|pdf``,
  ``tables/chomsky_scores.md|csv``); ``python -m seqbench.results.extrapolation RESULTS``
  runs it from the shell.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from seqbench.errors import SpecError
from seqbench.results import plots, provenance

# --- the paper's side of the Chomsky table ------------------------------------------------------
# Levels of the 15 tasks (Delétang et al. 2023, Table 1; tests check them against the task
# classes' own `level`): R regular, DCF deterministic context-free, CS context-sensitive.
CHOMSKY_LEVELS: dict[str, str] = {
    "even_pairs": "R", "modular_arithmetic": "R", "parity_check": "R", "cycle_navigation": "R",
    "stack_manipulation": "DCF", "reverse_string": "DCF", "modular_arithmetic_brackets": "DCF",
    "solve_equation": "DCF", "duplicate_string": "CS", "missing_duplicate_string": "CS",
    "odds_first": "CS", "binary_addition": "CS", "binary_multiplication": "CS",
    "compute_sqrt": "CS", "bucket_sort": "CS",
}
LEVEL_ORDER = ("R", "DCF", "CS")
# The paper's result in words (its abstract and Section 5): RNNs and Transformers fail to
# generalise on non-regular tasks, LSTMs solve regular and counter-language tasks, and the
# Transformer fails even on regular tasks such as parity. Its Table 2 numbers are not quoted
# here (they could not be checked against the paper's text from this machine).
PAPER_RESULT: dict[tuple[str, str], str] = {
    ("rnn", "R"): "generalises", ("lstm", "R"): "generalises",
    ("transformer", "R"): "fails (even parity)",
    ("rnn", "DCF"): "fails", ("rnn", "CS"): "fails",
    ("transformer", "DCF"): "fails", ("transformer", "CS"): "fails",
    ("lstm", "DCF"): "fails, except counter tasks", ("lstm", "CS"): "fails, except counter tasks",
}


def _ok_evals(evals: pd.DataFrame) -> pd.DataFrame:
    """Records of jobs that trained (job ``ok``), without the main evaluation where an
    evaluation setting measured the same length with the same params."""
    rows = evals[evals["job_status"] == "ok"].copy()
    rows["_params"] = rows["eval_params"].map(lambda p: repr(sorted((p or {}).items())))
    is_eval = rows["setting"] == "eval"
    measured = set(zip(rows.loc[is_eval, "job_id"], rows.loc[is_eval, "eval_seq_len"],
                       rows.loc[is_eval, "_params"], strict=True))
    duplicate = ~is_eval & pd.Series(
        [k in measured for k in zip(rows["job_id"], rows["eval_seq_len"], rows["_params"],
                                    strict=True)], index=rows.index, dtype=bool)
    return rows[~duplicate]


def _metric(evals: pd.DataFrame, metric: str | None) -> str:
    if metric is None:
        names = evals["primary_metric"].replace("", np.nan).dropna().mode().tolist()
        if not names:
            raise SpecError("metric", None, "the rows name no primary metric; pass one")
        metric = str(names[0])
    metric = metric.removeprefix("metric_")
    if f"metric_{metric}" not in evals.columns:
        have = sorted(c.removeprefix("metric_") for c in evals.columns
                      if c.startswith("metric_"))
        raise SpecError("metric", metric, f"metrics in these rows: {', '.join(have) or 'none'}")
    return metric


def _job_params(evals: pd.DataFrame) -> pd.Series:
    """The job's own task params (the evaluated overrides taken out), as a short text."""
    def text(rec: dict[str, Any]) -> str:
        overrides = rec["eval_params"] or {}
        params = {k.removeprefix("param_"): v for k, v in rec.items()
                  if k.startswith("param_") and k.removeprefix("param_") not in overrides
                  and not (isinstance(v, float) and math.isnan(v))}
        return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))

    return pd.Series([text(r) for r in evals.to_dict("records")], index=evals.index, dtype=str)


def panels(evals: pd.DataFrame) -> pd.DataFrame:
    """The evaluation records of :func:`extrapolation_figure`, each with its panel
    (``_panel``: task, training length or range, job params) and line (``_line``: the
    model label)."""
    rows = _ok_evals(evals)
    if rows.empty:
        return rows.assign(_panel=pd.Series(dtype=str), _line=pd.Series(dtype=str))
    # the job's params as trained: the main setting has no overrides
    main = rows[rows["setting"] == "main"].set_index("job_id")
    job_text = _job_params(main) if not main.empty else pd.Series(dtype=str)
    lo, hi = rows["train_len_min"].astype(int), rows["train_len_max"].astype(int)
    span = np.where(lo == hi, "train " + hi.astype(str), "train " + lo.astype(str) + ".." +
                    hi.astype(str))
    params = rows["job_id"].map(job_text).fillna("")
    several = params.groupby(rows["task"]).transform("nunique") > 1
    title = rows["task"] + ", " + pd.Series(span, index=rows.index)
    title = title.where(~several, title + "\n" + params)
    return rows.assign(_panel=title, _line=rows["label"].astype(str))


def _length_ticks(ax: Any, lengths: Sequence[float]) -> None:
    """Log2 x axis: a tick at every evaluated length when there are few, else at powers of 2."""
    ax.set_xscale("log", base=2)
    values = sorted({float(v) for v in lengths if pd.notna(v) and v > 0})
    if not values:
        return
    if len(values) > 12:
        lo, hi = math.floor(math.log2(values[0])), math.ceil(math.log2(values[-1]))
        step = max(1, math.ceil((hi - lo + 1) / 10))
        values = [2.0 ** k for k in range(lo, hi + 1, step)]
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: plots.plain_number(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(values) > 5:
        ax.tick_params(axis="x", labelrotation=45)


def _style(model: str) -> tuple[str, str, Any]:
    """Colour, marker and line style of a model, from the catalogue (grey for one it does
    not know)."""
    from seqbench.catalog import MODELS

    if model not in MODELS:
        return "#333333", "o", "-"
    entry = MODELS[model]
    return entry.color, entry.marker, entry.linestyle


def extrapolation_figure(evals: pd.DataFrame, metric: str | None = None, *,
                         rows: pd.DataFrame | None = None, columns: int = 4) -> Figure:
    """Metric vs evaluation length, one panel per task and training setting, one line per
    model (see the module docstring). ``rows`` (the :func:`seqbench.results.load.load` frame
    of the same results) gives the provenance caption; without it the caption names the
    suites and records only.

    Artists carry gids the tests count: ``series`` (a model's mean line), ``seeds`` (its
    min..max band), ``train`` (the training length or range), ``baseline``, ``failed``."""
    from seqbench.catalog import MODELS

    name = _metric(evals, metric)
    col, base = f"metric_{name}", f"baseline_{name}"
    data = panels(evals)
    if data.empty:
        raise SpecError("results", name, "no evaluation records with this metric to plot")
    order = list(dict.fromkeys(data.sort_values(["task", "train_len_max"])["_panel"]))
    n_cols = min(columns, len(order))
    n_rows = math.ceil(len(order) / n_cols)
    fig, axes = plots.new_figure(n_rows, n_cols, f"{name} vs evaluation length")
    models = dict(zip(data["label"], data["model"], strict=False))
    styles = {label: _style(models[label]) for label in
              sorted(models, key=lambda lb: (MODELS.order(models[lb]), lb))}
    for ax, panel in zip(axes.flat, order, strict=False):
        sub = data[data["_panel"] == panel]
        ok = sub[(sub["status"] == "ok") & sub[col].notna()]
        per_len = ok.groupby(["_line", "eval_seq_len"])[col].agg(["mean", "min", "max"])
        for line, g in per_len.groupby(level="_line", sort=False):
            colour, marker, dash = styles[str(line)]
            x = g.index.get_level_values("eval_seq_len").astype(float)
            many = len(x) > 40
            ax.plot(x, g["mean"], color=colour, marker=None if many else marker,
                    linestyle=dash, linewidth=1.5, markersize=4, gid="series", label=line)
            if ok[ok["_line"] == line]["seed"].nunique() > 1:
                ax.fill_between(x, g["min"], g["max"], color=colour, alpha=0.18, linewidth=0,
                                gid="seeds")
        lo, hi = float(sub["train_len_min"].min()), float(sub["train_len_max"].max())
        if lo == hi:
            ax.axvline(hi, color="0.3", linestyle=":", linewidth=1.2, gid="train")
        else:
            ax.axvspan(lo, hi, color="0.5", alpha=0.15, linewidth=0, gid="train")
        if base in sub.columns and sub[base].notna().any():
            b = sub.dropna(subset=[base]).groupby("eval_seq_len")[base].mean()
            ax.plot(b.index.astype(float), b.values, color="0.25", linestyle="--",
                    linewidth=1.0, gid="baseline")
        failed = sub[sub["status"] != "ok"]
        for line, g in failed.groupby("_line", sort=False):
            ax.plot(g["eval_seq_len"].astype(float), [0.04] * len(g), color=styles[str(line)][0],
                    transform=ax.get_xaxis_transform(), clip_on=False, gid="failed",
                    **plots.FAILED_MARK)
        _length_ticks(ax, sub["eval_seq_len"])
        ax.set_title(panel, fontsize="small")
        ax.set_xlabel("evaluation length (seq_len)")
        ax.set_ylabel(name)
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    handles: list[Any] = [Line2D([], [], color=c, marker=m, linestyle=ls, linewidth=1.5,
                                 markersize=4, label=label)
                          for label, (c, m, ls) in styles.items()]
    handles.append(Patch(color="0.5", alpha=0.3, label="training length(s)"))
    if (data["status"] != "ok").any():
        handles.append(Line2D([], [], color="0.25", label="setting failed (oom, error)",
                              **plots.FAILED_MARK))
    if base in data.columns and data[base].notna().any():
        handles.append(plots.baseline_handle())
    fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize="small")
    caption = (provenance.caption(rows) if rows is not None and not rows.empty else
               f"{len(data)} evaluation records of {data['job_id'].nunique()} jobs from "
               f"{', '.join(dict.fromkeys(data['suite'].astype(str)))}")
    fig.supxlabel(caption + "; band: min..max over seeds", fontsize=plots.CAPTION_PT,
                  color="0.35", x=0.01, ha="left")
    return fig


# --- the Chomsky score -------------------------------------------------------------------------
def chomsky_scores(evals: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One record per training job: ``score``, the mean ``metric`` over its evaluated lengths
    longer than its longest training length (the paper's lengths never seen in training),
    ``n_lengths`` scored, ``n_failed`` settings beyond training that failed (not in the mean;
    a score with failures is marked by it), ``train_len_min``/``train_len_max`` and
    ``max_eval_len``. Jobs with no evaluated length beyond training are left out."""
    col = f"metric_{metric}"
    rows = _ok_evals(evals)
    unseen = rows[rows["eval_seq_len"] > rows["train_len_max"]]
    keys = ["task", "model", "label", "seed", "job_id", "train_len_min", "train_len_max"]
    if unseen.empty:
        return pd.DataFrame(columns=[*keys, "score", "n_lengths", "n_failed", "max_eval_len"])
    good = unseen[(unseen["status"] == "ok") & unseen[col].notna()]
    out = unseen.groupby(keys, dropna=False).agg(max_eval_len=("eval_seq_len", "max"))
    out["score"] = good.groupby(keys, dropna=False)[col].mean()
    out["n_lengths"] = good.groupby(keys, dropna=False)[col].size()
    out["n_lengths"] = out["n_lengths"].fillna(0).astype(int)
    out["n_failed"] = (unseen["status"] != "ok").groupby(
        [unseen[k] for k in keys], dropna=False).sum().astype(int)
    return out.reset_index()[[*keys, "score", "n_lengths", "n_failed", "max_eval_len"]]


def chomsky_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Per task (in the paper's order, level first) and model: the score of each seed, their
    mean and best (percent), and the paper's qualitative result."""
    from seqbench.catalog import MODELS

    records = []
    for (task, model, label), g in scores.groupby(["task", "model", "label"], sort=False):
        level = CHOMSKY_LEVELS.get(str(task), "")
        values = g.sort_values("seed")
        seeds = ", ".join(f"{100 * s:.1f}" if pd.notna(s) else "-" for s in values["score"])
        failed = int(values["n_failed"].sum())
        records.append({
            "level": level, "task": task, "model": label, "seeds": seeds,
            "mean": 100 * values["score"].mean(), "best": 100 * values["score"].max(),
            "lengths": f"{int(values['train_len_max'].max()) + 1}.."
                       f"{int(values['max_eval_len'].max())}"
                       + (f" ({failed} failed)" if failed else ""),
            "paper": PAPER_RESULT.get((str(model), level), "not in the paper"),
            "_order": (LEVEL_ORDER.index(level) if level in LEVEL_ORDER else 9,
                       list(CHOMSKY_LEVELS).index(task) if task in CHOMSKY_LEVELS else 99,
                       MODELS.order(str(model)), label),
        })
    table = pd.DataFrame(records, columns=["level", "task", "model", "seeds", "mean", "best",
                                           "lengths", "paper", "_order"])
    return table.sort_values("_order").drop(columns="_order").reset_index(drop=True)


def table_markdown(table: pd.DataFrame) -> str:
    """The Chomsky table as a Markdown table (scores in percent, one decimal)."""
    head = ["level", "task", "model", "score per seed (%)", "mean", "best",
            "scored lengths", "paper (qualitative)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.level} | {r.task} | {r.model} | {r.seeds} | {r.mean:.1f} | "
                     f"{r.best:.1f} | {r.lengths} | {r.paper} |")
    return "\n".join(lines) + "\n"


# --- into a report folder ----------------------------------------------------------------------
def write(results: str | Path | Sequence[str | Path], out: str | Path,
          formats: Sequence[str] = plots.FORMATS) -> list[Path]:
    """The extrapolation figure (when any job has evaluation settings) and the Chomsky table
    (when any Chomsky task was evaluated beyond training) under the report folder ``out``;
    returns the files written."""
    from seqbench.results.load import load, load_evals

    evals = load_evals(results, warn=False)
    written: list[Path] = []
    if evals.empty or not (evals["setting"] == "eval").any():
        return written
    out = Path(out)
    with plots.style():
        fig = extrapolation_figure(evals, rows=load(results, warn=False))
    written += plots.save(fig, out / "figures" / "extrapolation", formats)
    scores = chomsky_scores(evals[evals["task"].isin(list(CHOMSKY_LEVELS))])
    if not scores.empty:
        (out / "tables").mkdir(parents=True, exist_ok=True)
        table = chomsky_table(scores)
        md, csv = out / "tables" / "chomsky_scores.md", out / "tables" / "chomsky_scores.csv"
        md.write_text(table_markdown(table))
        table.to_csv(csv, index=False)
        scores.to_csv(out / "tables" / "chomsky_scores_per_job.csv", index=False)
        written += [md, csv, out / "tables" / "chomsky_scores_per_job.csv"]
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m seqbench.results.extrapolation",
        description="Metric-vs-evaluation-length figure and the Chomsky score table of a "
                    "results folder, into its report folder.")
    p.add_argument("results", nargs="+", help="results directories or .jsonl files")
    p.add_argument("-o", "--out", help="report folder (default: RESULTS/report)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.results[0]) / "report"
    for path in write(args.results, out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
