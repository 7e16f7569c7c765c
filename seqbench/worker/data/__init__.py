"""The task registry: one line per task, imported lazily.

A new kind of data is one generator class in this package plus one ``TASKS.add(...)`` line in
:mod:`seqbench.catalog`; a
new experiment on existing data is one YAML file in ``tasks/``.
"""

from __future__ import annotations

from typing import Any

from seqbench.catalog import TASKS
from seqbench.errors import SpecError
from seqbench.worker.data.base import IGNORE, Metric, Task, TaskInfo


def build_task(name: str, seq_len: int, params: dict[str, Any] | None = None) -> Task:
    cls = TASKS[name].load()
    try:
        return cls(seq_len, **(params or {}))
    except TypeError as exc:
        raise SpecError(f"tasks.{name}.params", params, f"not accepted by {name}: {exc}") from None


__all__ = ["IGNORE", "TASKS", "Metric", "Task", "TaskInfo", "build_task"]
