"""``seqbench data``: which real datasets are here, and are their files intact.

``seqbench data list`` shows every dataset (embedded in a package, or local in the data
directory) with its tasks, licence, size and status. ``seqbench data check [NAMES]`` verifies
sizes and checksums (``--quick``: presence and sizes only). Naming a dataset (``mnist``) or a
task (``smnist``) that is missing or corrupt exits 2 with one line saying which file, where it
was expected and how to get it; without names, every dataset is reported, missing ones are not
an error, and a present but corrupt or incomplete one is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqbench.errors import SpecError

FAILED = ("missing", "incomplete", "corrupt", "unavailable")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("check", "list"), help="check files, or list datasets")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="datasets or tasks (default: all), e.g. mnist smnist text8")
    p.add_argument("--data-dir", default=None,
                   help="local data directory (default: $SEQBENCH_DATA_DIR, else "
                        "~/.local/share/seqbench)")
    p.add_argument("--quick", action="store_true",
                   help="check presence and sizes only, not checksums or file counts")


def dataset_tasks() -> dict[str, list[str]]:
    """Dataset (manifest) name -> the registered tasks that read it (also through their
    ``dataset`` param: every dataset in a task's ``data_format``)."""
    from seqbench.catalog import TASKS
    from seqbench.worker.data.manifest import load_manifest, manifest_names

    formats = {name: load_manifest(name).data.get("format") for name in manifest_names()}
    out: dict[str, list[str]] = {}
    for entry in TASKS:
        if entry.kind in ("embedded", "local"):
            cls = entry.load()
            out.setdefault(cls.manifest_name, []).append(entry.name)
            fmt = getattr(cls, "data_format", None)
            for name, f in formats.items():
                if fmt and f == fmt and name != cls.manifest_name:
                    out.setdefault(name, []).append(entry.name)
    return out


def resolve_names(names: list[str]) -> list[str]:
    from seqbench.worker.data.manifest import manifest_names

    known = manifest_names()
    by_task: dict[str, str] = {}
    for ds, tasks in dataset_tasks().items():  # a task's own dataset comes first
        for task in tasks:
            by_task.setdefault(task, ds)
    out = []
    for name in names:
        if name in known:
            out.append(name)
        elif name in by_task:
            out.append(by_task[name])
        else:
            raise SpecError("dataset", name, f"known datasets: {', '.join(known)}; "
                                             f"or a task: {', '.join(by_task)}")
    return list(dict.fromkeys(out))


def main(args: argparse.Namespace) -> int:
    from seqbench.worker.data.manifest import data_error, load_manifest, manifest_names, verify
    from seqbench.worker.data.paths import resolve_data_dir, source_of

    data_dir = resolve_data_dir(args.data_dir)
    print(f"data dir: {data_dir} (from {source_of(args.data_dir)})")
    names = resolve_names(args.names) if args.names else manifest_names()
    if args.action == "list":
        return _list(names, data_dir)
    first_failure = None
    for name in names:
        report = verify(name, data_dir, deep=not args.quick)
        print(f"  {report.status:<11} {name:<16} {report.where}  {report.detail}")
        explicit = bool(args.names)
        bad = report.status in FAILED if explicit else report.status in ("incomplete", "corrupt")
        if bad and first_failure is None:
            first_failure = report
    if first_failure is not None:
        manifest = load_manifest(first_failure.name)
        if first_failure.problem is not None:
            raise data_error(manifest, first_failure.problem, data_dir)
        raise SpecError(f"data.{first_failure.name}", first_failure.where, first_failure.detail)
    return 0


def _list(names: list[str], data_dir: Path) -> int:
    from seqbench.worker.data.manifest import load_manifest, verify

    tasks = dataset_tasks()
    for name in names:
        m = load_manifest(name)
        status = verify(name, data_dir, deep=False).status
        print(f"{name} [{m.kind}] {status}: {m.title}")
        print(f"    tasks: {', '.join(tasks.get(name, [])) or '-'}")
        print(f"    licence: {m.licence}")
        print(f"    size: {m.size}")
        print(f"    get it: {m.obtain}")
    return 0
