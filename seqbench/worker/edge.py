"""The edge track: the trained model as a small device would run it, one token at a time.

Recurrent models are still chosen for low-latency streaming and memory-tight devices because
their cost per token and their state stay constant as the context grows, where attention's KV
cache (and its cost per token) grows with every token. This measures that for every model with a
streaming step (``Mixer.supports_step``; the backbone's ``init_state``/``step``), after training
and in the same job, so the task metric and the edge numbers describe the same weights.

What runs (``train.edge``, :class:`~seqbench.config.spec.EdgeSpec`; one entry of the row's
``edge`` list per variant, named by its ``precision``):

- The trained weights are loaded into a fresh, eager, float32 copy of the model on the CPU (also
  when training ran on CUDA, in bfloat16 or compiled); torch runs ``threads`` threads (default 1)
  while measuring and the job's own setting again afterwards.
- Variants: ``float32`` and, with ``int8``, that copy under dynamic int8 quantization
  (``torch.ao.quantization.quantize_dynamic`` of every ``nn.Linear``, ``nn.LSTM`` and ``nn.GRU``:
  weights stored in int8 with one scale per tensor, activations quantized on the fly per call;
  the scheme of Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference"). What PyTorch's dynamic quantization does not cover
  (``nn.RNN``, convolutions, embeddings, a mixer's own parameters) stays float32; the entry
  names the modules that were quantized (``quantized``) and the fraction of the model's
  parameters they hold (``quantized_param_fraction``), and the quantized engine.
- The task metric of each variant on the same ``eval_examples`` examples of the job's
  ``eval_split``: the change under int8 is a paired difference on one evaluation set.
- Streaming at batch 1: examples of the same split, each streamed from a fresh state
  (``init_state``, untimed) through ``step``, one token at a time, one after another; the first
  ``warmup`` steps are untimed, then each of the next ``tokens`` steps is timed with
  ``perf_counter`` and kept (``latency_s_samples``); the median, p99 (numpy's default linear
  interpolation) and mean are computed from those samples (:func:`latency_stats`). A model
  whose state grows with the context is so timed at every context ``0..context_len - 1``, as it
  would serve this task.
- ``state_bytes``: bytes of the state's tensors after one whole sequence (a KV cache at its
  largest, ``context_len`` tokens). ``weight_bytes``: the weights as stored
  (:func:`weight_bytes`): float parameters and buffers at their element size; a quantized
  module's int8 weights at one byte each plus a float32 scale and an int32 zero point per
  quantized tensor (per channel for per-channel schemes), its biases in float32.
- Memory: the worker's resident set size when the timed stream starts and its peak during it
  (``VmRSS`` and ``VmHWM`` of ``/proc/self/status``, the peak reset first by writing ``5`` to
  ``/proc/self/clear_refs``; ``rss_method`` says when the reset was refused and the peak is the
  whole process's). The process holds the PyTorch runtime and what training left resident, so
  the peak is an upper bound on what a process streaming this model needs and ``peak - start``
  is what streaming added.
- ``stream_vs_forward_max_abs``: the largest absolute difference between the streamed outputs
  of the first sequence and the same variant's parallel forward pass on it (the last position
  for a pooled ``last`` head, the mean over positions for ``mean``). float32: rounding only.
  int8: dynamic quantization scales one token's activations per step but a whole sequence's
  in a forward pass, so the two differ by quantization error.

A variant that fails (out of memory, an exception) gets its status and error; the job stays
``ok``. A model without a streaming step gets ``unavailable`` entries that still hold the metric
and the weight bytes.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqbench.config.job import Job
from seqbench.config.spec import EdgeSpec, TrainSpec
from seqbench.worker.data.base import Task
from seqbench.worker.models.base import Backbone, state_nbytes

CPU = torch.device("cpu")
QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)
QPARAM_BYTES = 8  # a float32 scale and an int32 zero point per quantized tensor (or channel)
STATUS_FILE = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
ErrorFields = Callable[[BaseException], dict[str, Any]]


# --- statistics and sizes ----------------------------------------------------------------------
def latency_stats(samples: Sequence[float]) -> dict[str, float]:
    """Median, 99th percentile (numpy's linear interpolation) and mean of timed steps."""
    a = np.asarray(samples, dtype=float)
    if not len(a):
        return {"latency_s_median": math.nan, "latency_s_p99": math.nan,
                "latency_s_mean": math.nan}
    return {"latency_s_median": float(np.median(a)), "latency_s_p99": float(np.percentile(a, 99)),
            "latency_s_mean": float(a.mean())}


def _tensor_bytes(t: torch.Tensor) -> int:
    n = t.numel() * t.element_size()
    if t.is_quantized:
        per_tensor = t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)
        n += QPARAM_BYTES * (1 if per_tensor else t.q_per_channel_scales().numel())
    return n


def _quantized_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    import torch.ao.nn.quantized.dynamic as nnqd

    kinds = (nnqd.Linear, nnqd.LSTM, nnqd.GRU)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def _module_weights(module: nn.Module) -> list[torch.Tensor]:
    """The weights and biases a dynamically quantized module holds (unpacked)."""
    held = module._weight_bias()  # type: ignore[operator]  # Linear: (w, b); RNNs: dicts
    if isinstance(held, dict):
        return [t for group in held.values() for t in group.values() if t is not None]
    return [t for t in held if t is not None]


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights as stored: parameters and buffers at their element size, and
    each dynamically quantized module's weights (int8, with their quantization parameters) and
    biases."""
    plain = sum(_tensor_bytes(t) for t in itertools.chain(model.parameters(), model.buffers()))
    return plain + sum(_tensor_bytes(t) for _, m in _quantized_modules(model)
                       for t in _module_weights(m))


@contextlib.contextmanager
def _quiet_quantization() -> Iterator[None]:
    """torch.ao.quantization warns that it is deprecated on every call; the API still works in
    this torch and is the one that quantizes nn.LSTM and nn.GRU dynamically."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*deprecated")
        yield


def quantize(model: Backbone) -> tuple[Backbone, dict[str, Any]]:
    """A dynamically int8-quantized copy of ``model`` (every :data:`QUANTIZABLE` module
    swapped for its int8 version, in a deep copy) and what was quantized."""
    from torch.ao.quantization import quantize_dynamic

    with _quiet_quantization():
        quantized = quantize_dynamic(model, set(QUANTIZABLE), dtype=torch.qint8, inplace=False)
    assert isinstance(quantized, Backbone)
    counts: dict[str, int] = {}
    for _, module in _quantized_modules(quantized):
        counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in quantized.parameters())
    return quantized, {"quantized": counts,
                       "quantized_param_fraction": (before - after) / before if before else 0.0,
                       "quant_engine": str(torch.backends.quantized.engine)}


# --- memory of the process -----------------------------------------------------------------------
def _status_bytes(key: str) -> int | None:
    try:
        text = STATUS_FILE.read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


class ResidentPeak:
    """The process's resident set when a phase starts and its peak during it (Linux)."""

    def __enter__(self) -> ResidentPeak:
        try:
            CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident set
            self.method = "VmHWM of /proc/self/status, reset via /proc/self/clear_refs"
        except OSError:
            self.method = "VmHWM of /proc/self/status (not resettable: since process start)"
        self.start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = _status_bytes("VmHWM")

    def fields(self) -> dict[str, Any]:
        if self.start is None or self.peak is None:
            return {"rss_method": "unavailable (no /proc/self/status)"}
        return {"start_rss_bytes": self.start, "peak_rss_bytes": self.peak,
                "rss_method": self.method}


# --- streaming -----------------------------------------------------------------------------------
def stream_inputs(task: Task, seed: int, split: Any, count: int) -> list[torch.Tensor]:
    """The first ``count`` examples of ``split`` (fewer if the split has fewer), batch 1."""
    examples = [x for x, _ in task.eval_batches(seed, 1, count, CPU, split=split)]
    if not examples:
        raise ValueError(f"the task's {split} split gave no examples to stream")
    return examples


def timed_stream(model: Backbone, inputs: Iterator[torch.Tensor], warmup: int,
                 tokens: int) -> list[float]:
    """Per-step seconds of ``tokens`` streaming steps after ``warmup`` untimed ones, each
    sequence from a fresh state (not timed)."""
    samples: list[float] = []
    steps = 0
    clock = time.perf_counter
    with torch.inference_mode():
        while len(samples) < tokens:
            x = next(inputs)  # (1, L) tokens or (1, L, C) channels
            state = model.init_state(1, CPU, torch.float32)
            for t in range(x.shape[1]):
                x_t = x[:, t]
                if steps < warmup:
                    _, state = model.step(x_t, state)
                else:
                    start = clock()
                    _, state = model.step(x_t, state)
                    samples.append(clock() - start)
                    if len(samples) == tokens:
                        break
                steps += 1
    return samples


def stream_check(model: Backbone, x: torch.Tensor) -> tuple[float, int]:
    """Stream one whole sequence: the largest difference of its outputs from the forward pass
    on it (pooled heads: as the head pools) and the state's bytes after it."""
    with torch.inference_mode():
        state = model.init_state(1, CPU, torch.float32)
        outs = []
        for t in range(x.shape[1]):
            y_t, state = model.step(x[:, t], state)  # (1, out)
            outs.append(y_t)
        streamed = torch.stack(outs, dim=1)  # (1, L, out)
        parallel = model(x)  # (1, L, out) or (1, out)
    if not model.io.per_position:
        streamed = streamed[:, -1] if model.cfg.pooling == "last" else streamed.mean(dim=1)
    return float((streamed - parallel).abs().max()), state_nbytes(state)


# --- the track -----------------------------------------------------------------------------------
def eager_cpu_copy(job: Job, model: nn.Module, task: Task) -> Backbone:
    """A fresh eager float32 model on the CPU holding ``model``'s trained weights."""
    from seqbench.worker.models import build_model

    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave no trace
        copy = build_model(job.model.name, job.model.params, task.info.io)
    copy.load_state_dict(model.state_dict())
    return copy.to(device=CPU, dtype=torch.float32).eval()


def measure_variant(variant: str, model: Backbone, task: Task, spec: EdgeSpec,
                    train: TrainSpec, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``edge``: metric, sizes, latency and memory of one variant of the model."""
    from seqbench.worker.train import evaluate

    split = train.eval_split
    n_eval = spec.eval_examples or train.eval_examples
    entry: dict[str, Any] = {"precision": variant, "status": "ok", "error": "",
                             "threads": torch.get_num_threads(), **extra,
                             "eval_split": split, "eval_examples": n_eval}
    metrics = evaluate(model, task, train.model_copy(update={"autocast": "off"}), CPU, seed,
                       split=split, n_examples=n_eval)
    entry.update(**metrics.fields(), weight_bytes=weight_bytes(model))
    if not all(math.isfinite(v) for v in metrics.metrics.values()):
        entry.update(status="diverged", error="non-finite evaluation metric")
    if not model.supports_step:
        entry.update(status="unavailable", error="the model has no streaming step "
                                                 "(Mixer.supports_step)")
        return entry
    needed = math.ceil((spec.warmup + spec.tokens) / task.info.input_len)
    examples = stream_inputs(task, seed, split, needed)  # streamed over again if too few
    first = examples[0]
    with ResidentPeak() as memory:
        samples = timed_stream(model, itertools.cycle(examples), spec.warmup, spec.tokens)
    gap, state = stream_check(model, first)
    entry.update(warmup=spec.warmup, tokens=len(samples), sequences=len(examples),
                 context_len=int(first.shape[1]), latency_s_samples=samples,
                 **latency_stats(samples), state_bytes=state, **memory.fields(),
                 stream_vs_forward_max_abs=gap)
    return entry


def measure_edge(model: Backbone, task: Task, spec: EdgeSpec, train: TrainSpec, seed: int,
                 errors: ErrorFields) -> list[dict[str, Any]]:
    """Every variant of the edge track for an eager float32 CPU ``model`` (see the module
    docstring); ``errors`` turns an exception into ``{status, error}``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    out = []
    try:
        for variant in ("float32", "int8") if spec.int8 else ("float32",):
            start = time.perf_counter()
            try:
                if variant == "int8":
                    quantized, extra = quantize(model)
                    with _quiet_quantization():
                        entry = measure_variant(variant, quantized, task, spec, train, seed,
                                                extra)
                else:
                    entry = measure_variant(variant, model, task, spec, train, seed, {})
            except Exception as exc:
                entry = {"precision": variant, **errors(exc)}
            entry["edge_s"] = time.perf_counter() - start
            out.append(entry)
    finally:
        torch.set_num_threads(threads)
    return out


def run_edge(job: Job, model: nn.Module, task: Task, errors: ErrorFields
             ) -> list[dict[str, Any]]:
    """The edge track of a trained job (``job.train.edge``), for the row's ``edge`` field."""
    assert job.train.edge is not None
    try:
        copy = eager_cpu_copy(job, model, task)
    except Exception as exc:
        return [{"precision": "float32", **errors(exc)}]
    return measure_edge(copy, task, job.train.edge, job.train, job.seed, errors)
