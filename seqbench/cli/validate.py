"""``seqbench validate RESULTS``: check stored rows against the schema; exit 1 listing every
problem, 0 when clean (see :mod:`seqbench.recording.validate` for what is checked)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", metavar="RESULTS",
                   help="a results directory, a results.jsonl file or a job's .json file")
    p.add_argument("--strict", action="store_true",
                   help="also report fields the schema does not declare")
    p.add_argument("--max-problems", type=int, default=200,
                   help="problems printed at most (all are counted; default 200)")


def main(args: argparse.Namespace) -> int:
    from seqbench.recording.validate import validate_path

    count, problems = validate_path(args.results, strict=args.strict)
    for problem in problems[:args.max_problems]:
        print(problem)
    if len(problems) > args.max_problems:
        print(f"... and {len(problems) - args.max_problems} more")
    verdict = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}" if problems else "ok"
    print(f"{args.results}: {count} rows, {verdict}")
    return 1 if problems else 0
