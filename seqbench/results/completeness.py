"""Is a run complete? The jobs a suite's spec (``suite.json``) expands to, counted from the spec
itself (tasks x lengths x models x seeds, as :func:`seqbench.config.expand.expand` orders them,
without loading any task class or torch), against the rows a results folder holds.

A row counts as recorded when it finished (any status but ``interrupted``): a job that ran out
of memory is recorded, a job killed by Ctrl-C is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from seqbench.recording.schema import UNFINISHED

JobTuple = tuple[str, str, int, str, int]  # (kind, task, seq_len, model, seed)


def expected_jobs(spec: dict[str, Any]) -> set[JobTuple] | None:
    """Every job of a stored spec, or None when the spec cannot be read."""
    from pydantic import ValidationError

    from seqbench.config.spec import Suite, scale_settings

    try:
        suite = Suite.model_validate(spec)
    except (ValidationError, TypeError, ValueError):
        return None
    if suite.kind == "train":
        plan = [("train", t.name, list(t.seq_lens or [])) for t in suite.tasks]
    else:
        scale = scale_settings(suite)
        plan = [(kind, t.name, lengths) for kind, lengths in
                (("scale", scale.lengths()), ("stream", scale.stream_positions))
                for t in suite.tasks]
    return {(kind, task, int(L), m.name, int(seed)) for kind, task, lengths in plan
            for L in lengths for m in suite.models for seed in suite.seeds}


@dataclass
class Completeness:
    run: str
    expected: int
    recorded: int
    interrupted: int
    missing: list[JobTuple] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.recorded >= self.expected

    def text(self) -> str:
        """``'run quick: incomplete, 11 of 56 jobs recorded (45 missing, e.g. ...)'``."""
        if self.complete:
            return f"run {self.run}: complete, all {self.expected} jobs of its spec recorded"
        shown = ", ".join(f"{k} {t} L={L} {m} seed={s}" if k != "train" else
                          f"{t} L={L} {m} seed={s}" for k, t, L, m, s in self.missing[:3])
        extra = f"; {self.interrupted} interrupted" if self.interrupted else ""
        return (f"run {self.run}: INCOMPLETE, {self.recorded} of {self.expected} jobs of its "
                f"spec recorded ({len(self.missing)} missing{extra}; e.g. {shown}); "
                "rerun the same command to finish it")


def completeness(rows: pd.DataFrame, spec: dict[str, Any], run: str) -> Completeness | None:
    """How many of ``spec``'s jobs ``rows`` (one run's rows) recorded; None when the spec
    cannot be read."""
    expected = expected_jobs(spec)
    if expected is None:
        return None
    finished = rows[~rows["status"].isin(UNFINISHED)]
    seen: set[JobTuple] = set()
    for kind, task, seq_len, model, seed in finished[
            ["kind", "task", "seq_len", "model", "seed"]].itertuples(index=False):
        if pd.isna(seq_len) or pd.isna(seed):
            continue
        seen.add((str(kind), str(task), int(seq_len), str(model), int(seed)))
    recorded = expected & seen
    interrupted = int(rows["status"].isin(UNFINISHED).sum())
    order = sorted(expected - recorded, key=lambda j: (j[0], j[1], j[2], j[3], j[4]))
    return Completeness(run, len(expected), len(recorded), interrupted, order)
