"""Semantic checks of a validated suite against the model and task registries.

Everything that can be known before a job runs is checked here, so bad input is refused with
one line and exit code 2 before anything is recorded: registered names, each model's params
against its mixer's ``Config`` (strict types, ranges, unknown names), a parameter budget that
some width can meet, each task's params against its constructor, the lengths each task can
take, input lengths that fit each model's positional table, and per-task training overrides.

This is the one place where the driver imports worker code (the mixer and task classes, hence
torch), lazily, when a spec is checked; importing :mod:`seqbench.config` imports no torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from seqbench.catalog import MODELS, TASKS
from seqbench.config.messages import spec_error
from seqbench.config.params import check_signature
from seqbench.config.spec import Suite, TaskSpec, TrainSpec, scale_settings, task_lengths
from seqbench.errors import SpecError


def _at(field: str, exc: SpecError, source: str) -> SpecError:
    """``exc`` re-anchored at ``field`` of the spec file ``source``."""
    return SpecError(field, exc.value, exc.allowed, source=source)


def task_train(suite: Suite, i: int, source: str) -> TrainSpec:
    """The suite's training settings with task ``i``'s overrides applied."""
    try:
        return TrainSpec.model_validate({**suite.train.model_dump(), **suite.tasks[i].train})
    except ValidationError as exc:
        raise spec_error(exc, source, TrainSpec, prefix=f"tasks[{i}].train") from None


def check_kind(suite: Suite, source: str) -> None:
    """Fields that belong to one kind of suite only."""
    if suite.kind == "train":
        if suite.scale is not None:
            raise SpecError("scale", "...", "only for kind: scale", source=source)
        for i, t in enumerate(suite.tasks):
            if t.seq_lens is None:
                raise SpecError(f"tasks[{i}].seq_lens", None, "required for kind: train",
                                source=source)
        return
    for i, t in enumerate(suite.tasks):
        if t.seq_lens is not None:
            raise SpecError(f"tasks[{i}].seq_lens", t.seq_lens, "kind: scale takes its lengths "
                            "from scale.start_len and scale.max_len", source=source)
    scale = scale_settings(suite)
    if scale.max_len < scale.start_len:
        raise SpecError("scale.max_len", scale.max_len, f"must be >= start_len={scale.start_len}",
                        source=source)
    unused = {"measure": (suite.measure, {"warmup_steps", "fwd_min_repeats", "fwd_max_repeats",
                                          "fwd_budget_s"}),
              "train": (suite.train, {"steps", "batch_size", "eval_examples", "eval_batch_size"})}
    for block, (spec, keys) in unused.items():
        for key in sorted(spec.model_fields_set & keys):
            raise SpecError(f"{block}.{key}", getattr(spec, key), "not used by kind: scale (set "
                            "scale.batch_policy/batch_size, warmup_steps, min_repeats, budget_s)",
                            source=source)


def check_train(train: TrainSpec, field: str, source: str) -> None:
    if train.warmup_steps > train.steps:
        raise SpecError(f"{field}.warmup_steps", train.warmup_steps,
                        f"must be at most steps={train.steps}", source=source)


def _check_task(i: int, task: TaskSpec, suite: Suite, source: str) -> Any:
    if task.name not in TASKS:
        raise SpecError(f"tasks[{i}].name", task.name, f"known tasks: {', '.join(TASKS.names())}",
                        source=source)
    train = task_train(suite, i, source)
    if suite.kind == "train":
        check_train(train, "train" if not task.train else f"tasks[{i}].train", source)
    cls = TASKS[task.name].load()
    try:
        check_signature(cls.__init__, task.params, f"tasks[{i}].params")
    except SpecError as exc:
        raise _at(exc.field, exc, source) from None
    for L in task_lengths(suite, task):
        try:
            cls.check(L, task.params)
        except SpecError as exc:
            raise _at(f"tasks[{i}].{exc.field}", exc, source) from None
    return cls


def _smallest_io(task_cls: Any, task: TaskSpec, suite: Suite) -> Any:
    """The task's model input/output, from a cheap build (synthetic tasks), else None."""
    if TASKS[task.name].kind != "synthetic":
        return None
    return task_cls(min(task_lengths(suite, task)), **task.params).info.io


def check_suite(suite: Suite, source: str) -> None:
    """Every check that needs the registries (see the module docstring)."""
    from seqbench.worker.models import IOSpec, mixer_class, size_to_budget, split_params
    from seqbench.worker.models.base import BackboneConfig

    check_kind(suite, source)
    if suite.kind == "train":
        check_train(suite.train, "train", source)
    models = []
    for i, m in enumerate(suite.models):
        if m.name not in MODELS:
            raise SpecError(f"models[{i}].name", m.name,
                            f"known models: {', '.join(MODELS.names())}", source=source)
        try:
            bb_cfg, mixer_cfg, budget = split_params(m.name, m.params, f"models[{i}].params")
        except SpecError as exc:
            raise _at(exc.field, exc, source) from None
        cls = mixer_class(m.name)
        multiple = cls.d_model_multiple(mixer_cfg)
        if budget is None and bb_cfg.d_model % multiple:
            raise SpecError(f"models[{i}].params.d_model", bb_cfg.d_model,
                            f"must be a multiple of {multiple} for {m.name}", source=source)
        models.append((i, m.name, cls, mixer_cfg, bb_cfg, budget))
    for t_i, task in enumerate(suite.tasks):
        task_cls = _check_task(t_i, task, suite, source)
        io = _smallest_io(task_cls, task, suite) or IOSpec("channels", 1, 1, False)
        for L in task_lengths(suite, task):
            input_len = task_cls.input_len(L, task.params)
            for i, name, cls, cfg, _, _ in models:
                limit = cls.max_seq_len(cfg)
                if limit is not None and input_len > limit:
                    where = "seq_lens" if suite.kind == "train" else "scale lengths"
                    raise SpecError(f"tasks[{t_i}].{where}", L,
                                    f"{task.name} input length {input_len} exceeds models[{i}] "
                                    f"{name}'s positional table (max_len={limit})",
                                    source=source)
        for i, _, cls, cfg, bb_cfg, budget in models:
            if budget is None:
                continue
            try:
                size_to_budget(cls, cfg, BackboneConfig(**{**bb_cfg.__dict__}), io, budget)
            except SpecError as exc:
                raise SpecError(f"models[{i}].params.param_budget", budget,
                                f"{exc.allowed} on {task.name}", source=source) from None
