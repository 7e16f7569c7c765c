"""Specs: the declarative YAML files in ``tasks/``, as validated pydantic models.

A spec is a sweep: tasks x lengths x models x seeds. Every value a user writes is checked
strictly: unknown keys, wrong types (no bool for a number, no string for a number, no float
for an integer), non-finite numbers, out-of-range values, duplicates and empty sweeps are
refused with one line naming the field, the value and what is allowed
(:class:`~seqbench.errors.SpecError`, exit code 2), before any job runs.

``kind: scale`` suites sweep lengths instead of listing them: for each model the length doubles
from ``scale.start_len`` to ``scale.max_len`` (``scale`` jobs: training step and forward pass)
and streaming inference is measured at ``scale.stream_positions`` (``stream`` jobs); the
frontier policy (:mod:`seqbench.execution.frontier`) stops a model's sweep at its memory or time
frontier.

The training protocol (``kind: train``; docs/architecture.md, "Protocol"): a task's ``eval``
list evaluates the trained model again at other lengths (a list, or ``{start, stop, step}``
with both ends included) and/or task-param overrides; ``train.lengths`` draws each batch's
length from a range; ``train.eval_every``/``curve_examples``/``early_stop`` record a learning
curve on the validation split and may stop early; ``train.eval_split`` chooses the split of the
final metrics (``eval``, the validation split, or ``test``); ``train.grad_probe`` measures
gradient flow over time; ``train.compile`` runs the model under ``torch.compile``. What can only
be checked against the registries (a task's ``check`` at every such length, positional tables,
metric names) is checked in :mod:`seqbench.config.resolve`.

Fields added after the first spec format are declared with :func:`added`: they are left out of
every dump while they hold their default, so adding a setting never changes the config hash of
a job that does not use it (existing results keep resuming and comparing).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

SPEC_FORMAT_VERSION = 1  # bump when the meaning of a spec field changes

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
OMIT_DEFAULT = "omit_default"


def added(default: Any, **kwargs: Any) -> Any:
    """A field added after the first spec format: dumped only when it differs from its
    default, so config hashes of jobs that do not use it stay the same."""
    return Field(default, json_schema_extra={OMIT_DEFAULT: True}, **kwargs)


class Strict(BaseModel):
    """Frozen, unknown keys refused, strict types, finite numbers only."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, field in type(self).model_fields.items():
                extra = field.json_schema_extra
                if (isinstance(extra, dict) and extra.get(OMIT_DEFAULT)
                        and getattr(self, name) == field.get_default(call_default_factory=True)):
                    data.pop(name, None)
            data = self._post_dump(data)
        return data

    def _post_dump(self, data: dict[str, Any]) -> dict[str, Any]:
        """A subclass's last word on its dump (the one serializer calls it)."""
        return data


# a YAML list where the model holds a tuple (strict mode alone takes only a tuple instance)
Betas = Annotated[tuple[float, float], Field(strict=False)]
MAX_LENGTHS = 10_000  # lengths one range may name (train.lengths, an eval's seq_lens)


class LengthRange(Strict):
    """Every length from ``start`` to ``stop``, **both included**, in steps of ``step`` (the
    Chomsky protocol's ``{start: 41, stop: 500}`` is 460 lengths)."""

    start: PositiveInt
    stop: PositiveInt
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> LengthRange:
        if self.stop < self.start:
            raise ValueError(f"stop must be >= start={self.start}")
        if len(self.lengths()) > MAX_LENGTHS:
            raise ValueError(f"names more than {MAX_LENGTHS} lengths")
        return self

    def lengths(self) -> list[int]:
        return list(range(self.start, self.stop + 1, self.step))


class TrainLengths(Strict):
    """Variable training lengths: each batch's length uniform on ``min..max`` (both included)."""

    min: PositiveInt
    max: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> TrainLengths:
        if self.max < self.min:
            raise ValueError(f"max must be >= min={self.min}")
        if self.max - self.min + 1 > MAX_LENGTHS:
            raise ValueError(f"spans more than {MAX_LENGTHS} lengths")
        return self

    def lengths(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class EarlyStop(Strict):
    """Stop training once the validation ``metric`` reaches ``value`` (>= when the task's metric
    is higher-is-better, else <=), checked at every ``eval_every`` curve point."""

    metric: str = Field(min_length=1)
    value: float


ProbeAt = PositiveInt | Literal["init", "end"]
PROBE_AT: tuple[ProbeAt, ...] = ("init", "end")


class GradProbeSpec(Strict):
    """When and how the gradient-flow probe runs (:mod:`seqbench.worker.gradients`)."""

    at: list[ProbeAt] = Field(default_factory=lambda: list(PROBE_AT), min_length=1)
    examples: PositiveInt = 64  # the fixed probe batch, from its own seeded stream
    fraction: float = Field(0.01, gt=0, lt=1)  # memory horizon: norm below fraction x norm(0)
    positions: PositiveInt = 16  # scored positions probed at most (evenly spaced), per point

    @field_validator("at")
    @classmethod
    def _unique_points(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a point")
        return v


class EdgeSpec(Strict):
    """The edge track after training (:mod:`seqbench.worker.edge`): the trained model streamed
    one token at a time at batch 1 on the CPU, float32 and with dynamic int8 quantization."""

    tokens: PositiveInt = 1000  # timed streaming steps per variant, after the warm-up
    warmup: NonNegativeInt = 100  # untimed streaming steps first
    threads: PositiveInt = 1  # torch threads while measuring
    int8: bool = True  # also the model under torch.ao dynamic int8 quantization
    eval_examples: PositiveInt | None = None  # metric of each variant; None: train.eval_examples


class TrainSpec(Strict):
    steps: PositiveInt = 300
    batch_size: PositiveInt = 64
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    betas: Betas = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    clip: float = Field(1.0, ge=0)  # max global grad norm, applied after backward(); 0 = off
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: warm-up then cosine to 0
    warmup_steps: NonNegativeInt = 0
    eval_examples: PositiveInt = 1024  # held-out examples, drawn from seeds disjoint from training
    eval_batch_size: PositiveInt = 256
    autocast: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU
    # --- the training protocol (added settings: absent from the dump at their defaults)
    lengths: TrainLengths | None = added(None)  # None: every batch at the job's length
    eval_split: Literal["eval", "test"] = added("eval")  # split of the final metrics
    eval_every: NonNegativeInt = added(0)  # learning curve on the validation split; 0 = off
    curve_examples: PositiveInt = added(256)  # validation examples per curve point
    early_stop: EarlyStop | None = added(None)  # needs eval_every
    grad_probe: GradProbeSpec | None = added(None)
    compile: bool = added(False)  # torch.compile the model (every architecture alike)
    edge: EdgeSpec | None = added(None)  # the edge track after training (worker/edge.py)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


class MeasureSpec(Strict):
    warmup_steps: PositiveInt = 3  # training steps left out of the timing (the first kept apart)
    fwd_min_repeats: PositiveInt = 5  # forward-only passes: adaptive repeats
    fwd_max_repeats: PositiveInt = 100
    fwd_budget_s: float = Field(2.0, gt=0)
    iqr_tolerance: float = Field(0.1, gt=0)  # stop repeating once IQR/median is below this
    threads: PositiveInt | None = None  # torch.set_num_threads in the worker; None: torch default
    cudnn_benchmark: bool = False


StopReason = Literal["oom", "timeout", "slow", "error", "diverged"]
DEFAULT_STOP: tuple[StopReason, ...] = ("oom", "timeout", "slow")


class ScaleSpec(Strict):
    """The length sweep of a ``kind: scale`` suite."""

    start_len: PositiveInt = 256
    max_len: PositiveInt = 131072  # lengths start_len x 2^k up to this, unless the frontier ends it
    batch_policy: Literal["fixed-batch", "fixed-tokens"] = "fixed-tokens"
    batch_size: PositiveInt = 8  # fixed-batch: sequences per batch at every length
    tokens_per_batch: PositiveInt = 16384  # fixed-tokens: batch = max(1, this // input length)
    # CPU workers' data segment limit (RLIMIT_DATA, imports included: about 0.25 GiB of it);
    # allocations past it fail and the row says oom (0 = no cap)
    mem_cap_gib: float = Field(0.0, ge=0)
    forward: bool = True  # also time forward-only passes (inference mode)
    warmup_steps: PositiveInt = 1  # warm-up calls at least, the first kept apart
    max_warmup_steps: PositiveInt = 5  # ... and more until consecutive calls agree within 10%
    min_repeats: PositiveInt = 3  # timed calls per mode (training step, forward, stream step)
    max_repeats: PositiveInt = 50
    budget_s: float = Field(2.0, gt=0)  # timed seconds per mode, after min_repeats
    max_step_s: float = Field(30.0, gt=0)  # a slower median training step is the time frontier
    max_prefill_s: float = Field(120.0, gt=0)  # the same for a stream's prompt (prefill)
    stop_on: list[StopReason] = Field(default_factory=lambda: list(DEFAULT_STOP))
    after_stop: Literal["skip", "run"] = "skip"  # longer lengths: `skipped` rows, or run anyway
    stream_positions: list[PositiveInt] = Field(default_factory=lambda: [1024, 4096, 16384])
    stream_batch: PositiveInt = 1

    def lengths(self) -> list[int]:
        doublings = (self.max_len // self.start_len).bit_length()
        return [self.start_len << k for k in range(doublings)]

    @field_validator("stream_positions")
    @classmethod
    def _unique_positions(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a position")
        return sorted(v)


class ModelSpec(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)  # checked against the mixer's Config


def _lengths_kind(value: Any) -> str:
    return "range" if isinstance(value, (dict, LengthRange)) else "list"


# a list of lengths, or a range written as a mapping (errors name the form that was meant)
SeqLens = Annotated[
    Annotated[list[PositiveInt], Tag("list")] | Annotated[LengthRange, Tag("range")],
    Discriminator(_lengths_kind)]


class EvalSpec(Strict):
    """One entry of a task's ``eval`` list: evaluate the trained model again at these lengths
    and/or with these task-param overrides (e.g. ``num_kv_pairs``)."""

    seq_lens: SeqLens | None = None  # None: the job's own length
    params: dict[str, Any] = Field(default_factory=dict)  # overrides of the task's params

    @field_validator("seq_lens")
    @classmethod
    def _lengths(cls, v: list[int] | LengthRange | None) -> list[int] | LengthRange | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("must name at least one length")
            if len(set(v)) != len(v):
                raise ValueError("must not repeat a length")
            if len(v) > MAX_LENGTHS:
                raise ValueError(f"must name at most {MAX_LENGTHS} lengths")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> EvalSpec:
        if self.seq_lens is None and not self.params:
            raise ValueError("an eval entry needs seq_lens, params or both")
        return self

    def lengths(self, train_len: int) -> list[int]:
        if self.seq_lens is None:
            return [train_len]
        if isinstance(self.seq_lens, LengthRange):
            return self.seq_lens.lengths()
        return list(self.seq_lens)


class TaskSpec(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)  # checked against the task's signature
    seq_lens: list[PositiveInt] | None = Field(None, min_length=1)  # kind scale: from `scale`
    train: dict[str, Any] = Field(default_factory=dict)  # per-task override of the suite's train
    # after training: the same model evaluated at other lengths / params (kind train only)
    eval: list[EvalSpec] = added([])

    def eval_settings(self, train_len: int) -> list[tuple[int, dict[str, Any]]]:
        """Every (length, param overrides) this task's jobs at ``train_len`` evaluate after
        training, in the order of the ``eval`` list."""
        return [(L, dict(e.params)) for e in self.eval for L in e.lengths(train_len)]

    @field_validator("seq_lens")
    @classmethod
    def _unique_lengths(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("must not repeat a length")
        return v


class ModelRef(Strict):
    """A model of the suite, by name and (optionally) some of its params: ``{name: lstm,
    params: {backbone: bare}}`` picks the suite's LSTM entries whose params include these."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)

    def text(self) -> str:
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name} ({inner})"

    def matches(self, name: str, params: dict[str, Any]) -> bool:
        return name == self.name and all(params.get(k) == v for k, v in self.params.items())


BASELINE = "baseline"  # ``better``/``worse``: the task's trivial baseline of ``metric``


def _model_ref(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class Expect(Strict):
    """An ordering the suite is expected to show (a reproduction's claim, as data), checked by
    ``seqbench check`` (:mod:`seqbench.results.check`): at each matching (task, length, eval
    length) the ``better`` model beats ``worse`` on ``metric`` by at least ``margin`` (in the
    metric's own direction and units), and Welch's test over the seeds separates them."""

    better: ModelRef  # a model name, {name, params}, or "baseline" (the task's trivial baseline)
    worse: ModelRef
    metric: str = Field(min_length=1)  # e.g. accuracy, mse (the row's metric_<name>)
    task: str | None = None  # None: every task of the suite that has the metric
    seq_len: PositiveInt | None = None  # training length; None: every length
    eval_len: PositiveInt | None = None  # an evaluation setting's length; None: the main one
    params: dict[str, Any] = Field(default_factory=dict)  # task params in effect, matched
    margin: float = Field(0.0, ge=0)
    why: str = ""  # the paper's claim, shown beside the verdict

    @field_validator("better", "worse", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> Any:
        return _model_ref(v)

    @model_validator(mode="after")
    def _two_sides(self) -> Expect:
        if self.better == self.worse:
            raise ValueError("better and worse must differ")
        return self

    def text(self) -> str:
        where = ", ".join(x for x in (
            self.task or "", f"T={self.seq_len}" if self.seq_len else "",
            f"eval at {self.eval_len}" if self.eval_len else "",
            *(f"{k}={v}" for k, v in sorted(self.params.items()))) if x)
        margin = f" by >= {self.margin:g}" if self.margin else ""
        return (f"{self.better.text()} better than {self.worse.text()} on {self.metric}{margin}"
                + (f" ({where})" if where else ""))


# --- hyperparameter search (seqbench.config.search, seqbench.execution.search) ----------------
MAX_SEARCH_CONFIGS = 1000  # configurations one search may name (grid x random samples)
SEARCH_PATH = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"


class SearchRange(Strict):
    """A range that random search samples from: uniform on ``[low, high]``, log-uniform with
    ``log: true`` (both ends > 0), rounded to whole numbers with ``integer: true``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.high <= self.low:
            raise ValueError(f"high must be > low={self.low}")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self


class RandomSearch(Strict):
    """``samples`` points drawn from ``space`` (dotted path -> range) with a seeded generator."""

    samples: PositiveInt
    seed: NonNegativeInt = 0
    space: dict[Annotated[str, Field(pattern=SEARCH_PATH)], SearchRange] = Field(min_length=1)


class SearchSpec(Strict):
    """A search over training and model settings (``docs/architecture.md``, "Search").

    Every configuration (the ``grid``'s product, each combined with every ``random`` sample) is
    trained on the trial ``seeds`` with ``train.eval_split: eval`` (validation) and scored by
    ``metric`` (default: the task's primary metric; direction from the task) under ``rule`` over
    the trial seeds; the best configuration per model (``per: model``) or one for every model
    (``per: suite``), separately for each task and length, is then run on the suite's seeds with
    ``train.eval_split: test``. Paths are dotted as ``--set`` writes them: ``train.<key>``,
    ``models.<name>.params.<key>``, ``tasks.<name>.train.<key>``."""

    grid: dict[Annotated[str, Field(pattern=SEARCH_PATH)],
               Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    random: RandomSearch | None = None
    per: Literal["model", "suite"] = "model"
    seeds: list[NonNegativeInt] | None = Field(None, min_length=1)  # None: the suite's seeds
    metric: str | None = Field(None, min_length=1)  # None: each task's primary metric
    rule: Literal["mean", "median"] = "mean"  # over the trial seeds of a configuration

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            shown = [json_value(x) for x in values]
            if any(not _finite(x) for x in values):
                raise ValueError(f"{path}: every value must be finite (got {shown})")
            if len({repr(x) for x in shown}) != len(shown):
                raise ValueError(f"{path}: must not repeat a value (got {shown})")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("must not repeat a seed")
        return v

    @model_validator(mode="after")
    def _something_to_search(self) -> SearchSpec:
        if not self.grid and self.random is None:
            raise ValueError("a search needs a grid, a random block or both")
        both = sorted(set(self.grid) & set(self.random.space if self.random else {}))
        if both:
            raise ValueError(f"{both[0]} is in both grid and random.space")
        n = 1
        for values in self.grid.values():
            n *= len(values)
        n *= self.random.samples if self.random else 1
        if n > MAX_SEARCH_CONFIGS:
            raise ValueError(f"names {n} configurations; at most {MAX_SEARCH_CONFIGS}")
        return self


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a (nested) YAML value."""
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, dict):
        return all(_finite(x) for x in value.values())
    if isinstance(value, list):
        return all(_finite(x) for x in value)
    return True


def json_value(value: Any) -> Any:
    """A YAML value as it appears in a message (pydantic models as their dumps)."""
    return value.model_dump() if hasattr(value, "model_dump") else value


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", min_length=1, max_length=64)
    version: PositiveInt = 1
    description: str = ""
    kind: Literal["train", "scale"] = "train"
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"
    models: list[ModelSpec] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    train: TrainSpec = Field(default_factory=TrainSpec)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    scale: ScaleSpec | None = None  # kind scale only
    timeout_s: float = Field(1800.0, gt=0)  # per job, enforced by the executor
    # jobs at once on the local executor when --workers is not given. Keep 1 for timings that
    # cite; the quick suite uses 2 one-thread workers on 2 cores (recorded in its spec)
    workers: PositiveInt = 1
    # orderings the results should show (reproductions); checked by ``seqbench check``
    expect: list[Expect] = added([])
    search: SearchSpec | None = added(None)  # hyperparameter search (seqbench.config.search)

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a seed")
        if any(s >= 2**63 for s in v):
            raise ValueError("each seed must be below 2^63")
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        # one name may appear with different params (e.g. backbone shared and bare); the same
        # name with the same params twice would run every job twice
        seen: set[str] = set()
        for m in v:
            key = m.model_dump_json()
            if key in seen:
                raise ValueError(f"must not repeat a model with the same params ({m.name})")
            seen.add(key)
        return v

    def dump(self) -> dict[str, Any]:
        """The validated spec as JSON-ready data (what ``suite.json`` and ``spec_hash`` hold)."""
        return self.model_dump(mode="json")


def scale_settings(suite: Suite) -> ScaleSpec:
    return suite.scale or ScaleSpec()


def task_lengths(suite: Suite, task: TaskSpec) -> list[int]:
    """Every length a task runs at: its seq_lens, or a scale sweep's lengths and positions."""
    if suite.kind == "train":
        return list(task.seq_lens or [])
    scale = scale_settings(suite)
    return sorted(set(scale.lengths()) | set(scale.stream_positions))
