"""``seqbench report RESULTS [-o DIR]``: Markdown, LaTeX tables, figures and one self-contained
HTML page from stored rows (see :mod:`seqbench.results.report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seqbench.errors import SpecError

VECTOR_FORMATS = ("pdf", "svg")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+",
                   help="results directories, .jsonl or .parquet files; each is a run of its "
                        "own (a `run` column): rows of several runs are kept, never merged")
    p.add_argument("-o", "--out", default=None,
                   help="report directory (default: RESULTS/report for one results directory)")
    p.add_argument("--vector", default="pdf", help="vector figure format beside the PNG: "
                   f"{' or '.join(VECTOR_FORMATS)} (default pdf)")
    p.add_argument("--n-boot", type=int, default=2000,
                   help="BCa bootstrap resamples, for cells of 30 or more seeds (default 2000; "
                        "3-29 seeds: Student-t interval; fewer: no interval)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--title", default=None, help="report title (default: the suite names)")


def print_notes(df) -> None:
    """Loading notes (truncated lines, re-runs, variants) as one line each on stderr."""
    for note in df.attrs.get("notes", []):
        print(f"seqbench: note: {note}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    if args.vector not in VECTOR_FORMATS:
        raise SpecError("--vector", args.vector, f"one of {', '.join(VECTOR_FORMATS)}")
    if args.n_boot < 100:
        raise SpecError("--n-boot", args.n_boot, "at least 100 resamples")
    from seqbench.results.load import load
    from seqbench.results.report import write_report

    df = load(args.results, warn=False)
    print_notes(df)
    first = Path(args.results[0])
    out = Path(args.out) if args.out else (
        first / "report" if first.is_dir() and len(args.results) == 1 else Path("report"))
    page = write_report(df, out, sources=args.results, formats=("png", args.vector),
                        n_boot=args.n_boot, seed=args.seed, title=args.title)
    print(f"report: {page} (Markdown {out / 'report.md'}, LaTeX {out / 'tables'}, "
          f"figures {out / 'figures'})")
    return 0
