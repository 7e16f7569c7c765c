"""``seqbench plot RESULTS --metric M [--x X] [--hue H] [--filter K=V ...] -o out.png``: one
figure in your own paper style (matplotlib style sheet, seaborn context, size)."""

from __future__ import annotations

import argparse
from pathlib import Path

from seqbench.errors import SpecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+",
                   help="results directories, .jsonl or .parquet files (each a run of its own)")
    p.add_argument("--metric", default=None,
                   help="what to plot: a task metric (accuracy, mse, ...) or a measurement "
                        "(train_tokens_per_s, peak_mem_bytes, ...); default: the primary metric")
    p.add_argument("--x", default="seq_len",
                   help="x axis: seq_len (default), context_len, param_count, ... or a metric")
    p.add_argument("--hue", default="model", help="colour lines by this column (default model)")
    p.add_argument("--col", default=None, help="one panel per value of this column (e.g. task)")
    p.add_argument("--filter", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep matching rows; repeat for several; VALUE may be a,b")
    p.add_argument("-o", "--out", default="plot.png", help="output .png, .pdf or .svg")
    p.add_argument("--logy", action=argparse.BooleanOptionalAction, default=None,
                   help="log y axis (default: log for throughput, memory and latency)")
    p.add_argument("--no-band", action="store_true",
                   help="no 95%% CI bands (drawn only where a cell has 3 or more seeds)")
    p.add_argument("--no-baseline", action="store_true", help="no trivial-baseline line")
    p.add_argument("--style", default=None, help="matplotlib style name or .mplstyle file")
    p.add_argument("--context", default="paper", help="paper, notebook, talk or poster")
    p.add_argument("--size", nargs=2, type=float, default=None, metavar=("W", "H"),
                   help="figure size in inches")
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def main(args: argparse.Namespace) -> int:
    from seqbench.cli.report import print_notes
    from seqbench.results import plots
    from seqbench.results.load import load, select

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise SpecError("--out", args.out, "a .png, .pdf or .svg file name")
    df = load(args.results, warn=False)
    print_notes(df)
    df = select(df, args.filter)
    metric = args.metric
    if metric is None:
        primary = df["primary_metric"].replace("", None).dropna().unique().tolist()
        if len(primary) != 1:
            raise SpecError("--metric", None, "required: these rows have primary metrics "
                                              f"{', '.join(primary) or 'none'}")
        metric = primary[0]
    with plots.style(args.style, args.context):
        fig = plots.plot(df, metric, x=args.x, hue=args.hue, col=args.col, logy=args.logy,
                         band=not args.no_band, baseline=not args.no_baseline, title=args.title,
                         figsize=tuple(args.size) if args.size else None, seed=args.seed)
        written = plots.save(fig, out)
    print(f"figure: {written[0]}")
    return 0
