"""What "the same job" and "the same configuration" mean to every reader of results: the
report and ``load`` (which keeps one row per job within a run and every run apart) and
``compare`` (which pairs two runs' configurations, and their seeds within them).

* **the same job**: the same configuration (``config_hash``, which hashes everything a job is
  except its seed and timeout), the same ``seed`` and, for streaming rows, the same context
  position (``context_len``). Within one run a job stored twice is a re-run: its last row
  counts. Across runs the same job is measured again: both rows are kept, told apart by ``run``.
* **the same configuration on the same machine**: ``config_hash`` (and ``context_len``) plus
  :func:`machine` (the device's name, e.g. the CPU model). Speed and memory numbers compare only
  there, unless a comparison says explicitly that it crosses machines.
"""

from __future__ import annotations

import math
from typing import Any


def _int_or_none(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def job_key(row: dict[str, Any]) -> tuple[str, Any, int | None]:
    """``(config_hash, seed, context_len)``: rows with equal keys measured the same job."""
    seed = row.get("seed")
    return (str(row.get("config_hash", "")), _int_or_none(seed) if seed is not None else None,
            _int_or_none(row.get("context_len")))


def machine(row: dict[str, Any]) -> str:
    """The machine a row was measured on: its device name (CPU or GPU model), else its device."""
    name = row.get("device_name")
    if isinstance(name, str) and name:
        return name
    device = row.get("device")
    return device if isinstance(device, str) else ""


def config_key(row: dict[str, Any], *, across_machines: bool = False) -> tuple:
    """``(config_hash, context_len, machine)``, or without the machine when
    ``across_machines``: the rows of one configuration whose seeds a comparison pairs."""
    config_hash, _, context = job_key(row)
    return (config_hash, context) if across_machines else (config_hash, context, machine(row))
