"""Observing which kernel ran, instead of taking the mixer's word for it.

A mixer sets ``kernel_path`` to the path its code took (``sdpa-flash``, ``cudnn``,
``mamba_ssm-mamba_inner_fn+causal_conv1d``, ``cpu-fused-scan``, ...). That is an inference:
PyTorch's SDPA dispatcher, cuDNN's RNN heuristics or a package's internal fallback can run
something else. :func:`observe_kernel_path` runs one probe call under ``torch.profiler`` and
looks for each path's *signature* among the names of what ran: ATen ops
(``aten::_scaled_dot_product_flash_attention_for_cpu``,
``aten::_scaled_dot_product_attention_math``, ``aten::_cudnn_rnn``), CUDA kernels where the
profiler sees the device (CUPTI:
``selective_scan_fwd_kernel``, ``causal_conv1d_fwd_kernel``, Triton's ``_chunk_scan_fwd_kernel``,
``_selective_scan_update_kernel``, fla's ``chunk_gla_fwd_kernel_o``), and the profiler ranges
seqbench opens around its own native calls (``seqbench::scan_fwd`` and friends, entered right
where the C++ kernel is called through ctypes) and around its calls into mamba-ssm and fla
(``seqbench::mamba_ssm.mamba_inner_fn``: these tell apart calls that launch the same CUDA
kernels; on their own they do not count as seeing a kernel).

For each mixer, with claimed path ``P`` and the paths it declares it can take
(``Mixer.kernel_paths``):

- ``P`` has a signature and it is in the trace: ``(P, "observed")``;
- ``P`` is not, but another of the mixer's paths is: that one, ``"observed"`` (the claim was
  wrong and the row gets what ran);
- otherwise ``(P, "inferred")``: the path has no signature (pure PyTorch paths such as
  ``torch-chunked-scan`` or ``fft-conv`` are made of ordinary ops), or the profiler could not
  see it (no CUPTI on a CUDA machine: kernel names missing).

The probe changes nothing it should not: it runs in the model's current mode (grad enabled iff
``model.training``, the training forward without a backward) under ``torch.random.fork_rng``
(dropout draws do not move the job's random streams), and under the autocast dtype given, as
the kernels chosen depend on the dtype (flash attention on CUDA needs fp16/bf16). On the
mamba-ssm step path a probed step updates the state in place, as every step there does.

Every row gets its path this way (``kernel_path`` and ``kernel_path_source``): train and scale
jobs probe one training forward of one example after all their measurements
(:func:`forward_row_fields`; a compiled model the whole batch, the shapes it was compiled for),
stream jobs one more step (:func:`row_fields`). The probe is in no timing figure and, on CUDA,
in no memory figure; on CPU, where peak memory is the worker's peak RSS, it adds one forward
pass without a backward to the worker's life (of one example, unless compiled), and the profiler
without Kineto allocates nothing measurable.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from seqbench.worker.build import is_compiled

RNN_OP = r"^aten::(lstm|gru|rnn_tanh|rnn_relu)$"
CUDNN_RNN = r"^aten::_cudnn_rnn$"
SCAN_KERNEL = r"selective_scan_fwd_kernel"
CONV_FWD = r"causal_conv1d_(channellast_)?fwd_kernel"
SSD_KERNEL = r"_chunk_scan_fwd_kernel"
GATED_NORM = r"_layer_norm_fwd_1pass_kernel"
STEP_KERNEL = r"_selective_scan_update_kernel"
CONV_UPDATE = r"causal_conv1d_update_kernel"


def _call(what: str) -> str:
    """The profiler range seqbench opens around a call into a kernel package."""
    return "^" + re.escape("seqbench::" + what) + "$"


@dataclass(frozen=True)
class Signature:
    """What a trace must show (every ``needs`` pattern matches some name, no ``excludes``
    pattern matches any) for ``path`` to count as observed."""

    path: str
    needs: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    device: str | None = None  # the probe's device type, when the path names it

    def matches(self, names: set[str], device: torch.device) -> bool:
        if self.device is not None and device.type != self.device:
            return False
        found = all(any(re.search(p, n) for n in names) for p in self.needs)
        return found and not any(re.search(p, n) for p in self.excludes for n in names)


SIGNATURES: tuple[Signature, ...] = (
    Signature("sdpa-flash", (r"^aten::_scaled_dot_product_flash_attention",)),
    Signature("sdpa-efficient", (r"^aten::_scaled_dot_product_efficient_attention",)),
    Signature("sdpa-cudnn", (r"^aten::_scaled_dot_product_cudnn_attention",)),
    Signature("sdpa-math", (r"^aten::_scaled_dot_product_attention_math",)),
    Signature("cudnn", (CUDNN_RNN,)),
    Signature("aten-cpu", (RNN_OP,), (CUDNN_RNN,), device="cpu"),
    Signature("aten-cuda", (RNN_OP,), (CUDNN_RNN,), device="cuda"),
    Signature("cpu-fused-scan", (r"^seqbench::scan_fwd$", r"^seqbench::conv_fwd$")),
    Signature("cpu-fused-ssd", (r"^seqbench::ssd_fwd$", r"^seqbench::conv_fwd$")),
    Signature("cpu-fused-gated-scan", (r"^seqbench::gated_scan_fwd$",)),
    Signature("cpu-fused-linear-scan", (r"^seqbench::linscan_fwd$",)),
    Signature("mamba_ssm-mamba_inner_fn+causal_conv1d",
              (_call("mamba_ssm.mamba_inner_fn"), SCAN_KERNEL, CONV_FWD)),
    Signature("mamba_ssm-selective_scan_fn+causal_conv1d",
              (_call("mamba_ssm.selective_scan_fn"), SCAN_KERNEL, CONV_FWD)),
    Signature("mamba_ssm-selective_scan_fn+torch-conv1d",
              (_call("mamba_ssm.selective_scan_fn"), SCAN_KERNEL), (CONV_FWD,)),
    Signature("mamba_ssm-mamba_split_conv1d_scan_combined",
              (_call("mamba_ssm.mamba_split_conv1d_scan_combined"), SSD_KERNEL, CONV_FWD,
               GATED_NORM)),
    Signature("mamba_ssm-mamba_split_conv1d_scan_combined+torch-gated-norm",
              (_call("mamba_ssm.mamba_split_conv1d_scan_combined"), SSD_KERNEL, CONV_FWD),
              (GATED_NORM,)),
    Signature("mamba_ssm-mamba_chunk_scan_combined",
              (_call("mamba_ssm.mamba_chunk_scan_combined"), SSD_KERNEL), (CONV_FWD,)),
    Signature("mamba_ssm-selective_state_update+causal_conv1d_update",
              (_call("mamba_ssm.selective_state_update"), STEP_KERNEL, CONV_UPDATE)),
    Signature("mamba_ssm-selective_state_update+torch-conv-step",
              (_call("mamba_ssm.selective_state_update"), STEP_KERNEL), (CONV_UPDATE,)),
    Signature("fla-chunk_gla", (_call("fla.chunk_gla"), r"chunk_gla_fwd_kernel")),
)
BY_PATH = {s.path: s for s in SIGNATURES}


@dataclass
class Observation:
    """What one probe saw: the path and its source, per mixer and for the model."""

    path: str
    source: str  # observed | inferred
    claimed: str  # what the mixers reported
    seen: list[str] = field(default_factory=list)  # every signature that matched
    names: set[str] = field(default_factory=set)  # every op, range and kernel name traced


def trace_names(fn: Callable[[], Any], device: torch.device) -> set[str]:
    """Names of every op, profiler range and (where the profiler sees the device) kernel that
    ran during ``fn()``, which runs once; random number streams are left as they were.

    On CPU the names of ATen ops and ranges are all there is to see, and the profiler without
    Kineto records them: about 10 ms and no memory, where starting Kineto in a fresh process
    took 10 s and 70 MB of resident memory here (torch 2.13 CPU build). On CUDA, Kineto (with
    CUPTI) is what reports kernel names, so it is used there."""
    device = torch.device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    names: set[str] = set()
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if not cuda:  # ops and ranges only: the profiler without Kineto
            with torch.autograd.profiler.profile(use_kineto=False) as legacy:
                fn()
            names.update(event.name for event in legacy.function_events)
            return names
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            fn()
            torch.cuda.synchronize(device)
    for event in prof.events():
        names.add(event.name)
        names.update(k.name for k in getattr(event, "kernels", []) or [])
    return names


def decide(claimed: str, candidates: tuple[str, ...], names: set[str], device: torch.device
           ) -> tuple[str, str, list[str]]:
    """(path, source, matching signatures) for one mixer that reported ``claimed`` and can
    take ``candidates`` (the claim itself is always a candidate)."""
    paths = dict.fromkeys((claimed, *candidates))
    seen = [p for p in paths if p in BY_PATH and BY_PATH[p].matches(names, device)]
    if claimed in seen:
        return claimed, "observed", seen
    if seen:  # the trace contradicts the claim: what ran is what the row records
        return "+".join(sorted(seen)), "observed", seen
    return claimed, "inferred", seen


def _mixers(model: torch.nn.Module) -> list[Any]:
    mixers = getattr(model, "mixers", None)
    return list(mixers) if mixers is not None else [model]


@contextlib.contextmanager
def _mode(model: torch.nn.Module, device: torch.device,
          autocast_dtype: torch.dtype | None) -> Iterator[None]:
    with torch.set_grad_enabled(model.training), \
            torch.autocast(device.type, dtype=autocast_dtype,
                           enabled=autocast_dtype is not None):
        yield


def observe(model: torch.nn.Module, fn: Callable[[], Any], device: torch.device,
            autocast_dtype: torch.dtype | None = None) -> Observation:
    """Run ``fn`` (a call of ``model``) once under the profiler and decide every mixer's path;
    the model's path joins distinct paths with ``+`` as ``Backbone.kernel_path`` does."""
    device = torch.device(device)

    def probe() -> None:
        with _mode(model, device, autocast_dtype):
            fn()

    names = trace_names(probe, device)
    decided: dict[tuple[str, str], tuple[str, str, list[str]]] = {}
    for mixer in _mixers(model):
        claim = mixer.kernel_path
        key = (type(mixer).__qualname__, claim)
        if key not in decided:
            decided[key] = decide(claim, type(mixer).kernel_paths, names, device)
    paths = sorted({path for path, _, _ in decided.values()})
    claims = sorted({claim for _, claim in decided})
    observed = all(source == "observed" for _, source, _ in decided.values())
    seen = sorted({s for _, _, sigs in decided.values() for s in sigs})
    return Observation(path="+".join(paths), source="observed" if observed else "inferred",
                       claimed="+".join(claims), seen=seen, names=names)


def observe_kernel_path(model: torch.nn.Module, x: torch.Tensor, device: torch.device,
                        autocast_dtype: torch.dtype | None = None) -> tuple[str, str]:
    """(kernel path, ``observed`` | ``inferred``) of one forward of ``model`` on ``x``."""
    obs = observe(model, lambda: model(x), device, autocast_dtype)
    return obs.path, obs.source


def observe_step_kernel_path(model: torch.nn.Module, x_t: torch.Tensor, state: Any,
                             device: torch.device, autocast_dtype: torch.dtype | None = None
                             ) -> tuple[str, str]:
    """The same for one streaming step ``model.step(x_t, state)``."""
    step = getattr(model, "step")  # noqa: B009 (a Backbone's, not nn.Module's)
    obs = observe(model, lambda: step(x_t, state), device, autocast_dtype)
    return obs.path, obs.source


def row_fields(model: torch.nn.Module, fn: Callable[[], Any], device: torch.device,
               autocast_dtype: torch.dtype | None = None, *, train: bool) -> dict[str, str]:
    """``kernel_path`` and ``kernel_path_source`` for a row, from one probe call ``fn`` (a
    call of ``model`` after the job's measurements) in training mode or not (``train``); the
    model's mode is restored. Where the probe runs out of memory, the row keeps the path the
    mixers last reported, ``inferred``."""
    was_training = model.training
    model.train(train)
    try:
        obs = observe(model, fn, device, autocast_dtype)
    except (MemoryError, torch.OutOfMemoryError):
        return {"kernel_path": str(getattr(model, "kernel_path", "unknown")),
                "kernel_path_source": "inferred"}
    finally:
        model.train(was_training)
    return {"kernel_path": obs.path, "kernel_path_source": obs.source}


def forward_row_fields(model: torch.nn.Module, x: torch.Tensor, device: torch.device,
                       autocast_dtype: torch.dtype | None = None) -> dict[str, str]:
    """:func:`row_fields` of one training forward (grad enabled, dropout on) of the first
    example of ``x``, or of all of ``x`` for a compiled model (its shapes, so no recompile)."""
    probe = x if is_compiled(model) else x[:1]
    return row_fields(model, lambda: model(probe), device, autocast_dtype, train=True)
