"""``seqbench report``: a folder that can be cited, built only from stored rows.

``write_report(results, out_dir)`` writes::

    out_dir/report.md        provenance header, notes, summary, figures, tables, failed jobs
    out_dir/report.html      the same page, self-contained (figures embedded), opens anywhere
    out_dir/tables/*.tex     one booktabs table per (task, metric): mean ± CI (n), best in bold
    out_dir/figures/*.png|pdf
    out_dir/stats.csv        every statistic: mean, std, n, exact CI bounds, failed seeds
    out_dir/rows.parquet     the rows all of it was computed from

Each table is models x lengths for one task and metric; a cell is ``mean ± h (n)`` where
``mean ± h`` covers the 95% bootstrap interval over the n ok seeds, failed seeds are named by
status (``0.55 ± 0.05 (2; 1 oom)``) and a cell whose seeds all failed shows only that (``3 oom``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seqbench.errors import SpecError
from seqbench.results import columns as C
from seqbench.results import plots, provenance
from seqbench.results.load import load, suite_info, to_parquet
from seqbench.results.stats import N_BOOT, aggregate, cell_text, sort_key, summary_table
from seqbench.results.writers import (
    Bullets,
    Document,
    Heading,
    Image,
    Paragraph,
    Table,
    latex_table,
    to_html,
    to_markdown,
)

TABLE_MEASURES = ("train_tokens_per_s", "fwd_tokens_per_s", "peak_mem_bytes",
                  "stream_step_s_median", "state_bytes")
STATS_NOTE = ("Cells: mean ± h over seeds, where mean ± h covers the 95% percentile-bootstrap "
              "interval of the mean ({n_boot} resamples, seed {seed}); in parentheses the number "
              "of ok seeds and any failed seeds by status. A cell whose seeds all failed shows "
              "their status. Best mean per length in bold where two or more compete. Exact "
              "bounds and standard deviations: stats.csv.")


def _short(column: str) -> str:
    return column[len(C.METRIC):] if column.startswith(C.METRIC) else column


def wide_table(stats: pd.DataFrame, metric: str, factor: float,
               higher_is_better: bool | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models (rows) x lengths (columns) of one metric: cell text, and where the best is."""
    stats = stats[stats["metric"] == metric]
    labels = list(dict.fromkeys(stats["label"]))
    lengths = sorted(stats["seq_len"].unique())
    text = pd.DataFrame("", index=labels, columns=lengths, dtype=object)
    bold = pd.DataFrame(False, index=labels, columns=lengths)
    for _, row in stats.iterrows():
        text.loc[row["label"], row["seq_len"]] = cell_text(row, factor, with_n=True)
    if higher_is_better is not None:
        for length in lengths:
            ok = stats[(stats["seq_len"] == length) & (stats["n"] > 0)]
            if len(ok) > 1:
                best = ok["mean"].max() if higher_is_better else ok["mean"].min()
                bold.loc[ok.loc[np.isclose(ok["mean"], best, rtol=1e-12, atol=0), "label"],
                         length] = True
    model = "model"
    text = text.reset_index(names=model)
    bold = bold.reset_index(names=model).assign(**{model: False})
    text.columns = bold.columns = [model, *(f"{int(v):,}" for v in lengths)]
    return text, bold


def _figures(df: pd.DataFrame, out: Path, formats: Sequence[str], n_boot: int,
             seed: int) -> list[Image]:
    makers = [
        ("metric_vs_length", plots.metric_vs_length,
         "Task metric (each task's primary metric) vs length, mean and 95% CI band over seeds; "
         "dashed: the task's trivial baseline; x: every seed failed there (skipped lengths are "
         "not drawn; the tables list them)."),
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
    frame = failed[["job_id", "task", "label", "seq_len", "seed", "status", "error"]].copy()
    frame["error"] = frame["error"].map(lambda e: (str(e).splitlines() or [""])[0][:100])
    return Table(frame.rename(columns={"label": "model"}).astype(str).reset_index(drop=True))


def build(df: pd.DataFrame, out: Path, *, suites: list[dict] | None = None,
          sources: list[str] | None = None, formats: Sequence[str] = plots.FORMATS,
          n_boot: int = N_BOOT, seed: int = 0, title: str | None = None) -> Document:
    """Write figures, LaTeX tables and stats.csv under ``out``; return the report's content."""
    names = list(dict.fromkeys(df["suite"].astype(str))) or ["results"]
    doc = Document(title or f"seqbench report: {', '.join(names)}")
    devices = sorted(set(df["device"].astype(str)))
    doc.add(Paragraph(f"Built from {len(df)} stored rows"
                      + (f" ({', '.join(sources)})" if sources else "")
                      + f". Measured on {', '.join(d.upper() for d in devices)}: speed and "
                        "memory numbers hold for that hardware only."))
    doc.add(Heading("Provenance"),
            Table(pd.DataFrame(provenance.summary(df, suites), columns=["", "value"])))
    notes = df.attrs.get("notes", [])
    if notes:
        doc.add(Heading("Notes on the stored rows"), Bullets(list(notes)))

    stats = aggregate(df, n_boot=n_boot, seed=seed)
    stats.to_csv(out / "stats.csv", index=False)
    summary = summary_table(df, n_boot=n_boot, seed=seed)
    if len(summary):
        doc.add(Heading("Summary"),
                Table(summary, "Primary metric as mean ± 95% CI over ok seeds (n in the "
                      "tables below); throughput and memory are means over ok seeds."))

    images = _figures(df, out, formats, n_boot, seed)
    if images:
        doc.add(Heading("Figures"), *images)

    doc.add(Heading("Tables"), Paragraph(STATS_NOTE.format(n_boot=n_boot, seed=seed)))
    tex_dir = out / "tables"
    tex_dir.mkdir(parents=True, exist_ok=True)
    everything = []
    kinds = {k: i for i, k in enumerate(("train", "scale", "stream"))}
    groups = sorted(stats.groupby(["kind", "task"], sort=False), key=lambda g: kinds.get(
        g[0][0], len(kinds)))  # stable: tasks keep their order within a kind
    for (kind, task), sub in groups:
        metrics = [m for m in dict.fromkeys(sub["metric"])
                   if m.startswith(C.METRIC) or m in TABLE_MEASURES]
        for metric in metrics:
            info = C.info(df, metric)
            text, bold = wide_table(sub, metric, info.factor, info.higher_is_better)
            where = task if stats["kind"].nunique() == 1 else f"{task} ({kind} jobs)"
            columns = ("seq_len (measured at context = input length)" if kind == "stream"
                       else "seq_len")
            caption = (f"{where}: {info.label}, mean ± 95% CI over seeds (ok seeds; failed "
                       f"seeds by status); columns: {columns}. Best per length in bold.")
            table = Table(text, caption, bold)
            doc.add(Heading(f"{where}: {info.label}", 3), table)
            name = f"{task}_{_short(metric)}" + ("" if kind == "train" else f"_{kind}")
            tex = latex_table(table, f"tab:{name.replace('_', '-')}",
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
                 title: str | None = None) -> Path:
    """Write the report folder (see the module docstring); return the HTML page's path.

    ``results`` is what :func:`~seqbench.results.load` accepts, or a DataFrame it returned (then
    ``sources``, the paths it was loaded from, go into the provenance with their suite.json).
    Notes from loading (truncated lines, re-runs, variants) are printed in the report.
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    if isinstance(results, pd.DataFrame):
        df = results
    else:
        sources = [results] if isinstance(results, (str, Path)) else list(results)
        df = load(sources, warn=False)  # the notes go into the report
    source_names = [str(p) for p in sources or []]
    suites = [s for s in (suite_info(p) for p in source_names) if s]
    to_parquet(df, out / "rows.parquet")
    doc = build(df, out, suites=suites, sources=source_names, formats=formats, n_boot=n_boot,
                seed=seed, title=title)
    (out / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    page = out / "report.html"
    page.write_text(to_html(doc, out), encoding="utf-8")
    return page
