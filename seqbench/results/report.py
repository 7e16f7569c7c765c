"""``seqbench report``: a folder that can be cited, built only from stored rows.

``write_report(results, out_dir)`` writes::

    out_dir/report.md        provenance header, completeness, notes, summary, scaling fits,
                             figures, length extrapolation (when tasks have eval settings),
                             tables, failed jobs
    out_dir/report.html      the same page, self-contained (figures embedded), opens anywhere
    out_dir/tables/*.tex     one booktabs table per (task, metric): mean ± CI (n), best in bold
    out_dir/figures/*.png|pdf
    out_dir/stats.csv        every statistic: mean, std, n, exact CI bounds and method, range
    out_dir/rows.parquet     the rows all of it was computed from
    out_dir/gradients.csv, edge.csv   the gradient-flow and edge tables, for rows that have them

Each table is models x lengths for one task and metric. A cell is ``mean ± h (n=..)`` where
``mean ± h`` covers the interval :func:`seqbench.results.stats.interval` chose for that n (none
below 3 seeds: then the mean and the range of the seeds); failed seeds are named by status
(``0.55 ± 0.05 (n=4; 1 oom)``) and a cell whose seeds all failed shows only that (``3 oom``).
Bold marks a best that Welch's test separates from every other model at that length, italic the
models tied for best (:func:`seqbench.results.stats.best_marks`).

Rows of several runs stay apart (``run``); a run whose spec (``suite.json``) expands to more jobs
than it recorded is called incomplete at the top. Scaling rows (``kind: scale`` / ``stream``)
get the frontier and fitted log-log slopes of :mod:`seqbench.results.complexity`, with the
points used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqbench.errors import SpecError
from seqbench.results import columns as C
from seqbench.results import edge, extrapolation, gradients, plots, provenance
from seqbench.results.completeness import completeness
from seqbench.results.load import load, run_names, suite_info, to_parquet
from seqbench.results.search import report_rows, search_blocks
from seqbench.results.stats import (
    ALPHA,
    N_BOOT,
    aggregate,
    best_marks,
    column_cells,
    methods_note,
    sort_key,
    summary_table,
)
from seqbench.results.writers import (
    Bullets,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    latex_table,
    safe_filename,
    tex_label,
    to_html,
    to_markdown,
)

TABLE_MEASURES = {  # kind -> the measurements that get a table of their own
    "train": ("train_tokens_per_s", "fwd_tokens_per_s", "peak_mem_bytes"),
    "scale": ("train_step_s_median", "train_tokens_per_s", "fwd_tokens_per_s", "peak_mem_bytes",
              "flops_utilization"),
    "stream": ("stream_step_s_median", "state_bytes", "peak_mem_bytes"),
}
BYTES = ("state_bytes",)  # shown with their own unit per cell (256 B .. 8 MiB)
MARKS_NOTE = (f"Bold: the best mean at that length, separated from every other model by Welch's "
              f"two-sided t-test (Holm-corrected, family-wise α = {ALPHA}); italic: tied for "
              "best (the best and every model the test does not separate from it). Nothing is "
              "marked where the best has fewer than 2 seeds. Exact bounds, standard deviations "
              "and the range of the seeds: stats.csv.")


def _short(column: str) -> str:
    return column[len(C.METRIC):] if column.startswith(C.METRIC) else column


def _seed_values(rows: pd.DataFrame, metric: str) -> dict[tuple[str, Any], np.ndarray]:
    """(label, seq_len) -> the ok seeds' values of ``metric``."""
    ok = rows[(rows["status"] == "ok")]
    if metric not in ok:
        return {}
    return {(str(label), seq_len): g[metric].dropna().to_numpy(dtype=float)
            for (label, seq_len), g in ok.groupby(["label", "seq_len"], sort=False)}


def wide_table(stats: pd.DataFrame, metric: str, factor: float, higher_is_better: bool | None,
               rows: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models (rows) x lengths (columns) of one metric: the cell texts, one number format per
    column, and the marks (``'best'``, ``'tie'`` or ``''``) from the seeds in ``rows`` (the
    rows of this kind and task; without them nothing is marked). Where every competitor ties
    with the best, nothing is marked and ``marks.attrs['all_tied']`` lists the length."""
    stats = stats[stats["metric"] == metric]
    labels = list(dict.fromkeys(stats["label"]))
    lengths = sorted(stats["seq_len"].unique())
    text = pd.DataFrame("", index=labels, columns=lengths, dtype=object)
    marks = pd.DataFrame("", index=labels, columns=lengths, dtype=object)
    values = _seed_values(rows, metric) if rows is not None else {}
    all_tied = []
    for length in lengths:
        column = stats[stats["seq_len"] == length]
        if metric in BYTES:
            cells = [_bytes_cell(r) for _, r in column.iterrows()]
        else:
            cells = column_cells(column, factor, with_n=True)
        for label, cell in zip(column["label"], cells, strict=True):
            text.loc[label, length] = cell
        if higher_is_better is not None and values:
            ok = column[column["n"] > 0]
            found = best_marks({lab: values.get((lab, length), np.array([]))
                                for lab in ok["label"]}, higher_is_better)
            if len(found) > 1 and all(m == "tie" for m in found.values()):
                all_tied.append(int(length))
                continue
            for label, mark in found.items():
                marks.loc[label, length] = mark
    model = "model"
    text = text.reset_index(names=model)
    marks = marks.reset_index(names=model).assign(**{model: ""})
    text.columns = marks.columns = [model, *(f"{int(v):,}" for v in lengths)]
    marks.attrs["all_tied"] = all_tied
    return text, marks


def _bytes_cell(row: pd.Series) -> str:
    from seqbench.results.stats import all_failed_text

    if row["n"] == 0:
        return all_failed_text(row["failed"])
    notes = [f"n={row['n']}"] + ([row["failed"]] if row["n_failed"] else [])
    return f"{C.fmt_bytes(row['mean'])} ({'; '.join(notes)})"


def _figures(df: pd.DataFrame, out: Path, formats: Sequence[str], n_boot: int,
             seed: int) -> list[Image]:
    makers = [
        ("metric_vs_length", plots.metric_vs_length,
         "Task metric (each task's primary metric) vs length: mean over seeds, with the 95% "
         "interval band where there are 3 or more seeds; every model has its own marker and "
         "line style, and points at one length are spread slightly sideways so equal values "
         "stay visible; dashed: the task's trivial baseline; error metrics spanning a decade or "
         "more on a log axis; x: every seed failed there (skipped lengths are not drawn; the "
         "tables list them)."),
        ("throughput_vs_length", plots.throughput_vs_length,
         "Training and forward-only throughput vs length (log-log); x: every seed failed."),
        ("memory_vs_length", plots.memory_vs_length,
         "Peak memory vs length (log-log); x: out of memory at that length (at the memory cap "
         "when one was set)."),
        ("pareto", plots.pareto,
         "Task metric vs training throughput at one length per task; dotted: the Pareto front "
         "(no configuration is both faster and better)."),
    ]
    if plots.has_streaming(df):
        makers.append(("streaming", plots.streaming,
                       "Streaming inference: latency of one step and recurrent state / KV "
                       "cache size vs tokens already in the stream (log-log)."))
    images = []
    for name, make, caption in makers:
        try:
            with plots.style():
                fig = make(df, n_boot=n_boot, seed=seed)
        except SpecError:  # nothing of this kind in the rows
            continue
        plots.save(fig, out / "figures" / name, formats)
        images.append(Image(f"figures/{name}.png", caption, alt=str(fig.get_label()),
                            width_px=round(fig.get_figwidth() * 96)))
    return images


def _failures(df: pd.DataFrame) -> Table | None:
    failed = sort_key(df[df["status"] != "ok"])
    if failed.empty:
        return None
    columns = ["job_id", *(["run"] if df["run"].nunique() > 1 else []), "task", "label",
               "seq_len", "seed", "status", "error"]
    frame = failed[columns].copy()
    frame["error"] = frame["error"].map(lambda e: C.shorten(str(e), 120))
    return Table(frame.rename(columns={"label": "model"}).astype(str).reset_index(drop=True))


def _runs(df: pd.DataFrame, sources: list[str]) -> Table:
    """One line per run: where it was read from, its machine, rows and dates."""
    cells = []
    for run, rows in df.groupby("run", sort=False):
        statuses = rows["status"].value_counts()
        cells.append({"run": run, "read from": _join(rows["source"]),
                      "device": provenance.devices(rows), "hosts": _join(rows["host"]),
                      "suite": _join(rows["suite"]), "rows": str(len(rows)),
                      "statuses": ", ".join(f"{n} {s}" for s, n in statuses.items()),
                      "dates (UTC)": provenance.dates(rows)})
    return Table(pd.DataFrame(cells), "Rows of different runs are never merged: a "
                 "configuration found in several runs has one line per run ([run] in its label).")


def _join(values: pd.Series) -> str:
    found = [str(v) for v in dict.fromkeys(values) if str(v)]
    return ", ".join(found[:3]) + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")


def _completeness(df: pd.DataFrame, sources: list[str]) -> list[str]:
    """One line per run whose suite.json spec expands to more jobs than it recorded."""
    out = []
    for path, run in zip(sources, run_names([Path(s) for s in sources]), strict=True):
        suite = suite_info(path) if Path(path).is_dir() else None
        spec = (suite or {}).get("spec")
        rows = df[df["run"] == run]
        if not isinstance(spec, dict) or rows.empty:
            continue
        found = completeness(rows, spec, run)
        if found is not None and not found.complete:
            out.append(found.text())
    return out


# --- scaling runs ------------------------------------------------------------------------------
FIT_QUANTITIES = {  # metric fitted by results.complexity -> what it is, in words
    "train_step_s_median": "training step time",
    "train_s_per_seq": "training time per sequence",
    "fwd_step_s_median": "forward time",
    "peak_mem_bytes": "peak memory",
    "fwd_peak_mem_bytes": "forward peak memory",
    "stream_step_s_median": "streaming step latency",
    "state_bytes": "state size",
    "prefill_s": "prefill time",
}


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts, missing values as None (what :mod:`results.complexity` reads)."""
    out = []
    for rec in df.to_dict("records"):
        clean: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(v, (dict, list, tuple, np.ndarray)):
                clean[k] = v
            else:
                try:
                    clean[k] = None if pd.isna(v) else v
                except (TypeError, ValueError):
                    clean[k] = v
        out.append(clean)
    return out


def _points(points: list, every: list | None = None) -> str:
    """``256..4,096 (5 pts)``; for increments (``every``: the curve's points) the lengths they
    span: ``256..2,048 (3 steps)``."""
    lengths = [int(p[0]) for p in points]
    if not lengths:
        return "-"
    if every is not None:
        later = [int(p[0]) for p in every if int(p[0]) > lengths[-1]]
        end = later[0] if later else lengths[-1]
        return f"{lengths[0]:,}..{end:,} ({len(lengths)} steps)"
    return f"{lengths[0]:,}..{lengths[-1]:,} ({len(lengths)} pts)"


def _slope(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def headline(fit: dict[str, Any], metric: str) -> tuple[str, str, str]:
    """The slope a sentence quotes: for memory and state the increments between lengths (the
    fixed part removed) when there are any, else all points; for times all points."""
    if metric in ("peak_mem_bytes", "fwd_peak_mem_bytes") and fit.get("increment_slope") is not None:
        return (_slope(fit["increment_slope"]), "increments between lengths",
                _points(fit["increment_points"], fit["points"]))
    return _slope(fit["slope"]), "all points", _points(fit["points"])


def scaling_blocks(df: pd.DataFrame) -> list[Any]:
    """The frontier and fitted slopes of every scale / stream curve, as report blocks."""
    from seqbench.results.complexity import complexity

    rows = df[df["kind"].isin(("scale", "stream")) & df["job"].map(
        lambda j: isinstance(j, dict) and isinstance(j.get("task"), dict))]
    if rows.empty:
        return []
    curves = complexity(records(rows))
    if not curves:
        return []
    from seqbench.catalog import MODELS, display_name

    kinds = {"scale": 0, "stream": 1}
    curves.sort(key=lambda c: (kinds.get(c["kind"], 2), MODELS.order(c["model"])))

    frontier, fits, sentences = [], [], []
    for c in curves:
        model = display_name(c["model"])
        frontier.append({"kind": c["kind"], "model": model, "policy": c["batch_policy"] or "-",
                         "longest ok length (stream: context)": f"{c['frontier_len']:,}" if c[
                             "frontier_len"] else "-",
                         "stopped by": c["stopped_by"] or "ran to the end",
                         "failures": ", ".join(c["failures"]) or "-"})
        parts = []
        for metric, fit in c["fits"].items():
            fits.append({"kind": c["kind"], "model": model,
                         "quantity": FIT_QUANTITIES.get(metric, metric),
                         "slope (all points)": _slope(fit["slope"]),
                         "points": _points(fit["points"]), "R²": f"{fit['r2']:.3f}",
                         "slope (longest 3)": _slope(fit["tail_slope"]),
                         "points ": _points(fit["tail_points"]),
                         "slope (increments)": _slope(fit["increment_slope"]),
                         "points  ": _points(fit["increment_points"], fit["points"])})
            if metric in ("peak_mem_bytes", "train_step_s_median", "state_bytes",
                          "stream_step_s_median"):
                slope, how, points = headline(fit, metric)
                parts.append(f"{FIT_QUANTITIES[metric]} grows as L^{slope} ({how}, "
                             f"{points})")
        if parts:
            sentences.append(f"{model} ({c['kind']}): " + "; ".join(parts) + ".")
    return [Heading("Scaling"),
            Paragraph("Log-log least-squares slopes of each quantity against length (scale "
                      "jobs: input length; streaming jobs: context length), seeds pooled by the "
                      "median at each length, over the ok points only: all of them, the longest "
                      "3, and the increments from one length to the next (which removes a "
                      "curve's fixed part, such as the weights in peak memory). A slope of 1 is "
                      "linear growth, 2 quadratic, 0 constant."),
            Bullets(sentences),
            Heading("Frontier", 3), Table(pd.DataFrame(frontier)),
            Heading("Fitted slopes and the points used", 3), Table(pd.DataFrame(fits))]


# --- the report --------------------------------------------------------------------------------
def _method_caption(sub: pd.DataFrame) -> str:
    ran = sub[sub["n"] > 0]
    if ran.empty:
        return "no ok seeds"
    ns = sorted(set(ran["n"].astype(int)))
    n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}..{ns[-1]}"
    methods = set(ran["ci_method"])
    if methods == {"none"}:
        return f"mean over {n_text} seeds (no CI below 3 seeds; range shown)"
    if methods == {"t"}:
        return f"mean ± 95% Student-t interval over {n_text} seeds"
    return f"mean ± 95% CI over {n_text} seeds (method per n: see the note above)"


def expectation_blocks(sources: Sequence[str]) -> list[Any]:
    """The expected orderings of each results directory whose spec states some
    (:mod:`seqbench.results.check`): one table of verdicts per directory."""
    from seqbench.errors import SeqbenchError
    from seqbench.results import check as ck

    blocks: list[Any] = []
    for source in sources:
        if not Path(source).is_dir():
            continue
        try:
            if not ck.suite_of(Path(source)).expect:
                continue
            result = ck.check_dir(source)
        except (SeqbenchError, ValueError) as exc:  # the rows still make a report
            blocks.append(Paragraph(f"Expected orderings of {source} not checked: {exc}"))
            continue
        blocks += [Heading(f"Expected orderings: {result.suite}"),
                   Table(ck.table(result), f"{result.summary()}. " + ck.RULE)]
    return blocks


def build(df: pd.DataFrame, out: Path, *, suites: list[dict] | None = None,
          sources: list[str] | None = None, formats: Sequence[str] = plots.FORMATS,
          n_boot: int = N_BOOT, seed: int = 0, title: str | None = None,
          figures: bool = True) -> Document:
    """Write figures (unless ``figures`` is False), LaTeX tables and stats.csv under ``out``;
    return the report's content."""
    if "run" not in df.columns:
        df = df.assign(run="")
    names = list(dict.fromkeys(df["suite"].astype(str))) or ["results"]
    doc = Document(title or f"seqbench report: {', '.join(names)}")
    devices = sorted(set(df["device"].astype(str)))
    runs = list(dict.fromkeys(df["run"]))
    doc.add(Paragraph(f"Built from {len(df)} stored rows"
                      + (f" of {len(runs)} runs" if len(runs) > 1 else "")
                      + (f" ({', '.join(sources)})" if sources else "")
                      + f". Measured on {', '.join(d.upper() for d in devices)}: speed and "
                        "memory numbers hold for that hardware only."))
    incomplete = _completeness(df, sources or [])
    if incomplete:
        doc.add(Heading("Incomplete"), Bullets(incomplete))
    doc.add(Heading("Provenance"),
            Table(pd.DataFrame(provenance.summary(df, suites), columns=["", "value"])))
    if len(runs) > 1:
        doc.add(Heading("Runs", 3), _runs(df, sources or []))
    notes = df.attrs.get("notes", [])
    if notes:
        doc.add(Heading("Notes on the stored rows"), Bullets(list(notes)))

    doc.add(*search_blocks(df, suites, out, formats if figures else ()))
    df = report_rows(df)  # a search's trials are in its section only; the tables: final runs

    stats = aggregate(df, n_boot=n_boot, seed=seed)
    stats.to_csv(out / "stats.csv", index=False)
    summary = summary_table(df, n_boot=n_boot, seed=seed)
    if len(summary):
        doc.add(Heading("Summary"),
                Table(summary, ("Primary metric over ok seeds. " if "value" in summary
                                else "") + summary.attrs["note"]
                      + " Measurements are means over ok seeds."))

    doc.add(*expectation_blocks(sources or []))
    doc.add(*scaling_blocks(df))

    images = _figures(df, out, formats, n_boot, seed) if figures else []
    if images:
        doc.add(Heading("Figures"), *images)
    # each section is empty for rows without eval settings / a gradient profile / edge track
    for track in (extrapolation, gradients, edge):
        doc.add(*track.report_blocks(df, out, formats, figures))

    doc.add(Heading("Tables"), Paragraph(methods_note(stats, n_boot, seed) + " In parentheses "
                                         "the number of ok seeds and any failed seeds by status; "
                                         "a cell whose seeds all failed shows their status. "
                                         + MARKS_NOTE))
    tex_dir = out / "tables"
    tex_dir.mkdir(parents=True, exist_ok=True)
    everything = []
    kinds = {k: i for i, k in enumerate(("train", "scale", "stream"))}
    groups = sorted(stats.groupby(["kind", "task"], sort=False), key=lambda g: kinds.get(
        g[0][0], len(kinds)))  # stable: tasks keep their order within a kind
    written: set[str] = set()
    for (kind, task), sub in groups:
        measures = TABLE_MEASURES.get(kind, TABLE_MEASURES["train"])
        metrics = [m for m in dict.fromkeys(sub["metric"])
                   if m.startswith(C.METRIC) or m in measures]
        rows = df[(df["kind"] == kind) & (df["task"] == task)]
        for metric in metrics:
            info = C.info(df, metric)
            text, marks = wide_table(sub, metric, info.factor, info.higher_is_better, rows)
            where = task if stats["kind"].nunique() == 1 else f"{task} ({kind} jobs)"
            columns = ("seq_len (measured at context = input length)" if kind == "stream"
                       else "seq_len")
            label = "state size" if metric in BYTES else info.label
            tied = marks.attrs.get("all_tied", [])
            caption = (f"{where}: {label}, {_method_caption(sub[sub['metric'] == metric])}; "
                       f"failed seeds by status; columns: {columns}."
                       + (" Bold: best (Welch, Holm, α = 0.05); italic: tied for best."
                          if info.higher_is_better is not None else "")
                       + (f" No best at {', '.join(f'{v:,}' for v in tied)}: the test "
                          "separates no model from the others." if tied else ""))
            table = Table(text, caption, marks)
            doc.add(Heading(f"{where}: {label}", 3), table)
            name = safe_filename(f"{task}_{_short(metric)}" + (
                "" if kind == "train" else f"_{kind}"))
            while name in written:  # two tasks whose names sanitise alike
                name += "_"
            written.add(name)
            tex = latex_table(table, tex_label(f"tab:{name.replace('_', '-')}"),
                              note=f"seqbench {name}: {provenance.caption(df)}")
            (tex_dir / f"{name}.tex").write_text(tex, encoding="utf-8")
            everything.append(tex)
    (tex_dir / "all.tex").write_text(
        "% needs \\usepackage{booktabs}\n" + "\n".join(everything), encoding="utf-8")

    failures = _failures(df)
    if failures is not None:
        doc.add(Heading("Failed jobs"), failures)
    return doc


def write_report(results: pd.DataFrame | str | Path | Sequence[str | Path],
                 out_dir: str | Path, *, sources: Sequence[str | Path] | None = None,
                 formats: Sequence[str] = plots.FORMATS, n_boot: int = N_BOOT, seed: int = 0,
                 title: str | None = None, figures: bool = True) -> Path:
    """Write the report folder (see the module docstring); return the HTML page's path.

    ``results`` is what :func:`~seqbench.results.load` accepts, or a DataFrame it returned (then
    ``sources``, the paths it was loaded from, go into the provenance with their suite.json and
    tell whether each run is complete). Notes from loading (truncated lines, re-runs, variants,
    unreadable values) are printed in the report.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if isinstance(results, pd.DataFrame):
        df = results
    else:
        sources = [results] if isinstance(results, (str, Path)) else list(results)
        df = load(sources, warn=False)  # the notes go into the report
    source_names = [str(p) for p in sources or []]
    suites = [s for s in (suite_info(p) for p in source_names if Path(p).is_dir()) if s]
    to_parquet(df, out / "rows.parquet")
    doc = build(df, out, suites=suites, sources=source_names, formats=formats, n_boot=n_boot,
                seed=seed, title=title, figures=figures)
    (out / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    page = out / "report.html"
    page.write_text(to_html(doc, out), encoding="utf-8")
    return page
