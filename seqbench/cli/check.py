"""``seqbench check RESULTS...``: the expected orderings of each results directory's spec
(its ``expect`` list), evaluated over the seeds with Welch's test (see
:mod:`seqbench.results.check` for the rule and the verdicts).

Exit status: 1 when an ordering flipped or could not be evaluated (``missing``; with
``--strict`` also when one is not separated, below its margin or untestable), 0 otherwise,
2 for bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqbench.errors import SpecError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", metavar="RESULTS", nargs="+", help="results directories")
    p.add_argument("--spec", default=None,
                   help="take the expectations from this spec (file or shipped name) instead "
                        "of the results' own; its suite name must match")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 unless every check is held")
    p.add_argument("--markdown", metavar="FILE", default=None,
                   help="also write the tables as Markdown to FILE")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the verdicts as JSON to FILE")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from seqbench.results import check as ck

    expectations, name = None, None
    if args.spec is not None:
        from seqbench.config.load import load_suite

        spec, _ = load_suite(args.spec)
        expectations, name = list(spec.expect), spec.name
    console = Console()
    checks = []
    for path in args.results:
        if name is not None and ck.suite_of(Path(path)).name != name:
            raise SpecError("--spec", args.spec, f"a spec of suite "
                            f"{ck.suite_of(Path(path)).name!r}, which {path} was run from")
        check = ck.check_dir(path, expectations)
        checks.append(check)
        df = ck.table(check)
        t = Table(title=f"{path}: {check.summary()}", show_lines=False)
        for col in df.columns:
            t.add_column(str(col), overflow="fold")
        for rec in df.fillna("").astype(str).itertuples(index=False):
            t.add_row(*rec)
        console.print(t)
        for v in check.verdicts:
            if v.failing:
                console.print(f"[bold red]{v.status.upper()}[/]: {v.expect.text()} at "
                              f"{v.task} T={v.seq_len} eval {v.eval_len}"
                              + (f" ({v.expect.why})" if v.expect.why else ""))
        for text in check.unmatched:
            console.print(f"[bold red]MISSING[/]: {text}")
    if args.markdown:
        out = Path(args.markdown)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(ck.to_markdown(c) for c in checks), encoding="utf-8")
    if args.json:
        import json

        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([ck.as_json(c) for c in checks], indent=1), encoding="utf-8")
    return 1 if any(c.failed(args.strict) for c in checks) else 0
