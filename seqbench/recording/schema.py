"""The row: one per job, the unit of every seqbench result.

Rows are flat JSON objects, so a results file loads into a tidy pandas DataFrame directly.
Units live in field names (``_bytes``, ``_s``, ``_tokens_per_s``). Task metrics appear twice:
``metric_<name>`` (measured on held-out data) and ``baseline_<name>`` (the task's trivial
baseline), with ``primary_metric`` naming the one to lead with and ``higher_is_better_<name>``.
This module is the single list of fields; ``seqbench validate`` and the docs read it.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1

STATUSES = ("ok", "oom", "diverged", "timeout", "error", "unavailable", "skipped")
FAILED = frozenset(STATUSES) - {"ok"}


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # "str", "int", "float", "bool", "list", "dict"
    unit: str  # "" when dimensionless
    description: str
    required: bool = False  # present on every row, whatever its status


FIELDS: tuple[Field, ...] = (
    # identity
    Field("schema_version", "int", "", "row schema version", True),
    Field("job_id", "str", "", "config_hash[:16]-s<seed>: the job's file name", True),
    Field("config_hash", "str", "", "sha256 of the job's canonical JSON without the seed", True),
    Field("seed", "int", "", "seed of python, numpy, torch and the data streams", True),
    Field("suite", "str", "", "name of the spec the job came from", True),
    Field("spec_hash", "str", "", "sha256 of the spec file's validated content", True),
    Field("kind", "str", "", "job kind: train, scale or stream", True),
    Field("task", "str", "", "registered task name", True),
    Field("model", "str", "", "registered model name", True),
    Field("seq_len", "int", "", "the task's length parameter (copy memory: delay T)", True),
    Field("input_len", "int", "tokens", "length of the model's input sequence", True),
    Field("batch_size", "int", "", "sequences per batch", True),
    Field("status", "str", "", "|".join(STATUSES), True),
    Field("error", "str", "", "error text when status is not ok ('' when ok)", True),
    Field("job", "dict", "", "the fully resolved job (task, model, train, measure params)", True),
    # model
    Field("param_count", "int", "", "trainable parameters"),
    Field("d_model", "int", "", "backbone width after any param_budget sizing"),
    Field("kernel_path", "str", "", "kernel that ran (cudnn, aten-cpu, sdpa-flash, ...)", True),
    Field("attn_dropout", "float", "", "attention dropout (CPU: > 0 forces the math kernel)"),
    # training and metrics
    Field("train_steps", "int", "", "optimizer steps taken"),
    Field("train_final_loss", "float", "", "mean training loss over the last 10% of steps"),
    Field("diverged_step", "int", "", "step whose loss was not finite (diverged rows)"),
    Field("primary_metric", "str", "", "name of the task's headline metric"),
    # measurements
    Field("train_step_s_median", "float", "s", "median time of a timed training step"),
    Field("train_step_s_p20", "float", "s", "20th percentile of training step time"),
    Field("train_step_s_p80", "float", "s", "80th percentile of training step time"),
    Field("train_step_s_samples", "list", "s", "every timed training step, for significance tests"),
    Field("train_first_step_s", "float", "s",
          "first training step (compilation, warm-up), kept apart"),
    Field("train_tokens_per_s", "float", "tokens/s", "batch x input_len / median step time"),
    Field("train_tokens_per_s_p20", "float", "tokens/s", "from the 80th percentile step time"),
    Field("train_tokens_per_s_p80", "float", "tokens/s", "from the 20th percentile step time"),
    Field("fwd_step_s_median", "float", "s", "median forward-only (no grad) pass time"),
    Field("fwd_step_s_p20", "float", "s", "20th percentile of forward pass time"),
    Field("fwd_step_s_p80", "float", "s", "80th percentile of forward pass time"),
    Field("fwd_step_s_samples", "list", "s", "every timed forward pass"),
    Field("fwd_first_call_s", "float", "s", "first forward-only call, kept apart"),
    Field("fwd_tokens_per_s", "float", "tokens/s", "batch x input_len / median forward time"),
    Field("fwd_tokens_per_s_p20", "float", "tokens/s", "from the 80th percentile forward time"),
    Field("fwd_tokens_per_s_p80", "float", "tokens/s", "from the 20th percentile forward time"),
    Field("peak_mem_bytes", "int", "bytes", "CUDA: max_memory_allocated; CPU: peak RSS - baseline"),
    Field("peak_mem_reserved_bytes", "int", "bytes", "CUDA: max_memory_reserved"),
    Field("fwd_peak_mem_bytes", "int", "bytes", "CUDA: max_memory_allocated of the forward phase"),
    Field("peak_rss_bytes", "int", "bytes", "worker's peak resident set size (wait4 rusage)"),
    Field("baseline_rss_bytes", "int", "bytes", "peak RSS of an idle worker with the same imports"),
    Field("mem_method", "str", "", "how peak_mem_bytes was measured"),
    Field("timing_method", "str", "", "perf_counter, or CUDA events after a synchronize"),
    Field("warmup_calls", "dict", "", "warm-up calls per timed mode, until times settled"),
    Field("timed_s", "float", "s", "seconds inside timed regions (warm-up included)"),
    Field("worker_start", "str", "",
          "how the job's fresh process started: fork (from a preloaded zygote) or spawn"),
    Field("worker_wall_s", "float", "s", "driver-side wall time of the worker, spawn to exit"),
    # scaling runs (kind "scale")
    Field("batch_policy", "str", "", "fixed-batch or fixed-tokens (batch x length constant)"),
    Field("stop_policy", "str", "", "when a length sweep stops; what longer lengths get"),
    Field("flops_per_fwd", "float", "FLOP", "analytic FLOPs of one forward pass (matmuls)"),
    Field("flops_per_train_step", "float", "FLOP", "analytic FLOPs of one training step"),
    Field("flops_method", "str", "", "the FLOP formula used, or why there is none"),
    Field("train_flops_per_s", "float", "FLOP/s", "flops_per_train_step / median step time"),
    Field("fwd_flops_per_s", "float", "FLOP/s", "flops_per_fwd / median forward time"),
    Field("peak_flops_per_s", "float", "FLOP/s", "the device's measured matmul peak"),
    Field("peak_bytes_per_s", "float", "bytes/s", "the device's measured copy bandwidth"),
    Field("peak_probe", "str", "", "how and when the device peaks were measured"),
    Field("flops_utilization", "float", "", "train_flops_per_s / peak_flops_per_s"),
    Field("fwd_flops_utilization", "float", "", "fwd_flops_per_s / peak_flops_per_s"),
    Field("mem_cap_bytes", "int", "bytes", "per-worker memory cap on CPU (0 = none)"),
    # streaming inference (kind "stream"): one row per context position
    Field("context_len", "int", "tokens", "tokens already in the stream when measured"),
    Field("stream_step_s_median", "float", "s", "median latency of one streaming step"),
    Field("stream_step_s_p20", "float", "s", "20th percentile streaming step latency"),
    Field("stream_step_s_p80", "float", "s", "80th percentile streaming step latency"),
    Field("stream_step_s_samples", "list", "s", "every timed streaming step"),
    Field("stream_first_call_s", "float", "s", "first step after the prefill, kept apart"),
    Field("stream_tokens_per_s", "float", "tokens/s", "batch / median streaming step time"),
    Field("stream_tokens_per_s_p20", "float", "tokens/s", "from the 80th percentile step time"),
    Field("stream_tokens_per_s_p80", "float", "tokens/s", "from the 20th percentile step time"),
    Field("prefill_s", "float", "s", "processing the context_len prompt in one call"),
    Field("state_bytes", "int", "bytes", "bytes of recurrent state or KV cache at context_len"),
    Field("state_bytes_analytic", "int", "bytes", "the model's state_size(context_len) formula"),
    Field("wall_s", "float", "s", "wall time of the job's worker, start to exit", True),
    # provenance
    Field("git_sha", "str", "", "commit of the seqbench checkout ('' if not a git checkout)", True),
    Field("git_dirty", "bool", "", "uncommitted changes in the checkout", True),
    Field("seqbench_version", "str", "", "package version", True),
    Field("python_version", "str", "", "", True),
    Field("torch_version", "str", "", "", True),
    Field("cuda_version", "str", "", "torch.version.cuda ('' on CPU builds)", True),
    Field("cudnn_version", "str", "", "torch.backends.cudnn.version() ('' when absent)", True),
    Field("mamba_ssm_version", "str", "", "'' when mamba_ssm is not importable", True),
    Field("device", "str", "", "cpu or cuda", True),
    Field("device_name", "str", "", "GPU name, or the CPU model", True),
    Field("dtype", "str", "", "parameter dtype", True),
    Field("autocast", "str", "", "autocast dtype ('' when off; bf16 on CUDA)", True),
    Field("threads", "int", "", "torch.get_num_threads() in the worker", True),
    Field("host", "str", "", "hostname", True),
    Field("platform", "str", "", "platform.platform() of the worker"),
    Field("signal", "int", "", "signal that killed the worker (rows of killed workers)"),
    Field("started_at", "str", "", "UTC ISO-8601 start of the job", True),
)

FIELD_NAMES = tuple(f.name for f in FIELDS)
REQUIRED = tuple(f.name for f in FIELDS if f.required)
PREFIXED = ("metric_", "baseline_", "higher_is_better_")  # per-task metric fields
