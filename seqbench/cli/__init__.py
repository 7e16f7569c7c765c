"""The ``seqbench`` command line. Each subcommand is a module in ``seqbench.cli`` with
``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``, imported only when it runs.

Bad input (a spec, a flag, a data file) prints one line ``seqbench: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from seqbench.errors import SeqbenchError

# subcommand -> (module, one-line help); the module is imported only when its command runs
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("seqbench.cli.run", "run a spec (default: the quick CPU suite)"),
    "scale": ("seqbench.cli.scale", "run a scaling spec to each model's memory frontier"),
    "list": ("seqbench.cli.list_", "list tasks, models and specs"),
    "env": ("seqbench.cli.env", "show provenance and which kernel backends are importable"),
    "report": ("seqbench.cli.report", "Markdown/LaTeX/HTML report and figures from results"),
    "plot": ("seqbench.cli.plot", "one figure: a metric vs length (or any axis), filtered"),
    "data": ("seqbench.cli.data", "list real datasets, check their files and checksums"),
    "validate": ("seqbench.cli.validate", "check stored rows against the schema (exit 1)"),
    "compare": ("seqbench.cli.compare", "flag regressions between two runs (exit 1)"),
    "check": ("seqbench.cli.check", "check a run's expected orderings (exit 1 on a flip)"),
    "nightly": ("seqbench.cli.nightly", "test gate, nightly spec, compare, report, history"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        self.exit(2, f"seqbench: error: {message.splitlines()[0]}\n")


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="seqbench", description="Benchmark sequence architectures.")
    from seqbench import __version__

    parser.add_argument("--version", action="version", version=f"seqbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == load:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from seqbench.execution.base import exit_code_of, signal_of, stop_on_sigterm

    try:
        with stop_on_sigterm():  # SIGTERM stops any command as Ctrl-C does, with one line
            return int(importlib.import_module(COMMANDS[args.command][0]).main(args) or 0)
    except SeqbenchError as exc:
        print(f"seqbench: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"seqbench: interrupted ({signal_of(exc)}); finished jobs are kept, rerun to "
              "resume", file=sys.stderr)
        return exit_code_of(exc)


if __name__ == "__main__":
    sys.exit(main())
