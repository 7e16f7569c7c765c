"""The job: one fully resolved, validated run of one model on one task at one length and seed.

A :class:`Job` is a frozen pydantic model built only by :mod:`seqbench.config.expand`. Its
canonical JSON is what the worker receives and what :attr:`Job.config_hash` hashes (without the
seed and the timeout, which do not change what is measured): ``sha256`` of the JSON with sorted
keys and no spaces. The spec format and the task's version are part of it, so a changed task
definition never mixes with old rows. Nothing outside this module reads a job as a dict.

Three kinds share the type: ``train`` (train, evaluate, time), ``scale`` (time the training
step and the forward pass at one length) and ``stream`` (streaming latency at one context
position); the last two carry a :class:`ScaleMeasure` block and a CPU memory cap. A scale job's
``train`` block holds the whole :class:`~seqbench.config.spec.TrainSpec` for the worker, but
its canonical JSON keeps only the keys the kind uses, as the first spec format did. A training
job carries ``evals``, its task's evaluation settings resolved at its length (an added field:
absent while empty, so jobs without evaluation settings hash as before).
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any, Literal

from pydantic import Field

from seqbench.config.spec import MeasureSpec, Strict, TrainSpec, added

JobKind = Literal["train", "scale", "stream"]
# what a scale job's training step uses from the train block (the rest is about training runs);
# `compile` is an added setting: it is in the dump only when true
SCALE_TRAIN_KEYS = ("optimizer", "lr", "weight_decay", "betas", "momentum", "clip", "autocast",
                    "compile")
STREAM_TRAIN_KEYS = ("autocast",)
NOT_HASHED = ("seed", "timeout_s")  # change nothing that is measured


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


class TaskRef(Strict):
    name: str
    version: int
    seq_len: int  # the task's length parameter (copy memory: the delay T)
    params: dict[str, Any] = Field(default_factory=dict)


class EvalSetting(Strict):
    """One evaluation of the trained model after the main one: the task built at ``seq_len``
    with ``params`` (overrides of the job's task params) on ``eval_examples`` examples of the
    job's ``eval_split``."""

    seq_len: int
    params: dict[str, Any] = Field(default_factory=dict)


class ModelRef(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)  # flat: backbone + mixer Config keys


class ScaleMeasure(Strict):
    """How a scale or stream job times its modes and sizes its batch."""

    batch_policy: Literal["fixed-batch", "fixed-tokens"]
    batch_size: int | None = None  # fixed-batch
    tokens_per_batch: int | None = None  # fixed-tokens: batch = max(1, this // input length)
    forward: bool | None = None  # scale jobs: also time forward-only passes
    warmup_steps: int
    max_warmup_steps: int
    min_repeats: int
    max_repeats: int
    budget_s: float

    def _post_dump(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None}

    def batch(self, input_len: int) -> int:
        """Sequences per batch at this input length under the batch policy."""
        if self.batch_policy == "fixed-tokens":
            return max(1, (self.tokens_per_batch or 1) // input_len)
        return self.batch_size or 1


class SearchMark(Strict):
    """What a job is to a hyperparameter search (:mod:`seqbench.config.search`): a ``trial``
    (scored on the validation split to choose a configuration) or the ``final`` run of the
    chosen one (reported on the test split), with the searched values it runs at (dotted path
    -> value, as ``--set`` writes them)."""

    role: Literal["trial", "final"]
    values: dict[str, Any] = Field(default_factory=dict)


class Job(Strict):
    spec_format: int
    suite_version: int
    kind: JobKind
    task: TaskRef
    model: ModelRef
    train: TrainSpec
    measure: MeasureSpec
    scale: ScaleMeasure | None = None  # scale and stream jobs
    mem_cap_bytes: int | None = None  # scale and stream jobs: CPU worker cap (0: none)
    device: str
    dtype: Literal["float32", "bfloat16"]
    seed: int
    timeout_s: float
    # training jobs: evaluation settings after training (added: absent while empty)
    evals: tuple[EvalSetting, ...] = added(())
    search: SearchMark | None = added(None)  # trials and final runs of a search (added)

    def _post_dump(self, data: dict[str, Any]) -> dict[str, Any]:
        keep = {"scale": SCALE_TRAIN_KEYS, "stream": STREAM_TRAIN_KEYS}.get(self.kind)
        if keep is not None:
            data["train"] = {k: data["train"][k] for k in keep if k in data["train"]}
        for key in ("scale", "mem_cap_bytes"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    def dump(self) -> dict[str, Any]:
        """The job as JSON-ready data: what the worker receives and a row's ``job`` field."""
        return self.model_dump(mode="json")

    @cached_property
    def config_hash(self) -> str:
        """sha256 of the canonical JSON without the seed and the timeout."""
        return sha256({k: v for k, v in self.dump().items() if k not in NOT_HASHED})

    @property
    def job_id(self) -> str:
        """``config_hash[:16]-s<seed>``: the job's file name in a results directory."""
        return f"{self.config_hash[:16]}-s{self.seed}"

    @property
    def timeout(self) -> float | None:
        return self.timeout_s or None

    @property
    def cap_bytes(self) -> int:
        return int(self.mem_cap_bytes or 0)

    def with_timeout(self, timeout_s: float) -> Job:
        return self.model_copy(update={"timeout_s": float(timeout_s)})

    @property
    def curve_key(self) -> str:
        return curve_key_of(self.dump())

    def describe(self) -> str:
        """``task L=.. model seed=..`` (with the kind when it is not a training job)."""
        kind = "" if self.kind == "train" else f"{self.kind} "
        return f"{kind}{self.task.name} L={self.task.seq_len} {self.model.name} seed={self.seed}"

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Job:
        return cls.model_validate(data, strict=False)  # JSON lists for tuples


def curve_key_of(job_data: dict[str, Any]) -> str:
    """One model's length sweep: everything about a job except its length (and timeout)."""
    task = {k: v for k, v in job_data["task"].items() if k != "seq_len"}
    return canonical_json({**{k: v for k, v in job_data.items() if k not in ("task", "timeout_s")},
                           "task": task})


def config_hash_of(job_data: dict[str, Any]) -> str:
    """The config hash of a job as stored in a row (``row["job"]``), by the same rule."""
    return sha256({k: v for k, v in job_data.items() if k not in NOT_HASHED})
