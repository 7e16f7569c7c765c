"""Specs: the declarative YAML files in ``tasks/``, validated, and expanded into jobs.

A spec is a sweep: tasks x lengths x models x seeds. Validation refuses unknown keys, wrong
types, out-of-range values, duplicates and empty sweeps with one line naming the field, the value
and what is allowed (:class:`~seqbench.errors.SpecError`, exit code 2), before any job runs.

``kind: scale`` suites sweep lengths instead of listing them: for each model the length doubles
from ``scale.start_len`` to ``scale.max_len`` (``scale`` jobs: training step and forward pass)
and streaming inference is measured at ``scale.stream_positions`` (``stream`` jobs); the driver
in :mod:`seqbench.worker.scale` stops a model's sweep at its memory or time frontier.

A *job* is a fully resolved, JSON-serialisable dict. Its ``config_hash`` is the sha256 of its
canonical JSON without the seed; the spec format version and the task's version are part of it,
so a changed task definition never mixes with old rows.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from seqbench.errors import SpecError

SPEC_FORMAT_VERSION = 1  # bump when the meaning of a spec field changes
DEFAULT_SPEC = "quick"

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TrainSpec(_Strict):
    steps: PositiveInt = 300
    batch_size: PositiveInt = 64
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    clip: float = Field(1.0, ge=0)  # max global grad norm, applied after backward(); 0 = off
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: warm-up then cosine to 0
    warmup_steps: NonNegativeInt = 0
    eval_examples: PositiveInt = 1024  # held-out examples, drawn from seeds disjoint from training
    eval_batch_size: PositiveInt = 256
    autocast: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU


class MeasureSpec(_Strict):
    warmup_steps: PositiveInt = 3  # training steps left out of the timing (the first kept apart)
    fwd_min_repeats: PositiveInt = 5  # forward-only passes: adaptive repeats
    fwd_max_repeats: PositiveInt = 100
    fwd_budget_s: float = Field(2.0, gt=0)
    iqr_tolerance: float = Field(0.1, gt=0)  # stop repeating once IQR/median is below this
    threads: PositiveInt | None = None  # torch.set_num_threads in the worker; None: torch default
    cudnn_benchmark: bool = False


StopReason = Literal["oom", "timeout", "slow", "error", "diverged"]


class ScaleSpec(_Strict):
    """The length sweep of a ``kind: scale`` suite (see :mod:`seqbench.worker.scale`)."""

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
    stop_on: list[StopReason] = Field(default_factory=lambda: ["oom", "timeout", "slow"])
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


class ModelSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    seq_lens: list[PositiveInt] | None = Field(None, min_length=1)  # kind scale: from `scale`
    train: dict[str, Any] = Field(default_factory=dict)  # per-task override of the suite's train

    @field_validator("seq_lens")
    @classmethod
    def _unique_lengths(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("must not repeat a length")
        return v


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)
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

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a seed")
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        names = [m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"must not repeat a model name ({names})")
        return v


# --- loading -------------------------------------------------------------------------------

def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple) -> str:
    """The keys allowed at ``loc`` (for 'unknown key' errors)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return ""
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = next((a for a in (ann, *args)
                        if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return ""
    return ", ".join(current.model_fields) if current is not None else ""


def _spec_error(exc: ValidationError, source: str,
                model: type[BaseModel] | None = None) -> SpecError:
    err = exc.errors()[0]
    field = _loc(err["loc"]) or "spec"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model or Suite, err["loc"])
        return SpecError(field, err["loc"][-1], f"unknown key; allowed keys: {allowed}",
                         source=source)
    msg = err["msg"]
    msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    return SpecError(field, err.get("input"), msg[:1].lower() + msg[1:], source=source)


def find_spec(name_or_path: str | None) -> Path:
    """A spec path, or the name of a shipped spec (``quick`` -> the packaged tasks/quick.yaml)."""
    name_or_path = name_or_path or DEFAULT_SPEC
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    shipped = resources.files("seqbench.specs") / f"{name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise SpecError("spec", name_or_path,
                    f"not a file; shipped specs: {', '.join(shipped_specs())}")


def shipped_specs() -> list[str]:
    root = resources.files("seqbench.specs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_spec_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("spec", source, f"cannot be read ({type(exc).__name__}: "
                        f"{getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError("spec", source, f"is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise SpecError("spec", type(data).__name__, "must be a YAML mapping of keys to values",
                        source=source)
    return data


def load_suite(name_or_path: str | None) -> tuple[Suite, Path]:
    path = find_spec(name_or_path)
    data = read_spec_file(path)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, str(path)) from None
    check_suite(suite, str(path))
    return suite, path


def parse_suite(data: dict[str, Any], source: str = "spec") -> Suite:
    """Validate an in-memory spec (tests, programmatic use)."""
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(exc, source) from None
    check_suite(suite, source)
    return suite


def task_train(suite: Suite, i: int, source: str) -> TrainSpec:
    task = suite.tasks[i]
    try:
        return TrainSpec.model_validate({**suite.train.model_dump(), **task.train})
    except ValidationError as exc:
        err = _spec_error(exc, source, TrainSpec)
        raise SpecError(f"tasks[{i}].train.{err.field}", err.value, err.allowed,
                        source=source) from None


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
    scale = suite.scale or ScaleSpec()
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


def task_lengths(suite: Suite, task: TaskSpec) -> list[int]:
    """Every length a task runs at: its seq_lens, or a scale sweep's lengths and positions."""
    if suite.kind == "train":
        return list(task.seq_lens or [])
    scale = suite.scale or ScaleSpec()
    return sorted(set(scale.lengths()) | set(scale.stream_positions))


def check_suite(suite: Suite, source: str) -> None:
    """Semantic checks needing the registries: names, params, lengths, data files."""
    from seqbench.worker.data import TASKS
    from seqbench.worker.models import MODELS, split_params

    check_kind(suite, source)
    model_cfgs = []
    for i, m in enumerate(suite.models):
        if m.name not in MODELS:
            raise SpecError(f"models[{i}].name", m.name,
                            f"known models: {', '.join(MODELS.names())}", source=source)
        try:
            bb_cfg, mixer_cfg, budget = split_params(m.name, m.params)
        except SpecError as exc:
            raise SpecError(exc.field, exc.value, exc.allowed, source=source) from None
        mixer_cls = MODELS[m.name].load()
        multiple = mixer_cls.d_model_multiple(mixer_cfg)
        if budget is None and bb_cfg.d_model % multiple:
            raise SpecError(f"models[{i}].params.d_model", bb_cfg.d_model,
                            f"must be a multiple of {multiple} for {m.name}", source=source)
        model_cfgs.append((m.name, mixer_cls, mixer_cfg))
    for i, t in enumerate(suite.tasks):
        if t.name not in TASKS:
            raise SpecError(f"tasks[{i}].name", t.name, f"known tasks: {', '.join(TASKS.names())}",
                            source=source)
        task_train(suite, i, source)
        cls = TASKS[t.name].load()
        for L in task_lengths(suite, t):
            try:
                cls.check(L, t.params)
            except SpecError as exc:
                raise SpecError(f"tasks[{i}].{exc.field}", exc.value, exc.allowed,
                                source=source) from None
            input_len = cls.input_len(L, t.params)
            for name, mixer_cls, cfg in model_cfgs:
                limit = mixer_cls.max_seq_len(cfg)
                if limit is not None and input_len > limit:
                    where = "seq_lens" if suite.kind == "train" else "scale lengths"
                    raise SpecError(f"tasks[{i}].{where}", L,
                                    f"{t.name} input length {input_len} exceeds {name}'s "
                                    f"positional table (max_len={limit})", source=source)


# --- jobs ----------------------------------------------------------------------------------

def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def config_hash(job: dict[str, Any]) -> str:
    return sha256({k: v for k, v in job.items() if k not in ("seed", "timeout_s")})


def job_id(job: dict[str, Any]) -> str:
    return f"{config_hash(job)[:16]}-s{job['seed']}"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def expand(suite: Suite, source: str = "spec") -> list[dict[str, Any]]:
    """The sweep, in order: tasks x lengths x models x seeds (seeds innermost)."""
    from seqbench.worker.data import TASKS

    if suite.kind == "scale":
        return expand_scale(suite, source)
    device = resolve_device(suite.device)
    jobs = []
    for i, t in enumerate(suite.tasks):
        train = task_train(suite, i, source).model_dump()
        task_version = TASKS[t.name].load().version
        for L in t.seq_lens:
            for m in suite.models:
                for seed in suite.seeds:
                    jobs.append({
                        "spec_format": SPEC_FORMAT_VERSION,
                        "suite_version": suite.version,
                        "kind": suite.kind,
                        "task": {"name": t.name, "version": task_version, "seq_len": L,
                                 "params": t.params},
                        "model": {"name": m.name, "params": m.params},
                        "train": train,
                        "measure": suite.measure.model_dump(),
                        "device": device,
                        "dtype": suite.dtype,
                        "seed": seed,
                        "timeout_s": suite.timeout_s,
                    })
    return jobs


GIB = 2**30
# what a scale job's training step uses from the train block (the rest is about training runs)
SCALE_TRAIN_KEYS = ("optimizer", "lr", "weight_decay", "betas", "momentum", "clip", "autocast")


def expand_scale(suite: Suite, source: str = "spec") -> list[dict[str, Any]]:
    """A scale suite's jobs: ``scale`` jobs (tasks x lengths x models x seeds, lengths in
    doubling order), then ``stream`` jobs (tasks x positions x models x seeds). The driver
    (:class:`seqbench.worker.scale.FrontierExecutor`) relies on lengths ascending within a model."""
    from seqbench.worker.data import TASKS

    scale = suite.scale or ScaleSpec()
    device = resolve_device(suite.device)
    cap = int(scale.mem_cap_gib * GIB) if device == "cpu" else 0
    timing = {k: getattr(scale, k) for k in ("warmup_steps", "max_warmup_steps", "min_repeats",
                                            "max_repeats", "budget_s")}
    # the batch policy, not the batch: under fixed-tokens the batch varies with the length, and
    # a job parameter varying along the sweep would split one curve into many configurations
    policy = ({"batch_policy": "fixed-tokens", "tokens_per_batch": scale.tokens_per_batch}
              if scale.batch_policy == "fixed-tokens"
              else {"batch_policy": "fixed-batch", "batch_size": scale.batch_size})
    how = {"scale": {**policy, "forward": scale.forward, **timing},
           "stream": {"batch_policy": "fixed-batch", "batch_size": scale.stream_batch, **timing}}
    jobs = []
    for kind, lengths in (("scale", scale.lengths()), ("stream", scale.stream_positions)):
        for i, t in enumerate(suite.tasks):
            train = task_train(suite, i, source).model_dump()
            train = {k: train[k] for k in (SCALE_TRAIN_KEYS if kind == "scale" else ("autocast",))}
            cls = TASKS[t.name].load()
            for L in lengths:
                for m in suite.models:
                    for seed in suite.seeds:
                        jobs.append({
                            "spec_format": SPEC_FORMAT_VERSION,
                            "suite_version": suite.version,
                            "kind": kind,
                            "task": {"name": t.name, "version": cls.version, "seq_len": L,
                                     "params": t.params},
                            "model": {"name": m.name, "params": m.params},
                            "train": train,
                            "measure": suite.measure.model_dump(),
                            "scale": how[kind],
                            "mem_cap_bytes": cap,
                            "device": device,
                            "dtype": suite.dtype,
                            "seed": seed,
                            "timeout_s": suite.timeout_s,
                        })
    return jobs


def spec_hash(suite: Suite) -> str:
    return sha256(suite.model_dump(mode="json"))
