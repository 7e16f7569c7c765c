"""``seqbench list``: the registered tasks and models, and the shipped specs."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=("tasks", "models", "specs"), default=None,
                   help="list only this (default: everything)")


def main(args: argparse.Namespace) -> int:
    from seqbench.catalog import MODELS, TASKS
    from seqbench.config.load import shipped_specs

    if args.what in (None, "tasks"):
        print("tasks:")
        for t in TASKS:
            print(f"  {t.name:<18} [{t.kind}] {t.description}")
    if args.what in (None, "models"):
        print("models:")
        for m in MODELS:
            print(f"  {m.name:<18} [{m.family}] {m.description}")
    if args.what in (None, "specs"):
        print("specs (seqbench run NAME):")
        for name in shipped_specs():
            print(f"  {name}")
    return 0
