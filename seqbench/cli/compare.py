"""``seqbench compare BASE NEW``: flag regressions between two runs (see
:mod:`seqbench.results.compare`).

Exit status: 1 when something regressed, 0 otherwise, 2 for bad input (unreadable results,
bad flags, or two runs without a single configuration in common on the same device: the
message says what each run holds; ``--across-devices`` compares two machines on config hash
alone, and the output's header says so).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqbench.errors import SpecError
from seqbench.results import compare as cmp


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", metavar="BASE", help="results directory or .jsonl file (the reference)")
    p.add_argument("new", metavar="NEW", help="results directory or .jsonl file (the candidate)")
    p.add_argument("--threshold", type=float, default=cmp.THRESHOLD,
                   help=f"speed/memory ratio that counts as a change (default {cmp.THRESHOLD})")
    p.add_argument("--alpha", type=float, default=cmp.ALPHA,
                   help="significance level of the Mann-Whitney U test on step-time samples "
                        f"(default {cmp.ALPHA})")
    p.add_argument("--metric-atol", type=float, default=cmp.METRIC_ATOL,
                   help=f"absolute tolerance of task metrics (default {cmp.METRIC_ATOL})")
    p.add_argument("--metric-rtol", type=float, default=cmp.METRIC_RTOL,
                   help=f"relative tolerance of task metrics (default {cmp.METRIC_RTOL})")
    p.add_argument("--markdown", metavar="FILE", default=None,
                   help="also write the table as Markdown to FILE")
    p.add_argument("--all", action="store_true",
                   help="list every compared quantity, not only the flagged ones")
    p.add_argument("--across-devices", action="store_true",
                   help="compare runs from different machines: match configurations on config "
                        "hash alone (speed and memory ratios then compare the machines)")


def check_args(args: argparse.Namespace) -> None:
    if not args.threshold > 1:
        raise SpecError("--threshold", args.threshold, "a ratio above 1 (e.g. 1.1)")
    if not 0 < args.alpha < 1:
        raise SpecError("--alpha", args.alpha, "a probability between 0 and 1")
    for flag, value in (("--metric-atol", args.metric_atol), ("--metric-rtol", args.metric_rtol)):
        if not value >= 0:
            raise SpecError(flag, value, "a non-negative number")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    check_args(args)
    base_rows, new_rows = cmp.read_rows(args.base), cmp.read_rows(args.new)
    how = cmp.compare_across_devices if args.across_devices else cmp.compare
    result = how(base_rows, new_rows, threshold=args.threshold, alpha=args.alpha,
                 metric_atol=args.metric_atol, metric_rtol=args.metric_rtol)
    if result.matched == 0:
        raise SpecError("compare", f"{args.base} vs {args.new}", result.refusal())
    cmp.print_table(result, Console(), args.all)
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cmp.to_markdown(result, args.base, args.new, args.all), encoding="utf-8")
    return 1 if result.regressions else 0
