"""Checks that need a CUDA device, in one command, with a short report:

    python -m seqbench.bench.gpu_check -o gpu-report.md          # every check
    python -m seqbench.bench.gpu_check --only model:mamba -o r.md # checks whose name contains it
    pytest -m gpu tests/gpu                                        # the same checks under pytest

Checks (one line each in the report: pass, fail or skip, what was measured):

- ``model:<name>:<fp32|bf16>``: every registered model at a small size, forward and backward
  (finite loss and gradients) in fp32 and under bf16 autocast; prefill then steps against the
  forward (streaming models); and the kernel path of the training forward and of a step, as
  claimed by the mixer, against the one seen in a profiler trace
  (:mod:`seqbench.worker.kernels_seen`): a path with a trace signature must be observed, and a
  trace that shows another path fails the check;
- ``mamba_ssm:<...>``: mamba-ssm's kernels against seqbench's scans: ``selective_scan_fn``
  against :func:`~seqbench.worker.models.ops.selective_scan`, ``mamba_chunk_scan_combined``
  against :func:`~seqbench.worker.models.ops.ssd_chunked` (outputs and gradients), and the
  ``mamba``/``mamba2`` mixers on ``backend: mamba_ssm`` against the same weights on
  ``backend: torch`` (skipped where mamba-ssm does not import);
- ``peak-memory``: the CUDA peak counters as seqbench reads them
  (:class:`~seqbench.worker.measure.CudaMemory`) against a known allocation: the peak is the
  allocated bytes before plus exactly the bytes allocated, and a second measured phase does
  not see the first one's peak (the counters were reset);
- ``event-timing``: seqbench's CUDA-event timing (:func:`~seqbench.worker.measure.timed`)
  against ``torch.cuda._sleep(cycles)``: twice the cycles take twice the time, the events
  cover the kernel and not only its launch (within 10% of the wall time around launch and
  synchronize), and with the SM clock known the time is ``cycles / clock`` within 25%.

The exit status is 1 if any check failed. Each check's logic (the judging of measured numbers)
is tested on CPU in tests/test_gpu_check.py.
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# max |a - b| / max |b| of a prefill + steps against the forward: fp32 on GPU (TF32 matmuls
# off, reductions in another order), bf16 autocast (8 bits of mantissa, errors add up over
# layers and steps)
STREAM_TOL = {"fp32": 1e-3, "bf16": 6e-2}
SEQ_LEN, BATCH, WIDTH = 96, 4, 64


@dataclass
class Result:
    name: str
    status: str  # pass | fail | skip
    detail: str = ""
    seconds: float = math.nan


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# --- judging measured numbers (tested on CPU) ------------------------------------------------
def judge_peak(base: int, size: int, peak: int, reserved: int, second_peak: int,
               second_size: int) -> tuple[bool, str]:
    """The peak of a phase that allocated ``size`` bytes on top of ``base`` must be exactly
    ``base + size`` (the allocator rounds to 512 bytes; sizes here are multiples), reserved at
    least that, and a second phase allocating ``second_size`` must report its own peak."""
    problems = []
    if peak != base + size:
        problems.append(f"peak {peak} != allocated before {base} + {size}")
    if reserved < peak:
        problems.append(f"reserved {reserved} < peak {peak}")
    if second_peak != base + second_size:
        problems.append(f"second phase peak {second_peak} != {base} + {second_size} "
                        "(counters not reset between phases?)")
    detail = (f"peak {peak} = base {base} + {size}; reserved {reserved}; second phase "
              f"{second_peak}")
    return not problems, "; ".join(problems) or detail


def judge_timing(t1: float, t2: float, wall: float, expected: float | None
                 ) -> tuple[bool, str]:
    """``t1``, ``t2``: event times of a sleep of ``c`` and ``2c`` cycles; ``wall``: perf_counter
    around launching the first and synchronizing; ``expected``: ``c / clock`` if known."""
    problems = []
    ratio = t2 / t1 if t1 > 0 else math.inf
    if not 1.8 <= ratio <= 2.2:
        problems.append(f"2x cycles took {ratio:.2f}x the time")
    if not 0.9 * wall <= t1 <= 1.05 * wall + 1e-3:
        problems.append(f"events {t1 * 1e3:.3f} ms vs wall {wall * 1e3:.3f} ms "
                        "(events must cover the kernel, not its launch)")
    if expected is not None and abs(t1 - expected) > 0.25 * expected:
        problems.append(f"events {t1 * 1e3:.3f} ms vs cycles / clock {expected * 1e3:.3f} ms")
    detail = (f"sleep {t1 * 1e3:.2f} ms, 2x {t2 * 1e3:.2f} ms, wall {wall * 1e3:.2f} ms"
              + ("" if expected is None else f", cycles / clock {expected * 1e3:.2f} ms"))
    return not problems, "; ".join(problems) or detail


# --- checks -----------------------------------------------------------------------------------
def _autocast(device: torch.device, dtype: str) -> Any:
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def check_model(name: str, dtype: str, device: torch.device) -> Result:
    """Forward, backward, streaming and the observed kernel path of one registered model."""
    from seqbench.worker.kernels_seen import BY_PATH, observe
    from seqbench.worker.models import MODELS, IOSpec, build_model

    label = f"model:{name}:{dtype}"
    cls = MODELS[name].load()
    reason = cls.unavailable_reason(cls.Config(), device)
    if reason:
        return Result(label, "skip", reason)
    step = cls.d_model_multiple(cls.Config())
    torch.manual_seed(0)
    io = IOSpec("tokens", 16, 16, per_position=True)
    model = build_model(name, {"d_model": -(-WIDTH // step) * step, "n_layers": 2}, io)
    model = model.to(device).train()
    x = torch.randint(0, 16, (BATCH, SEQ_LEN), device=device)
    with _autocast(device, dtype):
        out = model(x)
        loss = F.cross_entropy(out.float().flatten(0, 1), x.flatten())
    loss.backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None
           or not torch.isfinite(p.grad).all()]
    if not torch.isfinite(loss) or bad:
        return Result(label, "fail", f"loss {float(loss):.3g}; bad gradients: {bad[:3]}")
    notes, problems = [f"train {model.kernel_path}"], []

    def seen(call: Callable[[], Any], what: str) -> None:
        obs = observe(model, call, device, DTYPES[dtype] if dtype != "fp32" else None)
        if obs.path != obs.claimed:
            problems.append(f"{what}: claimed {obs.claimed}, trace shows {obs.path}")
        elif obs.source != "observed" and any(p in BY_PATH for p in obs.claimed.split("+")):
            problems.append(f"{what}: {obs.claimed} has a signature but was not seen in the "
                            "trace (profiler without CUDA activity?)")
        notes.append(f"{what} {obs.source}")

    seen(lambda: model(x), "train forward")
    if model.supports_step:
        model.eval()
        split = SEQ_LEN * 2 // 3
        with torch.no_grad(), _autocast(device, dtype):
            full = model(x)
            y, state = model.prefill(x[:, :split])
            ys = [y]
            for t in range(split, SEQ_LEN):
                y_t, state = model.step(x[:, t], state)
                ys.append(y_t.unsqueeze(1))
            err = rel_err(torch.cat(ys, 1).float(), full.float())
            notes.append(f"stream {model.kernel_path} rel err {err:.1e}")
            if err > STREAM_TOL[dtype]:
                problems.append(f"prefill + steps differ from the forward by {err:.1e}")
            seen(lambda: model.step(x[:, -1], state), "step")
    return Result(label, "fail" if problems else "pass", "; ".join(problems or notes))


def _needs(module: str) -> str | None:
    from seqbench.worker.backends import import_error

    error = import_error(module)
    return None if error is None else f"import {module}: {error}"


def check_mamba_ssm_scan(dtype: str, device: torch.device) -> Result:
    """``selective_scan_fn`` against seqbench's chunked scan: outputs and gradients."""
    label = f"mamba_ssm:selective_scan_fn:{dtype}"
    reason = _needs("mamba_ssm.ops.selective_scan_interface")
    if reason:
        return Result(label, "skip", reason)
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    from seqbench.worker.models.ops import selective_scan

    gen = torch.Generator(device=device).manual_seed(0)
    B, L, D, N = 2, 1000, 64, 16
    f = DTYPES[dtype]
    u = torch.randn(B, L, D, device=device, generator=gen).to(f)
    delta = F.softplus(torch.randn(B, L, D, device=device, generator=gen) - 1).to(f)
    A = -(torch.rand(D, N, device=device, generator=gen) * 4 + 0.5)
    Bm = torch.randn(B, L, N, device=device, generator=gen).to(f)
    Cm = torch.randn(B, L, N, device=device, generator=gen).to(f)
    leaves = [t.requires_grad_() for t in (u, delta, A, Bm, Cm)]
    gy = torch.randn(B, L, D, device=device, generator=gen)
    t = lambda v: v.transpose(1, 2).contiguous()  # noqa: E731
    theirs = selective_scan_fn(t(u), t(delta), A, t(Bm), t(Cm)).transpose(1, 2)
    ours = selective_scan(u, delta, A, Bm, Cm)
    g_theirs = torch.autograd.grad(theirs, leaves, gy.to(theirs.dtype))
    g_ours = torch.autograd.grad(ours, leaves, gy.to(ours.dtype))
    tol = {"fp32": 1e-4, "bf16": 2e-2}[dtype]
    errs = [rel_err(theirs, ours)] + [rel_err(a, b) for a, b in zip(g_theirs, g_ours,
                                                                      strict=True)]
    ok = max(errs[:1]) < tol and max(errs[1:]) < 10 * tol
    return Result(label, "pass" if ok else "fail",
                  "rel err y {:.1e}, grads u/delta/A/B/C {}".format(
                      errs[0], " ".join(f"{e:.1e}" for e in errs[1:])))


def check_mamba_ssm_ssd(dtype: str, device: torch.device) -> Result:
    """``mamba_chunk_scan_combined`` against seqbench's chunked SSD."""
    label = f"mamba_ssm:mamba_chunk_scan_combined:{dtype}"
    reason = _needs("mamba_ssm.ops.triton.ssd_combined")
    if reason:
        return Result(label, "skip", reason)
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from seqbench.worker.models.ops import ssd_chunked

    gen = torch.Generator(device=device).manual_seed(0)
    B, L, H, P, G, N = 2, 1000, 4, 32, 2, 64
    f = DTYPES[dtype]
    x = torch.randn(B, L, H, P, device=device, generator=gen).to(f).requires_grad_()
    dt = F.softplus(torch.randn(B, L, H, device=device, generator=gen) - 2).requires_grad_()
    A = -(torch.rand(H, device=device, generator=gen) * 3 + 0.1)
    Bm = torch.randn(B, L, G, N, device=device, generator=gen).to(f).requires_grad_()
    Cm = torch.randn(B, L, G, N, device=device, generator=gen).to(f).requires_grad_()
    theirs = mamba_chunk_scan_combined(x, dt, A, Bm, Cm, chunk_size=64)
    ours = ssd_chunked(x, dt, A, Bm, Cm, 64)
    gy = torch.randn_like(ours.float())
    leaves = [x, dt, Bm, Cm]
    g_theirs = torch.autograd.grad(theirs, leaves, gy.to(theirs.dtype))
    g_ours = torch.autograd.grad(ours, leaves, gy.to(ours.dtype))
    tol = {"fp32": 2e-3, "bf16": 3e-2}[dtype]  # Triton's fp32 dots may use TF32
    errs = [rel_err(theirs, ours)] + [rel_err(a, b) for a, b in zip(g_theirs, g_ours,
                                                                      strict=True)]
    ok = errs[0] < tol and max(errs[1:]) < 10 * tol
    return Result(label, "pass" if ok else "fail",
                  "rel err y {:.1e}, grads x/dt/B/C {}".format(
                      errs[0], " ".join(f"{e:.1e}" for e in errs[1:])))


def check_mamba_ssm_mixer(name: str, dtype: str, device: torch.device, **cfg: Any) -> Result:
    """A mixer on mamba-ssm's kernels against the same weights on seqbench's torch path:
    forward, gradients, prefill + steps."""
    from seqbench.worker.models import mixer_class

    label = f"mamba_ssm:mixer:{name}{'-groups' if cfg.get('ngroups', 1) > 1 else ''}:{dtype}"
    cls = mixer_class(name)
    reason = cls.unavailable_reason(cls.Config(backend="mamba_ssm"), device)
    if reason:
        return Result(label, "skip", reason)
    torch.manual_seed(0)
    theirs = cls(WIDTH, cls.Config(backend="mamba_ssm", **cfg)).to(device)
    ours = cls(WIDTH, cls.Config(backend="torch", **cfg)).to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(BATCH, 300, WIDTH, device=device)
    with _autocast(device, dtype):
        ya, yb = theirs(x), ours(x)
        w = torch.randn_like(yb.float())
        (ya.float() * w).sum().backward()
        (yb.float() * w).sum().backward()
        path = theirs.kernel_path
        theirs.eval()
        with torch.no_grad():
            y, state = theirs.prefill(x[:, :200])
            ys = [y]
            for x_t in x[:, 200:].unbind(1):
                y_t, state = theirs.step(x_t, state)
                ys.append(y_t.unsqueeze(1))
    tol = {"fp32": 2e-3, "bf16": 3e-2}[dtype]
    grads = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    g_err = max(rel_err(p.grad, grads[n]) for n, p in theirs.named_parameters()
                if p.grad is not None)
    y_err, s_err = rel_err(ya, yb), rel_err(torch.cat(ys, 1).float(), yb.float())
    ok = y_err < tol and g_err < 10 * tol and s_err < 10 * tol
    return Result(label, "pass" if ok else "fail",
                  f"{path} / {theirs.kernel_path}: rel err y {y_err:.1e}, grads {g_err:.1e}, "
                  f"prefill + steps {s_err:.1e}")


def check_peak_memory(device: torch.device) -> Result:
    from seqbench.worker.measure import CudaMemory

    size, second = 64 << 20, 16 << 20
    with CudaMemory(device) as memory:
        base = torch.cuda.memory_allocated(device)
        block = torch.empty(size, dtype=torch.uint8, device=device).fill_(1)
        del block
        fields = memory.fields()
    with CudaMemory(device) as memory2:
        block = torch.empty(second, dtype=torch.uint8, device=device).fill_(1)
        del block
        second_peak = memory2.fields()["peak_mem_bytes"]
    ok, detail = judge_peak(base, size, fields["peak_mem_bytes"],
                            fields["peak_mem_reserved_bytes"], second_peak, second)
    return Result("peak-memory", "pass" if ok else "fail", detail)


def sm_clock_hz(device: torch.device) -> float | None:
    """The SM clock: ``torch.cuda.clock_rate`` (MHz, via NVML) or the device properties'
    ``clock_rate`` (kHz); None when neither is available."""
    try:
        return float(torch.cuda.clock_rate(device)) * 1e6
    except Exception:
        khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", None)
        return float(khz) * 1e3 if khz else None


def check_event_timing(device: torch.device) -> Result:
    from seqbench.worker.measure import timed

    hz = sm_clock_hz(device)
    cycles = int(0.05 * hz) if hz else 50_000_000  # about 50 ms
    timed(lambda: torch.cuda._sleep(1000), device)  # warm up the kernel
    t1, _ = timed(lambda: torch.cuda._sleep(cycles), device)
    t2, _ = timed(lambda: torch.cuda._sleep(2 * cycles), device)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    t1b, _ = timed(lambda: torch.cuda._sleep(cycles), device)  # clocks may have moved
    ok, detail = judge_timing(min(t1, t1b), t2, wall, cycles / hz if hz else None)
    return Result("event-timing", "pass" if ok else "fail", detail)


def check_names() -> list[str]:
    """Every check's name (computable without a GPU)."""
    from seqbench.worker.models import MODELS

    names = [f"model:{m}:{d}" for m in MODELS.names() for d in DTYPES]
    names += [f"mamba_ssm:{k}:{d}" for k in ("selective_scan_fn", "mamba_chunk_scan_combined",
                                              "mixer:mamba", "mixer:mamba2",
                                              "mixer:mamba2-groups") for d in DTYPES]
    return [*names, "peak-memory", "event-timing"]


def run_check(name: str, device: torch.device) -> Result:
    """Run the check called ``name``; an exception is a failed check with its text."""
    parts = name.split(":")
    start = time.perf_counter()
    try:
        if parts[0] == "model":
            result = check_model(parts[1], parts[2], device)
        elif parts[:2] == ["mamba_ssm", "selective_scan_fn"]:
            result = check_mamba_ssm_scan(parts[2], device)
        elif parts[:2] == ["mamba_ssm", "mamba_chunk_scan_combined"]:
            result = check_mamba_ssm_ssd(parts[2], device)
        elif parts[:2] == ["mamba_ssm", "mixer"]:
            cfg: dict[str, Any] = {"headdim": 32} if parts[2].startswith("mamba2") else {}
            if parts[2].endswith("-groups"):
                cfg["ngroups"] = 2
            result = check_mamba_ssm_mixer(parts[2].removesuffix("-groups"), parts[3], device,
                                           **cfg)
            result.name = name
        elif name == "peak-memory":
            result = check_peak_memory(device)
        elif name == "event-timing":
            result = check_event_timing(device)
        else:
            raise KeyError(f"no check named {name}")
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result = Result(name, "fail", f"{type(exc).__name__}: {exc}".splitlines()[0]
                        + f" (at {Path(where.filename).name}:{where.lineno})")
    result.seconds = time.perf_counter() - start
    return result


def header(device: torch.device) -> dict[str, str]:
    from seqbench.worker.backends import version

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        sha = ""
    info = {"git": sha, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": str(torch.version.cuda), "host": platform.node()}
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    for dist in ("mamba-ssm", "causal-conv1d", "triton", "flash-linear-attention"):
        info[dist] = version(dist) or "not installed"
    return info


def report(results: list[Result], info: dict[str, str]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    lines = ["# seqbench GPU check", "",
             ", ".join(f"{k} {v}" for k, v in info.items()), "",
             f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped", "",
             "| check | status | s | detail |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | "
                     f"{r.detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqbench.bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path("gpu-report.md"))
    p.add_argument("--only", nargs="+", default=[], help="run checks whose name contains one")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (torch.cuda.is_available() is False): nothing checked")
        return 2
    names = [n for n in check_names() if not args.only or any(o in n for o in args.only)]
    results = []
    for name in names:
        results.append(run_check(name, device))
        r = results[-1]
        print(f"{r.status:<4} {r.name:<42} {r.seconds:6.1f} s  {r.detail}", flush=True)
    args.output.write_text(report(results, header(device)))
    print(f"report: {args.output}")
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
