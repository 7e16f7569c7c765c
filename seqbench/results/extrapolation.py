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
import textwrap
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
    evaluation setting measured the same length with the same params in effect."""
    rows = evals[evals["job_status"] == "ok"].copy()
    param_cols = _param_columns(rows)
    rows["_params"] = [repr([(c, None if _missing(v) else v) for c, v in zip(param_cols, vals,
                                                                            strict=True)])
                       for vals in rows[param_cols].itertuples(index=False)]
    is_eval = rows["setting"] == "eval"
    keys = list(zip(rows["job_id"], rows["eval_seq_len"], rows["_params"], strict=True))
    measured = {k for k, e in zip(keys, is_eval, strict=True) if e}
    duplicate = pd.Series([not e and k in measured for k, e in zip(keys, is_eval, strict=True)],
                          index=rows.index, dtype=bool)
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


def _param_columns(frame: pd.DataFrame) -> list[str]:
    """The task-param columns of a :func:`~seqbench.results.load.load_evals` frame
    (``param_<name>``; ``param_count`` is the model's parameter count, not a task param)."""
    return sorted(c for c in frame.columns if c.startswith("param_") and c != "param_count")


def _job_params(main: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each job's own task params (from its main evaluation, which has no overrides)."""
    columns = _param_columns(main)
    return {rec["job_id"]: {c.removeprefix("param_"): rec[c] for c in columns
                            if not _missing(rec[c])} for rec in main.to_dict("records")}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def axis_of(evals: pd.DataFrame) -> str:
    """What the evaluation settings vary: ``eval_seq_len`` if any job is evaluated at another
    length, else the task param (``param_<name>``) its settings override, e.g.
    ``param_num_kv_pairs``."""
    rows = evals[evals["setting"] == "eval"]
    if rows.empty:
        return "eval_seq_len"
    varies = rows.groupby("job_id")["eval_seq_len"].nunique().max() > 1
    if varies or (rows["eval_seq_len"] != rows["train_seq_len"]).any():
        return "eval_seq_len"
    keys = sorted({k for p in rows["eval_params"] for k in (p or {})})
    return f"param_{keys[0]}" if keys else "eval_seq_len"


def panels(evals: pd.DataFrame, x: str = "eval_seq_len") -> pd.DataFrame:
    """The evaluation records of :func:`extrapolation_figure`, each with its x value (``_x``:
    the evaluation length, or the value of the task param ``x``), its panel (``_panel``: task,
    training length or range, and the job params that differ between the task's jobs), its
    line (``_line``: the model label) and where the job trained on that axis (``_lo``,
    ``_hi``)."""
    rows = _ok_evals(evals)
    if rows.empty:
        return rows.assign(_panel=pd.Series(dtype=str), _line=pd.Series(dtype=str),
                           _x=pd.Series(dtype=float), _lo=pd.Series(dtype=float),
                           _hi=pd.Series(dtype=float))
    params = _job_params(evals[evals["setting"] == "main"])  # before de-duplication
    titles, lows, highs = [], [], []
    varying: dict[str, list[str]] = {}
    for task, g in rows.groupby("task"):
        jobs = [params.get(j, {}) for j in g["job_id"].unique()]
        keys = sorted({k for p in jobs for k in p})
        varying[str(task)] = [k for k in keys if len({repr(p.get(k)) for p in jobs}) > 1]
    for rec in rows.to_dict("records"):
        lo, hi = int(rec["train_len_min"]), int(rec["train_len_max"])
        title = f"{rec['task']}, train {hi}" if lo == hi else f"{rec['task']}, train {lo}..{hi}"
        own = params.get(rec["job_id"], {})
        shown = [f"{k}={own.get(k)}" for k in varying[str(rec["task"])]]
        titles.append(title + (", " + ", ".join(shown) if shown else ""))
        if x == "eval_seq_len":
            lows.append(float(lo))
            highs.append(float(hi))
        else:
            value = own.get(x.removeprefix("param_"))
            lows.append(float(value) if value is not None else math.nan)
            highs.append(float(value) if value is not None else math.nan)
    xs = pd.to_numeric(rows[x], errors="coerce").astype(float)
    rows = rows.assign(_panel=titles, _x=xs, _lo=lows, _hi=highs)
    return rows.assign(_line=_line_labels(rows))


def _line_labels(rows: pd.DataFrame) -> list[str]:
    """Each record's line: its model label, without the variant when the model has only one
    variant in the panel (the panel title already names the task params that tell the jobs
    apart); a run suffix (``[run-b]``) stays."""
    from seqbench.results.load import model_display

    several = rows.groupby(["_panel", "model"])["label"].transform("nunique") > 1
    lines = []
    for rec, keep in zip(rows.to_dict("records"), several, strict=True):
        label = str(rec["label"])
        run = f" [{rec.get('run')}]" if rec.get("run") else ""
        if keep:
            lines.append(label)
        else:
            lines.append(model_display(str(rec["model"]))
                         + (run if run and label.endswith(run) else ""))
    return lines


def length_label(value: float) -> str:
    """A length as a tick label: powers of two from 1,024 up in binary units (``1K``, ``4K``,
    ``1M``), other whole numbers as they are (``200``, ``1500``)."""
    v = float(value)
    if v >= 1024 and v.is_integer() and int(v) & (int(v) - 1) == 0:
        k = int(v).bit_length() - 1
        return f"{2 ** (k % 10)}{'KMG'[k // 10 - 1]}" if k < 40 else plots.plain_number(v)
    return str(int(v)) if v.is_integer() else plots.plain_number(v)


def _length_ticks(ax: Any, lengths: Sequence[float]) -> None:
    """Log2 x axis: a tick at every evaluated length when there are few, else at powers of 2."""
    ax.set_xscale("log", base=2)
    values = sorted({float(v) for v in lengths if pd.notna(v) and v > 0})
    if not values:
        return
    if len(values) > 8:
        lo, hi = math.floor(math.log2(values[0])), math.ceil(math.log2(values[-1]))
        step = max(1, math.ceil((hi - lo + 1) / 10))
        values = [2.0 ** k for k in range(lo, hi + 1, step)]
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: length_label(v)))
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
                         rows: pd.DataFrame | None = None, columns: int = 4,
                         x: str = "eval_seq_len") -> Figure:
    """Metric vs evaluation length, one panel per task and training setting, one line per
    model (see the module docstring). ``rows`` (the :func:`seqbench.results.load.load` frame
    of the same results) gives the provenance caption; without it the caption names the
    suites and records only.

    ``x`` is the axis: ``eval_seq_len`` (default), or a task param the evaluation settings
    override (``param_num_kv_pairs``: accuracy against the number of pairs, the job's own
    value marked). Artists carry gids the tests count: ``series`` (a model's mean line),
    ``seeds`` (its min..max band), ``train`` (the training length or range), ``baseline``,
    ``failed``."""
    from seqbench.catalog import MODELS

    name = _metric(evals, metric)
    col, base = f"metric_{name}", f"baseline_{name}"
    data = panels(evals, x)
    if data.empty:
        raise SpecError("results", name, "no evaluation records with this metric to plot")
    order = list(dict.fromkeys(data.sort_values(["task", "train_len_max", "_hi"])["_panel"]))
    axis = ("evaluation length (seq_len)" if x == "eval_seq_len"
            else x.removeprefix("param_") + " (evaluated)")
    n_cols = min(columns, len(order))
    n_rows = math.ceil(len(order) / n_cols)
    fig, axes = plots.new_figure(n_rows, n_cols, f"{name} vs {axis.split(' (')[0]}")
    models = dict(zip(data["_line"], data["model"], strict=False))
    styles = {label: _style(models[label]) for label in
              sorted(models, key=lambda lb: (MODELS.order(models[lb]), lb))}
    for ax, panel in zip(axes.flat, order, strict=False):
        sub = data[data["_panel"] == panel]
        ok = sub[(sub["status"] == "ok") & sub[col].notna()]
        per_len = ok.groupby(["_line", "_x"])[col].agg(["mean", "min", "max"])
        for line in [s for s in styles if s in set(ok["_line"])]:  # registry order
            g = per_len.loc[line]
            colour, marker, dash = styles[line]
            xs = g.index.astype(float)
            many = len(xs) > 40
            ax.plot(xs, g["mean"], color=colour, marker=None if many else marker,
                    linestyle=dash, linewidth=1.5, markersize=4, gid="series", label=line)
            if ok[ok["_line"] == line]["seed"].nunique() > 1:
                ax.fill_between(xs, g["min"], g["max"], color=colour, alpha=0.18, linewidth=0,
                                gid="seeds")
        lo, hi = float(sub["_lo"].min()), float(sub["_hi"].max())
        if math.isnan(lo):
            pass
        elif lo == hi:
            ax.axvline(hi, color="0.3", linestyle=":", linewidth=1.2, gid="train")
        else:
            ax.axvspan(lo, hi, color="0.5", alpha=0.15, linewidth=0, gid="train")
        if base in sub.columns and sub[base].notna().any():
            b = sub.dropna(subset=[base]).groupby("_x")[base].mean()
            ax.plot(b.index.astype(float), b.values, color="0.25", linestyle="--",
                    linewidth=1.0, gid="baseline")
        failed = sub[sub["status"] != "ok"]
        for line, g in failed.groupby("_line", sort=False):
            ax.plot(g["_x"], [0.04] * len(g), color=styles[str(line)][0],
                    transform=ax.get_xaxis_transform(), clip_on=False, gid="failed",
                    **plots.FAILED_MARK)
        _length_ticks(ax, sub["_x"])
        ax.set_title(panel, fontsize="small")
        ax.set_xlabel(axis)
        ax.set_ylabel(name)
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    handles: list[Any] = [Line2D([], [], color=c, marker=m, linestyle=ls, linewidth=1.5,
                                 markersize=4, label=label)
                          for label, (c, m, ls) in styles.items()]
    ranges = data["_lo"] != data["_hi"]
    trained = "training length" if x == "eval_seq_len" else "trained value"
    if ranges.any():
        handles.append(Patch(color="0.5", alpha=0.3, label=trained + "s"))
    if (~ranges).any():
        handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=1.2,
                              label=trained))
    if (data["status"] != "ok").any():
        handles.append(Line2D([], [], color="0.25", label="setting failed (oom, error)",
                              **plots.FAILED_MARK))
    if base in data.columns and data[base].notna().any():
        handles.append(plots.baseline_handle())
    fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize="small")
    caption = (provenance.caption(rows) if rows is not None and not rows.empty else
               f"{len(data)} evaluation records of {data['job_id'].nunique()} jobs from "
               f"{', '.join(dict.fromkeys(data['suite'].astype(str)))}")
    width_chars = int(fig.get_figwidth() * 72 / (plots.CAPTION_PT * 0.55))
    fig.supxlabel(textwrap.fill(caption + "; line: mean over seeds, band: min..max over seeds",
                                width_chars), fontsize=plots.CAPTION_PT, color="0.35", x=0.01,
                  ha="left")
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


TABLE_HEAD = ("level", "task", "model", "score per seed (%)", "mean", "best", "scored lengths",
              "paper (qualitative)")


def table_markdown(table: pd.DataFrame) -> str:
    """The Chomsky table as a Markdown table (scores in percent, one decimal)."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.level} | {r.task} | {r.model} | {r.seeds} | {r.mean:.1f} | "
                     f"{r.best:.1f} | {r.lengths} | {r.paper} |")
    return "\n".join(lines) + "\n"


# --- into a report folder ----------------------------------------------------------------------
FIGURE_CAPTION = (
    "{metric} vs {axis}: one panel per task and training setting, one line per model (mean over "
    "seeds; band: min..max over seeds); dotted line: the training {what} (shaded: the range of "
    "training lengths); dashed: the trivial baseline; x at the foot: that setting failed (out "
    "of memory, an error) for that model.")
TABLE_CAPTION = (
    "Generalisation score (Delétang et al. 2023): per job the mean accuracy (%) over the "
    "evaluated lengths longer than the longest training length; mean and best over seeds (the "
    "paper reports the best over seeds and learning rates); the paper's result in words.")


def _write(rows: pd.DataFrame, out: Path, formats: Sequence[str], figures: bool
           ) -> tuple[list[Path], list[Any]]:
    """Files written under ``out`` and the report blocks that show them."""
    from seqbench.results.load import load_evals
    from seqbench.results.writers import Heading, Image, Table

    evals = load_evals(rows, warn=False) if not rows.empty else pd.DataFrame()
    written: list[Path] = []
    blocks: list[Any] = []
    if evals.empty or not (evals["setting"] == "eval").any():
        return written, blocks
    axes: dict[str, list[str]] = {}  # axis -> tasks evaluated along it
    for task, g in evals.groupby("task", sort=False):
        if (g["setting"] == "eval").any():
            axes.setdefault(axis_of(g), []).append(str(task))
    for x, names in axes.items() if figures else ():
        sub = evals[evals["task"].isin(names)]
        try:
            with plots.style():
                fig = extrapolation_figure(sub, rows=rows, x=x)
        except SpecError:  # no setting of these tasks measured a metric (all failed)
            continue
        stem = ("extrapolation" if x == "eval_seq_len"
                else f"extrapolation_{x.removeprefix('param_')}")
        written += plots.save(fig, out / "figures" / stem, formats)
        axis = "evaluation length" if x == "eval_seq_len" else x.removeprefix("param_")
        blocks.append(Image(f"figures/{stem}.png", FIGURE_CAPTION.format(
            metric=_metric(sub, None), axis=axis,
            what="length" if x == "eval_seq_len" else "value"),
            alt=str(fig.get_label()), width_px=round(fig.get_figwidth() * 96)))
    scores = chomsky_scores(evals[evals["task"].isin(list(CHOMSKY_LEVELS))])
    if not scores.empty:
        (out / "tables").mkdir(parents=True, exist_ok=True)
        table = chomsky_table(scores)
        md, csv = out / "tables" / "chomsky_scores.md", out / "tables" / "chomsky_scores.csv"
        per_job = out / "tables" / "chomsky_scores_per_job.csv"
        md.write_text(table_markdown(table), encoding="utf-8")
        table.to_csv(csv, index=False)
        scores.to_csv(per_job, index=False)
        written += [md, csv, per_job]
        cells = table.assign(mean=table["mean"].map(_percent), best=table["best"].map(_percent)
                             ).rename(columns=dict(zip(table.columns, TABLE_HEAD, strict=True)))
        blocks += [Heading("Chomsky hierarchy: generalisation score", 3),
                   Table(cells.astype(str), TABLE_CAPTION)]
    if blocks:
        blocks.insert(0, Heading("Length extrapolation"))
    return written, blocks


def _percent(value: Any) -> str:
    return "-" if _missing(value) else f"{float(value):.1f}"


def report_blocks(rows: pd.DataFrame, out: str | Path, formats: Sequence[str] = plots.FORMATS,
                  figures: bool = True) -> list[Any]:
    """The report's "Length extrapolation" section for the rows of :func:`load`: the figures
    (unless ``figures`` is False) and the Chomsky table, written under ``out``; no blocks and no
    files when no job has evaluation settings."""
    return _write(rows, Path(out), formats, figures)[1]


def write(results: str | Path | Sequence[str | Path], out: str | Path,
          formats: Sequence[str] = plots.FORMATS) -> list[Path]:
    """The extrapolation figures (when any job has evaluation settings: ``extrapolation``
    for the tasks evaluated at other lengths, ``extrapolation_<param>`` for those evaluated
    at other values of one param) and the Chomsky table (when any Chomsky task was evaluated
    beyond training) under the report folder ``out``; returns the files written."""
    from seqbench.results.load import load

    return _write(load(results, warn=False), Path(out), formats, True)[0]


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
