"""Hyperparameter search in the spec: its configurations, its trial and final jobs, and the
selection between them (driver side, torch-free; checking a search against the registries goes
through :mod:`seqbench.config.resolve`).

A suite with a ``search`` block (:class:`~seqbench.config.spec.SearchSpec`) runs in two sweeps
into one results folder (:mod:`seqbench.execution.search`):

1. **Trials.** Every configuration (the ``grid``'s product, each combined with every ``random``
   sample) is applied to the spec as ``--set`` would apply it (:func:`~seqbench.config.overrides
   .set_path`) and expanded on the trial seeds with ``train.eval_split: eval`` (the validation
   split) and without the tasks' ``eval`` lists; each job is marked ``search: {role: trial,
   values}`` with the searched values that reach it (a ``models.<name>`` path reaches that
   model's jobs only, a ``tasks.<name>`` path that task's only), so configurations that differ
   only where a job cannot see are one job.
2. **Selection** (:func:`select`), recomputed from the stored rows every time: per setting
   (task, its params, length) and per model (``per: model``) or for all models at once (``per:
   suite``), each candidate's score is ``rule`` (mean or median) over its trial seeds of
   ``metric`` (default: the task's primary metric; higher or lower is better as the task says;
   ``per: suite``: the mean of the models' scores). Candidates whose trials all finished ``ok``
   with a finite metric rank first, then by fewer failed trials; ties go to the first
   configuration in the search's order. A setting whose trials all failed chooses nothing.
3. **Final runs.** The chosen configuration runs on the suite's seeds with ``train.eval_split:
   test`` and the tasks' ``eval`` lists, marked ``search: {role: final, values}``.

Selection reads only trial rows, and trial jobs evaluate only the validation split: the test
split is never seen before the choice is made.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from seqbench.config.job import Job, SearchMark, canonical_json
from seqbench.config.messages import spec_error
from seqbench.config.overrides import set_path
from seqbench.config.spec import RandomSearch, SearchSpec, Suite, TrainSpec
from seqbench.errors import SpecError

Role = Literal["trial", "final"]
SEARCH_SETS = ("eval_split",)  # train keys the search sets itself


# --- the searched space ----------------------------------------------------------------------
def _sample(rng: random.Random, low: float, high: float, log: bool, integer: bool) -> Any:
    x = math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)
    if integer:
        return int(min(max(round(x), math.ceil(low)), math.floor(high)))
    return float(f"{x:.4g}")  # four significant digits: readable values, stable hashes


def random_samples(spec: RandomSearch) -> list[dict[str, Any]]:
    """``spec.samples`` points of ``spec.space``, drawn with ``random.Random(spec.seed)`` (the
    same points on every machine and Python), paths in the order written; repeats (integer
    ranges) are dropped."""
    rng = random.Random(spec.seed)
    out: list[dict[str, Any]] = []
    for _ in range(spec.samples):
        point = {p: _sample(rng, r.low, r.high, r.log, r.integer) for p, r in spec.space.items()}
        if point not in out:
            out.append(point)
    return out


def configurations(search: SearchSpec) -> list[dict[str, Any]]:
    """Every configuration of the search, in its order: the grid's product (the first path
    varying slowest), each combined with every random sample."""
    paths = list(search.grid)
    grid = [dict(zip(paths, values, strict=True))
            for values in itertools.product(*(search.grid[p] for p in paths))]
    samples = random_samples(search.random) if search.random is not None else [{}]
    return [{**g, **s} for g in grid for s in samples]


def searched_paths(search: SearchSpec) -> list[str]:
    return [*search.grid, *(search.random.space if search.random is not None else {})]


def _path_field(search: SearchSpec, path: str) -> str:
    return f"search.grid.{path}" if path in search.grid else f"search.random.space.{path}"


@dataclass(frozen=True)
class Target:
    """What a searched path reaches: every job, one model's (``model``) or one task's
    (``task``: its name and params)."""

    path: str
    model: str | None = None
    task: tuple[str, str] | None = None  # (name, canonical params)

    def reaches(self, job: Job) -> bool:
        if self.model is not None and job.model.name != self.model:
            return False
        return self.task is None or self.task == (job.task.name, canonical_json(job.task.params))


def _named(items: list[Any], key: str, kind: str, field_name: str, path: str) -> Any:
    if key.lstrip("-").isdigit() and -len(items) <= int(key) < len(items):
        return items[int(key)]
    for item in items:
        if item.name == key:
            return item
    names = ", ".join(i.name for i in items)
    raise SpecError(field_name, path, f"no {kind} named {key!r} in this suite (it has {names})")


def _train_key(where: str, path: str, key: str) -> None:
    if key in SEARCH_SETS:
        raise SpecError(where, path, "the search sets train.eval_split itself (trials on eval, "
                        "the final runs on test)")
    if key not in TrainSpec.model_fields:
        raise SpecError(where, path, f"{key!r} is not a training setting; allowed: "
                        f"{', '.join(TrainSpec.model_fields)}")


def target(suite: Suite, path: str) -> Target:
    """The jobs ``path`` reaches, refusing paths a search may not set (SpecError)."""
    assert suite.search is not None
    where = _path_field(suite.search, path)
    keys = path.split(".")
    if keys[0] == "models" and len(keys) >= 4 and keys[2] == "params":
        model = _named(list(suite.models), keys[1], "model", where, path)
        return Target(path, model=model.name)
    if keys[0] == "tasks" and len(keys) >= 4 and keys[2] == "train":
        task = _named(list(suite.tasks), keys[1], "task", where, path)
        _train_key(where, path, keys[3])
        return Target(path, task=(task.name, canonical_json(task.params)))
    if keys[0] != "train":
        raise SpecError(where, path, "a dotted path train.<key>, models.<name>.params.<key> "
                        "or tasks.<name>.train.<key>")
    _train_key(where, path, keys[1])
    for i, task in enumerate(suite.tasks):
        if keys[1] in task.train:
            raise SpecError(where, path, f"tasks[{i}].train.{keys[1]} overrides it for "
                            f"{task.name}; search tasks.{task.name}.train.{keys[1]} instead")
    return Target(path)


def targets(suite: Suite) -> dict[str, Target]:
    assert suite.search is not None
    return {p: target(suite, p) for p in searched_paths(suite.search)}


def values_for(job: Job, config: dict[str, Any], reach: dict[str, Target]) -> dict[str, Any]:
    """The searched values of ``config`` that reach ``job`` (its trial mark)."""
    return {p: v for p, v in config.items() if reach[p].reaches(job)}


# --- derived suites ---------------------------------------------------------------------------
def derive(suite: Suite, config: dict[str, Any], role: Role, source: str = "spec") -> Suite:
    """The suite a configuration runs as: the values set, the search block dropped,
    ``train.eval_split`` set by the role (trial: eval on the trial seeds, without the tasks'
    ``eval`` lists; final: test on the suite's seeds). Errors name the searched path; the
    registry checks of a derived suite are :func:`seqbench.config.resolve.check_search`'s."""
    assert suite.search is not None
    data = copy.deepcopy(suite.dump())
    data.pop("search", None)
    data.setdefault("train", {})["eval_split"] = "eval" if role == "trial" else "test"
    if role == "trial":
        data["seeds"] = list(suite.search.seeds or suite.seeds)
        for task in data["tasks"]:
            task.pop("eval", None)
    for path, value in config.items():
        try:
            set_path(data, path, copy.deepcopy(value), _path_field(suite.search, path))
        except SpecError as exc:
            raise SpecError(exc.field, exc.value, exc.allowed, source=source) from None
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        raise blame(suite.search, config, spec_error(exc, None), source) from None


def _normal(field_name: str) -> str:
    """``models[0].params.lr`` -> ``models.0.params.lr``: comparable with searched paths."""
    return field_name.replace("[", ".").replace("]", "")


def blame(search: SearchSpec, config: dict[str, Any], exc: SpecError,
           source: str) -> SpecError:
    """A derived suite's refusal, anchored at the searched path that caused it."""
    where = _normal(exc.field)
    for path, value in config.items():
        keys = path.split(".")
        tail = ".".join(keys[2:]) if keys[0] in ("models", "tasks") else path
        if where == path or where.endswith("." + tail) or where.startswith(path + "."):
            return SpecError(_path_field(search, path), value, f"{exc.field}: {exc.allowed}",
                             source=source)
    return SpecError("search", config, f"this configuration is refused: {exc.field} got "
                     f"{exc.value!r}; {exc.allowed}", source=source)


# --- trial and final jobs ---------------------------------------------------------------------
@dataclass
class TrialPlan:
    """The trial jobs of a search and which configurations each stands for."""

    suite: Suite
    configs: list[dict[str, Any]]
    reach: dict[str, Target]
    jobs: list[Job] = field(default_factory=list)
    stands_for: dict[str, list[int]] = field(default_factory=dict)  # job_id -> config indices

    @property
    def job_ids(self) -> set[str]:
        return {j.job_id for j in self.jobs}


def mark(job: Job, role: Role, values: dict[str, Any]) -> Job:
    return job.model_copy(update={"search": SearchMark(role=role, values=values)})


def setting_of(job: Job) -> tuple[str, str, int]:
    """(task, canonical task params, length): what a search chooses for."""
    return job.task.name, canonical_json(job.task.params), job.task.seq_len


@dataclass
class Candidate:
    """One configuration as a setting saw it: its values, its trials' metric values (per
    model), how many trials failed, and the score under the rule."""

    index: int  # the configuration's position in the search
    values: dict[str, Any]  # the searched values reaching this setting's jobs (per suite:
    # the whole configuration)
    trials: list[dict[str, Any]] = field(default_factory=list)  # job_id, model, seed, status,
    # value
    score: float = math.nan
    n_failed: int = 0
    n_pending: int = 0


@dataclass
class Choice:
    """The selection of one setting (and model, under ``per: model``)."""

    task: str
    task_params: dict[str, Any]
    seq_len: int
    model: str | None  # None: per suite (one configuration for every model)
    metric: str | None
    higher_is_better: bool | None
    candidates: list[Candidate]
    chosen: int | None  # index into candidates, None when no trial finished ok
    reason: str = ""

    @property
    def setting(self) -> tuple[str, str, int]:
        return self.task, canonical_json(self.task_params), self.seq_len

    @property
    def best(self) -> Candidate | None:
        return None if self.chosen is None else self.candidates[self.chosen]

    def dump(self) -> dict[str, Any]:
        return {"task": self.task, "task_params": self.task_params, "seq_len": self.seq_len,
                "model": self.model, "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "chosen": None if self.best is None else self.best.values,
                "chosen_index": None if self.best is None else self.best.index,
                "score": None if self.best is None else _finite_or_none(self.best.score),
                "reason": self.reason,
                "candidates": [{"index": c.index, "values": c.values,
                                "score": _finite_or_none(c.score), "n_failed": c.n_failed,
                                "n_pending": c.n_pending, "trials": c.trials}
                               for c in self.candidates]}


def _finite_or_none(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _metric_value(row: dict[str, Any] | None, metric: str | None) -> float | None:
    if row is None or row.get("status") != "ok" or metric is None:
        return None
    value = row.get(f"metric_{metric}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        return None
    return float(value)


def _rule(values: list[float], rule: str) -> float:
    return statistics.median(values) if rule == "median" else statistics.fmean(values)


def select(plan: TrialPlan, rows: list[dict[str, Any]]) -> list[Choice]:
    """The choice of every setting (and model, under ``per: model``) from the stored rows of
    the plan's trial jobs (see the module docstring): deterministic, so a resumed search
    chooses as the first run would have."""
    search = plan.suite.search
    assert search is not None
    stored = {r.get("job_id"): r for r in rows if r.get("job_id") in plan.job_ids}
    groups: dict[tuple[Any, ...], list[Job]] = {}
    for job in plan.jobs:
        key = (*setting_of(job), job.model.name if search.per == "model" else None)
        groups.setdefault(key, []).append(job)
    return [_choose(plan, key, jobs, stored) for key, jobs in groups.items()]


def _direction(rows: list[dict[str, Any]], metric: str | None) -> bool | None:
    for row in rows:
        flag = row.get(f"higher_is_better_{metric}")
        if isinstance(flag, bool):
            return flag
    return None


def _choose(plan: TrialPlan, key: tuple[Any, ...], jobs: list[Job],
            stored: dict[Any, dict[str, Any]]) -> Choice:
    search = plan.suite.search
    assert search is not None
    task, params, seq_len, model = key
    rows = [stored[j.job_id] for j in jobs if j.job_id in stored]
    primary = next((r.get("primary_metric") for r in rows if r.get("primary_metric")), None)
    metric = search.metric or primary
    higher = _direction(rows, metric)
    if search.metric is not None and rows and not any(f"metric_{metric}" in r for r in rows):
        have = sorted({k[7:] for r in rows for k in r if k.startswith("metric_")})
        raise SpecError("search.metric", metric, f"one of {task}'s metrics: {', '.join(have)}")
    candidates: dict[str, Candidate] = {}
    for index in range(len(plan.configs)):
        members = [j for j in jobs if index in plan.stands_for[j.job_id]]
        if not members:
            continue
        seen = {p for j in members if j.search is not None for p in j.search.values}
        values = {p: v for p, v in plan.configs[index].items() if p in seen}
        signature = canonical_json(sorted(j.job_id for j in members))
        if signature in candidates:
            continue  # the same jobs as an earlier configuration: the same candidate
        candidates[signature] = _score(index, values, members, stored, metric, search.rule)
    ordered = list(candidates.values())
    choice = Choice(task, _loads(params), seq_len, model, metric, higher, ordered, None)
    pending = sum(c.n_pending for c in ordered)
    if pending:
        choice.reason = f"{pending} trial(s) have no row yet"
        return choice
    scored = [i for i, c in enumerate(ordered) if math.isfinite(c.score)]
    if not scored or higher is None:
        choice.reason = "no trial finished ok with a finite metric"
        return choice
    sign = -1.0 if higher else 1.0
    choice.chosen = min(scored, key=lambda i: (ordered[i].n_failed, sign * ordered[i].score, i))
    return choice


def _loads(text: str) -> dict[str, Any]:
    import json

    return dict(json.loads(text))


def _score(index: int, values: dict[str, Any], members: list[Job],
           stored: dict[Any, dict[str, Any]], metric: str | None, rule: str) -> Candidate:
    cand = Candidate(index, dict(values))
    per_model: dict[str, list[float]] = {}
    for job in members:
        row = stored.get(job.job_id)
        value = _metric_value(row, metric)
        status = None if row is None else row.get("status")
        cand.trials.append({"job_id": job.job_id, "model": job.model.name, "seed": job.seed,
                            "status": status, "value": value})
        if row is None or status == "interrupted":
            cand.n_pending += 1
        elif value is None:
            cand.n_failed += 1
        else:
            per_model.setdefault(job.model.name, []).append(value)
    models = {j.model.name for j in members}
    if per_model and set(per_model) == models:  # every model has a score to average
        cand.score = statistics.fmean(_rule(v, rule) for v in per_model.values())
    return cand


NOUNS = {"train.lr": "learning rates", "train.weight_decay": "weight decays"}


def values_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{p}={v}" for p, v in values.items())


def describe_choice(choice: Choice, n_final_seeds: int) -> str:
    """One line: ``best of 4 learning rates on validation (train.lr=0.003), 3 seeds at the
    chosen one``."""
    n = len(choice.candidates)
    paths = list(dict.fromkeys(p for c in choice.candidates for p in c.values))
    noun = (NOUNS.get(paths[0], f"values of {paths[0]}") if len(paths) == 1
            else "configurations")
    if choice.best is None:
        return f"{n} {noun} tried; none chosen ({choice.reason})"
    return (f"best of {n} {noun} on validation ({values_text(choice.best.values)}), "
            f"{n_final_seeds} seed{'s' if n_final_seeds != 1 else ''} at the chosen one")
