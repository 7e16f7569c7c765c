"""Expanding a validated suite into its jobs: the one function that builds :class:`Job` s.

``train`` suites: tasks x lengths x models x seeds, seeds innermost. ``scale`` suites: ``scale``
jobs (tasks x doubling lengths x models x seeds, lengths ascending within a model, which the
frontier policy relies on), then ``stream`` jobs (tasks x context positions x models x seeds).
A training job carries its task's evaluation settings (the ``eval`` list) resolved at its own
length.
"""

from __future__ import annotations

from seqbench.catalog import TASKS
from seqbench.config.job import EvalSetting, Job, JobKind, ModelRef, ScaleMeasure, TaskRef
from seqbench.config.resolve import eval_settings, task_train
from seqbench.config.search import (
    Choice,
    TrialPlan,
    configurations,
    derive,
    mark,
    setting_of,
    targets,
    values_for,
)
from seqbench.config.spec import SPEC_FORMAT_VERSION, ScaleSpec, Suite, scale_settings

GIB = 2**30


def resolve_device(device: str) -> str:
    """``auto`` is cuda when torch sees a GPU, else cpu (decided on the driver)."""
    if device != "auto":
        return device
    import torch  # only for "auto": a spec naming its device never imports torch here

    return "cuda" if torch.cuda.is_available() else "cpu"


def _scale_measures(scale: ScaleSpec) -> dict[JobKind, ScaleMeasure]:
    timing = ScaleMeasure(batch_policy="fixed-batch", warmup_steps=scale.warmup_steps,
                          max_warmup_steps=scale.max_warmup_steps,
                          min_repeats=scale.min_repeats, max_repeats=scale.max_repeats,
                          budget_s=scale.budget_s)
    # the batch policy, not the batch: under fixed-tokens the batch varies with the length, and
    # a job parameter varying along the sweep would split one curve into many configurations
    if scale.batch_policy == "fixed-tokens":
        policy = {"batch_policy": "fixed-tokens", "tokens_per_batch": scale.tokens_per_batch}
    else:
        policy = {"batch_policy": "fixed-batch", "batch_size": scale.batch_size}
    return {"scale": timing.model_copy(update={**policy, "forward": scale.forward}),
            "stream": timing.model_copy(update={"batch_size": scale.stream_batch})}


def expand(suite: Suite, source: str = "spec") -> list[Job]:
    """The suite's jobs in sweep order (see the module docstring)."""
    device = resolve_device(suite.device)
    # (kind, task index, lengths, its scale block, its memory cap)
    plan: list[tuple[JobKind, int, list[int], ScaleMeasure | None, int | None]]
    if suite.kind == "train":
        plan = [("train", i, t.seq_lens or [], None, None) for i, t in enumerate(suite.tasks)]
    else:
        scale = scale_settings(suite)
        cap = int(scale.mem_cap_gib * GIB) if device == "cpu" else 0
        how = _scale_measures(scale)
        sweeps: list[tuple[JobKind, list[int]]] = [("scale", scale.lengths()),
                                                   ("stream", scale.stream_positions)]
        plan = [(kind, i, lengths, how[kind], cap) for kind, lengths in sweeps
                for i in range(len(suite.tasks))]
    jobs = []
    for kind, i, lengths, how_to_measure, mem_cap in plan:
        t = suite.tasks[i]
        train = task_train(suite, i, source)
        version = TASKS[t.name].load().version
        for L in lengths:
            evals = tuple(EvalSetting(seq_len=n, params=p) for n, p in eval_settings(t, L)
                          ) if kind == "train" else ()
            for m in suite.models:
                for seed in suite.seeds:
                    jobs.append(Job(
                        spec_format=SPEC_FORMAT_VERSION, suite_version=suite.version, kind=kind,
                        task=TaskRef(name=t.name, version=version, seq_len=L, params=t.params),
                        model=ModelRef(name=m.name, params=m.params), train=train,
                        measure=suite.measure, scale=how_to_measure, mem_cap_bytes=mem_cap,
                        device=device, dtype=suite.dtype, seed=seed, timeout_s=suite.timeout_s,
                        evals=evals))
    return jobs


def expand_trials(suite: Suite, source: str = "spec") -> TrialPlan:
    """Every trial job of a search (:mod:`seqbench.config.search`), each job once however
    many configurations it stands for, in the order of the configurations, then of the
    sweep."""
    assert suite.search is not None
    plan = TrialPlan(suite, configurations(suite.search), targets(suite))
    by_id: dict[str, Job] = {}
    for index, config in enumerate(plan.configs):
        for job in expand(derive(suite, config, "trial", source), source):
            job = mark(job, "trial", values_for(job, config, plan.reach))
            if job.job_id not in by_id:
                by_id[job.job_id] = job
                plan.jobs.append(job)
            plan.stands_for.setdefault(job.job_id, []).append(index)
    return plan


def expand_final(plan: TrialPlan, choices: list[Choice], source: str = "spec") -> list[Job]:
    """The final jobs of a search's choices: each chosen configuration on the suite's seeds,
    reported on the test split, every job marked with the searched values that reach it; in
    the suite's sweep order."""
    wanted: dict[int, list[Choice]] = {}
    for choice in choices:
        if choice.best is not None:
            wanted.setdefault(choice.best.index, []).append(choice)
    found: dict[str, Job] = {}
    for index in sorted(wanted):
        config = plan.configs[index]
        for job in expand(derive(plan.suite, config, "final", source), source):
            if any(c.model in (None, job.model.name) and c.setting == setting_of(job)
                   for c in wanted[index]):
                job = mark(job, "final", values_for(job, config, plan.reach))
                found.setdefault(job.job_id, job)
    sweep = expand(derive(plan.suite, {}, "final", source), source)
    order = {(j.model.name, *setting_of(j), j.seed): i for i, j in enumerate(sweep)}
    return sorted(found.values(),
                  key=lambda j: order.get((j.model.name, *setting_of(j), j.seed), len(order)))


def spec_hash(suite: Suite) -> str:
    from seqbench.config.job import sha256

    return sha256(suite.dump())
