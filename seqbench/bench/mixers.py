"""Forward + backward of every new mixer's parallel form against its naive reference, side by side
in one run, on CPU: the kernels the mixers train with, on the shapes a width-64 model gives them.

    python -m seqbench.bench.mixers                         # L 1024 4096, batch 8, 1 and 2 threads
    python -m seqbench.bench.mixers --cases gla-data mlstm --lengths 1024 --threads 1

Cases (parallel form / reference):

- ``tcn``: the TCN mixer's Conv1d stack (8 levels, kernel 7, width 64) / its streaming step loop
  (ring buffers; weight norm computed once for the whole loop, ``parametrize.cached``);
- ``mingru-chunked``, ``mingru-log``, ``mingru-fused``: minGRU's recurrence through seqbench's
  chunked scan, through the paper's log-space (heinsen) scan, and through the fused C++ kernel
  with the gates inside (``gated_scan_fused``, CPU) / the step loop;
- ``lru``, ``lru-fused``: the LRU's complex diagonal recurrence (64 states) by the chunked scan
  and by the fused C++ kernel (``linear_scan_fused``) / the step loop;
- ``gla-data``, ``gla-fixed``: chunked gated linear attention (4 heads, K 8, V 16, the GLA
  mixer's default chunk) with GLA's data-dependent and RetNet's fixed decay / the recurrence;
- ``hyena``: the FFT long convolution (64 channels) / the direct causal sum (``O(L^2)``);
- ``mlstm``: xLSTM's chunked mLSTM cell (4 heads of 32, the mixer's default chunk) / its
  stabilised recurrence;
- ``mixer:<name>``: a whole mixer at its defaults (``xlstm`` with pattern ``m``: an sLSTM block
  loops over time in both forms) / the same mixer's streaming step loop, projections
  included; what training by the parallel form saves over stepping through the sequence.

The TCN's gradients are compared at ``rtol`` 3e-2: through 8 weight-normed residual ReLU
blocks the fp32 gradients are ill-conditioned; the parallel form's differ from an fp64 run of
the same weights by 2.7e-3 at L = 1024 and 9.1e-3 at L = 4096 (its outputs by 1.4e-7),
measured, so agreement between two fp32 paths cannot be tighter.

For each (case, length, threads) the same seeded leaf tensors go through both; the timed call is
``y = f(inputs); y.backward(gy)``; after one untimed warm-up call the median of ``--repeats``
calls is reported (a first call longer than ``--single-call-s`` is reported on its own). No
speed is reported where outputs or gradients disagree beyond ``--rtol`` (relative to each
tensor's largest magnitude): the row says ``MISMATCH`` and the exit status is 1. The ratio is
reference time / parallel time; the target is at least 5x at L = 4096.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from seqbench.worker.models import MODELS, Mixer
from seqbench.worker.models.gla import GLAConfig
from seqbench.worker.models.hyena import direct_causal_conv, fft_causal_conv
from seqbench.worker.models.minrnn import g, log_g
from seqbench.worker.models.ops.gla import gla_chunked, gla_naive
from seqbench.worker.models.ops.linear_scan import (
    gated_scan_fused,
    linear_scan,
    linear_scan_fused,
    linear_scan_naive,
    log_linear_scan,
)
from seqbench.worker.models.ops.mlstm import mlstm_chunked, mlstm_naive
from seqbench.worker.models.xlstm import XLSTMConfig

Inputs = dict[str, torch.Tensor]
TARGET_RATIO, TARGET_LENGTH = 5.0, 4096


@dataclass
class Case:
    make: Callable[[int, int, int, torch.Generator], Inputs]  # (batch, length, width, gen)
    fast: Callable[[Inputs], torch.Tensor]
    ref: Callable[[Inputs], torch.Tensor]
    params: Callable[[], list[torch.nn.Parameter]] = list  # parameters whose gradients count
    rtol: float | None = None  # None: --rtol


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def _mingru_coefficients(x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.sigmoid(-x["k"]), torch.sigmoid(x["k"]) * g(x["h"])  # 1 - z, z g(h~)


def _gla_inputs(fixed: bool) -> Callable[[int, int, int, torch.Generator], Inputs]:
    def make(B: int, L: int, d: int, gen: torch.Generator) -> Inputs:
        H = 4
        K, V = d // 2 // H, d // H  # GLA's expand_k 0.5, expand_v 1
        x = {"q": _randn(gen, B, L, H, K), "k": _randn(gen, B, L, H, K),
             "v": _randn(gen, B, L, H, V)}
        if not fixed:
            x["gk"] = _randn(gen, B, L, H, K)
        return x
    return make


def _gla_log_a(x: Inputs) -> torch.Tensor:
    if "gk" in x:
        return F.logsigmoid(x["gk"]) / GLAConfig().gate_normalizer
    H = x["q"].shape[2]
    return torch.log(1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32))).unsqueeze(-1)


def _lru_inputs(B: int, L: int, d: int, gen: torch.Generator) -> Inputs:
    N = d
    return {"nu_log": torch.log(-0.5 * torch.log(torch.rand(N, generator=gen) * 0.5 + 0.5)),
            "theta_log": torch.log(6.28 * torch.rand(N, generator=gen)),
            "bu_re": _randn(gen, B, L, N), "bu_im": _randn(gen, B, L, N)}


def _lru(scan: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
         ) -> Callable[[Inputs], torch.Tensor]:
    def run(x: Inputs) -> torch.Tensor:
        lam = torch.polar(torch.exp(-torch.exp(x["nu_log"])), torch.exp(x["theta_log"]))
        h = scan(lam.view(1, 1, -1), torch.complex(x["bu_re"], x["bu_im"]))
        return torch.view_as_real(h)
    return run


def _mlstm_inputs(B: int, L: int, d: int, gen: torch.Generator) -> Inputs:
    NH = 4
    DH = 2 * d // NH  # xLSTM's mLSTM width: proj_factor 2
    return {"q": _randn(gen, B, L, NH, DH), "k": _randn(gen, B, L, NH, DH),
            "v": _randn(gen, B, L, NH, DH), "i": _randn(gen, B, L, NH),
            "f": 3 + _randn(gen, B, L, NH)}


_MIXERS: dict[tuple[str, int], Mixer] = {}
MIXER_PARAMS = {"xlstm": {"pattern": "m"}}  # sLSTM blocks loop over time in both forms


def _mixer(name: str, d: int) -> Mixer:
    """The registered mixer ``name`` at width ``d`` with its defaults, built once (seed 0)."""
    if (name, d) not in _MIXERS:
        cls = MODELS[name].load()
        torch.manual_seed(0)
        _MIXERS[name, d] = cls(d, cls.Config(**MIXER_PARAMS.get(name, {})))
    return _MIXERS[name, d]


def _step_loop(name: str) -> Callable[[Inputs], torch.Tensor]:
    def run(x: Inputs) -> torch.Tensor:
        mixer = _mixer(name, x["x"].shape[-1])
        with parametrize.cached():  # weight norm (TCN) once per loop, as a streaming loop would
            state = mixer.init_state(x["x"].shape[0], x["x"].device, x["x"].dtype)
            ys = []
            for x_t in x["x"].unbind(1):
                y_t, state = mixer.step(x_t, state)
                ys.append(y_t)
        return torch.stack(ys, dim=1)
    return run


def _mixer_case(name: str, rtol: float | None = None) -> Case:
    return Case(lambda B, L, d, gen: {"x": _randn(gen, B, L, d)},
                lambda x: _mixer(name, x["x"].shape[-1])(x["x"]), _step_loop(name),
                params=lambda: [p for (n, _), m in _MIXERS.items() if n == name
                                for p in m.parameters()],
                rtol=rtol)


CASES: dict[str, Case] = {
    "tcn": _mixer_case("tcn", rtol=3e-2),
    "mingru-chunked": Case(lambda B, L, d, gen: {"k": _randn(gen, B, L, d),
                                                 "h": _randn(gen, B, L, d)},
                           lambda x: linear_scan(*_mingru_coefficients(x)),
                           lambda x: linear_scan_naive(*_mingru_coefficients(x))[0]),
    "mingru-log": Case(lambda B, L, d, gen: {"k": _randn(gen, B, L, d),
                                             "h": _randn(gen, B, L, d)},
                       lambda x: log_linear_scan(-F.softplus(x["k"]),
                                                 -F.softplus(-x["k"]) + log_g(x["h"])),
                       lambda x: linear_scan_naive(*_mingru_coefficients(x))[0]),
    "mingru-fused": Case(lambda B, L, d, gen: {"k": _randn(gen, B, L, d),
                                               "h": _randn(gen, B, L, d)},
                         lambda x: gated_scan_fused(x["k"], x["h"]),
                         lambda x: linear_scan_naive(*_mingru_coefficients(x))[0]),
    "lru": Case(_lru_inputs, _lru(linear_scan), _lru(lambda a, b: linear_scan_naive(a, b)[0])),
    "lru-fused": Case(_lru_inputs, _lru(linear_scan_fused),
                      _lru(lambda a, b: linear_scan_naive(a, b)[0])),
    "gla-data": Case(_gla_inputs(fixed=False),
                     lambda x: gla_chunked(x["q"], x["k"], x["v"], _gla_log_a(x),
                                           x["q"].shape[-1] ** -0.5, GLAConfig().chunk)[0],
                     lambda x: gla_naive(x["q"], x["k"], x["v"], _gla_log_a(x),
                                         x["q"].shape[-1] ** -0.5)[0]),
    "gla-fixed": Case(_gla_inputs(fixed=True),
                      lambda x: gla_chunked(x["q"], x["k"], x["v"], _gla_log_a(x),
                                            x["q"].shape[-1] ** -0.5,
                                            GLAConfig(decay="fixed").chunk)[0],
                      lambda x: gla_naive(x["q"], x["k"], x["v"], _gla_log_a(x),
                                          x["q"].shape[-1] ** -0.5)[0]),
    "hyena": Case(lambda B, L, d, gen: {"u": _randn(gen, B, L, d), "k": _randn(gen, L, d) / L},
                  lambda x: fft_causal_conv(x["u"], x["k"]),
                  lambda x: direct_causal_conv(x["u"], x["k"])),
    "mlstm": Case(_mlstm_inputs,
                  lambda x: mlstm_chunked(**x, chunk=XLSTMConfig().chunk)[0],  # type: ignore[arg-type]
                  lambda x: mlstm_naive(**x)[0]),  # type: ignore[arg-type]
    **{f"mixer:{name}": _mixer_case(name) for name in
       ("mingru", "minlstm", "lru", "gla", "xlstm")},
}


def measure(case: Case, impl: str, inputs: Inputs, gy: torch.Tensor, repeats: int,
            single_call_s: float) -> dict[str, Any]:
    """Time ``y = f(inputs); y.backward(gy)``; return timings, the output and the gradients."""
    fn = case.fast if impl == "parallel" else case.ref
    leaves = list(inputs.values()) + case.params()

    def call() -> tuple[float, torch.Tensor]:
        for t in leaves:
            t.grad = None
        start = time.perf_counter()
        y = fn(inputs)
        y.backward(gy)
        return time.perf_counter() - start, y.detach()

    first, y = call()
    times = [first] if first > single_call_s else [call()[0] for _ in range(repeats)]
    return {"times_s": times, "median_s": statistics.median(times), "y": y,
            "grads": [t.grad.clone() for t in leaves if t.grad is not None]}


def max_rel_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest ``|a - b| / max |b|`` over the output and every gradient."""
    pairs = [(a["y"], b["y"]), *zip(a["grads"], b["grads"], strict=True)]
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-30)) for x, y in pairs)


def run_case(name: str, length: int, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(threads)
    case = CASES[name]
    gen = torch.Generator().manual_seed(args.seed)
    inputs = {k: v.requires_grad_() for k, v in case.make(args.batch, length, args.width,
                                                          gen).items()}
    with torch.no_grad():
        shape = case.fast(inputs).shape
    gy = torch.randn(shape, generator=gen)
    results = {impl: measure(case, impl, inputs, gy, args.repeats, args.single_call_s)
               for impl in ("parallel", "reference")}
    diff = max_rel_diff(results["parallel"], results["reference"])
    rtol = case.rtol if case.rtol is not None else args.rtol
    row = {"case": name, "length": length, "threads": threads, "rel_diff": diff, "rtol": rtol,
           "mismatch": diff > rtol, "load_avg": os.getloadavg()[0]}
    for impl, res in results.items():
        row[impl] = {"median_s": res["median_s"], "calls": len(res["times_s"])}
    if not row["mismatch"]:
        row["ratio"] = results["reference"]["median_s"] / results["parallel"]["median_s"]
    return row


def header(args: argparse.Namespace) -> dict[str, Any]:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        sha = ""
    return {"git_sha": sha, "python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_avg_before": os.getloadavg(),
            "shape": {"batch": args.batch, "width": args.width}}


def line(row: dict[str, Any]) -> str:
    def cell(impl: str) -> str:
        r = row[impl]
        return f"{r['median_s']:.3f} s" + (" (1 call)" if r["calls"] == 1 else "")

    head = f"{row['case']:<16} L={row['length']:<5} threads={row['threads']}"
    if row["mismatch"]:
        return f"{head}  MISMATCH (max rel diff {row['rel_diff']:.1e})"
    return (f"{head}  parallel {cell('parallel'):>16}  reference {cell('reference'):>16}  "
            f"ratio {row['ratio']:6.1f}x  max rel diff {row['rel_diff']:.0e}  "
            f"load {row['load_avg']:.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqbench.bench.mixers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=64, help="model width the shapes come from")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up call")
    p.add_argument("--single-call-s", type=float, default=5.0,
                   help="a first call longer than this is the only measurement")
    p.add_argument("--rtol", type=float, default=1e-4, help="agreement required before timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    info = header(args)
    print(json.dumps(info), flush=True)
    rows = []
    for threads in args.threads:
        for length in args.lengths:
            for name in args.cases:
                rows.append(run_case(name, length, threads, args))
                print(line(rows[-1]), flush=True)
    info["load_avg_after"] = os.getloadavg()
    ok = not any(r["mismatch"] for r in rows)
    at_target = [r for r in rows if r["length"] == TARGET_LENGTH and "ratio" in r]
    short = sorted({r["case"] for r in at_target if r["ratio"] < TARGET_RATIO})
    if at_target:
        print(f"target {TARGET_RATIO:.0f}x at L={TARGET_LENGTH}: "
              + ("met by every case" if not short else f"missed by {', '.join(short)}"))
    if args.json:
        args.json.write_text(json.dumps({"header": info, "rows": rows}, indent=2))
    if not ok:
        print("outputs disagree: speeds of mismatching cases are not reported")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
