"""Streaming prefill on CPU, side by side in one run: each mixer's parallel prefill (one call
of its training form that also returns the last state: the fused C++ scan and SSD kernels of
Mamba and Mamba-2, the fused linear scans of minGRU, minLSTM and the LRU) against stepping
through the prompt token by token (``Mixer.prefill``, the default every step-capable mixer has,
which is what a stream job would pay without a parallel prefill).

    python -m seqbench.bench.prefill                 # L 1024 4096, 1 and 2 threads
    python -m seqbench.bench.prefill --models mamba --lengths 4096 16384 --threads 1

Each mixer is built at its defaults at width 64 (seed 0), batch 1 (streaming), and run under
``torch.inference_mode`` as a stream job runs it. Both forms must give the same outputs and
every tensor of the state within ``--rtol`` (relative to its largest entry) before a time is
reported. After one untimed call the median of ``--repeats`` calls is reported; a first call
longer than ``--single-call-s`` is reported on its own (``x1``). Exit status 1 if any pair
disagreed.
"""

from __future__ import annotations

import argparse
import json
import math
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


def leaves(state: Any) -> list[torch.Tensor]:
    """The tensors of a state (a tensor, or dicts, lists and tuples of them), in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for k in sorted(state) for t in leaves(state[k])]
    if isinstance(state, list | tuple):
        return [t for s in state for t in leaves(s)]
    return []


def compare(mixer: Mixer, x: torch.Tensor, repeats: int, single_call_s: float
            ) -> dict[str, Any]:
    """Time both prefills of ``mixer`` on ``x`` and compare what they return."""
    with torch.inference_mode():
        t_par, n_par, (y_par, s_par) = timed(lambda: mixer.prefill(x), repeats, single_call_s)
        path = mixer.kernel_path
        t_step, n_step, (y_step, s_step) = timed(lambda: Mixer.prefill(mixer, x), repeats,
                                                 single_call_s)
    a, b = leaves(s_par), leaves(s_step)
    if len(a) != len(b) or any(p.shape != q.shape for p, q in zip(a, b, strict=True)):
        diff = math.inf
    else:
        diff = max(rel(y_par, y_step), *(rel(p, q) for p, q in zip(a, b, strict=True)))
    return {"path": path, "parallel_s": t_par, "parallel_calls": n_par, "steps_s": t_step,
            "steps_calls": n_step, "ratio": t_step / t_par, "max_rel_diff": diff}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqbench.bench.prefill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mamba", "mamba2", "mingru", "minlstm", "lru"])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
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
                r = compare(mixer, x, args.repeats, args.single_call_s)
                head = f"{name:<7} L={L:<6} threads={threads}"
                if not r["max_rel_diff"] <= args.rtol:
                    ok = False
                    print(f"{head}  MISMATCH (max rel diff {r['max_rel_diff']:.1e})", flush=True)
                    continue
                print(f"{head}  parallel ({r['path']}) {r['parallel_s']:.4f} s "
                      f"x{r['parallel_calls']}  steps {r['steps_s']:.3f} s x{r['steps_calls']}  "
                      f"ratio {r['ratio']:7.1f}x  max rel diff {r['max_rel_diff']:.0e}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
