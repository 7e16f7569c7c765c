"""Streaming prefill of Mamba and Mamba-2 on CPU, side by side in one run: the parallel prefill
(the fused C++ kernels returning their last state, ``Mamba.prefill``) against stepping through
the prompt token by token (``Mixer.prefill``, the default every step-capable mixer has).

    python -m seqbench.bench.prefill                          # L 1024 4096 16384, 1 and 2 threads
    python -m seqbench.bench.prefill --lengths 4096 --threads 1

The mixer is built at its defaults at width 64 (seed 0), batch 1 (streaming), under
``torch.inference_mode`` as a stream job runs it; both forms must return the same outputs and
state (``--rtol``) before a time is reported. After one untimed call the median of
``--repeats`` calls is reported; a first call longer than ``--single-call-s`` is reported on its
own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from seqbench.worker.models import MODELS, Mixer


def timed(fn: Any, repeats: int, single_call_s: float) -> tuple[float, int, Any]:
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    if first > single_call_s:
        return first, 1, out
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), repeats, out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqbench.bench.prefill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mamba", "mamba2"])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--single-call-s", type=float, default=5.0)
    p.add_argument("--rtol", type=float, default=1e-4)
    args = p.parse_args(argv)
    print(json.dumps({"torch": torch.__version__, "cores": os.cpu_count(),
                      "load_avg_before": os.getloadavg()}), flush=True)
    ok = True
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.models:
            cls = MODELS[name].load()
            torch.manual_seed(0)
            mixer = cls(args.width, cls.Config()).eval()
            for L in args.lengths:
                x = torch.randn(1, L, args.width, generator=torch.Generator().manual_seed(L))
                with torch.inference_mode():
                    t_par, n_par, (y_par, s_par) = timed(lambda m=mixer, x=x: m.prefill(x), args.repeats,
                                                         args.single_call_s)
                    path = mixer.kernel_path
                    t_step, n_step, (y_step, s_step) = timed(
                        lambda m=mixer, x=x: Mixer.prefill(m, x), args.repeats,
                        args.single_call_s)
                diff = max(rel(y_par, y_step), *(rel(s_par[k], s_step[k]) for k in s_par))
                head = f"{name:<7} L={L:<6} threads={threads}"
                if diff > args.rtol:
                    ok = False
                    print(f"{head}  MISMATCH (max rel diff {diff:.1e})", flush=True)
                    continue
                print(f"{head}  parallel ({path}) {t_par:.4f} s x{n_par}  steps {t_step:.3f} s "
                      f"x{n_step}  ratio {t_step / t_par:7.1f}x  max rel diff {diff:.0e}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
