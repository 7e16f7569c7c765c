"""The row: one per job, the unit of every seqbench result.

A row is a :class:`Row`, a pydantic model with one declared field per quantity; this module is
the single list of fields (with their units and meanings), and ``seqbench validate``, the
results loader and the docs read it. Rows are flat, so a results file loads into a tidy pandas
DataFrame directly. Units live in field names (``_bytes``, ``_s``, ``_tokens_per_s``). Task
metrics appear as extra fields with a prefix: ``metric_<name>`` (measured on held-out data),
``baseline_<name>`` (the task's trivial baseline) and ``higher_is_better_<name>``, with
``primary_metric`` naming the one to lead with.

Rows are built only by :mod:`seqbench.recording.rows` (driver and worker alike); every
assignment is checked against the declared type, and the store checks the whole row
(:func:`seqbench.recording.validate.check_row`) before writing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Status = Literal["ok", "oom", "diverged", "timeout", "error", "unavailable", "skipped",
                 "interrupted"]
STATUSES: tuple[str, ...] = get_args(Status)
FAILED = frozenset(STATUSES) - {"ok"}
# a rerun runs these again without --retry: the job never finished
UNFINISHED = frozenset({"interrupted"})
JobKind = Literal["train", "scale", "stream"]
PREFIXED = ("metric_", "baseline_", "higher_is_better_")  # per-task metric fields


def col(unit: str, description: str, *, required: bool = False) -> Any:
    """A row field: its unit ('' when dimensionless) and meaning; ``required`` fields are on
    every row, whatever its status."""
    return Field(... if required else None, description=description,
                 json_schema_extra={"unit": unit})


class Row(BaseModel):
    """One job's result. Undeclared fields are allowed only with a metric prefix."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    # --- identity
    schema_version: int = col('', 'row schema version', required=True)
    job_id: str = col('', "config_hash[:16]-s<seed>: the job's file name", required=True)
    config_hash: str = col('', "sha256 of the job's canonical JSON without the seed", required=True)
    seed: int = col('', 'seed of python, numpy, torch and the data streams', required=True)
    suite: str = col('', 'name of the spec the job came from', required=True)
    spec_hash: str = col('', "sha256 of the spec file's validated content", required=True)
    kind: JobKind = col('', 'job kind: train, scale or stream', required=True)
    task: str = col('', 'registered task name', required=True)
    model: str = col('', 'registered model name', required=True)
    seq_len: int = col('', "the task's length parameter (copy memory: delay T)", required=True)
    input_len: int = col('tokens', "length of the model's input sequence", required=True)
    batch_size: int = col('', 'sequences per batch', required=True)
    status: Status = col('', '|'.join(STATUSES), required=True)
    error: str = col('', "error text when status is not ok ('' when ok)", required=True)
    job: dict[str, Any] = col(
        '', 'the fully resolved job (task, model, train, measure params)', required=True)
    # --- model
    param_count: int | None = col('', 'trainable parameters')
    d_model: int | None = col('', 'backbone width after any param_budget sizing')
    backbone: Literal["shared", "bare"] | None = col(
        '', "the model's scaffolding: shared (embedding/projection, N x [norm, mixer, residual, "
        "MLP], norm, head) or bare (embedding/projection, N x mixer, head); absent on rows "
        "recorded before the setting existed, which are shared")
    kernel_path: str = col('', 'kernel that ran (cudnn, aten-cpu, sdpa-flash, ...)', required=True)
    kernel_path_source: Literal["observed", "inferred"] | None = col(
        '', "observed: kernel_path's kernels were seen in a profiler trace of one probe call "
        "after the job's measurements (seqbench.worker.kernels_seen); inferred: the path the "
        "mixers' code took, which no trace confirmed (a path of ordinary PyTorch ops, or a "
        "profiler that cannot see the device's kernels); absent on rows recorded before it")
    attn_dropout: float | None = col('', 'attention dropout (CPU: > 0 forces the math kernel)')
    receptive_field: int | None = col(
        'tokens', "positions one output can see, for mixers with a finite window (a TCN's)")
    compiled: bool | None = col(
        '', 'the model ran under torch.compile (train.compile); a model that fails to compile '
        'gives an error row, never an eager fallback')
    compile_s: float | None = col(
        's', 'seconds torch.compile spent compiling during the job (dynamo + inductor, forward '
        'and backward, recompiles included); also inside train_first_step_s and fwd_first_call_s')
    data_source: dict[str, Any] | None = col(
        '', "where the task's data came from: a local dataset and the files read, or a "
        "generator's name, version, seed and the sha256 of its cached data (absent: synthetic)")
    # --- training and metrics
    train_steps: int | None = col('', 'optimizer steps taken')
    train_final_loss: float | None = col('', 'mean training loss over the last 10% of steps')
    diverged_step: int | None = col('', 'step whose loss was not finite (diverged rows)')
    primary_metric: str | None = col('', "name of the task's headline metric")
    # --- the training protocol (docs/architecture.md, "Protocol")
    eval_split: str | None = col(
        '', 'split of the metric_* fields: eval (validation, the default) or test')
    train_lengths: dict[str, Any] | None = col(
        '', 'variable training lengths {min, max}: each batch drawn uniformly from that '
        'range of the task length (absent: every batch at seq_len)')
    stop_reason: str | None = col(
        '', 'why training ended: steps (ran train.steps), early_stop (the validation metric '
        'reached train.early_stop.value), diverged (non-finite loss)')
    stopped_at_step: int | None = col(
        '', 'optimizer steps taken when training ended before train.steps (early stop, '
        'divergence)')
    slices: dict[str, Any] | None = col(
        '', 'the main evaluation per slice of the task (e.g. query_distance:8-15): '
        '{slice: {metric: value}}, averaged over the slice\'s scored items')
    curve: list[Any] | None = col(
        '', 'learning curve every train.eval_every steps on train.curve_examples validation '
        'examples: [{step, train_time_s (timed training seconds so far), wall_s (seconds since '
        'training began, evaluations included), train_loss (mean since the previous point), '
        'metric_<name>...}]')
    evals: list[Any] | None = col(
        '', "the trained model at each of the job's evaluation settings: [{seq_len, input_len, "
        'params (task-param overrides), status (ok|oom|error|unavailable|diverged), error, '
        'eval_s (seconds), metric_<name>..., baseline_<name>..., slices}]')
    grad_profile: list[Any] | None = col(
        '', 'gradient flow over time (seqbench.worker.gradients): [{step, distances, norms '
        '(mean norm of the gradient of a scored item\'s loss w.r.t. the input representation '
        'that many positions earlier), decay_per_step (slope of ln norm vs distance), horizon '
        '(first distance below fraction x norm(0), null if none), fraction, examples, positions, '
        'probe_s}]')
    # --- measurements
    train_step_s_median: float | None = col('s', 'median time of a timed training step')
    train_step_s_p20: float | None = col('s', '20th percentile of training step time')
    train_step_s_p80: float | None = col('s', '80th percentile of training step time')
    train_step_s_samples: list[float] | None = col(
        's', 'every timed training step, for significance tests')
    train_first_step_s: float | None = col(
        's', 'first training step (compilation, warm-up), kept apart')
    train_tokens_per_s: float | None = col(
        'tokens/s', 'batch x input_len / median step time (variable training lengths: timed '
        'tokens / timed seconds)')
    train_tokens_per_s_p20: float | None = col(
        'tokens/s', 'from the 80th percentile step time (variable lengths: 20th percentile of '
        'per-step tokens/s)')
    train_tokens_per_s_p80: float | None = col(
        'tokens/s', 'from the 20th percentile step time (variable lengths: 80th percentile of '
        'per-step tokens/s)')
    fwd_step_s_median: float | None = col('s', 'median forward-only (no grad) pass time')
    fwd_step_s_p20: float | None = col('s', '20th percentile of forward pass time')
    fwd_step_s_p80: float | None = col('s', '80th percentile of forward pass time')
    fwd_step_s_samples: list[float] | None = col('s', 'every timed forward pass')
    fwd_first_call_s: float | None = col('s', 'first forward-only call, kept apart')
    fwd_tokens_per_s: float | None = col('tokens/s', 'batch x input_len / median forward time')
    fwd_tokens_per_s_p20: float | None = col('tokens/s', 'from the 80th percentile forward time')
    fwd_tokens_per_s_p80: float | None = col('tokens/s', 'from the 20th percentile forward time')
    peak_mem_bytes: int | None = col(
        'bytes', 'CUDA: max_memory_allocated; CPU: peak RSS - baseline')
    peak_mem_reserved_bytes: int | None = col('bytes', 'CUDA: max_memory_reserved')
    fwd_peak_mem_bytes: int | None = col('bytes', 'CUDA: max_memory_allocated of the forward phase')
    peak_rss_bytes: int | None = col('bytes', "worker's peak resident set size (wait4 rusage)")
    baseline_rss_bytes: int | None = col(
        'bytes', 'peak RSS of an idle worker with the same imports')
    mem_method: str | None = col('', 'how peak_mem_bytes was measured')
    timing_method: str | None = col('', 'perf_counter, or CUDA events after a synchronize')
    warmup_calls: dict[str, Any] | None = col(
        '', 'warm-up calls per timed mode, until times settled')
    timed_s: float | None = col('s', 'seconds inside timed regions (warm-up included)')
    worker_start: str | None = col(
        '', "how the job's fresh process started: fork (from a preloaded zygote) or spawn")
    worker_wall_s: float | None = col('s', 'driver-side wall time of the worker, spawn to exit')
    # --- scaling runs (kind "scale")
    batch_policy: str | None = col('', 'fixed-batch or fixed-tokens (batch x length constant)')
    stop_policy: str | None = col('', 'when a length sweep stops; what longer lengths get')
    flops_per_fwd: float | None = col('FLOP', 'analytic FLOPs of one forward pass (matmuls)')
    flops_per_train_step: float | None = col('FLOP', 'analytic FLOPs of one training step')
    flops_method: str | None = col('', 'the FLOP formula used, or why there is none')
    train_flops_per_s: float | None = col('FLOP/s', 'flops_per_train_step / median step time')
    fwd_flops_per_s: float | None = col('FLOP/s', 'flops_per_fwd / median forward time')
    peak_flops_per_s: float | None = col('FLOP/s', "the device's measured matmul peak")
    peak_bytes_per_s: float | None = col('bytes/s', "the device's measured copy bandwidth")
    peak_probe: str | None = col('', 'how and when the device peaks were measured')
    flops_utilization: float | None = col('', 'train_flops_per_s / peak_flops_per_s')
    fwd_flops_utilization: float | None = col('', 'fwd_flops_per_s / peak_flops_per_s')
    mem_cap_bytes: int | None = col('bytes', 'per-worker memory cap on CPU (0 = none)')
    # --- streaming inference (kind "stream"): one row per context position
    context_len: int | None = col('tokens', 'tokens already in the stream when measured')
    stream_step_s_median: float | None = col('s', 'median latency of one streaming step')
    stream_step_s_p20: float | None = col('s', '20th percentile streaming step latency')
    stream_step_s_p80: float | None = col('s', '80th percentile streaming step latency')
    stream_step_s_samples: list[float] | None = col('s', 'every timed streaming step')
    stream_first_call_s: float | None = col('s', 'first step after the prefill, kept apart')
    stream_tokens_per_s: float | None = col('tokens/s', 'batch / median streaming step time')
    stream_tokens_per_s_p20: float | None = col('tokens/s', 'from the 80th percentile step time')
    stream_tokens_per_s_p80: float | None = col('tokens/s', 'from the 20th percentile step time')
    prefill_s: float | None = col('s', 'processing the context_len prompt in one call')
    state_bytes: int | None = col('bytes', 'bytes of recurrent state or KV cache at context_len')
    state_bytes_analytic: int | None = col('bytes', "the model's state_size(context_len) formula")
    wall_s: float = col('s', "wall time of the job's worker, start to exit", required=True)
    # --- provenance
    overrides: list[str] | None = col(
        '', 'command-line overrides the run was given (--set, --models, ...)')
    git_sha: str = col(
        '', "commit of the seqbench checkout ('' if not a git checkout)", required=True)
    git_dirty: bool = col('', 'uncommitted changes in the checkout', required=True)
    seqbench_version: str = col('', 'package version', required=True)
    python_version: str = col('', '', required=True)
    torch_version: str = col('', '', required=True)
    cuda_version: str = col('', "torch.version.cuda ('' on CPU builds)", required=True)
    cudnn_version: str = col('', "torch.backends.cudnn.version() ('' when absent)", required=True)
    mamba_ssm_version: str = col('', "'' when mamba_ssm is not importable", required=True)
    device: str = col('', 'cpu or cuda', required=True)
    device_name: str = col('', 'GPU name, or the CPU model', required=True)
    dtype: str = col('', 'parameter dtype', required=True)
    autocast: str = col('', "autocast dtype ('' when off; bf16 on CUDA)", required=True)
    threads: int = col('', 'torch.get_num_threads() in the worker', required=True)
    host: str = col('', 'hostname', required=True)
    platform: str | None = col('', 'platform.platform() of the worker')
    signal: int | None = col('', 'signal that killed the worker (rows of killed workers)')
    started_at: str = col('', 'UTC ISO-8601 start of the job', required=True)
    # --- budgets and search (seqbench.worker.models.fit_budget; a search's roles are in the
    # row's job: job.search = {role: trial|final, values})
    state_size_bytes: int | None = col(
        'bytes', "the model's recurrent state (or KV cache) per sequence after input_len "
        'tokens, from the mixers\' state_size formulas at the parameter dtype')
    flops_per_token: float | None = col(
        'FLOP', "analytic forward FLOPs per token at input_len (the mixers' forward_flops, "
        'MLPs and head; matmuls only, multiply-add = 2)')
    budget_kind: str | None = col(
        '', 'the budget the model was sized to: params (param_budget), state_bytes '
        '(state_budget) or flops_per_token (flops_budget)')
    budget_target: float | None = col(
        '', "the budget, in its kind's unit (parameters, bytes per sequence, FLOPs per token)")
    budget_achieved: float | None = col(
        '', "the built model's value of the budgeted quantity, in the budget's unit")
    budget_ratio: float | None = col('', 'budget_achieved / budget_target (never above 1)')
    budget_tolerance: float | None = col(
        '', "the fraction below the budget that counts as matched (the spec's budget_tolerance, "
        'else 0.05)')
    budget_matched: bool | None = col(
        '', '(1 - budget_tolerance) x budget_target <= budget_achieved <= budget_target')
    budget_adjusted: dict[str, Any] | None = col(
        '', 'what the sizing set: d_model, and mlp_ratio / mlp_hidden when the MLP width was '
        'adjusted to land within the tolerance')
    budget_note: str | None = col(
        '', "why the budget is not matched ('' when it is)")
    # --- edge track (seqbench.worker.edge; train.edge)
    edge: list[Any] | None = col(
        '', 'the edge track after training: the trained model streamed token by token at batch '
        '1 on the CPU, one entry per precision: [{precision (float32 | int8: torch.ao dynamic '
        'quantization), status, error, threads, quantized (module type: count), '
        'quantized_param_fraction, metric_<name>... (eval_examples of eval_split, the same for '
        'every variant), warmup, tokens, sequences, context_len (tokens per streamed sequence), '
        'latency_s_samples (every timed step, s), latency_s_median, latency_s_p99, '
        'latency_s_mean (from those samples), state_bytes (after a whole sequence), '
        'weight_bytes, start_rss_bytes and peak_rss_bytes (resident set at the start and peak '
        'while streaming), rss_method, stream_vs_forward_max_abs, edge_s}]')

    def update(self, **fields: Any) -> Row:
        """Set fields (each checked against its declared type); returns the row."""
        for name, value in fields.items():
            if name not in Row.model_fields and not name.startswith(PREFIXED):
                raise AttributeError(f"{name!r} is not a row field (declare it in "
                                     "seqbench/recording/schema.py)")
            setattr(self, name, value)
        return self

    def get(self, name: str, default: Any = None) -> Any:
        """A field's value by name (declared or metric field), or ``default``."""
        if name in Row.model_fields:
            value = getattr(self, name)
            return default if value is None else value
        return (self.__pydantic_extra__ or {}).get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """The fields that were set, in declaration order then the metric fields: what the
        store writes as JSON."""
        return self.model_dump(exclude_unset=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls.model_validate(data)


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str  # "str", "int", "float", "bool", "list", "dict"
    unit: str  # "" when dimensionless
    description: str
    required: bool


def _type_name(annotation: Any) -> str:
    text = str(annotation)
    for name in ("dict", "list", "bool", "int", "float"):
        if text.startswith(name) or f"{name}[" in text or text == f"<class '{name}'>":
            return name
    return "str"  # str and the Literal choices (status, kind)


def _unit(extra: Any) -> str:
    return str(extra.get("unit", "")) if isinstance(extra, dict) else ""


FIELDS: tuple[FieldDoc, ...] = tuple(
    FieldDoc(name, _type_name(f.annotation), _unit(f.json_schema_extra), f.description or "",
             f.is_required())
    for name, f in Row.model_fields.items())
FIELD_NAMES = tuple(f.name for f in FIELDS)
REQUIRED = tuple(f.name for f in FIELDS if f.required)
