"""Semantic checks of a validated suite against the model and task registries.

Everything that can be known before a job runs is checked here, so bad input is refused with
one line and exit code 2 before anything is recorded: registered names, each model's params
against its mixer's ``Config`` (strict types, ranges, unknown names), a parameter budget that
some width can meet, each task's params against its constructor, the lengths each task can
take, input lengths that fit each model's positional table, and per-task training overrides.
The training protocol's settings are checked the same way: every variable training length
(``train.lengths``) and every evaluation setting (a task's ``eval`` list) must pass the task's
own ``check`` and fit each model's positional table, evaluation settings must not repeat and
(for synthetic tasks, where a build is cheap) must keep the model's input and output, and
``early_stop`` must name one of the task's metrics. Each ``expect`` entry must name models, a
task, lengths and evaluation lengths the suite has (and, for synthetic tasks, a metric of the
task).

A task whose local data files are missing (:class:`~seqbench.worker.data.manifest.DataMissing`)
is not refused: its params and lengths are still checked, and its jobs run and are recorded as
``unavailable`` with the download instructions (a machine without the files still runs the
rest of the sweep). Files that are there but wrong are refused like any bad input.

This is the one place where the driver imports worker code (the mixer and task classes, hence
torch), lazily, when a spec is checked; importing :mod:`seqbench.config` imports no torch.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import ValidationError

from seqbench.catalog import MODELS, TASKS
from seqbench.config.job import canonical_json
from seqbench.config.messages import spec_error
from seqbench.config.params import check_signature
from seqbench.config.spec import (
    BASELINE,
    Suite,
    TaskSpec,
    TrainSpec,
    scale_settings,
    task_lengths,
)
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


# training-run settings a scale suite does not use (`compile` it does)
PROTOCOL_KEYS = {"lengths", "eval_split", "eval_every", "curve_examples", "early_stop",
                 "grad_probe"}


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
        if t.eval:
            raise SpecError(f"tasks[{i}].eval", "...", "only for kind: train (scale jobs train "
                            "nothing to evaluate)", source=source)
        for key in sorted(set(t.train) & PROTOCOL_KEYS):
            raise SpecError(f"tasks[{i}].train.{key}", t.train[key], "not used by kind: scale",
                            source=source)
    scale = scale_settings(suite)
    if scale.max_len < scale.start_len:
        raise SpecError("scale.max_len", scale.max_len, f"must be >= start_len={scale.start_len}",
                        source=source)
    unused = {"measure": (suite.measure, {"warmup_steps", "fwd_min_repeats", "fwd_max_repeats",
                                          "fwd_budget_s"}),
              "train": (suite.train, {"steps", "batch_size", "eval_examples", "eval_batch_size",
                                      *PROTOCOL_KEYS})}
    for block, (spec, keys) in unused.items():
        for key in sorted(spec.model_fields_set & keys):
            raise SpecError(f"{block}.{key}", getattr(spec, key), "not used by kind: scale (set "
                            "scale.batch_policy/batch_size, warmup_steps, min_repeats, budget_s)",
                            source=source)


def check_train(train: TrainSpec, field: str, source: str) -> None:
    """Training settings that must agree with each other."""
    if train.warmup_steps > train.steps:
        raise SpecError(f"{field}.warmup_steps", train.warmup_steps,
                        f"must be at most steps={train.steps}", source=source)
    if train.eval_every > train.steps:
        raise SpecError(f"{field}.eval_every", train.eval_every,
                        f"must be at most steps={train.steps} (0 = no learning curve)",
                        source=source)
    if not train.eval_every:
        for key in ("early_stop", "curve_examples"):
            if getattr(train, key) != TrainSpec.model_fields[key].get_default():
                raise SpecError(f"{field}.{key}", _shown(getattr(train, key)),
                                "needs train.eval_every > 0 (it acts at the curve's "
                                "validation points)", source=source)
    if train.grad_probe is not None:
        late = [s for s in train.grad_probe.at if isinstance(s, int) and s > train.steps]
        if late:
            raise SpecError(f"{field}.grad_probe.at", late[0],
                            f"a step number in 1..steps={train.steps}, or init or end",
                            source=source)


def _shown(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def train_field(task: TaskSpec, i: int, key: str) -> str:
    """Where a training setting of task ``i`` was written: its own override or the suite's."""
    return f"tasks[{i}].train.{key}" if key in task.train else f"train.{key}"


def eval_settings(task: TaskSpec, train_len: int) -> list[tuple[int, dict[str, Any]]]:
    """The (length, param overrides) a job of ``task`` at ``train_len`` evaluates after
    training."""
    return task.eval_settings(train_len)


def _eval_field(i: int, j: int, exc: SpecError) -> str:
    """An eval entry's field named by a task's check (``seq_len`` is written ``seq_lens``)."""
    inner = "seq_lens" if exc.field == "seq_len" else exc.field
    return f"tasks[{i}].eval[{j}].{inner}"


def _task_check(cls: Any, seq_len: int, params: dict[str, Any]) -> None:
    """The task's own ``check``; missing local data is left to the job (an ``unavailable``
    row that says what to download), every other refusal raised."""
    from seqbench.worker.data.manifest import DataMissing

    with contextlib.suppress(DataMissing):
        cls.check(seq_len, params)


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
            _task_check(cls, L, task.params)
        except SpecError as exc:
            raise _at(f"tasks[{i}].{exc.field}", exc, source) from None
    if train.lengths is not None:
        for L in train.lengths.lengths():
            try:
                _task_check(cls, L, task.params)
            except SpecError as exc:
                raise SpecError(train_field(task, i, "lengths"), train.lengths.model_dump(),
                                f"{task.name} cannot train at length {L}: {exc.field} "
                                f"{exc.allowed}", source=source) from None
    for j, entry in enumerate(task.eval):
        params = {**task.params, **entry.params}
        try:
            check_signature(cls.__init__, params, f"tasks[{i}].eval[{j}].params")
        except SpecError as exc:
            raise _at(exc.field, exc, source) from None
        for L in sorted({L for T in task_lengths(suite, task) for L in entry.lengths(T)}):
            try:
                _task_check(cls, L, params)
            except SpecError as exc:
                raise _at(_eval_field(i, j, exc), exc, source) from None
    for T in task_lengths(suite, task):
        settings = eval_settings(task, T)
        seen: set[str] = set()
        for L, overrides in settings:
            key = canonical_json([L, overrides])
            if key in seen:
                raise SpecError(f"tasks[{i}].eval", {"seq_len": L, "params": overrides},
                                f"an evaluation setting repeated (jobs at length {T})",
                                source=source)
            seen.add(key)
    return cls


def _smallest_io(task_cls: Any, task: TaskSpec, suite: Suite) -> Any:
    """The task's model input/output, from a cheap build (synthetic tasks), else None."""
    if TASKS[task.name].kind != "synthetic":
        return None
    return task_cls(min(task_lengths(suite, task)), **task.params).info.io


def _check_protocol_builds(t_i: int, task: TaskSpec, task_cls: Any, suite: Suite, io: Any,
                           source: str) -> None:
    """What needs a built task (synthetic tasks only, where a build is cheap): every training
    length and evaluation setting keeps the model's input and output, and ``early_stop`` names
    one of the task's metrics."""
    if TASKS[task.name].kind != "synthetic" or io is None:
        return
    train = task_train(suite, t_i, source)
    builds: list[tuple[str, Any, int, dict[str, Any]]] = []  # field, shown value, L, params
    if train.lengths is not None:
        builds += [(train_field(task, t_i, "lengths"), L, L, task.params)
                   for L in (train.lengths.min, train.lengths.max)]
    for j, entry in enumerate(task.eval):
        if entry.params:  # lengths alone never change a task's vocabulary or outputs
            L = min(min(entry.lengths(T)) for T in task_lengths(suite, task))
            builds.append((f"tasks[{t_i}].eval[{j}].params", entry.params, L,
                           {**task.params, **entry.params}))
    for field, shown, L, params in builds:
        other = task_cls(L, **params).info.io
        if other != io:
            raise SpecError(field, shown, f"must keep the model's input and output "
                            f"({task.name} there: {other}; trained: {io})", source=source)
    if train.early_stop is not None:
        metrics = [m.name for m in task_cls(min(task_lengths(suite, task)),
                                            **task.params).info.metrics]
        if train.early_stop.metric not in metrics:
            raise SpecError(train_field(task, t_i, "early_stop") + ".metric",
                            train.early_stop.metric,
                            f"one of {task.name}'s metrics: {', '.join(metrics)}", source=source)


def _input_lengths(task_cls: Any, task: TaskSpec, suite: Suite, t_i: int, source: str
                   ) -> list[tuple[str, int, int]]:
    """(field, length, input length) of every length a model reads for this task: its
    lengths, its variable training lengths, its evaluation settings."""
    where = "seq_lens" if suite.kind == "train" else "scale lengths"
    out = [(f"tasks[{t_i}].{where}", L, task_cls.input_len(L, task.params))
           for L in task_lengths(suite, task)]
    train = task_train(suite, t_i, source)
    if train.lengths is not None:
        out += [(train_field(task, t_i, "lengths"), L, task_cls.input_len(L, task.params))
                for L in (train.lengths.min, train.lengths.max)]
    for j, entry in enumerate(task.eval):
        params = {**task.params, **entry.params}
        lengths = {L for T in task_lengths(suite, task) for L in entry.lengths(T)}
        out += [(f"tasks[{t_i}].eval[{j}].seq_lens", L, task_cls.input_len(L, params))
                for L in sorted(lengths)]
    return out


def check_suite(suite: Suite, source: str) -> None:
    """Every check that needs the registries (see the module docstring)."""
    from seqbench.worker.models import IOSpec, mixer_class, split_params

    check_kind(suite, source)
    check_expect(suite, source)
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
        built_io = _smallest_io(task_cls, task, suite)
        _check_protocol_builds(t_i, task, task_cls, suite, built_io, source)
        io = built_io or IOSpec("channels", 1, 1, False)
        for field, L, input_len in _input_lengths(task_cls, task, suite, t_i, source):
            for i, name, cls, cfg, _, _ in models:
                limit = cls.max_seq_len(cfg)
                if limit is not None and input_len > limit:
                    raise SpecError(field, L,
                                    f"{task.name} input length {input_len} exceeds models[{i}] "
                                    f"{name}'s positional table (max_len={limit})",
                                    source=source)
        _check_budgets(models, task, task_cls, suite, io, source)
    if suite.search is not None:
        check_search(suite, source)


def check_search(suite: Suite, source: str) -> None:
    """Everything about a search (:mod:`seqbench.config.search`) that can be known before a
    job runs: a train suite without an ``eval_split`` of its own (the search sets it), paths a
    search may set (reaching a model or task the suite has, not shadowed by a task's own
    override), a ``metric`` every synthetic task has, and every configuration's final suite
    passing every check the spec itself passes (errors name the searched path)."""
    from seqbench.config.search import blame, configurations, derive, targets

    search = suite.search
    assert search is not None
    if suite.kind != "train":
        raise SpecError("search", "...", "only for kind: train (scale jobs train nothing to "
                        "select)", source=source)
    why = "set by the search (trials on eval, the final runs on test); remove it"
    if "eval_split" in suite.train.model_fields_set:
        raise SpecError("train.eval_split", suite.train.eval_split, why, source=source)
    for i, task in enumerate(suite.tasks):
        if "eval_split" in task.train:
            raise SpecError(f"tasks[{i}].train.eval_split", task.train["eval_split"], why,
                            source=source)
    try:
        targets(suite)
    except SpecError as exc:
        raise SpecError(exc.field, exc.value, exc.allowed, source=source) from None
    if search.metric is not None:
        for task in suite.tasks:
            if TASKS[task.name].kind != "synthetic":
                continue  # a dataset is not built to check a name; selection refuses it
            info = TASKS[task.name].load()(min(task_lengths(suite, task)), **task.params).info
            names = [m.name for m in info.metrics]
            if search.metric not in names:
                raise SpecError("search.metric", search.metric, f"one of {task.name}'s "
                                f"metrics: {', '.join(names)}", source=source)
    for config in configurations(search):
        derived = derive(suite, config, "final", source)
        try:
            check_suite(derived, source)
        except SpecError as exc:
            raise blame(search, config, exc, source) from None


def _check_budgets(models: list[Any], task: TaskSpec, task_cls: Any, suite: Suite, io: Any,
                   source: str) -> None:
    """Every budget can be met on this task: some width stays within it (a parameter budget
    once per task; a state or FLOPs budget at every input length, as a KV cache and
    attention's FLOPs grow with it)."""
    from seqbench.worker.models import BUDGET_KEY, fit_budget
    from seqbench.worker.models.base import BackboneConfig

    element = 2 if suite.dtype == "bfloat16" else 4
    lengths = sorted({task_cls.input_len(L, task.params) for L in task_lengths(suite, task)})
    for i, _, cls, cfg, bb_cfg, budget in models:
        if budget is None:
            continue
        for input_len in lengths[:1] if budget.key == BUDGET_KEY else lengths:
            try:
                fit_budget(cls, cfg, BackboneConfig(**{**bb_cfg.__dict__}), io, budget,
                           input_len=input_len, element_bytes=element)
            except SpecError as exc:
                at = "" if budget.key == BUDGET_KEY else f" at input length {input_len}"
                raise SpecError(f"models[{i}].params.{budget.key}", exc.value,
                                f"{exc.allowed} on {task.name}{at}", source=source) from None


def check_expect(suite: Suite, source: str) -> None:
    """Every ``expect`` entry names what the suite runs: models (by name and params), a task,
    a training length, an evaluation length and (synthetic tasks) one of the task's metrics."""
    names = sorted({m.name for m in suite.models})
    for i, e in enumerate(suite.expect):
        where = f"expect[{i}]"
        for side in ("better", "worse"):
            ref = getattr(e, side)
            if ref.name == BASELINE:
                if ref.params:
                    raise SpecError(f"{where}.{side}.params", ref.params,
                                    "the task's baseline takes no params", source=source)
                continue
            matched = [m for m in suite.models if ref.matches(m.name, m.params)]
            if not matched:
                raise SpecError(f"{where}.{side}", ref.text(), "a model of this suite "
                                f"({', '.join(names)}), optionally with some of its params",
                                source=source)
            if len(matched) > 1:
                raise SpecError(f"{where}.{side}", ref.text(), f"matches {len(matched)} models "
                                "of this suite; add params that tell them apart ({name: ..., "
                                "params: {...}})", source=source)
        tasks = [t for t in suite.tasks if e.task in (None, t.name)]
        if not tasks:
            raise SpecError(f"{where}.task", e.task, "a task of this suite "
                            f"({', '.join(sorted({t.name for t in suite.tasks}))})",
                            source=source)
        lengths = sorted({L for t in tasks for L in task_lengths(suite, t)})
        if e.seq_len is not None and e.seq_len not in lengths:
            raise SpecError(f"{where}.seq_len", e.seq_len,
                            f"a training length of the suite ({', '.join(map(str, lengths))})",
                            source=source)
        if e.eval_len is not None:
            evals = sorted({L for t in tasks for T in task_lengths(suite, t)
                            if e.seq_len in (None, T) for L, _ in eval_settings(t, T)})
            if e.eval_len not in evals:
                raise SpecError(f"{where}.eval_len", e.eval_len, "an evaluation length of the "
                                f"task's eval settings ({', '.join(map(str, evals)) or 'none'})",
                                source=source)
        for t in tasks:
            if TASKS[t.name].kind != "synthetic":
                continue
            cls = TASKS[t.name].load()
            metrics = [m.name for m in cls(min(task_lengths(suite, t)), **t.params).info.metrics]
            if task_train(suite, suite.tasks.index(t), source).grad_probe is not None:
                metrics += ["grad_decay_init", "grad_decay_end"]  # results/check.py
            if t.eval:  # the mean beyond the training lengths (results/check.py)
                metrics += [f"ood_{m}" for m in metrics if not m.startswith("grad_")]
            if e.metric not in metrics:
                raise SpecError(f"{where}.metric", e.metric,
                                f"one of {t.name}'s metrics: {', '.join(metrics)}",
                                source=source)
