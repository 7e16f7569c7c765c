"""asv suite: every registered model x a few lengths, measured by seqbench itself.

Each (model, length) is one ordinary seqbench job: the adding problem (Hochreiter & Schmidhuber
1997; the TCN variant), the model's ``Config`` defaults sized to :data:`PARAM_BUDGET`
parameters, and a fixed small training budget (:data:`TRAIN`). ``setup_cache`` runs the whole
grid once per ``asv run`` through
:class:`seqbench.execution.local.LocalExecutor`: a fresh worker per
job, warm-up, adaptive repeats and peak memory by :mod:`seqbench.worker.measure`, exactly as in
``seqbench run``. There is no second timing implementation here: the ``track_*`` benchmarks only
read the job's row. asv's ``time_*`` would measure the CPU time of this process and
``peakmem_*`` its host RSS, both wrong for GPU work and for work done in a worker.

The grid follows the model registry: a model added with ``MODELS.add(...)`` appears here
without editing this file. A model whose backend is missing (``unavailable``) or a length that
runs out of memory (``oom``) raises ``NotImplementedError`` in ``setup``: asv shows it as
skipped (n/a), not failed. Any other failure (``error``, ``timeout``) is a failure.

Direction: asv treats a larger number as worse. That is right for peak memory, the MSE and
``track_train_step_s``, and backwards for the tokens/s tracks (read their regressions as
improvements); ``seqbench compare`` knows each direction.

Narrowing a run (the CI smoke run; nothing else should set these):
``SEQBENCH_ASV_MODELS=lstm,gru`` and ``SEQBENCH_ASV_LENGTHS=32`` run only those jobs; the other
grid points are skipped.

Commands (from the checkout, with seqbench pip-installed; results in ``results/asv``)::

    asv machine --yes
    asv check -E existing
    asv run -E existing:$(python -c 'import sys; print(sys.executable)') \
        --set-commit-hash $(git rev-parse HEAD)
    asv publish && asv preview
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from seqbench.catalog import MODELS, Registry

TASK = "adding"
LENGTHS = [32, 128]
PARAM_BUDGET = 20_000
MODEL_PARAMS: dict[str, dict[str, Any]] = {}  # a model that cannot run at its defaults
TRAIN = {"steps": 60, "batch_size": 32, "lr": 3.0e-3, "schedule": "constant",
         "eval_examples": 256, "eval_batch_size": 256}
# one thread: stable timings on a shared CPU; on a GPU only the host side uses it
MEASURE = {"warmup_steps": 3, "fwd_min_repeats": 5, "fwd_budget_s": 0.5, "threads": 1}
TIMEOUT_S = 600.0  # per job
SKIPPED = frozenset({"unavailable", "oom", "skipped"})  # -> NotImplementedError: asv's skip
TRACKED = frozenset({"ok", "diverged"})  # diverged rows keep their speed and memory


def model_names(registry: Registry | None = None) -> list[str]:
    """The grid's models: every registered one, in registration order."""
    return (registry if registry is not None else MODELS).names()


def _narrowed(variable: str, grid: Sequence[Any], cast: type) -> list[Any]:
    text = os.environ.get(variable, "").strip()
    if not text:
        return list(grid)
    wanted = [cast(v.strip()) for v in text.split(",") if v.strip()]
    unknown = [v for v in wanted if v not in grid]
    if unknown:
        raise ValueError(f"{variable}: {unknown} not in the grid {list(grid)}")
    return wanted


def spec(model: str, lengths: Sequence[int]) -> dict[str, Any]:
    """The seqbench spec of one model's row of the grid."""
    return {
        "name": "asv", "version": 1, "seeds": [0], "device": "auto", "dtype": "float32",
        "models": [{"name": model,
                    "params": {"param_budget": PARAM_BUDGET, **MODEL_PARAMS.get(model, {})}}],
        "tasks": [{"name": TASK, "seq_lens": list(lengths)}],
        "train": TRAIN, "measure": MEASURE, "timeout_s": TIMEOUT_S,
    }


def run_grid(models: Sequence[str], lengths: Sequence[int],
             executor: Any = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Run every (model, length) job; rows keyed by (model, length)."""
    from seqbench.config import expand, parse_suite
    from seqbench.errors import SpecError
    from seqbench.execution.local import LocalExecutor
    from seqbench.recording.provenance import code_provenance

    executor = executor or LocalExecutor()
    from seqbench.recording.rows import RunContext

    context = RunContext(suite="asv", **code_provenance())
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for model in models:
        try:
            suite = parse_suite(spec(model, lengths), source=f"asv grid ({model})")
        except SpecError as exc:  # e.g. a model that needs MODEL_PARAMS: a visible failure
            rows.update({(model, L): {"status": "error", "error": str(exc)} for L in lengths})
            continue
        for job in expand(suite):
            rows[(model, job.task.seq_len)] = executor.run_one(job, context).to_dict()
    return rows


class TrainAdding:
    """Seqbench's own measurements of one job per (model, length), tracked by asv."""

    params: ClassVar[list[list]] = [model_names(), LENGTHS]
    param_names: ClassVar[list[str]] = ["model", "seq_len"]
    timeout = 3600  # each track only reads the cache; the grid runs in setup_cache

    def setup_cache(self) -> dict[tuple[str, int], dict[str, Any]]:
        models = _narrowed("SEQBENCH_ASV_MODELS", self.params[0], str)
        lengths = _narrowed("SEQBENCH_ASV_LENGTHS", self.params[1], int)
        return run_grid(models, lengths)

    setup_cache.timeout = 3600  # the whole grid (asv's default is 60 s)

    def setup(self, rows: dict, model: str, seq_len: int) -> None:
        row = rows.get((model, seq_len))
        if row is None:
            raise NotImplementedError("not selected by SEQBENCH_ASV_MODELS/SEQBENCH_ASV_LENGTHS")
        if row["status"] in SKIPPED:
            raise NotImplementedError(f"{row['status']}: {row.get('error', '')}")
        if row["status"] not in TRACKED:
            raise RuntimeError(f"{model} L={seq_len}: {row['status']}: {row.get('error', '')}")

    def track_train_tokens_per_s(self, rows: dict, model: str, seq_len: int) -> float:
        return rows[(model, seq_len)]["train_tokens_per_s"]

    track_train_tokens_per_s.unit = "tokens/s"

    def track_fwd_tokens_per_s(self, rows: dict, model: str, seq_len: int) -> float:
        return rows[(model, seq_len)].get("fwd_tokens_per_s", float("nan"))

    track_fwd_tokens_per_s.unit = "tokens/s"

    def track_train_step_s(self, rows: dict, model: str, seq_len: int) -> float:
        """The median training step, for asv's larger-is-worse regression detection."""
        return rows[(model, seq_len)]["train_step_s_median"]

    track_train_step_s.unit = "seconds"

    def track_peak_mem_bytes(self, rows: dict, model: str, seq_len: int) -> float:
        """CUDA: max_memory_allocated; CPU: the worker's peak RSS minus an idle worker's."""
        return rows[(model, seq_len)].get("peak_mem_bytes", float("nan"))

    track_peak_mem_bytes.unit = "bytes"

    def track_mse_after_budget(self, rows: dict, model: str, seq_len: int) -> float:
        """Held-out MSE after the fixed training budget (lower is better; 1/6: the constant
        prediction)."""
        row = rows[(model, seq_len)]
        return row.get(f"metric_{row.get('primary_metric') or 'mse'}", float("nan"))

    track_mse_after_budget.unit = "MSE"
